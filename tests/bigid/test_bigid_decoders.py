"""Page decoding in a process pool (``take_snapshot(processes=N)``): the rows are the ones the
threads build, every failure reads and exits exactly as in-thread, the decoders never see the key or
Ctrl-C, and the pool is shut down however the snapshot ends."""

from __future__ import annotations

import os
import pickle
import re
import signal
import time

import orjson
import pytest

from auditor.bigid.client import COLUMNS_PATH, PageOffload, decode_columns
from auditor.bigid.models import parse_columns
from auditor.errors import AuditorError, PayloadError
from auditor.progress import Progress
from auditor.snapshot import _row_key, start_decoders, take_snapshot
from auditor.store.db import open_database
from auditor.store.runs import list_runs
from auditor.store.writer import canonical_json, column_rows

from .conftest import Reply, Request
from .test_bigid_snapshot_unit import make_tenant

RAW_COLUMNS = [
    {
        "fullyQualifiedName": "ds.db.t.a",
        "columnName": "a",
        "isPrimary": "Yes",
        "tags": [{"tagName": "sensitivity", "tagValue": "high", "properties": {"hidden": "false"}}],
        "attributes": [{"attribute_name": "email", "rank": "2", "calc_confidence_level": 0.75}],
        "undocumented": {"kept": [1, 2.5, None]},
    },
    {"fully_qualified_name": "ds.db.t.b", "objectName": "t", "tags": None},
]


def test_decoded_rows_are_the_rows_the_threads_build():
    body = orjson.dumps({"data": {"results": RAW_COLUMNS, "totalCount": "2"}, "statusCode": 200})
    decoded = pickle.loads(pickle.dumps(decode_columns(body, column_rows)))  # as the pool returns it
    expected = [
        column_rows(model, raw) for model, raw in zip(parse_columns(RAW_COLUMNS), RAW_COLUMNS, strict=True)
    ]
    assert decoded.rows == expected
    assert (decoded.total, decoded.shape) == (2, "status+data.results")
    # raw is the canonical JSON text the hash was computed from, stored as is, never re-encoded
    assert [row[1][8] for row in decoded.rows] == [canonical_json(raw).decode() for raw in RAW_COLUMNS]
    assert [_row_key(row) for row in decoded.rows] == ["ds.db.t.a", "ds.db.t.b"]


def test_failures_come_back_as_data():
    assert decode_columns(b"<html>502</html>", column_rows).not_json == (
        True,
        "<html>502</html>",
        "unexpected character, expected a JSON value at character 0",
    )
    assert decode_columns(b'{"success": false, "message": "Invalid token"}', column_rows).error_under_200 == (
        "Invalid token",
        True,
    )
    assert decode_columns(b'{"oops": 1}', column_rows).unknown_envelope == (
        "an object without a list of records (keys: oops)"
    )
    bad = orjson.dumps({"results": [RAW_COLUMNS[0], {"fqn": "x.y", "isPrimary": "maybe"}]})
    assert decode_columns(bad, column_rows).invalid == (
        1,
        "x.y",
        "isPrimary",
        "Input should be a valid boolean, unable to interpret input",
    )


FAILURES = {
    "invalid column": orjson.dumps(
        {"results": [{"fqn": "k1.db.t.c", "isPrimary": "maybe"}], "totalCount": 1}
    ),
    "missing field": orjson.dumps({"results": [{"columnName": "no fqn"}], "totalCount": 1}),
    "unknown envelope": orjson.dumps({"columnz": [], "count": 0}),
    "not JSON": b"Service ready: hello",
    "cut JSON": b'{"results": [{"fullyQualifiedName": "k1.db.t.c"',
    "cut JSON with a status": b'{"status": "success", "data": {"results": [',
    "status envelope, invalid column": orjson.dumps(
        {
            "status": "success",
            "statusCode": 200,
            "data": {"results": [{"fqn": "k1.x", "isPrimary": "maybe"}], "totalCount": 1},
        }
    ),
    "gateway page": b"<!DOCTYPE html><html><body>502 Bad Gateway</body></html>",
    "auth error under 200": orjson.dumps({"success": False, "message": "Token expired"}),
    "error under 200": orjson.dumps({"status": "error", "message": "index unavailable"}),
    # parsed (up to 1,024 levels) but too deep to store: was 'internal error: RecursionError'
    "nested 1,000 levels deep": b'{"results": [{"fullyQualifiedName": "k1.db.t.c", "x": '
    + b"[" * 1000
    + b"]" * 1000
    + b'}], "totalCount": 1}',
}


