"""The ground truth: determinism, shape, awkward values, governance triggers, drift, memory at scale."""

from __future__ import annotations

import re
import tracemalloc
from collections import Counter

import orjson
import pytest

from auditor.errors import ConfigError
from auditor.sandbox import Dataset, SandboxConfig
from auditor.sandbox import catalog as cat

TUTORIAL_CLUSTER_KEYS = {"id", "name", "size", "labels", "severity", "status", "createdAt"}
TUTORIAL_COLUMN_KEYS = {
    "fullyQualifiedName",
    "columnName",
    "businessAttribute",
    "tableName",
    "source",
    "isPrimary",
    "dataType",
    "attributes",
    "tags",
}


def dump(dataset: Dataset) -> bytes:
    return orjson.dumps({"clusters": list(dataset.clusters()), "columns": list(dataset.all_columns())})


def test_same_seed_and_epoch_give_identical_bytes():
    assert dump(Dataset(SandboxConfig(seed=7, epoch=2))) == dump(Dataset(SandboxConfig(seed=7, epoch=2)))


def test_seed_and_epoch_change_the_data():
    base = dump(Dataset(SandboxConfig(seed=1)))
    assert dump(Dataset(SandboxConfig(seed=2))) != base
    assert dump(Dataset(SandboxConfig(seed=1, epoch=1))) != base


def test_faults_and_transport_knobs_do_not_change_the_truth():
    plain = dump(Dataset(SandboxConfig()))
    noisy = SandboxConfig(
        fail_rate=0.5,
        throttle=0.3,
        max_page=7,
        repeat_rate=0.1,
        wrong_totals=1.0,
        envelope="status",
        auth="refresh",
        latency=0.1,
        gateway_rate=0.2,
        blank_rate=0.2,
    )
    assert dump(Dataset(noisy)) == plain


def test_counts_sizes_and_ids():
    dataset = Dataset(SandboxConfig(seed=1, clusters=50, columns=2000))
    clusters = list(dataset.clusters())
    assert len(clusters) == dataset.cluster_count() == 50
    assert dataset.column_count() == 2000
    assert sum(c["size"] for c in clusters) == 2000
    for cluster in clusters:
        assert re.fullmatch(r"[0-9a-f]{24}", cluster["id"])
        assert set(cluster) >= {"id", "name", "size"}
        assert len(list(dataset.columns(cluster["id"]))) == cluster["size"] >= 1
        assert dataset.cluster(cluster["id"]) == cluster
    assert len({c["id"] for c in clusters}) == 50
    # an id that is well formed but unknown maps to nothing
    assert dataset.slot_of("0" * 24) is None


def test_tutorial_field_names_and_types():
    dataset = Dataset(SandboxConfig())
    plain = [c for c in dataset.clusters() if set(c) == TUTORIAL_CLUSTER_KEYS and None not in c.values()]
    assert len(plain) > 30
    for cluster in plain:
        assert isinstance(cluster["size"], int)
        assert cluster["severity"] in {"Low", "Medium", "High", "Critical"}
        assert cluster["status"] in {"Active", "Archived"}
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", cluster["createdAt"])
    columns = [col for _cid, col in dataset.all_columns()]
    assert sum(1 for col in columns if set(col) == TUTORIAL_COLUMN_KEYS) > 1800
    attributes = [a for col in columns for a in col.get("attributes") or []]
    assert {a["rank"] for a in attributes} == {"High", "Medium", "Low"}
    assert all(0 < a["calc_confidence_level"] < 1 for a in attributes)
    assert all(
        set(a)
        == {
            "attribute_original_name",
            "attribute_name",
            "rank",
            "calc_confidence_level",
            "attribute_type",
            "attribute_id",
        }
        for a in attributes
    )
    assert {"SSN", "Email", "Phone", "Credit Card"} <= {a["attribute_name"] for a in attributes}
    tags = [t for col in columns for t in col.get("tags") or []]
    sensitivity = [t for t in tags if t["tagName"] == "sensitivity"]
    assert {t["tagValue"] for t in sensitivity} >= {"high", "High", "HIGH", "medium", "low", "Low"}
    assert {t["isMutuallyExclusive"] for t in sensitivity} == {"true", True}
    assert any(t["properties"]["hidden"] is True for t in tags)
    assert all(re.fullmatch(r"[0-9a-f-]{36}", t["tagId"]) for t in tags)
    # tag ids are per tag name, value ids per (name, value)
    assert len({t["tagId"] for t in sensitivity}) == 1
    assert len({t["valueId"] for t in sensitivity}) == 3


