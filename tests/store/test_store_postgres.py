"""The same store and migrations against a real PostgreSQL server (AUDITOR_TEST_POSTGRES_URL)."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from auditor.store import db as store_db
from auditor.store.runs import count_run_rows, list_runs, resolve_run
from auditor.store.writer import RunTotals

from .conftest import make_catalog, schema_drift, snapshot_content, write_catalog, write_legacy_catalog

pytestmark = pytest.mark.postgres


def test_postgres_database_is_created_at_head_and_matches_models(fresh_postgres):
    engine = store_db.open_database(fresh_postgres)
    try:
        assert store_db.current_revision(engine) == store_db.head_revision()
        with engine.connect() as connection:
            assert schema_drift(connection) == []
    finally:
        engine.dispose()


def test_postgres_connections_compile_nothing_with_jit(fresh_postgres):
    """JIT compilation cost more than the statements it compiled (1.27 of 1.27 s for one rule at
    200,000 columns); every connection of the engine has it off, after a rollback too."""
    engine = store_db.open_database(fresh_postgres)
    try:
        for _ in range(2):  # the pool hands the same connection back, rolled back in between
            with engine.connect() as connection:
                assert connection.execute(text("SHOW jit")).scalar() == "off"
                connection.rollback()
        with engine.begin() as connection:
            assert connection.execute(text("SHOW jit")).scalar() == "off"
    finally:
        engine.dispose()


def test_postgres_times_are_utc_whatever_the_session_zone(fresh_postgres, monkeypatch):
    """A server (or PGTZ) in New York: the report and the email printed 09:22 "UTC" for 14:22, and
    `auditor runs` the local time under STARTED (UTC)."""
    from datetime import UTC, datetime, timedelta

    from auditor.render.env import when

    monkeypatch.setenv("PGTZ", "America/New_York")
    engine = store_db.open_database(fresh_postgres)
    try:
        before = datetime.now(UTC)
        write_catalog(engine, make_catalog(1, 1))
        with engine.connect() as connection:
            assert connection.execute(text("SHOW TIME ZONE")).scalar() == "UTC"
        (run,) = list_runs(engine)
        started = run.to_json()["started_at"]
        assert started.endswith("Z")
        parsed = datetime.fromisoformat(started.replace("Z", "+00:00"))
        assert abs(parsed - before) < timedelta(minutes=1)
        assert when(started) == parsed.strftime("%Y-%m-%d %H:%M:%S UTC")
        from click.testing import CliRunner

        from auditor.cli.main import cli

        table = CliRunner().invoke(cli, ["runs", "--db", fresh_postgres], catch_exceptions=False)
        assert parsed.strftime("%Y-%m-%d %H:%M:%S") in table.stdout.splitlines()[1], table.stdout
    finally:
        engine.dispose()


def test_postgres_lock_waits_end_like_sqlite_s_with_the_lock_hint(fresh_postgres):
    # A snapshot waiting behind another session's lock waited forever (killed at 360 s in a probe);
    # on SQLite the same wait ends after the 5-minute busy timeout.
    import psycopg
    from sqlalchemy.engine import make_url

    engine = store_db.open_database(fresh_postgres)
    try:
        with engine.connect() as connection:
            assert connection.execute(text("SHOW lock_timeout")).scalar() == "5min"
        url = make_url(fresh_postgres).set(drivername="postgresql")
        with psycopg.connect(url.render_as_string(hide_password=False)) as holder:
            holder.execute("LOCK TABLE runs IN ACCESS EXCLUSIVE MODE")
            with (
                pytest.raises(store_db.StoreError) as caught,
                store_db.store_errors("could not read the runs"),
                engine.connect() as connection,
            ):
                connection.exec_driver_sql("SET lock_timeout = 200")  # the same path, sooner
                connection.execute(text("SELECT count(*) FROM runs"))
            holder.rollback()
        assert caught.value.message.startswith("could not read the runs: canceling statement due to lock")
        assert caught.value.hint.startswith("another process held the database's write lock for longer")
    finally:
        engine.dispose()


def test_postgres_snapshots_share_versions_and_resolve_runs(fresh_postgres):
    engine = store_db.open_database(fresh_postgres)
    try:
        first = write_catalog(engine, make_catalog(3, 4))
        second = write_catalog(engine, make_catalog(3, 4, variant=1))
        failed = write_catalog(engine, make_catalog(1, 1), complete=False)
        with engine.connect() as connection:
            assert connection.execute(text("select count(*) from column_versions")).scalar() == 13
        assert [r.status for r in list_runs(engine)] == ["complete", "complete", "failed"]
        assert resolve_run(engine, "latest").id == second
        assert count_run_rows(engine, first) == (3, 12)
        assert failed > second
    finally:
        engine.dispose()


def test_postgres_first_revision_with_data_upgrades_without_loss(fresh_postgres):
    engine = store_db.create_db_engine(store_db.database_url(fresh_postgres))
    try:
        store_db.upgrade(engine, "0001")
        run_id = write_legacy_catalog(engine, make_catalog(2, 5))
        with engine.connect() as connection:
            before = snapshot_content(connection)
        assert len(before["run_columns"]) == 10
        store_db.upgrade(engine)
        assert store_db.current_revision(engine) == store_db.head_revision()
        with engine.connect() as connection:
            assert snapshot_content(connection) == before
            assert schema_drift(connection) == []
        assert resolve_run(engine, run_id).complete
        # new versions take ids after the migrated ones (the sequence was filled by the migration)
        write_catalog(engine, make_catalog(2, 5, variant=1))
        with engine.connect() as connection:
            assert connection.execute(text("select count(*) from column_versions")).scalar() == 11
        from alembic import command

        with engine.begin() as connection:
            command.downgrade(store_db._alembic_config(connection), "0002")
        with engine.connect() as connection:
            after_down = snapshot_content(connection)
        store_db.upgrade(engine)
        with engine.connect() as connection:
            assert snapshot_content(connection) == after_down
            assert schema_drift(connection) == []
    finally:
        engine.dispose()


@pytest.mark.parametrize(
    ("cluster", "column", "where"),
    [
        ({"id": "k1", "labels": ["P\x00II"]}, {"fullyQualifiedName": "a.b.c"}, "cluster 'k1'"),
        (
            {"id": "k1"},
            {"fullyQualifiedName": "a.b.c", "tags": [{"tagName": "t\x00"}]},
            "column 'a.b.c' of cluster 'k1'",
        ),
        ({"id": "k1"}, {"fullyQualifiedName": "a.b\x00c"}, "column 'a.b\\x00c' of cluster 'k1'"),
    ],
    ids=["cluster-label", "column-tag", "column-fqn"],
)
def test_postgres_names_the_record_holding_a_nul_character(fresh_postgres, cluster, column, where):
    """PostgreSQL text cannot hold U+0000 (SQLite can). The error said only that, with the hint
    'check that the database is writable and not full'; it now names the record. A NUL only in the
    raw record (JSON, where it is escaped) is stored."""
    from auditor.bigid.models import parse_cluster, parse_column
    from auditor.errors import StoreError
    from auditor.store.writer import SnapshotWriter

    engine = store_db.open_database(fresh_postgres)
    writer = SnapshotWriter(engine, source_url="http://127.0.0.1:1")
    writer.add_cluster(parse_cluster(cluster), cluster, 0)
    writer.add_columns("k1", [(parse_column(column), column)])
    with pytest.raises(StoreError) as caught:
        writer.flush()
    assert caught.value.message == (
        f"could not write run {writer.run_id}: the database cannot store the NUL character (U+0000) "
        f"that {where} contains"
    )
    assert caught.value.hint.startswith("PostgreSQL text cannot hold U+0000 (SQLite can: --db FILE.db)")
    writer.fail(caught.value.message)

    raw_only = {"fullyQualifiedName": "a.b.d", "note": "x\x00y"}
    writer = SnapshotWriter(engine, source_url="http://127.0.0.1:1")
    writer.add_cluster(parse_cluster({"id": "k2", "extra": "\x00"}), {"id": "k2", "extra": "\x00"}, 0)
    writer.add_columns("k2", [(parse_column(raw_only), raw_only)])
    writer.complete(RunTotals())
    assert [run.status for run in list_runs(engine)] == ["failed", "complete"]


def test_postgres_bulk_rows_go_through_copy_with_the_insert_semantics(fresh_postgres, monkeypatch):
    """Rows written with COPY (psycopg 3) read back as the INSERT path stores them: JSON text as
    JSON, None in a JSON column as JSON null, flags given as 0/1 as booleans, text with tabs,
    newlines and backslashes intact; a NUL is raised as SQLAlchemy's DBAPIError."""
    from sqlalchemy import JSON, Boolean, Column, Integer, MetaData, Table, Text, select
    from sqlalchemy.exc import DBAPIError

    from auditor.store import writer
    from auditor.store.writer import insert_tuples

    copies: list[str] = []
    real_copy = writer._copy_rows
    monkeypatch.setattr(writer, "_copy_rows", lambda c, t, *a: (copies.append(t.name), real_copy(c, t, *a)))

    table = Table(
        "copy_probe",
        MetaData(),
        Column("id", Integer, primary_key=True),
        Column("note", Text),
        Column("flag", Boolean),
        Column("doc", JSON),
    )
    engine = store_db.open_database(fresh_postgres)
    try:
        table.create(engine)
        rows = [
            (1, "tab\there\nnew line \\ back", 1, '{"a": [1, 2]}'),
            (2, None, 0, None),
            (3, "été ✓", None, ["x", {"y": None}]),
        ]
        with engine.begin() as connection:
            insert_tuples(connection, table, ("id", "note", "flag", "doc"), iter(rows), ignore=False)
        with engine.connect() as connection:
            got = connection.execute(
                select(table.c.id, table.c.note, table.c.flag, table.c.doc, table.c.doc.is_(None)).order_by(
                    table.c.id
                )
            ).all()
        assert copies == ["copy_probe"]
        assert [tuple(r) for r in got] == [
            (1, "tab\there\nnew line \\ back", True, {"a": [1, 2]}, False),
            (2, None, False, None, False),  # JSON null, not SQL NULL, as SQLAlchemy's JSON stores None
            (3, "été ✓", None, ["x", {"y": None}], False),
        ]
        with pytest.raises(DBAPIError, match="NUL"), engine.begin() as connection:
            insert_tuples(
                connection, table, ("id", "note", "flag", "doc"), [(4, "a\x00b", 0, "{}")], ignore=False
            )
    finally:
        engine.dispose()


