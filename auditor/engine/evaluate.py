"""Evaluating a rule set against one run: one SQL statement per rule, run inside the database.

Column and cluster rules become a single ``SELECT`` over the run's membership rows with the rule's
compiled condition in ``WHERE``; aggregate rules become a ``GROUP BY … HAVING`` query plus a join
back to list each group's columns. Python only sees the matching rows (the findings), never the
whole snapshot. Message placeholders that need cluster fields are filled from one extra query over
the clusters that actually have findings.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Engine, and_, func, literal, select, true
from sqlalchemy.exc import SQLAlchemyError

from auditor.engine import fields as F
from auditor.engine.conditions import cluster_from, column_from, group_value
from auditor.engine.fields import Level, Row
from auditor.engine.findings import (
    KIND_CLUSTER,
    KIND_COLUMN,
    KIND_GROUP,
    Finding,
    sort_key,
)
from auditor.engine.rules import Rule, RuleSet, Scope, render_message
from auditor.engine.sqlfuncs import register_sqlite_functions
from auditor.errors import StoreError
from auditor.store.schema import cluster_labels, cluster_versions, run_clusters

CHUNK = 500
MAX_LISTED = 20  # columns named in a group message before "… and N more"


def prepare_connection(connection: Connection) -> None:
    """Make the functions the compiled SQL relies on available on this connection."""
    if connection.dialect.name == "sqlite":
        register_sqlite_functions(connection.connection.driver_connection)


def evaluate(engine: Engine, run_id: int, ruleset: RuleSet) -> list[Finding]:
    """Evaluate every enabled rule of ``ruleset`` on run ``run_id``; findings sorted by rule and subject."""
    found: list[Finding] = []
    for _rule, items, _seconds in evaluate_each(engine, run_id, ruleset):
        found.extend(items)
    return found


def evaluate_each(
    engine: Engine, run_id: int, ruleset: RuleSet
) -> Iterable[tuple[Rule, list[Finding], float]]:
    """Evaluate rule by rule, yielding (rule, findings, seconds): the benchmark's view."""
    try:
        with engine.connect() as connection:
            prepare_connection(connection)
            for rule in ruleset.rules:
                started = time.perf_counter()
                items = evaluate_rule(connection, run_id, rule)
                yield rule, items, time.perf_counter() - started
    except SQLAlchemyError as exc:
        detail = str(getattr(exc, "orig", exc)).splitlines()[0][:200]
        raise StoreError(f"could not evaluate run {run_id}: {detail}") from None


def evaluate_rule(connection: Connection, run_id: int, rule: Rule) -> list[Finding]:
    if rule.scope == Scope.COLUMN:
        items = _column_rule(connection, run_id, rule)
    elif rule.scope == Scope.CLUSTER:
        items = _cluster_rule(connection, run_id, rule)
    else:
        items = _aggregate_rule(connection, run_id, rule)
    items.sort(key=sort_key)
    return items


def _placeholders(rule: Rule) -> set[str]:
    import re

    return set(re.findall(r"\{([A-Za-z_.]+)\}", rule.message.replace("{{", "").replace("}}", "")))


def _rule_values(rule: Rule) -> dict[str, Any]:
    return {"rule.id": rule.id, "rule.title": rule.title, "rule.severity": rule.severity}


def _column_rule(connection: Connection, run_id: int, rule: Rule) -> list[Finding]:
    assert rule.condition is not None
    row = Row(run_id, Level.COLUMN)
    predicate = rule.condition.compile(row)
    rc = row.table("rc")
    wanted = _placeholders(rule)
    extra = {
        name: F.COLUMN_FIELDS[name.removeprefix("column.")].getter(row).label(f"f{i}")
        for i, name in enumerate(sorted(wanted))
        if name.startswith("column.")
    }
    query = (
        select(rc.c.cluster_id, rc.c.fqn, *extra.values())
        .select_from(column_from(row))
        .where(rc.c.run_id == run_id, predicate)
    )
    rows = connection.execute(query).all()
    clusters = _cluster_values(connection, run_id, {r.cluster_id for r in rows}, wanted)
    out = []
    base = _rule_values(rule)
    for r in rows:
        values = {**base, **clusters.get(r.cluster_id, {}), "column.fullyQualifiedName": r.fqn}
        for name, column in extra.items():
            values[name] = r._mapping[column.name]
        out.append(
            Finding(
                rule=rule.id,
                severity=rule.severity,
                kind=KIND_COLUMN,
                cluster_id=r.cluster_id,
                column=r.fqn,
                columns=[r.fqn],
                message=render_message(rule.message, values),
                key=r.fqn,
            )
        )
    return out