def _outcome(loopback, make_client, tmp_path, body: bytes, processes: int) -> tuple:
    def handler(request: Request) -> Reply:
        if request.path != COLUMNS_PATH:
            return Reply(200, [{"id": "k1", "size": 1}] if request.query["skip"] == "0" else [])
        return Reply(200, body)

    loopback.reset(handler)
    engine = open_database(tmp_path / f"p{processes}.db")
    with pytest.raises(AuditorError) as caught:
        take_snapshot(  # the cluster's own error: the first failed cluster aborts (max 0)
            engine,
            make_client(loopback.url, max_retries=1),
            workers=1,
            processes=processes,
            max_failed_clusters=0,
        )
    (run,) = list_runs(engine)
    assert run.status == "failed"

    def timeless(text: str) -> str:
        return re.sub(r"in \d+\.\d s", "in N s", text)

    error = caught.value
    return type(error), timeless(error.message), error.hint, error.exit_code, timeless(run.error)


@pytest.mark.parametrize("name", list(FAILURES))
def test_every_failure_reads_and_exits_the_same_in_the_pool(loopback, make_client, tmp_path, name):
    in_thread = _outcome(loopback, make_client, tmp_path, FAILURES[name], 0)
    pooled = _outcome(loopback, make_client, tmp_path, FAILURES[name], 2)
    assert pooled == in_thread
    if name == "missing field":
        assert in_thread[1] == "cluster k1: column 0: fullyQualifiedName: Field required"
    if name == "nested 1,000 levels deep":
        assert in_thread[:2] == (
            PayloadError,
            "cluster k1: a column (k1.db.t.c): (record): nested more than 512 levels deep",
        )
    if name == "auth error under 200":
        # the listing was accepted: a key that stopped working, named with the request
        assert in_thread[1].startswith("the API key was refused (HTTP 401 on GET ")


def test_decoders_get_no_key_and_leave_ctrl_c_to_the_parent(monkeypatch):
    monkeypatch.setenv("BIGID_TOKEN", "SECRET-KEY-THAT-MUST-NOT-TRAVEL")
    pool = start_decoders(1)
    try:
        assert pool.submit(os.getenv, "BIGID_TOKEN").result(timeout=60) is None
        assert pool.submit(signal.getsignal, signal.SIGINT).result(timeout=60) == signal.SIG_IGN
    finally:
        pool.shutdown(wait=True)


def test_a_dead_decoder_is_an_auditor_error():
    pool = start_decoders(1)
    try:
        with pytest.raises(Exception):  # noqa: B017 - the pool's own BrokenProcessPool
            pool.submit(os._exit, 1).result(timeout=60)
        offload = PageOffload(pool, column_rows, _row_key)
        with pytest.raises(AuditorError, match="a page-decoding process died unexpectedly"):
            offload.result(offload.submit(b"[]"))
    finally:
        pool.shutdown(wait=True)


class _Interrupt(Progress):
    def __init__(self) -> None:
        super().__init__(enabled=False)
        self.calls = 0

    def add_columns(self, count: int) -> None:
        self.calls += 1
        if self.calls == 2:
            raise KeyboardInterrupt


def test_ctrl_c_shuts_the_decoders_down(loopback, make_client, tmp_path, monkeypatch):
    import auditor.snapshot as snapshot

    started = []

    def recording(processes: int):
        pool = start_decoders(processes)
        started.append((pool, list(pool._processes)))  # the decoders' process ids
        return pool

    monkeypatch.setattr(snapshot, "start_decoders", recording)
    handler, _, _ = make_tenant({f"k{i}": 40 for i in range(12)})
    loopback.reset(handler)
    engine = open_database(tmp_path / "snap.db")
    with pytest.raises(KeyboardInterrupt):
        take_snapshot(
            engine, make_client(loopback.url, page_size=5), workers=4, processes=2, progress=_Interrupt()
        )
    (run,) = list_runs(engine)
    assert run.status == "failed" and run.error == "interrupted (Ctrl-C)"
    ((pool, pids),) = started
    assert len(pids) == 2
    with pytest.raises(RuntimeError, match="after shutdown"):
        pool.submit(int)
    deadline = time.monotonic() + 10
    while any(_alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(_alive(pid) for pid in pids)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):  # (gone between the open and the read: CI saw it)
        return False


def test_the_default_starts_decoders_only_for_a_large_tenant(loopback, make_client, tmp_path, monkeypatch):
    import auditor.snapshot as snapshot

    handler, _, _ = make_tenant({"a": 30, "b": 20})
    loopback.reset(handler)
    engine = open_database(tmp_path / "snap.db")
    small = take_snapshot(engine, make_client(loopback.url, page_size=10), workers=2)
    monkeypatch.setattr(snapshot, "POOL_MIN_COLUMNS", 50)
    large = take_snapshot(engine, make_client(loopback.url, page_size=10), workers=2)
    assert (small.details["processes"], large.details["processes"]) == (0, snapshot.default_processes())
    assert small.columns_stored == large.columns_stored == 50


