"""Retention (``auditor.store.retention``, ``auditor db prune``) on real SQLite files and PostgreSQL.

The history every database test starts from (see :func:`history`), with ``--keep 2``:

    run 1 complete   unique cluster version (labels) and column version (tags, attributes)  deleted
    run 2 failed     one column of its own                                                 deleted
    run 3 running    (old, but possibly in progress)                                      skipped
    run 4 complete   the catalog with one tag changed                                        kept
    run 5 failed     newer than the oldest complete run kept: recent evidence                kept
    run 6 complete   the catalog                                                             kept
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import re
import select
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from unittest.mock import ANY

import pytest
import sqlalchemy as sa
from sqlalchemy.exc import OperationalError

import auditor
from auditor.bigid.models import parse_cluster, parse_column
from auditor.diff import compute_diff
from auditor.engine import check_run, load_ruleset
from auditor.errors import ConfigError, StoreError
from auditor.store import retention
from auditor.store.db import open_database
from auditor.store.retention import RunRow, decide, plan_prune, prune
from auditor.store.runs import (
    Liveness,
    clusters_view,
    columns_view,
    count_run_rows,
    get_run,
    list_runs,
    run_liveness,
    writer_identity,
)
from auditor.store.schema import metadata, runs
from auditor.store.writer import SnapshotWriter

from .conftest import make_catalog, write_catalog

NOW = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)
DELETED, SKIPPED, KEPT = [1, 2], [3], [4, 5, 6]
JSON_KEYS = [
    "dry_run",
    "deleted_runs",
    "kept_runs",
    "skipped_running",
    "marked_failed",
    "run_columns_removed",
    "evaluations_removed",
    "findings_removed",
    "column_versions_removed",
    "cluster_versions_removed",
    "vacuum",
]


# -- the decision, without a database ------------------------------------------------------------


def rows(*specs: tuple[str, float]) -> list[RunRow]:
    """Runs 1..n from (status, age in days)."""
    return [RunRow(i, status, NOW - timedelta(days=age)) for i, (status, age) in enumerate(specs, 1)]


def test_keep_n_deletes_older_complete_and_failed_runs_only():
    plan = decide(
        rows(("complete", 9), ("failed", 8), ("running", 7), ("complete", 6), ("failed", 5), ("complete", 4)),
        keep=2,
        older_than=None,
        now=NOW,
    )
    assert (plan.deleted_runs, plan.skipped_running, plan.kept_runs) == ((1, 2), (3,), (4, 5, 6))


def test_the_newest_complete_run_is_always_kept():
    history = rows(("complete", 400), ("complete", 300), ("failed", 200), ("running", 100))
    plan = decide(history, keep=None, older_than=1, now=NOW)
    assert (plan.deleted_runs, plan.kept_runs, plan.skipped_running) == ((1,), (2, 3, 4), ())
    assert decide(history, keep=1, older_than=None, now=NOW).deleted_runs == (1,)


def test_with_both_options_a_run_goes_only_when_both_allow_it():
    history = rows(("complete", 40), ("complete", 30), ("complete", 20), ("complete", 10), ("complete", 1))
    assert decide(history, keep=2, older_than=None, now=NOW).deleted_runs == (1, 2, 3)
    assert decide(history, keep=None, older_than=25, now=NOW).deleted_runs == (1, 2)
    assert decide(history, keep=2, older_than=25, now=NOW).deleted_runs == (1, 2)
    assert decide(history, keep=4, older_than=25, now=NOW).deleted_runs == (1,)
    assert decide(history, keep=2, older_than=35, now=NOW).deleted_runs == (1,)


def test_older_than_applies_to_failed_runs_too_and_keeps_everything_newer_than_the_oldest_kept():
    history = rows(("failed", 50), ("failed", 5), ("complete", 40), ("failed", 30), ("complete", 2))
    # run 2 is out of order in time (started 5 days ago): too recent to go
    plan = decide(history, keep=None, older_than=10, now=NOW)
    assert (plan.deleted_runs, plan.kept_runs) == ((1, 3, 4), (2, 5))


def test_without_a_complete_run_nothing_is_deleted():
    plan = decide(rows(("failed", 90), ("running", 80)), keep=1, older_than=None, now=NOW)
    assert (plan.deleted_runs, plan.kept_runs, plan.skipped_running) == ((), (1, 2), ())


@pytest.mark.parametrize(
    ("keep", "older_than", "message"),
    [
        (None, None, "prune needs --keep N or --older-than DAYS (or both)"),
        (0, None, "--keep must be at least 1, not 0"),
        (None, -1, "--older-than must be from 0 to 36,500 days, not -1"),
        # found by a probe: each an internal error (OverflowError, ValueError), exit 3
        (None, 740_000, "--older-than must be from 0 to 36,500 days, not 740000"),
        (None, float("nan"), "--older-than must be from 0 to 36,500 days, not nan"),
        (None, float("inf"), "--older-than must be from 0 to 36,500 days, not inf"),
    ],
)
def test_a_policy_that_means_nothing_is_a_usage_error(keep, older_than, message):
    with pytest.raises(ConfigError) as raised:
        decide([], keep=keep, older_than=older_than, now=NOW)
    assert raised.value.message == message
    assert raised.value.exit_code == 2


# -- a real history on both databases ------------------------------------------------------------


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db(request, tmp_path) -> Iterator[str]:
    """A fresh database's URL: a SQLite file, or a database of its own on the PostgreSQL server."""
    if request.param == "sqlite":
        yield str(tmp_path / "history.db")
        return
    yield request.getfixturevalue("fresh_postgres")


@pytest.fixture
def engine(db: str) -> Iterator[sa.Engine]:
    engine = open_database(db)
    yield engine
    engine.dispose()


