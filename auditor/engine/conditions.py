"""The condition language: small registered classes that validate, compile to SQL and explain.

Each condition class knows three things (STYLE habit 6):

* how to validate its YAML node (a pydantic ``Spec`` model, plus checks that need the field
  catalog: known fields, operators that fit the field's kind, values of the right type, safe
  regular expressions), reporting problems with ``file:line:column``;
* how to compile itself to a SQLAlchemy boolean expression with bound parameters, over the tables
  of a :class:`~auditor.engine.fields.Row`;
* how to explain itself in a plain sentence for reports.

The registry :data:`CONDITIONS` maps the key that introduces a condition in YAML (``all``, ``any``,
``not``, ``field``, ``tags``, ``attributes``, ``columns``) to its class. Every compiled expression is
*two-valued*: it is TRUE or FALSE, never NULL (missing values are handled explicitly), so ``not``
and the ``all``/``none`` quantifiers mean exactly what they say.

Examples (each is loaded by the real loader in the docs test)::

    {all: [{field: cluster.status, eq: active}, {field: cluster.size, gte: 10}]}
    {any: [{field: dataType, eq: varchar}, {field: dataType, eq: text}]}
    {not: {field: cluster.labels, contains: PII}}
    {field: columnName, matches: "^(ssn|social_security)", case: exact}
    {tags: {any: [{field: tagName, eq: sensitivity}, {field: tagValue, eq: high}]}}
    {attributes: {none: {field: rank, eq: high}}}
    {columns: {having: {distinct: source, gte: 3}}}
"""

from __future__ import annotations

import contextlib
import datetime
import functools
import math
import operator
import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from decimal import Decimal
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictFloat, StrictInt, StrictStr
from pydantic import ValidationError as PydanticValidationError
from sqlalchemy import (
    ColumnElement,
    and_,
    bindparam,
    exists,
    func,
    literal,
    not_,
    or_,
    select,
    true,
)

from auditor.engine import fields as F
from auditor.engine.fields import Kind, Level, Row
from auditor.engine.sqlfuncs import (
    CaseFolded,
    DialectChoice,
    GroupFolded,
    GroupLowered,
    Parenthesised,
    RegexSearch,
    RegexSearchIgnoreCase,
    TextContains,
    UnicodeLower,
    check_pattern,
    portable_pattern,
)
from auditor.engine.yamlsource import LocDict, LocList, Mark, Problems, mark_at
from auditor.store.schema import cluster_labels

Scalar = StrictStr | StrictInt | StrictFloat | StrictBool

MAX_CONDITION_DEPTH = 32
"""Deepest nesting of conditions in a rule: deeper ones overflow SQLite's SQL parser."""


@dataclass
class ParseContext:
    """Where a node came from, and where its problems go."""

    source: str
    document: Any
    problems: Problems
    depth: int = 0

    def problem(self, path: Sequence[Any], message: str, *, key: bool = False) -> None:
        self.problems.add(self.source, mark_at(self.document, path, key=key), message)

    def mark(self, path: Sequence[Any]) -> Mark | None:
        return mark_at(self.document, path)


def report_pydantic(
    ctx: ParseContext,
    path: Sequence[Any],
    exc: PydanticValidationError,
    what: str,
    model: type[BaseModel] | None = None,
) -> None:
    """Translate pydantic errors into positioned, readable problems (an unknown key with the
    ``model`` key it most likely misspells, and, for a small ``model``, every key it takes)."""
    keys = [info.alias or name for name, info in model.model_fields.items()] if model is not None else []
    for error in exc.errors():
        loc = list(error["loc"])
        where = [*path, *loc]
        kind = error["type"]
        name = str(loc[-1]) if loc else what
        if loc and isinstance(loc[-1], int):  # an item of a list: tags[0], not 0
            name = f"{loc[-2] if len(loc) > 1 else what.strip(chr(39))}[{loc[-1]}]"
        if kind == "extra_forbidden":
            meant = close_match(name, keys)
            guess = f" (did you mean {meant!r}?)" if meant else ""
            valid = f"; valid: {', '.join(keys)}" if 0 < len(keys) <= 8 else ""
            ctx.problem(where, f"unknown key {name!r} in {what}{guess}{valid}", key=True)
        elif kind == "missing":
            ctx.problem(path, f"{what} is missing the required key {name!r}")
        elif kind == "literal_error":
            expected = error.get("ctx", {}).get("expected", "")
            given = "nothing (null)" if error["input"] is None else repr(error["input"])
            ctx.problem(where, f"{name}: {given} is not one of {expected}")
        else:
            ctx.problem(where, f"{name}: {describe_type_error(error)}")


def describe_type_error(error: Any) -> str:
    value = error.get("input")
    got = type_name(value)
    kind = error["type"]
    expected = {
        "string_type": "text",
        "int_type": "a whole number",
        "float_type": "a number",
        "bool_type": "true or false",
        "bool_parsing": "true or false",
        "int_parsing": "a whole number",
        "float_parsing": "a number",
        "list_type": "a list",
        "dict_type": "a mapping",
        "model_type": "a mapping",
    }.get(kind)
    if kind.startswith("date"):
        expected = "a date (YYYY-MM-DD)"
        reason = error.get("ctx", {}).get("error")
        if isinstance(value, str) and reason and re.fullmatch(r"\d{4}-\d{2}-\d{2}", value.strip()):
            return f"{value!r} is not a valid date ({reason})"
    if kind == "string_too_short" and error.get("ctx", {}).get("min_length") == 1:
        return "must not be empty"
    if kind == "string_pattern_mismatch" and error.get("ctx", {}).get("pattern") == NOT_BLANK:
        return "must not be blank (it holds only spaces)"
    if kind.startswith("string_") and kind != "string_type":
        return str(error["msg"])
    if kind == "value_error":  # our own validators' sentences, without pydantic's "Value error, "
        return str(error.get("ctx", {}).get("error") or error["msg"])
    if expected == "text" and isinstance(value, int | float | bool):
        return f"expected text, got {got} (quote it)"
    if expected:
        return f"expected {expected}, got {got}"
    return f"{error['msg']} (got {got})"


def type_name(value: Any) -> str:
    if value is None:
        return "nothing (null)"
    if isinstance(value, bool):
        return f"boolean {str(value).lower()}"
    if isinstance(value, int | float):
        return f"number {value}"
    if isinstance(value, str):
        return f"text {value!r}"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return type(value).__name__


def _spec_config() -> ConfigDict:
    return ConfigDict(extra="forbid", populate_by_name=False, frozen=True)


class Condition(ABC):
    """A node of a rule's condition tree."""

    key: ClassVar[str]
    levels: ClassVar[tuple[Level, ...]]
    Spec: ClassVar[type[BaseModel]]
    #: Spec properties (by YAML name) that hold a nested condition, or a list of them.
    nested: ClassVar[dict[str, str]] = {}

    @classmethod
    @abstractmethod
    def parse(cls, node: LocDict, level: Level, ctx: ParseContext, path: list[Any]) -> Condition | None:
        """Validate ``node`` (a mapping whose identifying key is ``cls.key``)."""

    @abstractmethod
    def compile(self, row: Row) -> ColumnElement[bool]:
        """A two-valued SQL boolean over ``row``'s tables, values as bound parameters."""

    @abstractmethod
    def explain(self) -> str:
        """A plain sentence, e.g. ``the cluster's labels do not include Confidential``."""

    @property
    def cost(self) -> int:
        """Relative cost per row of the compiled test: ``all``/``any`` test cheaper parts first.

        0 for plain comparisons, 1 for subqueries, 2 for regular expressions (a call back into
        Python per row on SQLite). Parts are two-valued and free of side effects, so their order
        never changes the result, only how often the expensive ones run.
        """
        return 0

    @classmethod
    def json_schema(cls) -> dict[str, Any]:
        schema = cls.Spec.model_json_schema(by_alias=True, ref_template="#/$defs/{model}")
        defs = schema.pop("$defs", {})
        for name, shape in cls.nested.items():
            ref = {"$ref": "#/$defs/Condition"}
            schema["properties"][name] = (
                {"anyOf": [ref, {"type": "array", "items": ref, "minItems": 1}]}
                if shape == "one-or-list"
                else ref
            )
            if shape == "list":
                schema["properties"][name] = {"type": "array", "items": ref, "minItems": 1}
        schema["description"] = (cls.__doc__ or "").strip().splitlines()[0]
        schema["$defs"] = defs
        return schema


