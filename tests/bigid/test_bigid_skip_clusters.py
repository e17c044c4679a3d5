"""``--skip-cluster ID`` / ``skip_clusters``: a cluster known to fail (or that the key may not read)
is left out of the run, as if the tenant had not listed it, so that scheduled runs can be complete
again; the ids asked for are part of the run's scope, so a comparison with a run taken otherwise
says so. Real HTTP on loopback."""

from __future__ import annotations

import datetime as dt
import json
import logging

import pytest
from sqlalchemy import select

from auditor.bigid.client import CLUSTERS_PATH, COLUMNS_PATH
from auditor.render.context import fetch_notes
from auditor.snapshot import take_snapshot
from auditor.store.db import open_database
from auditor.store.runs import RunInfo, list_runs, scope_note
from auditor.store.schema import run_clusters

from .conftest import Reply, Request
from .test_bigid_snapshot_unit import make_tenant, stored

SIZES = {f"k{i}": 30 for i in range(8)}


@pytest.fixture
def engine(tmp_path):
    return open_database(tmp_path / "skip.db")


def test_a_skipped_broken_cluster_leaves_a_complete_run_without_it(loopback, make_client, engine, caplog):
    """k5 answers 404 (the run would fail); skipped, it is neither asked for nor stored, and the
    run is complete. An id the tenant does not list is recorded and logged, never an error."""
    handler, _, columns = make_tenant(SIZES, broken="k5")
    loopback.reset(handler)
    with caplog.at_level(logging.WARNING, logger="auditor.snapshot"):
        run = take_snapshot(
            engine,
            make_client(loopback.url, page_size=10),
            workers=2,
            processes=0,
            skip_clusters=[" k5 ", "gone", "k5", ""],
        )
    assert run.status == "complete"
    assert (run.clusters_announced, run.clusters_stored, run.columns_stored) == (7, 7, 210)
    assert run.details["skip_clusters"] == ["gone", "k5"]  # the scope asked for, sorted, once each
    assert run.details["skipped_clusters"] == ["k5"] and run.details["skipped_cluster_count"] == 1
    assert run.details["skip_clusters_not_listed"] == ["gone"]
    assert "cluster_total_mismatch" not in run.details
    # the report's evidence header says so first, before the fetch's other facts
    assert fetch_notes(run.details)[0] == "1 cluster(s) left out of the run (--skip-cluster): 'k5'"
    assert [r.getMessage() for r in caplog.records] == [
        "the tenant did not list these clusters to skip: 'gone'"
    ]
    assert not [r for r in loopback.seen if r.path == COLUMNS_PATH and r.query["clusterId"] == "k5"]
    cols, by_cluster = stored(engine, run.id)
    assert set(by_cluster) == {f"k{i}" for i in range(8) if i != 5}
    assert cols == {
        (cid, raw["fullyQualifiedName"]): raw for cid, rows in columns.items() if cid != "k5" for raw in rows
    }


def test_a_skipped_cluster_whose_record_does_not_fit_is_not_failed(loopback, make_client, engine):
    """A listed record that does not fit the models fails its cluster, unless that cluster is skipped."""
    handler, _, _ = make_tenant({"k0": 3, "k1": 3})

    def tenant(request: Request) -> Reply:
        if request.path == CLUSTERS_PATH:
            rows = [{"id": "k0", "size": 3}, {"id": "k1", "size": 3, "labels": {"not": "a list"}}]
            return Reply(200, rows[int(request.query["skip"]) :])
        return handler(request)

    loopback.reset(tenant)
    run = take_snapshot(engine, make_client(loopback.url), workers=1, processes=0, skip_clusters=["k1"])
    assert (run.status, run.clusters_stored, run.columns_stored) == ("complete", 1, 3)
    with engine.connect() as connection:
        assert connection.execute(select(run_clusters.c.cluster_id)).scalars().all() == ["k0"]


def _run(run_id: int, skip: list[str] | None, cluster_filter: str | None = None) -> RunInfo:
    now = dt.datetime(2026, 12, 1, tzinfo=dt.UTC)
    return RunInfo(
        id=run_id,
        started_at=now,
        finished_at=now,
        status="complete",
        source_url="https://bigid.example.net",
        cluster_filter=cluster_filter,
        auth_scheme="raw",
        tool_version="0",
        clusters_announced=1,
        clusters_stored=1,
        columns_announced=1,
        columns_stored=1,
        requests=1,
        retries=0,
        error=None,
        details={"skip_clusters": skip} if skip is not None else {},
    )


