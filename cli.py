"""The `nudge` command: parse arguments, call one engine function, print.

Only the commands live here; how things are shown (tables, times, `--json`, plurals,
progress, one-line errors, store lifetime) lives in engine/presentation/, so a new
command looks like the others by using it. Expected errors (engine.errors.NudgeError,
an unreachable database, a full disk) print as one `Error: ...` line with exit code 1;
anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import click
import typer
from typer.core import TyperGroup

from engine.config import load_settings
from engine.errors import NudgeError
from engine.presentation import progress
from engine.presentation.errors import expected_failure, redact_text, redact_url
from engine.presentation.output import counts_text, echo, fail, plural, print_json, warn
from engine.presentation.stores import (
    close_opened_stores,
    configured_database_url,
    open_project_store,
)
from engine.presentation.tables import print_table
from engine.presentation.times import cell, local_time, parse_instant_option


class NudgeGroup(TyperGroup):
    """Turns expected failures into one `Error: ...` line + exit 1, never a traceback."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except (typer.Exit, click.exceptions.Exit, click.ClickException, click.Abort):
            raise  # the command chose its exit (and printed its message)
        except NudgeError as exc:
            raise fail(redact_text(str(exc), configured_database_url())) from None
        except Exception as exc:
            message = expected_failure(exc, configured_database_url())
            if message is None:
                raise  # a bug: keep the traceback
            raise fail(message) from None
        finally:
            # Close every database a command opened, whatever way it ended.
            close_opened_stores()


app = typer.Typer(
    cls=NudgeGroup,
    help="Nudge: rule-driven marketing automation for e-commerce.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    # Plain help: stable for scripts, pipes and tests.
    rich_markup_mode=None,
)


def _sub_app(help: str) -> typer.Typer:
    return typer.Typer(help=help, no_args_is_help=True, rich_markup_mode=None)


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import PackageNotFoundError, version

        try:
            echo(f"nudge {version('nudge')}")
        except PackageNotFoundError:  # run from a checkout that was never installed
            echo("nudge (not installed)")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version."),
    ] = False,
    quiet: Annotated[
        bool, typer.Option("--quiet", "-q", help="No progress bars (they go to stderr).")
    ] = False,
) -> None:
    """Nudge: rule-driven marketing automation for e-commerce."""
    progress.set_quiet(quiet)


JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON for machines.")]


def shop_zone():
    return load_settings().tz


def parse_at(value: str | None, option: str = "--at", tz=None):
    """The one `--at` parser: ISO 8601, shop time when no offset; default: now."""
    from engine.clock import utcnow

    if value is None:
        return utcnow()
    return parse_instant_option(value, tz or shop_zone(), option)


# ---------------- project & database
db_app = _sub_app("Database schema.")
app.add_typer(db_app, name="db")


