"""Edges of the store that a wrong implementation would pass unnoticed elsewhere.

Each test pins a behaviour the other tests did not hold: changing the store by hand (a chunk one
short, "latest" by clock instead of id, a boundary moved from >= to >, a failed cluster's counts
kept) left them all passing.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import func, select

from auditor.bigid.models import parse_cluster, parse_column
from auditor.store.db import open_database
from auditor.store.retention import RunRow, decide
from auditor.store.runs import (
    UNKNOWN,
    clusters_view,
    get_run,
    previous_complete_run,
    resolve_run,
    run_liveness,
)
from auditor.store.schema import column_versions, run_columns, runs
from auditor.store.writer import HASH_CHUNK, ClusterStats, RunTotals, SnapshotWriter
from tests.store.conftest import make_catalog, write_catalog

NOW = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)


def _engine(tmp_path: Path):
    return open_database(tmp_path / "edges.db")


def _count(engine, table) -> int:
    with engine.connect() as connection:
        return connection.execute(select(func.count()).select_from(table)).scalar_one()


def test_an_unchanged_catalog_larger_than_one_lookup_chunk_is_stored_once(tmp_path):
    engine = _engine(tmp_path)
    columns = HASH_CHUNK + 100  # the stored versions are looked up HASH_CHUNK at a time
    write_catalog(engine, make_catalog(2, columns))
    write_catalog(engine, make_catalog(2, columns))
    assert (_count(engine, column_versions), _count(engine, run_columns)) == (2 * columns, 4 * columns)
    engine.dispose()


def test_latest_and_previous_follow_the_run_id_not_the_clock(tmp_path):
    engine = _engine(tmp_path)
    first = write_catalog(engine, make_catalog(1, 2))
    second = write_catalog(engine, make_catalog(1, 2))
    failed = write_catalog(engine, make_catalog(1, 2), complete=False)
    with engine.begin() as connection:  # run 1 written on a runner whose clock is an hour ahead
        connection.execute(
            runs.update().where(runs.c.id == first).values(started_at=datetime.now(UTC) + timedelta(hours=1))
        )
    assert resolve_run(engine, "latest").id == second
    assert previous_complete_run(engine, failed).id == second
    assert resolve_run(engine, "latest", allow_incomplete=True).id == failed  # of any status, when asked
    engine.dispose()


def test_older_than_lets_go_only_runs_older_than_the_days_given():
    rows = [RunRow(1, "complete", NOW - timedelta(days=30)), RunRow(2, "complete", NOW - timedelta(days=1))]
    assert decide(rows, keep=None, older_than=30, now=NOW).deleted_runs == ()
    older = [RunRow(1, "complete", NOW - timedelta(days=30, seconds=1)), rows[1]]
    assert decide(older, keep=None, older_than=30, now=NOW).deleted_runs == (1,)


def test_abandoned_after_counts_only_runs_older_than_the_hours_given():
    started = NOW - timedelta(hours=24)
    assert run_liveness("running", started, {}, abandoned_after=24, now=NOW).state == UNKNOWN
    later = run_liveness("running", started, {}, abandoned_after=24, now=NOW + timedelta(seconds=1))
    assert later.state == "abandoned"


def test_a_cluster_that_failed_counts_none_of_the_columns_it_fetched(tmp_path):
    engine = _engine(tmp_path)
    catalog = make_catalog(2, 4)
    writer = SnapshotWriter(engine, source_url="http://127.0.0.1:1")
    for position, (raw, columns) in enumerate(catalog):
        writer.add_cluster(parse_cluster(raw), raw, position)
        writer.add_columns(raw["id"], [(parse_column(record), record) for record in columns])
    kept, failed = catalog[0][0]["id"], catalog[1][0]["id"]
    writer.finish_cluster(kept, ClusterStats(total_announced=4, columns_fetched=4, pages=1))
    writer.finish_cluster(
        failed,
        ClusterStats(total_announced=4, columns_fetched=3, duplicate_rows=1, pages=1, error="HTTP 500"),
    )
    writer.fail("a cluster failed", RunTotals(clusters_announced=2))
    assert get_run(engine, writer.run_id).columns_stored == 4
    with engine.connect() as connection:
        shown = {
            row.cluster_id: (row.fetch_status, row.columns_fetched, row.duplicate_rows)
            for row in connection.execute(clusters_view(writer.run_id))
        }
    assert shown[failed] == ("failed", 0, 0)
    engine.dispose()
