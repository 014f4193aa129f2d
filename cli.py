"""The `nudge` command: parse arguments, call one engine function, print.

Expected errors (engine.errors.NudgeError) print as `Error: ...` with exit code 1;
anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from typer.core import TyperGroup

from engine.config import load_settings
from engine.errors import NudgeError


class NudgeGroup(TyperGroup):
    """Turns expected engine errors into `Error: ...` + exit 1, never a traceback."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except NudgeError as exc:
            typer.echo(f"Error: {exc}", err=True)
            raise typer.Exit(1) from None
        finally:
            # Close every database a command opened, whatever way it ended.
            while _opened_stores:
                _opened_stores.pop().dispose()


app = typer.Typer(
    cls=NudgeGroup,
    help="Nudge: rule-driven marketing automation for e-commerce.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    # Plain output: stable for scripts, pipes and tests.
    rich_markup_mode=None,
)
db_app = typer.Typer(help="Database schema.", no_args_is_help=True, rich_markup_mode=None)
app.add_typer(db_app, name="db")

JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON for machines.")]


def fail(message: str, code: int = 1) -> typer.Exit:
    typer.echo(f"Error: {message}", err=True)
    return typer.Exit(code)


def print_json(data: object) -> None:
    typer.echo(json.dumps(data, indent=2, ensure_ascii=False, default=str))


def print_table(headers: list[str], rows: list[list[object]]) -> None:
    """A plain aligned table: readable in a terminal, stable in tests and pipes."""
    cells = [[str(h) for h in headers]] + [["" if c is None else str(c) for c in r] for r in rows]
    widths = [max(_width(row[i]) for row in cells) for i in range(len(headers))]
    for index, row in enumerate(cells):
        typer.echo("  ".join(_pad(cell, widths[i]) for i, cell in enumerate(row)).rstrip())
        if index == 0:
            typer.echo("  ".join("-" * w for w in widths))


def _width(text: str) -> int:
    import unicodedata

    return sum(2 if unicodedata.east_asian_width(ch) in "WF" else 1 for ch in text)


def _pad(text: str, width: int) -> str:
    return text + " " * (width - _width(text))


_opened_stores: list = []


def open_project_store():
    """The project's store; closed by NudgeGroup when the command ends."""
    from engine.store import open_store

    store = open_store(load_settings())
    _opened_stores.append(store)
    return store


# ---------------- project & database


@app.command()
def init(
    directory: Annotated[Path, typer.Argument(help="Folder of the new project.")] = Path("."),
    name: Annotated[str | None, typer.Option(help="Shop name.")] = None,
) -> None:
    """Scaffold a project: nudge.toml, rules/, templates/, and an up-to-date database.

    Example: nudge init my-shop
    """
    from engine.project import scaffold
    from engine.store import open_store
    from engine.store.migrations import upgrade

    try:
        created = scaffold(directory, name=name)
    except FileExistsError as exc:
        raise fail(f"{exc} already exists; this folder is already a Nudge project") from None
    store = open_store(load_settings(directory), check_schema=False)
    upgrade(store)
    store.dispose()
    for path in created:
        typer.echo(f"created {path}")
    typer.echo(f"database ready: {store.settings.database_url}")


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Create or migrate the database schema to this version of Nudge.

    Example: nudge db upgrade
    """
    from engine.store import open_store
    from engine.store.migrations import upgrade

    store = open_store(load_settings(), check_schema=False)
    before, after = upgrade(store)
    store.dispose()
    if before == after:
        typer.echo(f"schema already at revision {after}")
    else:
        typer.echo(f"schema upgraded from {before or 'empty'} to {after}")


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
    rejects file); 1: an input could not be read at all.

    Example: nudge ingest users.csv events.jsonl
    """
    from engine.clock import utcnow
    from engine.ingest import ingest_files

    store = open_project_store()
    try:
        with _ingest_progress(enabled=not as_json) as progress:
            report = ingest_files(
                store,
                list(files),
                now=utcnow(),
                kind=kind,
                rejects_path=rejects,
                require_users=require_users,
                progress=progress,
            )
    finally:
        store.dispose()
    if as_json:
        print_json(report.as_dict())
    else:
        for reject in report.rejected[:REJECTS_SHOWN]:
            typer.echo(str(reject), err=True)
        if report.rejected_count > REJECTS_SHOWN:
            more = report.rejected_count - REJECTS_SHOWN
            typer.echo(f"... and {more} more rejected rows", err=True)
        if report.rejects_paths:
            typer.echo(f"rejected rows written to {', '.join(report.rejects_paths)}", err=True)
        typer.echo(
            f"{report.rows_read} rows read from {len(report.files)} file(s): "
            f"{report.users_upserted} users upserted, {report.users_created} users created "
            f"by events, {report.events_inserted} events stored, "
            f"{report.duplicates_skipped} duplicates skipped, {report.rejected_count} rejected"
            + (f", {report.spend_upserted} spend rows stored" if report.spend_upserted else "")
        )
        if report.coupons:
            counts = ", ".join(f"{outcome} {n}" for outcome, n in sorted(report.coupons.items()))
            typer.echo(f"coupon codes in purchases: {counts}")
    if report.has_rejects:
        raise typer.Exit(2)