@app.command()
def init(
    directory: Annotated[Path, typer.Argument(help="Folder of the new project.")] = Path("."),
    name: Annotated[str | None, typer.Option(help="Shop name.")] = None,
) -> None:
    """Scaffold a project: nudge.toml, rules/, templates/, and an up-to-date database.

    Example: nudge init my-shop
    """
    from engine.project import scaffold
    from engine.store.migrations import upgrade

    try:
        created = scaffold(directory, name=name)
    except FileExistsError as exc:
        raise fail(f"{exc} already exists; this folder is already a Nudge project") from None
    store = open_project_store(load_settings(directory), check_schema=False)
    upgrade(store)
    for path in created:
        echo(f"created {path}")
    echo(f"database ready: {redact_url(store.settings.database_url)}")


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Create or migrate the database schema to this version of Nudge.

    Example: nudge db upgrade
    """
    from engine.store.migrations import upgrade

    before, after = upgrade(open_project_store(check_schema=False))
    if before == after:
        echo(f"schema already at revision {after}")
    else:
        echo(f"schema upgraded from {before or 'empty'} to {after}")


@db_app.command("distribute")
def db_distribute() -> None:
    """Distribute the store over a Citus cluster by user (docs/scaling.md); idempotent.

    Example: nudge db distribute
    """
    from engine.store.distribute import distribute

    result = distribute(open_project_store(check_schema=False))
    for table, placement in result.placed:
        echo(f"{table}: {placement}")
    echo(f"{len(result.placed)} tables placed, {len(result.already)} already in place")


# ---------------- ingest
REJECTS_SHOWN = 20


@app.command()
def ingest(
    files: Annotated[
        list[str],
        typer.Argument(
            help="CSV or JSONL files of users, events or ad spend; - is stdin.", metavar="FILE..."
        ),
    ],
    kind: Annotated[
        str | None,
        typer.Option(
            help="users, events or spend; default: detected (events have a type column, "
            "spend a cost column)."
        ),
    ] = None,
    rejects: Annotated[
        Path | None,
        typer.Option(help="Write rejected rows here; default: <input>.rejects.jsonl."),
    ] = None,
    require_users: Annotated[
        bool, typer.Option("--require-users", help="Reject events of users not yet known.")
    ] = False,
    as_json: JsonFlag = False,
) -> None:
    """Load users and events (CSV or JSONL, see docs/ingest.md); re-running stores nothing twice.

    Exit code 0: all rows stored; 2: some rows rejected (listed, and written to the
    rejects file); 1: an input could not be read at all, or the disk filled up (the
    rows stored until then stay stored: run the same command again).

    Example: nudge ingest users.csv events.jsonl
    """
    from engine.clock import utcnow
    from engine.ingest import ingest_files
    from engine.presentation.errors import is_disk_full

    store = open_project_store()
    done = [0]  # rows whose batch committed: what a failure leaves stored

    def advance(rows: int) -> None:
        done[0] += rows
        shown(rows)

    try:
        with progress.counter("ingest", detail=_input_size(files)) as shown:
            report = ingest_files(
                store,
                list(files),
                now=utcnow(),
                kind=kind,
                rejects_path=rejects,
                require_users=require_users,
                progress=advance,
            )
    except Exception as exc:
        if not is_disk_full(exc):
            raise
        raise fail(
            f"the disk is full: ingest stopped with at least {plural(done[0], 'row')} stored "
            "(whole batches). Free space and run the same command again: rows already stored "
            "are skipped."
        ) from None
    for file in report.files:
        if file.rows_read == 0:
            warn(f"{file.file}: 0 rows (an empty file, or a header without rows)")
    if as_json:
        print_json(report.as_dict())
    else:
        for reject in report.rejected[:REJECTS_SHOWN]:
            echo(str(reject), err=True)
        if report.rejected_count > REJECTS_SHOWN:
            more = report.rejected_count - REJECTS_SHOWN
            echo(f"... and {plural(more, 'more rejected row')}", err=True)
        if report.rejects_paths:
            echo(f"rejected rows written to {', '.join(report.rejects_paths)}", err=True)
        echo(_ingest_summary(report))
        if report.coupons:
            echo(f"coupon codes in purchases: {counts_text(report.coupons)}")
    if report.has_rejects:
        raise typer.Exit(2)


def _ingest_summary(report) -> str:
    text = (
        f"{plural(report.rows_read, 'row')} read from {plural(len(report.files), 'file')}: "
        f"{plural(report.users_upserted, 'user')} upserted, "
        f"{plural(report.users_created, 'user')} created by events, "
        f"{plural(report.events_inserted, 'event')} stored, "
        f"{plural(report.duplicates_skipped, 'duplicate')} skipped, "
        f"{report.rejected_count} rejected"
    )
    if report.spend_upserted:
        text += f", {plural(report.spend_upserted, 'spend row')} stored"
    return text


def _input_size(files: list[str]) -> str:
    """` of 12.3 MB` for the progress line (stdin has no size)."""
    import os

    try:
        size = sum(os.path.getsize(f) for f in files if f != "-")
    except OSError:
        return ""
    if not size:
        return ""
    return f" from {size / 1_000_000:,.1f} MB"


# ---------------- lifecycle, stats, users, demo
users_app = _sub_app("Look up users.")
app.add_typer(users_app, name="users")

KpiAtOption = Annotated[
    str | None,
    typer.Option("--at", help="Instant T, ISO 8601 (shop time zone when no offset). Default: now."),
]


def _print_kpis(result: dict, tz) -> None:
    from engine.stats import format_money, format_rate

    currency = result["currency"]
    echo(f"Shop KPIs as of {local_time(result['as_of'], tz)}")
    print_table(
        ["KPI", "value"],
        [
            ["users seen", result["users"]],
            ["buyers", result["buyers"]],
            ["orders", result["orders"]],
            ["GMV", format_money(result["gmv"], currency)],
            ["AOV", format_money(result["aov"], currency)],
            ["repeat-purchase rate", format_rate(result["repeat_purchase_rate"])],
            ["first-purchase conversion", format_rate(result["first_purchase_conversion"])],
        ],
    )
    echo()
    print_table(
        ["stage", "users", "share", "buyers", "orders", "GMV", "AOV"],
        [
            [
                row["stage"],
                row["users"],
                format_rate(row["share"]),
                row["buyers"],
                row["orders"],
                format_money(row["gmv"], currency),
                format_money(row["aov"], currency),
            ]
            for row in result["stages"]
        ],
    )


@app.command()
def stats(
    at: KpiAtOption = None,
    as_json: JsonFlag = False,
    since: Annotated[
        str | None,
        typer.Option(
            "--since",
            help="Period start, ISO 8601 (shop time zone when no offset). "
            "Default: from the first event.",
        ),
    ] = None,
    until: Annotated[
        str | None,
        typer.Option("--until", help="Period end (excluded); the same as --at. Default: now."),
    ] = None,
) -> None:
    """Shop KPIs (buyers, orders, GMV, AOV, repeat rate, conversion) per lifecycle stage,
    cohorts with LTV and retention, CTR, and CAC / ROAS when ad spend was ingested.

    The KPIs as of T count events at or before T; the period sections count those in
    [--since, --until), with stages as of --until.

    Example: nudge stats --since 2026-11-01 --until 2026-12-01
    """
    from engine.stats import shop_report

    if at and until:
        raise fail("--at and --until are the same instant: give one of them")
    store = open_project_store()
    tz = store.settings.tz
    as_of = parse_at(until, "--until", tz) if until else parse_at(at, "--at", tz)
    start = parse_instant_option(since, tz, "--since")
    with store.read() as connection:
        result = shop_report(connection, store.settings, since=start, until=as_of)
    if as_json:
        print_json(result)
    else:
        from engine.stats import currency_note, render_report

        _print_kpis(result, tz)
        echo(render_report(result, tz))
        echo(f"\n{currency_note(result['currency'])}")


@users_app.command("show")
def users_show(
    user_id: Annotated[str, typer.Argument(help="The shop's own user id.")],
    as_json: JsonFlag = False,
) -> None:
    """One user: fields, consent, tags, profile, stage history and the latest 20 events.

    A stay in a stage is shown from when the data put the shopper there (the
    purchase that made them a repeat buyer), not from when the data was loaded.

    Example: nudge users show u00042
    """
    from engine.clock import utcnow
    from engine.users import user_detail

    store = open_project_store()
    with store.read() as connection:
        detail = user_detail(connection, store.settings, user_id, utcnow())
    if as_json:
        print_json(detail)
        return
    tz = store.settings.tz
    fields = {**detail["user"], **detail["consent"], "tags": ", ".join(detail["tags"])}
    fields["stage"] = detail["stage"]
    print_table(["field", "value"], [[k, cell(v, tz)] for k, v in fields.items()])
    echo()
    profile = detail["profile"] or {}
    print_table(["profile", "value"], [[k, cell(v, tz)] for k, v in profile.items()])
    echo()
    print_table(
        ["stage", "entered", "exited"],
        [
            [row["stage"], local_time(row["entered_at"], tz), local_time(row["exited_at"], tz)]
            for row in detail["stage_history"]
        ],
    )
    echo()
    print_table(
        ["time", "type", "amount", "order", "coupon", "utm_source"],
        [
            [
                local_time(e["occurred_at"], tz),
                e["type"],
                "" if e["amount"] is None else f"{e['amount']} {e['currency'] or ''}".strip(),
                e["order_id"],
                e["coupon_code"],
                e["utm_source"],
            ]
            for e in detail["recent_events"]
        ],
    )


@app.command()
def demo(
    users: Annotated[int, typer.Option(min=1, help="Number of shoppers.")] = 5000,
    seed: Annotated[int, typer.Option(help="Random seed: same seed, same shop.")] = 7,
    respond: Annotated[
        bool,
        typer.Option(
            "--respond",
            help="Instead: the shoppers answer the rules' messages (purchases, some with "
            "the coupon codes), ingested as of --at, for `nudge report` to measure.",
        ),
    ] = False,
    at: Annotated[
        str | None,
        typer.Option("--at", help="With --respond: as of this instant (ISO 8601; default: now)."),
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Build a demo shop in this project: synthetic users and events, ingested, staged.

    Writes demo-data/users.jsonl and demo-data/events.jsonl, ingests them, records the
    lifecycle stages and prints the stage breakdown and shop KPIs. Gives the
    first-purchase-thank-you rule a 30% holdout, so its lift can be measured.

    After a tick and a dispatch, `nudge demo --respond --at T` makes the shoppers
    answer as of T: the thank-you coupon brings buyers back (treated 25%, held out 8%),
    the win-back offer does not (20% either way).

    Example: nudge init demo-shop && cd demo-shop && nudge demo
    """
    from engine.clock import utcnow
    from engine.demo import build_demo

    if respond:
        _demo_respond(parse_at(at), seed, as_json)
        return
    store = open_project_store()
    with progress.counter("demo shop: ingest") as advance:
        result = build_demo(store, now=utcnow(), users=users, seed=seed, progress=advance)
    if as_json:
        print_json(result.as_dict())
        return
    ingest = result.ingest
    folder = result.files.users_path.parent
    echo(
        f"wrote {plural(result.files.users, 'user')} and "
        f"{plural(result.files.events, 'event')} to {folder}"
    )
    echo(
        f"ingested {plural(ingest.users_upserted, 'user')} and "
        f"{plural(ingest.events_inserted, 'event')} ({ingest.rejected_count} rejected)"
    )
    echo(f"recorded {plural(result.stages.total_entered, 'stage entry')}")
    for rule_id, holdout in result.holdouts.items():
        echo(f"gave rules/{rule_id}.yaml a {holdout} holdout: `nudge report` measures it")
    echo()
    _print_kpis(result.stats, store.settings.tz)


