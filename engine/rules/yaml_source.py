"""One YAML file -> plain Python values, plus the node behind every key and value.

ruamel.yaml composes the node tree (which knows lines, columns and scalar styles) with
YAML 1.2 semantics, so `no` stays the string "no" and `09:00` stays "09:00". The
values are built here from those nodes rather than by ruamel's constructor because
we want, in one pass: duplicate keys reported with both places, only the plain
standard types (no custom tags that could build objects), and a position for every
path so that a pydantic error on `("actions", "coupon", "value")` lands on the line
an ops person typed.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.error import MarkedYAMLError, YAMLError
from ruamel.yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode
from ruamel.yaml.reader import ReaderError

from engine.errors import Diagnostic, LocatedError, Location
from engine.rules.located_text import LocatedText

YamlPath = tuple[str | int, ...]

# The characters ruamel counts as line breaks; our line list must agree with its marks.
_LINE_BREAK = re.compile(r"\r\n|[\n\r\x85\u2028\u2029]")
_STD = "tag:yaml.org,2002:"
_SCALAR_TAGS = {_STD + name for name in ("str", "int", "float", "bool", "null", "timestamp")}
_MERGE_TAG = _STD + "merge"
# Aliases can multiply a small file into a huge tree ("billion laughs"); rules are small.
MAX_NODES = 20_000
MAX_DEPTH = 50


@dataclass(frozen=True, slots=True)
class NodeInfo:
    """The key node (None for the root and list items) and the value node of one path."""

    key: Node | None
    value: Node


class YamlDocument:
    """A parsed file: `data` (dicts, lists, str, int, float, bool, None, date, datetime)."""

    def __init__(
        self, path: str, lines: tuple[str, ...], data: Any, nodes: dict[YamlPath, NodeInfo]
    ):
        self.path = path
        self.lines = lines
        self.data = data
        self.nodes = nodes

    def node_at(self, path: YamlPath) -> tuple[YamlPath, NodeInfo | None]:
        """The deepest existing path that is a prefix of `path`, and its nodes."""
        for end in range(len(path), -1, -1):
            info = self.nodes.get(path[:end])
            if info is not None:
                return path[:end], info
        return (), None

    def location(self, path: YamlPath, *, key: bool = False) -> Location:
        """Where the value (or, with `key`, the key) at `path` starts; nearest ancestor
        when the path does not exist (a missing key is reported on its parent)."""
        found, info = self.node_at(path)
        if info is None:
            return Location(self.path, 1, 1)
        # An empty value (`email:` with nothing after it) is shown at its key.
        empty = isinstance(info.value, ScalarNode) and info.value.value == ""
        # A whole mapping or list is shown at its key: a block value starts a line later.
        collection = isinstance(info.value, MappingNode | SequenceNode)
        use_key = key or found != path or collection or (empty and not info.value.style)
        node = info.key if use_key and info.key is not None else info.value
        return self._mark_location(node.start_mark)

    def diagnostic(
        self, path: YamlPath, message: str, *, key: bool = False, severity: str = "error"
    ) -> Diagnostic:
        return self.diagnostic_at(self.location(path, key=key), message, severity)

    def diagnostic_at(
        self, location: Location, message: str, severity: str = "error"
    ) -> Diagnostic:
        return Diagnostic(location, message, severity, self.source_line(location.line))

    def source_line(self, line: int | None) -> str | None:
        if line is None or not 1 <= line <= len(self.lines):
            return None
        return self.lines[line - 1]

    def located_text(self, path: YamlPath) -> LocatedText | None:
        """The string scalar at `path` with a position for each character, or None."""
        info = self.nodes.get(path)
        if info is None or not isinstance(info.value, ScalarNode):
            return None
        value = _get(self.data, path)
        if not isinstance(value, str):
            return None
        positions = scalar_positions(info.value, value, self.lines)
        location = self._mark_location(info.value.start_mark)
        return LocatedText(value, location, positions, self.lines)

    def dotted_locations(self) -> tuple[dict[str, Location], dict[str, Location]]:
        """(value locations, key locations) keyed by dotted path: "when.1", "actions.coupon"."""
        values: dict[str, Location] = {}
        keys: dict[str, Location] = {}
        for path, info in self.nodes.items():
            dotted = ".".join(str(part) for part in path)
            values[dotted] = self._mark_location(info.value.start_mark)
            if info.key is not None:
                keys[dotted] = self._mark_location(info.key.start_mark)
        return values, keys

    def _mark_location(self, mark: Any) -> Location:
        return Location(self.path, mark.line + 1, mark.column + 1)


def split_lines(text: str) -> tuple[str, ...]:
    return tuple(_LINE_BREAK.split(text))


def parse_yaml(text: str, path: str) -> YamlDocument:
    """Parse one YAML document; every problem raises LocatedError with file:line:col."""
    lines = split_lines(text)
    yaml = YAML(typ="rt")
    yaml.version = (1, 2)
    try:
        with warnings.catch_warnings():
            # ruamel warns (e.g. about re-used anchors); pytest turns warnings into errors.
            warnings.simplefilter("ignore")
            root = yaml.compose(text)
            builder = _TreeBuilder(yaml, path, lines)
            data = builder.build(root, (), None, 0) if root is not None else None
    except _BuildError as exc:
        location = Location(path, exc.mark.line + 1, exc.mark.column + 1)
        raise LocatedError([_diagnostic(location, exc.message, lines)]) from None
    except MarkedYAMLError as exc:
        raise LocatedError([_syntax_diagnostic(exc, path, lines)]) from None
    except ReaderError as exc:
        location = _index_location(text, exc.position, path)
        message = f"invalid YAML: character {exc.character!r} is not allowed in a YAML file"
        raise LocatedError([_diagnostic(location, message, lines)]) from None
    except YAMLError as exc:
        message = "invalid YAML: " + " ".join(str(exc).split())
        raise LocatedError([_diagnostic(Location(path, 1, 1), message, lines)]) from None
    except RecursionError:
        message = "invalid YAML: the document is nested too deeply"
        raise LocatedError([_diagnostic(Location(path, 1, 1), message, lines)]) from None
    return YamlDocument(path, lines, data, builder.nodes if root is not None else {})


def _diagnostic(location: Location, message: str, lines: tuple[str, ...]) -> Diagnostic:
    line = location.line or 1
    source = lines[line - 1] if 1 <= line <= len(lines) else None
    return Diagnostic(location, message, "error", source)


def _syntax_diagnostic(exc: MarkedYAMLError, path: str, lines: tuple[str, ...]) -> Diagnostic:
    mark = exc.problem_mark or exc.context_mark
    problem = exc.problem or exc.context or "cannot parse this"
    message = f"invalid YAML: {problem}"
    if problem.startswith("expected <block end>"):
        message = "invalid YAML: this line's indentation does not line up with the lines above"
    elif "'\\t'" in problem:
        message += " (indent with spaces, not tabs)"
    elif "mapping values are not allowed" in problem:
        message += " (put quotes around a value that contains ': ')"
    if mark is None:
        return _diagnostic(Location(path, 1, 1), message, lines)
    return _diagnostic(Location(path, mark.line + 1, mark.column + 1), message, lines)


def _index_location(text: str, index: int, path: str) -> Location:
    before = text[:index]
    lines = split_lines(before)
    return Location(path, len(lines), len(lines[-1]) + 1)


class _BuildError(Exception):
    def __init__(self, mark: Any, message: str):
        super().__init__(message)
        self.mark = mark
        self.message = message


class _TreeBuilder:
    """Builds plain values from nodes, recording the nodes of each path."""

    def __init__(self, yaml: YAML, path: str, lines: tuple[str, ...]):
        self.constructor = yaml.constructor
        self.nodes: dict[YamlPath, NodeInfo] = {}
        self.count = 0
        self.active: set[int] = set()

    def build(self, node: Node, path: YamlPath, key: Node | None, depth: int) -> Any:
        self.count += 1
        if self.count > MAX_NODES:
            raise _BuildError(node.start_mark, f"the document has more than {MAX_NODES} values")
        if depth > MAX_DEPTH:
            raise _BuildError(node.start_mark, f"values are nested more than {MAX_DEPTH} deep")
        if id(node) in self.active:
            raise _BuildError(node.start_mark, "an alias refers to a value that contains it")
        self.nodes.setdefault(path, NodeInfo(key, node))
        tag = str(node.tag)
        if isinstance(node, ScalarNode):
            return self._scalar(node, tag)
        self.active.add(id(node))
        try:
            if isinstance(node, SequenceNode) and tag == _STD + "seq":
                return [
                    self.build(item, (*path, index), None, depth + 1)
                    for index, item in enumerate(node.value)
                ]
            if isinstance(node, MappingNode) and tag == _STD + "map":
                return self._mapping(node, path, depth)
        finally:
            self.active.discard(id(node))
        raise _BuildError(node.start_mark, f"unsupported YAML tag {tag!r}")

    def _mapping(self, node: MappingNode, path: YamlPath, depth: int) -> dict[Any, Any]:
        result: dict[Any, Any] = {}
        first_seen: dict[Any, Node] = {}
        for key_node, value_node in self._pairs(node, explicit=True):
            key = self._key(key_node)
            if key in first_seen:
                first = first_seen[key].start_mark
                raise _BuildError(
                    key_node.start_mark,
                    f"duplicate key {key!r} (first defined on line {first.line + 1})",
                )
            first_seen[key] = key_node
            result[key] = self.build(value_node, (*path, key), key_node, depth + 1)
        # `<<: *defaults` merges: explicit keys win, as YAML's merge key specifies.
        for key_node, value_node in self._pairs(node, explicit=False):
            key = self._key(key_node)
            if key not in result:
                result[key] = self.build(value_node, (*path, key), key_node, depth + 1)
        return result

    def _pairs(self, node: MappingNode, *, explicit: bool) -> Iterator[tuple[Node, Node]]:
        for key_node, value_node in node.value:
            is_merge = str(key_node.tag) == _MERGE_TAG
            if explicit and not is_merge:
                yield key_node, value_node
            elif not explicit and is_merge:
                sources = value_node.value if isinstance(value_node, SequenceNode) else [value_node]
                for source in sources:
                    if not isinstance(source, MappingNode):
                        raise _BuildError(source.start_mark, "'<<' merges only mappings")
                    yield from self._pairs(source, explicit=True)
                    yield from self._pairs(source, explicit=False)

    def _key(self, node: Node) -> Any:
        if not isinstance(node, ScalarNode):
            raise _BuildError(node.start_mark, "a key must be a plain value, not a list or mapping")
        return self._scalar(node, str(node.tag))

    def _scalar(self, node: ScalarNode, tag: str) -> Any:
        if tag not in _SCALAR_TAGS:
            raise _BuildError(node.start_mark, f"unsupported YAML tag {tag!r}")
        try:
            value = self.constructor.construct_object(node, deep=True)
        except (ValueError, OverflowError, TypeError, YAMLError) as exc:
            text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise _BuildError(node.start_mark, f"invalid value {node.value!r}: {text}") from None
        return _plain(value)


def _plain(value: Any) -> Any:
    """ruamel's round-trip subclasses (ScalarInt, TimeStamp, ...) -> builtin types."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    if isinstance(value, str):
        return str(value)
    if isinstance(value, datetime):
        return datetime(
            value.year, value.month, value.day, value.hour, value.minute, value.second,
            value.microsecond, tzinfo=value.tzinfo,
        )  # fmt: skip
    if isinstance(value, date):
        return date(value.year, value.month, value.day)
    return value


