"""The fields a rule can read, per level, and how each maps onto the store's SQL.

A condition is evaluated at one *level*: a column (with its cluster), a cluster, one tag of a
column, or one attribute of a column. Each level has a small catalog of :class:`Field` entries:
the name a rule author writes (the BigID wire name, e.g. ``columnName``, ``cluster.labels``,
``tagValue``, ``calc_confidence_level``), its kind (text, number, boolean, or a list of text), a
plain-English label for explanations, and a function that returns the SQL expression for it from a
:class:`Row` (the aliased tables of the query being built).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from sqlalchemy import FromClause

from auditor.store.schema import (
    cluster_versions,
    column_attributes,
    column_tags,
    column_versions,
    run_clusters,
    run_columns,
)

_ALIAS_NUMBERS = itertools.count(1)


class Level(StrEnum):
    COLUMN = "column"
    CLUSTER = "cluster"
    TAG = "tag"
    ATTRIBUTE = "attribute"


class Kind(StrEnum):
    TEXT = "text"
    NUMBER = "number"
    BOOLEAN = "boolean"
    TEXT_LIST = "list of text"


@dataclass
class Row:
    """The tables a condition reads from, created on demand so unused joins are never emitted."""

    run_id: int
    level: Level
    _aliases: dict[str, FromClause] = field(default_factory=dict)

    def table(self, name: str) -> FromClause:
        if name not in self._aliases:
            source = {
                "rc": run_columns,
                "cv": column_versions,
                "rcl": run_clusters,
                "clv": cluster_versions,
                "tag": column_tags,
                "attr": column_attributes,
            }[name]
            self._aliases[name] = source.alias(f"{name}_{next(_ALIAS_NUMBERS)}")
        return self._aliases[name]

    def uses(self, name: str) -> bool:
        return name in self._aliases


Getter = Callable[[Row], Any]


@dataclass(frozen=True)
class Field:
    name: str
    kind: Kind
    label: str
    getter: Getter
    placeholder: str | None = None  # the message placeholder exposing this field, if any


@dataclass(frozen=True)
class _Col:
    """Getter of one column of one of a row's tables (a class, not a lambda, so rules pickle)."""

    alias: str
    column: str

    def __call__(self, row: Row) -> Any:
        return row.table(self.alias).c[self.column]


def _col(alias: str, column: str) -> Getter:
    return _Col(alias, column)


def _cluster_id(row: Row) -> Any:
    # A column row knows its cluster id without joining the cluster tables.
    if row.level is Level.COLUMN:
        return row.table("rc").c.cluster_id
    return row.table("rcl").c.cluster_id


def _cluster_hash(row: Row) -> Any:
    return row.table("rcl").c.cluster_hash


CLUSTER_FIELDS: dict[str, Field] = {
    f.name: f
    for f in (
        Field("cluster.id", Kind.TEXT, "the cluster id", _cluster_id),
        Field("cluster.name", Kind.TEXT, "the cluster name", _col("clv", "name")),
        Field("cluster.labels", Kind.TEXT_LIST, "the cluster's labels", _cluster_hash),
        Field("cluster.severity", Kind.TEXT, "the cluster severity", _col("clv", "severity")),
        Field("cluster.status", Kind.TEXT, "the cluster status", _col("clv", "status")),
        Field("cluster.size", Kind.NUMBER, "the cluster size", _col("clv", "size")),
    )
}

COLUMN_FIELDS: dict[str, Field] = {
    f.name: f
    for f in (
        Field("columnName", Kind.TEXT, "the column name", _col("cv", "column_name")),
        Field("fullyQualifiedName", Kind.TEXT, "the fully qualified name", _col("rc", "fqn")),
        Field("source", Kind.TEXT, "the source", _col("cv", "source")),
        Field("tableName", Kind.TEXT, "the table name", _col("cv", "table_name")),
        Field("dataType", Kind.TEXT, "the data type", _col("cv", "data_type")),
        Field("isPrimary", Kind.BOOLEAN, "the column is a primary key", _col("cv", "is_primary")),
        Field("businessAttribute", Kind.TEXT, "the business attribute", _col("cv", "business_attribute")),
    )
}