def _demo_respond(now, seed: int, as_json: bool) -> None:
    from engine.demo import RESPONSE_PERIOD, simulate_responses
    from engine.durations import format_duration

    store = open_project_store()
    with progress.activity("shoppers answering"):
        result = simulate_responses(store, store.settings, now=now, seed=seed)
    if as_json:
        print_json(result.as_dict())
        return
    tz, period = store.settings.tz, format_duration(RESPONSE_PERIOD)
    echo(f"shoppers' answers as of {local_time(now, tz)} (within {period} of each message):")
    rows = []
    for rule_id, groups in result.rules.items():
        for name, counts in groups.items():
            rate = "-" if counts.rate is None else f"{counts.rate:.1%}"
            code = counts.with_code if name == "treated" else ""
            rows.append([rule_id, name, counts.decisions, counts.buyers, rate, code])
    print_table(["rule", "group", "users", "bought", "rate", "with the coupon"], rows)
    if result.too_recent:
        echo(
            f"{plural(result.too_recent, 'decision')} not answered: not exposed {period} "
            f"before {local_time(now, tz)} (dispatch first, or give a later --at)"
        )
    ingest = result.ingest
    line = f"ingested {plural(ingest.events_inserted, 'event')} from {result.path}"
    if ingest.coupons:
        line += f": coupon codes {counts_text(ingest.coupons)}"
    echo(line)