def _ingest_progress(*, enabled: bool):
    """A row counter on stderr when it is a terminal; a no-op callback otherwise."""
    import contextlib
    import sys

    if not (enabled and sys.stderr.isatty()):
        return contextlib.nullcontext(None)
    from rich.console import Console
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    @contextlib.contextmanager
    def bar():
        columns = (SpinnerColumn(), TextColumn("{task.completed:,} rows"), TimeElapsedColumn())
        with Progress(*columns, console=Console(stderr=True), transient=True) as shown:
            task = shown.add_task("ingest", total=None)
            yield lambda rows: shown.advance(task, rows)

    return bar()


# (end of ingest section)

# ---------------- lifecycle, stats, users, demo
users_app = typer.Typer(help="Look up users.", no_args_is_help=True, rich_markup_mode=None)
app.add_typer(users_app, name="users")

KpiAtOption = Annotated[
    str | None,
    typer.Option("--at", help="Instant T, ISO 8601 (shop time zone when no offset). Default: now."),
]


def _local(value, tz) -> str:
    """An instant in the shop's time zone, to the second, for people."""
    from datetime import datetime

    if isinstance(value, dict | list):
        return json.dumps(value, ensure_ascii=False)
    if not isinstance(value, datetime):
        return "" if value is None else str(value)
    return value.astimezone(tz).isoformat(sep=" ", timespec="seconds")


def _print_kpis(result: dict, tz) -> None:
    from engine.stats import format_money, format_rate

    currency = result["currency"]
    typer.echo(f"Shop KPIs as of {_local(result['as_of'], tz)}")
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
    typer.echo("")
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
    from engine.clock import utcnow
    from engine.errors import NudgeError
    from engine.planning.timeparse import parse_instant
    from engine.stats import shop_report

    def instant(option: str, value: str):
        try:
            return parse_instant(value, store.settings.tz)
        except NudgeError as exc:
            raise NudgeError(str(exc).replace("--at", option, 1)) from None

    if at and until:
        raise fail("--at and --until are the same instant: give one of them")
    store = open_project_store()
    try:
        as_of = instant("--until", until) if until else instant("--at", at) if at else utcnow()
        start = instant("--since", since) if since else None
        with store.read() as connection:
            result = shop_report(connection, store.settings, since=start, until=as_of)
    finally:
        store.dispose()
    if as_json:
        print_json(result)
    else:
        from engine.stats import currency_note, render_report

        _print_kpis(result, store.settings.tz)
        typer.echo(render_report(result, store.settings.tz))
        typer.echo(f"\n{currency_note(result['currency'])}")