def unique_catalog():
    """The catalog with a relabelled cluster and a re-tagged, re-attributed column: run 1's own."""
    catalog = copy.deepcopy(make_catalog(3, 4))
    catalog[2][0]["labels"] = ["Legacy", "Archived"]
    column = catalog[1][1][3]
    column["tags"][0]["tagValue"] = "medium"
    column["attributes"].append({"attribute_name": "Email", "rank": "Low", "calc_confidence_level": 0.2})
    return catalog


def write_running(engine, catalog) -> int:
    writer = SnapshotWriter(engine, source_url="http://127.0.0.1:1")
    for position, (cluster, columns) in enumerate(catalog):
        writer.add_cluster(parse_cluster(cluster), cluster, position)
        writer.add_columns(cluster["id"], [(parse_column(raw), raw) for raw in columns])
    writer.flush()  # written, never ended: the run stays running
    return writer.run_id


def history(engine) -> None:
    """The six runs of the module docstring, started 60..10 days ago, with checked findings."""
    own = make_catalog(1, 1)
    own[0][1][0]["fullyQualifiedName"] = "failed.only.column"
    assert write_catalog(engine, unique_catalog()) == 1
    assert write_catalog(engine, own, complete=False) == 2
    assert write_running(engine, make_catalog(1, 2)) == 3
    assert write_catalog(engine, make_catalog(3, 4, variant=1)) == 4
    assert write_catalog(engine, make_catalog(2, 2), complete=False) == 5
    assert write_catalog(engine, make_catalog(3, 4)) == 6
    with engine.begin() as connection:
        for run_id in range(1, 7):
            connection.execute(
                runs.update()
                .where(runs.c.id == run_id)
                .values(started_at=NOW - timedelta(days=70 - 10 * run_id))
            )
    ruleset = load_ruleset(None)
    for run_id in (1, 4, 6):
        check_run(engine, run_id, ruleset)


def table_dump(engine) -> dict[str, list[str]]:
    """Every row of every table, as sortable text."""
    with engine.connect() as connection:
        return {
            table.name: sorted(repr(tuple(row)) for row in connection.execute(sa.select(table)))
            for table in metadata.sorted_tables
        }


def run_dump(engine, run_id: int) -> dict[str, list[str]]:
    """Everything a reader sees of one run: the run, clusters, labels, columns, tags, attributes, findings."""
    t = metadata.tables
    view = columns_view(run_id).subquery()
    columns = sa.select(view.c.column_id)
    hashes = sa.select(t["run_clusters"].c.cluster_hash).where(t["run_clusters"].c.run_id == run_id)
    versions = t["column_versions"]
    queries = {
        "run": sa.select(runs).where(runs.c.id == run_id),
        "clusters": clusters_view(run_id),
        "labels": sa.select(t["cluster_labels"]).where(t["cluster_labels"].c.cluster_hash.in_(hashes)),
        "columns": sa.select(view),
        "raw": sa.select(versions.c.hash, versions.c.raw).where(versions.c.id.in_(columns)),
        "tags": sa.select(t["column_tags"]).where(t["column_tags"].c.column_id.in_(columns)),
        "attributes": sa.select(t["column_attributes"]).where(
            t["column_attributes"].c.column_id.in_(columns)
        ),
        "findings": sa.select(t["findings"]).where(t["findings"].c.run_id == run_id),
    }
    with engine.connect() as connection:
        return {
            name: sorted(repr(tuple(row)) for row in connection.execute(query))
            for name, query in queries.items()
        }


ORPHANS = {
    "run_clusters without a run": (
        "SELECT count(*) FROM run_clusters WHERE run_id NOT IN (SELECT id FROM runs)"
    ),
    "run_columns without a run_clusters row": (
        "SELECT count(*) FROM run_columns m WHERE NOT EXISTS (SELECT 1 FROM run_clusters c "
        "WHERE c.run_id = m.run_id AND c.cluster_id = m.cluster_id)"
    ),
    "run_columns without a version": (
        "SELECT count(*) FROM run_columns WHERE column_id NOT IN (SELECT id FROM column_versions)"
    ),
    "run_clusters without a version": (
        "SELECT count(*) FROM run_clusters WHERE cluster_hash NOT IN (SELECT hash FROM cluster_versions)"
    ),
    "labels without a version": (
        "SELECT count(*) FROM cluster_labels WHERE cluster_hash NOT IN (SELECT hash FROM cluster_versions)"
    ),
    "tags without a version": (
        "SELECT count(*) FROM column_tags WHERE column_id NOT IN (SELECT id FROM column_versions)"
    ),
    "attributes without a version": (
        "SELECT count(*) FROM column_attributes WHERE column_id NOT IN (SELECT id FROM column_versions)"
    ),
    "column versions no run refers to": (
        "SELECT count(*) FROM column_versions WHERE id NOT IN (SELECT column_id FROM run_columns)"
    ),
    "cluster versions no run refers to": (
        "SELECT count(*) FROM cluster_versions WHERE hash NOT IN (SELECT cluster_hash FROM run_clusters)"
    ),
    "evaluations without a run": "SELECT count(*) FROM evaluations WHERE run_id NOT IN (SELECT id FROM runs)",
    "findings without a run": "SELECT count(*) FROM findings WHERE run_id NOT IN (SELECT id FROM runs)",
    "findings without an evaluation": (
        "SELECT count(*) FROM findings WHERE evaluation_id NOT IN (SELECT id FROM evaluations)"
    ),
}


def orphans(engine) -> dict[str, int]:
    with engine.connect() as connection:
        found = {name: connection.execute(sa.text(sql)).scalar_one() for name, sql in ORPHANS.items()}
        if engine.dialect.name == "sqlite":
            found["PRAGMA foreign_key_check"] = len(
                connection.execute(sa.text("PRAGMA foreign_key_check")).all()
            )
    return {name: count for name, count in found.items() if count}


def scalar(engine, sql: str):
    with engine.connect() as connection:
        return connection.execute(sa.text(sql)).scalar_one()