def _cluster_rule(connection: Connection, run_id: int, rule: Rule) -> list[Finding]:
    assert rule.condition is not None
    row = Row(run_id, Level.CLUSTER)
    predicate = rule.condition.compile(row)
    rcl = row.table("rcl")
    query = select(rcl.c.cluster_id).select_from(cluster_from(row)).where(rcl.c.run_id == run_id, predicate)
    ids = [r.cluster_id for r in connection.execute(query)]
    clusters = _cluster_values(connection, run_id, set(ids), _placeholders(rule))
    base = _rule_values(rule)
    return [
        Finding(
            rule=rule.id,
            severity=rule.severity,
            kind=KIND_CLUSTER,
            cluster_id=cluster_id,
            column=None,
            columns=[],
            message=render_message(rule.message, {**base, **clusters.get(cluster_id, {})}),
            key=None,
        )
        for cluster_id in ids
    ]


@dataclass
class _Group:
    cluster_id: str | None
    key: str
    value: str | None
    count: int
    distinct: int
    columns: list[str]
    clusters: set[str]


def _aggregate_parts(row: Row, rule: Rule) -> tuple[Any, Any, Any, list[Any]]:
    """(where, group key, representative value, grouping keys) of an aggregate rule over ``row``."""
    agg = rule.aggregate
    assert agg is not None
    rc = row.table("rc")
    where = agg.where.compile(row) if agg.where is not None else true()
    if agg.group_by is not None:
        key = group_value(agg.group_by, row, exact=agg.exact)
        raw = agg.group_by.getter(row)
        value = func.min(func.trim(raw)) if agg.group_by.kind is F.Kind.TEXT else func.min(raw)
        key_present = key.is_not(None)
    else:
        key = None
        value = None
        key_present = true()
    keys = ([rc.c.cluster_id] if agg.per == "cluster" else []) + ([key] if key is not None else [])
    return and_(where, key_present), key, value, keys


