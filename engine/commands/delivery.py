"""The daemon and the outbox: run, dispatch, status, retry, unsubscribe, serve."""

from __future__ import annotations

from typing import Annotated

import typer

from engine.commands.common import DeliveryAt, JsonFlag, parse_at, shop_zone
from engine.config import load_settings
from engine.presentation import progress
from engine.presentation.output import counts_text, echo, fail, plural, print_json
from engine.presentation.stores import open_project_store
from engine.presentation.tables import print_table
from engine.presentation.times import local_time


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


def dispatch(
    once: Annotated[bool, typer.Option("--once", help="One pass, then exit.")] = False,
    at: DeliveryAt = None,
    json_output: JsonFlag = False,
) -> None:
    """Deliver due outbox actions through the configured channels (loops unless --once).

    Example: nudge dispatch --once
    """
    from engine.delivery.runner import run_dispatchers

    def show(report) -> None:
        if json_output:
            print_json(report.as_dict())
        else:
            echo(f"claimed {report.claimed}: {counts_text(report.outcomes, 'nothing due')}")
            if report.reasons:
                echo(f"reasons: {counts_text(report.reasons)}")

    store = open_project_store()
    when = parse_at(at, tz=store.settings.tz) if at else None
    if once:  # one pass (of every dispatcher): a spinner, then their total
        with progress.activity("delivering"):
            total = run_dispatchers(store, once=True, at=when)
        show(total)
        return
    # The loop runs until stopped and prints each pass that claimed something.
    run_dispatchers(store, once=False, at=when, on_pass=show)


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
