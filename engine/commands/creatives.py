"""Creatives: preview, landing build."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from engine.commands.common import JsonFlag, sub_app
from engine.config import load_settings
from engine.presentation import progress
from engine.presentation.output import echo, fail, plural, print_json, warn
from engine.presentation.tables import print_table

landing_app = sub_app("Landing pages.")


def _offer_options(pairs: list[str]) -> dict[str, str]:
    offer = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise fail(f"--offer {pair!r}: expected KEY=VALUE, e.g. --offer value=30")
        offer[key.strip()] = value.strip()
    return offer


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
