"""The store: migrations, SQLite settings, content sharing across runs, run states, crash safety."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from sqlalchemy import func, inspect, select, text

from auditor.errors import ConfigError, RunNotUsableError, StoreError
from auditor.store import db as store_db
from auditor.store.runs import count_run_rows, list_runs, previous_complete_run, resolve_run
from auditor.store.schema import column_tags, column_versions, metadata, run_columns, runs

from .conftest import make_catalog, schema_drift, snapshot_content, write_catalog, write_legacy_catalog


def test_new_database_is_created_at_head_and_matches_models(tmp_path):
    engine = store_db.open_database(tmp_path / "a.db")
    assert store_db.current_revision(engine) == store_db.head_revision()
    with engine.connect() as connection:
        assert schema_drift(connection) == []
    assert set(store_db.table_names(engine)) == set(metadata.tables) | {"alembic_version"}


def test_sqlite_runs_in_wal_with_busy_timeout_foreign_keys_and_memory_mapped_reads(tmp_path):
    from auditor.engine.evaluate import evaluation_connection

    engine = store_db.open_database(tmp_path / "a.db")
    with engine.connect() as connection:
        assert connection.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert connection.execute(text("PRAGMA foreign_keys")).scalar() == 1
        assert connection.execute(text("PRAGMA busy_timeout")).scalar() == store_db.SQLITE_BUSY_TIMEOUT_MS
        # no memory map for readers in general: a report's or a diff's pages counted as its memory
        assert connection.execute(text("PRAGMA mmap_size")).scalar() == 0
    with evaluation_connection(engine) as connection:
        # memory-mapped reads for rules (the figure SQLite reports is capped by how it was compiled)
        assert connection.execute(text("PRAGMA mmap_size")).scalar() > 0
    with engine.connect() as connection:  # the same pooled connection, given back without its map
        assert connection.execute(text("PRAGMA mmap_size")).scalar() == 0
    with evaluation_connection(engine, keep_map=True):  # a worker process's: its next rule reuses it
        pass
    with engine.connect() as connection:
        assert connection.execute(text("PRAGMA mmap_size")).scalar() > 0
    engine.dispose()


def test_first_revision_with_data_upgrades_to_head_with_nothing_lost(tmp_path, caplog):
    url = store_db.database_url(tmp_path / "old.db")
    engine = store_db.create_db_engine(url)
    store_db.upgrade(engine, "0001")
    assert store_db.current_revision(engine) == "0001"
    run_id = write_legacy_catalog(engine, make_catalog(3, 5))
    with engine.connect() as connection:
        before = snapshot_content(connection)
        assert len(before["run_columns"]) == 15 and len(before["column_tags"]) == 15
    engine.dispose()

    upgraded = store_db.open_database(tmp_path / "old.db")
    assert store_db.current_revision(upgraded) == store_db.head_revision()
    assert f"from schema revision 0001 to {store_db.head_revision()}" in caplog.text
    # one way: said (found by an upgrade probe: 'auditor runs' upgraded and nothing said so)
    assert caplog.text.rstrip().endswith("older versions of cluster-auditor cannot open it afterwards")
    caplog.clear()
    store_db.open_database(tmp_path / "old.db").dispose()  # at head: nothing to say
    store_db.open_database(tmp_path / "new.db").dispose()  # a new database is created silently
    assert caplog.text == ""
    with upgraded.connect() as connection:
        assert snapshot_content(connection) == before
        assert schema_drift(connection) == []
        # an existing version keeps its rowid as its id
        assert (
            connection.execute(text("SELECT count(*) FROM column_versions WHERE id = rowid")).scalar() == 15
        )
    assert count_run_rows(upgraded, run_id) == (3, 15)
    # the upgraded database takes new runs that share the migrated versions
    write_catalog(upgraded, make_catalog(3, 5, variant=1))
    with upgraded.connect() as connection:
        assert connection.execute(text("SELECT count(*) FROM column_versions")).scalar() == 16
        assert connection.execute(text("PRAGMA foreign_key_check")).all() == []


def test_a_first_day_database_upgrades_to_exactly_the_new_schema(tmp_path, caplog):
    """Found by an upgrade probe: 0001 and 0002 were amended after databases were made with them
    (the index ix_findings_fingerprint_run; cluster_labels WITHOUT ROWID on SQLite), and such a
    database, stamped 0002, upgraded to head without either. It is made here as it was: revision
    0002, then the index dropped and cluster_labels rebuilt with a rowid."""
    url = store_db.database_url(tmp_path / "old.db")
    engine = store_db.create_db_engine(url)
    store_db.upgrade(engine, "0002")
    with engine.begin() as connection:
        connection.exec_driver_sql("DROP INDEX ix_findings_fingerprint_run")
        connection.exec_driver_sql("ALTER TABLE cluster_labels RENAME TO cluster_labels_old")
        connection.exec_driver_sql(
            "CREATE TABLE cluster_labels (cluster_hash VARCHAR(32) NOT NULL "
            "REFERENCES cluster_versions (hash) ON DELETE CASCADE, position INTEGER NOT NULL, "
            "label TEXT NOT NULL, PRIMARY KEY (cluster_hash, position))"
        )
        connection.exec_driver_sql("DROP TABLE cluster_labels_old")
    write_legacy_catalog(engine, make_catalog(3, 5))
    labels_query = text("SELECT cluster_hash, position, label FROM cluster_labels ORDER BY 1, 2")
    with engine.connect() as connection:
        before = snapshot_content(connection)
        labels = connection.execute(labels_query).all()
        assert labels
    engine.dispose()

    upgraded = store_db.open_database(tmp_path / "old.db")
    assert store_db.current_revision(upgraded) == store_db.head_revision()
    with upgraded.connect() as connection:
        assert snapshot_content(connection) == before
        assert connection.execute(labels_query).all() == labels
        assert schema_drift(connection) == []
        created = connection.exec_driver_sql(
            "SELECT sql FROM sqlite_master WHERE name = 'cluster_labels'"
        ).scalar()
        assert "WITHOUT ROWID" in created
        assert connection.execute(text("PRAGMA foreign_key_check")).all() == []
    # a database already in shape is left as it is
    fresh = store_db.open_database(tmp_path / "new.db")
    with fresh.connect() as connection:
        assert schema_drift(connection) == []
    fresh.dispose()
    upgraded.dispose()


def test_integer_version_keys_migrate_down_and_up_again_with_nothing_lost(tmp_path):
    engine = store_db.open_database(tmp_path / "a.db")
    write_catalog(engine, make_catalog(2, 4))
    write_catalog(engine, make_catalog(2, 4, variant=1))
    with engine.connect() as connection:
        at_head = snapshot_content(connection)
    from alembic import command

    with engine.begin() as connection:
        command.downgrade(store_db._alembic_config(connection), "0002")
    assert store_db.current_revision(engine) == "0002"
    with engine.connect() as connection:
        assert snapshot_content(connection) == at_head
        assert "column_hash" in {c["name"] for c in inspect(connection).get_columns("column_tags")}
    store_db.upgrade(engine)
    with engine.connect() as connection:
        assert snapshot_content(connection) == at_head
        assert schema_drift(connection) == []
        assert connection.execute(text("PRAGMA foreign_key_check")).all() == []


def test_database_from_a_newer_version_is_refused(tmp_path, caplog):
    engine = store_db.open_database(tmp_path / "a.db")
    with engine.begin() as connection:
        connection.execute(text("UPDATE alembic_version SET version_num = '9999'"))
    engine.dispose()
    with pytest.raises(StoreError, match="written by a newer cluster-auditor"):
        store_db.open_database(tmp_path / "a.db")
    # ... without first announcing "upgrading ... from schema revision 9999 to 0003"
    assert not [r for r in caplog.records if "upgrading" in r.getMessage()]


def test_another_applications_sqlite_file_is_left_untouched(tmp_path, run_cli):
    """A mistyped --db naming another application's database: refused, not given our tables."""
    import sqlite3

    other = tmp_path / "crm.db"
    with sqlite3.connect(other) as connection:
        connection.executescript("CREATE TABLE people (id INTEGER); CREATE TABLE orders (id INTEGER);")
    before = other.read_bytes()
    with pytest.raises(StoreError) as caught:
        store_db.open_database(other)
    assert caught.value.exit_code == 3
    assert caught.value.message == (
        f"the database sqlite:///{other} belongs to another application (tables: orders, people); "
        "cluster-auditor adds its tables only to a new or empty database"
    )
    assert caught.value.hint == "check --db / AUDITOR_DB, or point it at a new file"
    for args in (("runs",), ("check",), ("run",), ("db", "upgrade")):
        result = run_cli(*args, "--db", str(other))
        assert result.exit_code == 3, (args, result.output)
        assert result.stderr.startswith(f"error: the database sqlite:///{other} belongs to another")
    assert other.read_bytes() == before
    empty = tmp_path / "empty.db"
    sqlite3.connect(empty).close()  # an empty file is a new database
    assert "runs" in store_db.table_names(store_db.open_database(empty))