def test_keys_in_binds_one_array_and_finds_what_in_finds(fresh_postgres):
    """Chunked lookups by key bind their keys as one array on PostgreSQL (psycopg re-parsed an
    IN list of thousands of placeholders on every call: 1.5 s of a 1M-column diff)."""
    from sqlalchemy import select

    from auditor.store.schema import column_versions

    engine = store_db.open_database(fresh_postgres)
    try:
        write_catalog(engine, make_catalog(3, 4))
        with engine.connect() as connection:
            stored = connection.execute(select(column_versions.c.id, column_versions.c.hash)).all()
            ids = [*(row.id for row in stored[:5]), 10**12]  # and one that matches nothing
            hashes = [*(row.hash for row in stored[-3:]), "0" * 32]
            condition = store_db.keys_in(connection, column_versions.c.id, ids)
            assert "= ANY (" in str(condition.compile(dialect=connection.dialect))
            by_id = connection.execute(select(column_versions.c.id).where(condition)).scalars().all()
            assert sorted(by_id) == sorted(ids[:5])
            found = connection.execute(
                select(column_versions.c.hash).where(
                    store_db.keys_in(connection, column_versions.c.hash, hashes)
                )
            )
            assert sorted(found.scalars().all()) == sorted(hashes[:3])
            assert (
                connection.execute(
                    select(column_versions.c.id).where(store_db.keys_in(connection, column_versions.c.id, []))
                ).all()
                == []
            )
    finally:
        engine.dispose()