CONDITIONS: dict[str, type[Condition]] = {}


def register(cls: type[Condition]) -> type[Condition]:
    CONDITIONS[cls.key] = cls
    return cls


def valid_keys(level: Level) -> list[str]:
    return [key for key, cls in CONDITIONS.items() if level in cls.levels]


def parse_condition(node: Any, level: Level, ctx: ParseContext, path: list[Any]) -> Condition | None:
    """Parse one condition node at ``level``; problems go to ``ctx``. ``None`` if invalid."""
    if ctx.depth >= MAX_CONDITION_DEPTH:
        ctx.problem(
            path,
            f"conditions are nested more than {MAX_CONDITION_DEPTH} levels deep; "
            "flatten them (all/any take lists)",
        )
        return None
    ctx.depth += 1
    try:
        return _parse_condition(node, level, ctx, path)
    finally:
        ctx.depth -= 1


def _parse_condition(node: Any, level: Level, ctx: ParseContext, path: list[Any]) -> Condition | None:
    if isinstance(node, LocList):
        # A bare list is shorthand for ``all``.
        return AllOf.parse_items(node, level, ctx, path, "all")
    if not isinstance(node, LocDict) or not node:
        ctx.problem(
            path,
            f"a condition must be a mapping with one of: {', '.join(valid_keys(level))} "
            f"(got {'an empty mapping' if isinstance(node, dict) else type_name(node)})",
        )
        return None
    keys = [key for key in node if key in CONDITIONS]
    if not keys:
        first = next(iter(node))
        meant = close_match(first, valid_keys(level))
        guess = f" (did you mean {meant!r}?)" if meant else ""
        ctx.problem(
            [*path, first],
            f"unknown condition {first!r}{guess}; valid here: {', '.join(valid_keys(level))}",
            key=True,
        )
        if meant is not None and len(node) == 1:

            def as_meant(shadow: LocDict, sub: ParseContext) -> Any:
                return parse_condition(shadow, level, sub, [])

            _parse_misspelt(node, first, meant, ctx, as_meant)
        return None
    if len(keys) > 1:
        ctx.problem(path, f"a condition has exactly one of {', '.join(keys)}; split it with all/any")
        return None
    cls = CONDITIONS[keys[0]]
    if level not in cls.levels:
        allowed = ", ".join(str(lv) for lv in cls.levels)
        ctx.problem(
            [*path, keys[0]],
            f"{keys[0]!r} cannot be used on {F.LEVEL_NOUN[level]} (only on: {allowed}); "
            f"valid here: {', '.join(valid_keys(level))}",
            key=True,
        )
        return None
    return cls.parse(node, level, ctx, path)


# -- boolean composition -------------------------------------------------------------------------


class _AllSpec(BaseModel):
    model_config = _spec_config()
    all_: list[Any] = Field(alias="all", min_length=1)


class _AnySpec(BaseModel):
    model_config = _spec_config()
    any_: list[Any] = Field(alias="any", min_length=1)


class _NotSpec(BaseModel):
    model_config = _spec_config()
    not_: Any = Field(alias="not")


@register
class AllOf(Condition):
    """All of the listed conditions hold (``all: [...]``; a bare list means the same)."""

    key = "all"
    levels = (Level.COLUMN, Level.CLUSTER, Level.TAG, Level.ATTRIBUTE)
    Spec: ClassVar[type[BaseModel]] = _AllSpec
    nested: ClassVar[dict[str, str]] = {"all": "list"}
    joiner = "and"

    def __init__(self, parts: list[Condition]) -> None:
        self.parts = parts

    @classmethod
    def parse(cls, node: LocDict, level: Level, ctx: ParseContext, path: list[Any]) -> Condition | None:
        extra = _extra_keys(node, cls.key, level, ctx, path)
        items = node[cls.key]
        if not isinstance(items, LocList) or not items:
            ctx.problem([*path, cls.key], f"{cls.key!r} takes a non-empty list of conditions")
            return None
        built = cls.parse_items(items, level, ctx, [*path, cls.key], cls.key)
        return None if extra else built

    @classmethod
    def parse_items(
        cls, items: LocList, level: Level, ctx: ParseContext, path: list[Any], key: str
    ) -> Condition | None:
        if not items:
            # a bare list is shorthand for 'all'; under 'not' or a quantifier, say where it stands
            where = path[-1] if path and isinstance(path[-1], str) and path[-1] != key else key
            ctx.problem(path, f"{where!r} takes a condition, or a non-empty list of conditions (got [])")
            return None
        parts = [parse_condition(item, level, ctx, [*path, i]) for i, item in enumerate(items)]
        if any(part is None for part in parts):
            return None
        built = [p for p in parts if p is not None]
        return built[0] if len(built) == 1 else cls(built)

    @property
    def cost(self) -> int:
        return max(part.cost for part in self.parts)

    def ordered_parts(self) -> list[Condition]:
        return sorted(self.parts, key=lambda part: part.cost)  # stable: equal costs keep their order

    def compile(self, row: Row) -> ColumnElement[bool]:
        return _balanced(and_, [part.compile(row) for part in self.ordered_parts()])

    def explain(self) -> str:
        texts = [_wrap(part, self) for part in self.parts]
        return f" {self.joiner} ".join(texts)


@register
class AnyOf(AllOf):
    """At least one of the listed conditions holds (``any: [...]``)."""

    key = "any"
    Spec: ClassVar[type[BaseModel]] = _AnySpec
    nested: ClassVar[dict[str, str]] = {"any": "list"}
    joiner = "or"

    def compile(self, row: Row) -> ColumnElement[bool]:
        return _balanced(or_, [part.compile(row) for part in self.ordered_parts()])


FLAT_PARTS = 64  # parts of an all/any joined in one flat list; longer lists are split in halves


def _balanced(
    join: Callable[..., ColumnElement[bool]], parts: list[ColumnElement[bool]]
) -> ColumnElement[bool]:
    """``join(*parts)``, split in parenthesised halves beyond :data:`FLAT_PARTS` parts. SQLite
    parses ``a OR b OR c …`` into a tree as deep as the list is long and refuses one deeper than
    1,000 ("Expression tree is too large"): an ``any`` of 996 comparisons validated, then failed
    the check with exit 3 blaming the database (a probe). Halves keep the depth logarithmic; the
    order of the parts (cheapest first) is kept."""
    if len(parts) <= FLAT_PARTS:
        return join(*parts)
    middle = len(parts) // 2
    return join(
        Parenthesised(_balanced(join, parts[:middle])), Parenthesised(_balanced(join, parts[middle:]))
    )


def _wrap(part: Condition, parent: AllOf) -> str:
    text = part.explain()
    if isinstance(part, AllOf) and type(part) is not type(parent):
        return f"({text})"
    if parent.joiner == "and" and ", or " in text:
        # "…the column is not a primary key, or that is not known and the name…" read as another
        # condition (found by a new-user probe)
        return f"({text})"
    return text


