"""An evaluation runs with the cyclic garbage collector paused (engine/collector.py):
building each rule's statements allocates SQLAlchemy objects by the thousand, and the
collector's passes over the whole process cost ~15 % of an idle tick. It runs again
afterwards, and an evaluation that fails leaves it as it found it."""

from __future__ import annotations

import gc
from datetime import UTC, datetime

import pytest

from engine.planning.runner import evaluate
from tests.planning.helpers import ruleset_for, write_rule

AT = datetime(2026, 11, 20, 6, 0, tzinfo=UTC)
RULE = "trigger: {event: purchase}\nactions:\n  tag: {add: [seen]}\n"


@pytest.fixture
def collector_enabled():
    was_enabled = gc.isenabled()
    gc.enable()
    yield
    gc.enable() if was_enabled else gc.disable()


def test_rules_are_planned_with_the_collector_paused(store, settings, collector_enabled):
    for name in ("one", "two"):
        write_rule(settings, name, RULE)
    seen: list[bool] = []

    def note(_):
        seen.append(gc.isenabled())

    evaluate(store, ruleset_for(settings), at=AT, on_rule_done=note)

    assert seen == [False, False]
    assert gc.isenabled()


def test_a_failed_evaluation_resumes_the_collector(store, settings, collector_enabled):
    write_rule(settings, "one", RULE)

    def fail(_):
        raise RuntimeError("the progress bar broke")

    with pytest.raises(RuntimeError):
        evaluate(store, ruleset_for(settings), at=AT, on_rule_done=fail)

    assert gc.isenabled()
