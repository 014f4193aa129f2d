"""Progress on long work, on stderr: shown to a person at a terminal, silent otherwise.

Silent when stderr is not a terminal (pipes, cron, CI, tests) or after `--quiet`, so
nothing but the result ever reaches a log or a file. Bars are transient: they vanish
when the work is done and leave only the command's own output.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator

_quiet = False


def set_quiet(quiet: bool) -> None:
    """`nudge --quiet`: no progress for the rest of this process."""
    global _quiet
    _quiet = quiet


def shown() -> bool:
    return not _quiet and sys.stderr.isatty()


@contextlib.contextmanager
def counter(
    description: str, *, unit: str = "rows", total: int | None = None, detail: str = ""
) -> Iterator[Callable[[int], None]]:
    """A count of `unit` done so far (a bar when `total` is known); yields `advance(n)`.

    `advance` is always callable, shown or not, so callers count the same way either way.
    `detail` is static text after the count (e.g. the size of the inputs).
    """
    if not shown():
        yield lambda n: None
        return
    from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    columns = [SpinnerColumn(), TextColumn("{task.description}")]
    if total is not None:
        columns.append(BarColumn())
    columns += [TextColumn(f"{{task.completed:,}} {unit}{detail}"), TimeElapsedColumn()]
    with Progress(*columns, console=_console(), transient=True) as bar:
        task = bar.add_task(description, total=total)
        yield lambda n: bar.advance(task, n)


@contextlib.contextmanager
def activity(description: str) -> Iterator[None]:
    """A spinner with the elapsed time, for work that reports no steps of its own."""
    if not shown():
        yield
        return
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    columns = (SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn())
    with Progress(*columns, console=_console(), transient=True) as bar:
        bar.add_task(description, total=None)
        yield


def _console():
    from rich.console import Console

    return Console(stderr=True)
