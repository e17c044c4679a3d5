"""A plain-Python evaluator of rule conditions, written from docs/rules.md alone.

It is the oracle of the property tests (``test_engine_properties.py``): it reads the *same* YAML
shapes a rule author writes (plain dicts and lists, as ``yaml.safe_load`` returns them) and the
*same* wire-format catalog the snapshot writer is given, and shares no code with
``auditor.engine``. Every branch below cites the documented rule it implements.

Limits, by design of the generated inputs rather than of this code: text is lower-cased with
``str.lower()`` (equal to SQLite's ASCII-only folding for the ASCII text the tests generate), "trim"
removes spaces only (as SQL ``trim`` does; no other whitespace is generated), and regular
expressions are the small portable subset the tests draw from.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

TEXT, NUMBER, BOOLEAN, LIST = "text", "number", "boolean", "list"

# The fields table of docs/rules.md: name -> (kind, how to read it from the wire-format record).
Record = dict[str, Any]


def _key(name: str) -> Callable[[Record], Any]:
    return lambda record: record.get(name)


def _prop(name: str) -> Callable[[Record], Any]:
    return lambda record: (record.get("properties") or {}).get(name)


CLUSTER_FIELDS: dict[str, tuple[str, Callable[[Record], Any]]] = {
    "cluster.id": (TEXT, _key("id")),
    "cluster.name": (TEXT, _key("name")),
    "cluster.labels": (LIST, lambda c: [label for label in (c.get("labels") or []) if label is not None]),
    "cluster.severity": (TEXT, _key("severity")),
    "cluster.status": (TEXT, _key("status")),
    "cluster.size": (NUMBER, _key("size")),
}
COLUMN_FIELDS: dict[str, tuple[str, Callable[[Record], Any]]] = {
    "columnName": (TEXT, _key("columnName")),
    "fullyQualifiedName": (TEXT, _key("fullyQualifiedName")),
    "source": (TEXT, _key("source")),
    "tableName": (TEXT, _key("tableName")),
    "dataType": (TEXT, _key("dataType")),
    "isPrimary": (BOOLEAN, _key("isPrimary")),
    "businessAttribute": (TEXT, _key("businessAttribute")),
}
TAG_FIELDS: dict[str, tuple[str, Callable[[Record], Any]]] = {
    "tagName": (TEXT, _key("tagName")),
    "tagValue": (TEXT, _key("tagValue")),
    "tagId": (TEXT, _key("tagId")),
    "valueId": (TEXT, _key("valueId")),
    "isMutuallyExclusive": (BOOLEAN, _key("isMutuallyExclusive")),
    "hidden": (BOOLEAN, _prop("hidden")),
    "applicationType": (TEXT, _prop("applicationType")),
}
ATTRIBUTE_FIELDS: dict[str, tuple[str, Callable[[Record], Any]]] = {
    "attribute_name": (TEXT, _key("attribute_name")),
    "attribute_original_name": (TEXT, _key("attribute_original_name")),
    "rank": (TEXT, _key("rank")),
    "calc_confidence_level": (NUMBER, _key("calc_confidence_level")),
    "attribute_type": (TEXT, _key("attribute_type")),
    "attribute_id": (TEXT, _key("attribute_id")),
}


@dataclass(frozen=True)
class Subject:
    """What a condition is tested on: a column with its cluster, a cluster, a tag or an attribute."""

    level: str  # column | cluster | tag | attribute
    record: Record
    cluster: Record

    def read(self, name: str) -> tuple[str, Any]:
        if name.startswith("cluster."):
            kind, get = CLUSTER_FIELDS[name]
            return kind, get(self.cluster)
        table = {"column": COLUMN_FIELDS, "tag": TAG_FIELDS, "attribute": ATTRIBUTE_FIELDS}[self.level]
        kind, get = table[name]
        return kind, get(self.record)

    def elements(self, key: str) -> list[Subject]:
        if key == "columns":
            return [Subject("column", c, self.cluster) for c in self.cluster.get("columns") or []]
        level = "tag" if key == "tags" else "attribute"
        return [Subject(level, item, self.cluster) for item in self.record.get(key) or []]


def _trim(value: str) -> str:
    return value.strip(" ")


def _fold(value: Any, kind: str, exact: bool) -> Any:
    """ "Text comparisons ignore case by default ... both sides are lower-cased"; `case: exact` does not."""
    if kind in (TEXT, LIST) and not exact and isinstance(value, str):
        return value.lower()
    return value


def _scalar(op: str, value: Any, wanted: Any, kind: str, exact: bool) -> bool:
    # "A missing value (null) never equals anything, so the negative operators are true for it:
    # they are the exact negation of their positive twin."
    negative = {"ne": "eq", "not_in": "in", "not_contains": "contains"}
    if op in negative:
        return not _scalar(negative[op], value, wanted, kind, exact)
    if op == "exists":
        return (value is not None) == wanted
    if op == "absent":
        return (value is None) == wanted
    if op == "empty":  # "missing or blank (only spaces)"
        return (value is None or _trim(value) == "") == wanted
    if value is None:
        return False
    if op == "eq":  # "Values are compared as stored: eq does not trim spaces"
        return _fold(value, kind, exact) == _fold(wanted, kind, exact)
    if op == "in":
        return _fold(value, kind, exact) in [_fold(w, kind, exact) for w in wanted]
    if op == "contains":  # "a plain substring (no wildcards)"
        return _fold(wanted, kind, exact) in _fold(value, kind, exact)
    if op == "matches":  # "a regular expression found anywhere in the value"
        return re.search(wanted, value, 0 if exact else re.IGNORECASE) is not None
    return {"gt": value > wanted, "gte": value >= wanted, "lt": value < wanted, "lte": value <= wanted}[op]


def _labels(op: str, labels: list[str], wanted: Any, exact: bool) -> bool:
    # "On a list field the operators look at the elements: eq, contains and matches are true when
    # some label equals (or matches) the value, in when some label is one of the values; the
    # negations ne, not_contains and not_in are true when no label does; exists: true means at
    # least one label, empty: true means none."
    if op == "exists":
        return bool(labels) == wanted
    if op == "empty":
        return (not labels) == wanted
    positive = {"ne": "eq", "not_contains": "eq", "contains": "eq", "not_in": "in"}.get(op, op)
    some = any(_scalar(positive, label, wanted, TEXT, exact) for label in labels)
    return not some if op in ("ne", "not_contains", "not_in") else some


OPERATORS = (
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
    "gt",
    "gte",
    "lt",
    "lte",
)


def holds(condition: Any, subject: Subject) -> bool:
    """Whether ``condition`` (a YAML-shaped dict or list) holds for ``subject``."""
    if isinstance(condition, list):  # "A bare list means all."
        return all(holds(part, subject) for part in condition)
    if "all" in condition:
        return all(holds(part, subject) for part in condition["all"])
    if "any" in condition:
        return any(holds(part, subject) for part in condition["any"])
    if "not" in condition:
        return not holds(condition["not"], subject)
    if "field" in condition:
        (op,) = [key for key in condition if key in OPERATORS]
        exact = condition.get("case") == "exact"
        kind, value = subject.read(condition["field"])
        if kind == LIST:
            return _labels(op, value, condition[op], exact)
        return _scalar(op, value, condition[op], kind, exact)
    (key,) = [key for key in ("tags", "attributes", "columns") if key in condition]
    return _quantifier(condition[key], subject.elements(key))


def _quantifier(body: dict[str, Any], elements: list[Subject]) -> bool:
    # "any is true when at least one element matches the nested condition, none when none does,
    # and all when every element does (vacuously true when there are none)."
    if "any" in body:
        return any(holds(body["any"], e) for e in elements)
    if "all" in body:
        return all(holds(body["all"], e) for e in elements)
    if "none" in body:
        return not any(holds(body["none"], e) for e in elements)
    # Counting form: "where (optional) filters them, group_by (optional) counts per value of a
    # field, and having is the threshold ... The condition holds when some group passes."
    # "case: exact beside having makes both exact, as in aggregates"
    kept = [e for e in elements if "where" not in body or holds(body["where"], e)]
    exact = body.get("case") == "exact"
    groups = group(kept, body.get("group_by"), exact=exact)
    return any(passes(body["having"], members, exact=exact) for members in groups.values())


def group_key(subject: Subject, name: str, *, exact: bool) -> Any:
    """ "Text keys are trimmed and, unless case: exact, lower-cased"; other values as they are."""
    kind, value = subject.read(name)
    if kind == TEXT and value is not None:
        value = _trim(value)
        return value if exact else value.lower()
    return value


def group(subjects: Iterable[Subject], by: str | None, *, exact: bool) -> dict[Any, list[Subject]]:
    """Group ``subjects`` by ``by`` (one group without it); "columns whose key is missing are not grouped"."""
    groups: dict[Any, list[Subject]] = {}
    for subject in subjects:
        key = None if by is None else group_key(subject, by, exact=exact)
        if by is not None and key is None:
            continue
        groups.setdefault(key, []).append(subject)
    return groups


def measure(having: dict[str, Any], members: list[Subject], *, exact: bool = False) -> int:
    """The group's size, or its number of distinct non-missing (normalised) values of ``distinct``."""
    if "distinct" not in having:
        return len(members)
    exact = exact or having.get("case") == "exact"
    values = {group_key(m, having["distinct"], exact=exact) for m in members}
    return len(values - {None})