def _get(data: Any, path: YamlPath) -> Any:
    for part in path:
        if isinstance(data, dict) and part in data:
            data = data[part]
        elif isinstance(data, list) and isinstance(part, int) and 0 <= part < len(data):
            data = data[part]
        else:
            return None
    return data


# ---------------------------------------------------------------- character positions


def scalar_positions(node: ScalarNode, text: str, lines: tuple[str, ...]) -> list[tuple[int, int]]:
    """1-based (line, column) of each character of `text`, plus one for its end.

    `text` is the scalar's value; the source is walked from the node's start, undoing
    what YAML did to it: quotes, escapes, line folding and block indentation.
    """
    start, end = node.start_mark, node.end_mark
    if node.style in ("|", ">"):
        positions = _block_positions(text, start.line, end.line, lines)
    else:
        column = start.column + (1 if node.style in ("'", '"') else 0)
        stream = list(_stream(lines, start.line, column, end.line))
        positions = _flow_positions(text, stream, node.style)
    if not positions:
        positions = [(start.line, start.column + (1 if node.style in ("'", '"') else 0))]
    else:
        line, column = positions[-1]
        positions.append((line, column + 1))
    return [(line + 1, column + 1) for line, column in positions]


def _stream(
    lines: tuple[str, ...], line: int, column: int, last_line: int
) -> Iterator[tuple[str, int, int]]:
    """(char, line, column) from a position to the end of `last_line`, '\\n' between lines."""
    for number in range(line, min(last_line, len(lines) - 1) + 1):
        text = lines[number]
        first = column if number == line else 0
        for index in range(first, len(text)):
            yield text[index], number, index
        yield "\n", number, len(text)


