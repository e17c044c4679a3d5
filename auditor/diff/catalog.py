"""The metadata half of the diff, computed in SQL from the stored content hashes.

Two runs are compared through their membership tables only: ``run_clusters`` joined on
``cluster_id`` and ``run_columns`` joined on ``(cluster_id, fqn)``, keeping the rows whose content
version differs (cluster hash; column version id, one per content hash) or that have no partner.
Unchanged records (the vast majority) never leave the database; what is read into Python is
proportional to the number of changes, never to the catalog size. The fields, labels, tags and
attributes of the changed versions are then fetched by key, in chunks of bound parameters.

Moves: a column membership that has no partner in the other run is a *departure* (only in the older
run) or an *arrival* (only in the newer run). Departures and arrivals with the same
fullyQualifiedName are paired into moves. When one fqn leaves or joins several clusters at once, the
departures and arrivals of that fqn are paired in cluster-id order and whatever is left over is a
plain removal or addition; an fqn that stays in a cluster and additionally appears in another one is
an addition, not a move.

Compared fields: clusters ``name``, ``size``, ``labels`` (as a set), ``severity``, ``status``;
columns ``columnName``, ``tableName``, ``source``, ``dataType``, ``isPrimary``, ``businessAttribute``,
tags (by name: added, removed, value changed), attributes (by name: added, removed), attribute
``rank`` and ``confidence`` (only when it moved by more than the threshold). A hash that changed only
in fields outside this list (for instance an undocumented raw field) is not reported as a change.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from sqlalchemy import ColumnElement, Connection, and_, select

from auditor.diff.model import (
    SKIPPED,
    CatalogDiff,
    ClusterChange,
    ClusterEntry,
    ColumnChange,
    ColumnEntry,
    ColumnMove,
    NotCompared,
)
from auditor.store.db import keys_in, one_connection_only
from auditor.store.schema import (
    cluster_labels,
    cluster_versions,
    column_attributes,
    column_tags,
    column_versions,
    run_clusters,
    run_columns,
)

V = TypeVar("V")  # what identifies a version: a column version id (tests pair plain strings)

CHUNK = 2_000  # bound parameters per "fetch these versions" query (SQLite allows 32,766)
_DECIMALS = 9  # confidence differences are compared after rounding away float noise

_FIELD_COLUMNS = (
    ("columnName", "column_name"),
    ("tableName", "table_name"),
    ("source", "source"),
    ("dataType", "data_type"),
    ("isPrimary", "is_primary"),
    ("businessAttribute", "business_attribute"),
)
_WIRE_NAMES = tuple(wire for wire, _ in _FIELD_COLUMNS)


def diff_catalog(
    connection: Connection,
    from_run: int,
    to_run: int,
    *,
    confidence_threshold: float = 0.05,
    skip: Collection[str] = (),
) -> CatalogDiff:
    """Compare the clusters and columns of two runs (any status; the caller checks completeness).

    The clusters in ``skip`` (see :func:`not_compared`) are left out on both sides, in the SQL
    itself: neither they nor their columns are reported as added, removed, changed or moved.
    """
    result = CatalogDiff()
    _diff_clusters(connection, from_run, to_run, result, skip)
    _diff_columns(connection, from_run, to_run, result, confidence_threshold, skip)
    result.sort()
    return result


def not_compared(
    connection: Connection,
    from_run: int,
    to_run: int,
    skipped: tuple[Collection[str], Collection[str]] = ((), ()),
) -> list[NotCompared]:
    """The clusters that either run holds without all their columns, or that one run left out on
    purpose while the other holds them, with their status in each.

    A cluster that could not be fetched (``failed``) or that a stopped snapshot cut short
    (``fetching``) keeps none of its columns in its run, so comparing it would read every column
    as removed (or added) and every finding as resolved (or new). So would a cluster one run was
    asked to leave out (``--skip-cluster``; ``skipped`` holds each run's ids): its status there is
    ``skipped``. One query over the two runs' ``run_clusters`` rows: when both runs were fetched in
    full and left nothing out it returns nothing, at the cost of one index range scan per run.
    """
    partial = (
        select(run_clusters.c.cluster_id)
        .where(run_clusters.c.run_id.in_((from_run, to_run)), run_clusters.c.fetch_status != "complete")
        .scalar_subquery()
    )
    rows = connection.execute(
        select(run_clusters.c.cluster_id, run_clusters.c.run_id, run_clusters.c.fetch_status).where(
            run_clusters.c.run_id.in_((from_run, to_run)), run_clusters.c.cluster_id.in_(partial)
        )
    ).all()
    statuses: dict[str, dict[int, str]] = defaultdict(dict)
    for cluster_id, run_id, fetch_status in rows:
        statuses[cluster_id][run_id] = fetch_status
    for run_id, other, ids in ((from_run, to_run, skipped[0]), (to_run, from_run, skipped[1])):
        for chunk in _chunks(sorted(set(ids))):
            held = connection.execute(
                select(run_clusters.c.cluster_id, run_clusters.c.fetch_status).where(
                    run_clusters.c.run_id == other, keys_in(connection, run_clusters.c.cluster_id, chunk)
                )
            ).all()
            for cluster_id, fetch_status in held:  # left out of one run, held by the other
                statuses[cluster_id][other] = fetch_status
                statuses[cluster_id][run_id] = SKIPPED
    return [
        NotCompared(cluster_id, statuses[cluster_id].get(from_run), statuses[cluster_id].get(to_run))
        for cluster_id in sorted(statuses)
    ]


def outside(column: Any, skip: Collection[str]) -> list[ColumnElement[bool]]:
    """WHERE clauses keeping the rows whose ``column`` (a cluster id) is not in ``skip``.

    Bound in chunks of :data:`CHUNK` parameters; none at all when ``skip`` is empty, so the queries
    of two complete runs are exactly what they were. A null cluster id (a finding about the whole
    snapshot) is kept.
    """
    if not skip:
        return []
    return [column.is_(None) | column.not_in(chunk) for chunk in _chunks(sorted(skip))]


# -- clusters -----------------------------------------------------------------------------------


def _diff_clusters(
    connection: Connection, from_run: int, to_run: int, result: CatalogDiff, skip: Collection[str]
) -> None:
    a, b = run_clusters.alias("a"), run_clusters.alias("b")
    added = connection.execute(
        select(b.c.cluster_id, b.c.cluster_hash)
        .select_from(b.outerjoin(a, and_(a.c.run_id == from_run, a.c.cluster_id == b.c.cluster_id)))
        .where(b.c.run_id == to_run, a.c.cluster_id.is_(None), *outside(b.c.cluster_id, skip))
    ).all()
    removed = connection.execute(
        select(a.c.cluster_id, a.c.cluster_hash)
        .select_from(a.outerjoin(b, and_(b.c.run_id == to_run, b.c.cluster_id == a.c.cluster_id)))
        .where(a.c.run_id == from_run, b.c.cluster_id.is_(None), *outside(a.c.cluster_id, skip))
    ).all()
    changed = connection.execute(
        select(a.c.cluster_id, a.c.cluster_hash, b.c.cluster_hash)
        .select_from(a.join(b, and_(b.c.run_id == to_run, b.c.cluster_id == a.c.cluster_id)))
        .where(
            a.c.run_id == from_run,
            a.c.cluster_hash != b.c.cluster_hash,
            *outside(a.c.cluster_id, skip),
        )
    ).all()
    hashes = {row[1] for row in added} | {row[1] for row in removed}
    hashes |= {row[1] for row in changed} | {row[2] for row in changed}
    versions = _cluster_versions(connection, hashes)
    result.clusters_added.extend(_cluster_entry(versions[h]) for _, h in added)
    result.clusters_removed.extend(_cluster_entry(versions[h]) for _, h in removed)
    for cluster_id, before_hash, after_hash in changed:
        before, after = versions[before_hash], versions[after_hash]
        changes = compare_clusters(before, after)
        if changes:
            result.clusters_changed.append(ClusterChange(cluster_id, after["name"], changes))


def _cluster_versions(connection: Connection, hashes: Iterable[str]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for chunk in _chunks(sorted(hashes)):
        rows = connection.execute(
            select(
                cluster_versions.c.hash,
                cluster_versions.c.cluster_id,
                cluster_versions.c.name,
                cluster_versions.c.size,
                cluster_versions.c.severity,
                cluster_versions.c.status,
            ).where(keys_in(connection, cluster_versions.c.hash, chunk))
        )
        for cluster_hash, cluster_id, name, size, severity, status in rows:  # positional: ~13k at 1M
            out[cluster_hash] = {
                "hash": cluster_hash,
                "cluster_id": cluster_id,
                "name": name,
                "size": size,
                "severity": severity,
                "status": status,
                "labels": [],
            }
        labels = connection.execute(
            select(cluster_labels.c.cluster_hash, cluster_labels.c.label)
            .where(keys_in(connection, cluster_labels.c.cluster_hash, chunk))
            .order_by(cluster_labels.c.cluster_hash, cluster_labels.c.position)
        )
        for cluster_hash, label in labels:
            out[cluster_hash]["labels"].append(label)
    return out


def _cluster_entry(version: dict[str, Any]) -> ClusterEntry:
    return ClusterEntry(
        cluster_id=version["cluster_id"],
        name=version["name"],
        size=version["size"],
        severity=version["severity"],
        status=version["status"],
        labels=sorted(set(version["labels"])),
    )


def compare_clusters(before: dict[str, Any], after: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The compared fields of two versions of one cluster that differ, as before/after."""
    changes: dict[str, dict[str, Any]] = {}
    for name in ("name", "size", "severity", "status"):
        if before[name] != after[name]:
            changes[name] = {"before": before[name], "after": after[name]}
    old, new = set(before["labels"]), set(after["labels"])
    if old != new:
        changes["labels"] = {
            "before": sorted(old),
            "after": sorted(new),
            "added": sorted(new - old),
            "removed": sorted(old - new),
        }
    return changes


# -- columns ------------------------------------------------------------------------------------


def _diff_columns(
    connection: Connection,
    from_run: int,
    to_run: int,
    result: CatalogDiff,
    threshold: float,
    skip: Collection[str],
) -> None:
    # Each run's memberships that have no *identical* partner (same cluster, fqn and version) in the
    # other run: an anti-join on all four columns, which the membership table's own primary-key
    # b-tree answers (SQLite: WITHOUT ROWID, so each key entry carries the version id too). Only
    # changes come back. The memberships of clusters in ``skip`` are left out on both sides.
    older, newer = _both_unmatched(connection, from_run, to_run, skip)
    departures: dict[str, list[tuple[str, int]]] = defaultdict(list)  # fqn -> [(cluster, version id)]
    arrivals: dict[str, list[tuple[str, int]]] = defaultdict(list)
    changed: list[tuple[str, str, int, int]] = []  # (cluster, fqn, before id, after id)
    for (cluster_id, fqn), before_id in older.items():
        after_id = newer.pop((cluster_id, fqn), None)
        if after_id is None:
            departures[fqn].append((cluster_id, before_id))
        else:
            changed.append((cluster_id, fqn, before_id, after_id))
    for (cluster_id, fqn), after_id in newer.items():
        arrivals[fqn].append((cluster_id, after_id))
    del older, newer

    moves, removed, added = pair_moves(departures, arrivals)

    version_ids: set[int] = set()
    for _, _, before_id, after_id in changed:
        version_ids.update((before_id, after_id))
    for _, _, _, before_id, after_id in moves:
        version_ids.update((before_id, after_id))
    version_ids.update(h for _, _, h in removed)
    version_ids.update(h for _, _, h in added)
    versions = _column_versions(connection, version_ids)

    for cluster_id, fqn, before_id, after_id in changed:
        changes = compare_columns(versions[before_id], versions[after_id], threshold)
        if changes:
            result.columns_changed.append(ColumnChange(cluster_id, fqn, changes))
    for fqn, from_cluster, to_cluster, before_id, after_id in moves:
        changes = (
            compare_columns(versions[before_id], versions[after_id], threshold)
            if before_id != after_id
            else {}
        )
        result.columns_moved.append(ColumnMove(fqn, from_cluster, to_cluster, changes))
        if changes:
            result.columns_changed.append(ColumnChange(to_cluster, fqn, changes))
    result.columns_removed.extend(_column_entry(cid, fqn, versions[h]) for cid, fqn, h in removed)
    result.columns_added.extend(_column_entry(cid, fqn, versions[h]) for cid, fqn, h in added)


def _both_unmatched(
    connection: Connection, from_run: int, to_run: int, skip: Collection[str] = ()
) -> tuple[dict[tuple[str, str], int], dict[tuple[str, str], int]]:
    """:func:`_unmatched` both ways; the second on its own connection in a thread where possible.

    Each is a scan of a run's membership (1M rows at 1M columns) that SQLite runs without holding
    the GIL, so the two use both cores (1.2-1.3 s -> 0.7-0.8 s at 1M). An in-memory SQLite
    database exists only on ``connection``: there they run one after the other.
    """
    if one_connection_only(connection.engine):
        return (
            dict(_unmatched(connection, from_run, to_run, skip)),
            dict(_unmatched(connection, to_run, from_run, skip)),
        )

    def newer_side() -> dict[tuple[str, str], int]:
        with connection.engine.connect() as other:
            return dict(_unmatched(other, to_run, from_run, skip))

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="auditor-diff") as pool:
        newer = pool.submit(newer_side)
        older = dict(_unmatched(connection, from_run, to_run, skip))
        return older, newer.result()


