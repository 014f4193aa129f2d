"""Shop KPIs and one user's story: stats, users show."""

from __future__ import annotations

from typing import Annotated

import typer

from engine.commands.common import JsonFlag, KpiAtOption, parse_at, sub_app
from engine.presentation.output import echo, fail, print_json
from engine.presentation.stores import open_project_store
from engine.presentation.tables import print_table
from engine.presentation.times import cell, local_time, parse_instant_option

users_app = sub_app("Look up users.")


def print_kpis(result: dict, tz) -> None:
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

        print_kpis(result, tz)
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