def passes(having: dict[str, Any], members: list[Subject], *, exact: bool = False) -> bool:
    (op,) = [key for key in ("eq", "ne", "gt", "gte", "lt", "lte") if key in having]
    n, threshold = measure(having, members, exact=exact), having[op]
    return {
        "eq": n == threshold,
        "ne": n != threshold,
        "gt": n > threshold,
        "gte": n >= threshold,
        "lt": n < threshold,
        "lte": n <= threshold,
    }[op]


# -- subjects of a whole rule, in the shape the tests compare ------------------------------------


def column_subjects(condition: Any, catalog: list[Record]) -> list[tuple[str, str]]:
    """(cluster id, fqn) of every column the condition holds for ("one finding per (cluster, column)")."""
    return sorted(
        (cluster["id"], column["fullyQualifiedName"])
        for cluster in catalog
        for column in cluster.get("columns") or []
        if holds(condition, Subject("column", column, cluster))
    )


def _positive_columns_parts(condition: Any) -> list[Any]:
    """The nested conditions of the `columns: {any: …}` parts not under a `not` (docs: Findings)."""
    if isinstance(condition, list):
        return [q for part in condition for q in _positive_columns_parts(part)]
    if "all" in condition or "any" in condition:
        return [
            q for part in condition.get("all", condition.get("any")) for q in _positive_columns_parts(part)
        ]
    if "columns" in condition and "any" in condition["columns"]:
        return [condition["columns"]["any"]]
    return []