def diff_json(engine, from_run: int, to_run: int) -> dict:
    return compute_diff(engine, from_run, to_run, ruleset=load_ruleset(None), today=NOW.date()).to_json()


def test_prune_deletes_exactly_the_planned_runs_and_unshared_versions(engine):
    history(engine)
    before = table_dump(engine)
    dumps = {run_id: run_dump(engine, run_id) for run_id in (*SKIPPED, *KEPT)}
    diff_before = diff_json(engine, 4, 6)
    findings_of = {
        run_id: scalar(engine, f"SELECT count(*) FROM findings WHERE run_id = {run_id}")
        for run_id in (1, 4, 6)
    }
    assert all(findings_of.values())
    assert orphans(engine) == {}

    plan = plan_prune(engine, keep=2, now=NOW)
    assert (list(plan.deleted_runs), list(plan.skipped_running), list(plan.kept_runs)) == (
        DELETED,
        SKIPPED,
        KEPT,
    )
    dry = prune(engine, plan, dry_run=True)
    assert table_dump(engine) == before  # a dry run changes nothing
    result = prune(engine, plan)

    assert result.to_json() == {**dry.to_json(), "dry_run": False}
    assert result.to_json() == {
        "dry_run": False,
        "deleted_runs": DELETED,
        "kept_runs": KEPT,
        "skipped_running": SKIPPED,
        "marked_failed": [],  # run 3's writer is this process: alive
        "run_columns_removed": 12 + 1,
        "evaluations_removed": 1,
        "findings_removed": findings_of[1],
        "column_versions_removed": 2,  # run 1's re-tagged column, run 2's own column
        "cluster_versions_removed": 2,  # run 1's relabelled cluster, run 2's one-column cluster
        "vacuum": None,
    }
    after = table_dump(engine)
    assert scalar(engine, "SELECT count(*) FROM runs") == 4
    assert len(before["column_versions"]) - len(after["column_versions"]) == 2
    assert len(before["column_tags"]) - len(after["column_tags"]) == 2
    assert len(before["column_attributes"]) - len(after["column_attributes"]) == 3
    assert len(before["cluster_labels"]) - len(after["cluster_labels"]) == 2 + 1
    # nothing of the deleted runs' own versions is left; shared versions survive
    assert scalar(engine, "SELECT count(*) FROM cluster_labels WHERE label IN ('Legacy', 'Archived')") == 0
    assert scalar(engine, "SELECT count(*) FROM column_tags WHERE tag_value = 'medium'") == 0
    assert scalar(engine, "SELECT count(*) FROM column_attributes WHERE attribute_name = 'Email'") == 0
    assert scalar(engine, "SELECT count(*) FROM column_versions WHERE fqn = 'failed.only.column'") == 0
    assert scalar(engine, "SELECT count(*) FROM column_versions WHERE fqn = 'src1.db.t1.col3'") == 1
    assert orphans(engine) == {}
    for table in ("evaluations", "findings", "run_clusters"):
        assert scalar(engine, f"SELECT count(*) FROM {table} WHERE run_id IN (1, 2)") == 0

    # the remaining runs read back exactly as before, and diffs between them do not change
    assert {run_id: run_dump(engine, run_id) for run_id in (*SKIPPED, *KEPT)} == dumps
    assert diff_json(engine, 4, 6) == diff_before
    # a finding first seen in a deleted run keeps that run as its first sighting
    assert scalar(engine, "SELECT min(first_seen_run) FROM findings WHERE run_id = 6") == 1

    again = prune(engine, plan_prune(engine, keep=2, now=NOW))
    assert again.deleted_runs == () and table_dump(engine) == after  # nothing more to do


def test_prune_with_both_options_and_nothing_to_do(engine):
    history(engine)
    before = table_dump(engine)
    plan = plan_prune(engine, keep=1, older_than=45, now=NOW)  # runs 1 and 2 started 60 and 50 days ago
    assert (plan.deleted_runs, plan.skipped_running) == ((1, 2), ())
    assert plan.kept_runs == (3, 4, 5, 6)  # run 3 is too recent to go: kept, not skipped
    nothing = prune(engine, plan_prune(engine, keep=10, now=NOW))
    assert nothing.deleted_runs == () and nothing.kept_runs == tuple(range(1, 7))
    assert table_dump(engine) == before


def test_a_run_completed_after_planning_is_not_deleted(engine):
    history(engine)
    plan = plan_prune(engine, keep=2, now=NOW)
    write_catalog(engine, make_catalog(3, 4))  # run 7: now the newest complete run
    result = prune(engine, plan)
    assert result.deleted_runs == (1, 2)
    assert result.kept_runs == (4, 5, 6, 7)
    # a plan naming runs that, under the lock, the policy keeps (run 4 restarted recently) deletes nothing
    with engine.begin() as connection:
        connection.execute(runs.update().where(runs.c.id == 4).values(started_at=NOW - timedelta(days=1)))
    stale = retention.PrunePlan(None, 3, NOW, (4, 6), (5, 7), ())
    assert prune(engine, stale).deleted_runs == ()
    assert scalar(engine, "SELECT count(*) FROM runs WHERE id IN (4, 6)") == 2


class Boom(OperationalError):
    def __init__(self) -> None:
        super().__init__("DELETE FROM cluster_versions", {}, Exception("disk I/O error (forced by the test)"))


@pytest.mark.parametrize("failure", [Boom, KeyboardInterrupt])
def test_a_failure_mid_prune_leaves_every_table_unchanged(engine, monkeypatch, failure):
    history(engine)
    before = table_dump(engine)

    def fail(step):  # after every run, membership and column version delete has been executed
        assert step.timings["column_versions"] >= 0
        raise failure()

    monkeypatch.setattr(retention, "_collect_clusters", fail)
    expected = StoreError if failure is Boom else KeyboardInterrupt
    with pytest.raises(expected) as raised:
        prune(engine, plan_prune(engine, keep=2, now=NOW))
    if expected is StoreError:
        assert raised.value.message.startswith(
            "could not prune the database; nothing was deleted: disk I/O error"
        )
    assert table_dump(engine) == before
    if engine.dialect.name == "sqlite":  # the pool hands out connections with foreign keys on only
        for _ in range(3):
            with engine.connect() as connection:
                assert connection.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1