# ---------------- rules: check, test, dry-run, explain, fire, run


@app.command()
def schema(
    out: Annotated[
        Path | None, typer.Option("--out", help="Write to this file instead of printing.")
    ] = None,
) -> None:
    """Print the JSON Schema of rule files (editors use it to autocomplete and underline).

    Example: nudge schema --out rule.schema.json
    """
    from engine.rules.schema import schema_text

    text = schema_text()
    if out is None:
        typer.echo(text, nl=False)
    else:
        out.write_text(text, encoding="utf-8")
        echo(f"wrote {out}")


AtOption = Annotated[
    str | None,
    typer.Option("--at", help="Evaluate at this instant (ISO 8601; default: now)."),
]


@app.command()
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


@app.command("test")
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


@app.command("dry-run")
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


@app.command()
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


@app.command()
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


@app.command("run")
def run_daemon_command(
    once: Annotated[
        bool, typer.Option("--once", help="One tick and one dispatch pass, then exit.")
    ] = False,
    no_dispatch: Annotated[
        bool, typer.Option("--no-dispatch", help="Plan only; leave delivery to `nudge dispatch`.")
    ] = False,
    tick_seconds: Annotated[
        float | None,
        typer.Option(
            help="Longest wait between evaluations, 1-3600 (default [daemon] tick_seconds, "
            "60); new data and schedule slots wake the daemon earlier."
        ),
    ] = None,
    log_format: Annotated[
        str, typer.Option("--log-format", help="text, or json: one object per line.")
    ] = "text",
    json_output: Annotated[
        bool, typer.Option("--json", help="The same as --log-format json.")
    ] = False,
) -> None:
    """The daemon: evaluate rules when data arrives, a schedule slot is due or a tick
    passes; deliver the outbox continuously. SIGTERM/SIGINT stop it cleanly.

    Prints one line per evaluation or delivery that did something; --once ends with a
    summary line.

    Example: nudge run --log-format json
    """
    from engine.daemon import run_daemon
    from engine.daemon_log import FORMATS, DaemonLog

    if json_output:
        log_format = "json"
    if log_format not in FORMATS:
        raise fail(f"--log-format must be one of {', '.join(FORMATS)}, not {log_format!r}")
    log = DaemonLog(log_format, tz=shop_zone())
    run_daemon(once=once, dispatch=not no_dispatch, tick_seconds=tick_seconds, log=log)
    if once:
        log.summary()


# ---------------- creatives: preview, landing
landing_app = _sub_app("Landing pages.")
app.add_typer(landing_app, name="landing")


def _offer_options(pairs: list[str]) -> dict[str, str]:
    offer = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise fail(f"--offer {pair!r}: expected KEY=VALUE, e.g. --offer value=30")
        offer[key.strip()] = value.strip()
    return offer


@app.command()
def preview(
    creative: Annotated[str, typer.Argument(help="Creative name (a folder in templates/).")],
    user: Annotated[str | None, typer.Option(help="User id from the store.")] = None,
    rule: Annotated[str | None, typer.Option(help="Rule whose offer to use.")] = None,
    variant: Annotated[str | None, typer.Option(help="Variant of the rule.")] = None,
    surface: Annotated[str | None, typer.Option(help="Only this surface.")] = None,
    locale: Annotated[str | None, typer.Option(help="Locale, e.g. zh-CN or en.")] = None,
    offer: Annotated[
        list[str] | None, typer.Option(help="Offer fact KEY=VALUE (repeatable).")
    ] = None,
    out: Annotated[Path | None, typer.Option(help="Output folder.")] = None,
    json_output: JsonFlag = False,
) -> None:
    """Render every surface of a creative into files and print widths against limits.

    Warns when the SMS takes several parts (each part is billed as one message).

    Example: nudge preview winback --rule winback-lapsed-members --variant bigger-coupon
    """
    import os
    from dataclasses import asdict

    from engine.clock import utcnow
    from engine.creatives.preview import run_preview

    secret = os.environ.get("NUDGE_SECRET_KEY")
    result = run_preview(
        load_settings(),
        creative,
        out=out or Path("build") / "preview" / creative,
        now=utcnow(),
        user_id=user,
        rule_id=rule,
        variant=variant,
        offer=_offer_options(offer or []),
        surface=surface,
        locale=locale,
        secret=secret.encode() if secret else None,
    )
    warnings = _sms_part_warnings(result.rows)
    if json_output:
        print_json(
            {
                "creative": result.creative,
                "locale": result.locale,
                "out": str(result.out),
                "surfaces": [asdict(row) for row in result.rows],
                "diagnostics": [d.as_dict() for d in result.diagnostics],
                "warnings": warnings,
            }
        )
    else:
        echo(f"{result.creative} ({result.locale}) -> {result.out}")
        print_table(
            ["surface", "file", "width/size", "status"],
            [[r.surface, r.file, r.size, r.status] for r in result.rows],
        )
        for diagnostic in result.diagnostics:
            echo(diagnostic.render(), err=True)
        for message in warnings:
            warn(message)
    if result.diagnostics:
        raise typer.Exit(1)


