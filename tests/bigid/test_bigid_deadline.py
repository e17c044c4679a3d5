"""``--max-minutes`` (``take_snapshot(max_seconds=…)``, reference §9 item 6): a snapshot that has
not finished in time stops, keeps the clusters fetched in full, ends ``failed`` and says why; the
command exits 3 without a traceback."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from sqlalchemy import select

from auditor.bigid.client import CLUSTERS_PATH, COLUMNS_PATH
from auditor.errors import PartialSnapshotError
from auditor.snapshot import take_snapshot
from auditor.store.db import open_database
from auditor.store.runs import list_runs
from auditor.store.schema import run_clusters

from .conftest import Reply, Request
from .test_bigid_snapshot_unit import make_tenant, stored


def slow_cluster(handler, cluster_id: str, delay: float):
    def slow(request: Request) -> Reply:
        reply = handler(request)
        if request.path == COLUMNS_PATH and request.query["clusterId"] == cluster_id:
            reply.delay = delay
        return reply

    return slow


@pytest.mark.parametrize("processes", [0, 2], ids=["in-thread", "pool"])
def test_a_snapshot_past_its_time_limit_keeps_what_was_fetched_and_fails(
    loopback, make_client, tmp_path, processes
):
    handler, _clusters, columns = make_tenant({"a": 5, "slow": 5, "c": 5})
    # 1.5 s: time for a loaded machine to start the decoding pool and list the clusters (0.6 s failed
    # the pool case while another suite ran beside it); the slow cluster's 3 s are far past it
    loopback.reset(slow_cluster(handler, "slow", 3.0))
    engine = open_database(tmp_path / "s.db")
    client = make_client(loopback.url, read_timeout=10)
    started = time.monotonic()
    with pytest.raises(PartialSnapshotError) as caught:
        take_snapshot(engine, client, workers=2, processes=processes, max_seconds=1.5)
    assert time.monotonic() - started < 6  # the request in flight is waited for, nothing more
    (run,) = list_runs(engine)
    reason = (
        "did not finish within 1.5 s (--max-minutes): 2 of 3 clusters were stored, the others were not "
        "fetched in full"
    )
    assert caught.value.message == f"run {run.id} is not complete: the snapshot {reason}"
    assert caught.value.hint.startswith(f"auditor check --run {run.id} --allow-incomplete evaluates")
    assert caught.value.exit_code == 3
    assert (run.status, run.error, run.clusters_stored) == ("failed", reason, 2)
    assert run.details["deadline_seconds"] == 1.5
    cols, _ = stored(engine, run.id)
    assert set(cols) == {(cid, raw["fullyQualifiedName"]) for cid in ("a", "c") for raw in columns[cid]}
    with engine.connect() as connection:
        statuses = dict(
            connection.execute(
                select(run_clusters.c.cluster_id, run_clusters.c.fetch_status).where(
                    run_clusters.c.run_id == run.id
                )
            ).all()
        )
    assert statuses == {"a": "complete", "slow": "fetching", "c": "complete"}


def test_a_time_limit_that_passes_while_clusters_are_listed(loopback, make_client, tmp_path):
    listing = [{"id": f"k{i}", "name": f"k{i}", "size": 0} for i in range(3)]

    def handler(request: Request) -> Reply:
        skip = int(request.query["skip"])
        if request.path == CLUSTERS_PATH:
            return Reply(200, listing[skip : skip + 1], delay=0.5)  # one cluster per page, slowly
        return Reply(200, {"results": [], "totalCount": 0})

    loopback.reset(handler)
    engine = open_database(tmp_path / "s.db")
    client = make_client(loopback.url, page_size=1)
    with pytest.raises(PartialSnapshotError, match="the clusters were still being listed"):
        take_snapshot(engine, client, workers=1, processes=0, max_seconds=0.3)
    (run,) = list_runs(engine)
    assert run.status == "failed"
    assert run.error == "did not finish within 0.3 s (--max-minutes): the clusters were still being listed"


def test_a_snapshot_that_finishes_in_time_is_complete(loopback, make_client, tmp_path):
    handler, _clusters, _columns = make_tenant({"a": 5, "b": 3})
    loopback.reset(handler)
    engine = open_database(tmp_path / "s.db")
    client = make_client(loopback.url)
    run = take_snapshot(engine, client, workers=2, processes=0, max_seconds=30)
    assert run.status == "complete" and run.columns_stored == 8
    assert run.details["deadline_seconds"] == 30
    # The limit's timer is gone with the snapshot: left waiting, it would cancel the client's
    # requests 30 s later, in whatever the caller does with it next.
    assert not [t for t in threading.enumerate() if isinstance(t, threading.Timer) and t.is_alive()]
    assert not client._closing.is_set() and len(client.list_clusters()) == 2


def test_the_cli_option_and_the_config_key(sandbox, run_cli, tmp_db, tmp_path, monkeypatch):
    server = sandbox(clusters=3, columns=60, latency=0.4)
    env = {"BIGID_URL": server.url, "BIGID_TOKEN": server.key}
    result = run_cli("snapshot", "--db", tmp_db, "--page-size", "5", "--max-minutes", "0.01", env=env)
    assert result.exit_code == 3, result.output
    assert result.stdout == ""
    assert "Traceback" not in result.stderr
    assert "error: run 1 is not complete: the snapshot did not finish within 0.6 s (--max-minutes)" in (
        result.stderr
    )
    assert "raise --max-minutes" in result.stderr
    monkeypatch.chdir(tmp_path)
    Path("auditor.toml").write_text('max_minutes = "soon"\n')
    bad = run_cli("snapshot", "--db", tmp_db, env=env)
    assert bad.exit_code == 2
    assert "max_minutes" in bad.stderr
    Path("auditor.toml").write_text("max_minutes = 5\n")
    fine = run_cli("--quiet", "snapshot", "--db", tmp_db, "--page-size", "50", env=env)
    assert fine.exit_code == 0, fine.stderr
    assert list_runs(open_database(tmp_db))[-1].details["deadline_seconds"] == 300
    zero = run_cli("snapshot", "--db", tmp_db, "--max-minutes", "0", env=env)
    assert zero.exit_code == 2


@pytest.mark.parametrize("part", ["trickle", "trickle_headers"])
def test_an_answer_trickling_in_does_not_hold_a_stopping_snapshot(loopback, make_client, tmp_path, part):
    # One byte every 50 ms, of the body or of the status line and headers: the 5-minute answer
    # deadline would hold the snapshot that long (--max-minutes could not cut the headers short).
    handler, _clusters, _columns = make_tenant({"a": 5, "slow": 5})

    def trickle(request: Request) -> Reply:
        reply = handler(request)
        if request.path == COLUMNS_PATH and request.query["clusterId"] == "slow":
            setattr(reply, part, 0.05)
        return reply

    loopback.reset(trickle)
    engine = open_database(tmp_path / "s.db")
    client = make_client(loopback.url)
    started = time.monotonic()
    with pytest.raises(PartialSnapshotError, match="1 of 2 clusters were stored"):
        take_snapshot(engine, client, workers=2, processes=0, max_seconds=0.5)
    assert time.monotonic() - started < 5


def test_ctrl_c_while_a_server_is_silent_marks_the_run_failed_at_once(loopback, make_client, tmp_path):
    """Found by a probe with its own server: Ctrl-C while a request waited on a silent server (no
    byte yet) waited out the 60 s read timeout, so the 10 s grace of a stop ended first: exit 130
    with the run left running and a database lock blamed. Cancelled reads give up within
    CANCEL_POLL."""
    import _thread

    from auditor.bigid.deadline import CANCEL_POLL

    handler, _clusters, _columns = make_tenant({"a": 5, "silent": 5})
    loopback.reset(slow_cluster(handler, "silent", 6.0))
    engine = open_database(tmp_path / "s.db")
    client = make_client(loopback.url, read_timeout=60)
    timer = threading.Timer(0.5, _thread.interrupt_main)
    started = time.monotonic()
    timer.start()
    with pytest.raises(KeyboardInterrupt):
        take_snapshot(engine, client, workers=2, processes=0)
    took = time.monotonic() - started
    assert took < 0.5 + CANCEL_POLL + 4, took  # not the 60 s read timeout
    (run,) = list_runs(engine)
    assert run.status == "failed" and run.error == "interrupted (Ctrl-C)"
    assert run.columns_stored == 5  # cluster a, fetched in full before the stop, is kept


def test_what_a_running_snapshot_fetched_is_written_while_it_waits_on_the_network(
    loopback, make_client, tmp_path, monkeypatch
):
    """A README walkthrough: `auditor runs` showed a running snapshot of a few thousand columns as 0
    clusters and 0 columns until it ended (the writer commits 25,000 rows at a time), and a kill -9
    lost every cluster it had finished. Waiting on the network, what is queued is written once
    IDLE_FLUSH_SECONDS have passed since the last write."""
    from auditor import snapshot
    from auditor.store.runs import stored_so_far

    monkeypatch.setattr(snapshot, "IDLE_FLUSH_SECONDS", 0.2)
    handler, _clusters, _columns = make_tenant({"a": 5, "slow": 5})
    loopback.reset(slow_cluster(handler, "slow", 3.0))
    engine = open_database(tmp_path / "s.db")
    client = make_client(loopback.url, read_timeout=10)
    done = threading.Event()

    def snapshot_in_background() -> None:
        try:
            take_snapshot(engine, client, workers=2, processes=0)
        finally:
            done.set()

    worker = threading.Thread(target=snapshot_in_background)
    worker.start()
    seen: set[tuple[int, int]] = set()
    while not done.wait(0.05):
        runs = list_runs(engine)
        if runs and runs[0].status == "running":
            seen.add(stored_so_far(engine, [runs[0].id])[runs[0].id])
    worker.join()
    assert (1, 5) in seen  # cluster a, written while the slow one was still being fetched
    (run,) = list_runs(engine)
    assert (run.status, run.clusters_stored, run.columns_stored) == ("complete", 2, 10)
