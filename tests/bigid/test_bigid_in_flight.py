"""A snapshot keeps at most ``workers`` requests in flight, and keeps that many busy."""

from __future__ import annotations

import threading
import time

import pytest

from auditor.snapshot import take_snapshot
from auditor.store.db import open_database
from auditor.store.runs import count_run_rows

from .conftest import Reply, Request

CLUSTERS = [{"id": f"{i:024x}", "name": f"c{i}", "size": 3} for i in range(24)]


@pytest.mark.parametrize("workers", [1, 3])
def test_requests_in_flight_never_exceed_workers(loopback, make_client, tmp_path, workers):
    lock = threading.Lock()
    state = {"now": 0, "max": 0}

    def handler(request: Request) -> Reply:
        if request.path.endswith("/clusters"):
            return Reply(body=CLUSTERS if request.query.get("skip", "0") == "0" else [])
        with lock:
            state["now"] += 1
            state["max"] = max(state["max"], state["now"])
        time.sleep(0.05)  # a tenant far away: the request stays in flight for a while
        with lock:
            state["now"] -= 1
        cluster = request.query["clusterId"]
        rows = [{"fullyQualifiedName": f"s.t.{cluster}.c{i}", "columnName": f"c{i}"} for i in range(3)]
        return Reply(body={"results": rows, "totalCount": 3})

    loopback.reset(handler)
    client = make_client(loopback.url, workers=8)  # built for more: the snapshot's workers decide
    engine = open_database(tmp_path / "a.db")
    run = take_snapshot(engine, client, workers=workers, processes=0)
    assert run.status == "complete"
    assert count_run_rows(engine, run.id) == (24, 72)
    assert state["max"] == workers
