"""The demo shop: demo."""

from __future__ import annotations

from typing import Annotated

import typer

from engine.commands.common import JsonFlag, parse_at
from engine.commands.users import print_kpis
from engine.presentation import progress
from engine.presentation.output import counts_text, echo, plural, print_json
from engine.presentation.stores import open_project_store
from engine.presentation.tables import print_table
from engine.presentation.times import local_time


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
    print_kpis(result.stats, store.settings.tz)


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