def test_a_table_dropped_by_hand_is_named_not_met_as_an_internal_error(tmp_path, run_cli):
    """db upgrade said 'already at schema revision' and check failed with an internal error."""
    db = str(tmp_path / "a.db")
    engine = store_db.open_database(db)
    write_catalog(engine, make_catalog(1, 2))
    with engine.begin() as connection:
        connection.execute(text("DROP TABLE findings"))
    engine.dispose()
    message = (
        f"error: the database sqlite:///{db} lacks the table findings of its schema (schema revision "
        f"{store_db.head_revision()}): it was changed outside cluster-auditor\n"
        "hint: restore it from a backup, or start a new database (--db)\n"
    )
    for args in (("db", "upgrade"), ("check",), ("runs",)):
        result = run_cli(*args, "--db", db)
        assert (result.exit_code, result.stderr) == (3, message), args


def test_tables_named_like_ours_in_a_server_database_are_refused(fresh_postgres):
    from sqlalchemy import create_engine

    other = create_engine(fresh_postgres)
    with other.begin() as connection:
        connection.execute(text("CREATE TABLE invoices (id integer)"))  # another app's: no clash
    other.dispose()
    assert "runs" in store_db.table_names(store_db.open_database(fresh_postgres))
    with create_engine(fresh_postgres).begin() as connection:
        for table in reversed(metadata.sorted_tables):
            connection.execute(text(f"DROP TABLE {table.name}"))
        connection.execute(text("DROP TABLE alembic_version"))
        connection.execute(text("CREATE TABLE runs (id integer)"))
    with pytest.raises(StoreError) as caught:
        store_db.open_database(fresh_postgres)
    assert caught.value.message.endswith(
        "already has tables named runs that cluster-auditor did not create (it has no cluster-auditor "
        "schema revision)"
    )
    assert caught.value.hint.startswith("give cluster-auditor a database of its own, or a schema of its own")


def test_unchanged_records_are_stored_once_across_runs(tmp_path):
    engine = store_db.open_database(tmp_path / "a.db")
    first = write_catalog(engine, make_catalog(3, 4))
    second = write_catalog(engine, make_catalog(3, 4))
    third = write_catalog(engine, make_catalog(3, 4, variant=1))  # one column's tag changed
    with engine.connect() as connection:
        versions = connection.execute(select(func.count()).select_from(column_versions)).scalar()
        members = connection.execute(select(func.count()).select_from(run_columns)).scalar()
        tags = connection.execute(select(func.count()).select_from(column_tags)).scalar()
    assert versions == 12 + 1  # 12 shared columns plus the one changed version
    assert tags == 13
    assert members == 36
    assert [r.id for r in list_runs(engine)] == [first, second, third]


def test_unknown_fields_are_kept_raw(tmp_path):
    engine = store_db.open_database(tmp_path / "a.db")
    write_catalog(engine, make_catalog(1, 1))
    with engine.connect() as connection:
        raw = connection.execute(select(column_versions.c.raw)).scalar_one()
    assert raw["unknownColumnField"] == "kept"
    assert raw["tags"][0]["isMutuallyExclusive"] == "true"  # exactly as received


def test_failed_and_running_runs_are_never_used_unless_asked(tmp_path):
    engine = store_db.open_database(tmp_path / "a.db")
    good = write_catalog(engine, make_catalog(1, 2))
    bad = write_catalog(engine, make_catalog(1, 2), complete=False)
    assert resolve_run(engine, "latest").id == good
    with pytest.raises(RunNotUsableError, match=f"run {bad} is failed, not complete: the test stopped it"):
        resolve_run(engine, bad)
    assert resolve_run(engine, bad, allow_incomplete=True).id == bad
    assert previous_complete_run(engine, bad + 1).id == good
    with pytest.raises(RunNotUsableError, match="run 99 does not exist"):
        resolve_run(engine, 99)


def test_latest_says_when_a_newer_run_failed(tmp_path, run_cli, caplog):
    # A CI job whose snapshot step failed went on to check, report and pass the gate on the last
    # complete run, days old, without a word.
    db = tmp_path / "a.db"
    engine = store_db.open_database(db)
    good = write_catalog(engine, make_catalog(1, 2))
    write_catalog(engine, make_catalog(1, 2), complete=False)
    bad = write_catalog(engine, make_catalog(1, 2), complete=False)
    engine.dispose()
    result = run_cli("check", "--db", str(db), "--format", "json")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["run"] == good
    warning = (
        f"run {bad}, newer than run {good}, failed (the test stopped it): 'latest' is run {good}, "
        "the newest complete run"
    )
    assert [r.getMessage() for r in caplog.records if r.levelname == "WARNING"] == [warning]
    caplog.clear()
    assert run_cli("check", "--db", str(db), "--run", str(good), "--format", "json").exit_code == 0
    assert not [r for r in caplog.records if "newer than" in r.getMessage()]  # asked for by id


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_a_run_whose_record_is_damaged_is_listed_but_never_used(kind, tmp_path, request, run_cli):
    """A run's details edited into something that is not a JSON object: every command failed with an
    internal error (even listing the runs); now the run is listed as damaged and refused by name."""
    target = str(tmp_path / "a.db") if kind == "sqlite" else request.getfixturevalue("fresh_postgres")
    engine = store_db.open_database(target)
    first = write_catalog(engine, make_catalog(1, 2))
    second = write_catalog(engine, make_catalog(1, 2))
    cases = {
        "{broken": "its details are not valid JSON: ",
        "[1, 2]": "its details are a JSON list, not an object",
    }
    if kind == "postgresql":  # its json type refuses text that is not JSON
        del cases["{broken"]
    for damage, why in cases.items():
        with engine.begin() as connection:
            connection.execute(
                runs.update().where(runs.c.id == first).values(details=text(":d")), {"d": damage}
            )
        listed = {run.id: run.damaged for run in list_runs(engine)}
        assert listed[second] is None
        assert listed[first].startswith(why)
        for ref in (first, "latest"):  # latest: run 2, whose baseline is the damaged run 1
            with pytest.raises(RunNotUsableError) as caught:
                resolve_run(engine, ref) if ref != "latest" else previous_complete_run(engine, second)
            assert (
                caught.value.message
                == f"run {first}'s record is damaged ({listed[first]}), so it is not used"
            )
            assert caught.value.hint.startswith("restore the database from a backup, or leave this run aside")
    assert resolve_run(engine, second).id == second
    shown = run_cli("runs", "--db", target)
    assert shown.exit_code == 0
    line = shown.stdout.splitlines()[1]
    assert line.endswith("RECORD DAMAGED: its details are a JSON list, not an object")
    assert "RECORD DAMAGED" not in shown.stdout.splitlines()[2]
    data = json.loads(run_cli("runs", "--db", target, "--format", "json").stdout)["runs"]
    assert [run.get("damaged") for run in data] == ["its details are a JSON list, not an object", None]
    assert "damaged" not in data[1]
    check = run_cli("check", "--db", target)
    assert check.exit_code == 3
    assert check.stderr.startswith(f"error: run {first}'s record is damaged")
    assert run_cli("check", "--db", target, "--baseline", "none").exit_code == 0
    # a damaged record of a run still running: the prune reads its writer as unknown (it failed)
    third = write_catalog(engine, make_catalog(1, 2), complete=False)
    with engine.begin() as connection:
        connection.execute(
            runs.update().where(runs.c.id == third).values(status="running", details=text(":d")),
            {"d": max(cases)},  # '{broken' where the database takes it, else '[1, 2]'
        )
    pruned = run_cli("db", "prune", "--keep", "1", "--dry-run", "--format", "json", "--db", target)
    assert pruned.exit_code == 0, pruned.stderr
    assert json.loads(pruned.stdout)["kept_runs"] == [second, third]


