"""take_snapshot against a small programmable tenant on loopback: what a run records, and that any
failure (API error, payload error, Ctrl-C) leaves it ``failed`` with the reason, never ``complete``,
whether pages are decoded in the fetching threads (``processes=0``) or in a process pool. Clusters
whose columns cannot be fetched are recorded and the others stored (up to ``max_failed_clusters``);
``max_failed_clusters=0`` is the old behaviour: the first failed cluster aborts the snapshot."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from auditor.bigid.client import CLUSTERS_PATH, COLUMNS_PATH
from auditor.errors import (
    ApiError,
    AuthError,
    NetworkError,
    NotFoundError,
    PartialSnapshotError,
    PayloadError,
)
from auditor.progress import Progress
from auditor.snapshot import take_snapshot
from auditor.store.db import open_database
from auditor.store.runs import list_runs
from auditor.store.schema import cluster_versions, column_versions, run_clusters, run_columns

from .conftest import Reply, Request


def make_tenant(
    sizes: dict[str, int],
    *,
    announced: dict[str, int] | None = None,
    broken: str | None = None,
    broken_reply: tuple[int, dict] | None = None,
):
    """A tenant serving ``sizes`` columns per cluster; the ``broken`` cluster's columns answer
    ``broken_reply`` (status, body), by default a 404."""
    clusters = [{"id": cid, "name": f"cluster {cid}", "size": (announced or sizes).get(cid)} for cid in sizes]
    columns = {
        cid: [
            {
                "fullyQualifiedName": f"{cid}.db.t.c{i}",
                "columnName": f"c{i}",
                "isPrimary": i == 0,
                "tags": [{"tagName": "sensitivity", "tagValue": "high", "isMutuallyExclusive": "true"}],
            }
            for i in range(n)
        ]
        for cid, n in sizes.items()
    }

    def handler(request: Request) -> Reply:
        skip, limit = int(request.query["skip"]), int(request.query["limit"])
        if request.path == CLUSTERS_PATH:
            return Reply(200, clusters[skip : skip + limit])
        cid = request.query["clusterId"]
        if cid == broken:
            return Reply(*(broken_reply or (404, {"error": f"Cluster {cid} was not found"})))
        return Reply(200, {"results": columns[cid][skip : skip + limit], "totalCount": sizes[cid]})

    return handler, clusters, columns


MODES = pytest.mark.parametrize("processes", [0, 2], ids=["in-thread", "pool"])


@pytest.fixture
def engine(tmp_path):
    return open_database(tmp_path / "snap.db")


def stored(engine, run_id):
    with engine.connect() as connection:
        cols = {
            (row.cluster_id, row.fqn): row.raw
            for row in connection.execute(
                select(run_columns.c.cluster_id, run_columns.c.fqn, column_versions.c.raw)
                .join(column_versions, column_versions.c.id == run_columns.c.column_id)
                .where(run_columns.c.run_id == run_id)
            )
        }
        clusters = {
            row.cluster_id: row
            for row in connection.execute(
                select(run_clusters, cluster_versions.c.raw)
                .join(cluster_versions, cluster_versions.c.hash == run_clusters.c.cluster_hash)
                .where(run_clusters.c.run_id == run_id)
            )
        }
    return cols, clusters


@MODES
def test_a_complete_snapshot_records_everything(loopback, make_client, engine, processes):
    handler, clusters, columns = make_tenant({"a": 7, "b": 0, "c": 23}, announced={"a": 7, "b": 0, "c": 25})
    loopback.reset(handler)
    client = make_client(loopback.url, page_size=10)
    run = take_snapshot(engine, client, workers=2, processes=processes)
    assert run.status == "complete" and run.error is None
    assert (run.clusters_announced, run.clusters_stored, run.columns_stored) == (3, 3, 30)
    assert run.columns_announced == 30
    assert run.auth_scheme == "bearer" and run.source_url == loopback.url
    assert run.requests == len(loopback.seen)
    cols, stored_clusters = stored(engine, run.id)
    assert cols == {(cid, raw["fullyQualifiedName"]): raw for cid, rows in columns.items() for raw in rows}
    assert {cid: row.raw for cid, row in stored_clusters.items()} == {c["id"]: c for c in clusters}
    assert {
        cid: (r.size_announced, r.total_announced, r.columns_fetched, r.fetch_status)
        for cid, r in stored_clusters.items()
    } == {"a": (7, 7, 7, "complete"), "b": (0, 0, 0, "complete"), "c": (25, 23, 23, "complete")}
    assert run.details["size_mismatches"] == [{"cluster_id": "c", "size": 25, "fetched": 23}]
    assert run.details["total_mismatches"] == []
    assert run.details["envelopes"] == {"clusters": ["array"], "columns": ["results"]}
    assert run.details["workers"] == 2 and run.details["page_size"] == 10
    assert run.details["processes"] == processes


@MODES
def test_an_api_error_fails_the_run_with_the_reason(loopback, make_client, engine, processes):
    handler, _, _ = make_tenant({f"k{i}": 30 for i in range(8)}, broken="k5")
    loopback.reset(handler)
    with pytest.raises(NotFoundError, match="cluster 'k5' was not found"):
        take_snapshot(
            engine,
            make_client(loopback.url, page_size=10),
            workers=3,
            processes=processes,
            max_failed_clusters=0,
        )
    (run,) = list_runs(engine)
    assert run.status == "failed"
    assert run.error.startswith("NotFoundError: cluster 'k5' was not found (HTTP 404 from GET ")
    _, clusters = stored(engine, run.id)
    assert clusters["k5"].fetch_status == "failed"


@MODES
def test_a_payload_error_fails_the_run(loopback, make_client, engine, processes):
    def handler(request: Request) -> Reply:
        if request.path == CLUSTERS_PATH:
            return Reply(200, [{"id": "k1", "size": 1}] if request.query["skip"] == "0" else [])
        return Reply(200, {"results": [{"columnName": "no fqn"}], "totalCount": 1})

    loopback.reset(handler)
    with pytest.raises(PayloadError) as caught:
        take_snapshot(
            engine, make_client(loopback.url), workers=1, processes=processes, max_failed_clusters=0
        )
    assert caught.value.message == "cluster k1: column 0: fullyQualifiedName: Field required"
    (run,) = list_runs(engine)
    assert run.status == "failed" and run.error == f"PayloadError: {caught.value.message}"


@MODES
@pytest.mark.parametrize(
    ("reply", "error", "message"),
    [
        (Reply(503, {}), ApiError, f"GET {COLUMNS_PATH} failed: HTTP 503 (2 attempts in "),
        (Reply(drop=True), NetworkError, f"GET {COLUMNS_PATH} failed: connection reset (2 attempts in "),
        (
            Reply(200, b"x"),
            PayloadError,
            f"GET {COLUMNS_PATH} answered 200 with a body that is not JSON "
            "(unexpected character, expected a JSON value at character 0): 'x'",
        ),
        (Reply(403, {}), AuthError, f"the API key lacks permission for GET {COLUMNS_PATH} (HTTP 403)"),
        (Reply(418, {}), ApiError, f"GET {COLUMNS_PATH} failed (HTTP 418 from GET {COLUMNS_PATH})"),
        # two Content-Length headers that disagree: an internal error (InvalidHeader) before
        (
            Reply(200, {"results": [], "totalCount": 0}, headers={"content-length": "9999"}),
            NetworkError,
            f"GET {COLUMNS_PATH} failed: the answer was malformed (InvalidHeader: Content-Length contained "
            "multiple unmatching values (",
        ),
    ],
    ids=["retries-exhausted", "resets", "not-json", "403", "other-status", "two-lengths"],
)
def test_a_failing_columns_request_names_its_cluster(
    loopback, make_client, engine, processes, reply, error, message
):
    """Among many clusters, the one whose columns could not be fetched is named (it was not)."""

    def handler(request: Request) -> Reply:
        if request.path == CLUSTERS_PATH:
            return Reply(200, [{"id": "k1"}, {"id": "k2"}] if request.query["skip"] == "0" else [])
        if request.query["clusterId"] == "k2":
            return reply
        return Reply(200, {"results": [], "totalCount": 0})

    loopback.reset(handler)
    client = make_client(loopback.url, auth_scheme="raw", max_retries=1, cluster_id_fallback=False)
    with pytest.raises(ApiError) as caught:
        take_snapshot(engine, client, workers=1, processes=processes, max_failed_clusters=0)
    assert type(caught.value) is error
    assert caught.value.message.startswith(f"cluster k2: {message}")
    (run,) = list_runs(engine)
    assert run.status == "failed" and run.error == f"{error.__name__}: {caught.value.message}"


def test_counts_too_large_to_store_are_not_an_internal_error(loopback, make_client, engine):
    """A ``size`` beyond any count (10**30) used to reach SQLite and end in 'internal error:
    OverflowError' with the run left ``running``; a ``totalCount`` like it did the same. Both are
    announcements, hints only: one that is no count of anything (too large, negative, fractional,
    not finite, not a number) is taken as not given, and one cluster's odd ``size`` no longer
    refuses the whole listing. The record keeps the value as sent."""
    huge = 10**30
    sizes = [huge, 1e308, -3, 2.5, "NaN", "N/A", "", "2"]

    def handler(request: Request) -> Reply:
        if request.path == CLUSTERS_PATH:
            return Reply(200, [{"id": f"k{i}", "size": size} for i, size in enumerate(sizes)])
        rows = [{"fullyQualifiedName": f"{request.query['clusterId']}.b.c{i}"} for i in range(2)]
        return Reply(200, {"results": rows[int(request.query["skip"]) :], "totalCount": 2})

    loopback.reset(handler)
    run = take_snapshot(engine, make_client(loopback.url), workers=1, processes=0)
    assert run.status == "complete" and run.columns_stored == 2 * len(sizes)
    _, clusters = stored(engine, run.id)
    assert {cid: row.size_announced for cid, row in clusters.items()} == {
        f"k{i}": (2 if size == "2" else None) for i, size in enumerate(sizes)
    }
    # as sent (an integer past 64 bits included: it was kept as the nearest float before)
    assert [clusters[f"k{i}"].raw["size"] for i in range(len(sizes))] == sizes
    assert run.details["size_mismatches"] == []

    def lying_total(request: Request) -> Reply:  # a total that is no count: as if none was given
        if request.path == CLUSTERS_PATH:
            return Reply(200, [{"id": "k1", "size": 2}])
        rows = [{"fullyQualifiedName": "a.b.c1"}, {"fullyQualifiedName": "a.b.c2"}]
        return Reply(200, {"results": rows[int(request.query["skip"]) :], "totalCount": huge})

    loopback.reset(lying_total)
    run = take_snapshot(engine, make_client(loopback.url), workers=1, processes=0)
    assert run.status == "complete" and run.columns_stored == 2 and run.columns_announced is None
    assert run.details["total_mismatches"] == []


def test_deeply_nested_records_are_stored_or_refused_clearly(loopback, make_client, engine):
    """500 levels (past orjson's 255 for writing) are stored exactly; 1,000 levels (which the parser
    accepts) were 'internal error: RecursionError' and are now a payload error naming the cluster."""
    nested = {"x": 0}
    for _ in range(499):
        nested = {"x": nested}
    column = {"fullyQualifiedName": "k1.db.t.c", "deep": nested}

    def handler(request: Request) -> Reply:
        if request.path == CLUSTERS_PATH:
            return Reply(200, [{"id": "k1", "size": 1}])
        return Reply(200, {"results": [column][int(request.query["skip"]) :], "totalCount": 1})

    loopback.reset(handler)
    run = take_snapshot(engine, make_client(loopback.url), workers=1, processes=0)
    assert run.status == "complete"
    assert stored(engine, run.id)[0] == {("k1", "k1.db.t.c"): column}

    # A cluster record too deep to store fails that cluster alone (it stopped the whole snapshot),
    # as any listed record with an id that does not fit the models does; the others are stored.
    deep = b"[" * 1000 + b"]" * 1000

    def deep_cluster(request: Request) -> Reply:
        if request.path == CLUSTERS_PATH:
            listing = b'[{"id": "k2", "x": ' + deep + b'}, {"id": "k1", "size": 1}]'
            return Reply(200, listing if request.query["skip"] == "0" else b"[]")
        return handler(request)

    loopback.reset(deep_cluster)
    with pytest.raises(PartialSnapshotError) as caught:
        take_snapshot(engine, make_client(loopback.url), workers=1, processes=0)
    assert caught.value.problems == [
        f"k2: PayloadError: GET {CLUSTERS_PATH}: cluster 0 (k2): (record): nested more than 512 levels deep"
    ]
    run = list_runs(engine)[-1]
    assert (run.status, run.columns_stored, run.clusters_stored) == ("failed", 1, 1)
    assert [c for c in loopback.seen if c.path != CLUSTERS_PATH and c.query["clusterId"] == "k2"] == []


@pytest.mark.parametrize("processes", [0, 1])
def test_keys_too_long_to_store_fail_their_cluster_or_stop_the_snapshot(
    loopback, make_client, engine, processes
):
    """A 3,000-byte fullyQualifiedName or a 600-byte cluster id: SQLite stored them, PostgreSQL
    failed the whole snapshot (an index entry is at most 2,704 bytes there); both now refuse the
    column (its cluster fails alone) or, for the id, the listing (there is no id to record)."""
    long_fqn = "s.t." + "é" * 1500  # 3,004 bytes

    def handler(request: Request) -> Reply:
        if request.path == CLUSTERS_PATH:
            listing = [{"id": "k1", "size": 1}, {"id": "k2", "size": 1}]
            return Reply(200, listing if request.query["skip"] == "0" else [])
        fqn = long_fqn if request.query["clusterId"] == "k2" else "s.t.ok"
        return Reply(
            200, {"results": [{"fullyQualifiedName": fqn}][int(request.query["skip"]) :], "totalCount": 1}
        )

    loopback.reset(handler)
    with pytest.raises(PartialSnapshotError) as caught:
        take_snapshot(engine, make_client(loopback.url), workers=1, processes=processes)
    (problem,) = caught.value.problems
    assert problem.startswith(
        f"k2: PayloadError: cluster k2: a column (s.t.{'é' * 76}…): (record): its key is "
    )
    assert problem.endswith("3,004 bytes long, more than the 2,048 stored")
    assert list_runs(engine)[-1].columns_stored == 1

    loopback.reset(lambda r: Reply(200, [{"id": "k" * 600, "size": 1}] if r.query.get("skip") == "0" else []))
    with pytest.raises(PayloadError) as stopped:
        take_snapshot(engine, make_client(loopback.url), workers=1, processes=processes)
    assert stopped.value.message == (
        f"GET {CLUSTERS_PATH}: cluster 0 ({'k' * 80}…): (record): its key is 600 bytes long, more than "
        "the 512 stored"
    )


@pytest.mark.parametrize("blank", ["", "   ", None])
def test_a_cluster_with_a_blank_id_fails_alone_under_its_place_in_the_listing(
    loopback, make_client, engine, blank
):
    """An id of spaces passed once (sent as clusterId=+++, which a lenient tenant answers with some
    other columns); then such a record stopped every snapshot of the tenant, with nothing to skip
    it by (a probe). It is recorded under its place in the listing, failed, and the others are
    fetched; --skip-cluster leaves it out by that name."""
    ghost = {"name": "ghost", "size": 3} if blank is None else {"id": blank, "name": "ghost", "size": 3}
    listing = [{"id": "k1", "size": 1}, ghost]

    def handler(r: Request) -> Reply:
        if r.path == CLUSTERS_PATH:
            return Reply(200, listing if r.query["skip"] == "0" else [])
        rows = [{"fullyQualifiedName": "s.t.c"}][int(r.query["skip"]) :]
        return Reply(200, {"results": rows, "totalCount": 1})

    loopback.reset(handler)
    with pytest.raises(PartialSnapshotError) as caught:
        take_snapshot(engine, make_client(loopback.url), workers=1, processes=0)
    assert caught.value.problems == [
        f"(no id, listed at 1): PayloadError: GET {CLUSTERS_PATH}: cluster 1: id: "
        + ("Field required" if blank is None else "Value error, the cluster id is empty or blank")
    ]
    assert {r.query["clusterId"] for r in loopback.seen if r.path != CLUSTERS_PATH} == {"k1"}
    run = list_runs(engine)[-1]
    assert (run.status, run.clusters_stored, run.columns_stored) == ("failed", 1, 1)
    skipped = take_snapshot(
        engine, make_client(loopback.url), workers=1, processes=0, skip_clusters=["(no id, listed at 1)"]
    )
    assert (skipped.status, skipped.clusters_stored, skipped.columns_stored) == ("complete", 1, 1)


class InterruptingProgress(Progress):
    def __init__(self) -> None:
        super().__init__(enabled=False)
        self.calls = 0

    def add_columns(self, count: int) -> None:
        self.calls += 1
        if self.calls == 3:
            raise KeyboardInterrupt


@MODES
def test_ctrl_c_fails_the_run_and_stops_the_workers(loopback, make_client, engine, processes):
    handler, _, _ = make_tenant({f"k{i}": 40 for i in range(20)})
    loopback.reset(handler)
    client = make_client(loopback.url, page_size=5)
    with pytest.raises(KeyboardInterrupt):
        take_snapshot(engine, client, workers=4, progress=InterruptingProgress(), processes=processes)
    (run,) = list_runs(engine)
    assert run.status == "failed" and run.error == "interrupted (Ctrl-C)"
    assert len(loopback.seen) < 1 + 20 * 9  # the rest was cancelled
    # the client is usable again afterwards
    assert len(client.list_clusters()) == 20


def test_progress_line_format():
    import io

    stream = io.StringIO()
    progress = Progress(stream=stream, enabled=True, min_interval=0)
    progress.start(3)
    progress.add_columns(1500)
    progress.cluster_done()
    progress.close()
    assert "\rsnapshot: clusters 1/3, columns 1,500, " in stream.getvalue()
    assert stream.getvalue().endswith(" columns/s\n")
    assert not Progress(stream=io.StringIO()).enabled  # not a terminal: silent


def _odd_listing(records):
    def handler(request: Request) -> Reply:
        if request.path == CLUSTERS_PATH:
            return Reply(200, records if request.query["skip"] == "0" else [])
        cid = request.query["clusterId"]
        rows = [{"fullyQualifiedName": f"{cid}.db.t.c{i}"} for i in range(2)]
        return Reply(200, {"results": rows[int(request.query["skip"]) :], "totalCount": 2})

    return handler


ODD = [{"id": "k1", "size": 2}, {"id": "k2", "size": 2, "status": {"state": "archived"}}, {"id": "k3"}]


@MODES
def test_a_listed_cluster_that_does_not_fit_the_models_fails_alone(loopback, make_client, engine, processes):
    """One odd cluster record (an object where BigID sends a status string) refused the whole
    listing, so nothing of the tenant was stored; it now fails that cluster, as a cluster whose
    columns cannot be fetched does, and the others are stored."""
    loopback.reset(_odd_listing(ODD))
    with pytest.raises(PartialSnapshotError) as caught:
        take_snapshot(engine, make_client(loopback.url), workers=2, processes=processes)
    error = f"PayloadError: GET {CLUSTERS_PATH}: cluster 1 (k2): status: Input should be a valid string"
    assert (
        caught.value.message
        == "run 1 is not complete: 1 of 3 clusters could not be fetched (the other 2 were stored)"
    )
    assert caught.value.problems == [f"k2: {error}"]
    (run,) = list_runs(engine)
    assert run.status == "failed" and run.details["failed_clusters"] == [{"cluster_id": "k2", "error": error}]
    cols, clusters = stored(engine, run.id)
    assert sorted(cols) == [(c, f"{c}.db.t.c{i}") for c in ("k1", "k3") for i in range(2)]
    assert clusters["k2"].fetch_status == "failed" and clusters["k2"].raw == ODD[1]  # kept as sent
    asked = {r.query.get("clusterId") for r in loopback.seen if r.path == COLUMNS_PATH}
    assert asked == {"k1", "k3"}


def test_with_no_failed_cluster_allowed_an_odd_record_stops_the_snapshot_as_before(
    loopback, make_client, engine
):
    loopback.reset(_odd_listing(ODD))
    with pytest.raises(PayloadError) as caught:
        take_snapshot(engine, make_client(loopback.url), workers=1, processes=0, max_failed_clusters=0)
    assert (
        caught.value.message == f"GET {CLUSTERS_PATH}: cluster 1 (k2): status: Input should be a valid string"
    )
    (run,) = list_runs(engine)
    assert run.status == "failed"


def test_a_listed_cluster_without_an_id_fails_alone_and_the_listing_alone_is_strict(
    loopback, make_client, engine
):
    loopback.reset(_odd_listing([{"id": "k1"}, {"name": "no id", "size": 3}]))
    with pytest.raises(PartialSnapshotError, match=r"1 of 2 clusters could not be fetched") as caught:
        take_snapshot(engine, make_client(loopback.url), workers=1, processes=0)
    assert caught.value.problems == [
        f"(no id, listed at 1): PayloadError: GET {CLUSTERS_PATH}: cluster 1: id: Field required"
    ]
    client = make_client(loopback.url)
    loopback.reset(_odd_listing(ODD))
    with pytest.raises(PayloadError, match=r"cluster 1 \(k2\): status"):  # listing alone: strict
        client.list_clusters()


def test_a_breaker_tripped_by_odd_records_does_not_ask_whether_the_tenant_is_down(
    loopback, make_client, engine
):
    records = [{"id": f"k{i:02d}", "status": {"x": 1}} for i in range(4)] + [{"id": "ok", "size": 2}]
    loopback.reset(_odd_listing(records))
    with pytest.raises(PartialSnapshotError) as caught:
        take_snapshot(engine, make_client(loopback.url), workers=1, processes=0, max_failed_clusters=2)
    assert caught.value.tripped
    assert caught.value.hint == (
        "the tenant's records do not fit the models: re-run with --verbose and report them; "
        "auditor check --run 1 --allow-incomplete evaluates what was stored "
        "(--max-failed-clusters N allows more failed clusters)"
    )


@MODES
def test_integers_past_64_bits_huge_sizes_and_object_ids_are_kept_exactly(
    loopback, make_client, engine, processes
):
    # Found by a probe's own server: a 20-digit cluster id was read as 9.876543210987654e+19 and
    # asked for as such (404); a 33-digit field was stored as a float; a size of 1e400 refused the
    # whole listing; a MongoDB ObjectId id ({"$oid": ...}) stopped the snapshot.
    big = "98765432109876543210"
    listing = (
        b'[{"id": ' + big.encode() + b', "name": "big", "size": 1e400},'
        b' {"_id": {"$oid": "65b2f0c4a91e3d0012ab77e2"}, "name": "oid", "size": 1}]'
    )
    column = b'{"fullyQualifiedName": "s.t.%s", "rowCount": 123456789012345678901234567890123}'

    def handler(request: Request) -> Reply:
        if request.path == CLUSTERS_PATH:
            return Reply(200, listing if int(request.query["skip"]) == 0 else b"[]")
        if int(request.query["skip"]):
            return Reply(200, b'{"results": [], "totalCount": 1}')
        cid = request.query["clusterId"].encode()
        return Reply(200, b'{"results": [' + column % cid + b'], "totalCount": 1}')

    loopback.reset(handler)
    run = take_snapshot(engine, make_client(loopback.url, page_size=10), processes=processes)
    assert run.status == "complete", run.error
    cols, clusters = stored(engine, run.id)
    assert sorted(clusters) == ["65b2f0c4a91e3d0012ab77e2", big]
    assert clusters[big].size_announced is None  # 1e400 is no count of anything
    assert cols[(big, f"s.t.{big}")]["rowCount"] == 123456789012345678901234567890123
    asked = {r.query["clusterId"] for r in loopback.seen if r.path != CLUSTERS_PATH}
    assert asked == {"65b2f0c4a91e3d0012ab77e2", big}  # by their ids as sent


def test_a_listing_that_could_not_be_written_is_not_said_to_be_stored(
    loopback, make_client, engine, monkeypatch
):
    # Found in review: listing_stored was set while the listing's rows were only queued; a full
    # disk then left a failed run with no cluster that said its listing was stored, and a diff
    # with --allow-incomplete read every cluster of the other run as removed.
    from auditor.errors import StoreError
    from auditor.store.runs import get_run
    from auditor.store.writer import SnapshotWriter

    handler, _, _ = make_tenant({"a": 3, "b": 2})
    loopback.reset(handler)

    def disk_full(self, connection):
        raise StoreError(f"could not write run {self.run_id}: database or disk is full")

    monkeypatch.setattr(SnapshotWriter, "_write", disk_full)
    with pytest.raises(StoreError):
        take_snapshot(engine, make_client(loopback.url), workers=1, processes=0)
    (run,) = list_runs(engine)
    assert (run.status, run.clusters_stored, get_run(engine, run.id).listing_stored) == ("failed", 0, False)
