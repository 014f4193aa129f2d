"""One scalar inside a JSON document column, typed, identically on SQLite and PostgreSQL.

`attributes.vip_score > 3` must mean the same on both databases even when a shop
stores "3" (text) for one user and 3 (number) for another, so a value is read only
when its JSON type is the one asked for; anything else is missing (NULL), which the
compiler treats like any other missing value. That also keeps PostgreSQL from
failing the whole query on CAST('abc' AS DOUBLE PRECISION).
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy import ColumnElement
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.expression import FunctionElement

from engine.conditions.nodes import Type


class _JsonScalar(FunctionElement):
    """Arguments: document column, SQLite JSON path, PostgreSQL text[] path (both bound)."""

    inherit_cache = True


class json_number(_JsonScalar):
    type = sa.Float()
    inherit_cache = True


class json_text(_JsonScalar):
    type = sa.String()
    inherit_cache = True


class json_bool(_JsonScalar):
    type = sa.Boolean()
    inherit_cache = True


class json_present(_JsonScalar):
    """The key exists and does not hold JSON null."""

    type = sa.Boolean()
    inherit_cache = True


_SQLITE_TYPES = {
    json_number: "IN ('integer', 'real')",
    json_text: "= 'text'",
    json_bool: "IN ('true', 'false')",
}
_POSTGRES = {
    json_number: ("number", "CAST({doc} #>> {path} AS DOUBLE PRECISION)"),
    json_text: ("string", "{doc} #>> {path}"),
    json_bool: ("boolean", "CAST({doc} #>> {path} AS BOOLEAN)"),
}


def json_scalar(document: ColumnElement, keys: tuple[str, ...], kind: Type) -> ColumnElement:
    """`document` at `keys` as `kind` (number, string, bool) or None for presence."""
    # Keys are identifiers (the grammar allows nothing else), so quoting is safe; they
    # are still sent as bound parameters.
    sqlite_path = "$" + "".join(f'."{key}"' for key in keys)
    postgres_path = "{" + ",".join(keys) + "}"
    construct = {
        Type.NUMBER: json_number,
        Type.STRING: json_text,
        Type.BOOL: json_bool,
        None: json_present,
    }[kind]
    return construct(document, sa.literal(sqlite_path), sa.literal(postgres_path))


def _arguments(element, compiler, **kw):
    document, sqlite_path, postgres_path = element.clauses.clauses
    return (
        compiler.process(document, **kw),
        compiler.process(sqlite_path, **kw),
        compiler.process(postgres_path, **kw),
    )


# The SQLite form is also the default, so that str(expression) works when debugging.
@compiles(json_number)
@compiles(json_text)
@compiles(json_bool)
@compiles(json_number, "sqlite")
@compiles(json_text, "sqlite")
@compiles(json_bool, "sqlite")
def _sqlite_scalar(element, compiler, **kw):
    doc, path, _ = _arguments(element, compiler, **kw)
    test = _SQLITE_TYPES[type(element)]
    return f"(CASE WHEN json_type({doc}, {path}) {test} THEN json_extract({doc}, {path}) END)"


@compiles(json_present)
@compiles(json_present, "sqlite")
def _sqlite_present(element, compiler, **kw):
    doc, path, _ = _arguments(element, compiler, **kw)
    return f"(coalesce(json_type({doc}, {path}), 'null') != 'null')"


@compiles(json_number, "postgresql")
@compiles(json_text, "postgresql")
@compiles(json_bool, "postgresql")
def _postgres_scalar(element, compiler, **kw):
    doc, _, path = _arguments(element, compiler, **kw)
    path = f"CAST({path} AS TEXT[])"
    json_type, value = _POSTGRES[type(element)]
    value = value.format(doc=doc, path=path)
    return f"(CASE WHEN jsonb_typeof({doc} #> {path}) = '{json_type}' THEN {value} END)"


@compiles(json_present, "postgresql")
def _postgres_present(element, compiler, **kw):
    doc, _, path = _arguments(element, compiler, **kw)
    return f"(coalesce(jsonb_typeof({doc} #> CAST({path} AS TEXT[])), 'null') != 'null')"
