"""The subset of BigID's text filter language the sandbox understands (``filter=`` parameters).

Grammar (keywords in any case; see ``docs/sandbox.md`` for examples)::

    query     ::= disjunct { "OR" disjunct }
    disjunct  ::= unary { "AND" unary }
    unary     ::= "NOT" unary | "(" query ")" | predicate
    predicate ::= field op value
    op        ::= "=" | "!=" | ">" | ">=" | "<" | "<="
    field     ::= name { "." (name | dq-string) }
    value     ::= dq-string | bare-word | number | "to_number(" number ")" | true | false

``=`` compares numbers as numbers and text case-insensitively; on a list field (``labels``,
``attribute``, ``tags.<name>``) it matches when any element matches. ``!=`` is its negation. ``>``,
``<``, ``>=``, ``<=`` compare numbers, or text (ISO dates compare correctly as text). A missing or
null field matches nothing but ``!=``. Anything else (an unknown field, a dangling operator, an
unbalanced parenthesis, an unterminated quote, or a double quote inside a value) is a
:class:`FilterError`, which the server answers with HTTP 400.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

Getter = Callable[[dict[str, Any]], Any]
Predicate = Callable[[dict[str, Any]], bool]

_TOKEN = re.compile(
    r"""\s*(?:
        (?P<str>"[^"]*")
      | (?P<op>!=|>=|<=|=|>|<)
      | (?P<lp>\()
      | (?P<rp>\))
      | (?P<word>[^\s()=!<>"~;,]+)
      | (?P<bad>\S)
    )""",
    re.VERBOSE,
)
_NUMBER = re.compile(r"^-?\d+(?:\.\d+)?$")
_TO_NUMBER = re.compile(r"^to_number\((-?\d+(?:\.\d+)?)\)$", re.IGNORECASE)


class FilterError(ValueError):
    """A filter the sandbox cannot parse; the message says where and why."""


def _tokens(text: str) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    position = 0
    text = text.strip()
    while position < len(text):
        match = _TOKEN.match(text, position)
        if match is None:  # pragma: no cover - the pattern matches any non-space character
            break
        kind = match.lastgroup or "bad"
        value = match.group(kind)
        if kind == "bad":
            if value == '"':
                raise FilterError(f"unterminated double quote at character {match.start(kind) + 1}")
            raise FilterError(f"unexpected character {value!r} at character {match.start(kind) + 1}")
        out.append((kind, value))
        position = match.end()
    # to_number(12) arrives as word "to_number" "(" word ")": glue it back together
    glued: list[tuple[str, str]] = []
    i = 0
    while i < len(out):
        if (
            out[i][0] == "word"
            and out[i][1].lower() in ("to_number", "to_bool")
            and i + 3 < len(out)
            and out[i + 1][0] == "lp"
            and out[i + 3][0] == "rp"
        ):
            glued.append(("word", f"{out[i][1]}({out[i + 2][1]})"))
            i += 4
            continue
        glued.append(out[i])
        i += 1
    return glued


class _Parser:
    def __init__(self, text: str, fields: Mapping[str, Getter], dynamic: Callable[[str], Getter | None]):
        self.tokens = _tokens(text)
        self.i = 0
        self.fields = fields
        self.dynamic = dynamic

    def peek(self) -> tuple[str, str] | None:
        return self.tokens[self.i] if self.i < len(self.tokens) else None

    def take(self) -> tuple[str, str]:
        token = self.peek()
        if token is None:
            raise FilterError("the filter ends too early")
        self.i += 1
        return token

    def keyword(self, word: str) -> bool:
        token = self.peek()
        if token and token[0] == "word" and token[1].upper() == word:
            self.i += 1
            return True
        return False

    def parse(self) -> Predicate:
        if not self.tokens:
            return lambda _record: True
        predicate = self.query()
        if self.peek() is not None:
            raise FilterError(f"unexpected {self.peek()[1]!r} after a complete expression")  # type: ignore[index]
        return predicate

    def query(self) -> Predicate:
        parts = [self.disjunct()]
        while self.keyword("OR"):
            parts.append(self.disjunct())
        if len(parts) == 1:
            return parts[0]
        return lambda record: any(p(record) for p in parts)

    def disjunct(self) -> Predicate:
        parts = [self.unary()]
        while self.keyword("AND"):
            parts.append(self.unary())
        if len(parts) == 1:
            return parts[0]
        return lambda record: all(p(record) for p in parts)

    def unary(self) -> Predicate:
        if self.keyword("NOT"):
            inner = self.unary()
            return lambda record: not inner(record)
        token = self.peek()
        if token and token[0] == "lp":
            self.i += 1
            inner = self.query()
            closing = self.peek()
            if closing is None or closing[0] != "rp":
                raise FilterError("a parenthesis is not closed")
            self.i += 1
            return inner
        return self.predicate()

    def predicate(self) -> Predicate:
        kind, name = self.take()
        if kind == "str":
            name = name[1:-1]
        elif kind != "word":
            raise FilterError(f"expected a field name, found {name!r}")
        nxt = self.peek()
        if name.endswith(".") and nxt is not None and nxt[0] == "str":  # tags."Access Type"
            self.i += 1
            name += nxt[1][1:-1]
        getter = self.fields.get(name) or self.fields.get(name.lower()) or self.dynamic(name)
        if getter is None:
            known = ", ".join(sorted(self.fields))
            if self.dynamic("tags.x") is not None:
                known += ", tags.<name>"
            raise FilterError(f"unknown field {name!r} (known: {known})")
        kind, op = self.take()
        if kind != "op":
            raise FilterError(f"expected an operator after {name!r}, found {op!r}")
        kind, raw = self.take()
        if kind == "str":
            value: Any = raw[1:-1]
        elif kind == "word":
            value = _literal(raw)
        else:
            raise FilterError(f"expected a value after {name} {op}, found {raw!r}")
        return _compare(getter, op, value)


def _literal(word: str) -> Any:
    match = _TO_NUMBER.match(word)
    if match:
        word = match.group(1)
    if _NUMBER.match(word):
        return float(word) if "." in word else int(word)
    lowered = word.lower()
    if lowered in ("true", "to_bool(true)"):
        return True
    if lowered in ("false", "to_bool(false)"):
        return False
    return word


def _as_number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str) and _NUMBER.match(value.strip()):
        return float(value)
    return None


def _equal(actual: Any, expected: Any) -> bool:
    if actual is None:
        return False
    if isinstance(expected, bool) or isinstance(actual, bool):
        return str(actual).lower() == str(expected).lower()
    a, e = _as_number(actual), _as_number(expected)
    if a is not None and e is not None:
        return a == e
    return str(actual).lower() == str(expected).lower()


def _order(actual: Any, expected: Any) -> tuple[Any, Any] | None:
    if actual is None:
        return None
    a, e = _as_number(actual), _as_number(expected)
    if a is not None and e is not None:
        return a, e
    return str(actual), str(expected)


_ORDERS: dict[str, Callable[[Any, Any], bool]] = {
    ">": lambda a, e: a > e,
    "<": lambda a, e: a < e,
    ">=": lambda a, e: a >= e,
    "<=": lambda a, e: a <= e,
}


def _compare(getter: Getter, op: str, expected: Any) -> Predicate:
    def values(record: dict[str, Any]) -> list[Any]:
        actual = getter(record)
        return actual if isinstance(actual, list) else [actual]

    if op == "=":
        return lambda record: any(_equal(v, expected) for v in values(record))
    if op == "!=":
        return lambda record: not any(_equal(v, expected) for v in values(record))
    test: Callable[[Any, Any], bool] = _ORDERS[op]

    def ordered(record: dict[str, Any]) -> bool:
        for v in values(record):
            pair = _order(v, expected)
            if pair is not None and test(*pair):
                return True
        return False

    return ordered


def compile_filter(
    text: str | None,
    fields: Mapping[str, Getter],
    dynamic: Callable[[str], Getter | None] = lambda _name: None,
) -> Predicate:
    """Compile ``text`` into a predicate over records, or raise :class:`FilterError`."""
    if text is None or not text.strip():
        return lambda _record: True
    return _Parser(text, fields, dynamic).parse()


# -- the fields each endpoint filters on ----------------------------------------------------------


def _first(*keys: str) -> Getter:
    def get(record: dict[str, Any]) -> Any:
        for key in keys:
            if key in record:
                return record[key]
        return None

    return get


CLUSTER_FIELDS: dict[str, Getter] = {
    "id": _first("id", "clusterId"),
    "clusterid": _first("id", "clusterId"),
    "name": _first("name", "clusterName"),
    "clustername": _first("name", "clusterName"),
    "size": _first("size"),
    "labels": lambda r: r.get("labels") or [],
    "label": lambda r: r.get("labels") or [],
    "severity": _first("severity"),
    "status": _first("status"),
    "createdat": _first("createdAt"),
}


def _attribute_names(record: dict[str, Any]) -> list[Any]:
    items = record.get("attributes", record.get("attributeDetails")) or []
    return [a.get("attribute_name") for a in items if isinstance(a, dict)]


COLUMN_FIELDS: dict[str, Getter] = {
    "fullyqualifiedname": _first("fullyQualifiedName"),
    "columnname": _first("columnName"),
    "tablename": _first("tableName", "objectName"),
    "objectname": _first("tableName", "objectName"),
    "source": _first("source"),
    "datatype": _first("dataType", "fieldType"),
    "fieldtype": _first("dataType", "fieldType"),
    "isprimary": _first("isPrimary"),
    "businessattribute": _first("businessAttribute"),
    "attribute": _attribute_names,
    "attributes": _attribute_names,
}


def column_dynamic_field(name: str) -> Getter | None:
    """``tags.<tagName>`` / ``catalog_tag.<tagName>``: the values of that tag on the column."""
    for prefix in ("tags.", "catalog_tag.", "tag."):
        if name.lower().startswith(prefix) and len(name) > len(prefix):
            tag_name = name[len(prefix) :].strip('"').lower()

            def values(record: dict[str, Any], wanted: str = tag_name) -> list[Any]:
                return [
                    tag.get("tagValue")
                    for tag in (record.get("tags") or [])
                    if isinstance(tag, dict) and str(tag.get("tagName", "")).lower() == wanted
                ]

            return values
    return None


def lookup(fields: Mapping[str, Getter]) -> dict[str, Getter]:
    """Field names are matched case-insensitively."""
    return {k.lower(): v for k, v in fields.items()}