def _sms_part_warnings(rows) -> list[str]:
    """One warning per rendered SMS that does not fit one part (GSM-7 160, UCS-2 70)."""
    from engine.creatives.width import sms_segments

    warnings = []
    for row in rows:
        if row.surface != "sms" or not row.file or not Path(row.file).is_file():
            continue
        # The preview file is the message, then a `--- size` footer for people.
        text = Path(row.file).read_text(encoding="utf-8").rsplit("\n--- ", 1)[0]
        parts, encoding = sms_segments(text)
        if parts > 1:
            one_part = 160 if encoding == "GSM-7" else 70
            warnings.append(
                f"{row.file}: the SMS takes {parts} parts ({encoding}, {len(text)} characters); "
                f"each part is billed as one message: {one_part} characters fit in one"
            )
    return warnings


@landing_app.command("build")
def landing_build(
    out: Annotated[Path, typer.Option(help="Output folder.")] = Path("build/landing"),
    json_output: JsonFlag = False,
) -> None:
    """Write the landing page of every creative, locale and variant as a static site.

    Example: nudge landing build --out build/landing
    """
    from engine.clock import utcnow
    from engine.creatives.landing import build_landing_site

    with progress.activity("building landing pages"):
        pages = build_landing_site(load_settings(), out, now=utcnow())
    if json_output:
        print_json(
            {
                "index": str(out / "index.html"),
                "pages": [
                    {
                        "creative": p.creative,
                        "rule": p.rule_id,
                        "variant": p.variant,
                        "locale": p.locale,
                        "file": str(p.path),
                    }
                    for p in pages
                ],
            }
        )
        return
    print_table(
        ["creative", "rule", "variant", "locale", "file"],
        [[p.creative, p.rule_id, p.variant or "default", p.locale, p.path] for p in pages],
    )
    echo(f"{plural(len(pages), 'page')}, index: {out / 'index.html'}")


# ---------------- delivery: dispatch, status, coupons, audiences
coupons_app = _sub_app("Coupon codes.")
app.add_typer(coupons_app, name="coupons")
audiences_app = _sub_app("Retargeting audiences.")
app.add_typer(audiences_app, name="audiences")

DeliveryAt = Annotated[
    str | None, typer.Option("--at", help="Act as of this instant (ISO 8601; default: now).")
]


@app.command()
def dispatch(
    once: Annotated[bool, typer.Option("--once", help="One pass, then exit.")] = False,
    at: DeliveryAt = None,
    json_output: JsonFlag = False,
) -> None:
    """Deliver due outbox actions through the configured channels (loops unless --once).

    Example: nudge dispatch --once
    """
    import contextlib

    from engine.delivery.runner import run_dispatcher

    def show(report) -> None:
        if json_output:
            print_json(report.as_dict())
        else:
            echo(f"claimed {report.claimed}: {counts_text(report.outcomes, 'nothing due')}")
            if report.reasons:
                echo(f"reasons: {counts_text(report.reasons)}")

    store = open_project_store()
    when = parse_at(at, tz=store.settings.tz) if at else None
    # The loop runs until stopped and prints each pass: a spinner only for one pass.
    working = progress.activity("delivering") if once else contextlib.nullcontext()
    with working:
        run_dispatcher(store, once=once, at=when, on_pass=show)


@app.command()
def report(
    since: Annotated[
        str | None,
        typer.Option(
            "--since",
            help="Decisions from this instant (ISO 8601; shop time zone when no offset). "
            "Default: 30 days before --until.",
        ),
    ] = None,
    until: Annotated[
        str | None,
        typer.Option(
            "--until",
            help="Decisions before this instant; purchases, refunds and sends at or before "
            "it (ISO 8601). Default: now.",
        ),
    ] = None,
    rule: Annotated[
        list[str] | None, typer.Option("--rule", "-r", help="Only this rule (repeatable).")
    ] = None,
    json_output: JsonFlag = False,
    html_file: Annotated[
        Path | None,
        typer.Option(
            "--html",
            dir_okay=False,
            help="Write the report, with the shop KPIs and cohorts of the period, as one "
            "self-contained HTML file (charts inline, no network needed to view it).",
        ),
    ] = None,
) -> None:
    """Per rule and variant: audience, delivered, conversions, revenue, coupon and send
    costs, lift against the holdout with a verdict, incremental revenue and ROI.

    Example: nudge report --since 2026-11-01 --rule winback-lapsed-members --html report.html
    """
    from engine.measurement.report import build_report, render_report

    store = open_project_store()
    tz = store.settings.tz
    with progress.activity("measuring"):
        result = build_report(
            store,
            since=parse_instant_option(since, tz, "--since"),
            until=parse_instant_option(until, tz, "--until"),
            rule_ids=rule,
        )
        if html_file is not None:
            from engine.measurement.html import write_html_report

            write_html_report(store, result, html_file)
    if json_output:
        print_json(result.as_dict(tz))
    elif html_file is not None:
        echo(f"HTML report written to {html_file}")
    else:
        echo(render_report(result, tz))


