"""The condition language: parse -> type-check against a catalog -> compile to SQL.

Public API (docs/conditions.md is the language reference):

- `check_condition(text, *, catalog) -> Expr`: parse and type-check, at rule load.
- `check_segments(texts) -> dict[str, Expr]`: the named segments of rules/segments.yaml.
- `Catalog.for_trigger(kind, segments=..., rule_ids=...)`: what a rule may read.
- `compile_condition(expr, ctx) -> ColumnElement[bool]`: two-valued SQL predicate.
- `compile_explain(expr, ctx) -> list[ExplainColumn]` and `explain_query(...)`.
- `ConditionError(message, offset, length)`: every error, located in the text.
"""

from engine.conditions.catalog import Catalog, FieldSpec
from engine.conditions.checker import check_condition, check_segments, check_tree
from engine.conditions.compiler import (
    ExplainColumn,
    compile_condition,
    compile_explain,
    explain_query,
    matching_users,
)
from engine.conditions.context import CompileContext
from engine.conditions.errors import ConditionError
from engine.conditions.functions import FUNCTIONS, FunctionSpec
from engine.conditions.nodes import Expr, Type
from engine.conditions.parser import MAX_DEPTH, MAX_LENGTH, MAX_LIST_ITEMS, parse_condition

__all__ = [
    "FUNCTIONS",
    "MAX_DEPTH",
    "MAX_LENGTH",
    "MAX_LIST_ITEMS",
    "Catalog",
    "CompileContext",
    "ConditionError",
    "ExplainColumn",
    "Expr",
    "FieldSpec",
    "FunctionSpec",
    "Type",
    "check_condition",
    "check_segments",
    "check_tree",
    "compile_condition",
    "compile_explain",
    "explain_query",
    "matching_users",
    "parse_condition",
]