def cluster_subjects(condition: Any, catalog: list[Record]) -> list[tuple[str, tuple[str, ...]]]:
    """(cluster id, the columns involved) of every cluster the condition holds for.

    "For a cluster finding, the columns that satisfy the rule's `columns: {any: …}` parts ..., and
    none when the rule has no such part or its columns quantifier is negated, universal or counting."
    """
    out = []
    parts = _positive_columns_parts(condition)
    for cluster in catalog:
        subject = Subject("cluster", cluster, cluster)
        if not holds(condition, subject):
            continue
        involved = {
            column.record["fullyQualifiedName"]
            for part in parts
            for column in subject.elements("columns")
            if holds(part, column)
        }
        out.append((cluster["id"], tuple(sorted(involved))))
    return sorted(out)


def aggregate_subjects(
    aggregate: dict[str, Any], catalog: list[Record], *, exact_distinct: bool
) -> list[tuple]:
    """(cluster id or None, group key, sorted columns, count, distinct count) of every passing group.

    "An aggregate rule groups the columns of each cluster (per: cluster, the default) or of the whole
    snapshot (per: snapshot) by a field, and reports each group that passes having ... Without
    group_by, all the (filtered) columns of a cluster, or of the snapshot, form one group."
    ``exact_distinct`` says whether the aggregate's ``case: exact`` also applies to distinct counts.
    """
    per_cluster = aggregate.get("per", "cluster") == "cluster"
    exact = aggregate.get("case") == "exact"
    by = aggregate.get("group_by")
    scopes = [[cluster] for cluster in catalog] if per_cluster else [catalog]
    out = []
    for clusters in scopes:
        columns = [
            Subject("column", column, cluster)
            for cluster in clusters
            for column in cluster.get("columns") or []
        ]
        kept = [c for c in columns if "where" not in aggregate or holds(aggregate["where"], c)]
        for key, members in group(kept, by, exact=exact).items():
            having = aggregate["having"]
            if not passes(having, members, exact=exact and exact_distinct):
                continue
            fqns = tuple(sorted({m.record["fullyQualifiedName"] for m in members}))
            distinct = measure(having, members, exact=exact and exact_distinct)
            out.append(
                (
                    clusters[0]["id"] if per_cluster else None,
                    show_key(key, by),
                    fqns,
                    len(members),
                    distinct,
                )
            )
    return sorted(out, key=repr)


def show_key(key: Any, by: str | None) -> str:
    """The group key as a finding carries it: the normalised text, or the value printed."""
    if by is None:
        return ""
    if isinstance(key, bool):  # as {column.isPrimary} reads
        return "true" if key else "false"
    return str(key)