@app.command()
def status(
    json_output: JsonFlag = False,
    all_rows: Annotated[
        bool, typer.Option("--all", help="List every retrying and dead action, not the first 10.")
    ] = False,
) -> None:
    """Outbox counts per state, the oldest pending action, skip reasons, the actions being
    retried (attempts, next attempt, last error) and dead letters.

    Example: nudge status --all
    """
    from engine.clock import utcnow
    from engine.delivery.status import delivery_status
    from engine.operations import operations
    from engine.planning.compile import load_ruleset

    shown = 10  # rows per list without --all; --json is for machines: always every row

    def more(hidden: int) -> None:
        if hidden > 0:
            echo(f"… and {hidden} more (nudge status --all / --json)")

    store = open_project_store()
    report = delivery_status(store, limit=None if json_output or all_rows else shown)
    ops = operations(store, load_ruleset(store.settings), now=utcnow())
    tz = store.settings.tz
    if json_output:
        print_json(report.as_dict() | ops.as_dict())
        return
    print_table(["state", "actions"], [[k, v] for k, v in report.counts.items()])
    echo(f"oldest pending: {local_time(report.oldest_pending_at, tz) or '-'}")
    if report.skipped_reasons:
        echo()
        print_table(["skip reason", "actions"], [[k, v] for k, v in report.skipped_reasons.items()])
    if report.retrying:
        echo()
        print_table(
            ["retrying id", "rule", "user", "kind", "attempts", "next attempt", "reason"]
            + ["last error"],
            [
                [r["id"], r["rule_id"], r["user_id"], r["kind"], r["attempts"]]
                + [local_time(r["next_attempt_at"], tz), r["reason"], (r["last_error"] or "")[:80]]
                for r in report.retrying
            ],
        )
        more(report.retrying_total - len(report.retrying))
    if report.dead:
        echo()
        print_table(
            ["dead id", "rule", "user", "kind", "attempts", "reason", "last error"],
            [
                [d["id"], d["rule_id"], d["user_id"], d["kind"], d["attempts"], d["reason"]]
                + [(d["last_error"] or "")[:80]]
                for d in report.dead
            ],
        )
        more(report.dead_total - len(report.dead))
    echo()
    _print_operations(ops, tz)


def _print_operations(ops, tz) -> None:
    """Daemons, then rules with their next fire time and last run, then missed slots."""
    if ops.daemons:
        print_table(
            ["daemon", "host", "pid", "started", "last heartbeat", "state"],
            [
                [d["id"][:8], d["host"], d["pid"], local_time(d["started_at"], tz)]
                + [local_time(d["heartbeat_at"], tz), d["state"]]
                for d in ops.daemons
            ],
        )
    else:
        echo("no daemon has run in the last 7 days (start one: nudge run)")
    if ops.rules:
        echo()
        rows = []
        for rule in ops.rules:
            last = rule["last_run"] or {}
            summary = ""
            if last:
                summary = f"{last['status']}: planned {last['planned']}"
                if last["error"]:
                    summary = f"{last['status']}: {last['error'][:60]}"
            rows.append(
                [rule["rule"], rule["status"], rule["trigger"], local_time(rule["next_fire"], tz)]
                + [local_time(last.get("at"), tz), summary]
            )
        print_table(["rule", "status", "trigger", "next fire", "last run", "result"], rows)
    for missed in ops.missed:
        echo(
            f"missed: {missed['rule']} skipped {plural(missed['missed'], 'slot')} up to "
            f"{local_time(missed['through'], tz)} (older than misfire_grace when a daemon "
            "came back)"
        )


@app.command()
def retry(
    ids: Annotated[list[int] | None, typer.Argument(help="Dead action ids.")] = None,
    all_dead: Annotated[bool, typer.Option("--all", help="Requeue every dead action.")] = False,
    json_output: JsonFlag = False,
) -> None:
    """Requeue dead letters (after fixing their cause) so the next dispatch retries them.

    Example: nudge retry --all
    """
    from engine.clock import utcnow
    from engine.delivery.status import retry_dead

    if bool(ids) == all_dead:
        raise fail("give dead action ids, or --all")
    count = retry_dead(open_project_store(), now=utcnow(), ids=None if all_dead else ids)
    if json_output:
        print_json({"requeued": count})
    else:
        echo(f"requeued {plural(count, 'dead action')}")


@app.command()
def unsubscribe(
    token: Annotated[str, typer.Argument(help="Token from the email link.")],
    json_output: JsonFlag = False,
) -> None:
    """Unsubscribe a user from marketing email by the token in their List-Unsubscribe link.

    Example: nudge unsubscribe 3q2-Xb0Kc1rT9aWwzV5mJQdE8yHnLp7u
    """
    from engine.clock import utcnow
    from engine.delivery.unsubscribe import unsubscribe as unsubscribe_token

    user_id = unsubscribe_token(open_project_store(), token, now=utcnow())
    if json_output:
        print_json({"unsubscribed": user_id})
    else:
        echo(f"unsubscribed {user_id}")


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Address to listen on ([serve] host).")] = None,
    port: Annotated[int | None, typer.Option(help="Port ([serve] port, 8787).")] = None,
    forwarded_allow_ips: Annotated[
        str,
        typer.Option(help="Proxies trusted for X-Forwarded-For/-Proto (comma-separated)."),
    ] = "127.0.0.1",
) -> None:
    """Serve landing pages, click tracking and unsubscribe over HTTP (docs/serve.md).

    Needs NUDGE_SERVE_SECRET (signs click links); NUDGE_SECRET_KEY personalises landing
    pages opened from messages. Example: NUDGE_SERVE_SECRET=... nudge serve --port 8787
    """
    import uvicorn

    from engine.serve.app import create_app
    from engine.serve.safety import SECRET_ENV, secret_from_env

    if secret_from_env(SECRET_ENV) is None:
        raise fail(f"set {SECRET_ENV} (a long random string) to sign click links")
    settings = load_settings()
    server_app = create_app(settings, store=open_project_store(settings))
    uvicorn.run(
        server_app,
        host=host or settings.serve.host,
        port=port or settings.serve.port,
        proxy_headers=True,
        forwarded_allow_ips=forwarded_allow_ips,
        server_header=False,
        log_level="info",
    )


