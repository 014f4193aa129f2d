"""Lines, JSON, warnings and plurals: the small words every command prints."""

from __future__ import annotations

import json

import typer


def echo(text: str = "", *, err: bool = False) -> None:
    typer.echo(text, err=err)


def print_json(data: object) -> None:
    """`--json`: indented, UTF-8 kept readable; instants and decimals as strings."""
    typer.echo(json.dumps(data, indent=2, ensure_ascii=False, default=str))


def warn(message: str) -> None:
    """Something the operator should know that is not a failure (exit code unchanged)."""
    typer.echo(f"Warning: {message}", err=True)


def fail(message: str, code: int = 1) -> typer.Exit:
    """`Error: ...` on stderr; raise the returned Exit: `raise fail("...")`."""
    typer.echo(f"Error: {message}", err=True)
    return typer.Exit(code)


def plural(count: int, word: str, many: str | None = None) -> str:
    """`1 error`, `2 errors`, `0 rows`, `3 stage entries`: the count with its word.

    The last word takes the plural; `many` spells an irregular one.
    """
    if count == 1:
        return f"{count} {word}"
    if many is None:
        consonant_y = word.endswith("y") and word[-2:-1] not in ("a", "e", "o", "u")
        many = word[:-1] + "ies" if consonant_y else word + "s"
    return f"{count} {many}"


def counts_text(counts: dict[str, int], empty: str = "") -> str:
    """`delivered 3, skipped 1`: named counts, sorted by name."""
    return ", ".join(f"{name} {n}" for name, n in sorted(counts.items())) or empty
