"""A tenant whose similar-columns endpoint ignores the cluster id parameter serves every cluster the
same columns. Found by a hostile-server probe: each cluster was stored holding all of them, and
check blamed every cluster for every column without a word. Two clusters served the very same first
page make the client ask for a cluster id that cannot exist; columns for it are recorded in the run
and said by the snapshot and the report (the run stays as served: a test double answering every
cluster alike must not fail every snapshot), with the setting that fixes it when one does."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import select

from auditor.bigid.client import CLUSTERS_PATH
from auditor.store.db import open_database
from auditor.store.schema import run_columns, runs

from .conftest import Loopback, Reply, Request

CLUSTERS = [{"id": "k1", "name": "One", "size": 3}, {"id": "k2", "name": "Two", "size": 2}]
COLUMNS = {
    "k1": [{"fullyQualifiedName": f"s.d.k1.c{i}", "columnName": f"c{i}"} for i in range(3)],
    "k2": [{"fullyQualifiedName": f"s.d.k2.c{i}", "columnName": f"c{i}"} for i in range(2)],
}
ALL = COLUMNS["k1"] + COLUMNS["k2"]


def tenant(reads: str | None, paths: list[dict[str, str]]):
    """Answers columns by the parameter ``reads`` (None: by none, every column for any cluster)."""

    def handler(request: Request) -> Reply:
        if request.path == CLUSTERS_PATH:
            return Reply(200, CLUSTERS if request.query.get("skip", "0") == "0" else [])
        paths.append(request.query)
        skip, limit = int(request.query.get("skip", 0)), int(request.query.get("limit", 1000))
        rows = ALL if reads is None or reads not in request.query else COLUMNS.get(request.query[reads], [])
        return Reply(200, {"results": rows[skip : skip + limit], "totalCount": len(rows)})

    return handler


def _stored(db: Path) -> tuple[str, dict[str, list[str]]]:
    engine = open_database(db)
    try:
        with engine.connect() as connection:
            status = connection.execute(select(runs.c.status)).scalar_one()
            found: dict[str, list[str]] = {}
            for cluster, fqn in connection.execute(select(run_columns.c.cluster_id, run_columns.c.fqn)):
                found.setdefault(cluster, []).append(fqn)
        return status, {cluster: sorted(fqns) for cluster, fqns in found.items()}
    finally:
        engine.dispose()


NOTE = (
    "note: GET /api/v1/data-catalog/column/cluster/similar seems to ignore the cluster id parameter "
    "'clusterId': clusters k1 and k2 were served the same columns, and so was a cluster id that cannot "
    "exist; every cluster may hold the columns of all of them, and findings may name the wrong cluster; "
)


def test_a_tenant_reading_cluster_id_is_said_with_the_setting_that_fixes_it(
    loopback: Loopback, tmp_path: Path, run_cli
):
    asked: list[dict[str, str]] = []
    loopback.reset(tenant("cluster_id", asked))
    env = {"BIGID_URL": loopback.url, "BIGID_TOKEN": "KEY-0123456789abcdef"}
    db = tmp_path / "a.db"
    result = run_cli("snapshot", "--db", str(db), "--workers", "1", "--processes", "0", env=env)
    assert result.exit_code == 0, result.output
    assert (
        NOTE
        + (
            'pass --cluster-id-param cluster_id (or set cluster_id_param = "cluster_id" in auditor.toml): '
            "the tenant reads that"
        )
        in result.stderr.splitlines()
    )
    nowhere = [q for q in asked if q.get("clusterId", "").startswith("auditor-no-such-cluster-")]
    assert len(nowhere) == 1 and nowhere[0]["limit"] == "1"
    runs_json = run_cli("runs", "--db", str(db), "--format", "json", env=env)
    assert '"cluster_param_ignored": {' in runs_json.stdout
    report = run_cli("report", "--db", str(db), "-o", str(tmp_path / "r.html"), env=env)
    assert report.exit_code == 0, report.output
    assert "seems to ignore the cluster id parameter" in (tmp_path / "r.html").read_text(encoding="utf-8")

    # as the note says: every cluster holds its own columns, and nothing is said
    expected = {c: sorted(r["fullyQualifiedName"] for r in rows) for c, rows in COLUMNS.items()}
    for db2, args in ((tmp_path / "b.db", ["--cluster-id-param", "cluster_id"]), (tmp_path / "c.db", [])):
        if not args:
            (tmp_path / "auditor.toml").write_text(
                '[auditor]\ncluster_id_param = "cluster_id"\n', encoding="utf-8"
            )
        fixed = run_cli("snapshot", "--db", str(db2), *args, env=env)
        assert fixed.exit_code == 0, fixed.output
        assert "cluster id parameter" not in fixed.stderr
        assert _stored(db2) == ("complete", expected)


def test_a_tenant_ignoring_every_spelling_is_said_to_be_undocumented(
    loopback: Loopback, tmp_path: Path, run_cli
):
    loopback.reset(tenant(None, []))
    env = {"BIGID_URL": loopback.url, "BIGID_TOKEN": "KEY-0123456789abcdef"}
    result = run_cli("snapshot", "--db", str(tmp_path / "a.db"), "--processes", "2", env=env)
    assert result.exit_code == 0, result.output
    assert [line for line in result.stderr.splitlines() if "cluster id parameter" in line] == [
        NOTE + "the tenant's similar-columns endpoint is not the documented one: report it to BigID support"
    ]


def test_two_clusters_sharing_their_only_column_cost_one_request_and_stay_complete(
    loopback: Loopback, tmp_path: Path, run_cli
):
    """A column may sit in two clusters: the same first page, but a cluster id that cannot exist
    gets none, so the parameter is read and the run goes on (asked once for the whole run)."""
    asked: list[dict[str, str]] = []
    shared = [{"fullyQualifiedName": "s.d.shared", "columnName": "shared"}]
    clusters = [{"id": f"k{i}", "name": f"C{i}", "size": 1} for i in range(4)]

    def handler(request: Request) -> Reply:
        if request.path == CLUSTERS_PATH:
            return Reply(200, clusters if request.query.get("skip", "0") == "0" else [])
        asked.append(request.query)
        if request.query["clusterId"].startswith("auditor-no-such-cluster-"):
            return Reply(404, {"message": "cluster not found"})
        rows = shared if request.query.get("skip", "0") == "0" else []
        return Reply(200, {"results": rows, "totalCount": 1})

    loopback.reset(handler)
    env = {"BIGID_URL": loopback.url, "BIGID_TOKEN": "KEY-0123456789abcdef"}
    result = run_cli("snapshot", "--db", str(tmp_path / "a.db"), env=env)
    assert result.exit_code == 0, result.output
    assert _stored(tmp_path / "a.db") == ("complete", {f"k{i}": ["s.d.shared"] for i in range(4)})
    assert sum(q["clusterId"].startswith("auditor-no-such-cluster-") for q in asked) == 1


@pytest.mark.parametrize(("status", "probe_rows"), [(403, None), (401, None), (500, None), (200, [None])])
def test_an_error_or_nulls_for_the_id_that_cannot_exist_mean_the_parameter_was_read(
    loopback: Loopback, tmp_path: Path, run_cli, status: int, probe_rows
):
    """A probe of this check: a 403 or 401 for the id that cannot exist failed the cluster whose page
    led to it, or stopped the snapshot; a null item counted as a column served for it."""
    shared = [{"fullyQualifiedName": f"s.d.shared.c{i}", "columnName": f"c{i}"} for i in range(2)]
    probes: list[str] = []

    def handler(request: Request) -> Reply:
        if request.path == CLUSTERS_PATH:
            listed = [{"id": "k1", "name": "One", "size": 2}, {"id": "k2", "name": "Two", "size": 2}]
            return Reply(200, listed if request.query.get("skip", "0") == "0" else [])
        if request.query["clusterId"].startswith("auditor-no-such-cluster-"):
            probes.append(request.query["clusterId"])
            if status != 200:
                return Reply(status, {"message": "Access denied"})
            return Reply(200, {"results": probe_rows, "totalCount": 1})
        skip = int(request.query.get("skip", 0))
        return Reply(200, {"results": shared[skip:], "totalCount": 2})

    loopback.reset(handler)
    env = {"BIGID_URL": loopback.url, "BIGID_TOKEN": "KEY-0123456789abcdef"}
    result = run_cli("snapshot", "--db", str(tmp_path / "a.db"), "--workers", "1", env=env)
    assert result.exit_code == 0, result.output
    assert "cluster id parameter" not in result.stderr
    if status != 401:  # (a 401 tries the other credential forms first)
        assert len(probes) == 1  # a 500 is not retried: any failure means the same (~7 s of backoff)
    fqns = sorted(c["fullyQualifiedName"] for c in shared)
    assert _stored(tmp_path / "a.db") == ("complete", {"k1": fqns, "k2": fqns})


def test_a_passing_failure_of_the_check_leaves_it_to_the_next_clusters_served_alike(
    loopback: Loopback, tmp_path: Path, run_cli
):
    """A review: asked once without retries, one 503 for the id that cannot exist turned the check
    off for the run, read as the parameter being read. A passing failure (rate limit, gateway,
    network) leaves the check to the next two clusters served alike, three times a run at most."""
    probes: list[str] = []
    clusters = [{"id": f"k{i}", "name": f"C{i}", "size": 2} for i in range(5)]
    rows = [{"fullyQualifiedName": f"s.d.all.c{i}", "columnName": f"c{i}"} for i in range(2)]

    def handler(request: Request) -> Reply:
        if request.path == CLUSTERS_PATH:
            return Reply(200, clusters if request.query.get("skip", "0") == "0" else [])
        if request.query["clusterId"].startswith("auditor-no-such-cluster-"):
            probes.append(request.query["clusterId"])
            if len(probes) == 1:
                return Reply(503, {"message": "Service Unavailable"})
        skip = int(request.query.get("skip", 0))
        return Reply(200, {"results": rows[skip:], "totalCount": 2})  # every cluster alike

    loopback.reset(handler)
    env = {"BIGID_URL": loopback.url, "BIGID_TOKEN": "KEY-0123456789abcdef"}
    result = run_cli("snapshot", "--db", str(tmp_path / "a.db"), "--workers", "1", env=env)
    assert result.exit_code == 0, result.output
    assert len(probes) == 2
    assert any(line.startswith(NOTE[:60]) for line in result.stderr.splitlines()), result.stderr