@coupons_app.command("export")
def coupons_export(
    out: Annotated[Path | None, typer.Option("--out", help="CSV file; - or none: stdout.")] = None,
) -> None:
    """Write every issued coupon code as CSV for the shop's checkout.

    Example: nudge coupons export --out coupons.csv
    """
    import sys

    from engine.coupons.export import export_coupons

    store = open_project_store()
    if out is None or str(out) == "-":  # like `nudge ingest -`: stdin in, stdout out
        export_coupons(store, sys.stdout)
        return
    with out.open("w", encoding="utf-8", newline="") as handle:
        count = export_coupons(store, handle)
    echo(f"wrote {plural(count, 'coupon')} to {out}")


@coupons_app.command("redeem")
def coupons_redeem(json_output: JsonFlag = False) -> None:
    """Redeem coupons from ingested purchases with a coupon_code; report refused codes.

    Example: nudge coupons redeem
    """
    from engine.clock import utcnow
    from engine.coupons.redeem import redeem_coupons

    report = redeem_coupons(open_project_store(), now=utcnow())
    if json_output:
        print_json({"counts": dict(report.counts), "refused": report.refused})
        return
    echo(counts_text(report.counts, "nothing new"))
    if report.refused:
        print_table(
            ["user", "code", "order", "outcome"],
            [
                [r["user_id"], r["code_entered"], r["order_id"], r["outcome"]]
                for r in report.refused
            ],
        )


def _print_audience_results(results, json_output: bool) -> None:
    if json_output:
        print_json(
            [
                {
                    "platform": r.platform,
                    "added": r.added,
                    "removed": r.removed,
                    "skipped_no_identifier": r.skipped_no_identifier,
                    "phones_left_out": dict(sorted(r.phones_left_out.items())),
                    "files": [str(f) for f in r.files],
                }
                for r in results
            ]
        )
        return
    for r in results:
        echo(
            f"{r.platform}: +{r.added} -{r.removed} "
            f"({r.skipped_no_identifier} without email or phone)"
        )
        _print_phones_left_out(r.phones_left_out)
        for path in r.files:
            echo(f"  wrote {path}")


def _print_phones_left_out(left_out) -> None:
    """By reason: "invalid" or "unparseable" (engine/phones.py)."""
    if left_out:
        reasons = ", ".join(f"{n} {why}" for why, n in sorted(left_out.items()))
        echo(f"  left out {plural(left_out.total(), 'phone number')}: {reasons}")


AudienceOut = Annotated[Path | None, typer.Option("--out", help="Folder for the files.")]


@audiences_app.command("sync")
def audiences_sync(
    name: Annotated[str, typer.Argument(help="Audience name.")],
    platform: Annotated[
        list[str] | None, typer.Option("--platform", help="google, meta or csv (repeatable).")
    ] = None,
    out: AudienceOut = None,
    json_output: JsonFlag = False,
) -> None:
    """Write the adds and removes of an audience since its last sync, per platform.

    Platforms that no rule adding to the audience targets (`platforms: [meta]`) are
    skipped, with a warning.

    Example: nudge audiences sync lapsed-high-value --platform google --platform meta
    """
    from engine.audiences.platforms import audience_platforms, refusal
    from engine.audiences.sync import sync_audience
    from engine.clock import utcnow
    from engine.delivery.config import delivery_config

    store = open_project_store()
    config = delivery_config(store.settings)
    targeted = audience_platforms(store.settings, name)
    chosen = []
    for candidate in platform or config.audiences.platforms:
        reason = refusal(name, candidate, targeted)
        if reason is None:
            chosen.append(candidate)
        else:
            warn(f"skipped {candidate}: {reason}")
    if not chosen:
        raise fail(f"nothing to sync for audience {name!r}: every platform asked for was skipped")
    with progress.activity(f"syncing {name}"):
        results = sync_audience(
            store,
            name,
            platforms=tuple(chosen),
            out_dir=out or store.settings.project_dir / config.audiences.folder,
            now=utcnow(),
        )
    _print_audience_results(results, json_output)


