"""`evaluate(on_rule_done=...)`: the CLI's progress bar advances once per rule."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from engine.planning.runner import evaluate
from tests.planning.helpers import ruleset_for, write_rule

AT = datetime(2026, 11, 20, 6, 0, tzinfo=UTC)
RULE = "trigger: {event: purchase}\nactions:\n  tag: {add: [seen]}\n"


@pytest.mark.parametrize("dry_run", [True, False])
def test_the_hook_is_called_once_per_rule(store, settings, dry_run):
    for name in ("one", "two", "three"):
        write_rule(settings, name, RULE)
    done: list[int] = []
    evaluation = evaluate(
        store, ruleset_for(settings), at=AT, dry_run=dry_run, on_rule_done=done.append
    )
    assert len(evaluation.outcomes) == 3
    assert done == [1, 1, 1]