@users_app.command("show")
def users_show(
    user_id: Annotated[str, typer.Argument(help="The shop's own user id.")],
    as_json: JsonFlag = False,
) -> None:
    """One user: fields, consent, tags, profile, stage history and the latest 20 events.

    Example: nudge users show u00042
    """
    from engine.clock import utcnow
    from engine.users import user_detail

    store = open_project_store()
    try:
        with store.read() as connection:
            detail = user_detail(connection, store.settings, user_id, utcnow())
    finally:
        store.dispose()
    if as_json:
        print_json(detail)
        return
    tz = store.settings.tz
    fields = {**detail["user"], **detail["consent"], "tags": ", ".join(detail["tags"])}
    fields["stage"] = detail["stage"]
    print_table(["field", "value"], [[k, _local(v, tz)] for k, v in fields.items()])
    typer.echo("")
    profile = detail["profile"] or {}
    print_table(["profile", "value"], [[k, _local(v, tz)] for k, v in profile.items()])
    typer.echo("")
    print_table(
        ["stage", "entered", "exited"],
        [
            [row["stage"], _local(row["entered_at"], tz), _local(row["exited_at"], tz)]
            for row in detail["stage_history"]
        ],
    )
    typer.echo("")
    print_table(
        ["time", "type", "amount", "order", "coupon", "utm_source"],
        [
            [
                _local(e["occurred_at"], tz),
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
    try:
        result = build_demo(store, now=utcnow(), users=users, seed=seed)
    finally:
        store.dispose()
    if as_json:
        print_json(result.as_dict())
        return
    ingest = result.ingest
    folder = result.files.users_path.parent
    typer.echo(f"wrote {result.files.users} users and {result.files.events} events to {folder}")
    typer.echo(
        f"ingested {ingest.users_upserted} users and {ingest.events_inserted} events "
        f"({ingest.rejected_count} rejected)"
    )
    typer.echo(f"recorded {result.stages.total_entered} stage entries")
    for rule_id, holdout in result.holdouts.items():
        typer.echo(f"gave rules/{rule_id}.yaml a {holdout} holdout: `nudge report` measures it")
    typer.echo("")
    _print_kpis(result.stats, store.settings.tz)


def _demo_respond(now, seed: int, as_json: bool) -> None:
    from engine.demo import RESPONSE_PERIOD, simulate_responses
    from engine.durations import format_duration

    store = open_project_store()
    result = simulate_responses(store, store.settings, now=now, seed=seed)
    if as_json:
        print_json(result.as_dict())
        return
    tz, period = store.settings.tz, format_duration(RESPONSE_PERIOD)
    typer.echo(f"shoppers' answers as of {_local(now, tz)} (within {period} of each message):")
    rows = []
    for rule_id, groups in result.rules.items():
        for name, counts in groups.items():
            rate = "-" if counts.rate is None else f"{counts.rate:.1%}"
            code = counts.with_code if name == "treated" else ""
            rows.append([rule_id, name, counts.decisions, counts.buyers, rate, code])
    print_table(["rule", "group", "users", "bought", "rate", "with the coupon"], rows)
    if result.too_recent:
        typer.echo(
            f"{result.too_recent} decisions not answered: not exposed {period} before "
            f"{_local(now, tz)} (dispatch first, or give a later --at)"
        )
    ingest = result.ingest
    line = f"ingested {ingest.events_inserted} events from {result.path}"
    if ingest.coupons:
        line += ": coupon codes " + ", ".join(f"{k} {v}" for k, v in sorted(ingest.coupons.items()))
    typer.echo(line)


# (end of lifecycle section)

# ---------------- rules: check, test, dry-run, explain, fire


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
        typer.echo(f"wrote {out}")


def parse_at(value: str | None):
    """--at: an ISO 8601 instant; without an offset it is read in the shop time zone."""
    from engine.clock import utcnow
    from engine.planning.timeparse import parse_instant

    if value is None:
        return utcnow()
    return parse_instant(value, load_settings().tz)


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

    report = check_project(load_settings(), use_store=not no_store)
    if json_output:
        print_json(report.as_dict())
    else:
        for diagnostic in report.diagnostics:
            typer.echo(diagnostic.render(relative_to=Path.cwd()))
        for rule_id, times in report.schedules.items():
            shown = ", ".join(t.isoformat() for t in times) or "none within its flight"
            typer.echo(f"{rule_id}: next fire times {shown}")
        typer.echo(report.summary())
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
        typer.echo(diagnostic.render(relative_to=Path.cwd()), err=True)
    run = run_rule_tests(settings, path or settings.rules_dir / "tests", ruleset)
    if json_output:
        print_json(run.as_dict())
    else:
        for result in run.results:
            typer.echo(f"{'PASS' if result.passed else 'FAIL'}  {result.file.name}: {result.name}")
            for failure in result.failures:
                typer.echo(f"      {failure}")
        typer.echo(f"{run.passed} passed, {run.failed} failed")
    raise typer.Exit(1 if run.failed or ruleset.errors else 0)


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
    from engine.planning.compile import load_ruleset
    from engine.planning.runner import evaluate

    store = open_project_store()
    ruleset = load_ruleset(store.settings)
    evaluation = evaluate(
        store, ruleset, at=parse_at(at), rule_ids=rule, user_id=user, dry_run=True
    )
    if json_output:
        print_json(evaluation.as_dict())
        return
    from engine.planning.report import render_evaluation

    typer.echo(render_evaluation(evaluation))


@app.command()
def fire(
    rule: Annotated[str, typer.Argument(help="The rule to evaluate.")],
    at: AtOption = None,
    json_output: JsonFlag = False,
) -> None:
    """Evaluate one rule for real, once (for shops that schedule with cron).

    Example: nudge fire winback-lapsed-members
    """
    from engine.planning.compile import load_ruleset
    from engine.planning.runner import evaluate

    store = open_project_store()
    ruleset = load_ruleset(store.settings)
    evaluation = evaluate(store, ruleset, at=parse_at(at), rule_ids=[rule], mode="fire")
    if json_output:
        print_json(evaluation.as_dict())
    else:
        from engine.planning.report import render_evaluation

        typer.echo(render_evaluation(evaluation))
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
    explanation = explain_user(store, ruleset, user, rule, at=parse_at(at), funnel=funnel)
    if json_output:
        print_json(explanation)
    else:
        typer.echo(render_explanation(explanation))


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
) -> None:
    """The daemon: evaluate rules when data arrives, a schedule slot is due or a tick
    passes; deliver the outbox continuously. SIGTERM/SIGINT stop it cleanly.

    Example: nudge run --log-format json
    """
    from engine.daemon import run_daemon
    from engine.daemon_log import FORMATS, DaemonLog

    if log_format not in FORMATS:
        raise fail(f"--log-format must be one of {', '.join(FORMATS)}, not {log_format!r}")
    run_daemon(
        once=once,
        dispatch=not no_dispatch,
        tick_seconds=tick_seconds,
        log=DaemonLog(log_format),
    )


# (end of rules section)

# ---------------- creatives: preview, landing
landing_app = typer.Typer(help="Landing pages.", no_args_is_help=True, rich_markup_mode=None)
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
    if json_output:
        print_json(
            {
                "creative": result.creative,
                "locale": result.locale,
                "out": str(result.out),
                "surfaces": [asdict(row) for row in result.rows],
                "diagnostics": [d.as_dict() for d in result.diagnostics],
            }
        )
    else:
        typer.echo(f"{result.creative} ({result.locale}) -> {result.out}")
        print_table(
            ["surface", "file", "width/size", "status"],
            [[r.surface, r.file, r.size, r.status] for r in result.rows],
        )
        for diagnostic in result.diagnostics:
            typer.echo(diagnostic.render(), err=True)
    if result.diagnostics:
        raise typer.Exit(1)


@landing_app.command("build")
def landing_build(
    out: Annotated[Path, typer.Option(help="Output folder.")] = Path("build/landing"),
) -> None:
    """Write the landing page of every creative, locale and variant as a static site.

    Example: nudge landing build --out build/landing
    """
    from engine.clock import utcnow
    from engine.creatives.landing import build_landing_site

    pages = build_landing_site(load_settings(), out, now=utcnow())
    print_table(
        ["creative", "rule", "variant", "locale", "file"],
        [[p.creative, p.rule_id, p.variant or "default", p.locale, p.path] for p in pages],
    )
    typer.echo(f"{len(pages)} pages, index: {out / 'index.html'}")


# (end of creatives section)

# ---------------- delivery: dispatch, status, coupons, audiences
coupons_app = typer.Typer(help="Coupon codes.", no_args_is_help=True, rich_markup_mode=None)
app.add_typer(coupons_app, name="coupons")
audiences_app = typer.Typer(
    help="Retargeting audiences.", no_args_is_help=True, rich_markup_mode=None
)
app.add_typer(audiences_app, name="audiences")


def _delivery_now(value: str | None):
    """--at for delivery commands: ISO 8601; without an offset, in the shop time zone."""
    from engine.clock import utcnow
    from engine.planning.timeparse import parse_instant

    if value is None:
        return utcnow()
    return parse_instant(value, load_settings().tz)


class _delivery_store:  # lower case: used like a function, `with _delivery_store() as s:`
    """The project's store, closed afterwards (PostgreSQL connections are not leaked)."""

    def __enter__(self):
        self.store = open_project_store()
        return self.store

    def __exit__(self, *exc_info) -> None:
        self.store.dispose()


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
    from engine.delivery.runner import run_dispatcher

    def show(report) -> None:
        if json_output:
            print_json(report.as_dict())
        else:
            counts = ", ".join(f"{k} {v}" for k, v in sorted(report.outcomes.items()))
            reasons = ", ".join(f"{k} {v}" for k, v in sorted(report.reasons.items()))
            typer.echo(f"claimed {report.claimed}: {counts or 'nothing due'}")
            if reasons:
                typer.echo(f"reasons: {reasons}")

    with _delivery_store() as store:
        run_dispatcher(store, once=once, at=_delivery_now(at) if at else None, on_pass=show)


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
    from engine.measurement.report import build_report, option_instant, render_report

    with _delivery_store() as store:
        tz = store.settings.tz
        result = build_report(
            store,
            since=option_instant("--since", since, tz),
            until=option_instant("--until", until, tz),
            rule_ids=rule,
        )
        if html_file is not None:
            from engine.measurement.html import write_html_report

            write_html_report(store, result, html_file)
    if json_output:
        print_json(result.as_dict(tz))
    elif html_file is not None:
        typer.echo(f"HTML report written to {html_file}")
    else:
        typer.echo(render_report(result, tz))


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
    from engine.delivery.status import delivery_status

    shown = 10  # rows per list without --all; --json is for machines: always every row

    def more(hidden: int) -> None:
        if hidden > 0:
            typer.echo(f"… and {hidden} more (nudge status --all / --json)")

    from engine.clock import utcnow
    from engine.operations import operations
    from engine.planning.compile import load_ruleset

    with _delivery_store() as store:
        report = delivery_status(store, limit=None if json_output or all_rows else shown)
        ops = operations(store, load_ruleset(store.settings), now=utcnow())
        tz = store.settings.tz
    if json_output:
        print_json(report.as_dict() | ops.as_dict())
        return
    print_table(["state", "actions"], [[k, v] for k, v in report.counts.items()])
    typer.echo(f"oldest pending: {_local(report.oldest_pending_at, tz) or '-'}")
    if report.skipped_reasons:
        typer.echo("")
        print_table(["skip reason", "actions"], [[k, v] for k, v in report.skipped_reasons.items()])
    if report.retrying:
        typer.echo("")
        print_table(
            ["retrying id", "rule", "user", "kind", "attempts", "next attempt", "reason"]
            + ["last error"],
            [
                [r["id"], r["rule_id"], r["user_id"], r["kind"], r["attempts"]]
                + [_local(r["next_attempt_at"], tz), r["reason"], (r["last_error"] or "")[:80]]
                for r in report.retrying
            ],
        )
        more(report.retrying_total - len(report.retrying))
    if report.dead:
        typer.echo("")
        print_table(
            ["dead id", "rule", "user", "kind", "attempts", "reason", "last error"],
            [
                [
                    d["id"],
                    d["rule_id"],
                    d["user_id"],
                    d["kind"],
                    d["attempts"],
                    d["reason"],
                    (d["last_error"] or "")[:80],
                ]
                for d in report.dead
            ],
        )
        more(report.dead_total - len(report.dead))
    typer.echo("")
    _print_operations(ops, tz)


def _print_operations(ops, tz) -> None:
    """Daemons, then rules with their next fire time and last run, then missed slots."""
    if ops.daemons:
        print_table(
            ["daemon", "host", "pid", "started", "last heartbeat", "state"],
            [
                [d["id"][:8], d["host"], d["pid"], _local(d["started_at"], tz)]
                + [_local(d["heartbeat_at"], tz), d["state"]]
                for d in ops.daemons
            ],
        )
    else:
        typer.echo("no daemon has run in the last 7 days (start one: nudge run)")
    if ops.rules:
        typer.echo("")
        rows = []
        for rule in ops.rules:
            last = rule["last_run"] or {}
            summary = ""
            if last:
                summary = f"{last['status']}: planned {last['planned']}"
                if last["error"]:
                    summary = f"{last['status']}: {last['error'][:60]}"
            rows.append(
                [rule["rule"], rule["status"], rule["trigger"], _local(rule["next_fire"], tz)]
                + [_local(last.get("at"), tz), summary]
            )
        print_table(["rule", "status", "trigger", "next fire", "last run", "result"], rows)
    for missed in ops.missed:
        typer.echo(
            f"missed: {missed['rule']} skipped {missed['missed']} slot(s) up to "
            f"{_local(missed['through'], tz)} (older than misfire_grace when a daemon came back)"
        )


@app.command()
def retry(
    ids: Annotated[list[int] | None, typer.Argument(help="Dead action ids.")] = None,
    all_dead: Annotated[bool, typer.Option("--all", help="Requeue every dead action.")] = False,
) -> None:
    """Requeue dead letters (after fixing their cause) so the next dispatch retries them.

    Example: nudge retry --all
    """
    from engine.clock import utcnow
    from engine.delivery.status import retry_dead

    if bool(ids) == all_dead:
        raise fail("give dead action ids, or --all")
    with _delivery_store() as store:
        count = retry_dead(store, now=utcnow(), ids=None if all_dead else ids)
    typer.echo(f"requeued {count} dead action(s)")


@app.command()
def unsubscribe(token: Annotated[str, typer.Argument(help="Token from the email link.")]) -> None:
    """Unsubscribe a user from marketing email by the token in their List-Unsubscribe link.

    Example: nudge unsubscribe 3q2-Xb0Kc1rT9aWwzV5mJQdE8yHnLp7u
    """
    from engine.clock import utcnow
    from engine.delivery.unsubscribe import unsubscribe as unsubscribe_token

    with _delivery_store() as store:
        user_id = unsubscribe_token(store, token, now=utcnow())
    typer.echo(f"unsubscribed {user_id}")


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
    app = create_app(settings, store=open_project_store())
    uvicorn.run(
        app,
        host=host or settings.serve.host,
        port=port or settings.serve.port,
        proxy_headers=True,
        forwarded_allow_ips=forwarded_allow_ips,
        server_header=False,
        log_level="info",
    )


@coupons_app.command("export")
def coupons_export(
    out: Annotated[Path | None, typer.Option("--out", help="CSV file (default: stdout).")] = None,
) -> None:
    """Write every issued coupon code as CSV for the shop's checkout.

    Example: nudge coupons export --out coupons.csv
    """
    import sys

    from engine.coupons.export import export_coupons

    with _delivery_store() as store:
        if out is None:
            export_coupons(store, sys.stdout)
            return
        with out.open("w", encoding="utf-8", newline="") as handle:
            count = export_coupons(store, handle)
    typer.echo(f"wrote {count} coupon(s) to {out}")


@coupons_app.command("redeem")
def coupons_redeem(json_output: JsonFlag = False) -> None:
    """Redeem coupons from ingested purchases with a coupon_code; report refused codes.

    Example: nudge coupons redeem
    """
    from engine.clock import utcnow
    from engine.coupons.redeem import redeem_coupons

    with _delivery_store() as store:
        report = redeem_coupons(store, now=utcnow())
    if json_output:
        print_json({"counts": dict(report.counts), "refused": report.refused})
        return
    typer.echo(", ".join(f"{k} {v}" for k, v in sorted(report.counts.items())) or "nothing new")
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
        typer.echo(
            f"{r.platform}: +{r.added} -{r.removed} ({r.skipped_no_identifier} without "
            "email or phone)"
        )
        if r.phones_left_out:  # by reason: "invalid" or "unparseable" (engine/phones.py)
            total = r.phones_left_out.total()
            reasons = ", ".join(f"{n} {why}" for why, n in sorted(r.phones_left_out.items()))
            typer.echo(f"  left out {total} phone number{'s' * (total != 1)}: {reasons}")
        for path in r.files:
            typer.echo(f"  wrote {path}")


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

    Example: nudge audiences sync lapsed-high-value --platform google --platform meta
    """
    from engine.audiences.sync import sync_audience
    from engine.clock import utcnow
    from engine.delivery.config import delivery_config

    with _delivery_store() as store:
        config = delivery_config(store.settings)
        results = sync_audience(
            store,
            name,
            platforms=tuple(platform or config.audiences.platforms),
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

    Example: nudge audiences export lapsed-high-value --format google --out exports/
    """
    from engine.audiences.sync import export_audience
    from engine.clock import utcnow
    from engine.delivery.config import delivery_config

    with _delivery_store() as store:
        config = delivery_config(store.settings)
        folder = out or store.settings.project_dir / config.audiences.folder
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
    from engine.audiences.converters import export_converters
    from engine.delivery.config import delivery_config
    from engine.measurement.report import option_instant

    with _delivery_store() as store:
        tz = store.settings.tz
        config = delivery_config(store.settings)
        result = export_converters(
            store,
            rule,
            format,
            out or store.settings.project_dir / config.audiences.folder,
            since=option_instant("--since", since, tz),
            until=option_instant("--until", until, tz),
        )
    if json_output:
        print_json(result.as_dict())
        return
    period = f"{_local(result.since, tz)} to {_local(result.until, tz)}"
    typer.echo(f"{result.rule}: {result.converters} converted users (decisions from {period})")
    skipped = f"{result.skipped_no_identifier} without email or phone"
    if result.left_out:  # by consent refusal: no_consent, unsubscribed (engine/consent.py)
        reasons = ", ".join(f"{why} {n}" for why, n in sorted(result.left_out.items()))
        skipped += f"; left out {result.left_out.total()} without ads consent: {reasons}"
    typer.echo(f"{result.platform}: +{result.exported} ({skipped})")
    if result.phones_left_out:
        total = result.phones_left_out.total()
        reasons = ", ".join(f"{n} {why}" for why, n in sorted(result.phones_left_out.items()))
        typer.echo(f"  left out {total} phone number{'s' * (total != 1)}: {reasons}")
    for path in result.files:
        typer.echo(f"  wrote {path}")


# (end of delivery section)


if __name__ == "__main__":
    app()