def _flow_positions(text: str, stream: list[tuple[str, int, int]], style: str | None) -> list:
    positions: list[tuple[int, int]] = []
    i = j = 0
    size = len(stream)
    while i < len(text):
        if j >= size:
            positions.append(positions[-1] if positions else (0, 0))
            i += 1
            continue
        char, line, column = stream[j]
        following = stream[j + 1][0] if j + 1 < size else ""
        if style == '"' and char == "\\":
            if following == "\n":  # an escaped line break joins the lines, adds nothing
                j += 2
                while j < size and stream[j][0] in " \t":
                    j += 1
                continue
            positions.append((line, column))
            i += 1
            j += {"x": 4, "u": 6, "U": 10}.get(following, 2)
            continue
        if style == "'" and char == "'" and following == "'":
            positions.append((line, column))
            i += 1
            j += 2
            continue
        if char in " \t\n":
            end = j
            while end < size and stream[end][0] in " \t":
                end += 1
            if end < size and stream[end][0] == "\n":
                # Line folding: one break reads as a space, n breaks as n-1 newlines.
                breaks = 0
                while end < size and stream[end][0] in " \t\n":
                    breaks += stream[end][0] == "\n"
                    end += 1
                for _ in range(1 if breaks == 1 else breaks - 1):
                    if i < len(text):
                        positions.append((line, column))
                        i += 1
                j = end
                continue
        positions.append((line, column))
        i += 1
        j += 1
    return positions


def _block_positions(text: str, header_line: int, end_line: int, lines: tuple[str, ...]) -> list:
    content = [number for number in range(header_line + 1, min(end_line, len(lines) - 1) + 1)]
    indent = 0
    for number in content:
        if lines[number].strip():
            indent = len(lines[number]) - len(lines[number].lstrip(" "))
            break
    stream: list[tuple[str, int, int]] = []
    for number in content:
        source = lines[number]
        for index in range(indent, len(source)):
            stream.append((source[index], number, index))
        stream.append(("\n", number, max(len(source), indent)))
    positions: list[tuple[int, int]] = []
    i = j = 0
    while i < len(text):
        if j >= len(stream):
            positions.append(positions[-1] if positions else (header_line + 1, indent))
            i += 1
            continue
        char, line, column = stream[j]
        if text[i] == char or (char == "\n" and text[i] == " "):
            positions.append((line, column))  # same character, or a folded line break
            i += 1
            j += 1
        elif char == "\n":
            j += 1  # a break folded away (blank lines in `>` blocks)
        else:
            positions.append((line, column))
            i += 1
    return positions