TAG_FIELDS: dict[str, Field] = {
    f.name: f
    for f in (
        Field("tagName", Kind.TEXT, "tag name", _col("tag", "tag_name")),
        Field("tagValue", Kind.TEXT, "tag value", _col("tag", "tag_value")),
        Field("tagId", Kind.TEXT, "tag id", _col("tag", "tag_id")),
        Field("valueId", Kind.TEXT, "tag value id", _col("tag", "value_id")),
        Field(
            "isMutuallyExclusive",
            Kind.BOOLEAN,
            "the tag is mutually exclusive",
            _col("tag", "is_mutually_exclusive"),
        ),
        Field("hidden", Kind.BOOLEAN, "the tag is hidden", _col("tag", "hidden")),
        Field("applicationType", Kind.TEXT, "application type", _col("tag", "application_type")),
    )
}

ATTRIBUTE_FIELDS: dict[str, Field] = {
    f.name: f
    for f in (
        Field("attribute_name", Kind.TEXT, "attribute name", _col("attr", "attribute_name")),
        Field(
            "attribute_original_name",
            Kind.TEXT,
            "original attribute name",
            _col("attr", "attribute_original_name"),
        ),
        Field("rank", Kind.TEXT, "rank", _col("attr", "rank")),
        Field("calc_confidence_level", Kind.NUMBER, "confidence", _col("attr", "confidence")),
        Field("attribute_type", Kind.TEXT, "attribute type", _col("attr", "attribute_type")),
        Field("attribute_id", Kind.TEXT, "attribute id", _col("attr", "attribute_id")),
    )
}

FIELDS_BY_LEVEL: dict[Level, dict[str, Field]] = {
    Level.COLUMN: {**COLUMN_FIELDS, **CLUSTER_FIELDS},
    Level.CLUSTER: dict(CLUSTER_FIELDS),
    Level.TAG: dict(TAG_FIELDS),
    Level.ATTRIBUTE: dict(ATTRIBUTE_FIELDS),
}

LEVEL_NOUN = {
    Level.COLUMN: "a column",
    Level.CLUSTER: "a cluster",
    Level.TAG: "a tag",
    Level.ATTRIBUTE: "an attribute",
}


# Where a field of another level is tested from this one: (its level, this level) -> how.
_REACH = {
    (Level.TAG, Level.COLUMN): "inside tags: {any: {field: NAME, …}}",
    (Level.ATTRIBUTE, Level.COLUMN): "inside attributes: {any: {field: NAME, …}}",
    (Level.COLUMN, Level.CLUSTER): "inside columns: {any: {field: NAME, …}} (or in a column rule)",
    (Level.TAG, Level.CLUSTER): "inside columns: {any: {tags: {any: {field: NAME, …}}}}",
    (Level.ATTRIBUTE, Level.CLUSTER): "inside columns: {any: {attributes: {any: {field: NAME, …}}}}",
    (Level.COLUMN, Level.TAG): "beside the tags: quantifier, e.g. all: [{tags: …}, {field: NAME, …}]",
    (
        Level.COLUMN,
        Level.ATTRIBUTE,
    ): "beside the attributes: quantifier, e.g. all: [{attributes: …}, {field: NAME, …}]",
}


def elsewhere(name: object, level: Level) -> str:
    """For a field name unknown at ``level`` that another level has: ``" (NAME is a field of a tag:
    test it inside tags: {…})"``; ``""`` otherwise. A tag field in a column rule was offered its
    nearest column field (``tagName``: did you mean ``tableName``?)."""
    if not isinstance(name, str) or name in FIELDS_BY_LEVEL[level]:
        return ""
    for other in (Level.TAG, Level.ATTRIBUTE, Level.COLUMN, Level.CLUSTER):
        how = _REACH.get((other, level))
        if how and name in FIELDS_BY_LEVEL[other]:
            return f" ({name} is a field of {LEVEL_NOUN[other]}: test it {how.replace('NAME', name)})"
    return ""
