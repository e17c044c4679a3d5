"""A SQLite file deleted or replaced while a run is written stops the run (exit 3), not 'complete'."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from auditor.bigid.models import parse_cluster, parse_column
from auditor.errors import StoreError
from auditor.store.db import open_database
from auditor.store.runs import list_runs
from auditor.store.writer import ClusterStats, RunTotals, SnapshotWriter

CLUSTER = {"id": "c1", "name": "HR", "labels": ["PII"]}
COLUMN = {"fullyQualifiedName": "hr.people.ssn", "columnName": "ssn", "source": "hr"}


def _feed(writer: SnapshotWriter) -> None:
    writer.add_cluster(parse_cluster(CLUSTER), CLUSTER, 0)
    writer.add_columns("c1", [(parse_column(COLUMN), COLUMN)])
    writer.finish_cluster("c1", ClusterStats(total_announced=1, columns_fetched=1, pages=1))


@pytest.mark.parametrize("how", ["deleted (or can no longer be reached)", "replaced by another file"])
def test_a_database_file_gone_from_under_a_snapshot_fails_it(tmp_path: Path, how: str) -> None:
    # Found by a probe: `rm audit.db*` (or a restore copied over it) during a snapshot, and the
    # snapshot still ended "complete", exit 0, the run written into a file nobody could open
    # again, or its write-ahead log applied to the file put in its place.
    path = tmp_path / "audit.db"
    other = tmp_path / "other.db"
    open_database(other).dispose()
    engine = open_database(path)
    try:
        writer = SnapshotWriter(engine, source_url="https://bigid.example.net", cluster_filter=None)
        _feed(writer)
        writer.flush()  # the first rows are written while the file is still there
        for side in ("", "-wal", "-shm"):
            Path(f"{path}{side}").unlink(missing_ok=True)
        if how.startswith("replaced"):
            shutil.copy(other, path)
        with pytest.raises(StoreError) as raised:
            writer.complete(RunTotals(clusters_announced=1, requests=2))
        assert raised.value.message == f"the database file {path} was {how} while run 1 was written"
        assert raised.value.hint.startswith("nothing more is written to it")
    finally:
        engine.dispose()
    if how.startswith("replaced"):
        check = open_database(path)
        try:
            assert list_runs(check) == []  # nothing of run 1 went into the file put there
        finally:
            check.dispose()


def test_a_database_file_left_alone_completes_as_before(tmp_path: Path) -> None:
    engine = open_database(tmp_path / "audit.db")
    try:
        writer = SnapshotWriter(engine, source_url="https://bigid.example.net", cluster_filter=None)
        _feed(writer)
        writer.complete(RunTotals(clusters_announced=1, requests=2))
        assert [(run.id, run.status) for run in list_runs(engine)] == [(1, "complete")]
    finally:
        engine.dispose()


def test_a_database_folder_replaced_by_a_file_is_a_store_error_not_an_internal_one(tmp_path: Path) -> None:
    # a review: only "not found" was caught; a folder replaced by a file (ENOTDIR), a stale NFS
    # handle or a folder made unreadable escaped as internal errors
    folder = tmp_path / "d"
    folder.mkdir()
    engine = open_database(folder / "audit.db")
    try:
        writer = SnapshotWriter(engine, source_url="https://bigid.example.net", cluster_filter=None)
        _feed(writer)
        shutil.move(folder, tmp_path / "moved")
        folder.write_text("not a folder")
        with pytest.raises(StoreError, match="was deleted \\(or can no longer be reached\\) while run 1"):
            writer.complete(RunTotals(clusters_announced=1, requests=2))
    finally:
        engine.dispose()
