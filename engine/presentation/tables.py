"""Tables: rich boxes in a terminal, plain aligned columns everywhere else.

Pipes, files and tests get the plain form, which is stable and greps well; a person at
a terminal gets rich's table (NO_COLOR is honoured by rich itself).
"""

from __future__ import annotations

import sys
import unicodedata
from collections.abc import Sequence

import typer


def print_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    cells = [["" if c is None else str(c) for c in row] for row in rows]
    if sys.stdout.isatty():
        _rich_table(headers, cells)
    else:
        for line in plain_table(headers, cells):
            typer.echo(line)


def plain_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    """Columns padded to their widest cell (CJK characters count double), a rule under
    the header, trailing spaces trimmed."""
    cells = [[str(h) for h in headers], *rows]
    widths = [max(_width(row[i]) for row in cells) for i in range(len(headers))]
    lines = []
    for index, row in enumerate(cells):
        lines.append("  ".join(_pad(cell, widths[i]) for i, cell in enumerate(row)).rstrip())
        if index == 0:
            lines.append("  ".join("-" * w for w in widths))
    return lines


def _rich_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    from rich import box
    from rich.console import Console
    from rich.table import Table

    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    for header in headers:
        table.add_column(str(header), overflow="fold")
    for row in rows:
        table.add_row(*row)
    # markup off: a user id or an error message with [brackets] is printed as is.
    Console(markup=False, highlight=False, emoji=False).print(table)


def _width(text: str) -> int:
    return sum(2 if unicodedata.east_asian_width(ch) in "WF" else 1 for ch in text)


def _pad(text: str, width: int) -> str:
    return text + " " * (width - _width(text))