@register
class Not(Condition):
    """The nested condition does not hold (``not: {...}``)."""

    key = "not"
    levels = (Level.COLUMN, Level.CLUSTER, Level.TAG, Level.ATTRIBUTE)
    Spec = _NotSpec
    nested: ClassVar[dict[str, str]] = {"not": "one-or-list"}

    def __init__(self, inner: Condition) -> None:
        self.inner = inner

    @classmethod
    def parse(cls, node: LocDict, level: Level, ctx: ParseContext, path: list[Any]) -> Condition | None:
        extra = [key for key in node if key != cls.key]
        for key in extra:
            ctx.problem([*path, key], f"unknown key {key!r} next to 'not'", key=True)
        inner = parse_condition(node["not"], level, ctx, [*path, "not"])
        return cls(inner) if inner is not None and not extra else None

    @property
    def cost(self) -> int:
        return self.inner.cost

    def compile(self, row: Row) -> ColumnElement[bool]:
        return not_(self.inner.compile(row))

    def explain(self) -> str:
        return f"not ({self.inner.explain()})"


# -- field comparisons ---------------------------------------------------------------------------

# The problem of a 'case' given where nothing compares text with it (accepted and ignored, a rule
# author's intent was lost silently: a probe).
CASE_DOES_NOTHING = "'case' does nothing here"
NOT_BLANK = r"\S"  # the pattern of a text field that must hold more than spaces

OPERATORS: dict[str, str] = {
    "eq": "equal to the value",
    "ne": "not equal to the value (true when the field is missing)",
    "in": "equal to one of the listed values",
    "not_in": "equal to none of the listed values (true when the field is missing)",
    "contains": "text containing the value (for lists: an element equal to it)",
    "not_contains": "the negation of contains",
    "matches": "a regular expression found anywhere in the text (for lists: in some element)",
    "exists": "true: the field has a value; false: it has none",
    "absent": "true: the field has no value; false: it has one",
    "empty": "true: the field is missing or blank (a list: has no element)",
    "gt": "greater than",
    "gte": "greater than or equal to",
    "lt": "less than",
    "lte": "less than or equal to",
}

OPS_BY_KIND: dict[Kind, tuple[str, ...]] = {
    Kind.TEXT: (
        "eq",
        "ne",
        "in",
        "not_in",
        "contains",
        "not_contains",
        "matches",
        "exists",
        "absent",
        "empty",
    ),
    Kind.NUMBER: ("eq", "ne", "in", "not_in", "gt", "gte", "lt", "lte", "exists", "absent"),
    Kind.BOOLEAN: ("eq", "ne", "exists", "absent"),
    Kind.TEXT_LIST: ("eq", "ne", "in", "not_in", "contains", "not_contains", "matches", "exists", "empty"),
}

_NEGATIVE = {"ne": "eq", "not_in": "in", "not_contains": "contains"}

# The comparisons of numbers by name, for SQL expressions and Python values alike.
ORDERINGS: dict[str, Callable[[Any, Any], Any]] = {
    "eq": operator.eq,
    "ne": operator.ne,
    "gt": operator.gt,
    "gte": operator.ge,
    "lt": operator.lt,
    "lte": operator.le,
}


class _CompareSpec(BaseModel):
    model_config = _spec_config()
    field: StrictStr = Field(description="the field to read, e.g. columnName or cluster.labels")
    eq: Scalar | None = None
    ne: Scalar | None = None
    in_: list[Scalar] | None = Field(default=None, alias="in", min_length=1)
    not_in: list[Scalar] | None = Field(default=None, min_length=1)
    contains: StrictStr | None = None
    not_contains: StrictStr | None = None
    matches: StrictStr | None = None
    exists: StrictBool | None = None
    absent: StrictBool | None = None
    empty: StrictBool | None = None
    gt: StrictInt | StrictFloat | None = None
    gte: StrictInt | StrictFloat | None = None
    lt: StrictInt | StrictFloat | None = None
    lte: StrictInt | StrictFloat | None = None
    case: Literal["insensitive", "exact"] = Field(
        default="insensitive", description="text comparisons ignore case unless 'exact'"
    )