def test_sqlite_prunes_with_foreign_key_checks_off_on_its_own_connection_only(tmp_path, monkeypatch):
    engine = open_database(tmp_path / "a.db")
    history(engine)
    seen: list[tuple[int, int]] = []
    collect = retention._collect_columns

    def spy(step):
        with engine.connect() as other:  # another pooled connection, while the prune holds its own
            seen.append(
                (
                    step.connection.exec_driver_sql("PRAGMA foreign_keys").scalar(),
                    other.exec_driver_sql("PRAGMA foreign_keys").scalar(),
                )
            )
        return collect(step)

    monkeypatch.setattr(retention, "_collect_columns", spy)
    prune(engine, plan_prune(engine, keep=1, now=NOW))
    assert seen == [(0, 1)]
    for _ in range(3):
        with engine.connect() as connection:
            assert connection.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1


def test_version_references_are_indexed_on_postgresql_only(engine):
    """PostgreSQL checks each deleted version's references with these (migration 0004)."""
    inspector = sa.inspect(engine)
    indexed = {ix["name"] for table in ("run_columns", "run_clusters") for ix in inspector.get_indexes(table)}
    on_postgresql = engine.dialect.name == "postgresql"
    assert ("ix_run_columns_column_id" in indexed) == on_postgresql
    assert ("ix_run_clusters_cluster_hash" in indexed) == on_postgresql


def test_vacuum_reports_the_size_before_and_after(engine):
    history(engine)
    result = prune(engine, plan_prune(engine, keep=1, now=NOW), vacuum=True)
    assert result.vacuumed and result.deleted_runs == (1, 2, 4, 5)
    assert result.to_json()["vacuum"] == {"size_before": result.size_before, "size_after": result.size_after}
    assert result.size_before > 0 and result.size_after > 0
    if engine.dialect.name == "sqlite":
        assert result.size_after < result.size_before
    assert orphans(engine) == {}


@pytest.mark.postgres
def test_postgres_vacuum_by_a_role_that_does_not_own_the_tables_says_it_was_not_run(fresh_postgres):
    """Found by a PostgreSQL probe: PostgreSQL skips a table the role does not own with a WARNING,
    and the prune said "pruned, then vacuumed" with nothing vacuumed."""
    import secrets as std_secrets

    from sqlalchemy.engine import make_url

    from auditor.store.retention import committed_prune

    owner = open_database(fresh_postgres)
    history(owner)
    role = f"auditor_notowner_{std_secrets.token_hex(4)}"
    with owner.begin() as connection:
        connection.exec_driver_sql(f"CREATE ROLE {role} LOGIN")
        connection.exec_driver_sql(
            f"GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {role}"
        )
        connection.exec_driver_sql(f"GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO {role}")
    user = open_database(make_url(fresh_postgres).set(username=role).render_as_string(hide_password=False))
    try:
        with pytest.raises(StoreError) as caught:
            prune(user, plan_prune(user, keep=1, now=NOW), vacuum=True)
        assert caught.value.message.startswith(
            "the prune was committed, but VACUUM was not run: only the owner of a table may vacuum it, "
            "and this role does not own cluster_labels, cluster_versions, column_attributes"
        )
        assert committed_prune(caught.value).deleted_runs == (1, 2, 4, 5)  # what went is still said
    finally:
        user.dispose()
        with owner.begin() as connection:
            connection.exec_driver_sql(f"DROP OWNED BY {role}")
            connection.exec_driver_sql(f"DROP ROLE {role}")
        owner.dispose()


def _conflicting_update(url: str, run_id: int, database: sa.Engine) -> Callable[[], None]:
    """Start a transaction (on a connection of its own) that updates run ``run_id``'s row, and
    return what commits it once a prune is waiting for that row's lock: the prune, under
    SERIALIZABLE isolation, is then rolled back by the server (could not serialize access)."""
    other = sa.create_engine(url)
    connection = other.connect()
    transaction = connection.begin()
    connection.execute(runs.update().where(runs.c.id == run_id).values(error=runs.c.error))

    def commit_when_blocked() -> None:
        deadline = time.monotonic() + 30
        try:
            with database.connect() as watcher:
                while time.monotonic() < deadline:
                    waiting = watcher.execute(
                        sa.text(
                            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                            "AND wait_event_type = 'Lock' AND query LIKE :deleting"
                        ),
                        {"deleting": "DELETE FROM runs %"},
                    ).scalar()
                    watcher.rollback()
                    if waiting:
                        break
                    time.sleep(0.02)
        finally:  # (committed whatever happens: the prune must not wait for ever)
            transaction.commit()
            connection.close()
            other.dispose()

    return commit_when_blocked