def test_fully_qualified_names_are_unique_and_structured():
    dataset = Dataset(SandboxConfig(clusters=120, columns=6000))
    names = [col["fullyQualifiedName"] for _cid, col in dataset.all_columns()]
    assert len(names) == len(set(names)) == 6000
    column = next(col for _cid, col in dataset.all_columns())
    assert column["fullyQualifiedName"].startswith(column["source"] + ".")
    assert column["fullyQualifiedName"].endswith("." + column["columnName"])


def test_many_kinds_of_sources():
    dataset = Dataset(SandboxConfig(clusters=200, columns=10_000))
    sources = {col["source"] for _cid, col in dataset.all_columns()}
    bases = {name for name in cat.SOURCES if any(s == name or s.startswith(name + "-") for s in sources)}
    families = {cat.SOURCES[name].family for name in bases}
    assert families == {"rdb", "dwh", "obj", "saas", "nosql"}
    assert {"pg-crm", "snowflake-dw", "s3-datalake", "salesforce"} <= bases


def test_column_name_variants_are_disjoint_across_themes():
    owners = Counter(v for theme in cat.THEMES for v in theme.variants)
    assert [name for name, n in owners.items() if n > 1] == []


def test_awkward_values_are_present():
    dataset = Dataset(SandboxConfig())
    columns = [col for _cid, col in dataset.all_columns()]
    text = orjson.dumps(columns).decode()
    for needle in (
        "<script>alert(1)</script>",
        '"><img src=x onerror=alert(1)>',
        "&amp;",
        "顧客",
        "📧",
        "עברית",
        "البريد",
        "données",
    ):
        assert needle in text, needle
    assert any(len(col["tableName"]) > 300 for col in columns)
    assert any("attributes" not in col for col in columns)
    assert any(col.get("tags", []) is None for col in columns)
    assert any(col["businessAttribute"] is None and col["dataType"] is None for col in columns)
    assert any("columnProfile" in col for col in columns)
    clusters = list(dataset.clusters())
    assert any("labels" not in c for c in clusters)
    assert any(c.get("labels", []) is None and c["createdAt"] is None for c in clusters)
    assert any(c["severity"] is None for c in clusters)
    assert any("x_review" in c for c in clusters)
    assert any("<script>" in c["name"] for c in clusters)


def test_governance_rules_have_something_to_find():
    dataset = Dataset(SandboxConfig(clusters=200, columns=20_000))
    clusters = {c["id"]: c for c in dataset.clusters()}
    high_without_confidential = archived_with_high = pii_low = 0
    same_name_many_sources = two_sensitivities = pii_pk = 0
    for cid, cluster in clusters.items():
        labels = cluster.get("labels") or []
        columns = list(dataset.columns(cid))
        high = any(
            t["tagName"] == "sensitivity" and t["tagValue"].lower() == "high"
            for col in columns
            for t in col.get("tags") or []
        )
        high_without_confidential += high and "Confidential" not in labels
        archived_with_high += high and cluster["status"] == "Archived"
        pii_low += "PII" in labels and cluster["severity"] == "Low"
        sources_by_name: dict[str, set[str]] = {}
        for col in columns:
            sources_by_name.setdefault(col["columnName"], set()).add(col["source"])
            values = {t["tagValue"].lower() for t in col.get("tags") or [] if t["tagName"] == "sensitivity"}
            two_sensitivities += len(values) > 1
            pii_pk += bool(col["isPrimary"] and col.get("attributes"))
        same_name_many_sources += any(len(s) > 1 for s in sources_by_name.values())
    assert high_without_confidential >= 10
    assert archived_with_high >= 3
    assert pii_low >= 3
    assert same_name_many_sources >= 50
    assert 20_000 * 0.005 < two_sensitivities < 20_000 * 0.03
    assert pii_pk >= 50


def _state(epoch: int, **knobs):
    dataset = Dataset(SandboxConfig(epoch=epoch, **knobs))
    clusters = {c["id"]: c for c in dataset.clusters()}
    columns = {(cid, col["fullyQualifiedName"]): col for cid, col in dataset.all_columns()}
    return clusters, columns