@audiences_app.command("export")
def audiences_export(
    name: Annotated[str, typer.Argument(help="Audience name.")],
    format: Annotated[str, typer.Option("--format", help="google, meta or csv.")] = "csv",
    out: AudienceOut = None,
    json_output: JsonFlag = False,
) -> None:
    """Write the whole consenting membership of an audience in a platform's format.

    Refuses a platform that no rule adding to the audience targets (a rule's
    `audience: {..., platforms: [meta]}` keeps it off Google).

    Example: nudge audiences export lapsed-high-value --format google --out exports/
    """
    from engine.audiences.platforms import audience_platforms, refusal
    from engine.audiences.sync import export_audience
    from engine.clock import utcnow
    from engine.delivery.config import delivery_config

    store = open_project_store()
    reason = refusal(name, format, audience_platforms(store.settings, name))
    if reason is not None:
        raise fail(reason)
    config = delivery_config(store.settings)
    folder = out or store.settings.project_dir / config.audiences.folder
    with progress.activity(f"exporting {name}"):
        result = export_audience(store, name, format, folder, now=utcnow())
    _print_audience_results([result], json_output)


@audiences_app.command("export-converters")
def audiences_export_converters(
    rule: Annotated[str, typer.Argument(help="Rule id (its file name without .yaml).")],
    format: Annotated[str, typer.Option("--format", help="google, meta or csv.")] = "csv",
    since: Annotated[
        str | None,
        typer.Option(
            "--since",
            help="Decisions from this instant (ISO 8601; shop time zone when no offset). "
            "Default: 30 days before --until.",
        ),
    ] = None,
    until: Annotated[
        str | None,
        typer.Option(
            "--until",
            help="Decisions before this instant; purchases at or before it (ISO 8601). "
            "Default: now.",
        ),
    ] = None,
    out: AudienceOut = None,
    json_output: JsonFlag = False,
) -> None:
    """Write the users a rule converted (purchases attributed to its treated decisions,
    as in `nudge report`; never its control group) as a seed for lookalike audiences.

    Example: nudge audiences export-converters winback-lapsed-members --format google
    """
    from engine.delivery.config import delivery_config
    from engine.measurement.converters import export_converters

    store = open_project_store()
    tz = store.settings.tz
    config = delivery_config(store.settings)
    with progress.activity(f"exporting the converters of {rule}"):
        result = export_converters(
            store,
            rule,
            format,
            out or store.settings.project_dir / config.audiences.folder,
            since=parse_instant_option(since, tz, "--since"),
            until=parse_instant_option(until, tz, "--until"),
        )
    if json_output:
        print_json(result.as_dict())
        return
    period = f"{local_time(result.since, tz)} to {local_time(result.until, tz)}"
    echo(f"{result.rule}: {plural(result.converters, 'converted user')} (decisions from {period})")
    skipped = f"{result.skipped_no_identifier} without email or phone"
    if result.left_out:  # by consent refusal: no_consent, unsubscribed (engine/consent.py)
        reasons = ", ".join(f"{why} {n}" for why, n in sorted(result.left_out.items()))
        skipped += f"; left out {result.left_out.total()} without ads consent: {reasons}"
    echo(f"{result.platform}: +{result.exported} ({skipped})")
    _print_phones_left_out(result.phones_left_out)
    for path in result.files:
        echo(f"  wrote {path}")


# (end of delivery section)


# ---------------- rule files: fmt, journeys


@app.command("fmt")
def fmt(
    paths: Annotated[
        list[Path] | None,
        typer.Argument(
            help="Rule files, rule test files or folders (default: the rules folder and "
            "its tests/)."
        ),
    ] = None,
    check: Annotated[
        bool,
        typer.Option(
            "--check", help="Change nothing; exit 1 listing the files that would change (CI)."
        ),
    ] = False,
    json_output: JsonFlag = False,
) -> None:
    """Format rule files and rule test files: one indentation style, comments, key order
    and quotes kept. A file that does not parse is reported and left alone.

    Exit 1 on a file that cannot be formatted, and with --check on any file that would change.

    Example: nudge fmt --check
    """
    from engine.rules.formatting import format_paths

    report = format_paths(paths or [load_settings().rules_dir], check=check)
    if json_output:
        print_json(report.as_dict())
    else:
        for diagnostic in report.diagnostics:
            echo(diagnostic.render(relative_to=Path.cwd()))
        for path in report.changed:
            shown = path.relative_to(Path.cwd()) if path.is_relative_to(Path.cwd()) else path
            echo(f"{'would reformat' if check else 'reformatted'} {shown}")
        echo(report.summary(check=check))
    raise typer.Exit(1 if report.diagnostics or (check and report.changed) else 0)


@app.command()
def journeys(
    html_file: Annotated[
        Path | None,
        typer.Option(
            "--html",
            dir_okay=False,
            help="Also write the map as one self-contained HTML page (no network needed).",
        ),
    ] = None,
    json_output: JsonFlag = False,
) -> None:
    """Show the rules linked by `after:` triggers (multi-step journeys) as trees, with
    each rule's status, trigger, wait and `unless` stop, its exclusive group, and any
    loop of follow-ups.

    Example: nudge journeys --html journeys.html
    """
    from engine.journeys import load_journeys, render_text, write_html

    settings = load_settings()
    journey_map = load_journeys(settings.rules_dir)
    if html_file is not None:
        write_html(journey_map, html_file, title=f"{settings.shop.name}: journeys")
    if json_output:
        print_json(journey_map.as_dict())
        return
    typer.echo(render_text(journey_map), nl=False)
    if html_file is not None:
        echo(f"HTML written to {html_file}")


if __name__ == "__main__":
    app()