@pytest.mark.postgres
@pytest.mark.parametrize("attempts", [5, 1])
def test_postgres_a_serializable_prune_meeting_a_concurrent_update_is_tried_again(
    fresh_postgres, monkeypatch, caplog, attempts
):
    """A server (or a role) running every transaction SERIALIZABLE rolls the prune back when a
    concurrent transaction updated a run it deletes; it failed with "re-run". It is tried again now
    (planned afresh), and only the last attempt's conflict is the error, with nothing deleted."""
    import logging
    import threading

    from sqlalchemy.engine import make_url

    from auditor.store.db import SERIALIZATION_HINT

    serializable = (
        make_url(fresh_postgres)
        .update_query_dict({"options": "-c default_transaction_isolation=serializable"})
        .render_as_string(hide_password=False)
    )
    database = open_database(serializable)
    try:
        history(database)
        with database.connect() as connection:
            assert connection.exec_driver_sql("SHOW transaction_isolation").scalar() == "serializable"
        monkeypatch.setattr(retention, "CONFLICT_ATTEMPTS", attempts)
        plan = plan_prune(database, keep=1, now=NOW)
        assert plan.deleted_runs == (1, 2, 4, 5)
        committer = threading.Thread(target=_conflicting_update(fresh_postgres, 1, database))
        committer.start()
        caplog.set_level(logging.INFO, logger="auditor.store")
        try:
            if attempts == 1:
                with pytest.raises(StoreError) as caught:
                    prune(database, plan)
                assert caught.value.message.startswith(
                    "could not prune the database; nothing was deleted: could not serialize access due to "
                    "concurrent update"
                )
                assert caught.value.hint == SERIALIZATION_HINT
                assert sorted(run.id for run in list_runs(database)) == [1, 2, 3, 4, 5, 6]
                assert "trying again" not in caplog.text
            else:
                result = prune(database, plan)
                assert result.deleted_runs == (1, 2, 4, 5)
                assert sorted(run.id for run in list_runs(database)) == [3, 6]
                assert orphans(database) == {}
                assert "was rolled back; trying again (attempt 2 of 5)" in caplog.text
        finally:
            committer.join(30)
    finally:
        database.dispose()


# -- the command -----------------------------------------------------------------------------------


def test_cli_usage_errors_exit_2_with_the_message(run_cli, tmp_path):
    for args, message in [
        ((), "error: prune needs --keep N or --older-than DAYS (or both)"),
        (("--keep", "0"), "error: --keep must be at least 1, not 0"),
        (("--older-than", "-2"), "error: --older-than must be from 0 to 36,500 days, not -2"),
        (("--older-than", "1e9"), "error: --older-than must be from 0 to 36,500 days, not 1e+09"),
        (
            ("--keep", "1", "--abandoned-after", "nan"),
            "error: --abandoned-after must be more than 0 hours (and at most 876,000), not nan",
        ),
    ]:
        result = run_cli("db", "prune", "--db", str(tmp_path / "never.db"), *args)
        assert result.exit_code == 2, result.output
        assert result.stdout == ""
        assert result.stderr.splitlines()[0] == message
    assert not (tmp_path / "never.db").exists()  # refused before the database is created
    bad = run_cli("db", "prune", "--keep", "x")
    assert bad.exit_code == 2 and "'x' is not a valid integer" in bad.stderr


def test_cli_dry_run_then_prune_in_json(run_cli, engine, db):
    history(engine)
    before = table_dump(engine)
    dry = run_cli("db", "prune", "--db", db, "--keep", "2", "--dry-run", "--format", "json")
    assert dry.exit_code == 0, dry.output
    assert table_dump(engine) == before
    shape = json.loads(dry.stdout)
    assert list(shape) == JSON_KEYS
    assert shape["dry_run"] is True
    assert (shape["deleted_runs"], shape["kept_runs"], shape["skipped_running"]) == (DELETED, KEPT, SKIPPED)
    assert shape["marked_failed"] == []
    assert all(isinstance(shape[key], int) for key in JSON_KEYS[5:10])
    assert shape["vacuum"] is None
    assert dry.stderr == f"{skipped_alive(3)}\n"
    done = run_cli("db", "prune", "--db", db, "--keep", "2", "--format", "json")
    assert done.exit_code == 0, done.output
    assert json.loads(done.stdout) == {**shape, "dry_run": False}
    assert orphans(engine) == {}
    # the remaining history still works: a check of the newest run against its baseline, and a diff
    check = run_cli("check", "--db", db, "--run", "6", "--format", "json")
    assert check.exit_code == 0, check.output
    assert json.loads(check.stdout)["run"] == 6
    diff = run_cli("diff", "--db", db, "--from", "4", "--to", "6", "--format", "json")
    assert diff.exit_code == 0, diff.output


def test_cli_table_output_and_skipped_running_runs(run_cli, engine, db):
    history(engine)
    result = run_cli("db", "prune", "--db", db, "--keep", "2", "--dry-run")
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[:4] == [
        "dry run, nothing was changed: a prune would remove",
        "  runs deleted      1, 2",
        "  runs kept         4-6",
        "  running, skipped  3",
    ]
    assert result.stderr.splitlines() == [skipped_alive(3)]  # written by this very process
    done = run_cli("db", "prune", "--db", db, "--keep", "2", "--vacuum")
    assert done.exit_code == 0, done.output
    lines = done.stdout.splitlines()
    assert lines[0] == "pruned, then vacuumed: removed"
    assert "  column versions   2" in lines
    assert any(line.startswith("  database size     ") and line.endswith(" bytes") for line in lines)
    again = run_cli("db", "prune", "--db", db, "--keep", "2")
    assert again.exit_code == 0 and again.stdout.splitlines()[:2] == [
        "nothing to prune: no run matched",
        "  runs deleted      none",
    ]


def test_cli_database_failure_exits_3_and_deletes_nothing(run_cli, engine, db, monkeypatch):
    history(engine)
    before = table_dump(engine)

    def fail(step):
        raise Boom()

    monkeypatch.setattr(retention, "_collect_clusters", fail)
    result = run_cli("db", "prune", "--db", db, "--keep", "1")
    assert result.exit_code == 3
    assert result.stdout == ""
    assert result.stderr.splitlines()[0] == (
        "error: could not prune the database; nothing was deleted: disk I/O error (forced by the test)"
    )
    assert "Traceback" not in result.stderr
    assert table_dump(engine) == before