def test_counts_past_32_bits_are_stored_on_postgresql_as_on_sqlite(fresh_postgres, tmp_path):
    """A cluster announcing three billion columns: SQLite stored it, PostgreSQL failed the whole
    snapshot ("integer out of range"), its INTEGER stopping at 2**31 - 1 (migration 0005)."""
    from sqlalchemy import select

    from auditor.store.schema import cluster_versions, run_clusters

    catalog = make_catalog(2, 2)
    catalog[0][0]["size"] = 3_000_000_000
    stored = []
    for target in (str(tmp_path / "a.db"), fresh_postgres):
        engine = store_db.open_database(target)
        try:
            run_id = write_catalog(engine, catalog)
            with engine.connect() as connection:
                sizes = connection.execute(
                    select(cluster_versions.c.size).order_by(cluster_versions.c.size)
                ).scalars()
                announced = connection.execute(
                    select(run_clusters.c.size_announced).where(run_clusters.c.run_id == run_id)
                ).scalars()
                stored.append((sorted(sizes), sorted(announced), resolve_run(engine, run_id).status))
        finally:
            engine.dispose()
    assert stored[0] == stored[1] == ([2, 3_000_000_000], [2, 3_000_000_000], "complete")


def test_a_confidence_of_nan_is_no_confidence_on_both_stores(fresh_postgres, tmp_path):
    """'NaN' was NULL in SQLite but NaN in PostgreSQL, which ranks it above every number: a rule
    'confidence >= 0.9' flagged the column there only."""
    from sqlalchemy import select

    from auditor.store.schema import column_attributes

    catalog = make_catalog(1, 1)
    catalog[0][1][0]["attributes"] = [
        {"attribute_name": "SSN", "calc_confidence_level": "NaN"},
        {"attribute_name": "Email", "calc_confidence_level": 0.5},
    ]
    stored = []
    for target in (str(tmp_path / "a.db"), fresh_postgres):
        engine = store_db.open_database(target)
        try:
            write_catalog(engine, catalog)
            with engine.connect() as connection:
                stored.append(
                    connection.execute(
                        select(column_attributes.c.attribute_name, column_attributes.c.confidence).order_by(
                            column_attributes.c.attribute_name
                        )
                    ).all()
                )
        finally:
            engine.dispose()
    assert [list(map(tuple, rows)) for rows in stored] == [[("Email", 0.5), ("SSN", None)]] * 2


