"""The sandboxed Jinja environment every creative renders in.

Templates are written by marketers, not engineers, and they run inside the sending
daemon, so they get: Jinja's immutable sandbox (no attribute walks to `__class__`,
no `str.format` escapes, no mutating the context), `StrictUndefined` (a misspelt
variable is an error at `nudge check`, never an empty hole in a sent message),
autoescape for `.html` templates only (plain text and SMS must not show `&amp;`),
and a budget per render: wall time, output size, `range()` length, and the size of
`*` / `**` results, so a template cannot stall or bloat the daemon.
"""

from __future__ import annotations

import contextvars
import logging
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from functools import lru_cache
from pathlib import Path
from typing import Any

from babel import Locale
from babel.dates import format_date, format_datetime
from babel.numbers import format_currency, format_percent, parse_pattern
from jinja2 import (
    BaseLoader,
    StrictUndefined,
    Template,
    TemplateNotFound,
    TemplateSyntaxError,
    pass_context,
)
from jinja2.environment import TemplateModule
from jinja2.runtime import Context, Macro
from jinja2.sandbox import ImmutableSandboxedEnvironment

from engine import clock
from engine.creatives.context import NoOffer
from engine.creatives.errors import (
    CreativeAbort,
    InvalidCreativeNameError,
    OfferFactMissing,
    RenderLimitError,
)

CREATIVE_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]*$")
SHARED_FOLDER = "_shared"
_FILE_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")

MAX_RENDER_SECONDS = 2.0
MAX_OUTPUT_CHARS = 200_000
MAX_RANGE = 1_000
MAX_EXPONENT = 64
_LOG = logging.getLogger("nudge.creatives")


def check_creative_name(name: str) -> str:
    """Refuse any creative name that is not a plain slug (no `/`, `..`, `_shared`)."""
    if not isinstance(name, str) or not CREATIVE_NAME.fullmatch(name):
        raise InvalidCreativeNameError(
            f"invalid creative name {name!r}: use lowercase letters, digits, '-' and '_' "
            "(a folder directly under templates/)"
        )
    return name


def split_template_name(name: str) -> tuple[str, str]:
    """`creative/file` -> (folder, file), refusing anything that could leave the folder."""
    parts = name.split("/")
    if len(parts) != 2:
        raise InvalidCreativeNameError(f"invalid template name {name!r}: expected CREATIVE/FILE")
    folder, file = parts
    if folder != SHARED_FOLDER:
        check_creative_name(folder)
    if not _FILE_NAME.fullmatch(file) or ".." in file:
        raise InvalidCreativeNameError(f"invalid template file name {file!r}")
    return folder, file


# Within a delivery batch (`files_snapshot()`), each template, creative folder listing
# and resolved path is looked up on disk once, not once per surface of every message:
# tens of `stat` calls per email otherwise. An edit is seen by the next snapshot,
# i.e. the next batch; outside a snapshot (check, preview) every call looks again.
_SNAPSHOT: contextvars.ContextVar[dict | None] = contextvars.ContextVar(
    "creative_files_snapshot", default=None
)


@contextmanager
def files_snapshot() -> Iterator[None]:
    """Look template files up once inside the block (nested blocks share the outer)."""
    if _SNAPSHOT.get() is not None:
        yield
        return
    token = _SNAPSHOT.set({})
    try:
        yield
    finally:
        _SNAPSHOT.reset(token)


def snapshot_cached(key: tuple, compute):
    """compute(), remembered under `key` for the current snapshot (if any). Failures
    are not remembered."""
    memo = _SNAPSHOT.get()
    if memo is None:
        return compute()
    try:
        return memo[key]
    except KeyError:
        value = memo[key] = compute()
        return value


class CreativeLoader(BaseLoader):
    """Loads `creative/file` from the templates folder and nothing else.

    Names are validated before touching the disk and the resolved path must stay
    inside the folder, so neither `../` nor a symlink can reach other files.
    """

    def __init__(self, root: Path):
        self.root = root.resolve()

    def get_source(self, environment, template: str):
        folder, file = split_template_name(template)
        path = (self.root / folder / file).resolve()
        if not path.is_relative_to(self.root) or not path.is_file():
            raise TemplateNotFound(template)
        source = path.read_text(encoding="utf-8")
        mtime = path.stat().st_mtime
        return source, str(path), lambda: path.is_file() and path.stat().st_mtime == mtime