@pytest.mark.parametrize(
    ("column", "value", "why"),
    [
        ("started_at", "garbage", "its start time is not a time: 'garbage'"),
        ("finished_at", 5, "its end time is not a time: '5'"),
        ("status", "weird", "its status 'weird' is not one this tool writes"),
    ],
)
def test_a_run_whose_time_or_status_is_damaged_is_listed_but_never_used(
    tmp_path, run_cli, column, value, why
):
    """Found by a probe of the library: a start time that is not a time (SQLite keeps any value in
    any column) raised ValueError out of SQLAlchemy's row processing: list_runs, resolve_run and
    plan_prune failed, and `auditor runs` said "internal error"; an unknown status was listed as it
    was."""
    from auditor.store.retention import plan_prune

    db = str(tmp_path / "a.db")
    engine = store_db.open_database(db)
    first = write_catalog(engine, make_catalog(1, 2))
    second = write_catalog(engine, make_catalog(1, 2))
    with engine.begin() as connection:
        connection.execute(runs.update().where(runs.c.id == first).values({column: text(":v")}), {"v": value})
    assert [(run.id, run.damaged) for run in list_runs(engine)] == [(first, why), (second, None)]
    with pytest.raises(RunNotUsableError) as caught:
        resolve_run(engine, first, allow_incomplete=True)
    assert caught.value.message == f"run {first}'s record is damaged ({why}), so it is not used"
    shown = run_cli("runs", "--db", db)
    assert shown.exit_code == 0, shown.stderr
    assert shown.stdout.splitlines()[1].endswith(f"RECORD DAMAGED: {why}")
    data = json.loads(run_cli("runs", "--db", db, "--format", "json").stdout)["runs"]
    assert [run.get("damaged") for run in data] == [why, None]
    assert data[0][column] == (None if column != "status" else "weird")
    check = run_cli("check", "--db", db, "--run", str(first))
    assert (check.exit_code, check.stderr.splitlines()[0]) == (
        3,
        f"error: run {first}'s record is damaged ({why}), so it is not used",
    )
    # the damaged run is the baseline of the newest, unless its status is no longer "complete"
    assert run_cli("check", "--db", db).exit_code == (3 if column != "status" else 0)
    report = run_cli("report", "--db", db, "--against", "none", "-o", str(tmp_path / "r.html"))
    assert report.exit_code == 0, report.stderr  # (the damaged run left out of the trend)
    plan = plan_prune(engine, older_than=30)  # a time that is not one does not keep the run
    assert plan.deleted_runs == ((first,) if column == "started_at" else ())


def test_any_other_damaged_json_value_is_a_store_error_not_an_internal_one(tmp_path, run_cli):
    db = str(tmp_path / "a.db")
    engine = store_db.open_database(db)
    write_catalog(engine, make_catalog(2, 3))
    assert run_cli("check", "--db", db).exit_code == 0  # stores the evaluation's findings
    with engine.begin() as connection:
        connection.execute(text("UPDATE findings SET columns = '[broken'"))
    result = run_cli("check", "--db", db)
    assert result.exit_code == 3
    assert result.stderr == (
        "error: a value stored as JSON in the database is damaged (unexpected character, expected a JSON "
        "value: line 1 column 2 (char 1))\n"
        "hint: the database was changed outside cluster-auditor, or is damaged: restore it from a backup\n"
    )


@pytest.fixture
def read_only_folder(tmp_path):
    """A folder on a read-only file system (a read-only bind mount: needs root, as in CI)."""
    source, mounted = tmp_path / "rw", tmp_path / "ro"
    source.mkdir()
    mounted.mkdir()
    (source / "keep.txt").write_text("x")
    if os.geteuid() != 0 or subprocess.run(["mount", "--bind", str(source), str(mounted)]).returncode:
        pytest.skip("a read-only bind mount needs root")
    try:
        if subprocess.run(["mount", "-o", "remount,ro,bind", str(mounted)]).returncode:
            pytest.skip("this machine refuses read-only bind mounts")
        yield source, mounted
    finally:
        subprocess.run(["umount", str(mounted)], check=True)


def test_a_database_on_a_read_only_file_system_is_said_to_be_so(read_only_folder, run_cli):
    source, mounted = read_only_folder
    engine = store_db.open_database(source / "a.db")
    write_catalog(engine, make_catalog(1, 2))
    engine.dispose()
    why = (
        f"{mounted} is on a read-only file system (SQLite writes the file and a journal beside it, even to "
        "read it)"
    )
    hint = (
        "hint: copy the database to a folder you can write to and point --db at the copy, or mount it "
        "read-write\n"
    )
    for args, doing in (
        (("runs", "--db", str(mounted / "a.db")), "open"),
        (("run", "--db", str(mounted / "new.db")), "open"),
        (("db", "upgrade", "--db", str(mounted / "new.db")), "migrate"),
    ):
        result = run_cli(*args)
        assert result.exit_code == 3, args
        database = args[-1]
        # an existing file is refused before SQLite opens it; a new one when SQLite cannot create it
        said = why if database.endswith("a.db") else f"unable to open database file: {why}"
        assert result.stderr == f"error: could not {doing} the database sqlite:///{database}: {said}\n{hint}"
    assert sorted(p.name for p in mounted.iterdir()) == ["a.db", "keep.txt"]


def test_a_value_the_database_cannot_bind_fails_the_run_not_the_writer(tmp_path):
    """An integer beyond 64 bits made SQLite raise OverflowError: it escaped as an internal error,
    and ``fail`` (flushing again) raised it too, leaving the run ``running``."""
    from auditor.bigid.models import Cluster
    from auditor.store.writer import SnapshotWriter

    engine = store_db.open_database(tmp_path / "a.db")
    writer = SnapshotWriter(engine, source_url="http://127.0.0.1:1")
    raw = {"id": "k1", "size": 10**30}
    writer.add_cluster(Cluster.model_construct(id="k1", size=10**30, labels=[]), raw, 0)
    with pytest.raises(StoreError) as caught:
        writer.flush()
    assert caught.value.message == (
        f"could not write run {writer.run_id}: "
        "OverflowError: Python int too large to convert to SQLite INTEGER"
    )
    writer.fail("the flush failed")
    (run,) = list_runs(engine)
    assert run.status == "failed" and run.error == "the flush failed"