def test_a_confidence_of_minus_zero_is_stored_as_zero_on_both_stores(fresh_postgres, tmp_path):
    """A parity probe: SQLite stores -0.0 as 0.0 and PostgreSQL kept the sign, so the diff, the
    report and their JSON showed "(High, 0.0)" on one and "(High, -0.0)" on the other."""
    import math

    from sqlalchemy import select

    from auditor.store.schema import column_attributes

    catalog = make_catalog(1, 1)
    catalog[0][1][0]["attributes"] = [
        {"attribute_name": "A", "calc_confidence_level": -0.0},
        {"attribute_name": "B", "calc_confidence_level": "-0"},
        {"attribute_name": "C", "calc_confidence_level": "-0.0%"},
    ]
    for target in (str(tmp_path / "a.db"), fresh_postgres):
        engine = store_db.open_database(target)
        try:
            write_catalog(engine, catalog)
            with engine.connect() as connection:
                values = connection.execute(
                    select(column_attributes.c.confidence).order_by(column_attributes.c.attribute_name)
                ).scalars()
                assert [(value, math.copysign(1.0, value)) for value in values] == [(0.0, 1.0)] * 3, target
        finally:
            engine.dispose()


def test_db_upgrade_of_a_server_database_that_cannot_be_opened_is_one_line(fresh_postgres):
    # Found by a probe: 'auditor db upgrade' connected (to look for foreign tables) outside its
    # error handling, so a database that does not exist was an "internal error ... report it".
    from click.testing import CliRunner
    from sqlalchemy.engine import make_url

    from auditor.cli.main import cli

    missing = make_url(fresh_postgres).set(database="auditor_no_such_database", password="pgPW-77c1")
    shown = missing.render_as_string(hide_password=False)
    result = CliRunner().invoke(cli, ["db", "upgrade", "--db", shown], catch_exceptions=False)
    assert result.exit_code == 3
    first = result.stderr.splitlines()[0]
    assert first.startswith("error: could not migrate the database postgresql+psycopg://")
    assert first.endswith("/auditor_no_such_database: OperationalError")
    assert "internal error" not in result.stderr and "pgPW-77c1" not in result.stderr


