"""Rules: check, test, dry-run, fire, explain."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from engine.commands.common import AtOption, JsonFlag, parse_at
from engine.config import load_settings
from engine.presentation import progress
from engine.presentation.output import echo, plural, print_json
from engine.presentation.stores import open_project_store
from engine.presentation.times import local_time


def check(
    json_output: JsonFlag = False,
    no_store: Annotated[
        bool,
        typer.Option(
            "--no-store",
            help="Skip checks that need the database (unknown event types, rules matching nobody).",
        ),
    ] = False,
) -> None:
    """Validate every rule, segment and creative; print all problems at once.

    Exit 0 when clean (warnings allowed), 1 on any error.

    Example: nudge check --json
    """
    from engine.checking.check import check_project

    settings = load_settings()
    with progress.activity("checking rules and creatives"):
        report = check_project(settings, use_store=not no_store)
    if json_output:
        print_json(report.as_dict())
    else:
        for diagnostic in report.diagnostics:
            echo(diagnostic.render(relative_to=Path.cwd()))
        for rule_id, times in report.schedules.items():
            shown = ", ".join(local_time(t, settings.tz) for t in times) or "none within its flight"
            echo(f"{rule_id}: next fire times {shown}")
        echo(
            f"{plural(len(report.rules), 'rule')} valid, {plural(len(report.errors), 'error')}, "
            f"{plural(len(report.warnings), 'warning')}"
        )
    raise typer.Exit(1 if report.errors else 0)


def test_rules(
    path: Annotated[
        Path | None, typer.Argument(help="A test file or folder (default: rules/tests).")
    ] = None,
    json_output: JsonFlag = False,
) -> None:
    """Run rule unit tests on a throw-away database; ends with "N passed, N failed".

    Example: nudge test rules/tests/winback-lapsed-members.yaml
    """
    from engine.checking.ruletests import run_rule_tests
    from engine.planning.compile import load_ruleset

    settings = load_settings()
    ruleset = load_ruleset(settings)
    for diagnostic in ruleset.diagnostics:
        echo(diagnostic.render(relative_to=Path.cwd()), err=True)
    with progress.activity("rule tests"):
        run = run_rule_tests(settings, path or settings.rules_dir / "tests", ruleset)
    if json_output:
        print_json(run.as_dict())
    else:
        for result in run.results:
            echo(f"{'PASS' if result.passed else 'FAIL'}  {result.file.name}: {result.name}")
            for failure in result.failures:
                echo(f"      {failure}")
        echo(f"{run.passed} passed, {run.failed} failed")
    raise typer.Exit(1 if run.failed or ruleset.errors else 0)


def _evaluate(at: str | None, rule_ids: list[str] | None, **options):
    """Load the rules and evaluate them at --at, with a spinner over the work."""
    from engine.planning.compile import load_ruleset
    from engine.planning.runner import evaluate

    store = open_project_store()
    ruleset = load_ruleset(store.settings)
    when = parse_at(at, tz=store.settings.tz)
    count = len(rule_ids) if rule_ids else len(ruleset.rules)
    with progress.counter("evaluating", unit="rules", total=count) as advance:
        evaluation = evaluate(
            store, ruleset, at=when, rule_ids=rule_ids, on_rule_done=advance, **options
        )
    return evaluation, store.settings.tz


def dry_run(
    at: AtOption = None,
    rule: Annotated[
        list[str] | None, typer.Option("--rule", "-r", help="Only this rule (repeatable).")
    ] = None,
    user: Annotated[str | None, typer.Option("--user", help="Only this user.")] = None,
    json_output: JsonFlag = False,
) -> None:
    """Plan exactly what a run at T would plan, then roll back: nothing is written.

    Example: nudge dry-run --at 2026-11-11T20:00:00+08:00 --rule double-eleven
    """
    from engine.presentation.evaluation import render_evaluation

    evaluation, tz = _evaluate(at, rule, user_id=user, dry_run=True)
    if json_output:
        print_json(evaluation.as_dict())
    else:
        echo(render_evaluation(evaluation, tz))


def fire(
    rule: Annotated[str, typer.Argument(help="The rule to evaluate.")],
    at: AtOption = None,
    json_output: JsonFlag = False,
) -> None:
    """Evaluate one rule for real, once (for shops that schedule with cron).

    Example: nudge fire winback-lapsed-members
    """
    from engine.presentation.evaluation import render_evaluation

    evaluation, tz = _evaluate(at, [rule], mode="fire")
    if json_output:
        print_json(evaluation.as_dict())
    else:
        echo(render_evaluation(evaluation, tz))
    raise typer.Exit(1 if evaluation.failed else 0)


def explain(
    user: Annotated[str, typer.Argument(help="The user's id.")],
    rule: Annotated[str, typer.Option("--rule", "-r", help="The rule to explain.")],
    at: AtOption = None,
    funnel: Annotated[
        bool, typer.Option("--funnel", help="Also print the audience left after each clause.")
    ] = False,
    json_output: JsonFlag = False,
) -> None:
    """Why a user would or would not get a rule's actions at T, clause by clause.

    Example: nudge explain u1042 --rule winback-lapsed-members --funnel
    """
    from engine.checking.explain import explain_user, render_explanation
    from engine.planning.compile import load_ruleset

    store = open_project_store()
    ruleset = load_ruleset(store.settings)
    when = parse_at(at, tz=store.settings.tz)
    explanation = explain_user(store, ruleset, user, rule, at=when, funnel=funnel)
    if json_output:
        print_json(explanation)
    else:
        echo(render_explanation(explanation))
