"""Coupon codes: coupons export/redeem."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from engine.commands.common import JsonFlag, sub_app
from engine.presentation.output import counts_text, echo, plural, print_json
from engine.presentation.stores import open_project_store
from engine.presentation.tables import print_table

coupons_app = sub_app("Coupon codes.")


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
