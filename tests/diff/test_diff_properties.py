"""Property tests: for random pairs of small catalogs, the SQL diff equals a plain Python diff.

The reference below is written from the documented semantics alone (it shares no code with
``auditor.diff.catalog``): it holds both catalogs in dicts, as a per-record tool would, and derives
the added, removed, changed and moved sets. Every example writes two more runs into one database,
so content-addressed versions are shared across many runs as they are in production.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from auditor.bigid.models import parse_cluster, parse_column
from auditor.diff import compute_diff

THRESHOLD = 0.05
FQNS = ("s1.t.a", "s1.t.b", "s2.t.a", "s2.u.c", "s3.v.d")
CLUSTER_IDS = ("c1", "c2", "c3", "c4")

tags = st.dictionaries(st.sampled_from(("sensitivity", "pii")), st.sampled_from(("low", "high", "HIGH")))
attributes = st.lists(
    st.tuples(
        st.sampled_from(("SSN", "Email")),
        st.sampled_from(("High", "Low", None)),
        st.sampled_from((0.5, 0.52, 0.55, 0.56, 0.9, None)),
    ),
    max_size=2,
    unique_by=lambda a: a[0],
)


@st.composite
def column_records(draw, fqn: str) -> dict[str, Any]:
    return {
        "fullyQualifiedName": fqn,
        "columnName": draw(st.sampled_from(("a", "A"))),
        "tableName": fqn.split(".")[1],
        "source": draw(st.sampled_from((fqn.split(".")[0], "other"))),
        "dataType": draw(st.sampled_from(("varchar", "int"))),
        "isPrimary": draw(st.booleans()),
        "businessAttribute": draw(st.sampled_from((None, "Email"))),
        "tags": [{"tagName": n, "tagValue": v} for n, v in draw(tags).items()],
        "attributes": [
            {"attribute_name": n, "rank": r, "calc_confidence_level": c} for n, r, c in draw(attributes)
        ],
    }


@st.composite
def catalogs(draw) -> list[tuple[dict[str, Any], list[dict[str, Any]]]]:
    out = []
    for cluster_id in draw(st.lists(st.sampled_from(CLUSTER_IDS), unique=True)):
        raw_cluster = {
            "id": cluster_id,
            "name": draw(st.sampled_from(("x", "y"))),
            "size": draw(st.integers(0, 2)),
            "labels": draw(st.lists(st.sampled_from(("PII", "Confidential", "Analytics")), unique=True)),
            "severity": draw(st.sampled_from(("High", "Low"))),
            "status": draw(st.sampled_from(("Active", "Archived"))),
        }
        fqns = draw(st.lists(st.sampled_from(FQNS), unique=True))
        out.append((raw_cluster, [draw(column_records(fqn)) for fqn in fqns]))
    return out


@st.composite
def tweaked(draw, record: dict[str, Any]) -> dict[str, Any]:
    """``record`` with one field changed the way catalogs drift (or left as it is)."""
    out = {
        **record,
        "tags": [dict(t) for t in record["tags"]],
        "attributes": [dict(a) for a in record["attributes"]],
    }
    what = draw(st.sampled_from(("nothing", "tag", "confidence", "rank", "dataType", "attribute")))
    if what == "tag":
        out["tags"] = [{"tagName": n, "tagValue": v} for n, v in draw(tags).items()]
    elif what in ("confidence", "rank") and out["attributes"]:
        key = "calc_confidence_level" if what == "confidence" else "rank"
        values = (0.5, 0.55, 0.56, 0.9, None) if what == "confidence" else ("High", "Low", None)
        out["attributes"][0][key] = draw(st.sampled_from(values))
    elif what == "dataType":
        out["dataType"] = "text"
    elif what == "attribute":
        out["attributes"] = [
            {"attribute_name": n, "rank": r, "calc_confidence_level": c} for n, r, c in draw(attributes)
        ]
    return out


@st.composite
def drifted(draw, before):
    """A later catalog: memberships kept, tweaked, moved to another cluster or dropped; some added."""
    clusters: dict[str, dict[str, Any]] = {}
    members: dict[tuple[str, str], dict[str, Any]] = {}
    for raw_cluster, records in before:
        labels = raw_cluster["labels"]
        if draw(st.integers(0, 3)) == 0:
            labels = draw(st.lists(st.sampled_from(("PII", "Confidential", "Analytics")), unique=True))
        clusters[raw_cluster["id"]] = {**raw_cluster, "labels": labels}
        for record in records:
            action = draw(st.sampled_from(("keep", "tweak", "move", "drop")))
            target = draw(st.sampled_from(CLUSTER_IDS)) if action == "move" else raw_cluster["id"]
            if action != "drop":
                new = draw(tweaked(record)) if action in ("tweak", "move") else record
                members.setdefault((target, record["fullyQualifiedName"]), new)
    for cid, fqn in draw(
        st.lists(st.tuples(st.sampled_from(CLUSTER_IDS), st.sampled_from(FQNS)), max_size=3)
    ):
        members.setdefault((cid, fqn), draw(column_records(fqn)))
    for cid, _ in members:
        clusters.setdefault(
            cid, {"id": cid, "name": "x", "size": 0, "labels": [], "severity": "Low", "status": "Active"}
        )
    return [
        (clusters[cid], [r for (c, _), r in sorted(members.items()) if c == cid]) for cid in sorted(clusters)
    ]


@st.composite
def catalog_pairs(draw):
    before = draw(catalogs())
    after = draw(st.one_of(catalogs(), drifted(before)))
    return before, after


# -- the reference ------------------------------------------------------------------------------


def _column_view(raw: dict[str, Any]) -> dict[str, Any]:
    col = parse_column(raw)
    attrs: dict[str, Any] = {}
    for a in col.attributes:
        attrs.setdefault(a.attribute_name or a.attribute_original_name or a.attribute_id or "", a)
    return {
        "columnName": col.columnName,
        "tableName": col.tableName,
        "source": col.source,
        "dataType": col.dataType,
        "isPrimary": col.isPrimary,
        "businessAttribute": col.businessAttribute,
        "tags": {(t.tagName or t.tagId or "", t.tagValue) for t in col.tags},
        "attrs": attrs,
    }


def _changed_fields(old: dict[str, Any], new: dict[str, Any]) -> set[str]:
    fields = {
        name
        for name in ("columnName", "tableName", "source", "dataType", "isPrimary", "businessAttribute")
        if old[name] != new[name]
    }
    if old["tags"] != new["tags"]:
        fields.add("tags")
    if set(old["attrs"]) != set(new["attrs"]):
        fields.add("attributes")
    for name in set(old["attrs"]) & set(new["attrs"]):
        a, b = old["attrs"][name], new["attrs"][name]
        if a.rank != b.rank:
            fields.add("rank")
        ca, cb = a.calc_confidence_level, b.calc_confidence_level
        if (ca is None) != (cb is None) or (ca is not None and round(abs(ca - cb), 9) > THRESHOLD):
            fields.add("confidence")
    return fields


def reference_diff(before, after) -> dict[str, Any]:
    clusters_a = {c["id"]: parse_cluster(c) for c, _ in before}
    clusters_b = {c["id"]: parse_cluster(c) for c, _ in after}
    cluster_changes = {}
    for cid in set(clusters_a) & set(clusters_b):
        a, b = clusters_a[cid], clusters_b[cid]
        fields = {
            name for name in ("name", "size", "severity", "status") if getattr(a, name) != getattr(b, name)
        }
        if set(a.labels) != set(b.labels):
            fields.add("labels")
        if fields:
            cluster_changes[cid] = fields
    cols_a = {(c["id"], r["fullyQualifiedName"]): _column_view(r) for c, rs in before for r in rs}
    cols_b = {(c["id"], r["fullyQualifiedName"]): _column_view(r) for c, rs in after for r in rs}
    changed = {}
    for key in set(cols_a) & set(cols_b):
        fields = _changed_fields(cols_a[key], cols_b[key])
        if fields:
            changed[key] = fields
    gone = sorted(set(cols_a) - set(cols_b))
    came = sorted(set(cols_b) - set(cols_a))
    moved, removed, added = set(), set(), set()
    for fqn in {f for _, f in gone} | {f for _, f in came}:
        left = sorted(c for c, f in gone if f == fqn)
        arrived = sorted(c for c, f in came if f == fqn)
        for x, y in zip(left, arrived, strict=False):
            moved.add((fqn, x, y))
            fields = _changed_fields(cols_a[(x, fqn)], cols_b[(y, fqn)])
            if fields:
                changed[(y, fqn)] = fields
        removed |= {(c, fqn) for c in left[len(arrived) :]}
        added |= {(c, fqn) for c in arrived[len(left) :]}
    return {
        "clusters_added": set(clusters_b) - set(clusters_a),
        "clusters_removed": set(clusters_a) - set(clusters_b),
        "clusters_changed": cluster_changes,
        "columns_added": added,
        "columns_removed": removed,
        "columns_changed": changed,
        "columns_moved": moved,
    }


def sql_diff_sets(data: dict[str, Any]) -> dict[str, Any]:
    return {
        "clusters_added": {c["cluster_id"] for c in data["clusters"]["added"]},
        "clusters_removed": {c["cluster_id"] for c in data["clusters"]["removed"]},
        "clusters_changed": {c["cluster_id"]: set(c["changes"]) for c in data["clusters"]["changed"]},
        "columns_added": {(c["cluster_id"], c["column"]) for c in data["columns"]["added"]},
        "columns_removed": {(c["cluster_id"], c["column"]) for c in data["columns"]["removed"]},
        "columns_changed": {
            (c["cluster_id"], c["column"]): set(c["changes"]) for c in data["columns"]["changed"]
        },
        "columns_moved": {
            (m["column"], m["from_cluster"], m["to_cluster"]) for m in data["columns"]["moved"]
        },
    }


PROPERTY_SETTINGS = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@PROPERTY_SETTINGS
@given(pair=catalog_pairs())
def test_sql_diff_equals_the_python_reference(engine, write, pair):
    before, after = pair
    first, second = write(engine, before), write(engine, after)
    data = compute_diff(engine, first, second, findings=False, confidence_threshold=THRESHOLD).to_json()
    assert sql_diff_sets(data) == reference_diff(before, after)
    # Lists hold no duplicates and the summary counts them.
    assert data["summary"]["columns"] == {k: len(v) for k, v in data["columns"].items()}
    assert data["summary"]["clusters"] == {k: len(v) for k, v in data["clusters"].items()}


@PROPERTY_SETTINGS
@given(catalog=catalogs())
def test_a_catalog_diffed_with_itself_is_empty(engine, write, catalog):
    first, second = write(engine, catalog), write(engine, catalog)
    assert compute_diff(engine, first, second, findings=False).empty
    assert compute_diff(engine, first, first, findings=False).empty


@pytest.mark.postgres
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(pair=catalog_pairs())
def test_postgres_diff_equals_the_python_reference(pg_engine, write, pair):
    before, after = pair
    first, second = write(pg_engine, before), write(pg_engine, after)
    data = compute_diff(pg_engine, first, second, findings=False).to_json()
    assert sql_diff_sets(data) == reference_diff(before, after)


def without(catalog, cluster_ids):
    return [(raw, records) for raw, records in catalog if raw["id"] not in cluster_ids]


@PROPERTY_SETTINGS
@given(pair=catalog_pairs(), data=st.data())
def test_clusters_not_fetched_in_full_are_left_out_and_named(engine, pair, data):
    """Marking random clusters of either run failed or cut short leaves exactly them out: the diff
    is the reference diff of the two catalogs without them, and ``not_compared`` names them."""
    from .conftest import write_catalog, write_partial

    before, after = pair
    partial_side = data.draw(st.sampled_from(("older", "newer")))
    ids = sorted(c["id"] for c, _ in (before if partial_side == "older" else after))
    failed = set(data.draw(st.lists(st.sampled_from(ids), unique=True))) if ids else set()
    fetching = set(data.draw(st.lists(st.sampled_from(ids), unique=True))) - failed if ids else set()
    if partial_side == "older":
        first = write_partial(engine, before, failed=failed, fetching=fetching)
        second = write_catalog(engine, after)
    else:
        first = write_catalog(engine, before)
        second = write_partial(engine, after, failed=failed, fetching=fetching)
    result = compute_diff(engine, first, second, findings=False, allow_incomplete=True)
    data_json = result.to_json()
    left_out = failed | fetching
    assert sql_diff_sets(data_json) == reference_diff(without(before, left_out), without(after, left_out))
    assert [e["cluster_id"] for e in data_json["not_compared"]] == sorted(left_out)
    assert data_json["summary"]["not_compared"] == len(left_out)
    for entry in data_json["not_compared"]:
        statuses = (entry["from"], entry["to"])
        expected = "failed" if entry["cluster_id"] in failed else "fetching"
        assert (statuses[0] if partial_side == "older" else statuses[1]) == expected