def test_a_statement_timeout_while_checking_is_a_store_error_with_its_hint(fresh_postgres):
    # Found by a probe: a role's statement_timeout cancelling the read of a stored evaluation was an
    # "internal error ... report it" from auditor check (diff, report and prune said it in one line).
    from sqlalchemy.engine import make_url

    from auditor.engine import check_run, load_ruleset

    engine = store_db.open_database(fresh_postgres)
    try:
        write_catalog(engine, make_catalog(3, 40))
        check_run(engine, "latest", load_ruleset(None))  # stores the evaluation read below
    finally:
        engine.dispose()
    url = make_url(fresh_postgres).update_query_dict({"options": "-c statement_timeout=1"})
    impatient = store_db.create_db_engine(url.render_as_string(hide_password=False))
    try:
        with pytest.raises(store_db.StoreError) as caught:
            for _ in range(20):  # 1 ms: some statement of the check is cancelled
                check_run(impatient, "latest", load_ruleset(None))
        # (PostgreSQL words a timeout that fires as one statement ends and lands on the next as a
        # "user request": seen once in CI; either way the hint says what to do)
        said = caught.value.message
        if "canceling statement due to user request" in said:
            assert caught.value.hint == store_db.CANCELLED_HINT
        else:
            assert "canceling statement due to statement timeout" in said
            assert caught.value.hint == store_db.TIMEOUT_HINT
    finally:
        impatient.dispose()


def test_commands_that_read_runs_create_nothing_in_a_server_database_without_a_store(fresh_postgres):
    # Found by a probe: 'auditor runs' pointed at another application's database on a shared
    # server created the tool's eleven tables there; 'check' did too, then exited 3.
    from click.testing import CliRunner
    from sqlalchemy import create_engine, inspect

    from auditor.cli.main import cli

    def tables() -> list[str]:
        engine = create_engine(fresh_postgres)
        try:
            with engine.connect() as connection:
                return inspect(connection).get_table_names()
        finally:
            engine.dispose()

    runner = CliRunner()
    listed = runner.invoke(cli, ["runs", "--db", fresh_postgres], catch_exceptions=False)
    assert listed.exit_code == 0 and "no runs yet" in listed.output
    for command in (["check"], ["diff"], ["report"]):
        result = runner.invoke(cli, [*command, "--db", fresh_postgres], catch_exceptions=False)
        assert result.exit_code == 3, (command, result.output)
        assert result.stderr.splitlines()[0].startswith("error: there is no auditor database at postgresql")
        assert result.stderr.splitlines()[0].endswith("yet (it holds none of its tables)")
    assert tables() == []
    assert runner.invoke(cli, ["db", "upgrade", "--db", fresh_postgres]).exit_code == 0  # on purpose: yes
    assert "runs" in tables()


@pytest.mark.parametrize(
    ("query", "said"),
    [
        ("bogus=1", 'invalid connection option "bogus"'),
        ("connect_timeout=abc", "bad value for connect_timeout"),
    ],
)
def test_a_connection_option_the_driver_refuses_is_a_usage_error(fresh_postgres, query, said):
    # Found by a probe: '?bogus=1' in --db exited 3, as if the database had failed
    from auditor.errors import ConfigError

    with pytest.raises(ConfigError) as caught:
        store_db.open_database(f"{fresh_postgres}?{query}")
    assert caught.value.exit_code == 2 and said in caught.value.message