# The clock is read every CLOCK_EVERY operations of a render (each a sandboxed call,
# attribute or item lookup, `*`/`**` or range() item): reading it at each cost ~5 % of
# a send, and 16 such operations take microseconds.
CLOCK_EVERY = 16


@dataclass(slots=True)
class RenderBudget:
    deadline: float
    seconds: float
    operations: int = 0

    def tick(self) -> None:
        self.operations += 1
        if self.operations % CLOCK_EVERY == 0 and clock.monotonic() > self.deadline:
            raise RenderLimitError(f"rendering took longer than {self.seconds:g} s")


_BUDGET: contextvars.ContextVar[RenderBudget | None] = contextvars.ContextVar(
    "creative_render_budget", default=None
)


def start_budget(seconds: float = MAX_RENDER_SECONDS) -> contextvars.Token:
    return _BUDGET.set(RenderBudget(clock.monotonic() + seconds, seconds))


def end_budget(token: contextvars.Token) -> None:
    _BUDGET.reset(token)


def _tick() -> None:
    budget = _BUDGET.get()
    if budget is not None:
        budget.tick()


class BoundedRange:
    """`range()` for templates: at most MAX_RANGE items, the time budget checked per item."""

    def __init__(self, *args: int):
        self._range = range(*args)
        if len(self._range) > MAX_RANGE:
            raise RenderLimitError(
                f"range() of {len(self._range)} items exceeds the limit of {MAX_RANGE}"
            )

    def __len__(self) -> int:
        return len(self._range)

    def __iter__(self) -> Iterator[int]:
        for item in self._range:
            _tick()
            yield item


_DICT_ATTRIBUTES = frozenset(dir(dict))


def _sized(value: Any) -> int | None:
    return len(value) if isinstance(value, str | bytes | list | tuple) else None