def _fmt(value: Any) -> str:
    """A rule's value in a sentence: as written, quoted when it would not read as itself (empty,
    spaces at an end, a comma that reads as a list's, a quote)."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, str) and (
        not value or value != value.strip() or any(c in value for c in ",'\"") or not value.isprintable()
    ):
        return repr(value)
    return str(value)


def _check_loose_pattern(node: LocDict, ctx: ParseContext, path: list[Any]) -> None:
    """Report a bad ``matches`` pattern of a comparison that cannot be checked whole (an unknown
    field or operator, or two operators), so that fixing those never reveals it later."""
    pattern = node.get("matches")
    why = check_pattern(pattern) if isinstance(pattern, str) else None
    if why:
        ctx.problem([*path, "matches"], f"matches: {why}")


@register
class Compare(Condition):
    """Compare a field with a value: ``{field: NAME, OPERATOR: VALUE[, case: exact]}``."""

    key = "field"
    levels = (Level.COLUMN, Level.CLUSTER, Level.TAG, Level.ATTRIBUTE)
    Spec = _CompareSpec

    def __init__(self, target: F.Field, op: str, value: Any, exact: bool) -> None:
        self.target = target
        self.op = op
        self.value = value
        self.exact = exact

    @classmethod
    def parse(cls, node: LocDict, level: Level, ctx: ParseContext, path: list[Any]) -> Condition | None:
        ok = True
        known = set(OPERATORS) | {"field", "case"}
        unknown = [key for key in node if key not in known]
        for key in unknown:
            guess = _closest(key, known)
            ctx.problem(
                [*path, key],
                f"unknown operator {key!r}{guess}; valid operators: {', '.join(OPERATORS)} (and case)",
                key=True,
            )
        # Operator values are checked below against the field's kind (one clear message each);
        # pydantic checks the rest. The full Spec still describes every key in the JSON Schema.
        clean = LocDict({k: v for k, v in node.items() if k in ("field", "case")})
        spec: _CompareSpec | None = None
        try:
            spec = _CompareSpec.model_validate(clean)
        except PydanticValidationError as exc:
            report_pydantic(ctx, path, exc, "a field comparison", _CompareSpec)
            ok = False
            with contextlib.suppress(PydanticValidationError):  # a bad 'case': the field may be fine
                spec = _CompareSpec.model_validate(LocDict({k: v for k, v in clean.items() if k == "field"}))
        catalog = F.FIELDS_BY_LEVEL[level]
        target = catalog.get(spec.field) if spec is not None else None
        if spec is not None and target is None:
            hint = F.elsewhere(spec.field, level) or _closest(spec.field, catalog)
            ctx.problem(
                [*path, "field"],
                f"unknown field {spec.field!r} on {F.LEVEL_NOUN[level]}{hint}; "
                f"valid fields: {', '.join(catalog)}",
            )
        if spec is None or target is None:
            _check_loose_pattern(node, ctx, path)  # what can be checked without the field
            return None
        if unknown:  # which operator was meant is anyone's guess: its value is not checked
            _check_loose_pattern(node, ctx, path)
            return None
        ops = [op for op in OPERATORS if op in node]
        if len(ops) != 1:
            if not ops:
                ctx.problem(
                    path,
                    f"the comparison on {spec.field!r} has no operator; "
                    f"add one of: {', '.join(OPS_BY_KIND[target.kind])}",
                )
            else:
                ctx.problem(path, f"one operator per comparison, got {', '.join(ops)}; combine with all/any")
                _check_loose_pattern(node, ctx, path)
            return None
        op = ops[0]
        if op not in OPS_BY_KIND[target.kind]:
            ctx.problem(
                [*path, op],
                f"operator {op!r} does not apply to {spec.field!r} ({target.kind}); "
                f"valid for it: {', '.join(OPS_BY_KIND[target.kind])}",
                key=True,
            )
            return None
        value = node[op]
        problem = _check_value(target, op, value)
        if problem is None and op in ("in", "not_in"):
            # every item that does not fit, each where it is written (only the first was said)
            wrong = [(i, why) for i, item in enumerate(value) if (why := _check_scalar(target.kind, item))]
            for i, why in wrong:
                ctx.problem([*path, op, i], f"{op}: {why} (item {i + 1} of the list)")
            ok = ok and not wrong  # (the comparison's other problems are said too)
        if problem and target.name == "calc_confidence_level":
            problem += _as_fraction(value)
        if problem:
            ctx.problem([*path, op], f"{op}: {problem}")
            ok = False
        elif op == "matches":
            why = check_pattern(value)
            if why:
                ctx.problem([*path, op], f"matches: {why}")
                ok = False
        if "case" in node and target.kind not in (Kind.TEXT, Kind.TEXT_LIST):
            ctx.problem([*path, "case"], f"'case' applies to text fields only, not {spec.field!r}", key=True)
            ok = False
        elif "case" in node and op in ("exists", "absent", "empty"):
            ctx.problem([*path, "case"], f"{CASE_DOES_NOTHING} with {op} (it compares no text)", key=True)
            ok = False
        if not ok:
            return None
        if isinstance(value, LocList):
            value = list(value)
        return cls(target, op, value, spec.case == "exact")

    # -- compilation ---------------------------------------------------------------------------

    @property
    def cost(self) -> int:
        if self.op == "matches":
            return 2
        return 1 if self.target.kind is Kind.TEXT_LIST else 0  # a list field is a subquery

    def compile(self, row: Row) -> ColumnElement[bool]:
        if (
            row.level is Level.COLUMN
            and self.target.name.startswith("cluster.")
            and self.target.name != "cluster.id"
        ):
            # Decide once per cluster, not once per column: the run's clusters that pass become a
            # small list each column's cluster id is looked up in (a column has one cluster per run).
            inner = Row(row.run_id, Level.CLUSTER)
            test = self._compile_here(inner)
            rcl = inner.table("rcl")
            passing = (
                select(rcl.c.cluster_id)
                .select_from(cluster_from(inner))
                .where(rcl.c.run_id == bindparam(None, row.run_id, unique=True), test)
            )
            return row.table("rc").c.cluster_id.in_(passing)
        return self._compile_here(row)

    def _compile_here(self, row: Row) -> ColumnElement[bool]:
        if self.target.kind is Kind.TEXT_LIST:
            return self._compile_list(row)
        column = self.target.getter(row)
        return self._scalar(column, self.op, self.target.kind)

    def _norm(self, column: Any, kind: Kind, *, substring: bool = False) -> Any:
        """``column`` as compared: case-folded for text unless exact (lower() for substrings; all of
        Unicode when a value compared with is not plain ASCII, see :class:`UnicodeLower`)."""
        if kind not in (Kind.TEXT, Kind.TEXT_LIST) or self.exact:
            return column
        if not self._all_ascii:
            return UnicodeLower(column)
        return func.lower(column) if substring else CaseFolded(column)

    def _value(self, value: Any, kind: Kind) -> Any:
        """The bound literal a (normalised) column is compared with.

        Lower-cased here when it is ASCII. Otherwise the database lower-cases it with the very
        function it applies to the column (:class:`UnicodeLower`): Python's ``'İ'.lower()`` is two
        characters and its ``'ΟΔΟΣ'.lower()`` ends in a final sigma, where PostgreSQL's ``lower()``
        gives ``'i'`` and ``'οδοσ'``, so a value identical to the literal did not match there.
        """
        if kind in (Kind.TEXT, Kind.TEXT_LIST) and not self.exact and isinstance(value, str):
            if not self._all_ascii:
                return UnicodeLower(bindparam(None, value, unique=True))
            return bindparam(None, value.lower(), unique=True)
        return bindparam(None, value, unique=True)

    @functools.cached_property
    def _all_ascii(self) -> bool:
        # Once per condition: asked for each value of an `in` list, it scanned the whole list each
        # time (20,000 values: 53 s to compile, a probe).
        values = self.value if isinstance(self.value, (list, tuple)) else [self.value]
        return all(value.isascii() for value in values if isinstance(value, str))

    def _scalar(self, column: Any, op: str, kind: Kind) -> ColumnElement[bool]:
        if op in _NEGATIVE:
            return not_(self._scalar(column, _NEGATIVE[op], kind))
        present = column.is_not(None)
        if op in ("exists", "absent", "empty"):
            test: ColumnElement[bool]
            if op == "exists":
                test = present
            elif op == "absent":
                test = column.is_(None)
            else:
                test = or_(column.is_(None), func.trim(column) == "")
            return test if self.value else not_(test)
        norm = self._norm(column, kind, substring=op == "contains")
        if op == "eq":
            return and_(present, norm == self._value(self.value, kind))
        if op == "in":
            # Each value bound with its own type: a list coerced to the column's type would turn
            # 2.5 into an integer for cluster.size on PostgreSQL (size IN (2.5) matching 2 or 3).
            values = [self._value(v, kind) for v in self.value]
            return and_(present, norm.in_(values))
        if op == "contains":
            return and_(present, TextContains(norm, self._value(self.value, kind)))
        if op == "matches":
            construct = RegexSearch if self.exact else RegexSearchIgnoreCase
            pattern = portable_pattern(self.value)
            return and_(present, construct(column, bindparam(None, pattern, unique=True)))
        return and_(present, ORDERINGS[op](column, bindparam(None, self.value, unique=True)))

    def _compile_list(self, row: Row) -> ColumnElement[bool]:
        owner = self.target.getter(row)  # the cluster hash of the row
        labels = cluster_labels.alias(f"lbl_{_next_alias()}")
        if self.op in ("exists", "empty"):
            has_any: ColumnElement[bool] = exists(select(literal(1)).where(labels.c.cluster_hash == owner))
            wants_any = self.value if self.op == "exists" else not self.value
            return has_any if wants_any else not_(has_any)
        positive = _NEGATIVE.get(self.op, self.op)
        element_op = "eq" if positive == "contains" else positive
        element = self._scalar(labels.c.label, element_op, Kind.TEXT)
        test: ColumnElement[bool] = exists(select(literal(1)).where(labels.c.cluster_hash == owner, element))
        return not_(test) if self.op in _NEGATIVE else test

    # -- explanation ---------------------------------------------------------------------------

    def explain(self) -> str:
        label = self.target.label
        case = " (exact case)" if self.exact and self.target.kind in (Kind.TEXT, Kind.TEXT_LIST) else ""
        if self.target.kind is Kind.BOOLEAN:
            truth = {"eq": self.value, "ne": not self.value}.get(self.op)
            if truth is None:
                known = self.value if self.op == "exists" else not self.value
                return f"whether {label} is {'known' if known else 'unknown'}"
            said = label if truth else label.replace(" is ", " is not ", 1)
            # ne also holds where the value is missing (eq false does not): say so
            return f"{said}, or that is not known" if self.op == "ne" else said
        if self.target.kind is Kind.TEXT_LIST:
            values = ", ".join(_fmt(v) for v in self.value) if isinstance(self.value, list) else None
            phrase = {
                "eq": f"include {_fmt(self.value)}",
                "contains": f"include {_fmt(self.value)}",
                "ne": f"do not include {_fmt(self.value)}",
                "not_contains": f"do not include {_fmt(self.value)}",
                "in": f"include any of {values}",
                "not_in": f"include none of {values}",
                "matches": f"include one matching /{self.value}/",
                "exists": "are not empty" if self.value else "are empty",
                "empty": "are empty" if self.value else "are not empty",
            }[self.op]
            return f"{label} {phrase}{case}"
        values = ", ".join(_fmt(v) for v in self.value) if isinstance(self.value, list) else None
        phrase = {
            "eq": f"is {_fmt(self.value)}",
            "ne": f"is not {_fmt(self.value)}",
            "in": f"is one of {values}",
            "not_in": f"is none of {values}",
            "contains": f"contains '{self.value}'",
            "not_contains": f"does not contain '{self.value}'",
            "matches": f"matches /{self.value}/",
            "exists": "is set" if self.value else "is not set",
            "absent": "is not set" if self.value else "is set",
            "empty": "is empty" if self.value else "is not empty",
            "gt": f"is greater than {_fmt(self.value)}",
            "gte": f"is at least {_fmt(self.value)}",
            "lt": f"is less than {_fmt(self.value)}",
            "lte": f"is at most {_fmt(self.value)}",
        }[self.op]
        return f"{label} {phrase}{case}"


def _check_value(target: F.Field, op: str, value: Any) -> str | None:
    """Why ``value`` does not fit ``op`` on ``target``, or ``None``."""
    if op in ("exists", "absent", "empty"):
        return None if isinstance(value, bool) else f"expected true or false, got {type_name(value)}"
    if op in ("in", "not_in"):
        if not isinstance(value, list):  # a string would be read as its characters
            return f"expected a list such as [a, b], got {type_name(value)}"
        if not value:
            return "expected a non-empty list (an empty one is never or always true)"
        return None  # (each item is checked by the caller, where it is written)
    return _check_scalar(target.kind, value)


def _check_scalar(kind: Kind, value: Any) -> str | None:
    if kind in (Kind.TEXT, Kind.TEXT_LIST):
        if not isinstance(value, str):
            quotable = isinstance(value, bool | int | float | datetime.date)
            quote = " (quote it to compare as text)" if quotable else ""
            return f"expected text, got {type_name(value)}{quote}"
    elif kind is Kind.NUMBER:
        if isinstance(value, bool) or not isinstance(value, int | float):
            return f"expected a number, got {type_name(value)}{number_as_text(value)}"
        return _check_number(value)
    elif kind is Kind.BOOLEAN and not isinstance(value, bool):
        return f"expected true or false, got {type_name(value)}"
    return None


def _as_fraction(value: Any) -> str:
    """For a confidence threshold written as a percentage ("90%"): the fraction to write, as
    confidences are stored ("90%" from a tenant is 0.9); else nothing."""
    text = value.strip() if isinstance(value, str) else ""
    if not text.endswith("%"):
        return ""
    try:
        fraction = float(Decimal(text[:-1].strip()) / 100)
    except ArithmeticError:
        return ""
    if not math.isfinite(fraction):
        return ""
    return f" (a percentage: write it as the fraction {fraction:g}, as confidences are stored)"


def number_as_text(value: Any) -> str:
    """Why text that reads as a number was not taken for one: YAML 1.1 (PyYAML) reads ``1e3`` as
    text (its exponent form needs a dot: ``1.0e+3``), and quotes make any number text."""
    if not isinstance(value, str):
        return ""
    text = value.strip()
    try:
        float(value)
    except ValueError:
        return ""
    if shape := re.fullmatch(r"([-+]?[0-9][0-9_]*)[eE]([-+]?)([0-9]+)", text):
        mantissa, sign, exponent = shape.groups()
        dotted = f"{mantissa.replace('_', '')}.0e{sign or '+'}{exponent}"
        if len(exponent.lstrip("0")) > 2:  # (1e999999 in full is a million digits)
            return f" (YAML reads {value[:40]} as text: write it with a dot, as {dotted[:40]})"
        whole = format(Decimal(text.replace("_", "")), "f")
        return f" (YAML reads {value} as text: write it with a dot, as {dotted}, or in full, as {whole})"
    if re.fullmatch(r"[-+]?0[0-9_]+", text):  # kept as text by the loader (YAML 1.1 would read octal)
        return f" (write it without the leading zero, as {int(text.replace('_', ''))})"
    return " (written as text: leave out the quotes)"


BIGGEST = 2**63 - 1  # what both databases compare as an integer


def _check_number(value: int | float) -> str | None:
    """Why a number cannot be compared in SQL (NaN, infinities, integers past 64 bits), or ``None``."""
    if isinstance(value, float) and not math.isfinite(value):
        return f"expected a finite number, got {value}"
    if isinstance(value, int) and not -BIGGEST - 1 <= value <= BIGGEST:
        return f"{value} is out of range (at most {BIGGEST} either way)"
    return None


def _closest(name: str, catalog: Iterable[str]) -> str:
    match = close_match(name, catalog)
    return f" (did you mean {match!r}?)" if match else ""


def close_match(name: Any, catalog: Iterable[str]) -> str | None:
    """The name of ``catalog`` that ``name`` most likely misspells, if any."""
    import difflib

    if not isinstance(name, str):
        return None
    names = list(catalog)
    match = difflib.get_close_matches(name, names, n=1)
    if match:
        return match[0]
    lowered = {key.lower(): key for key in names}
    return lowered.get(name.lower())


def _extra_keys(node: LocDict, key: str, level: Level, ctx: ParseContext, path: list[Any]) -> list[Any]:
    """Report the keys written beside ``key`` in one condition (``{tags: …, colums: …}``); return them."""
    extra = [other for other in node if other != key]
    for other in extra:
        meant = close_match(other, valid_keys(level))
        if other in CONDITIONS:
            said = f"{other!r} next to {key!r}"
        elif meant:
            said = f"unknown condition {other!r} (did you mean {meant!r}?) next to {key!r}"
        else:
            said = f"unknown key {other!r} next to {key!r}"
        ctx.problem(
            [*path, other],
            f"{said}: a condition has one key; combine conditions with all: [...] or any: [...]",
            key=True,
        )
    return extra


def _parse_misspelt(
    node: LocDict,
    written: str,
    meant: str,
    ctx: ParseContext,
    parse: Callable[[LocDict, ParseContext], Any],
) -> None:
    """Check what a misspelt key holds as if it were spelt ``meant`` (the misspelling itself is
    reported by the caller): a typo in ``any`` used to hide every problem beneath it until it was
    fixed. The problems found keep their own positions."""
    shadow = LocDict({meant: node[written]})
    shadow.mark = node.mark
    shadow.key_marks = {meant: node.key_marks[written]} if written in node.key_marks else {}
    shadow.value_marks = {meant: node.value_marks[written]} if written in node.value_marks else {}
    parse(shadow, ParseContext(ctx.source, shadow, ctx.problems, ctx.depth))


_alias_counter = iter(range(1, 1 << 62))


def _next_alias() -> int:
    return next(_alias_counter)


# -- counting: group keys and thresholds (shared by quantifiers and aggregate rules) ----------


class HavingSpec(BaseModel):
    """A threshold on a group: the number of rows, or of distinct values of ``distinct``."""

    model_config = _spec_config()
    distinct: StrictStr | None = Field(default=None, description="count distinct values of this field")
    eq: StrictInt | None = None
    ne: StrictInt | None = None
    gt: StrictInt | None = None
    gte: StrictInt | None = None
    lt: StrictInt | None = None
    lte: StrictInt | None = None
    case: Literal["insensitive", "exact"] = "insensitive"


_THRESHOLD_WORDS = {
    "eq": "exactly",
    "ne": "other than",
    "gt": "more than",
    "gte": "at least",
    "lt": "fewer than",
    "lte": "at most",
}


# What forms no group, by the level of the elements counted (an aggregate's columns: none).
_EMPTY_GROUP = {
    Level.TAG: "a column with no tags has no group of tags",
    Level.ATTRIBUTE: "a column with no attributes has no group of attributes",
}


@dataclass
class Having:
    distinct: F.Field | None
    op: str
    threshold: int
    exact: bool

    @classmethod
    def parse(
        cls, node: Any, level: Level, ctx: ParseContext, path: list[Any], *, grouped: bool = False
    ) -> Having | None:
        """``grouped``: the counting form has a ``group_by`` (for the advice on a ``case`` here)."""
        if not isinstance(node, LocDict):
            ctx.problem(
                path, f"'having' takes a mapping such as {{distinct: source, gte: 2}}, got {type_name(node)}"
            )
            return None
        null = _refuse_nulls(node, ("distinct",), ctx, path)
        try:
            spec = HavingSpec.model_validate(node)
        except PydanticValidationError as exc:
            report_pydantic(ctx, path, exc, "'having'", HavingSpec)
            # the field counted is checked all the same (under a misspelt key too): every problem at once
            for key, named in node.items():
                if isinstance(named, str) and (key == "distinct" or close_match(key, ["distinct"])):
                    cls._distinct(named, level, ctx, path, key=key)
            return None
        if null:
            return None
        ops = [op for op in _THRESHOLD_WORDS if getattr(spec, op) is not None]
        ok = True
        if len(ops) != 1:
            ctx.problem(path, f"'having' needs exactly one of {', '.join(_THRESHOLD_WORDS)} (got {len(ops)})")
            ok = False
        distinct = None
        if spec.distinct is not None:
            distinct = cls._distinct(spec.distinct, level, ctx, path)
            ok = ok and distinct is not None
        elif "case" in node:  # (accepted, it changed nothing: a rule author's intent lost silently)
            advice = (
                "for exact grouping, write it beside having and group_by"
                if grouped
                else "give it with distinct"
            )
            ctx.problem([*path, "case"], f"{CASE_DOES_NOTHING} (a count of rows); {advice}", key=True)
            ok = False
        if not ok:
            return None
        threshold = int(getattr(spec, ops[0]))
        problem = _check_number(threshold)
        if problem:
            ctx.problem([*path, ops[0]], f"{ops[0]}: {problem}")
            return None
        op = ops[0]
        least = 1 if distinct is None else 0  # a distinct count of only missing values is 0
        never = {"eq": threshold < least, "lt": threshold <= least, "lte": threshold < least}.get(op, False)
        if never:
            # Only what exists is counted: a column with no tags has no group of tags, so a count
            # below one never holds, and the rule would silently find nothing.
            what = (
                "every group counted has at least one element, and what is not there forms no group"
                + (f" ({_EMPTY_GROUP[level]})" if level in _EMPTY_GROUP else "")
                if distinct is None
                else "a count of distinct values is never below 0"
            )
            advice = (
                "; to find what has none, write a quantifier's none: {…}, or not: {…}"
                if distinct is None
                else ""
            )
            ctx.problem([*path, op], f"{op}: {threshold} never holds: {what}{advice}")
            return None
        return cls(distinct, op, threshold, spec.case == "exact")

    @staticmethod
    def _distinct(
        name: str, level: Level, ctx: ParseContext, path: list[Any], *, key: str = "distinct"
    ) -> F.Field | None:
        """The field ``distinct`` counts, or ``None`` with the problem reported (at ``key``)."""
        catalog = F.FIELDS_BY_LEVEL[level]
        found = catalog.get(name)
        if found is None or found.kind is Kind.TEXT_LIST:
            valid = [field_name for field_name, f in catalog.items() if f.kind is not Kind.TEXT_LIST]
            meant = close_match(name, valid) if found is None else None
            guess = (F.elsewhere(name, level) if found is None else "") or (
                f" (did you mean {meant!r}?)" if meant else ""
            )
            ctx.problem(
                [*path, key],
                f"cannot count distinct {name!r} on {F.LEVEL_NOUN[level]}{guess}; "
                f"valid fields: {', '.join(valid)}",
            )
            return None
        return found

    def compile(self, row: Row) -> ColumnElement[bool]:
        if self.distinct is None:
            measure = func.count()
        else:
            measure = func.count(func.distinct(group_key(self.distinct, row, exact=self.exact)))
        test: ColumnElement[bool] = ORDERINGS[self.op](measure, bindparam(None, self.threshold, unique=True))
        return test

    def passes(self, count: int) -> bool:
        """Whether ``count`` meets the threshold (the same comparison the compiled SQL makes)."""
        return bool(ORDERINGS[self.op](count, self.threshold))

    def explain(self, noun: str) -> str:
        """The threshold in words, counting ``noun`` (singular: ``column``, ``tag``) or distinct
        values: ``at least 2 distinct sources``, ``exactly 1 column``."""
        if self.distinct is None:
            one, many = noun, _plural(noun)
        elif self.distinct.kind is Kind.BOOLEAN:  # "the column is a primary key"
            one, many = (f"distinct {word} of whether {self.distinct.label}" for word in ("value", "values"))
        else:
            one = f"distinct {self.distinct.label.removeprefix('the ')}"
            many = f"distinct {_plural(self.distinct.label.removeprefix('the '))}"
        exact = " (exact case)" if self.distinct and self.exact else ""
        if self.op == "ne":
            return f"a number of {many} other than {self.threshold}{exact}"
        return f"{_THRESHOLD_WORDS[self.op]} {self.threshold} {one if self.threshold == 1 else many}{exact}"


def _plural(noun: str) -> str:
    """``noun`` (English, regular) in the plural: columns, statuses, severities."""
    if noun.endswith(("s", "x", "sh", "ch")):
        return f"{noun}es"
    if noun.endswith("y") and noun[-2:-1] not in ("a", "e", "i", "o", "u", ""):
        return f"{noun[:-1]}ies"
    return f"{noun}s"


def group_value(target: F.Field, row: Row, *, exact: bool) -> Any:
    """The value a group is known by (its key in findings): text trimmed, lower-cased in all of
    Unicode unless exact."""
    value = _trimmed(target, row)
    return GroupLowered(value, target.getter(row)) if target.kind is Kind.TEXT and not exact else value


def group_key(target: F.Field, row: Row, *, exact: bool) -> Any:
    """What a field is grouped or counted distinct by: equal exactly when :func:`group_value` is."""
    value = _trimmed(target, row)
    return GroupFolded(value, target.getter(row)) if target.kind is Kind.TEXT and not exact else value


def _trimmed(target: F.Field, row: Row) -> Any:
    column = target.getter(row)
    return func.trim(column) if target.kind is Kind.TEXT else column


@dataclass(frozen=True)
class Counting:
    """The parts of a counting form, a quantifier's or an aggregate's."""

    where: Condition | None
    group_by: F.Field | None
    having: Having


def check_counting_part(shadow: LocDict, meant: str, level: Level, ctx: ParseContext) -> Any:
    """Check ``shadow[meant]`` (a misspelt key's value, see :func:`_parse_misspelt`) as the part of a
    quantifier or counting form ``meant`` names: a condition, a ``group_by`` field or a ``having``."""
    if meant == "group_by":
        return parse_group_by(shadow[meant], level, ctx, [meant])
    if meant == "having":
        return Having.parse(shadow[meant], level, ctx, [meant])
    if meant in ("any", "all", "none", "where"):
        return parse_condition(shadow[meant], level, ctx, [meant])
    return None


def check_misspelt_parts(node: LocDict, known: Iterable[str], level: Level, ctx: ParseContext) -> None:
    """Check what each key of ``node`` outside ``known`` that misspells a part of a counting form
    (``havin``) holds, as if spelt right; the misspelling itself is reported by the caller."""
    for key in list(node):
        meant = close_match(key, ("where", "group_by", "having"))
        if key not in known and meant is not None and meant not in node:
            _parse_misspelt(
                node,
                key,
                meant,
                ctx,
                lambda shadow, sub, meant=meant: check_counting_part(shadow, meant, level, sub),
            )


# What an optional part of a counting form holds, for the problem of one written as null.
_COUNTING_PART = {"where": "a condition", "group_by": "a field", "distinct": "a field"}


def _refuse_nulls(node: LocDict, keys: Iterable[str], ctx: ParseContext, path: list[Any]) -> bool:
    """Report each of ``keys`` written as null in ``node`` (it read as absent, where the schema and
    ``case: null`` refuse it); whether there was one."""
    nulls = [key for key in keys if key in node and node[key] is None]
    for key in nulls:
        ctx.problem(
            [*path, key], f"{key}: nothing (null) given; leave the key out, or give {_COUNTING_PART[key]}"
        )
    return bool(nulls)


def parse_counting(
    body: LocDict, level: Level, ctx: ParseContext, path: list[Any], *, exact: bool
) -> Counting | None:
    """``where`` (optional), ``group_by`` (optional) and ``having`` of a counting form, each checked
    even when another is wrong, so that every problem shows at once. ``exact`` (the form's
    ``case: exact``) makes the distinct count exact too, as the grouping is."""
    where = group_by = having = None
    nulls = _refuse_nulls(body, ("where", "group_by"), ctx, path)
    if body.get("where") is not None:
        where = parse_condition(body["where"], level, ctx, [*path, "where"])
    if body.get("group_by") is not None:
        group_by = parse_group_by(body["group_by"], level, ctx, [*path, "group_by"])
    if "having" in body:
        having = Having.parse(
            body["having"], level, ctx, [*path, "having"], grouped=body.get("group_by") is not None
        )
    if having is None or nulls or (where is None and body.get("where") is not None):
        return None
    if group_by is None and body.get("group_by") is not None:
        return None
    if "case" in body and group_by is None and having.distinct is None:
        ctx.problem(
            [*path, "case"],
            CASE_DOES_NOTHING + " (no group_by, and a count of rows); give it with group_by or distinct",
            key=True,
        )
        return None
    return Counting(where, group_by, replace(having, exact=True) if exact else having)


def parse_group_by(node: Any, level: Level, ctx: ParseContext, path: list[Any]) -> F.Field | None:
    catalog = F.FIELDS_BY_LEVEL[level]
    valid = [name for name, f in catalog.items() if f.kind is not Kind.TEXT_LIST]
    if not isinstance(node, str) or node not in catalog or catalog[node].kind is Kind.TEXT_LIST:
        shown = repr(node) if isinstance(node, str) else type_name(node)
        # a list or a mapping is unhashable: 'node not in catalog' raised TypeError (exit 3)
        meant = close_match(node, valid) if isinstance(node, str) and node not in catalog else None
        guess = F.elsewhere(node, level) or (f" (did you mean {meant!r}?)" if meant else "")
        ctx.problem(
            path, f"cannot group {F.LEVEL_NOUN[level]} by {shown}{guess}; valid fields: {', '.join(valid)}"
        )
        return None
    return catalog[node]


# -- quantifiers over a column's tags and attributes, and a cluster's columns -------------------


class _QuantifierSpec(BaseModel):
    model_config = _spec_config()
    any_: Any = Field(default=None, alias="any", description="at least one element matches")
    all_: Any = Field(
        default=None, alias="all", description="every element matches (true when there are none)"
    )
    none_: Any = Field(default=None, alias="none", description="no element matches")
    where: Any = Field(default=None, description="counting form: which elements to count")
    group_by: StrictStr | None = Field(
        default=None, description="counting form: count per value of this field"
    )
    having: HavingSpec | None = Field(default=None, description="counting form: the threshold")
    case: Literal["insensitive", "exact"] = Field(
        default="insensitive", description="case of group_by values"
    )


class Quantifier(Condition):
    """Base of ``tags``/``attributes``/``columns``: quantify a nested condition over a collection."""

    Spec = _QuantifierSpec
    nested: ClassVar[dict[str, str]] = {
        "any": "one-or-list",
        "all": "one-or-list",
        "none": "one-or-list",
        "where": "one-or-list",
    }
    inner_level: ClassVar[Level]
    element: ClassVar[str]  # "tag"
    owner: ClassVar[str]  # "the column"

    def __init__(
        self,
        mode: str,
        inner: Condition | None,
        group_by: F.Field | None = None,
        having: Having | None = None,
        exact: bool = False,
    ) -> None:
        self.mode = mode  # any | all | none | count
        self.inner = inner
        self.group_by = group_by
        self.having = having
        self.exact = exact

    @classmethod
    def parse(cls, node: LocDict, level: Level, ctx: ParseContext, path: list[Any]) -> Condition | None:
        extra = _extra_keys(node, cls.key, level, ctx, path)
        body = node[cls.key]
        here = [*path, cls.key]
        if not isinstance(body, LocDict):
            ctx.problem(
                here,
                f"{cls.key!r} takes a mapping with any/all/none (or where/group_by/having), "
                f"got {type_name(body)}",
            )
            return None
        allowed = {"any", "all", "none", "where", "group_by", "having", "case"}
        bad = False
        for key in body:
            if key not in allowed:
                meant = close_match(key, ("any", "all", "none", "where", "group_by", "having", "case"))
                guess = f" (did you mean {meant!r}?)" if meant else ""
                ctx.problem(
                    [*here, key],
                    f"unknown key {key!r} in {cls.key!r}{guess}; "
                    "valid: any, all, none, where, group_by, having",
                    key=True,
                )
                bad = True
                if meant is not None:  # what it holds is checked as if spelt right
                    _parse_misspelt(body, key, meant, ctx, cls._nested_as(meant))
        modes = [key for key in ("any", "all", "none") if key in body]
        counting = [key for key in ("where", "group_by", "having") if key in body]
        if bad or extra:
            return None
        if modes and counting:
            ctx.problem(
                here,
                f"{cls.key!r} takes any/all/none or a counting form (where/group_by/having), not both: "
                f"found {' and '.join([*modes, *counting])}",
            )
            return None
        if len(modes) > 1 or not (modes or counting):
            ctx.problem(
                here,
                f"{cls.key!r} needs exactly one of any/all/none, or a counting form with 'having' "
                f"(and optional where/group_by)",
            )
            return None
        if body.get("case", "insensitive") not in ("insensitive", "exact"):
            ctx.problem([*here, "case"], "case: expected 'insensitive' or 'exact'")
            return None
        exact = body.get("case") == "exact"
        if modes:
            inner = parse_condition(body[modes[0]], cls.inner_level, ctx, [*here, modes[0]])
            if "case" in body:  # (accepted, it was ignored: comparisons take their own)
                ctx.problem(
                    [*here, "case"],
                    f"{CASE_DOES_NOTHING} beside {modes[0]}: give it to each comparison inside, "
                    "e.g. {field: tagName, eq: PII, case: exact}",
                    key=True,
                )
                return None
            return cls(modes[0], inner) if inner is not None else None
        if "having" not in body:
            ctx.problem(
                here, f"the counting form of {cls.key!r} needs 'having', e.g. {{distinct: source, gte: 2}}"
            )
            return None
        counting = parse_counting(body, cls.inner_level, ctx, here, exact=exact)
        if counting is None:
            return None
        return cls("count", counting.where, counting.group_by, counting.having, exact)

    @classmethod
    def _nested_as(cls, meant: str) -> Callable[[LocDict, ParseContext], Any]:
        """How to check what a misspelt key of this quantifier holds, read as ``meant``."""

        def check(shadow: LocDict, sub: ParseContext) -> Any:
            return check_counting_part(shadow, meant, cls.inner_level, sub)

        return check

    @classmethod
    def json_schema(cls) -> dict[str, Any]:
        body = super().json_schema()
        defs = body.pop("$defs", {})
        description = body.pop("description", "")
        return {
            "type": "object",
            "description": description,
            "properties": {cls.key: body},
            "required": [cls.key],
            "additionalProperties": False,
            "$defs": defs,
        }

    @abstractmethod
    def _elements(self, inner: Row) -> tuple[Any, Any, Any]:
        """(from clause, owner key column, extra where clause) of the inner query."""

    @abstractmethod
    def _owner_key(self, row: Row) -> Any:
        """The outer row's key the inner query's owner key is compared with."""

    # SQLite: test membership in a set built once per statement (True), or seek the owner's
    # elements per outer row (False). See Columns.
    sqlite_set = True

    @property
    def cost(self) -> int:
        return 1  # a subquery, computed once per statement on SQLite

    def compile(self, row: Row) -> ColumnElement[bool]:
        inner_row = Row(row.run_id, self.inner_level)
        predicate = self.inner.compile(inner_row) if self.inner is not None else true()
        outer = self._owner_key(row)
        if self.mode == "count":
            assert self.having is not None
            grouping = (
                group_key(self.group_by, inner_row, exact=self.exact) if self.group_by is not None else None
            )
            having = self.having.compile(inner_row)
            # Build the FROM clause last: group_by and having may have added joins.
            source, owner_key, scope = self._elements(inner_row)
            keys = [owner_key] if grouping is None else [owner_key, grouping]
            # Uncorrelated: the groups are computed once for the whole run (a correlated grouped
            # subquery would run once per outer row); the passing owners are usually few.
            # Elements whose group_by value is missing form no group (as in aggregate rules).
            present = true() if grouping is None else grouping.is_not(None)
            query = (
                select(owner_key)
                .select_from(source)
                .where(scope, predicate, present)
                .group_by(*keys)
                .having(having)
            )
            grouped: ColumnElement[bool] = outer.in_(query)
            return grouped
        # Correlated EXISTS / NOT EXISTS: PostgreSQL plans them as semi- and anti-joins (NOT IN over
        # a large subquery can degrade to a rescan per row there), and SQLite answers each with an
        # index seek on the element table's primary key.
        source, owner_key, scope = self._elements(inner_row)
        wanted = not_(predicate) if self.mode == "all" else predicate
        correlated: ColumnElement[bool] = exists(
            select(literal(1)).select_from(source).where(owner_key == outer, scope, wanted)
        )
        # The same test as a set membership (uncorrelated: the inner condition reads only the
        # element row), which SQLite evaluates far faster; see DialectChoice.
        member: ColumnElement[bool] = outer.in_(select(owner_key).select_from(source).where(scope, wanted))
        if not self.sqlite_set:
            member = correlated
        if self.mode == "any":
            return DialectChoice(member, correlated)
        return DialectChoice(not_(member), not_(correlated))  # "all": none fails; "none": none matches

    def explain(self) -> str:
        if self.mode == "count":
            assert self.having is not None
            where = f" where {self.inner.explain()}" if self.inner is not None else ""
            threshold = self.having.explain(self.element)
            if self.group_by is not None:
                if self.group_by.kind is Kind.BOOLEAN:
                    shared = f"alike in whether {self.group_by.label}"
                else:
                    exact = " (exact case)" if self.exact and self.group_by.kind is Kind.TEXT else ""
                    shared = f"sharing one {self.group_by.label.removeprefix('the ')}{exact}"
                return f"{self.owner} has {self.element}s{where} {shared} with {threshold}"
            if self.having.distinct:
                return f"{self.owner} has {self.element}s{where} with {threshold}"
            # Some group must pass, so an owner with nothing to count never does: say so where a
            # count of zero would otherwise read as passing ("fewer than 2 tags").
            also = " (and at least one)" if self.having.passes(0) else ""
            return f"{self.owner} has {threshold}{where}{also}"
        assert self.inner is not None
        text = self.inner.explain()
        if isinstance(self.inner, AllOf):
            text = f"({text})"
        if self.mode == "any":
            article = "an" if self.element[0] in "aeiou" else "a"
            return f"{self.owner} has {article} {self.element} where {text}"
        if self.mode == "none":
            return f"{self.owner} has no {self.element} where {text}"
        # vacuously true for an owner with none, which readers do not expect: said
        return (
            f"every {self.element} of {self.owner} is such that {text} (true when it has no {self.element}s)"
        )


@register
class Tags(Quantifier):
    """Quantify over the column's tags: ``tags: {any|all|none: CONDITION}`` or a counting form."""

    key = "tags"
    levels = (Level.COLUMN,)
    inner_level = Level.TAG
    element = "tag"
    owner = "the column"

    def _elements(self, inner: Row) -> tuple[Any, Any, Any]:
        table = inner.table("tag")
        return table, table.c.column_id, true()

    def _owner_key(self, row: Row) -> Any:
        return row.table("rc").c.column_id


@register
class Attributes(Tags):
    """Quantify over the column's attributes: ``attributes: {any|all|none: CONDITION}``."""

    key = "attributes"
    inner_level = Level.ATTRIBUTE
    element = "attribute"

    def _elements(self, inner: Row) -> tuple[Any, Any, Any]:
        table = inner.table("attr")
        return table, table.c.column_id, true()


@register
class Columns(Quantifier):
    """Quantify over the cluster's columns: ``columns: {any|all|none: CONDITION}`` or counting."""

    key = "columns"
    levels = (Level.CLUSTER,)
    inner_level = Level.COLUMN
    element = "column"
    owner = "the cluster"
    # A run has far fewer clusters than columns, and a cluster's columns are one range of the
    # membership key: seeking them per cluster reads only the clusters that get this far (a
    # cheaper test such as status = archived goes first), where the set would scan every column
    # of the run. Never more than one pass over the run's columns in the worst case.
    sqlite_set = False

    def _elements(self, inner: Row) -> tuple[Any, Any, Any]:
        rc = inner.table("rc")
        return column_from(inner), rc.c.cluster_id, rc.c.run_id == bindparam(None, inner.run_id, unique=True)

    def _owner_key(self, row: Row) -> Any:
        return row.table("rcl").c.cluster_id


def column_from(row: Row) -> Any:
    """FROM clause of a column-level row: membership, plus the version and cluster joins it uses."""
    rc = row.table("rc")
    source = rc
    if row.uses("cv"):
        cv = row.table("cv")
        source = source.join(cv, cv.c.id == rc.c.column_id)
    if row.uses("rcl") or row.uses("clv"):
        rcl = row.table("rcl")
        source = source.join(rcl, and_(rcl.c.run_id == rc.c.run_id, rcl.c.cluster_id == rc.c.cluster_id))
    if row.uses("clv"):
        clv = row.table("clv")
        source = source.join(clv, clv.c.hash == row.table("rcl").c.cluster_hash)
    return source


def cluster_from(row: Row) -> Any:
    """FROM clause of a cluster-level row."""
    rcl = row.table("rcl")
    source = rcl
    if row.uses("clv"):
        clv = row.table("clv")
        source = source.join(clv, clv.c.hash == rcl.c.cluster_hash)
    return source


def condition_schema() -> dict[str, Any]:
    """JSON Schema of a condition: any registered condition class."""
    defs: dict[str, Any] = {}
    variants = []
    for key, cls in CONDITIONS.items():
        schema = cls.json_schema()
        defs.update(schema.pop("$defs", {}))
        name = f"Condition_{key}"
        required = set(schema.get("required", []))
        required.add(key)
        schema["required"] = sorted(required)
        defs[name] = schema
        variants.append({"$ref": f"#/$defs/{name}"})
    defs["Condition"] = {
        "anyOf": [*variants, {"type": "array", "items": {"$ref": "#/$defs/Condition"}, "minItems": 1}]
    }
    return defs


__all__ = [
    "CONDITIONS",
    "OPERATORS",
    "AllOf",
    "AnyOf",
    "Attributes",
    "Columns",
    "Compare",
    "Condition",
    "Having",
    "Not",
    "ParseContext",
    "Quantifier",
    "Tags",
    "cluster_from",
    "column_from",
    "condition_schema",
    "group_key",
    "group_value",
    "parse_condition",
    "parse_group_by",
]