@pytest.mark.parametrize("failure", ["ctrl-c", "disk"])
def test_cli_a_vacuum_cut_short_still_says_what_the_committed_prune_removed(
    run_cli, engine, db, monkeypatch, failure
):
    # Ctrl-C during VACUUM printed only "interrupted" (exit 130), though the deletion was committed:
    # a JSON log never learned which runs went.
    history(engine)

    def stop(_engine):
        if failure == "ctrl-c":
            raise KeyboardInterrupt
        raise Boom()

    monkeypatch.setattr(retention, "vacuum_database", stop)
    result = run_cli("db", "prune", "--db", db, "--keep", "2", "--vacuum", "--format", "json")
    assert result.exit_code == (130 if failure == "ctrl-c" else 3)
    shown = json.loads(result.stdout)
    assert (shown["deleted_runs"], shown["vacuum"]) == (DELETED, None)
    assert [run.id for run in list_runs(engine)] == [3, *KEPT]
    if failure == "ctrl-c":
        assert result.stderr.splitlines()[-2:] == [
            "the prune was committed; VACUUM was interrupted (run --vacuum again later)",
            "auditor: interrupted",
        ]
    else:
        assert result.stderr.splitlines()[-2].startswith("error: the prune was committed, but VACUUM failed")
        # a probe's full temporary folder (where VACUUM builds its copy) was blamed on the database
        assert result.stderr.splitlines()[-1] == f"hint: {retention.VACUUM_HINT}"
        assert "temporary folder ($SQLITE_TMPDIR, else $TMPDIR" in retention.VACUUM_HINT


@pytest.mark.parametrize("when", ["after the commit", "while printing", "restoring the settings"])
def test_cli_a_ctrl_c_after_the_commit_still_says_what_went(run_cli, engine, db, monkeypatch, when):
    # A Ctrl-C landing just after the commit (while the connection's settings were restored, or
    # before the result was printed) printed only "auditor: interrupted", exit 130: the runs were
    # gone and a JSON log never learned which.
    import auditor.cli.store as cli_store

    history(engine)
    if when in ("after the commit", "restoring the settings"):
        writing = retention._writing

        @contextlib.contextmanager
        def interrupted_after_commit(engine_, outcome=None):
            with writing(engine_, outcome) as connection:
                yield connection
            if when == "after the commit":
                raise KeyboardInterrupt  # the transaction is committed by now
            raise Boom()  # a database error once committed: it said "nothing was deleted"

        monkeypatch.setattr(retention, "_writing", interrupted_after_commit)
    else:
        show = cli_store._show_prune

        def interrupted_while_printing(result, fmt, output):
            os.kill(os.getpid(), signal.SIGINT)  # held until the whole result is out
            time.sleep(0.05)
            show(result, fmt, output)

        monkeypatch.setattr(cli_store, "_show_prune", interrupted_while_printing)
    result = run_cli("db", "prune", "--db", db, "--keep", "2", "--format", "json")
    assert json.loads(result.stdout)["deleted_runs"] == DELETED  # printed once, whole
    assert [run.id for run in list_runs(engine)] == [3, *KEPT]
    if when == "restoring the settings":
        assert result.exit_code == 3
        assert result.stderr.splitlines()[-2].startswith(
            "error: the prune was committed, but restoring the connection's settings failed: disk I/O error"
        )
        return
    assert result.exit_code == 130
    assert result.stderr.splitlines()[-2:] == [
        "the prune was committed before the interrupt",
        "auditor: interrupted",
    ]


# -- abandoned runs: a writer killed hard ----------------------------------------------------------

HOST = socket.gethostname()
SOURCE_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(auditor.__file__)))
MARKED_AT = r"marked failed by auditor db prune at \d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ"


def skipped_alive(run_id: int) -> str:
    """What a prune says of a running run written by this (alive) process."""
    alive = f"the process that writes it (pid {os.getpid()} on host {HOST}) is alive"
    return f"run {run_id} is old enough to go but still running: skipped ({alive})"


NO_WRITER = "no writer was recorded for it (a run started before auditor recorded them)"
WRITER_SCRIPT = textwrap.dedent(
    f"""
    import sys
    sys.path.insert(0, {os.path.dirname(__file__)!r})
    from conftest import make_catalog
    from auditor.bigid.models import parse_cluster, parse_column
    from auditor.store.db import open_database
    from auditor.store.writer import SnapshotWriter
    catalog = make_catalog(1, 2)
    catalog[0][1][1]["fullyQualifiedName"] = "abandoned.only.column"
    writer = SnapshotWriter(open_database(sys.argv[1]), source_url="http://127.0.0.1:1")
    for position, (cluster, columns) in enumerate(catalog):
        writer.add_cluster(parse_cluster(cluster), cluster, position)
        writer.add_columns(cluster["id"], [(parse_column(c), c) for c in columns])
    writer.flush()
    print(writer.run_id, flush=True)
    sys.stdin.read()  # blocks until killed (or stdin closed)
    """
)


@pytest.fixture
def writer_process(db) -> Iterator[Callable[[], tuple[subprocess.Popen, int]]]:
    """``start()``: a real process that starts a run through the real writer, then blocks."""
    started: list[subprocess.Popen] = []

    def start() -> tuple[subprocess.Popen, int]:
        process = subprocess.Popen(
            [sys.executable, "-c", WRITER_SCRIPT, db],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONPATH": SOURCE_ROOT},  # this tree's auditor, wherever the cwd
        )
        started.append(process)
        ready, _, _ = select.select([process.stdout], [], [], 60)
        assert ready, "the writer process did not start its run within 60 s"
        line = process.stdout.readline()
        assert line.strip().isdigit(), process.stderr.read()
        return process, int(line)

    yield start
    for process in started:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=60)
        for stream in (process.stdin, process.stdout, process.stderr):
            stream.close()


def liveness_of(engine, run_id: int, **options) -> Liveness | None:
    run = get_run(engine, run_id)
    assert run is not None
    return run_liveness(run.status, run.started_at, run.details, **options)


def runs_json(run_cli, db: str) -> dict[int, dict]:
    result = run_cli("runs", "--db", db, "--format", "json")
    assert result.exit_code == 0, result.output
    return {run["id"]: run for run in json.loads(result.stdout)["runs"]}