class CreativeSandbox(ImmutableSandboxedEnvironment):
    """Jinja's immutable sandbox with a time and size budget on every operation.

    Templates are reloaded when their file changes (hot reload in a running daemon).
    An edit that does not compile keeps the last good version of that template in
    use, and says so on the `nudge.creatives` logger, so a typo saved to a live
    template never turns every message into a dead letter; `nudge check` shows the
    error with its line.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._last_good: dict[str, Template] = {}
        self.kept_last_good: dict[str, str] = {}  # template name -> the error

    def make_globals(self, d):
        """A template's globals as a plain dict, not Jinja's ChainMap over the
        environment's: every render copies them into its context, and a ChainMap is
        iterated by building a dict of all its keys each time (~5 % of a send). The
        same values: the environment's globals are set once, before any template is
        loaded (get_environment), as Jinja asks ("avoid modifying any globals after a
        template is loaded"); a template's own globals still overlay them."""
        return {**self.globals, **(d or {})}

    def get_template(self, name, parent=None, globals=None):  # noqa: A002 - Jinja's name
        if isinstance(name, str) and globals is None:
            # Also reached by `{% extends %}` / `{% import %}` inside templates.
            return snapshot_cached(
                ("template", id(self), name, parent),
                lambda: self._template_or_last_good(name, parent),
            )
        return self._template_or_last_good(name, parent, globals)

    def _template_or_last_good(self, name, parent=None, globals=None):  # noqa: A002
        try:
            template = super().get_template(name, parent, globals)
        except TemplateSyntaxError as exc:
            good = self._last_good.get(name if isinstance(name, str) else "")
            if good is None:
                raise
            error = f"{exc.filename or name}:{exc.lineno}: {exc.message}"
            if self.kept_last_good.get(name) != error:  # once per distinct error
                _LOG.warning("template does not compile, keeping its last good version: %s", error)
            self.kept_last_good[name] = error
            return good
        if isinstance(name, str):
            self._last_good[name] = template
            self.kept_last_good.pop(name, None)
        return template

    # Intercepting also stops Jinja from constant-folding `10**10**10` at compile time.
    intercepted_binops = frozenset({"*", "**"})

    def call_binop(self, context, operator, left, right):
        _tick()
        if operator == "**" and isinstance(right, int | float) and abs(right) > MAX_EXPONENT:
            raise RenderLimitError(f"exponent {right} exceeds the limit of {MAX_EXPONENT}")
        if operator == "*":
            for sequence, times in ((left, right), (right, left)):
                size = _sized(sequence)
                if size is not None and isinstance(times, int) and size * times > MAX_OUTPUT_CHARS:
                    raise RenderLimitError(
                        f"repeating a sequence {times} times exceeds {MAX_OUTPUT_CHARS} items"
                    )
        return super().call_binop(context, operator, left, right)

    def call(__self, __context, __obj, *args, **kwargs):  # noqa: N805 - Jinja's signature
        _tick()
        if type(__obj) is Macro:
            # A macro is safely callable and takes no context: called without the
            # sandbox's checks. Deliberately also without the caller's evaluation
            # context, which Jinja would pass: its output is then Markup (safe) by the
            # escaping of the template the macro was written in, not the caller's. The
            # shared blocks are plain text (.jinja), so an HTML surface escapes what
            # they print, shopper names included; Jinja would insert them unescaped
            # (test_html_surfaces_escape_what_the_shared_blocks_return).
            kwargs.pop("_block_vars", None)
            kwargs.pop("_loop_vars", None)
            try:
                return __obj(*args, **kwargs)
            except StopIteration:
                return __self.undefined(
                    "value was undefined because a callable raised a StopIteration exception"
                )
        return super().call(__context, __obj, *args, **kwargs)

    def getattr(self, obj, attribute):
        _tick()
        # Shortcuts giving what the sandbox gives, for the two lookups templates make
        # most (`offer.code`, `blocks.discount`), without its exception and checks.
        kind = type(obj)
        if kind is dict and attribute not in _DICT_ATTRIBUTES:
            # Not an attribute of dict: the sandbox's getattr() fails, then obj[attribute].
            try:
                return obj[attribute]
            except KeyError:
                return self.undefined(obj=obj, name=attribute)
        if kind is TemplateModule and not attribute.startswith("_"):
            value = getattr(obj, attribute, None)
            if type(value) is Macro:  # a safe attribute of a module (not internal)
                return value
        return super().getattr(obj, attribute)

    def getitem(self, obj, argument):
        _tick()
        return super().getitem(obj, argument)


def _abort(reason: str = "aborted by the template") -> None:
    raise CreativeAbort(str(reason))


def _to_decimal(value: Any) -> Decimal:
    try:
        return value if isinstance(value, Decimal) else Decimal(str(value))
    except (InvalidOperation, ValueError):
        raise ValueError(f"not a number: {value!r}") from None


def _no_offer(value: Any) -> None:
    # Formatting an offer fact of a message without a coupon is printing it.
    if isinstance(value, NoOffer):
        raise OfferFactMissing(value.fact)


@lru_cache(maxsize=64)
def _babel(tag: str) -> Locale:
    # Parsed once: Babel parses a locale given as text again in every call it makes
    # (a currency amount parses it four times).
    return Locale.parse(tag)


@lru_cache(maxsize=16)
def _number_pattern(pattern: str):
    return parse_pattern(pattern)


# The variables the filters below read through the context rather than by name: a
# template that uses them depends on these too (engine.creatives.render reuses a
# shared blocks module only when none of the names it reads changed).
CONTEXT_READ_BY_FILTERS = frozenset({"offer", "babel_locale", "tz"})


@pass_context
def money_filter(context: Context, value: Any, currency: str | None = None) -> str:
    """`{{ offer.value|money }}`: ¥20 in zh-CN, CN¥20 in en; cents only when present."""
    _no_offer(value)
    if value is None:
        return ""
    amount = _to_decimal(value)
    code = currency or context["offer"]["currency"]
    if isinstance(code, str):
        # The text of the amount keys the cache: 20 and 20.0 are equal Decimals.
        return _money(str(amount), code, context["babel_locale"])
    return _format_money(amount, code, context["babel_locale"])


@lru_cache(maxsize=1024)
def _money(amount: str, code: str, tag: str) -> str:
    # A batch prints the same few amounts (the rule's coupon) in a few locales.
    return _format_money(Decimal(amount), code, tag)


def _format_money(amount: Decimal, code: Any, tag: str) -> str:
    pattern = _number_pattern("¤#,##0") if amount == amount.to_integral_value() else None
    return format_currency(amount, code, format=pattern, locale=_babel(tag), currency_digits=False)


@pass_context
def percent_filter(context: Context, value: Any) -> str:
    """`{{ offer.percent_off|percent }}`: 15 -> 15%."""
    _no_offer(value)
    if value is None:
        return ""
    return format_percent(_to_decimal(value) / 100, locale=_babel(context["babel_locale"]))


@pass_context
def date_filter(context: Context, value: Any, format: str = "long") -> str:
    """`{{ offer.expires_at|date }}`: the day in the user's time zone and locale."""
    _no_offer(value)
    if value is None:
        return ""
    if isinstance(value, datetime):
        value = value.astimezone(context["tz"]).date()
    if not isinstance(value, date):
        raise ValueError(f"not a date: {value!r}")
    if isinstance(format, str) and type(value) is date:
        return _date(value, format, context["babel_locale"])
    return format_date(value, format=format, locale=_babel(context["babel_locale"]))


@lru_cache(maxsize=1024)
def _date(day: date, format: str, tag: str) -> str:  # noqa: A002 - the filter's name
    # The expiry day of one coupon, printed in every message of a batch.
    return format_date(day, format=format, locale=_babel(tag))


@pass_context
def datetime_filter(context: Context, value: Any, format: str = "medium") -> str:
    """`{{ offer.expires_at|datetime }}`: date and time in the user's time zone."""
    _no_offer(value)
    if value is None:
        return ""
    if not isinstance(value, datetime):
        raise ValueError(f"not a datetime: {value!r}")
    return format_datetime(
        value.astimezone(context["tz"]), format=format, locale=_babel(context["babel_locale"])
    )


@dataclass(frozen=True, slots=True)
class Printed:
    """A value a template printed with `{{ ... }}`, and where (template file and line)."""

    text: str
    filename: str
    line: int


_PRINTED: contextvars.ContextVar[list[Printed] | None] = contextvars.ContextVar(
    "creative_printed_values", default=None
)


@contextmanager
def recording_printed() -> Iterator[list[Printed]]:
    """Record every text value printed while rendering inside the block.

    `nudge check` uses it to name the template line that built a link; sending never
    records, so the cost there is one context-variable read per printed value.
    """
    printed: list[Printed] = []
    token = _PRINTED.set(printed)
    try:
        yield printed
    finally:
        _PRINTED.reset(token)


def _record(printed: list[Printed], value: str) -> None:
    # The caller of finalize is the compiled template code (a template, block or macro);
    # Jinja keeps its Template in the module globals to map Python lines to its own.
    frame = sys._getframe(1)
    while frame is not None:
        template = frame.f_globals.get("__jinja_template__")
        if template is not None and template.filename:
            line = template.get_corresponding_lineno(frame.f_lineno)
            printed.append(Printed(value, template.filename, line))
            return
        frame = frame.f_back


def _finalize(value: Any) -> Any:
    if isinstance(value, NoOffer):
        raise OfferFactMissing(value.fact)
    printed = _PRINTED.get()
    if printed is not None and isinstance(value, str):
        _record(printed, value)
    # A missing optional field (a user without a name) prints as nothing, not "None".
    return "" if value is None else value


def _autoescape(name: str | None) -> bool:
    return bool(name) and name.endswith(".html")


@lru_cache(maxsize=16)
def get_environment(templates_dir: Path) -> CreativeSandbox:
    """The shared environment of one templates folder (compiled templates are cached)."""
    env = CreativeSandbox(
        loader=CreativeLoader(templates_dir),
        undefined=StrictUndefined,
        autoescape=_autoescape,
        finalize=_finalize,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=False,
        auto_reload=True,
    )
    # lipsum() can generate unbounded text and has no use in a sent message.
    env.globals.pop("lipsum", None)
    env.globals.update(range=BoundedRange, abort=_abort)
    env.filters.update(
        money=money_filter, percent=percent_filter, date=date_filter, datetime=datetime_filter
    )
    return env
