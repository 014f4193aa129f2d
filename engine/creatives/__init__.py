"""Creatives: one offer rendered consistently on ads, landing page, email and SMS.

Public API:
- `build_context(user, offer, *, rule_id, variant, settings, base_url, secret, now)`
- `render_creative(settings, creative, surface, context) -> RenderedSurface | Skipped`
- `available_surfaces(settings, creative, locale=None) -> list[str]`
- `check_creatives(settings, uses: list[CreativeUse]) -> list[Diagnostic]`
- `preview_creative(...)` and `build_landing_site(...)` for the CLI.
"""

from engine.creatives.checks import check_creatives
from engine.creatives.context import build_context
from engine.creatives.errors import (
    CreativeAbort,
    CreativeNotFoundError,
    InvalidCreativeNameError,
    TemplateProblemError,
)
from engine.creatives.links import sign_token, verify_token
from engine.creatives.loader import list_creatives
from engine.creatives.render import RenderedSurface, Skipped, available_surfaces, render_creative
from engine.creatives.uses import CreativeUse

__all__ = [
    "CreativeAbort",
    "CreativeNotFoundError",
    "CreativeUse",
    "InvalidCreativeNameError",
    "RenderedSurface",
    "Skipped",
    "TemplateProblemError",
    "available_surfaces",
    "build_context",
    "check_creatives",
    "list_creatives",
    "render_creative",
    "sign_token",
    "verify_token",
]
