"""The slice of OData the sync uses: $filter expressions, $select, $expand and Prefer headers.

The $filter grammar covers `and`/`or`/`not`, parentheses, `eq ne gt ge lt le`, the string
functions `startswith(path, '…')` and `contains(path, '…')` (case-insensitive, as Outlook
compares strings and extended property values), string/number/boolean/null/datetime literals,
slash paths (`start/dateTime`) and lambda `any(x: ...)` over a collection
(`singleValueExtendedProperties/Any(ep: ep/id eq '…' and startswith(ep/value, '…'))`). Anything
else is refused with a 400, as Graph refuses what it does not support.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import datetime
from typing import Any

from emulators.graph.errors import GraphError, bad_request
from emulators.graph.timeutil import BadTime, parse_instant

_TOKEN = re.compile(
    r"\s*(?:(?P<str>'(?:[^']|'')*')|(?P<punct>[(),:])|"
    r"(?P<dt>\d{4}-\d{2}-\d{2}T[\d:.]+(?:Z|[+-]\d{2}:\d{2})?)|(?P<num>-?\d+(?:\.\d+)?)|"
    r"(?P<word>[A-Za-z_@$][\w./@$]*))"
)
_OPS = {"eq", "ne", "gt", "ge", "lt", "le"}
_FUNCTIONS = {
    "startswith": lambda text, part: text.lower().startswith(part.lower()),
    "contains": lambda text, part: part.lower() in text.lower(),
}
Node = Callable[[dict[str, Any]], bool]


class FilterError(ValueError):
    """A $filter the emulator (like Graph) cannot evaluate."""


def _tokens(text: str) -> list[tuple[str, str]]:
    out, pos = [], 0
    while pos < len(text):
        if text[pos:].strip() == "":
            break
        m = _TOKEN.match(text, pos)
        if not m:
            raise FilterError(f"Syntax error at position {pos} in '{text}'.")
        kind = m.lastgroup or ""
        out.append((kind, m.group(kind)))
        pos = m.end()
    return out


class _Parser:
    def __init__(self, text: str) -> None:
        self.toks = _tokens(text)
        self.i = 0

    def peek(self) -> tuple[str, str] | None:
        return self.toks[self.i] if self.i < len(self.toks) else None

    def take(self, value: str | None = None) -> tuple[str, str]:
        tok = self.peek()
        if tok is None or (value is not None and tok[1].lower() != value):
            raise FilterError(f"Expected {value or 'a token'}, got {tok[1] if tok else 'end'!r}.")
        self.i += 1
        return tok

    def parse(self) -> Node:
        node = self.or_()
        if self.peek() is not None:
            raise FilterError(f"Unexpected {self.peek()[1]!r}.")  # type: ignore[index]
        return node

    def or_(self) -> Node:
        left = self.and_()
        while (tok := self.peek()) and tok[1].lower() == "or":
            self.take()
            right = self.and_()
            left = (lambda a, b: lambda row: a(row) or b(row))(left, right)
        return left

    def and_(self) -> Node:
        left = self.unary()
        while (tok := self.peek()) and tok[1].lower() == "and":
            self.take()
            right = self.unary()
            left = (lambda a, b: lambda row: a(row) and b(row))(left, right)
        return left

    def unary(self) -> Node:
        tok = self.peek()
        if tok and tok[1].lower() == "not":
            self.take()
            inner = self.unary()
            return lambda row: not inner(row)
        if tok and tok[1] == "(":
            self.take("(")
            node = self.or_()
            self.take(")")
            return node
        return self.compare()

    def compare(self) -> Node:
        kind, path = self.take()
        if kind != "word":
            raise FilterError(f"Expected a property, got {path!r}.")
        if (tok := self.peek()) and tok[1] == "(" and path.lower().endswith("/any"):
            return self.lambda_(path[: -len("/any")])
        if (tok := self.peek()) and tok[1] == "(" and path.lower() in _FUNCTIONS:
            return self.function(_FUNCTIONS[path.lower()])
        _, op = self.take()
        if op.lower() not in _OPS:
            raise FilterError(f"Unsupported operator {op!r}.")
        value = self.literal()
        getter = _getter(path)
        return lambda row: _cmp(getter(row), op.lower(), value)

    def lambda_(self, collection: str) -> Node:
        self.take("(")
        _, var = self.take()
        self.take(":")
        inner = self.or_()
        self.take(")")
        getter = _getter(collection)

        def any_(row: dict[str, Any]) -> bool:
            items = getter(row) or []
            return any(inner({var.lower(): item}) for item in items)

        return any_

    def function(self, test: Callable[[str, str], bool]) -> Node:
        """`startswith(path, 'text')` or `contains(path, 'text')`: true only for strings."""
        self.take("(")
        kind, path = self.take()
        if kind != "word":
            raise FilterError(f"Expected a property, got {path!r}.")
        self.take(",")
        value = self.literal()
        self.take(")")
        if not isinstance(value, str):
            raise FilterError(f"Expected a string literal, got {value!r}.")
        getter = _getter(path)

        def node(row: dict[str, Any]) -> bool:
            found = getter(row)
            return isinstance(found, str) and test(found, value)

        return node

    def literal(self) -> Any:
        kind, text = self.take()
        if kind == "str":
            return text[1:-1].replace("''", "'")
        if kind == "num":
            return float(text) if "." in text else int(text)
        if kind == "dt":
            return parse_instant(text)
        if text.lower() in ("true", "false"):
            return text.lower() == "true"
        if text.lower() == "null":
            return None
        raise FilterError(f"Expected a literal, got {text!r}.")


def _getter(path: str) -> Callable[[dict[str, Any]], Any]:
    parts = path.split("/")

    def get(row: dict[str, Any]) -> Any:
        value: Any = row
        for part in parts:
            if not isinstance(value, dict):
                return None
            match = next((k for k in value if k.lower() == part.lower()), None)
            value = value.get(match) if match is not None else None
        return value

    return get


def _cmp(left: Any, op: str, right: Any) -> bool:
    if isinstance(right, datetime) or (
        isinstance(right, str) and isinstance(left, str) and _is_dt(right) and _is_dt(left)
    ):
        try:
            left = parse_instant(left) if isinstance(left, str) else left
            right = parse_instant(right) if isinstance(right, str) else right
        except BadTime:
            return False
    if isinstance(left, str) and isinstance(right, str) and op in ("eq", "ne"):
        left, right = left.lower(), right.lower()
    if op == "eq":
        return bool(left == right)
    if op == "ne":
        return bool(left != right)
    if left is None or right is None:
        return False
    try:
        return {"gt": left > right, "ge": left >= right, "lt": left < right, "le": left <= right}[
            op
        ]
    except TypeError:
        return False


def _is_dt(text: str) -> bool:
    return bool(re.match(r"^\d{4}-\d{2}-\d{2}T", text))


def compile_filter(text: str, code: str = "ErrorInvalidUrlQueryFilter") -> Node:
    """A predicate over a row (a rendered entity); GraphError(400) when unsupported."""
    try:
        return _Parser(text).parse()
    except (FilterError, BadTime) as exc:
        raise bad_request(f"Invalid filter clause: {exc}", code) from exc


def parse_select(text: str | None, allowed: set[str], entity: str) -> list[str] | None:
    """The $select list; unknown properties are a 400 as in Graph."""
    if not text:
        return None
    names = [n.strip() for n in text.split(",") if n.strip()]
    lower = {a.lower(): a for a in allowed}
    out = []
    for name in names:
        if name.lower() not in lower:
            raise GraphError(
                400,
                "RequestBroker--ParseUri",
                f"Could not find a property named '{name}' on type 'microsoft.graph.{entity}'.",
            )
        out.append(lower[name.lower()])
    return out


def apply_select(row: dict[str, Any], select: list[str] | None) -> dict[str, Any]:
    """Keeps the selected properties plus id and @odata.etag, as Graph does."""
    if select is None:
        return row
    keep = {"id", "@odata.etag", "@odata.type", *select}
    return {k: v for k, v in row.items() if k in keep}


_EXPAND = re.compile(
    r"^\s*singleValueExtendedProperties\s*\(\s*\$filter\s*=\s*(?P<f>.+)\)\s*$", re.IGNORECASE
)


def parse_expand(text: str | None) -> Node | None:
    """The extended-property filter of `$expand=singleValueExtendedProperties($filter=…)`."""
    if not text:
        return None
    m = _EXPAND.match(text)
    if not m:
        raise bad_request(
            f"Parsing OData Select and Expand failed: '{text}' is not supported.", "BadRequest"
        )
    return compile_filter(m.group("f"))


def parse_prefer(values: list[str]) -> dict[str, str]:
    """Prefer preferences (several headers or one comma-joined header), names lower-cased."""
    out = {}
    for header in values:
        for part in re.findall(r'(?:[^,"]|"[^"]*")+', header):
            name, _, value = part.strip().partition("=")
            if name:
                out[name.strip().lower()] = value.strip().strip('"')
    return out