def _unmatched(
    connection: Connection, run: int, other: int, skip: Collection[str] = ()
) -> Iterator[tuple[tuple[str, str], int]]:
    """((cluster_id, fqn), version id) of the memberships of ``run`` with no identical one in ``other``.

    Version ids are unique per content (like the hashes they stand for), so equal ids mean equal
    records.
    """
    a, b = run_columns.alias("a"), run_columns.alias("b")
    rows = connection.execute(
        select(a.c.cluster_id, a.c.fqn, a.c.column_id)
        .select_from(
            a.outerjoin(
                b,
                and_(
                    b.c.run_id == other,
                    b.c.cluster_id == a.c.cluster_id,
                    b.c.fqn == a.c.fqn,
                    b.c.column_id == a.c.column_id,
                ),
            )
        )
        .where(a.c.run_id == run, b.c.fqn.is_(None), *outside(a.c.cluster_id, skip))
    )
    for cluster_id, fqn, version_id in rows:
        yield (cluster_id, fqn), version_id


def pair_moves(
    departures: dict[str, list[tuple[str, V]]], arrivals: dict[str, list[tuple[str, V]]]
) -> tuple[list[tuple[str, str, str, V, V]], list[tuple[str, str, V]], list[tuple[str, str, V]]]:
    """Pair departures and arrivals of the same fqn into moves.

    Returns (moves as (fqn, from cluster, to cluster, before version, after version), removals
    and additions as (cluster, fqn, version)). Several departures/arrivals of one fqn pair up in cluster-id
    order; the leftovers stay removals or additions.
    """
    moves: list[tuple[str, str, str, V, V]] = []
    removed: list[tuple[str, str, V]] = []
    added: list[tuple[str, str, V]] = []
    for fqn, gone in departures.items():
        came = sorted(arrivals.get(fqn, ()))
        gone = sorted(gone)
        for (from_cluster, before_hash), (to_cluster, after_hash) in zip(gone, came, strict=False):
            moves.append((fqn, from_cluster, to_cluster, before_hash, after_hash))
        removed.extend((cluster_id, fqn, h) for cluster_id, h in gone[len(came) :])
        added.extend((cluster_id, fqn, h) for cluster_id, h in came[len(gone) :])
    for fqn, came in arrivals.items():
        if fqn not in departures:
            added.extend((cluster_id, fqn, h) for cluster_id, h in came)
    return moves, removed, added


