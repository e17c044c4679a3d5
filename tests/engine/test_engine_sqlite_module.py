"""Rule-evaluating worker processes open SQLite with pysqlite3's current SQLite where installed.

Only they do (auditor.store.db.SQLITE_MODULES says why): they find what Python's sqlite3 finds (the
whole pack, with either module: tests/engine/test_engine_parallel.py), the parent decides the
module (AUDITOR_RULES_SQLITE, said once when wrong), and the writer turns either module's errors
into SQLAlchemy's.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import platform
import sqlite3.dbapi2
import sys

import pytest
from sqlalchemy.exc import DBAPIError

from auditor.engine import evaluate_each, load_ruleset
from auditor.errors import ConfigError
from auditor.store.db import (
    SQLITE_MODULE_VARIABLE,
    create_db_engine,
    database_url,
    open_database,
    rules_sqlite_module,
)
from auditor.store.writer import sqlite_executemany
from tests.engine.test_engine_parallel import _sandbox_run, serial_findings

evaluate_module = importlib.import_module("auditor.engine.evaluate")
db_module = importlib.import_module("auditor.store.db")

# the [test] extra installs pysqlite3-binary where its wheels exist (its marker, in pyproject.toml)
WHEELS_EXIST = (
    sys.platform == "linux"
    and platform.machine() == "x86_64"
    and platform.python_implementation() == "CPython"
    and sys.version_info < (3, 15)
)
needs_wheels = pytest.mark.skipif(
    not WHEELS_EXIST, reason="pysqlite3-binary has wheels for Linux x86-64 only"
)


@needs_wheels
def test_rule_workers_use_pysqlite3_and_its_current_sqlite_by_default(monkeypatch):
    monkeypatch.delenv(SQLITE_MODULE_VARIABLE, raising=False)
    module = rules_sqlite_module()
    assert module.__name__ == "pysqlite3.dbapi2"
    assert module.sqlite_version_info >= (3, 46)
    assert (
        module.sqlite_version_info > sqlite3.sqlite_version_info
        or module.sqlite_version == sqlite3.sqlite_version
    )


@needs_wheels
def test_a_worker_opens_the_file_with_the_module_it_is_handed_and_finds_what_sqlite3_finds(tmp_path):
    engine, run_id, rule, serial, url = serial_findings(tmp_path)
    assert engine.dialect.dbapi is sqlite3.dbapi2  # the rest of the program keeps Python's module
    spool = tmp_path / "spool"
    spool.mkdir()
    handed, _seconds = evaluate_module._evaluate_in_process(url, run_id, rule, str(spool), "pysqlite3.dbapi2")
    worker_engine = evaluate_module._WORKER_ENGINES.pop((url, "pysqlite3.dbapi2"))
    try:
        assert worker_engine.dialect.dbapi.__name__ == "pysqlite3.dbapi2"
        with worker_engine.connect() as connection:
            version = connection.exec_driver_sql("SELECT sqlite_version()").scalar()
        assert version == worker_engine.dialect.dbapi.sqlite_version
    finally:
        worker_engine.dispose()
    assert [f.to_json() for f in evaluate_module._read_spooled(rule, handed)] == serial
    assert len(serial) > 100


def test_the_plain_install_does_not_require_pysqlite3():
    # wheels only, for CPython on glibc Linux x86-64: as a dependency it failed the whole install on
    # Alpine (musl), ARM, PyPy or a CPython newer than its wheels, where no marker can tell
    requirements = importlib.metadata.requires("cluster-auditor")
    pysqlite3 = [r for r in requirements if r.startswith("pysqlite3-binary")]
    assert len(pysqlite3) == 2
    extras = {r.split(";")[-1].split("extra ==")[-1].strip(" '\"") for r in pysqlite3}
    assert extras == {"fast", "test"}


def test_without_pysqlite3_the_workers_use_python_s_sqlite3(monkeypatch):
    monkeypatch.delenv(SQLITE_MODULE_VARIABLE, raising=False)
    monkeypatch.setitem(sys.modules, "pysqlite3", None)  # import pysqlite3 raises ImportError
    monkeypatch.setitem(sys.modules, "pysqlite3.dbapi2", None)
    db_module._sqlite_module.cache_clear()
    try:
        assert rules_sqlite_module() is sqlite3.dbapi2
        monkeypatch.setenv(SQLITE_MODULE_VARIABLE, "pysqlite3")
        with pytest.raises(ConfigError) as raised:
            rules_sqlite_module()
        assert str(raised.value) == "AUDITOR_RULES_SQLITE=pysqlite3, but pysqlite3 is not installed"
        assert raised.value.hint == (
            "install the fast extra (pip install 'cluster-auditor[fast]': CPython on Linux x86-64),"
            " or unset the variable"
        )
    finally:
        db_module._sqlite_module.cache_clear()


def test_python_s_own_sqlite3_is_used_when_asked(monkeypatch):
    monkeypatch.setenv(SQLITE_MODULE_VARIABLE, " sqlite3 ")
    assert rules_sqlite_module() is sqlite3.dbapi2


def test_a_wrong_module_is_a_configuration_error_said_once_before_any_worker_starts(
    tmp_path, monkeypatch, run_cli
):
    engine = open_database(tmp_path / "p.db")
    _sandbox_run(engine)
    engine.dispose()
    monkeypatch.setenv(SQLITE_MODULE_VARIABLE, "apsw")
    with pytest.raises(ConfigError) as raised:
        rules_sqlite_module()
    assert (
        str(raised.value)
        == "AUDITOR_RULES_SQLITE='apsw' is not a SQLite module this tool can evaluate rules with"
    )
    assert raised.value.hint == "set it to pysqlite3 or sqlite3, or unset it (pysqlite3 where installed)"

    monkeypatch.setattr(evaluate_module, "PROCESS_MIN_COLUMNS", 3000)  # evaluated by worker processes
    result = run_cli("check", "--db", str(tmp_path / "p.db"))
    assert result.exit_code == 2
    assert result.stderr.count("AUDITOR_RULES_SQLITE='apsw' is not a SQLite module") == 1
    assert "hint: set it to pysqlite3 or sqlite3" in result.stderr
    assert "Traceback" not in result.output


def test_a_wrong_module_is_refused_on_a_small_run_and_on_a_stored_evaluation_too(
    tmp_path, monkeypatch, run_cli
):
    """A README walkthrough: docs/rules.md says any other value is a usage error, but a run under
    200,000 columns (one process, Python's sqlite3) checked with it exit 0."""
    engine = open_database(tmp_path / "p.db")
    _sandbox_run(engine)
    engine.dispose()
    database = str(tmp_path / "p.db")
    for stored in (False, True):  # evaluated now, then the evaluation stored by the check between
        monkeypatch.setenv(SQLITE_MODULE_VARIABLE, "apsw")
        result = run_cli("check", "--db", database, "--format", "json")
        assert (result.exit_code, result.stdout) == (2, ""), stored
        assert result.stderr.startswith("error: AUDITOR_RULES_SQLITE='apsw' is not a SQLite module")
        if not stored:
            monkeypatch.delenv(SQLITE_MODULE_VARIABLE)
            assert run_cli("check", "--db", database, "--format", "json").exit_code == 0


@pytest.mark.parametrize("module", ["sqlite3", "pysqlite3"])
def test_a_bulk_write_error_of_either_module_is_raised_as_sqlalchemys(tmp_path, module):
    if module == "pysqlite3" and not WHEELS_EXIST:
        pytest.skip("pysqlite3-binary has wheels for Linux x86-64 only")
    driver = importlib.import_module(f"{module}.dbapi2")
    engine = create_db_engine(database_url(tmp_path / "a.db"), sqlite_module=driver)
    try:
        assert engine.dialect.dbapi is driver
        with engine.begin() as connection:
            connection.exec_driver_sql("CREATE TABLE t (x INTEGER PRIMARY KEY)")
            with pytest.raises(DBAPIError) as raised:
                sqlite_executemany(connection, "INSERT INTO t VALUES (?)", [(1,), (1,)])
        assert isinstance(raised.value.orig, driver.IntegrityError)
        assert "UNIQUE constraint failed: t.x" in str(raised.value.orig)
    finally:
        engine.dispose()


@pytest.mark.parametrize("asked", [None, "sqlite3"])
def test_the_pool_hands_each_worker_the_module_the_parent_decided(tmp_path, monkeypatch, asked):
    """A review: the parity test passes whichever module the workers use, so it could not tell the
    parent from forgetting to hand it over. The pool's tasks are recorded here and run in-process."""
    from concurrent.futures import Future

    engine = open_database(tmp_path / "p.db")
    run_id = _sandbox_run(engine)
    if asked is not None:
        monkeypatch.setenv(SQLITE_MODULE_VARIABLE, asked)
    monkeypatch.setattr(evaluate_module, "PROCESS_MIN_COLUMNS", 3000)
    handed: list[str] = []

    class InProcess:  # a pool that runs each task where it is submitted
        def submit(self, function, *args):
            handed.append(args[-1])
            future: Future = Future()
            future.set_result(function(*args))
            return future

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

    def start_pool(preload, workers, initializer, submit_first):
        pool = InProcess()
        submit_first(pool)
        return pool

    monkeypatch.setattr(evaluate_module, "start_pool", start_pool)
    found = list(evaluate_each(engine, run_id, load_ruleset(), workers=2))
    assert len(found) == len(load_ruleset().rules) and len(handed) == len(found)
    expected = "sqlite3.dbapi2" if asked == "sqlite3" or not WHEELS_EXIST else "pysqlite3.dbapi2"
    assert set(handed) == {expected}
    for key in [key for key in evaluate_module._WORKER_ENGINES if key[1] == expected]:
        evaluate_module._WORKER_ENGINES.pop(key).dispose()