def test_a_killed_writer_is_abandoned_and_prune_marks_it_failed_then_deletes_it(
    run_cli, engine, db, writer_process
):
    """Run 1 complete, run 2 written by a process then killed -9, run 3 complete."""
    assert write_catalog(engine, make_catalog(3, 4)) == 1
    process, run_id = writer_process()
    assert run_id == 2
    assert write_catalog(engine, make_catalog(3, 4)) == 3
    pid = process.pid
    recorded = get_run(engine, 2).details["writer"]
    assert recorded == {**writer_identity(), "pid": pid, **({"start": ANY} if "start" in recorded else {})}
    alive = f"the process that writes it (pid {pid} on host {HOST}) is alive"
    assert liveness_of(engine, 2) == Liveness("active", alive)
    later = datetime.now(UTC) + timedelta(days=9)  # an alive writer is never abandoned, however old
    assert liveness_of(engine, 2, abandoned_after=0.0001, now=later).state == "active"
    assert (runs_json(run_cli, db)[2]["liveness"], runs_json(run_cli, db)[2]["liveness_reason"]) == (
        "active",
        alive,
    )
    alive_prune = run_cli(
        "db", "prune", "--db", db, "--keep", "1", "--abandoned-after", "0.0001", "--dry-run"
    )
    assert alive_prune.exit_code == 0, alive_prune.output
    assert alive_prune.stdout.splitlines()[1:5] == [
        "  runs deleted      1",
        "  runs kept         3",
        "  running, skipped  2",
        "  marked failed     none",
    ]
    alive_prune = run_cli("db", "prune", "--db", db, "--keep", "2", "--abandoned-after", "1e-4")
    assert alive_prune.exit_code == 0, alive_prune.output
    assert alive_prune.stdout.splitlines()[:5] == [
        "nothing to prune: no run matched",
        "  runs deleted      none",
        "  runs kept         1-3",  # run 2 among them: newer than the oldest complete run kept
        "  running, skipped  none",
        "  marked failed     none",
    ]
    assert alive_prune.stderr == ""
    assert get_run(engine, 2).status == "running"

    process.kill()  # SIGKILL: no chance to mark its run failed
    assert process.wait(timeout=60) == -signal.SIGKILL
    gone = f"the process that wrote it (pid {pid} on host {HOST}) is gone"
    assert liveness_of(engine, 2) == Liveness("abandoned", gone)
    listing = run_cli("runs", "--db", db)
    assert listing.exit_code == 0
    assert [line.split()[:3] for line in listing.stdout.splitlines()] == [
        ["ID", "STATUS", "STARTED"],
        ["1", "complete", ANY],
        ["2", "running", "(abandoned)"],
        ["3", "complete", ANY],
    ]
    assert runs_json(run_cli, db)[2]["liveness"] == "abandoned"
    assert runs_json(run_cli, db)[3]["liveness"] is None

    # --dry-run reports the run it would mark, and changes nothing
    before = table_dump(engine)
    dry = run_cli("db", "prune", "--db", db, "--keep", "1", "--dry-run", "--format", "json")
    assert dry.exit_code == 0, dry.output
    shape = json.loads(dry.stdout)
    assert (shape["marked_failed"], shape["deleted_runs"], shape["kept_runs"], shape["skipped_running"]) == (
        [2],
        [1, 2],
        [3],
        [],
    )
    assert (shape["run_columns_removed"], shape["column_versions_removed"]) == (12 + 2, 1)
    assert dry.stderr == f"run 2 is abandoned: {gone}; would be marked failed\n"
    assert table_dump(engine) == before

    # with a policy that keeps it (newer than the oldest complete run kept): marked failed, kept
    kept = run_cli("db", "prune", "--db", db, "--keep", "2")
    assert kept.exit_code == 0, kept.output
    assert kept.stdout.splitlines() == [
        "pruned: removed",
        "  runs deleted      none",
        "  runs kept         1-3",
        "  running, skipped  none",
        "  marked failed     2",
        "  membership rows   0",
        "  evaluations       0",
        "  findings          0",
        "  column versions   0",
        "  cluster versions  0",
    ]
    assert kept.stderr == f"run 2 is abandoned: {gone}; marked failed\n"
    run = get_run(engine, 2)
    assert run.status == "failed" and run.finished_at is not None
    assert re.fullmatch(f"abandoned: {re.escape(gone)}; {MARKED_AT}", run.error), run.error
    assert run.details["writer"]["pid"] == pid  # what it was written by stays on record
    assert count_run_rows(engine, 2) == (1, 2)  # its rows are there until the policy deletes it
    assert runs_json(run_cli, db)[2]["liveness"] is None

    # then it is a failed run like any other: --keep 1 deletes it with run 1
    done = run_cli("db", "prune", "--db", db, "--keep", "1", "--format", "json")
    assert done.exit_code == 0, done.output
    result = json.loads(done.stdout)
    assert (result["marked_failed"], result["deleted_runs"], result["kept_runs"]) == ([], [1, 2], [3])
    assert (result["run_columns_removed"], result["column_versions_removed"]) == (12 + 2, 1)
    assert done.stderr == ""
    assert scalar(engine, "SELECT count(*) FROM runs") == 1
    assert scalar(engine, "SELECT count(*) FROM column_versions WHERE fqn = 'abandoned.only.column'") == 0
    assert orphans(engine) == {}


