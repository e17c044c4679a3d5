"""Who writes a run (``auditor.store.runs.writer_identity``) and whether it is still being written.

Real processes on this host, no mocks: a child started, checked, killed with SIGKILL, checked again.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from auditor.errors import StoreError
from auditor.store import runs as store_runs
from auditor.store.db import open_database
from auditor.store.runs import Liveness, get_run, run_liveness, writer_identity, writer_liveness
from auditor.store.schema import runs
from auditor.store.writer import RunTotals, SnapshotWriter

from .conftest import make_catalog, write_catalog

HOST = socket.gethostname()
NO_WRITER = "no writer was recorded for it (a run started before auditor recorded them)"
linux_only = pytest.mark.skipif(
    sys.platform != "linux", reason="boot id, start time and PID namespace come from /proc (Linux)"
)


def test_the_writer_records_its_process_and_keeps_it_when_the_run_ends(tmp_path):
    engine = open_database(tmp_path / "a.db")
    run_id = write_catalog(engine, make_catalog(1, 1))
    run = get_run(engine, run_id)
    assert run.details["writer"] == writer_identity()
    if sys.platform == "linux":
        assert set(run.details["writer"]) >= {"host", "pid", "boot_id", "start", "pid_ns"}
    assert run.details["writer"]["pid"] == os.getpid()
    assert run_liveness(run.status, run.started_at, run.details) is None  # complete: not a question
    writer = SnapshotWriter(engine, source_url="x", details={"fixture": "kept"})
    writer.complete(RunTotals(details={"pages": 3}))
    details = get_run(engine, writer.run_id).details
    assert details == {"fixture": "kept", "pages": 3, "writer": writer_identity()}


@linux_only
def test_liveness_of_real_processes_on_this_host():
    here = writer_identity()
    child = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 30
        while (stat := store_runs._proc_stat(child.pid)) is None and time.monotonic() < deadline:
            time.sleep(0.01)
        writer = {**here, "pid": child.pid, "start": stat[1]}
        alive = f"the process that writes it (pid {child.pid} on host {HOST}) is alive"
        gone = f"the process that wrote it (pid {child.pid} on host {HOST}) is gone"
        assert writer_liveness(writer) == Liveness("active", alive)
        # the same PID, started at another time: another process now has it
        assert writer_liveness({**writer, "start": stat[1] - 1}) == Liveness(
            "abandoned", f"{gone}: pid {child.pid} now belongs to another process"
        )
        os.kill(child.pid, signal.SIGKILL)
        deadline = time.monotonic() + 30  # a zombie until reaped: dead already
        while store_runs._proc_stat(child.pid)[0] != "Z" and time.monotonic() < deadline:
            time.sleep(0.01)
        assert writer_liveness(writer) == Liveness("abandoned", gone)
    finally:
        child.kill()
        child.wait(timeout=60)
        child.stdin.close()
    assert writer_liveness(writer) == Liveness("abandoned", gone)
    # this very process: alive, whatever else is recorded
    assert writer_liveness(here) == Liveness(
        "active", f"the process that writes it (pid {os.getpid()} on host {HOST}) is alive"
    )
    # the host restarted since: another boot id, same machine and PID namespace
    assert writer_liveness({**here, "boot_id": "another-boot"}) == Liveness(
        "abandoned", f"host {HOST} has restarted since the process that wrote it (pid {os.getpid()}) started"
    )
    # what cannot be checked from here is unknown, never abandoned
    writes = f"the process that writes it (pid {os.getpid()} on host"
    assert writer_liveness({**here, "host": "ci-runner-7"}) == Liveness(
        "unknown",
        f"the process that writes it (pid {os.getpid()} on host ci-runner-7) "
        f"cannot be checked from host {HOST}",
    )
    assert writer_liveness({**here, "machine": "0" * 16}).state == "unknown"
    assert writer_liveness({**here, "boot_id": "b", "pid_ns": "pid:[1]"}) == Liveness(
        "unknown", f"{writes} {HOST}) runs under another boot id (another machine or container of that name?)"
    )
    assert writer_liveness({**here, "pid_ns": "pid:[1]"}) == Liveness(
        "unknown", f"{writes} {HOST}) runs in another PID namespace (container): it cannot be checked"
    )
    for recorded in (None, {}, {"host": HOST}, {"host": HOST, "pid": 0}, {"host": HOST, "pid": True}, "x"):
        assert writer_liveness(recorded).state == "unknown"
    assert writer_liveness(None).reason == NO_WRITER


def test_a_writer_whose_run_was_marked_failed_or_deleted_does_not_end_it(tmp_path):
    engine = open_database(tmp_path / "a.db")
    marked = SnapshotWriter(engine, source_url="x")
    with engine.begin() as connection:
        connection.execute(
            runs.update().where(runs.c.id == marked.run_id).values(status="failed", error="abandoned: test")
        )
    with pytest.raises(StoreError) as raised:
        marked.complete(RunTotals())
    assert raised.value.message == (
        f"could not finish run {marked.run_id}: it is failed already (abandoned: test)"
    )
    marked.fail("too late")  # ended once: nothing more is recorded
    assert (get_run(engine, marked.run_id).status, get_run(engine, marked.run_id).error) == (
        "failed",
        "abandoned: test",
    )
    deleted = SnapshotWriter(engine, source_url="x")
    with engine.begin() as connection:
        connection.execute(runs.delete().where(runs.c.id == deleted.run_id))
    with pytest.raises(StoreError) as raised:
        deleted.fail("interrupted")
    assert raised.value.message == (
        f"could not finish run {deleted.run_id}: it was deleted while it was being written"
    )


def abandon(engine, run_id: int) -> int:
    """Mark run ``run_id`` as written by a process that has exited (its writer gone); its pid."""
    exited = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True)
    dead = int(exited.stdout)
    with engine.begin() as connection:
        connection.execute(
            runs.update()
            .where(runs.c.id == run_id)
            .values(details={"writer": {**writer_identity(), "pid": dead}})
        )
    return dead


def test_auditor_runs_shows_whether_a_running_run_is_still_being_written(run_cli, tmp_path):
    """Run 1 written by this process (alive), 2 by a process that exited, 3 from an older auditor,
    4 complete."""
    db = str(tmp_path / "a.db")
    engine = open_database(db)
    for _ in range(3):
        SnapshotWriter(engine, source_url="x")
    write_catalog(engine, make_catalog(1, 1))
    dead = abandon(engine, 2)
    with engine.begin() as connection:
        connection.execute(runs.update().where(runs.c.id == 3).values(details={}))
    result = run_cli("runs", "--db", db, "--format", "json")
    assert result.exit_code == 0, result.output
    listed = json.loads(result.stdout)["runs"]
    assert [(run["status"], run["liveness"], run["liveness_reason"]) for run in listed] == [
        ("running", "active", f"the process that writes it (pid {os.getpid()} on host {HOST}) is alive"),
        ("running", "abandoned", f"the process that wrote it (pid {dead} on host {HOST}) is gone"),
        ("running", "unknown", NO_WRITER),
        ("complete", None, None),
    ]
    assert listed[0]["details"]["writer"] == writer_identity()
    # the library's shape is the command's (found by a library probe: liveness was CLI-only)
    from auditor.store.runs import list_runs

    assert [run.to_json() for run in list_runs(engine)] == listed
    table = run_cli("runs", "--db", db)
    assert table.exit_code == 0, table.output
    lines = table.stdout.splitlines()
    assert lines[0].split()[:3] == ["ID", "STATUS", "STARTED"]
    assert [line[:27] for line in lines[1:]] == [  # the status column as wide as its widest
        "    1  running (active)    ",
        "    2  running (abandoned) ",
        "    3  running (unknown)   ",
        "    4  complete            ",
    ]


def test_latest_says_when_a_newer_run_was_abandoned_not_when_one_is_being_written(tmp_path, caplog):
    # Found in review: a snapshot killed (or stopped outright) leaves its run running; 'latest'
    # then went back to an older complete run without a word, as it did for failed runs.
    from auditor.store.runs import resolve_run

    engine = open_database(tmp_path / "a.db")
    good = write_catalog(engine, make_catalog(1, 1))
    SnapshotWriter(engine, source_url="x")  # being written by this very process: no news
    assert resolve_run(engine, "latest").id == good
    assert not [r for r in caplog.records if "newer than" in r.getMessage()]
    killed = SnapshotWriter(engine, source_url="x").run_id
    dead = abandon(engine, killed)
    assert resolve_run(engine, "latest").id == good
    assert [r.getMessage() for r in caplog.records if "newer than" in r.getMessage()] == [
        f"run {killed}, newer than run {good}, was abandoned by its writer (the process that wrote it "
        f"(pid {dead} on host {HOST}) is gone): 'latest' is run {good}, the newest complete run"
    ]


def test_latest_with_no_complete_run_names_the_newest_run_and_what_became_of_it(tmp_path):
    # Found by a new-user probe: a database holding only a killed snapshot's run said "take a
    # snapshot first", naming neither that run nor --allow-incomplete.
    from auditor.errors import RunNotUsableError
    from auditor.store.runs import resolve_run

    engine = open_database(tmp_path / "a.db")
    written = SnapshotWriter(engine, source_url="x").run_id  # by this very process
    with pytest.raises(RunNotUsableError) as being_written:
        resolve_run(engine, "latest")
    assert being_written.value.message == (
        f"there is no complete run in this database yet: the newest, run {written}, is still being written"
    )
    dead = abandon(engine, written)
    with pytest.raises(RunNotUsableError) as abandoned:
        resolve_run(engine, "latest")
    assert abandoned.value.message == (
        f"there is no complete run in this database yet: the newest, run {written}, was abandoned by its "
        f"writer (the process that wrote it (pid {dead} on host {HOST}) is gone)"
    )
    assert abandoned.value.hint == (
        f"take a new snapshot (auditor snapshot), or pass --run {written} --allow-incomplete "
        "to use that run as it is"
    )


def test_auditor_runs_shows_what_a_running_run_has_stored_so_far(run_cli, tmp_path):
    # Found by a PostgreSQL probe: a snapshot killed after storing 40 clusters and 11,431 columns
    # was listed as "running (abandoned) … 0 0"; its counters are written only when a run ends.
    from auditor.bigid.models import parse_cluster, parse_column
    from auditor.store.writer import ClusterStats

    db = str(tmp_path / "a.db")
    engine = open_database(db)
    writer = SnapshotWriter(engine, source_url="x")
    for n in range(2):
        cluster = {"id": f"c{n}", "name": f"C{n}"}
        writer.add_cluster(parse_cluster(cluster), cluster, n)
        columns = [{"fullyQualifiedName": f"s.t.c{n}{i}", "columnName": f"c{i}"} for i in range(3)]
        writer.add_columns(f"c{n}", [(parse_column(column), column) for column in columns])
        if n == 0:
            writer.finish_cluster("c0", ClusterStats(total_announced=3, columns_fetched=3, pages=1))
    writer.flush()  # c0 done, c1 still being fetched: its columns are stored, the cluster not yet
    abandon(engine, writer.run_id)
    table = run_cli("runs", "--db", db)
    assert table.exit_code == 0, table.output
    fields = table.stdout.splitlines()[1].split()  # ID, STATUS (two words), STARTED (two), CLUSTERS, COLUMNS
    assert fields[:3] == ["1", "running", "(abandoned)"] and fields[5:7] == ["1", "6"]
    assert (
        json.loads(run_cli("runs", "--db", db, "--format", "json").stdout)["runs"][0]["columns_stored"]
        is None
    )