def _column_versions(connection: Connection, version_ids: Iterable[int]) -> dict[int, dict[str, Any]]:
    out: dict[int, dict[str, Any]] = {}
    for chunk in _chunks(sorted(version_ids)):
        rows = connection.execute(
            select(
                column_versions.c.id,
                *(column_versions.c[db_name] for _, db_name in _FIELD_COLUMNS),
            ).where(keys_in(connection, column_versions.c.id, chunk))
        )
        for version_id, *values in rows:  # positional: one dict per changed version, ~23k at 1M
            out[version_id] = {
                "fields": dict(zip(_WIRE_NAMES, values, strict=True)),
                "tags": [],
                "attributes": [],
            }
        tags = connection.execute(
            select(
                column_tags.c.column_id,
                column_tags.c.tag_name,
                column_tags.c.tag_id,
                column_tags.c.tag_value,
            )
            .where(keys_in(connection, column_tags.c.column_id, chunk))
            .order_by(column_tags.c.column_id, column_tags.c.position)
        )
        for version_id, tag_name, tag_id, tag_value in tags:
            out[version_id]["tags"].append({"tagName": tag_name or tag_id or "", "tagValue": tag_value})
        attributes = connection.execute(
            select(
                column_attributes.c.column_id,
                column_attributes.c.attribute_name,
                column_attributes.c.attribute_original_name,
                column_attributes.c.attribute_id,
                column_attributes.c.rank,
                column_attributes.c.confidence,
            )
            .where(keys_in(connection, column_attributes.c.column_id, chunk))
            .order_by(column_attributes.c.column_id, column_attributes.c.position)
        )
        for version_id, name, original, attribute_id, rank, confidence in attributes:
            out[version_id]["attributes"].append(
                {"name": name or original or attribute_id or "", "rank": rank, "confidence": confidence}
            )
    return out