def test_a_killed_writers_run_is_marked_and_deleted_in_one_prune(run_cli, engine, db, writer_process):
    assert write_catalog(engine, make_catalog(3, 4)) == 1
    process, run_id = writer_process()
    assert write_catalog(engine, make_catalog(3, 4)) == 3
    process.kill()
    process.wait(timeout=60)
    result = run_cli("db", "prune", "--db", db, "--keep", "1", "--format", "json")
    assert result.exit_code == 0, result.output
    shape = json.loads(result.stdout)
    assert (shape["marked_failed"], shape["deleted_runs"], shape["kept_runs"], shape["skipped_running"]) == (
        [2],
        [1, 2],
        [3],
        [],
    )
    assert shape["run_columns_removed"] == 14
    assert get_run(engine, run_id) is None
    assert orphans(engine) == {}


def test_runs_of_other_hosts_or_without_a_writer_are_unknown_until_abandoned_after(run_cli, engine, db):
    """Run 1 complete (10 days old), 2 running on another host (30 h), 3 running before writers were
    recorded (50 h), 4 complete."""
    now = datetime.now(UTC)
    assert write_catalog(engine, make_catalog(3, 4)) == 1
    assert write_running(engine, make_catalog(1, 2)) == 2
    assert write_running(engine, make_catalog(1, 3)) == 3
    assert write_catalog(engine, make_catalog(3, 4)) == 4
    other = {"host": "ci-runner-7", "pid": 4242, "boot_id": "b", "start": 1}
    with engine.begin() as connection:
        for run_id, started, details in [
            (1, now - timedelta(days=10), None),
            (2, now - timedelta(hours=30), {"workers": 2, "writer": other}),
            (3, now - timedelta(hours=50), {"workers": 2}),
        ]:
            values = {"started_at": started} | ({"details": details} if details else {})
            connection.execute(runs.update().where(runs.c.id == run_id).values(**values))
    elsewhere = (
        f"the process that writes it (pid 4242 on host ci-runner-7) cannot be checked from host {HOST}"
    )
    listed = runs_json(run_cli, db)
    assert (listed[2]["liveness"], listed[2]["liveness_reason"]) == ("unknown", elsewhere)
    assert (listed[3]["liveness"], listed[3]["liveness_reason"]) == ("unknown", NO_WRITER)
    table = run_cli("runs", "--db", db).stdout.splitlines()
    assert [line.split()[1:3] for line in table[2:4]] == [["running", "(unknown)"], ["running", "(unknown)"]]

    before = table_dump(engine)
    plain = run_cli("db", "prune", "--db", db, "--keep", "1", "--dry-run", "--format", "json")
    shape = json.loads(plain.stdout)
    assert (shape["marked_failed"], shape["deleted_runs"], shape["skipped_running"]) == ([], [1], [2, 3])
    hint = "; if it is not, --abandoned-after HOURS lets a prune mark it failed by its age"
    assert plain.stderr.splitlines() == [
        f"run 2 is old enough to go but still running: skipped ({elsewhere}){hint}",
        f"run 3 is old enough to go but still running: skipped ({NO_WRITER}){hint}",
    ]
    aged = run_cli("db", "prune", "--db", db, "--keep", "1", "--abandoned-after", "40", "--dry-run")
    assert aged.exit_code == 0, aged.output
    assert aged.stdout.splitlines()[1:5] == [
        "  runs deleted      1, 3",
        "  runs kept         4",
        "  running, skipped  2",
        "  marked failed     3",
    ]
    # --abandoned-after given: the hint suggesting it is not repeated
    assert f"run 2 is old enough to go but still running: skipped ({elsewhere})" in aged.stderr.splitlines()
    assert table_dump(engine) == before

    # 30 h > 24 h: run 2 too; --older-than 1.5 days keeps it (started 1.25 days ago), marked failed
    done = run_cli(
        "db", "prune", "--db", db, "--keep", "1", "--older-than", "1.5", "--abandoned-after", "24",
        "--format", "json",
    )  # fmt: skip
    assert done.exit_code == 0, done.output
    shape = json.loads(done.stdout)
    assert (shape["marked_failed"], shape["deleted_runs"], shape["kept_runs"]) == ([2, 3], [1, 3], [2, 4])
    assert done.stderr.splitlines() == [
        f"run 2 is abandoned: it started 30.0 hours ago, more than --abandoned-after 24, and {elsewhere}; "
        "marked failed",
        f"run 3 is abandoned: it started 50.0 hours ago, more than --abandoned-after 24, and {NO_WRITER}; "
        "marked failed",
    ]
    run = get_run(engine, 2)
    assert run.status == "failed"
    expected = f"abandoned: it started 30.0 hours ago, more than --abandoned-after 24, and {elsewhere}"
    assert re.fullmatch(f"{re.escape(expected)}; {MARKED_AT}", run.error), run.error
    assert run.details["workers"] == 2  # the other details are untouched
    assert get_run(engine, 3) is None
    assert orphans(engine) == {}


def test_abandoned_after_must_be_positive(run_cli, tmp_path):
    never = str(tmp_path / "never.db")
    result = run_cli("db", "prune", "--db", never, "--keep", "1", "--abandoned-after", "0")
    assert result.exit_code == 2
    assert result.stderr.splitlines()[0] == (
        "error: --abandoned-after must be more than 0 hours (and at most 876,000), not 0"
    )
    assert not (tmp_path / "never.db").exists()


def test_a_plan_naming_a_run_whose_writer_is_alive_neither_marks_nor_deletes_it(engine):
    """The check made again under the lock has the last word (run 3's writer is this process)."""
    history(engine)
    plan = plan_prune(engine, keep=2, abandoned_after=1, now=NOW)  # run 3: 40 days old, but alive
    assert (plan.marked_failed, plan.skipped_running, plan.deleted_runs) == ((), (3,), (1, 2))
    stale = replace(plan, marked_failed=(3,), deleted_runs=(1, 2, 3), skipped_running=())
    result = prune(engine, stale)
    assert (result.marked_failed, result.deleted_runs, result.skipped_running) == ((), (1, 2), (3,))
    assert scalar(engine, "SELECT status FROM runs WHERE id = 3") == "running"
    assert scalar(engine, "SELECT error FROM runs WHERE id = 3") is None