@pytest.mark.parametrize("knobs", [{}, {"seed": 5, "clusters": 300, "columns": 30_000}])
def test_drift_between_epochs_has_every_kind_of_change(knobs):
    a_clusters, a_columns = _state(0, **knobs)
    b_clusters, b_columns = _state(1, **knobs)
    added, removed = b_clusters.keys() - a_clusters.keys(), a_clusters.keys() - b_clusters.keys()
    kept = a_clusters.keys() & b_clusters.keys()
    relabelled = [
        cid
        for cid in kept
        if (a_clusters[cid].get("labels"), a_clusters[cid]["status"])
        != (b_clusters[cid].get("labels"), b_clusters[cid]["status"])
    ]
    new_cols, gone_cols = b_columns.keys() - a_columns.keys(), a_columns.keys() - b_columns.keys()
    moved = {f for _c, f in new_cols} & {f for _c, f in gone_cols}
    retagged = [
        k for k in a_columns.keys() & b_columns.keys() if a_columns[k]["tags"] != b_columns[k]["tags"]
    ]
    assert added and removed and relabelled and moved and retagged
    assert len(new_cols - {k for k in new_cols if k[0] in added}) > len(moved)  # plain additions too
    assert len(gone_cols - {k for k in gone_cols if k[0] in removed}) > len(moved)  # plain removals too
    # about 1% of records change (cluster removal takes its columns along)
    churn = len(new_cols) + len(gone_cols) + len(retagged)
    assert 0.002 * len(a_columns) < churn < 0.2 * len(a_columns)
    # a moved column keeps its content
    fqn = next(iter(moved))
    before = next(v for (c, f), v in a_columns.items() if f == fqn)
    after = next(v for (c, f), v in b_columns.items() if f == fqn)
    assert before == after
    # sizes stay exact after drift
    dataset = Dataset(SandboxConfig(epoch=1, **knobs))
    assert sum(c["size"] for c in b_clusters.values()) == len(b_columns) == dataset.column_count()


def test_drift_is_cumulative_and_ids_are_stable():
    a, _ = _state(0)
    c, _ = _state(3)
    assert len(a.keys() & c.keys()) >= 45
    assert all(a[k]["createdAt"] == c[k]["createdAt"] for k in a.keys() & c.keys())


def test_paging_positions_agree_with_the_full_listing():
    dataset = Dataset(SandboxConfig(epoch=2))
    for cid in list(dataset.cluster_ids())[:10]:
        full = list(dataset.columns(cid))
        assert [list(dataset.columns(cid, p, p + 3)) for p in range(0, len(full), 3)] == [
            full[p : p + 3] for p in range(0, len(full), 3)
        ]


def test_a_page_of_a_million_column_cluster_uses_little_memory():
    config = SandboxConfig(clusters=1, columns=1_000_000)
    tracemalloc.start()
    try:
        dataset = Dataset(config)
        (cluster,) = list(dataset.clusters())
        assert cluster["size"] == 1_000_000
        page = list(dataset.columns(cluster["id"], 990_000, 990_500))
        _current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(page) == 500
    assert peak < 5_000_000, peak  # a 1M-column listing would need ~700 MB


def test_many_clusters_at_scale_need_memory_per_cluster_only():
    tracemalloc.start()
    try:
        dataset = Dataset(SandboxConfig(clusters=20_000, columns=1_000_000, epoch=1))
        assert dataset.cluster_count() == 20_000
        total = dataset.column_count()
        _current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert 980_000 < total < 1_020_000
    assert peak < 40_000_000, peak


def test_bad_knobs_are_config_errors():
    with pytest.raises(ConfigError, match=r"columns .* must be at least clusters"):
        SandboxConfig(clusters=10, columns=5)
    with pytest.raises(ConfigError, match="fail_rate must be below 1"):
        SandboxConfig(fail_rate=1.0)
    with pytest.raises(ConfigError, match="auth must be one of bearer, raw, refresh"):
        SandboxConfig(auth="basic")
    with pytest.raises(ConfigError, match="envelope must be one of"):
        SandboxConfig(envelope="xml")
    with pytest.raises(ConfigError, match="slow_pages_above must be a positive integer or None, not 0"):
        SandboxConfig(slow_pages_above=0)


def test_serving_a_page_deep_in_a_million_column_cluster_uses_little_memory():
    from auditor.sandbox import SandboxApp
    from auditor.sandbox.server import SIMILAR_PATH

    app = SandboxApp(SandboxConfig(clusters=1, columns=1_000_000))
    cid = next(app.dataset.cluster_ids())
    tracemalloc.start()
    try:
        response = app.handle(
            "GET", f"{SIMILAR_PATH}?clusterId={cid}&limit=1000&skip=998500", "Bearer SAMPLE"
        )
        _current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    body = orjson.loads(response.body)
    assert response.status == 200 and body["totalCount"] == 1_000_000 and len(body["results"]) == 1000
    assert body["results"][0] == next(app.dataset.columns(cid, 998_500, 998_501))
    assert peak < 10_000_000, peak