def test_a_run_whose_last_flush_failed_records_only_what_it_holds(tmp_path, monkeypatch):
    """A full disk failed the last flush: the failed run said 100 clusters and 10,000 columns
    stored while the database held none of them (the counts moved before the write)."""
    from auditor.bigid.models import parse_cluster, parse_column
    from auditor.store.writer import ClusterStats, SnapshotWriter

    from .conftest import make_catalog

    engine = store_db.open_database(tmp_path / "a.db")
    first, second = make_catalog(2, 3)
    writer = SnapshotWriter(engine, source_url="http://127.0.0.1:1")
    for position, (cluster, columns) in enumerate((first, second)):
        writer.add_cluster(parse_cluster(cluster), cluster, position)
        writer.add_columns(cluster["id"], [(parse_column(raw), raw) for raw in columns])
        writer.finish_cluster(cluster["id"], ClusterStats(total_announced=3, columns_fetched=3, pages=1))
        if position == 0:
            writer.flush()  # the first cluster is in the database
    full = store_db.StoreError("could not write run 1: database or disk is full")

    def disk_full(_connection):
        raise full

    monkeypatch.setattr(writer, "_write", disk_full)
    with pytest.raises(store_db.StoreError):
        writer.flush()
    writer.fail("could not write run 1: database or disk is full")  # its flush fails again
    (run,) = list_runs(engine)
    assert (run.status, run.clusters_stored, run.columns_stored) == ("failed", 1, 3)
    assert count_run_rows(engine, run.id) == (1, 3)  # the first cluster and its columns


def test_no_complete_run_says_how_to_make_one(tmp_path):
    engine = store_db.open_database(tmp_path / "a.db")
    with pytest.raises(RunNotUsableError) as info:
        resolve_run(engine, "latest")
    assert info.value.hint and "auditor snapshot" in info.value.hint