def test_postgres_keeps_its_revision_beside_its_tables_not_another_app_s(fresh_postgres):
    """Found by a PostgreSQL probe: with a schema of the tool's own first in the search path and
    another Alembic application's alembic_version in public, the tool read that application's
    revision ("written by a newer cluster-auditor (schema revision a1b2c3d4e5f6)"), or tried to
    migrate it."""
    from sqlalchemy.engine import make_url

    setup = store_db.create_db_engine(fresh_postgres)
    with setup.begin() as connection:
        connection.execute(text("CREATE TABLE public.alembic_version (version_num varchar(32) PRIMARY KEY)"))
        connection.execute(text("INSERT INTO public.alembic_version VALUES ('a1b2c3d4e5f6')"))
        connection.execute(text("CREATE SCHEMA aud"))
    setup.dispose()
    url = make_url(fresh_postgres).update_query_dict({"options": "-csearch_path=aud,public"})
    engine = store_db.open_database(url.render_as_string(hide_password=False))
    try:
        assert store_db.current_revision(engine) == store_db.head_revision()
        write_catalog(engine, make_catalog(2, 3))
        with engine.connect() as connection:
            assert connection.execute(text("SELECT version_num FROM aud.alembic_version")).scalar() == (
                store_db.head_revision()
            )
            assert connection.execute(text("SELECT version_num FROM public.alembic_version")).scalar() == (
                "a1b2c3d4e5f6"
            )
            assert connection.execute(text("SELECT count(*) FROM aud.run_columns")).scalar() == 6
            assert schema_drift(connection) == []
    finally:
        engine.dispose()


def test_postgres_a_first_day_database_gets_the_fingerprint_index(fresh_postgres):
    """Found by an upgrade probe: a database made before 0002 gained ix_findings_fingerprint_run
    upgraded to head without it (migration 0006 adds it)."""
    engine = store_db.create_db_engine(fresh_postgres)
    store_db.upgrade(engine, "0002")
    with engine.begin() as connection:
        connection.execute(text("DROP INDEX ix_findings_fingerprint_run"))
    engine.dispose()
    upgraded = store_db.open_database(fresh_postgres)
    try:
        with upgraded.connect() as connection:
            assert schema_drift(connection) == []
            assert (
                connection.execute(
                    text("SELECT count(*) FROM pg_indexes WHERE indexname = 'ix_findings_fingerprint_run'")
                ).scalar()
                == 1
            )
    finally:
        upgraded.dispose()


def test_postgres_a_role_without_usage_on_the_schema_is_told_so_not_shown_an_empty_history(
    fresh_postgres, run_cli
):
    """Found by a PostgreSQL probe: `auditor runs` listed no runs (and check said "take a snapshot
    first") for a role that may not use the schema holding the history."""
    import secrets as std_secrets

    from sqlalchemy.engine import make_url

    role = f"auditor_nousage_{std_secrets.token_hex(4)}"
    owner = store_db.open_database(fresh_postgres)
    write_catalog(owner, make_catalog(1, 2))
    with owner.begin() as connection:
        connection.exec_driver_sql(f"CREATE ROLE {role} LOGIN")
        connection.exec_driver_sql(f"REVOKE ALL ON SCHEMA public FROM PUBLIC, {role}")
    url = make_url(fresh_postgres).set(username=role).render_as_string(hide_password=False)
    try:
        result = run_cli("runs", "--db", url, "--format", "json")
        assert result.exit_code == 3, result.output
        assert "offers this role no schema to use" in result.stderr
        assert "hint: grant the role USAGE (and CREATE, to create the tables)" in result.stderr
        assert result.stdout == ""
    finally:
        with owner.begin() as connection:
            connection.exec_driver_sql("GRANT ALL ON SCHEMA public TO PUBLIC")
            connection.exec_driver_sql(f"DROP OWNED BY {role}")
            connection.exec_driver_sql(f"DROP ROLE {role}")
        owner.dispose()


def test_postgres_a_cluster_restarted_after_a_flush_holds_only_what_was_fed_since(fresh_postgres):
    from .test_store_schema import restart_mid_cluster

    engine = store_db.open_database(fresh_postgres)
    try:
        run_id, rows = restart_mid_cluster(engine)
        assert [fqn for fqn, _ in rows] == [
            "src0.db.t0.col0",
            "src0.db.t0.col2",
            "src1.db.t0.col1",
            "src1.db.t0.col3",
        ]
        assert dict(rows)["src1.db.t0.col1"] == "int"
        assert count_run_rows(engine, run_id) == (1, 4)
    finally:
        engine.dispose()