def _column_entry(cluster_id: str, fqn: str, version: dict[str, Any]) -> ColumnEntry:
    return ColumnEntry(
        cluster_id=cluster_id,
        column=fqn,
        fields=dict(version["fields"]),
        tags=sorted(version["tags"], key=_tag_key),
        attributes=sorted(version["attributes"], key=_attribute_key),
    )


def compare_columns(
    before: dict[str, Any], after: dict[str, Any], threshold: float
) -> dict[str, dict[str, Any]]:
    """The compared fields of two versions of one column that differ.

    ``before``/``after`` are ``{"fields": {...}, "tags": [{"tagName", "tagValue"}], "attributes":
    [{"name", "rank", "confidence"}]}``.
    """
    changes: dict[str, dict[str, Any]] = {}
    for name, _ in _FIELD_COLUMNS:
        if before["fields"][name] != after["fields"][name]:
            changes[name] = {"before": before["fields"][name], "after": after["fields"][name]}
    tags = compare_tags(before["tags"], after["tags"])
    if tags:
        changes["tags"] = tags
    changes.update(compare_attributes(before["attributes"], after["attributes"], threshold))
    return changes


def compare_tags(before: list[dict[str, Any]], after: list[dict[str, Any]]) -> dict[str, Any] | None:
    """Tags compared as (name, value) pairs; one pair removed and one added under the same name is
    a value change. ``None`` when the sets are equal (order and duplicates do not count)."""
    old = {(t["tagName"], t["tagValue"]) for t in before}
    new = {(t["tagName"], t["tagValue"]) for t in after}
    if old == new:
        return None
    gone, came = old - new, new - old
    gone_by_name: dict[str, list[Any]] = defaultdict(list)
    came_by_name: dict[str, list[Any]] = defaultdict(list)
    for name, value in gone:
        gone_by_name[name].append(value)
    for name, value in came:
        came_by_name[name].append(value)
    added: list[dict[str, Any]] = []
    removed: list[dict[str, Any]] = []
    changed: list[dict[str, Any]] = []
    for name in sorted(set(gone_by_name) | set(came_by_name)):
        g, c = gone_by_name.get(name, []), came_by_name.get(name, [])
        if len(g) == 1 and len(c) == 1:
            changed.append({"tagName": name, "before": g[0], "after": c[0]})
            continue
        removed.extend({"tagName": name, "tagValue": v} for v in sorted(g, key=_none_last))
        added.extend({"tagName": name, "tagValue": v} for v in sorted(c, key=_none_last))
    return {
        "before": [{"tagName": n, "tagValue": v} for n, v in sorted(old, key=_pair_key)],
        "after": [{"tagName": n, "tagValue": v} for n, v in sorted(new, key=_pair_key)],
        "added": added,
        "removed": removed,
        "changed": changed,
    }