def _snapshot_process(server, db: str, folder, *, processes: int):
    """``auditor snapshot`` of ``server`` into ``db`` in a process of its own (for signals)."""
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env |= {"BIGID_URL": server.url, "BIGID_TOKEN": server.key, "AUDITOR_DB": db}
    command = [sys.executable, "-c", "from auditor.cli.main import main; main()", "snapshot"]
    return subprocess.Popen(
        [*command, "--processes", str(processes), "--workers", "2", "--page-size", "20"],
        env=env,
        cwd=folder,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait_for_the_run(db, seconds: float = 60) -> None:
    """Until a snapshot process has recorded its run in SQLite file ``db``."""
    import sqlite3
    import time

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        time.sleep(0.1)
        try:
            with sqlite3.connect(db) as check:
                if check.execute("select count(*) from runs").fetchone()[0]:
                    return
        except sqlite3.Error:
            continue


def test_sigterm_fails_the_run_stops_the_decoders_and_exits_143(sandbox, tmp_path):
    # docker stop, systemd and a cancelled CI job send SIGTERM: the run stayed `running` and the
    # decoding processes lived on, as after kill -9.
    import sqlite3
    import time

    server = sandbox(clusters=80, columns=8000, latency=0.1)  # ~40 s in all: stopped long before
    db = tmp_path / "term.db"
    child = _snapshot_process(server, str(db), tmp_path, processes=2)
    _wait_for_the_run(db)  # recorded, and the fetch under way
    time.sleep(1.5)
    child.send_signal(signal.SIGTERM)
    out, err = child.communicate(timeout=60)
    assert child.returncode == 143, err
    assert out == "" and err.splitlines()[-1] == "auditor: terminated (SIGTERM)"
    with sqlite3.connect(db) as check:
        runs = check.execute("select status, error from runs").fetchall()
    assert runs == [("failed", "terminated (SIGTERM)")]


def test_a_second_sigterm_stops_a_snapshot_stuck_behind_a_sqlite_lock(sandbox, tmp_path):
    """SQLite waits for another writer's lock inside its C busy handler (up to 5 minutes), where no
    Python signal handler runs: SIGTERM did nothing until the lock was let go. A second signal (or
    the end of the grace, tested in tests/test_stopping.py) now stops the command at once; the run
    is left running, never complete."""
    import sqlite3
    import time

    server = sandbox(clusters=80, columns=8000, latency=0.1)
    db = tmp_path / "locked.db"
    child = _snapshot_process(server, str(db), tmp_path, processes=0)
    _wait_for_the_run(db)  # recorded: its next flush is to come
    holder = sqlite3.connect(db, timeout=60, isolation_level=None)
    try:
        holder.execute("BEGIN IMMEDIATE")
        time.sleep(2)  # the writer's next flush now waits for the lock
        child.send_signal(signal.SIGTERM)
        time.sleep(1.5)
        assert child.poll() is None  # inside SQLite's wait: the first signal could not act yet
        started = time.monotonic()
        child.send_signal(signal.SIGTERM)
        _out, err = child.communicate(timeout=60)
        stopped_in = time.monotonic() - started
    finally:
        holder.rollback()
        holder.close()
    assert child.returncode == 143, err
    assert stopped_in < 5, stopped_in
    assert (
        err.strip()
        .splitlines()[-1]
        .startswith("auditor: stopped again: exiting without finishing the cleanup")
    )
    with sqlite3.connect(db) as check:
        assert check.execute("select status from runs").fetchall() == [("running",)]
        assert check.execute("pragma integrity_check").fetchall() == [("ok",)]


def test_sigterm_while_another_writer_holds_a_lock_exits_within_seconds(sandbox, tmp_path, fresh_postgres):
    """A snapshot into PostgreSQL blocked by another session's lock: the signal interrupted the
    blocked write, but marking the run failed then waited out the lock (up to 5 minutes); it now
    gives up after a few seconds and leaves the run running (abandoned), never complete."""
    import time

    import psycopg

    server = sandbox(clusters=80, columns=8000, latency=0.1)
    child = _snapshot_process(server, fresh_postgres, tmp_path, processes=0)
    dsn = fresh_postgres.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(dsn) as holder:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # until the run is recorded: its first flush is to come
            time.sleep(0.1)
            try:
                if holder.execute("select count(*) from runs").fetchone()[0]:
                    break
            except psycopg.Error:
                holder.rollback()
        holder.rollback()
        holder.execute("lock table column_versions in access exclusive mode")
        time.sleep(2)  # the writer's next flush now waits for the lock
        started = time.monotonic()
        child.send_signal(signal.SIGTERM)
        _out, err = child.communicate(timeout=60)
        stopped_in = time.monotonic() - started
        holder.rollback()
        status = holder.execute("select status from runs").fetchall()
    assert child.returncode == 143, err
    assert stopped_in < 15, stopped_in  # 5 s for the last flush and the marking; not the 5-min lock wait
    assert err.splitlines()[-1] == "auditor: terminated (SIGTERM)"
    assert status in ([("running",)], [("failed",)])  # never complete