def _aggregate_rule(connection: Connection, run_id: int, rule: Rule) -> list[Finding]:
    agg = rule.aggregate
    assert agg is not None
    per_cluster = agg.per == "cluster"

    groups_row = Row(run_id, Level.COLUMN)
    where, key, value, keys = _aggregate_parts(groups_row, rule)
    having = agg.having.compile(groups_row)
    distinct = (
        func.count(func.distinct(group_value(agg.having.distinct, groups_row, exact=agg.having.exact)))
        if agg.having.distinct is not None
        else func.count()
    )
    rc = groups_row.table("rc")
    key_column = (key if key is not None else literal("")).label("gkey")
    group_columns = [
        (rc.c.cluster_id if per_cluster else literal("")).label("gcluster"),
        key_column,
        func.count().label("n"),
        distinct.label("d"),
        (value if value is not None else literal("")).label("gvalue"),
    ]
    groups_query = (
        select(*group_columns)
        .select_from(column_from(groups_row))
        .where(rc.c.run_id == run_id, where)
        .having(having)
    )
    if keys:
        groups_query = groups_query.group_by(*keys)
    groups_sub = groups_query.subquery("groups")

    members_row = Row(run_id, Level.COLUMN)
    m_where, m_key, _value, _keys = _aggregate_parts(members_row, rule)
    m_rc = members_row.table("rc")
    join_on = []
    if per_cluster:
        join_on.append(groups_sub.c.gcluster == m_rc.c.cluster_id)
    if m_key is not None:
        join_on.append(groups_sub.c.gkey == m_key)
    members_from = column_from(members_row).join(groups_sub, and_(true(), *join_on))
    members_query = (
        select(
            groups_sub.c.gcluster,
            groups_sub.c.gkey,
            groups_sub.c.n,
            groups_sub.c.d,
            groups_sub.c.gvalue,
            m_rc.c.cluster_id,
            m_rc.c.fqn,
        )
        .select_from(members_from)
        .where(m_rc.c.run_id == run_id, m_where)
    )
    groups: dict[tuple[str, str], _Group] = {}
    for r in connection.execute(members_query):
        gkey = "" if r.gkey is None else str(r.gkey)
        ident = (r.gcluster or "", gkey)
        group = groups.get(ident)
        if group is None:
            group = groups[ident] = _Group(
                cluster_id=r.gcluster if per_cluster else None,
                key=gkey,
                value=None if r.gvalue is None else str(r.gvalue),
                count=int(r.n),
                distinct=int(r.d),
                columns=[],
                clusters=set(),
            )
        group.columns.append(r.fqn)
        group.clusters.add(r.cluster_id)
    wanted = _placeholders(rule)
    clusters = (
        _cluster_values(connection, run_id, {g.cluster_id for g in groups.values() if g.cluster_id}, wanted)
        if per_cluster
        else {}
    )
    base = _rule_values(rule)
    out = []
    for group in groups.values():
        columns = sorted(set(group.columns))
        listed = ", ".join(columns[:MAX_LISTED])
        if len(columns) > MAX_LISTED:
            listed += f" … and {len(columns) - MAX_LISTED} more"
        values = {
            **base,
            **(clusters.get(group.cluster_id, {}) if group.cluster_id else {}),
            "group.key": group.key,
            "group.value": group.value if group.value is not None else group.key,
            "group.count": group.count,
            "group.distinct": group.distinct,
            "group.columns": listed,
            "group.clusters": sorted(group.clusters),
        }
        out.append(
            Finding(
                rule=rule.id,
                severity=rule.severity,
                kind=KIND_GROUP,
                cluster_id=group.cluster_id,
                column=None,
                columns=columns,
                message=render_message(rule.message, values),
                key=group.key,
            )
        )
    return out


def _cluster_values(
    connection: Connection, run_id: int, cluster_ids: set[str], wanted: set[str]
) -> dict[str, dict[str, Any]]:
    """Cluster placeholder values for the clusters with findings (only when the message uses them)."""
    needed = {name for name in wanted if name.startswith("cluster.")}
    if not needed or not cluster_ids:
        return {cid: {"cluster.id": cid} for cid in cluster_ids}
    out: dict[str, dict[str, Any]] = {}
    ids = sorted(cluster_ids)
    for start in range(0, len(ids), CHUNK):
        chunk = ids[start : start + CHUNK]
        query = (
            select(
                run_clusters.c.cluster_id,
                run_clusters.c.cluster_hash,
                cluster_versions.c.name,
                cluster_versions.c.severity,
                cluster_versions.c.status,
                cluster_versions.c.size,
            )
            .join(cluster_versions, cluster_versions.c.hash == run_clusters.c.cluster_hash)
            .where(run_clusters.c.run_id == run_id, run_clusters.c.cluster_id.in_(chunk))
        )
        hashes: dict[str, str] = {}
        for r in connection.execute(query):
            hashes[r.cluster_hash] = r.cluster_id
            out[r.cluster_id] = {
                "cluster.id": r.cluster_id,
                "cluster.name": r.name,
                "cluster.severity": r.severity,
                "cluster.status": r.status,
                "cluster.size": r.size,
                "cluster.labels": [],
            }
        if "cluster.labels" in needed and hashes:
            labels = connection.execute(
                select(cluster_labels.c.cluster_hash, cluster_labels.c.label)
                .where(cluster_labels.c.cluster_hash.in_(list(hashes)))
                .order_by(cluster_labels.c.cluster_hash, cluster_labels.c.position)
            )
            for cluster_hash, label in labels:
                out[hashes[cluster_hash]]["cluster.labels"].append(label)
    return out


Progress = Callable[[Rule, int, float], None]