def compare_attributes(
    before: list[dict[str, Any]], after: list[dict[str, Any]], threshold: float
) -> dict[str, dict[str, Any]]:
    """Attributes by name: ``attributes`` (names added/removed), ``rank`` and ``confidence`` changes
    of attributes present on both sides (confidence only beyond ``threshold``). Several attributes
    with one name are compared by their best (first-listed) entry."""
    old = _first_by_name(before)
    new = _first_by_name(after)
    changes: dict[str, dict[str, Any]] = {}
    if set(old) != set(new):
        changes["attributes"] = {
            "before": sorted(old),
            "after": sorted(new),
            "added": [new[name] for name in sorted(set(new) - set(old))],
            "removed": [old[name] for name in sorted(set(old) - set(new))],
        }
    rank_before, rank_after, conf_before, conf_after = {}, {}, {}, {}
    for name in sorted(set(old) & set(new)):
        if old[name]["rank"] != new[name]["rank"]:
            rank_before[name], rank_after[name] = old[name]["rank"], new[name]["rank"]
        if confidence_changed(old[name]["confidence"], new[name]["confidence"], threshold):
            conf_before[name], conf_after[name] = old[name]["confidence"], new[name]["confidence"]
    if rank_before:
        changes["rank"] = {"before": rank_before, "after": rank_after}
    if conf_before:
        changes["confidence"] = {"before": conf_before, "after": conf_after}
    return changes


def confidence_changed(before: float | None, after: float | None, threshold: float) -> bool:
    """True when a confidence appeared, vanished, or moved by strictly more than ``threshold``."""
    if before is None or after is None:
        return before is not after
    return round(abs(after - before), _DECIMALS) > threshold


def _first_by_name(attributes: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for attribute in attributes:
        out.setdefault(attribute["name"], attribute)
    return out


def _chunks(items: list[str]) -> Iterator[list[str]]:
    for start in range(0, len(items), CHUNK):
        yield items[start : start + CHUNK]


def _none_last(value: Any) -> tuple[bool, str]:
    return (value is None, "" if value is None else str(value))


def _pair_key(pair: tuple[str, Any]) -> tuple[str, tuple[bool, str]]:
    return (pair[0], _none_last(pair[1]))


def _tag_key(tag: dict[str, Any]) -> tuple[str, tuple[bool, str]]:
    return (tag["tagName"], _none_last(tag["tagValue"]))


def _attribute_key(attribute: dict[str, Any]) -> tuple[str, tuple[bool, str]]:
    return (attribute["name"], _none_last(attribute["rank"]))
