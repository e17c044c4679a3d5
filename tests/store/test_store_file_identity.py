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


@pytest.mark.parametrize("how", ["moved over it", "deleted, then a backup restored"])
def test_the_write_ahead_log_of_a_file_gone_is_not_applied_to_the_file_put_there(
    tmp_path: Path, how: str
) -> None:
    # Found by a fault probe: `mv other.db audit.db` (or `rm audit.db` and a backup copied back)
    # during a snapshot left audit.db-wal and -shm beside the path, SQLite does not remove them
    # once the file has moved, and the next command (even `auditor runs`) replayed the old file's
    # pages into the file there now: "database disk image is malformed", for good.
    path = tmp_path / "audit.db"
    other = tmp_path / "other.db"
    engine = open_database(other)
    try:
        writer = SnapshotWriter(engine, source_url="https://other.example.net", cluster_filter=None)
        _feed(writer)
        writer.complete(RunTotals(clusters_announced=1, requests=2))
    finally:
        engine.dispose()
    engine = open_database(path)
    try:
        writer = SnapshotWriter(engine, source_url="https://bigid.example.net", cluster_filter=None)
        _feed(writer)
        writer.flush()
        for n in range(40):  # pages in the write-ahead log that the file put there does not have
            column = {**COLUMN, "fullyQualifiedName": f"hr.people.c{n}", "columnName": "x" * 2000}
            writer.add_columns("c1", [(parse_column(column), column)])
        writer.flush()
        assert Path(f"{path}-wal").exists()
        if how == "moved over it":
            other.replace(path)
        else:
            path.unlink()
            shutil.copy(other, path)
        with pytest.raises(StoreError) as raised:
            writer.complete(RunTotals(clusters_announced=1, requests=2))
        assert raised.value.hint.startswith(
            "nothing more is written to it; its write-ahead log (audit.db-shm, audit.db-wal) was removed, "
            "so that no command applies it to the file there now"
        )
        assert not Path(f"{path}-wal").exists() and not Path(f"{path}-shm").exists()
    finally:
        engine.dispose()
    check = open_database(path)
    try:
        with check.connect() as connection:
            assert connection.exec_driver_sql("PRAGMA integrity_check").scalar() == "ok"
        assert [(run.id, run.source_url) for run in list_runs(check)] == [(1, "https://other.example.net")]
    finally:
        check.dispose()