def test_process_killed_mid_run_leaves_a_database_that_opens_with_the_run_not_complete(tmp_path):
    path = tmp_path / "killed.db"
    script = textwrap.dedent(
        f"""
        import os, signal, sys
        sys.path.insert(0, {str(os.path.dirname(__file__))!r})
        from conftest import make_catalog
        from auditor.bigid.models import parse_cluster, parse_column
        from auditor.store.db import open_database
        from auditor.store.writer import SnapshotWriter
        engine = open_database({str(path)!r})
        writer = SnapshotWriter(engine, source_url="http://x", batch_rows=5)
        for position, (cluster, columns) in enumerate(make_catalog(4, 10)):
            writer.add_cluster(parse_cluster(cluster), cluster, position)
            writer.add_columns(cluster["id"], [(parse_column(c), c) for c in columns])
            if position == 2:
                print("flushed", flush=True)
                os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert result.returncode == -signal.SIGKILL, result.stderr
    assert "flushed" in result.stdout
    engine = store_db.open_database(path)
    (run,) = list_runs(engine)
    assert run.status == "running"
    assert count_run_rows(engine, run.id)[1] > 0  # batches were written
    with pytest.raises(RunNotUsableError):
        resolve_run(engine, "latest")


def test_run_record_has_counts_and_no_credentials(tmp_path):
    engine = store_db.open_database(tmp_path / "a.db")
    run_id = write_catalog(engine, make_catalog(2, 3), source_url="https://bigid.example.net")
    with engine.connect() as connection:
        row = connection.execute(select(runs).where(runs.c.id == run_id)).one()._mapping
    assert row["status"] == "complete"
    assert (row["clusters_announced"], row["clusters_stored"]) == (2, 2)
    assert (row["columns_announced"], row["columns_stored"]) == (6, 6)
    assert row["auth_scheme"] == "bearer"
    assert row["finished_at"] is not None and row["tool_version"]
    payload = json.dumps(list_runs(engine)[0].to_json())
    assert '"clusters": 2' in payload and '"columns": 6' in payload


def test_database_url_forms(tmp_path, monkeypatch):
    assert store_db.database_url(tmp_path / "x.db") == f"sqlite:///{tmp_path / 'x.db'}"
    # A '?' or '%' in a file name opened another file ('weird' for 'weird?name.db').
    odd = tmp_path / "weird?name%20x.db"
    store_db.open_database(odd).dispose()
    assert odd.is_file() and sorted(p.name for p in tmp_path.iterdir() if p.suffix == ".db") == [odd.name]
    assert store_db.database_url("postgresql://u:pw@h/db").startswith("postgresql+psycopg://u:pw@h/db")
    assert "pw" not in store_db.display_url("postgresql+psycopg://u:pw@h/db")
    with pytest.raises(StoreError, match="does not exist"):
        store_db.open_database(tmp_path / "missing" / "x.db")
    # A password given as a query parameter was echoed in errors; one with a raw '@' in part.
    assert store_db.display_url("postgresql+psycopg://u@h/db?password=Secret1&sslmode=require") == (
        "postgresql+psycopg://u@h/db?password=***&sslmode=require"
    )
    with pytest.raises(ConfigError) as at_sign:
        store_db.database_url("postgresql://u:Sec@ret1@127.0.0.1/x")
    assert at_sign.value.exit_code == 2 and "ret1" not in at_sign.value.message + at_sign.value.hint
    assert store_db.display_url("postgresql://u:Sec@ret1@127.0.0.1/x") == "postgresql://u:***@127.0.0.1/x"
    from auditor import secrets

    store_db.database_url("postgresql://u:Hunter2pw@h/db?sslpassword=KeyPass99")
    assert secrets.scrub("driver said: password Hunter2pw / KeyPass99 refused") == (
        "driver said: password *** / *** refused"
    )
    secrets.forget_all()
    for broken in ("postgresql://u:p@[::1:5432/x", "~nosuchuser-auditor/x.db"):
        with pytest.raises(ConfigError) as unusable:  # was an internal error (exit 3)
            store_db.database_url(broken)
        assert unusable.value.exit_code == 2
    # A file that is not a database: said so, not as a bare DatabaseError with the reason as hint.
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"this is not SQLite" * 100)
    with pytest.raises(StoreError) as broken:
        store_db.open_database(junk)
    assert broken.value.exit_code == 3
    assert broken.value.message == (
        f"could not open the database sqlite:///{junk}: file is not a database (SQLite)"
    )
    assert broken.value.hint.startswith("check --db / AUDITOR_DB: it names a file that is not an auditor")
    # A missing driver of another database was answered with the PostgreSQL install line.
    with pytest.raises(ConfigError) as no_driver:
        store_db.open_database("mysql://u@h/x")
    assert no_driver.value.message == "the database driver for mysql://u@h/x is not installed (MySQLdb)"
    assert no_driver.value.hint.startswith("install the driver that provides the module 'MySQLdb'")
    # psycopg2 named in the URL: the [postgres] extra (psycopg 3) would not have helped
    import importlib.util

    if importlib.util.find_spec("psycopg2") is None:  # (the project installs psycopg 3 only)
        with pytest.raises(ConfigError) as no_psycopg2:
            store_db.open_database("postgresql+psycopg2://u@h/x")
        assert no_psycopg2.value.hint == (
            "the [postgres] extra installs psycopg 3: use postgresql+psycopg:// (or postgresql://), "
            "or install psycopg2 yourself"
        )
    # psycopg missing: the README's install line, not a package name PyPI may hold for someone else
    with monkeypatch.context() as patch:
        patch.setitem(sys.modules, "psycopg", None)  # (import psycopg: ModuleNotFoundError)
        with pytest.raises(ConfigError) as no_psycopg:
            store_db.open_database("postgresql://u@h/x")
    assert no_psycopg.value.hint == (
        "for PostgreSQL, install the project with its [postgres] extra, which brings psycopg 3 "
        "(as the README shows: pip install '.[postgres]' in the project's folder)"
    )
    # An unknown kind of database is the user's configuration (exit 2), not an internal error.
    with pytest.raises(ConfigError) as caught:
        store_db.open_database("mysql+nodriver://u:pw@h/x")
    assert caught.value.exit_code == 2
    assert caught.value.message == (
        "--db: mysql+nodriver://u:***@h/x names a kind of database SQLAlchemy does not know "
        "('mysql+nodriver')"
    )


@pytest.mark.parametrize(
    "url, expected",
    [
        ("sqlite:////data/a.db", "/data/a.db"),
        ("sqlite:///a.db", "a.db"),
        ("sqlite:///file:a.db?mode=ro&uri=true", "a.db"),
        ("sqlite:///file:/data/my%20a.db?mode=ro&uri=true", "/data/my a.db"),
        ("sqlite:///file:///data/a.db?uri=true", "/data/a.db"),
        ("sqlite:///file://localhost/data/a.db?uri=true", "/data/a.db"),
        ("sqlite:///file:a.db?uri=false", "file:a.db"),  # not a URI: a file named so
        ("sqlite:///file:a.db", "file:a.db"),
        ("sqlite:///a.db?uri=true", "a.db"),  # SQLite takes a name without file: as a plain name
        ("sqlite:///file:a.db?mode=memory&uri=true", None),
        ("sqlite:///file::memory:?cache=shared&uri=true", None),
        ("sqlite:///:memory:", None),
        ("sqlite://", None),
        ("postgresql+psycopg://u@h/a.db", None),
    ],
)
def test_the_file_a_sqlite_url_opens(url, expected):
    assert store_db.sqlite_file(url) == expected


@pytest.mark.parametrize(
    "url, message, hint",
    [
        # an internal error (ValueError from the driver's options)
        ("sqlite:///x.db?uri=maybe", "String is not true/false: 'maybe'", "check the options after '?'"),
        ("sqlite:///x.db?timeout=abc", "could not convert string to float: 'abc'", "check the options"),
        # 'runs' said "no runs yet" (exit 0) of a URL no SQLite file can be opened by
        ("sqlite://user@host/x.db", "Invalid SQLite URL: sqlite://user@host/x.db", "a SQLite URL is"),
    ],
)
def test_a_sqlite_url_the_driver_refuses_is_a_usage_error(url, message, hint, run_cli):
    with pytest.raises(ConfigError) as caught:
        store_db.database_url(url)
    assert (caught.value.exit_code, caught.value.message) == (2, f"--db {url}: {message}")
    assert caught.value.hint.startswith(hint)
    listed = run_cli("runs", "--db", url)
    assert (listed.exit_code, listed.stderr.splitlines()[0]) == (2, f"error: --db {url}: {message}")


def test_sqlite_s_own_uri_form_names_the_same_file_for_every_command(tmp_path, run_cli):
    # Found by a path probe: `runs` and `check` looked for a file named 'file:x.db', so they said
    # there was no database (`runs`: "no runs yet", exit 0) while `run` used x.db
    engine = store_db.open_database(tmp_path / "x.db")
    run_id = write_catalog(engine, make_catalog(2, 3))
    engine.dispose()
    uri = "sqlite:///file:x.db?uri=true"
    listed = run_cli("runs", "--db", uri, "--format", "json")
    assert listed.exit_code == 0, listed.output
    assert [run["id"] for run in json.loads(listed.stdout)["runs"]] == [run_id]
    checked = run_cli("check", "--db", uri, "--format", "json")
    assert checked.exit_code == 0, checked.output
    assert json.loads(checked.stdout)["run"] == run_id
    assert not (tmp_path / "file:x.db").exists()
    # the file the URL opens is an input: an output over it is refused, as one over --db x.db is
    refused = run_cli("report", "--db", uri, "-o", "x.db")
    assert refused.exit_code == 2 and "x.db" in refused.output
    assert store_db.holds_a_store(uri) and not store_db.holds_a_store("sqlite:///file:y.db?uri=true")


def test_a_check_that_cannot_be_recorded_names_the_run_not_an_internal_id(tmp_path, run_cli):
    # "could not record the check of evaluation 1" named an id no command shows or takes
    engine = store_db.open_database(tmp_path / "x.db")
    write_catalog(engine, make_catalog(1, 2))
    run_id = write_catalog(engine, make_catalog(2, 3))
    engine.dispose()
    assert run_cli("check", "--db", "x.db").exit_code == 0  # evaluation 1, of run 2
    read_only = run_cli("check", "--db", "sqlite:///file:x.db?mode=ro&uri=true")
    assert read_only.exit_code == 3
    assert read_only.stderr.splitlines()[0] == (
        f"error: could not record the check of run {run_id}: attempt to write a readonly database"
    )


def test_two_writers_at_once_share_versions_and_number_them_consistently(tmp_path):
    """Two snapshots into one SQLite file at the same time: ids are taken under the write lock."""
    import threading

    from auditor.bigid.models import parse_cluster, parse_column
    from auditor.store.runs import columns_view
    from auditor.store.writer import ClusterStats, RunTotals, SnapshotWriter

    engine = store_db.open_database(tmp_path / "a.db")
    catalogs = [make_catalog(200, 5), make_catalog(200, 5, variant=1)]  # 999 columns in common
    start = threading.Barrier(2)
    run_ids: list[int] = []
    errors: list[BaseException] = []

    def snapshot(catalog) -> None:
        try:
            writer = SnapshotWriter(engine, source_url="test://concurrent", batch_rows=5)
            run_ids.append(writer.run_id)
            start.wait()
            for position, (cluster, columns) in enumerate(catalog):
                writer.add_cluster(parse_cluster(cluster), cluster, position)
                writer.add_columns(cluster["id"], [(parse_column(raw), raw) for raw in columns])
                writer.finish_cluster(cluster["id"], ClusterStats(columns_fetched=len(columns), pages=1))
            writer.complete(RunTotals(clusters_announced=len(catalog)))
        except Exception as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=snapshot, args=(catalog,)) for catalog in catalogs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert [run.status for run in list_runs(engine)] == ["complete", "complete"]
    with engine.connect() as connection:
        assert connection.execute(text("SELECT count(*) FROM column_versions")).scalar() == 1001
        assert connection.execute(text("SELECT count(DISTINCT hash) FROM column_versions")).scalar() == 1001
        assert connection.execute(text("PRAGMA foreign_key_check")).all() == []
        for run_id in run_ids:
            rows = connection.execute(columns_view(run_id)).all()
            assert len(rows) == 1000 and len({row.column_id for row in rows}) == 1000


def test_an_upgrade_that_fails_halfway_leaves_the_database_as_it_was(tmp_path):
    url = store_db.database_url(tmp_path / "old.db")
    engine = store_db.create_db_engine(url)
    store_db.upgrade(engine, "0002")
    write_legacy_catalog(engine, make_catalog(2, 3))
    with engine.begin() as connection:
        before = snapshot_content(connection)
        # 0003 renames the column tables, then drops this index: make that step fail
        connection.execute(text("DROP INDEX ix_run_columns_run_fqn"))
    with pytest.raises(StoreError, match="could not migrate"):
        store_db.upgrade(engine)
    assert store_db.current_revision(engine) == "0002"
    with engine.connect() as connection:
        assert snapshot_content(connection) == before  # the renames were rolled back too
        assert not [name for name in inspect(connection).get_table_names() if name.startswith("_old_")]
    with engine.begin() as connection:
        connection.execute(text("CREATE INDEX ix_run_columns_run_fqn ON run_columns (run_id, fqn)"))
    store_db.upgrade(engine)  # and the next attempt goes through
    assert store_db.current_revision(engine) == store_db.head_revision()
    with engine.connect() as connection:
        assert snapshot_content(connection) == before


def test_two_commands_upgrading_one_database_at_once_both_succeed(tmp_path):
    # Parallel CI steps after a tool upgrade: the second failed at once with "database is locked"
    # (its deferred transaction read, then could not write) instead of waiting for the first.
    import threading

    path = tmp_path / "old.db"
    old = store_db.create_db_engine(store_db.database_url(path))
    store_db.upgrade(old, "0002")
    write_legacy_catalog(old, make_catalog(300, 10))  # 0003 then takes a moment to rebuild
    old.dispose()
    start = threading.Barrier(2)
    errors: list[BaseException] = []

    def open_it() -> None:
        start.wait()
        try:
            store_db.open_database(path).dispose()
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=open_it) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert errors == []
    assert store_db.current_revision(store_db.create_db_engine(store_db.database_url(path))) == (
        store_db.head_revision()
    )


def test_threads_creating_different_databases_at_once_each_get_a_whole_schema(tmp_path):
    """A service opening a database per tenant from a thread pool: Alembic's module-level context
    ran one thread's migration on another's connection (half a schema in one file, the other file
    refused for good as "another application's"). Each file ends at head with every table."""
    import threading

    for attempt in range(3):
        paths = [tmp_path / f"tenant{attempt}-{i}.db" for i in range(4)]
        start = threading.Barrier(len(paths))
        errors: list[BaseException] = []

        def open_it(path, start=start, errors=errors) -> None:
            start.wait()
            try:
                store_db.open_database(path).dispose()
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors.append(exc)

        threads = [threading.Thread(target=open_it, args=(path,)) for path in paths]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
        assert errors == []
        for path in paths:
            engine = store_db.open_database(path)
            assert store_db.current_revision(engine) == store_db.head_revision()
            with engine.connect() as connection:
                assert schema_drift(connection) == []
            engine.dispose()


def test_database_errors_become_one_line_store_errors_saying_what_was_being_done(tmp_path):
    """Every stage turns a driver error into the same shape: what failed, the driver's line, a hint."""
    from auditor.engine.findings import store_evaluation
    from auditor.store.db import READ_HINT, WRITE_HINT

    engine = store_db.open_database(tmp_path / "broken.db")
    run_id = write_catalog(engine, make_catalog(1, 1))
    with engine.begin() as connection:
        connection.execute(text("DROP TABLE findings"))
        connection.execute(text("DROP TABLE evaluations"))
    with pytest.raises(StoreError) as caught:
        store_evaluation(engine, run_id, "digest", ["rule-a"], [])
    assert caught.value.message == f"could not store the findings of run {run_id}: no such table: evaluations"
    assert caught.value.hint == WRITE_HINT
    with engine.begin() as connection:
        connection.execute(text("ALTER TABLE runs RENAME TO runs_gone"))
    with pytest.raises(StoreError) as caught:
        list_runs(engine)
    assert caught.value.message == "could not read runs: no such table: runs"
    assert caught.value.hint == READ_HINT


def test_a_full_disk_or_a_file_size_limit_is_named_as_such(tmp_path):
    """`ulimit -f` or a full disk under a check said "disk I/O error" with the hint about a locked
    or old database; opening said only "OperationalError"."""
    import subprocess
    import sys

    from sqlalchemy.exc import OperationalError

    from auditor.store.db import DISK_HINT, store_errors

    with pytest.raises(StoreError) as caught, store_errors("could not evaluate run 1"):
        raise OperationalError("SELECT 1", {}, Exception("disk I/O error"))
    assert (caught.value.message, caught.value.hint) == (
        "could not evaluate run 1: disk I/O error",
        DISK_HINT,
    )
    # a new database over a 4 KB file size limit, opened by a real process
    script = (
        "import resource, sys; resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096));"
        "import signal; signal.signal(signal.SIGXFSZ, signal.SIG_IGN);"
        "from auditor.store.db import open_database;"
        "from auditor.errors import StoreError\n"
        "try:\n open_database(sys.argv[1])\n"
        "except StoreError as exc:\n print(exc.message); print(exc.hint)"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "small.db")], capture_output=True, text=True, timeout=60
    )
    shown = store_db.display_url(store_db.database_url(tmp_path / "small.db"))
    assert done.stdout.splitlines() == [f"could not open the database {shown}: disk I/O error", DISK_HINT], (
        done
    )
    # `auditor db upgrade`, the documented way to create one, says the same
    upgrade = script.replace(
        "open_database(sys.argv[1])", "upgrade(create_db_engine(database_url(sys.argv[1])))"
    )
    upgrade = upgrade.replace("import open_database;", "import create_db_engine, database_url, upgrade;")
    done = subprocess.run(
        [sys.executable, "-c", upgrade, str(tmp_path / "other.db")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    shown = store_db.display_url(store_db.database_url(tmp_path / "other.db"))
    migrate = f"could not migrate the database {shown}: disk I/O error"
    assert done.stdout.splitlines() == [migrate, DISK_HINT], done


def test_mismatch_counts_read_the_count_or_an_older_runs_list():
    from auditor.store.runs import mismatch_count

    listed = [{"cluster_id": f"c{i}"} for i in range(1_000)]
    details = {"size_mismatch_count": 2_345, "size_mismatches": listed, "total_mismatches": listed[:3]}
    assert mismatch_count(details, "size") == 2_345  # all counted, the first 1,000 listed
    assert mismatch_count(details, "total") == 3  # a run from before the count was recorded
    assert mismatch_count({}, "size") == 0


def _hold_write_lock(path, seconds: float | None):
    """Another process's write transaction on ``path`` (BEGIN IMMEDIATE), held for ``seconds``
    (until the returned event is set, when None); returns (thread, release event)."""
    import sqlite3
    import threading

    locked, release = threading.Event(), threading.Event()

    def hold() -> None:
        holder = sqlite3.connect(path, isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")
        holder.execute("UPDATE runs SET tool_version = tool_version")
        locked.set()
        release.wait(seconds)
        holder.execute("COMMIT")
        holder.close()

    thread = threading.Thread(target=hold, daemon=True)
    thread.start()
    assert locked.wait(10)
    return thread, release


def test_a_writer_waits_for_another_processs_write_lock_instead_of_failing(tmp_path):
    """A check storing its findings while a prune holds the lock waits for it (the default timeout,
    5 minutes, is far longer than the longest write transaction measured: ~40 s)."""
    import time

    from auditor.engine.findings import store_evaluation

    assert store_db.SQLITE_BUSY_TIMEOUT_MS == 300_000
    engine = store_db.open_database(tmp_path / "a.db")
    run_id = write_catalog(engine, make_catalog(1, 1))
    thread, _release = _hold_write_lock(tmp_path / "a.db", 1.5)
    started = time.monotonic()
    store_evaluation(engine, run_id, "digest", ["rule-a"], [])
    assert time.monotonic() - started >= 1.0  # it waited for the lock, then wrote
    thread.join()
    with engine.connect() as connection:
        assert connection.execute(text("SELECT count(*) FROM evaluations")).scalar() == 1


def test_a_wait_for_another_process_s_lock_is_said_once_while_it_lasts(tmp_path, monkeypatch, caplog):
    """Found by an operations probe: a snapshot, check or prune waiting for another process's
    write lock said nothing for up to five minutes, which reads as a hang."""
    from auditor.engine.findings import store_evaluation

    monkeypatch.setattr(store_db, "LOCK_NOTICE_SECONDS", 0.2)
    engine = store_db.open_database(tmp_path / "a.db")
    run_id = write_catalog(engine, make_catalog(1, 1))
    store_evaluation(engine, run_id, "quick", ["rule-a"], [])  # no wait, nothing said
    assert not [r for r in caplog.records if "write lock" in r.getMessage()]
    thread, _release = _hold_write_lock(tmp_path / "a.db", 1.0)
    with caplog.at_level("WARNING", logger="auditor.store"):
        store_evaluation(engine, run_id, "digest", ["rule-a"], [])
    thread.join()
    said = [r.getMessage() for r in caplog.records if "write lock" in r.getMessage()]
    assert said == [
        "waiting for the database's write lock, which another process holds (a snapshot, check or "
        "prune running meanwhile?); waiting up to 300 s more"
    ]


def test_a_lock_held_past_the_busy_timeout_is_named_with_what_to_do(tmp_path, monkeypatch, run_cli):
    from auditor.engine.findings import store_evaluation
    from auditor.store.db import LOCKED_HINT

    monkeypatch.setattr(store_db, "SQLITE_BUSY_TIMEOUT_MS", 300)  # read by every new connection
    path = tmp_path / "a.db"
    engine = store_db.open_database(path)
    run_id = write_catalog(engine, make_catalog(1, 1))
    engine.dispose()
    thread, release = _hold_write_lock(path, None)
    try:
        engine = store_db.open_database(path)
        with pytest.raises(StoreError) as caught:
            store_evaluation(engine, run_id, "digest", ["rule-a"], [])
        assert caught.value.message == f"could not store the findings of run {run_id}: database is locked"
        assert caught.value.hint == LOCKED_HINT.format(seconds=0.3)
        assert "longer than 0.3 s (a prune, a snapshot or a check" in caught.value.hint
        result = run_cli("check", "--db", str(path), "--run", str(run_id))  # stores its evaluation
        assert result.exit_code == 3
        assert "database is locked" in result.stderr
        assert "hint: another process held the database's write lock for longer than 0.3 s" in result.stderr
    finally:
        release.set()
        thread.join()
    engine.dispose()
    result = run_cli("check", "--db", str(path), "--run", str(run_id))  # nothing was left half-written
    assert result.exit_code == 0, result.stderr


def _taken(run_id: int, source_url: str | None, cluster_filter: str | None = None):
    from datetime import UTC, datetime

    from auditor.store.runs import RunInfo

    return RunInfo(
        run_id,
        "complete",
        datetime.now(UTC),
        None,
        source_url,
        cluster_filter,
        "bearer",
        "1",
        1,
        1,
        1,
        1,
        1,
        0,
        None,
        {},
    )


@pytest.mark.parametrize(
    ("older", "newer", "expected"),
    [
        # One tenant spelled in several ways: the scheme's default port, case, a trailing slash.
        (("https://bigid.example.net/api/", None), ("HTTPS://BigID.example.net:443/api", None), None),
        (("http://10.0.0.5", None), ("http://10.0.0.5:80/", None), None),
        # Nothing recorded (runs written by tools and fixtures) is not a difference.
        ((None, None), ("https://a.example", None), None),
        (("https://a.example", ""), ("https://a.example", None), None),  # an empty filter is no filter
        (
            ("https://a.example", None),
            ("https://a.example:8443", None),
            "run 1 was taken from https://a.example and run 2 from https://a.example:8443",
        ),
        (
            ("https://a.example", "size=20"),
            ("https://a.example", "size=30"),
            "run 1 was taken with the cluster filter 'size=20' and run 2 with the cluster filter 'size=30'",
        ),
        (
            ("https://a.example", "size=20"),
            ("https://b.example", None),
            "run 1 was taken from https://a.example with the cluster filter 'size=20' and run 2 from "
            "https://b.example with no cluster filter",
        ),
    ],
)
def test_scope_note_names_how_two_compared_runs_were_taken_differently(older, newer, expected):
    from auditor.store.runs import scope_note

    note = scope_note(_taken(1, *older), _taken(2, *newer))
    if expected is None:
        assert note is None
    else:
        assert note == f"{expected}: what only one of them covers reads as new or resolved, added or removed"


def test_the_observed_attribute_details_shape_keeps_its_rank_type_and_name(tmp_path):
    # The catalog's observed shape {name, count, ranks: [...], type} (reference §3) lost its rank
    # and type, so rules on attribute rank silently missed those columns; fieldClassifications'
    # classificationName lost its name.
    engine = store_db.open_database(tmp_path / "a.db")
    cluster = {"id": "c1", "name": "c", "size": 2}
    columns = [
        {
            "fullyQualifiedName": "s.t.ssn",
            "attributeDetails": [
                {"name": "SSN", "count": 10, "ranks": ["MEDIUM", "HIGH"], "type": "IDSoR Attribute"},
                {"name": "Zip", "ranks": [], "type": ["Classification", "IDSoR Attribute"]},
            ],
        },
        {"fullyQualifiedName": "s.t.email", "fieldClassifications": [{"classificationName": "Email"}]},
    ]
    write_catalog(engine, [(cluster, columns)])
    with engine.connect() as connection:
        rows = connection.execute(
            text(
                "SELECT cv.fqn, a.attribute_name, a.rank, a.attribute_type FROM column_attributes a "
                "JOIN column_versions cv ON cv.id = a.column_id ORDER BY cv.fqn, a.position"
            )
        ).all()
    assert [tuple(r) for r in rows] == [
        ("s.t.email", "Email", None, None),
        ("s.t.ssn", "SSN", "HIGH", "IDSoR Attribute"),
        ("s.t.ssn", "Zip", None, "Classification, IDSoR Attribute"),
    ]


def test_confidences_sent_as_text_or_percentages_are_stored_as_fractions(tmp_path):
    # Found by a probe: "69.5%" failed the whole cluster.
    engine = store_db.open_database(tmp_path / "a.db")
    # "33.3%" and "0.7%": divided in decimal, the doubles a rule's 0.333 and 0.007 are (divided as
    # floats they were one step off, and `gte: 0.333` missed "33.3%": a probe); "1_0" is no number
    values = [0.9, "0.69", "69.5%", "high", None, True, False, 1, "33.3%", "0.7%", "1_0"]
    attributes = [{"attribute_name": f"a{i}", "calc_confidence_level": v} for i, v in enumerate(values)]
    write_catalog(
        engine, [({"id": "c1", "size": 1}, [{"fullyQualifiedName": "s.t.c", "attributes": attributes}])]
    )
    with engine.connect() as connection:
        stored = (
            connection.execute(text("SELECT confidence FROM column_attributes ORDER BY position"))
            .scalars()
            .all()
        )
    # A yes/no confidence is no confidence: pydantic made true 1.0 and false 0.0 (a probe: "gte: 0.9"
    # flagged the column), where the writer already refused booleans.
    assert stored == [0.9, 0.69, 0.695, None, None, None, None, 1.0, 0.333, 0.007, None]


def test_an_infinite_confidence_from_a_library_caller_is_no_confidence(tmp_path):
    """The writer's fast path for floats let an infinity through (only NaN was caught): a rule
    'confidence >= 0.9' would flag a column whose model was built in Python with float('inf')."""
    from sqlalchemy import select

    from auditor.store.schema import column_attributes

    catalog = make_catalog(1, 1)
    catalog[0][1][0]["attributes"] = [
        {"attribute_name": "A", "calc_confidence_level": float("inf")},
        {"attribute_name": "B", "calc_confidence_level": float("-inf")},
        {"attribute_name": "C", "calc_confidence_level": 0.25},
    ]
    engine = store_db.open_database(str(tmp_path / "a.db"))
    try:
        write_catalog(engine, catalog)
        with engine.connect() as connection:
            rows = connection.execute(
                select(column_attributes.c.attribute_name, column_attributes.c.confidence).order_by(
                    column_attributes.c.attribute_name
                )
            ).all()
    finally:
        engine.dispose()
    assert [tuple(row) for row in rows] == [("A", None), ("B", None), ("C", 0.25)]


def test_a_run_fails_with_an_error_quoting_text_the_database_cannot_hold(tmp_path):
    """An error quoting a record's lone surrogate (or a NUL) failed the write that marks the run
    failed: an internal error, and the run left running."""
    from auditor.store.runs import list_runs
    from auditor.store.writer import ClusterStats, RunTotals, SnapshotWriter

    engine = store_db.open_database(str(tmp_path / "a.db"))
    try:
        writer = SnapshotWriter(engine, source_url="x")
        writer.finish_cluster("k1", ClusterStats(error="bad record 'a\ud800b'"))
        writer.fail(
            "1 of 1 clusters could not be fetched: k1: 'a\ud800b\x00'",
            RunTotals(details={"failed_clusters": [{"cluster_id": "k1", "error": "bad record 'a\ud800b'"}]}),
        )
        (run,) = list_runs(engine)
    finally:
        engine.dispose()
    assert run.status == "failed"
    assert run.error == "1 of 1 clusters could not be fetched: k1: 'a\\ud800b\\x00'"
    # the details too (a review saw the record read back as damaged, its JSON holding the escape)
    assert run.details["failed_clusters"] == [{"cluster_id": "k1", "error": "bad record 'a\\ud800b'"}]


@pytest.mark.parametrize(
    ("said", "hint"),
    [
        ('permission denied to create temporary tables in database "audit"', "TEMP_HINT"),
        ("permission denied for schema aud", "PRIVILEGE_HINT"),
        ("must be owner of table column_tags", "PRIVILEGE_HINT"),
        ("could not serialize access due to concurrent update", "SERIALIZATION_HINT"),
        ("canceling statement due to user request", "CANCELLED_HINT"),
    ],
)
def test_a_privilege_missing_on_postgresql_is_named_not_taken_for_a_full_disk(said, hint):
    """Found by a PostgreSQL probe: a role without TEMP failed its second check (and every prune)
    with the hint "check that the database is writable and not full"."""
    from sqlalchemy.exc import OperationalError

    recording = store_db.store_errors("could not record the check", store_db.WRITE_HINT)
    with pytest.raises(StoreError) as caught, recording:
        raise OperationalError("SELECT 1", {}, Exception(said))
    assert caught.value.message == f"could not record the check: {said}"
    assert caught.value.hint == getattr(store_db, hint)


@pytest.mark.parametrize(
    ("detail", "given", "expected"),
    [
        # found by a fault probe: a writer's own hint ("writable and not full") hid which disk, and a
        # full $TMPDIR was blamed on the database's disk
        ("database or disk is full", "WRITE_HINT", "DISK_HINT"),
        ("disk I/O error", "WRITE_HINT", "DISK_HINT"),
        ("database or disk is full", "READ_HINT", "DISK_HINT"),
        # a damaged file was told to check that it is readable and at the newest schema
        ("database disk image is malformed", "READ_HINT", "MALFORMED_HINT"),
        ("database disk image is malformed", "WRITE_HINT", "MALFORMED_HINT"),
    ],
)
def test_a_full_disk_or_a_damaged_file_gets_the_hint_that_says_so(detail, given, expected):
    from sqlalchemy.exc import OperationalError

    from auditor.store import db

    with pytest.raises(StoreError) as caught, db.store_errors("could not write run 3", getattr(db, given)):
        raise OperationalError("INSERT", {}, Exception(detail))
    assert caught.value.hint == getattr(db, expected)
    assert "$TMPDIR" in db.DISK_HINT and ".recover" in db.MALFORMED_HINT


def test_an_unwritable_folder_is_named_as_the_folder_not_as_the_file(tmp_path, monkeypatch):
    # found by a fault probe (as a user without root's override): a 555 folder holding a writable
    # file was reported as "this user may not write to …/a.db"
    from auditor.store import db

    path = tmp_path / "a.db"
    path.write_bytes(b"")
    engine = db.create_db_engine(db.database_url(path))
    try:
        monkeypatch.setattr(db.os, "access", lambda target, mode: str(target) != str(tmp_path))
        assert db._sqlite_unwritable(engine) == f"this user may not write to the folder {tmp_path}"
        monkeypatch.setattr(db.os, "access", lambda target, mode: str(target) != str(path))
        assert db._sqlite_unwritable(engine) == f"this user may not write to {path}"
    finally:
        engine.dispose()


def test_a_database_file_this_user_may_not_write_is_refused_before_sqlite_opens_it(tmp_path, monkeypatch):
    # Found by a fault probe (as a user without root's override): `auditor runs` on a chmod 444
    # file opened it read-only and left -wal and -shm files beside it with mode 444, owned by that
    # user; the owner's next snapshot then failed with "attempt to write a readonly database".
    from auditor.store import db

    path = tmp_path / "a.db"
    db.open_database(path).dispose()
    for side in ("-wal", "-shm"):
        Path(f"{path}{side}").unlink(missing_ok=True)
    real_access = os.access
    monkeypatch.setattr(
        db.os, "access", lambda target, mode: str(target) != str(path) and real_access(target, mode)
    )
    with pytest.raises(StoreError) as caught:
        db.open_database(path)
    assert caught.value.message == (
        f"could not open the database {db.display_url(db.database_url(path))}: this user may not write to "
        f"{path} (SQLite writes the file and a journal beside it, even to read it)"
    )
    assert caught.value.hint == db.READ_ONLY_HINT
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.db"]


def restart_mid_cluster(engine) -> tuple[int, list[tuple[str, str]]]:
    """A cluster fed 6 columns (flushed in batches of 5), restarted, then fed 4 of the same names
    again (one changed) and finished: what the run holds."""
    from auditor.bigid.models import parse_cluster, parse_column
    from auditor.store.writer import ClusterStats, RunTotals, SnapshotWriter

    ((cluster, columns),) = make_catalog(1, 6)
    writer = SnapshotWriter(engine, source_url="http://x", batch_rows=5)
    writer.add_cluster(parse_cluster(cluster), cluster, 0)
    writer.add_columns(cluster["id"], [(parse_column(c), c) for c in columns])  # 6 >= 5: written
    writer.restart_cluster(cluster["id"])
    again = [{**c, "dataType": "int"} if i == 1 else c for i, c in enumerate(columns[:4])]
    writer.add_columns(cluster["id"], [(parse_column(c), c) for c in again])  # same names: no conflict
    writer.finish_cluster(cluster["id"], ClusterStats(total_announced=4, columns_fetched=4, pages=1))
    writer.complete(RunTotals(clusters_announced=1))
    with engine.connect() as connection:
        rows = connection.execute(
            select(run_columns.c.fqn, column_versions.c.data_type)
            .join(column_versions, column_versions.c.id == run_columns.c.column_id)
            .where(run_columns.c.run_id == writer.run_id)
            .order_by(run_columns.c.fqn)
        ).all()
    return writer.run_id, [tuple(row) for row in rows]


def test_a_cluster_restarted_after_a_flush_holds_only_what_was_fed_since(tmp_path):
    """A cluster listed again from its first page (its totalCount moved while it was paged): the
    columns an earlier flush wrote are deleted before the new pages' rows, which repeat their names,
    are written; the run holds the second listing alone."""
    engine = store_db.open_database(tmp_path / "a.db")
    run_id, rows = restart_mid_cluster(engine)
    assert rows == [
        ("src0.db.t0.col0", "varchar"),
        ("src0.db.t0.col2", "varchar"),
        ("src1.db.t0.col1", "int"),
        ("src1.db.t0.col3", "varchar"),
    ]
    (run,) = list_runs(engine)
    assert (run.status, run.columns_stored) == ("complete", 4)
    assert count_run_rows(engine, run_id)[1] == 4


def test_only_a_cluster_being_fetched_can_be_restarted(tmp_path):
    from auditor.store.writer import SnapshotWriter

    writer = SnapshotWriter(store_db.open_database(tmp_path / "a.db"), source_url="http://x")
    with pytest.raises(ValueError, match="cluster 'nope' is not being fetched in run 1"):
        writer.restart_cluster("nope")
