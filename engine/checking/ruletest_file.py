"""One rule test file (rules/tests/*.yaml) -> validated tests, every problem located.

The file is read by the same YAML reader as rule files (engine/rules/yaml_source.py),
so a mistake is reported as `file:line:col: error: message` on the line an ops person
typed, through the same pydantic-error translation (engine/rules/diagnostics.py):
"unknown key 'nwo' (did you mean 'now'?)" rather than "tests.2.nwo: Extra inputs are
not permitted". Everything that can be checked without running the test is checked
here, all at once: the instants, tick offsets and relative times of the test data.

`now` is the instant a test evaluates at. The file's top-level `now` is the default
of its tests; a test's own `now:` overrides it (a test about a different day of a
campaign need not move to a file of its own).
"""

from __future__ import annotations

from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
)

from engine.durations import parse_duration
from engine.errors import Diagnostic, LocatedError, Location
from engine.rules.diagnostics import validation_diagnostics
from engine.rules.yaml_source import YamlDocument, parse_yaml

TIME_FIELDS_USERS = ("member_since", "unsubscribed_at")
TIME_FIELDS_EVENTS = ("at", "occurred_at", "time")
NOW_EXAMPLE = "2026-11-11T10:00:00+08:00"


def _instant(value: Any) -> datetime:
    """A date and time with a UTC offset; YAML reads `2026-11-11T10:00:00+08:00` as one."""
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value.strip())
        except ValueError:
            raise ValueError(
                f"'now' must be a date and time with an offset such as {NOW_EXAMPLE}, not {value!r}"
            ) from None
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ValueError(f"'now' needs a time zone offset, e.g. {NOW_EXAMPLE}")
        return value
    shown = value.isoformat() if isinstance(value, date) else repr(value)
    raise ValueError(
        f"'now' must be a date and time with an offset such as {NOW_EXAMPLE}, not {shown}"
    )


Instant = Annotated[datetime, BeforeValidator(_instant)]


def relative_offset(text: str) -> timedelta:
    """'-3d' -> -3 days, '+1h' / '1h' -> 1 hour, '0' or 'now' -> zero."""
    text = text.strip()
    if text in ("0", "now"):
        return timedelta()
    sign = -1 if text.startswith("-") else 1
    return sign * parse_duration(text.lstrip("+-"))


def _tick(value: Any) -> str:
    text = str(value)
    try:
        relative_offset(text)
    except ValueError as exc:
        raise ValueError(
            f"tick {text!r}: {exc}; a tick is an offset from now like -3d, 0 or 2h"
        ) from None
    return text


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Expectation(_Strict):
    rule: str
    planned: list[str] | None = None
    held_out: list[str] | None = None
    shadow: list[str] | None = None
    suppressed: dict[str, str] | None = None
    variants: dict[str, str] | None = None


class RuleTestCase(_Strict):
    name: str
    now: Instant | None = Field(
        default=None, description="The instant this test evaluates at (default: the file's)."
    )
    users: list[dict[str, Any]] = Field(default_factory=list)
    events: list[dict[str, Any]] = Field(default_factory=list)
    ticks: list[Annotated[str, BeforeValidator(_tick)]] = Field(default_factory=lambda: ["0"])
    expect: list[Expectation] = Field(min_length=1)

    @field_validator("ticks", mode="before")
    @classmethod
    def _a_list(cls, value: Any) -> Any:
        return value if isinstance(value, list) else [value]


class RuleTestFile(_Strict):
    now: Instant | None = None
    tests: list[RuleTestCase] = Field(min_length=1)

    def now_of(self, case: RuleTestCase) -> datetime:
        """The instant `case` evaluates at: its own `now`, else the file's."""
        now = case.now or self.now
        assert now is not None, "load_test_file guarantees every test has a now"
        return now


def load_test_file(path: Path) -> RuleTestFile:
    """Read and validate one test file; raises LocatedError with every problem in it."""
    display = str(path)
    try:
        text = path.read_text(encoding="utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError:
        message = "the file is not UTF-8 text; save it as UTF-8"
        raise LocatedError([Diagnostic(Location(display, 1, 1), message)]) from None
    except OSError as exc:
        message = f"cannot read: {exc.strerror}"
        raise LocatedError([Diagnostic(Location(display), message)]) from None
    document = parse_yaml(text, display)
    if not isinstance(document.data, dict):
        message = "a rule test file is a mapping with 'now:' and 'tests:' (a list of tests)"
        raise LocatedError([document.diagnostic((), message)])
    spec: RuleTestFile | None = None
    diagnostics = _relative_time_problems(document)
    try:
        spec = RuleTestFile.model_validate(document.data)
    except ValidationError as exc:
        diagnostics += validation_diagnostics(document, exc, RuleTestFile)
    if spec is not None:
        diagnostics += _tests_without_now(document, spec)
    if diagnostics:
        raise LocatedError(_in_file_order(diagnostics))
    assert spec is not None
    return spec


def _relative_time_problems(document: YamlDocument) -> list[Diagnostic]:
    """Relative times of test data (`at: -95d`) must parse; absolute ones are ingest's.

    Checked on the raw data, beside the model, so that each error lands on its value.
    """
    tests = document.data.get("tests")
    if not isinstance(tests, list):
        return []
    problems: list[Diagnostic] = []
    for index, case in enumerate(tests):
        if not isinstance(case, dict):
            continue
        for section, fields in (("users", TIME_FIELDS_USERS), ("events", TIME_FIELDS_EVENTS)):
            rows = case.get(section)
            for row_index, row in enumerate(rows if isinstance(rows, list) else []):
                for key in fields if isinstance(row, dict) else ():
                    value = row.get(key)
                    if not (isinstance(value, str) and value.strip()[:1] in ("+", "-")):
                        continue
                    try:
                        relative_offset(value)
                    except ValueError as exc:
                        path = ("tests", index, section, row_index, key)
                        dotted = ".".join(str(part) for part in path)
                        problems.append(document.diagnostic(path, f"{dotted}: {exc}"))
    return problems


def _in_file_order(diagnostics: list[Diagnostic]) -> list[Diagnostic]:
    unique = list(dict.fromkeys(diagnostics))
    return sorted(unique, key=lambda d: (d.location.line or 0, d.location.column or 0))


def _tests_without_now(document: YamlDocument, spec: RuleTestFile) -> list[Diagnostic]:
    if spec.now is not None:
        return []
    return [
        document.diagnostic(
            ("tests", index, "name"),
            f"test {case.name!r} has no 'now': give it one (now: {NOW_EXAMPLE}) "
            "or put one at the top of the file for every test",
            key=True,
        )
        for index, case in enumerate(spec.tests)
        if case.now is None
    ]
