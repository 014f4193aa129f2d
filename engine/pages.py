"""The Jinja environment of Nudge's own HTML pages (the measurement report, the journeys
map, the operator console): sandboxed, autoescaped, StrictUndefined, one per template
package, made once. Creatives have their own environment (engine/creatives/environment.py):
those templates are the shop's, with render budgets and filters of their own."""

from __future__ import annotations

import functools

from jinja2 import PackageLoader, StrictUndefined
from jinja2.sandbox import ImmutableSandboxedEnvironment


@functools.cache
def page_environment(
    package: str, *, keep_trailing_newline: bool = True
) -> ImmutableSandboxedEnvironment:
    """The environment of the templates in `<package>/templates`."""
    return ImmutableSandboxedEnvironment(
        loader=PackageLoader(package, "templates"),
        autoescape=True,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=keep_trailing_newline,
    )