def test_the_scope_note_compares_the_clusters_left_out():
    assert scope_note(_run(1, ["a", "b"]), _run(2, ["a", "b"])) is None
    assert scope_note(_run(1, None), _run(2, [])) is None  # older runs recorded nothing: none left out
    assert scope_note(_run(1, None), _run(2, ["k5"])) == (
        "run 1 was taken leaving out no cluster and run 2 leaving out the clusters 'k5': what only one "
        "of them covers reads as new or resolved, added or removed"
    )
    many = [f"c{i}" for i in range(8)]
    assert scope_note(_run(3, many, "size=20"), _run(4, ["c0"])) == (
        "run 3 was taken with the cluster filter 'size=20' leaving out the clusters 'c0', 'c1', 'c2', "
        "'c3', 'c4' and 3 more and run 4 with no cluster filter leaving out the clusters 'c0': what "
        "only one of them covers reads as new or resolved, added or removed"
    )


def test_cli_skip_cluster_flag_and_setting(loopback, run_cli, tmp_path):
    handler, _, _ = make_tenant(SIZES, broken="k5")
    loopback.reset(handler)
    env = {"BIGID_URL": loopback.url, "BIGID_TOKEN": "SAMPLE"}
    db = str(tmp_path / "cli.db")
    flagged = run_cli("snapshot", "--db", db, "--skip-cluster", "k5", "--skip-cluster", "k7", env=env)
    assert (flagged.exit_code, flagged.stdout) == (0, "1\n"), flagged.stderr
    assert "note: 2 cluster(s) left out of the run (--skip-cluster): 'k5', 'k7'\n" in flagged.stderr
    (tmp_path / "auditor.toml").write_text('[auditor]\nskip_clusters = ["k5"]\n', encoding="utf-8")
    from_file = run_cli("snapshot", "--db", db, env=env)
    assert (
        from_file.exit_code == 0
        and "note: 1 cluster(s) left out of the run (--skip-cluster): 'k5'\n" in from_file.stderr
    )
    (run1, run2) = list_runs(open_database(db))
    assert (run1.clusters_stored, run2.clusters_stored) == (6, 7)
    listing = run_cli("runs", "--db", db).stdout.splitlines()
    assert listing[1].endswith(f"{loopback.url}  skipping 'k5', 'k7'")
    assert listing[2].endswith(f"{loopback.url}  skipping 'k5'")
    checked = run_cli("check", "--db", db, "--format", "json")  # run 2 against run 1
    assert checked.exit_code == 0
    assert json.loads(checked.stdout)["baseline_note"] == (
        "run 1 was taken leaving out the clusters 'k5', 'k7' and run 2 leaving out the clusters 'k5': "
        "what only one of them covers reads as new or resolved, added or removed"
    )
    job = run_cli("run", "--db", db, "--report", "r.html", env=env)  # the setting holds for run too
    assert (
        job.exit_code == 0 and "note: 1 cluster(s) left out of the run (--skip-cluster): 'k5'\n" in job.stderr
    )
    (tmp_path / "auditor.toml").write_text("[auditor]\nskip_clusters = 5\n", encoding="utf-8")
    bad = run_cli("snapshot", "--db", db, env=env)
    assert bad.exit_code == 2
    assert bad.stderr.splitlines()[0].startswith("error: ") and "skip_clusters" in bad.stderr.splitlines()[0]


def test_a_diff_across_a_skip_change_leaves_the_cluster_out(loopback, make_client, engine):
    """Run 1 holds k5, run 2 was asked to leave it out (and run 3 holds it again): the diff does
    not read k5's columns as removed (or added) nor its findings as resolved (or new); it names k5
    as not compared, and says nothing of a different scope. A check against the other run still
    does (its new/existing statuses are not diffed per cluster)."""
    from auditor.diff import compute_diff
    from auditor.engine import check_run, load_ruleset

    handler, _, _ = make_tenant(SIZES)
    loopback.reset(handler)
    for skip in ([], ["k5"], []):
        take_snapshot(
            engine, make_client(loopback.url, page_size=10), workers=2, processes=0, skip_clusters=skip
        )
    ruleset = load_ruleset(None)
    forward = compute_diff(engine, 1, 2, ruleset=ruleset).to_json()
    assert forward["not_compared"] == [{"cluster_id": "k5", "from": "complete", "to": "skipped"}]
    assert forward["summary"]["clusters"] == {"added": 0, "removed": 0, "changed": 0}
    assert forward["summary"]["columns"]["removed"] == 0
    assert not forward["findings"]["resolved"] and forward["scope_note"] is None
    back = compute_diff(engine, 2, 3, ruleset=ruleset)
    assert [entry.to_json() for entry in back.not_compared] == [
        {"cluster_id": "k5", "from": "skipped", "to": "complete"}
    ]
    assert back.not_compared_note() == "1 cluster was not compared: left out of run 2 by --skip-cluster (k5)"
    assert not back.catalog.columns_added and not back.findings["new"]
    checked = check_run(engine, 3, ruleset, baseline="2")
    assert checked.baseline_note() == (
        "run 2 was taken leaving out the clusters 'k5' and run 3 leaving out no cluster: what only one "
        "of them covers reads as new or resolved, added or removed"
    )
