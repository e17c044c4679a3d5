"""Pagination properties, over real loopback HTTP: whatever the server does with page sizes, caps,
totals (right, wrong, missing), short pages and repeated rows, the client returns exactly the truth,
in order, once each, or fails clearly; it never loops forever."""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Callable

import pytest
from bs4 import BeautifulSoup
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from junitparser import JUnitXml

from auditor.bigid.client import CLUSTERS_PATH, COLUMNS_PATH
from auditor.bigid.paging import SAME_PAGE_LIMIT_SINGLE_ROW, NoProgress, PagingStats, RawPage, paginate
from auditor.errors import ApiError, PayloadError
from auditor.snapshot import take_snapshot
from auditor.store.db import open_database

from .conftest import Reply, Request


def column(i: int) -> dict:
    return {"fullyQualifiedName": f"src.schema.table.col{i}", "columnName": f"col{i}", "isPrimary": "false"}


def serve_stream(
    stream: list[dict], *, total: int | None, cap: int | None, ignore_skip: bool = False, offset: str = "skip"
):
    """Columns as a tenant serves them: ``offset`` names the parameter it pages by (another one
    is ignored, as an unknown parameter is), ``ignore_skip`` ignores every offset."""

    def handler(request: Request) -> Reply:
        assert request.path == COLUMNS_PATH
        assert "ignoreLimit" not in request.query and "sample" not in request.query
        limit = int(request.query["limit"])
        skip = 0 if ignore_skip else int(request.query.get(offset, 0))
        size = min(limit, cap) if cap else limit
        body: dict = {"results": stream[skip : skip + size]}
        if total is not None:
            body["totalCount"] = total
        return Reply(200, body)

    return handler


@st.composite
def scenarios(draw):
    n = draw(st.integers(0, 40))
    limit = draw(st.integers(1, 12))
    total_mode = draw(st.sampled_from(["right", "missing", "over", "under", "string"]))
    # Without a total, a short page is confirmed by one more request, so a capping server works too.
    cap = draw(st.one_of(st.none(), st.integers(1, 12)))
    delta = draw(st.integers(1, 8))
    truth = [column(i) for i in range(n)]
    stream: list[dict] = []
    repeats = 0
    for row in truth:
        stream.append(row)
        if stream and draw(st.integers(0, 4)) == 0:  # repeat an earlier row, here
            stream.append(stream[draw(st.integers(0, len(stream) - 1))])
            repeats += 1
    total = {
        "right": n,
        "missing": None,
        "over": n + delta,
        "under": max(n - delta, 0),
        "string": n,
    }[total_mode]
    size_hint = draw(st.sampled_from(["right", "none", "wrong"]))
    size = {"right": n, "none": None, "wrong": n + delta}[size_hint]
    return truth, stream, repeats, total, total_mode, cap, limit, size


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(scenario=scenarios())
def test_fetch_all_columns_returns_exactly_the_truth(loopback, make_client, scenario):
    truth, stream, repeats, total, total_mode, cap, limit, size = scenario
    served_total = str(total) if total_mode == "string" else total
    loopback.reset(serve_stream(stream, total=served_total, cap=cap))  # type: ignore[arg-type]
    client = make_client(loopback.url, page_size=limit)
    fetch = client.fetch_all_columns("c1", size=size)
    got = [raw for page in fetch for _, raw in page]
    assert got == truth  # every column, once, in the server's order, raw dicts unchanged
    assert fetch.stats.fetched == len(truth)
    assert fetch.stats.duplicates <= repeats  # trailing repeats after the end need not be read
    assert fetch.stats.total == total
    assert fetch.stats.total_mismatch == (total is not None and total != len(truth))
    # never more than the pages the stream needs, plus an empty page asked twice and one confirmation
    per_page = min(limit, cap) if cap else limit
    assert len(loopback.seen) <= math.ceil(len(stream) / per_page) + 3
    skips = [int(r.query["skip"]) for r in loopback.seen]
    assert skips == sorted(skips)  # skip never goes back...
    repeated = [s for i, s in enumerate(skips[1:]) if s == skips[i]]
    # ...and is asked twice only for an empty page before what was announced: the cluster's size when
    # given (a momentary empty page lost columns when the server sent no total), else the total
    assert repeated == [len(stream)] * len(repeated) and len(repeated) <= 1
    totals_say_more = total is not None and total > len(truth)
    if repeated:
        assert size > len(truth) if size is not None else totals_say_more
    assert fetch.stats.empty_reasked == len(repeated)
    # ended short when the page asked twice stayed empty before a total, or before a size without
    # a total (a total that proved too low is none); a size above a total that held is only stale
    no_total = total is None or total < len(truth)
    assert fetch.stats.ended_short == (bool(repeated) and (totals_say_more or no_total))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    n=st.integers(1, 30),
    limit=st.integers(1, 10),
    with_total=st.booleans(),
    size=st.sampled_from(["none", "right", "more"]),
)
def test_a_server_that_ignores_skip_fails_clearly_or_is_complete(
    loopback, make_client, n, limit, with_total, size
):
    truth = [column(i) for i in range(n)]
    loopback.reset(serve_stream(truth, total=n if with_total else None, cap=None, ignore_skip=True))
    client = make_client(loopback.url, page_size=limit)
    announced = {"none": None, "right": n, "more": n + 5}[size]
    try:
        got = [raw for page in client.fetch_all_columns("c1", size=announced) for _, raw in page]
    except ApiError as exc:
        # only when one page could not have held everything, or nothing but the size said more exist
        assert n >= limit or (size == "more" and not with_total)
        assert "cluster c1" in exc.message and "made no progress" in exc.message
        assert "ignores skip" in exc.message
    else:
        assert got == truth
        assert not (size == "more" and not with_total)  # the size said more exist: never complete
    # the same page once more (twice for single rows) with `offset` for `skip`, before it gives up
    assert len(loopback.seen) <= (4 if min(n, limit) > 1 else 2 + 2 * SAME_PAGE_LIMIT_SINGLE_ROW)


def test_the_page_cap_stops_an_endless_server(loopback, make_client):
    counter = iter(range(10**9))
    loopback.reset(lambda request: Reply(200, {"results": [column(next(counter))]}))
    client = make_client(loopback.url, page_size=1, max_pages=25)
    with pytest.raises(ApiError) as caught:
        for _ in client.fetch_all_columns("c9"):
            pass
    assert caught.value.message == (
        f"cluster c9: GET {COLUMNS_PATH} made no progress: gave up after 25 pages (the page cap) at skip=25"
    )
    assert len(loopback.seen) == 25


def test_pages_that_only_repeat_fail_after_a_bounded_number():
    pages = iter([[1, 2], [1, 2], [1, 2]])

    def fetch(skip: int, limit: int) -> RawPage[int]:
        return RawPage(next(pages), total=10)

    stats = PagingStats()
    got = []
    with pytest.raises(NoProgress, match="same page again at skip=2"):
        for page in paginate(fetch, limit=2, key=lambda x: x, stats=stats):
            got.extend(page)
    assert got == [1, 2]
    assert stats.pages == 3  # the page served again is asked for once more


def test_clusters_listing_stops_when_a_page_repeats():
    def fetch(skip: int, limit: int) -> RawPage[int]:
        return RawPage([1, 2, 3])  # ignores limit and skip, no total

    stats = PagingStats()
    pages = paginate(fetch, limit=3, key=lambda x: x, stats=stats, on_repeat="stop")
    got = [x for page in pages for x in page]
    assert got == [1, 2, 3]
    assert stats.stopped_on_repeat and stats.pages == 3  # the repeat asked for once more


def test_short_page_with_agreeing_size_ends_without_a_confirming_request(loopback, make_client):
    truth = [column(i) for i in range(7)]
    loopback.reset(serve_stream(truth, total=7, cap=None))
    client = make_client(loopback.url, page_size=10)
    assert [raw for page in client.fetch_all_columns("c1", size=7) for _, raw in page] == truth
    assert len(loopback.seen) == 1
    loopback.reset(serve_stream(truth, total=7, cap=None))
    assert [raw for page in client.fetch_all_columns("c1", size=None) for _, raw in page] == truth
    assert [int(r.query["skip"]) for r in loopback.seen] == [0, 7]  # confirmed by an empty page


def test_understated_total_on_a_capped_page_loses_nothing(loopback, make_client):
    truth = [column(i) for i in range(10)]
    loopback.reset(serve_stream(truth, total=5, cap=5))
    client = make_client(loopback.url, page_size=10)
    fetch = client.fetch_all_columns("c1", size=10)
    assert [raw for page in fetch for _, raw in page] == truth
    assert fetch.stats.total == 5 and fetch.stats.total_wrong


def test_an_empty_page_before_the_total_is_asked_for_once_more(loopback, make_client):
    """A server that answers one page empty for a moment (a stale replica, a gateway) mid-listing:
    the page is asked for again and the cluster is complete; an empty page that stays empty ends
    the listing, with the shortfall recorded."""
    truth = [column(i) for i in range(25)]
    glitches = {10: 1}  # skip -> empty answers still to give
    glitch_total = 25  # what the empty answers announce

    def flaky(request: Request) -> Reply:
        skip, limit = int(request.query["skip"]), int(request.query["limit"])
        if glitches.get(skip):
            glitches[skip] -= 1
            return Reply(200, {"results": [], "totalCount": glitch_total})
        return Reply(200, {"results": truth[skip : skip + limit], "totalCount": 25})

    loopback.reset(flaky)
    fetch = make_client(loopback.url, page_size=10).fetch_all_columns("c1", size=25)
    assert [raw for page in fetch for _, raw in page] == truth
    assert [int(r.query["skip"]) for r in loopback.seen] == [0, 10, 10, 20]
    assert (fetch.stats.empty_reasked, fetch.stats.total_mismatch, fetch.stats.ended_short) == (
        1,
        False,
        False,
    )

    glitches, glitch_total = {10: 1}, 0  # an empty answer that also says "0 in all"
    loopback.reset(flaky)
    fetch = make_client(loopback.url, page_size=10).fetch_all_columns("c1", size=25)
    assert [raw for page in fetch for _, raw in page] == truth
    assert fetch.stats.empty_reasked == 1

    glitches, glitch_total = {10: 2}, 25  # empty twice: believed, the listing ends short
    loopback.reset(flaky)
    fetch = make_client(loopback.url, page_size=10).fetch_all_columns("c1", size=25)
    assert [raw for page in fetch for _, raw in page] == truth[:10]
    assert [int(r.query["skip"]) for r in loopback.seen] == [0, 10, 10]
    assert (fetch.stats.empty_reasked, fetch.stats.total_mismatch, fetch.stats.ended_short) == (1, True, True)

    # the cluster's size agrees with what was fetched: the total alone is overstated, no second ask
    loopback.reset(serve_stream(truth[:10], total=25, cap=None))
    fetch = make_client(loopback.url, page_size=10).fetch_all_columns("c1", size=10)
    assert [raw for page in fetch for _, raw in page] == truth[:10]
    assert [int(r.query["skip"]) for r in loopback.seen] == [0, 10]
    assert (fetch.stats.empty_reasked, fetch.stats.ended_short) == (0, False)


@pytest.mark.parametrize(
    ("empty_once", "shape"),
    [(2, "bare"), (0, "bare"), (0, "zero-total")],
)
def test_an_empty_page_before_the_clusters_size_is_asked_for_once_more(
    loopback, make_client, empty_once, shape
):
    """With no total (the tutorial's bare array), or a total of 0 on the empty answer, only the
    cluster's size says more columns exist: a page answered empty for a moment lost the rest of the
    cluster, and the run was complete."""
    truth = [column(i) for i in range(7)]
    glitched: set[int] = set()
    answers = {"stays": False}

    def flaky(request: Request) -> Reply:
        skip, limit = int(request.query["skip"]), int(request.query["limit"])
        if skip == empty_once and (skip not in glitched or answers["stays"]):
            glitched.add(skip)
            return Reply(200, [] if shape == "bare" else {"results": [], "totalCount": 0})
        rows = truth[skip : skip + limit]
        return Reply(200, rows if shape == "bare" else {"results": rows, "totalCount": 7})

    loopback.reset(flaky)
    fetch = make_client(loopback.url, page_size=2).fetch_all_columns("c1", size=7)
    assert [raw for page in fetch for _, raw in page] == truth
    assert [int(r.query["skip"]) for r in loopback.seen].count(empty_once) == 2
    assert (fetch.stats.empty_reasked, fetch.stats.ended_short) == (1, False)

    # Empty twice: believed. Without a total it is a shortfall against the size; a server that
    # says "0 in all" twice is taken at its word (its size is stale, noted as a size mismatch).
    answers["stays"] = True
    loopback.reset(flaky)
    fetch = make_client(loopback.url, page_size=2).fetch_all_columns("c1", size=7)
    assert [raw for page in fetch for _, raw in page] == truth[:empty_once]
    assert (fetch.stats.empty_reasked, fetch.stats.ended_short) == (1, shape == "bare")


def test_a_snapshot_records_the_empty_pages_it_asked_for_again(loopback, make_client, tmp_path):
    from auditor.bigid.client import CLUSTERS_PATH
    from auditor.render.context import fetch_notes
    from auditor.snapshot import take_snapshot
    from auditor.store.db import open_database

    truth = [column(i) for i in range(12)]
    glitched: set[int] = set()

    def handler(request: Request) -> Reply:
        if request.path == CLUSTERS_PATH:
            clusters = [{"id": "c1", "name": "one", "size": 12}]
            return Reply(200, clusters if request.query["skip"] == "0" else [])
        skip, limit = int(request.query["skip"]), int(request.query["limit"])
        if skip == 5 and skip not in glitched:
            glitched.add(skip)
            return Reply(200, {"results": [], "totalCount": 12})
        return Reply(200, {"results": truth[skip : skip + limit], "totalCount": 12})

    loopback.reset(handler)
    engine = open_database(tmp_path / "reask.db")
    run = take_snapshot(engine, make_client(loopback.url, page_size=5), workers=1, processes=0)
    engine.dispose()
    assert (run.status, run.columns_stored) == ("complete", 12)
    assert run.details["empty_pages_reasked"] == 1 and run.details["total_mismatch_count"] == 0
    assert "1 empty pages before what a cluster announced, asked for once more" in fetch_notes(run.details)


def test_a_cluster_that_serves_less_than_it_announced_is_counted_and_noted_by_check(loopback, tmp_path):
    """An empty page before the total, twice: the listing ends short and the run is complete, but the
    run counts the cluster (``total_shortfall_count``) and ``auditor check`` says its columns were
    not all checked; a total that only undercounts is not a shortfall."""
    from auditor.bigid.client import CLUSTERS_PATH

    from .test_bigid_leaks import run_auditor

    def handler(request: Request) -> Reply:
        if request.path == CLUSTERS_PATH:
            clusters = [{"id": "short", "name": "one"}, {"id": "under", "name": "two"}]
            return Reply(200, clusters if request.query["skip"] == "0" else [])
        skip = int(request.query["skip"])
        if request.query["clusterId"] == "short":  # announces 12, serves 5
            return Reply(200, {"results": [column(i) for i in range(5)][skip:], "totalCount": 12})
        rows = [{**column(i), "fullyQualifiedName": f"u.s.t.c{i}"} for i in range(4)]
        return Reply(200, {"results": rows[skip:], "totalCount": 2})  # announces 2, serves 4

    loopback.reset(handler)
    env = {"BIGID_URL": loopback.url, "BIGID_TOKEN": "SAMPLE"}
    snap = run_auditor("snapshot", "--db", "a.db", env=env, cwd=tmp_path)
    assert snap.returncode == 0, snap.stderr.decode()
    note = (
        "in run 1, 1 cluster served fewer columns than announced (by their totalCount, or their size "
        "where no total came); the columns not served were not checked (auditor runs --format json "
        "lists them under total_mismatches and size_mismatches)"
    )
    check = run_auditor("check", "--db", "a.db", env=env, cwd=tmp_path)
    assert check.returncode == 0, check.stderr.decode()
    assert f"\nnote: {note}\n" in check.stdout.decode()  # the table ends with it ...
    assert "note:" not in check.stderr.decode()  # ... and says it once
    as_json = run_auditor("check", "--db", "a.db", "--format", "json", env=env, cwd=tmp_path)
    assert as_json.stderr.decode().splitlines()[0] == f"note: {note}"
    # every output says it too, not stderr alone: a CI job reads only what it parses

    def output(fmt: str) -> str:
        done = run_auditor("check", "--db", "a.db", "--format", fmt, env=env, cwd=tmp_path)
        assert done.returncode == 0, done.stderr.decode()
        return done.stdout.decode()

    assert json.loads(output("json"))["shortfall_note"] == note
    escaped = note.replace("_", "\\_")  # Markdown emphasis escaped
    assert f"> **Note:** {escaped}\n" in output("markdown")
    suites = list(JUnitXml.fromstring(output("junit").encode()))
    assert len(suites) == 16
    assert all({p.name: p.value for p in suite.properties()} == {"total_shortfall": note} for suite in suites)
    sarif = json.loads(output("sarif"))
    assert sarif["runs"][0]["invocations"][0]["toolExecutionNotifications"] == [
        {"level": "warning", "descriptor": {"id": "total-shortfall"}, "message": {"text": note}}
    ]
    runs = run_auditor("runs", "--db", "a.db", "--format", "json", env=env, cwd=tmp_path)
    details = json.loads(runs.stdout)["runs"][0]["details"]
    assert (details["total_shortfall_count"], details["total_mismatch_count"]) == (1, 2)
    assert details["empty_pages_reasked"] == 1


def test_a_listing_capped_below_limit_without_a_total_loses_nothing(loopback, make_client):
    """The tutorial's clusters listing is a bare array: no total. A tenant that serves at most 7
    clusters a page, asked for 1,000, used to end the listing after its first (short) page, and
    the snapshot silently held 7 of 20 clusters. A short page is now confirmed by one more
    request; a non-empty answer shows the cap, and the listing goes on to the end."""
    clusters = [{"id": f"k{i:02d}", "size": 1} for i in range(20)]

    def handler(request: Request) -> Reply:
        skip, limit = int(request.query["skip"]), int(request.query["limit"])
        return Reply(200, clusters[skip : skip + min(limit, 7)])

    loopback.reset(handler)
    client = make_client(loopback.url, page_size=1000)
    assert [c.id for c, _ in client.list_clusters()] == [c["id"] for c in clusters]
    # 7 (short: confirm), 7 (the cap shows), 6 (shorter than the cap: the end)
    assert [int(r.query["skip"]) for r in loopback.seen] == [0, 7, 14]

    loopback.reset(lambda request: Reply(200, clusters[int(request.query["skip"]) :][:1000]))
    client = make_client(loopback.url, page_size=1000)
    assert len(client.list_clusters()) == 20
    assert [int(r.query["skip"]) for r in loopback.seen] == [0, 20]  # the end, confirmed by an empty page


def test_pages_cut_to_varying_lengths_without_a_total_lose_nothing_the_size_announces(loopback, make_client):
    """Found by a probe with its own server: pages cut to a varying length (by bytes, say: 12
    rows, then 6, then the rest) and no total. The 6-row page under the 12-row cap the first one
    showed was taken for the end, while the cluster's size said 25: 18 of every 25 columns were
    stored, the run complete. A short page ends the listing only when the size does not say more."""
    truth = [column(i) for i in range(25)]

    def byte_budget(request: Request) -> Reply:
        skip, limit = int(request.query["skip"]), int(request.query["limit"])
        cap = 12 if skip == 0 else 6 if skip == 12 else 100
        return Reply(200, truth[skip : skip + min(limit, cap)])

    loopback.reset(byte_budget)
    listing = make_client(loopback.url, page_size=1000).fetch_all_columns("c1", size=25)
    assert [raw for page in listing for _, raw in page] == truth
    assert not listing.stats.ended_short
    # the same server with no size announced: the cap is taken for the end, as before (nothing says
    # more exist; the alternative is a request more for every cluster of every tenant)
    loopback.reset(byte_budget)
    unsized = make_client(loopback.url, page_size=1000).fetch_all_columns("c1", size=None)
    assert len([raw for page in unsized for _, raw in page]) == 18


def test_a_clusters_listing_that_honours_limit_and_ignores_skip_is_asked_for_whole(
    loopback, make_client, monkeypatch
):
    """Found by a probe: a tenant that serves `limit` clusters and ignores `skip` (the tutorial's
    bare array, no total) gave the first page twice; the repeat ended the listing, and the run held
    1,000 of 1,200 clusters, complete, exit 0. A full page served again is now asked for again from
    the start with ten times the limit, until a page comes back not full."""
    clusters = [{"id": f"k{i:02d}", "size": 0} for i in range(12)]

    def limit_only(request: Request) -> Reply:
        return Reply(200, clusters[: int(request.query["limit"])])

    loopback.reset(limit_only)
    client = make_client(loopback.url, page_size=5)
    assert [c.id for c, _ in client.list_clusters()] == [c["id"] for c in clusters]
    asked = [(int(r.query["skip"]), int(r.query["limit"])) for r in loopback.seen]
    assert asked == [(0, 5), (5, 5), (5, 5), (0, 50)]  # the repeat asked for once more, then whole
    stats = client.last_cluster_paging
    assert (stats.regrown, stats.duplicates, stats.fetched) == (50, 0, 12)
    # a server that ignores both gives everything each time: the same list, one request more, and
    # the repeated page is no longer counted as clusters listed twice
    loopback.reset(lambda request: Reply(200, clusters[:5]))
    client = make_client(loopback.url, page_size=5)
    assert len(client.list_clusters()) == 5
    assert (client.last_cluster_paging.duplicates, client.last_cluster_paging.regrown) == (0, 50)
    # a server that caps its answers and ignores skip (a review): 5, 5 again, 50 for 50, then 50
    # for 500: the rest cannot be listed, and that is said, not a complete run of 50
    many = [{"id": f"m{i:03d}", "size": 0} for i in range(120)]
    loopback.reset(lambda request: Reply(200, many[: min(int(request.query["limit"]), 50)]))
    with pytest.raises(ApiError) as caught:
        make_client(loopback.url, page_size=5).list_clusters()
    assert caught.value.message == (
        "GET /api/v1/clusters: the server answers at most 50 clusters a request and ignores skip, so the "
        "clusters past them cannot be listed"
    )
    # an order that changes between requests (a re-probe: 22 of 30 stored, complete): ids listed
    # again on later pages mean as many were skipped; asked in one page, all are listed
    import random

    def shuffled(request: Request) -> Reply:
        skip, limit = int(request.query["skip"]), int(request.query["limit"])
        order = random.Random(len(loopback.seen)).sample(clusters, len(clusters))
        return Reply(200, order[skip : skip + limit])

    loopback.reset(shuffled)
    client = make_client(loopback.url, page_size=5)
    assert sorted(c.id for c, _ in client.list_clusters()) == [c["id"] for c in clusters]
    # everything at once in a new order each time (a re-probe: "paging made no progress", nothing
    # stored): the first answer held all
    loopback.reset(lambda request: Reply(200, random.sample(clusters, len(clusters))))
    client = make_client(loopback.url, page_size=5)
    assert sorted(c.id for c, _ in client.list_clusters()) == [c["id"] for c in clusters]
    # a list that never fits: said, not cut short
    monkeypatch.setattr("auditor.bigid.client.MAX_LISTING_LIMIT", 10)
    loopback.reset(limit_only)
    client = make_client(loopback.url, page_size=5)
    with pytest.raises(ApiError) as caught:
        client.list_clusters()
    assert caught.value.message == (
        "GET /api/v1/clusters: the server serves the same 10 clusters whatever skip says, so the "
        "clusters past them cannot be listed"
    )


def test_a_clusters_listing_whose_total_one_answer_cannot_reach_stops_the_snapshot(loopback, make_client):
    """Found by a probe: a tenant that serves at most 2 clusters an answer, ignores skip and says
    "totalCount": 4 gave the same page again; the client asked for 10,000 at once, got the same 2,
    and stored a complete run of 2 clusters, exit 0, saying nothing of the other two. The total says
    more exist than any answer holds: the snapshot stops, saying so (docs/fetch.md)."""
    clusters = [{"id": f"k{i}", "size": 0} for i in range(4)]
    for envelope in (
        lambda rows: {"results": rows, "totalCount": 4},
        lambda rows: {"data": {"clusters": rows, "totalCount": 4}},
    ):
        loopback.reset(lambda request, envelope=envelope: Reply(200, envelope(clusters[:2])))
        with pytest.raises(ApiError) as caught:
            make_client(loopback.url, page_size=1000).list_clusters()
        assert caught.value.message == (
            "GET /api/v1/clusters: the server serves the same clusters whatever skip says, and no more "
            "when asked for 10,000 at once: totalCount says 4, but only 2 arrived"
        )
        assert caught.value.hint == "narrow the listing with --filter, so that it fits in one answer"
        asked = [(int(r.query["skip"]), int(r.query["limit"])) for r in loopback.seen]
        assert asked == [(0, 1000), (2, 1000), (2, 1000), (0, 10000)]
    # the same server announcing what it serves: a complete listing of 2, as before
    loopback.reset(lambda request: Reply(200, {"results": clusters[:2], "totalCount": 2}))
    assert [c.id for c, _ in make_client(loopback.url, page_size=1000).list_clusters()] == ["k0", "k1"]


def test_a_repeated_page_does_not_end_a_listing_that_announced_more():
    """A server that ignores skip *and* caps its pages: the repeat used to end the listing, and the
    snapshot held 3 of 10 clusters, or 40 of a cluster's 120 columns, as complete."""

    def capped(total: int | None):
        def fetch(skip: int, limit: int) -> RawPage[int]:
            return RawPage(list(range(3)), total=total)  # the first 3 of 10, whatever skip says

        return fetch

    for total, expected, said in (
        (10, None, "totalCount says 10, but only 3 arrived"),
        (None, 10, "the cluster's size says 10, but only 3 arrived"),
    ):
        for on_repeat in ("stop", "fail"):
            stats = PagingStats()
            pages = paginate(
                capped(total), limit=5, key=lambda x: x, stats=stats, on_repeat=on_repeat, expected=expected
            )
            with pytest.raises(NoProgress) as caught:
                list(pages)
            assert str(caught.value) == (
                "the server returned the same page again at skip=3 (it ignores skip, or its records "
                f"repeat one key); {said}"
            )
            assert stats.duplicates == 0  # the page served again is paging's echo (a probe: 3 counted)
    # nothing announced more, or the total was reached: the repeat ends the listing as before
    for total, expected in ((None, None), (3, None), (None, 3), (3, 10)):
        stats = PagingStats()
        got = [
            x
            for page in paginate(
                capped(total), limit=5, key=lambda x: x, stats=stats, on_repeat="fail", expected=expected
            )
            for x in page
        ]
        assert got == [0, 1, 2]


@pytest.mark.parametrize("processes", [0, 2], ids=["in-thread", "pool"])
@pytest.mark.parametrize(
    ("as_list", "sized"),
    [(True, True), (False, True), (False, False)],
    ids=["key-list", "key-text", "no-size"],
)
def test_a_tenant_that_pages_only_by_its_offset_key_is_listed_whole(
    loopback, make_client, tmp_path, processes, as_list, sized
):
    """Found by a probe with its own server: a tenant that ignores skip and offset and continues a
    listing only by the `offset.offsetKey` its pages offer (reference §5.1) failed every cluster
    larger than a page, "made no progress", the key never used. After the repeat, the listing goes
    on by the key each page offers, and ends on a page offering none. Without a size or a total
    too: the repeat there would end the listing (a server that sends everything at once offers no
    key), and a second probe saw 10 of 25 columns stored, complete."""
    truth = [column(i) for i in range(25)]

    def keyed(request: Request) -> Reply:
        if request.path == CLUSTERS_PATH:
            listing = [{"id": "c1", "size": 25} if sized else {"id": "c1"}]
            return Reply(200, listing if request.query["skip"] == "0" else [])
        start = int(request.query.get("offsetKey", 0))  # skip and offset: ignored
        rows = truth[start : start + min(int(request.query["limit"]), 10)]
        body: dict = {"results": rows}
        if start + len(rows) < len(truth):
            following = str(start + len(rows))
            body["offset"] = {"offsetKey": [following] if as_list else following, "keepAlive": "1m"}
        return Reply(200, body)

    loopback.reset(keyed)
    engine = open_database(tmp_path / "k.db")
    # (pages of 10 asked 1,000 at a time: the first is short, so the repeat came where, without a
    # size or a total, it would end the listing)
    run = take_snapshot(engine, make_client(loopback.url, page_size=1000), workers=1, processes=processes)
    assert (run.status, run.columns_stored) == ("complete", 25)
    asked = [
        {k: v for k, v in r.query.items() if k in ("skip", "offset", "offsetKey")}
        for r in loopback.seen
        if r.path == COLUMNS_PATH and r.query.get("clusterId") == "c1"
    ]
    assert asked == [{"skip": "0"}, {"skip": "10"}, {"offsetKey": "10"}, {"offsetKey": "20"}]


def test_a_tenant_that_pages_by_offset_is_listed_whole_after_one_repeat(loopback, make_client):
    """Found by a probe: a tenant paging by ``offset`` (reference §9.21) ignored ``skip``; every
    cluster larger than a page failed. The repeat is asked again with ``offset``, which the client
    then keeps for every later cluster."""
    truth = [column(i) for i in range(12)]
    loopback.reset(serve_stream(truth, total=None, cap=None, offset="offset"))
    client = make_client(loopback.url, page_size=5)
    first = [raw for page in client.fetch_all_columns("c1", size=12) for _, raw in page]
    assert first == truth and client.offset_param == "offset"
    asked = [{k: v for k, v in r.query.items() if k in ("skip", "offset")} for r in loopback.seen]
    assert asked == [{"skip": "0"}, {"skip": "5"}, {"skip": "5"}, {"offset": "5"}, {"offset": "10"}]
    loopback.seen.clear()
    again = client.fetch_all_columns("c2", size=12)
    assert [raw for page in again for _, raw in page] == truth and again.stats.duplicates == 0
    # no skip tried again (this stand-in serves c2 c1's columns: the client also checks, once, that
    # the cluster id is read, by asking for clusters that cannot exist)
    own = [r.query.get("offset") for r in loopback.seen if r.query.get("clusterId") == "c2"]
    assert own == ["0", "5", "10"]


def test_a_columns_listing_that_ignores_skip_below_the_clusters_size_fails_it(loopback, make_client):
    truth = [column(i) for i in range(120)]
    loopback.reset(serve_stream(truth, total=None, cap=40, ignore_skip=True))
    client = make_client(loopback.url, page_size=100)
    with pytest.raises(ApiError) as caught:
        list(client.fetch_all_columns("c1", size=120))
    assert caught.value.message == (
        f"cluster c1: GET {COLUMNS_PATH} made no progress (with skip, and with offset): the server returned "
        "the same page again at skip=40 (it ignores skip, or its records repeat one key); the cluster's "
        "size says 120, but only 40 arrived"
    )
    loopback.reset(serve_stream(truth[:40], total=None, cap=40, ignore_skip=True))
    assert len([raw for page in client.fetch_all_columns("c1", size=None) for _, raw in page]) == 40


def test_a_cluster_list_that_ends_short_of_its_total_is_noted_by_check(loopback, make_client, tmp_path):
    """The listing announces 5 clusters, serves 3, then answers empty (asked twice): the run is
    complete with 3, and the check says that clusters not served were not checked, in every format
    (the same sentence as a cluster's own shortfall); a listing that announced fewer is no shortfall."""
    from auditor.bigid.client import CLUSTERS_PATH
    from auditor.engine import check_run, load_ruleset
    from auditor.snapshot import take_snapshot
    from auditor.store.db import open_database

    announced = {"total": 5}

    def handler(request: Request) -> Reply:
        if request.path == CLUSTERS_PATH:
            clusters = [{"id": f"k{i}", "name": f"c{i}", "size": 1} for i in range(3)]
            skip = int(request.query["skip"])
            return Reply(200, {"results": clusters[skip:], "totalCount": announced["total"]})
        row = {"fullyQualifiedName": f"{request.query['clusterId']}.s.t.c", "columnName": "c"}
        return Reply(200, {"results": [row] if request.query["skip"] == "0" else [], "totalCount": 1})

    loopback.reset(handler)
    engine = open_database(tmp_path / "listing.db")
    run = take_snapshot(engine, make_client(loopback.url), workers=1, processes=0)
    assert (run.status, run.clusters_stored) == ("complete", 3)
    result = check_run(engine, run.id, load_ruleset(None))
    assert result.shortfall_note() == (
        "in run 1, the cluster list announced 5 clusters but 3 arrived; clusters not served, if they "
        "exist, were not checked"
    )
    assert result.to_json()["shortfall_note"] == result.shortfall_note()
    announced["total"] = 2  # understated: more arrived than announced
    later = take_snapshot(engine, make_client(loopback.url), workers=1, processes=0)
    assert later.details["cluster_total_mismatch"] == {"announced": 2, "fetched": 3}
    assert check_run(engine, later.id, load_ruleset(None)).shortfall_note() is None


def test_a_cluster_that_ended_short_is_recorded_so_and_not_compared_by_the_diff(loopback, tmp_path):
    """Found by a probe: a tenant that stopped serving a cluster's columns early left a complete run
    whose diff read the columns not served as removed and their findings as resolved, with no word
    of it. The cluster is now recorded ``short`` and left out of the diff, as a failed one is."""
    import sqlite3

    from auditor.bigid.client import CLUSTERS_PATH

    from .test_bigid_leaks import run_auditor

    served = {"columns": 12}

    def handler(request: Request) -> Reply:
        if request.path == CLUSTERS_PATH:
            clusters = [{"id": "short", "name": "one"}, {"id": "whole", "name": "two"}]
            return Reply(200, clusters if request.query["skip"] == "0" else [])
        skip = int(request.query["skip"])
        if request.query["clusterId"] == "short":  # announces 12
            rows = [column(i) for i in range(served["columns"])]
            return Reply(200, {"results": rows[skip:], "totalCount": 12})
        rows = [{**column(i), "fullyQualifiedName": f"w.s.t.c{i}"} for i in range(3)]
        return Reply(200, {"results": rows[skip:], "totalCount": 3})

    loopback.reset(handler)
    env = {"BIGID_URL": loopback.url, "BIGID_TOKEN": "SAMPLE"}
    assert run_auditor("snapshot", "--db", "a.db", env=env, cwd=tmp_path).returncode == 0
    served["columns"] = 5  # then it serves 5 of the 12 it announces
    assert run_auditor("snapshot", "--db", "a.db", env=env, cwd=tmp_path).returncode == 0
    with sqlite3.connect(tmp_path / "a.db") as db:
        rows = db.execute(
            "select run_id, cluster_id, fetch_status, columns_fetched from run_clusters order by 1, 2"
        ).fetchall()
        statuses = db.execute("select id, status from runs order by id").fetchall()
    assert rows == [
        (1, "short", "complete", 12),
        (1, "whole", "complete", 3),
        (2, "short", "short", 5),
        (2, "whole", "complete", 3),
    ]
    assert statuses == [(1, "complete"), (2, "complete")]  # totals are hints: the run stands
    diff = run_auditor("diff", "--db", "a.db", "--format", "json", env=env, cwd=tmp_path)
    assert diff.returncode == 0, diff.stderr.decode()
    payload = json.loads(diff.stdout)
    assert payload["not_compared"] == [{"cluster_id": "short", "from": "complete", "to": "short"}]
    assert payload["columns"]["removed"] == [] and payload["findings"]["resolved"] == []
    assert "1 cluster was not compared: not fetched in full in run 2 (short)" in diff.stderr.decode()
    # served in full again: checked against the short run, the columns it did not serve read as new,
    # and every format says why (a probe saw a --new-only gate fail on them without a word)
    served["columns"] = 12
    assert run_auditor("snapshot", "--db", "a.db", env=env, cwd=tmp_path).returncode == 0
    checked = run_auditor("check", "--db", "a.db", "--format", "json", env=env, cwd=tmp_path)
    assert json.loads(checked.stdout)["baseline_note"] == (
        "the baseline, run 2, served fewer columns than announced in 1 cluster: findings about the "
        "columns it did not serve count as new here (auditor diff leaves that cluster out)"
    )
    from auditor.render.context import fetch_notes

    details = json.loads(
        run_auditor("runs", "--db", "a.db", "--format", "json", env=env, cwd=tmp_path).stdout
    )
    short_run = next(run for run in details["runs"] if run["id"] == 2)
    assert fetch_notes(short_run["details"])[0] == (
        "1 cluster that served fewer columns than announced (recorded short: the columns not served were "
        "not checked, and a diff does not compare it)"
    )
    # The report of run 3 against run 2: the 7 columns run 2 did not serve have findings that the
    # "Open findings" card counts and no section lists (the diff leaves them out of "New", the check
    # does not call them existing): the note says how many, and where they are listed.
    rules = tmp_path / "every-column.yaml"
    rules.write_text(
        "rules:\n  - id: every-column\n    title: Every column\n    description: Matches every column.\n"
        "    severity: low\n    scope: column\n    condition: {field: columnName, exists: true}\n"
        "    message: '{column.fullyQualifiedName}'\n    remediation: None.\n",
        encoding="utf-8",
    )
    statuses = Counter(
        (f["cluster_id"], f["status"])
        for f in json.loads(
            run_auditor(
                "check", "--db", "a.db", "--rules", str(rules), "--format", "json", env=env, cwd=tmp_path
            ).stdout
        )["findings"]
    )
    assert statuses == {("short", "new"): 7, ("short", "existing"): 5, ("whole", "existing"): 3}
    report = run_auditor(
        "report", "--db", "a.db", "--rules", str(rules), "--output", "r.html", env=env, cwd=tmp_path
    )
    assert report.returncode == 0, report.stderr.decode()
    page = (tmp_path / "r.html").read_text(encoding="utf-8")
    # the command names the database and the rules the report was made with (it read ./auditor.db,
    # and the built-in pack, from wherever the reader stood)
    note = (
        "7 open findings of these clusters count in Open findings but are listed in no section: "
        f"auditor check --run 3 --db {tmp_path.resolve() / 'a.db'} --rules {rules} --format csv lists every "
        "finding."
    )
    assert note in page
    soup = BeautifulSoup(page, "html.parser")
    cards = {card["data-card"]: card.select_one(".value").get_text() for card in soup.select("[data-card]")}
    assert (cards["open"], cards["new"]) == ("15", "0")
    assert len(soup.select("#open tr[data-fingerprint]")) == 8  # "Still open": 5 of short, 3 of whole
    assert soup.select_one("#new tr[data-fingerprint]") is None
    import email
    from email import policy

    sent = run_auditor(
        "email", "--db", "a.db", "--rules", str(rules), "--to", "a@example.com", "--eml", "m.eml",
        env=env, cwd=tmp_path,
    )  # fmt: skip
    assert sent.returncode == 0, sent.stderr.decode()
    message = email.message_from_bytes((tmp_path / "m.eml").read_bytes(), policy=policy.default)
    lines = message.get_body(("plain",)).get_content().splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith("Not compared: "))
    assert lines[at].endswith("leave these clusters out. " + note) and lines[at + 1] == ""
    assert note in message.get_body(("html",)).get_content()


def test_a_cluster_listed_twice_is_no_cluster_missing(loopback, tmp_path):
    """Found by a probe: a listing of 3 records (one id twice) with totalCount 3 left 'the cluster
    list announced 3 clusters but 2 arrived' in the run, and check said clusters were not served."""
    from auditor.bigid.client import CLUSTERS_PATH

    from .test_bigid_leaks import run_auditor

    def handler(request: Request) -> Reply:
        if request.path == CLUSTERS_PATH:
            listed = [{"id": "k1", "name": "one"}, {"id": "k2"}, {"id": "k1", "name": "Impostor"}]
            return Reply(200, {"results": listed if request.query["skip"] == "0" else [], "totalCount": 3})
        return Reply(200, {"results": [column(0)][int(request.query["skip"]) :], "totalCount": 1})

    loopback.reset(handler)
    env = {"BIGID_URL": loopback.url, "BIGID_TOKEN": "SAMPLE"}
    snap = run_auditor("snapshot", "--db", "a.db", env=env, cwd=tmp_path)
    assert snap.returncode == 0, snap.stderr.decode()
    assert "arrived" not in snap.stderr.decode()
    runs = run_auditor("runs", "--db", "a.db", "--format", "json", env=env, cwd=tmp_path)
    details = json.loads(runs.stdout)["runs"][0]["details"]
    # the second k1 differs from the first: a conflict (see below), not a repeat; no cluster missing
    assert (details["cluster_duplicates"], details["cluster_conflict_count"]) == (0, 1)
    assert "cluster_total_mismatch" not in details
    run = json.loads(runs.stdout)["runs"][0]
    assert (run["clusters_announced"], run["clusters_stored"]) == (2, 2)  # not "2 of 3 clusters"
    checked = run_auditor("check", "--db", "a.db", "--format", "json", env=env, cwd=tmp_path)
    assert "not served" not in json.loads(checked.stdout)["shortfall_note"]


def _one_cluster(
    rows: list[dict] | Callable[[int, int], tuple[list[dict], int]], *, size: int, total: int = 0
):
    """A tenant of one cluster ``c`` (announcing ``size``) whose columns are ``rows``, each page
    announcing ``total``; or ``rows(skip, limit)`` gives a page's columns and its total."""
    from auditor.bigid.client import CLUSTERS_PATH

    def handler(request: Request) -> Reply:
        if request.path == CLUSTERS_PATH:
            listed = [{"id": "c", "name": "c", "size": size}]
            return Reply(200, listed if request.query["skip"] == "0" else [])
        skip, limit = int(request.query["skip"]), int(request.query["limit"])
        page, announced = rows(skip, limit) if callable(rows) else (rows[skip : skip + limit], total)
        return Reply(200, {"results": page, "totalCount": announced})

    return handler


def snapshot_run(tmp_path, env, *args: str) -> tuple[list[str], dict]:
    """``auditor snapshot ARGS`` into ``tmp_path``'s a.db (asserted to succeed): its stderr lines, and
    the run as ``auditor runs --format json`` shows it."""
    from .test_bigid_leaks import run_auditor

    snap = run_auditor(*args, env=env, cwd=tmp_path)
    assert snap.returncode == 0, snap.stderr.decode()
    runs = run_auditor("runs", "--db", "a.db", "--format", "json", env=env, cwd=tmp_path)
    return snap.stderr.decode().splitlines(), json.loads(runs.stdout)["runs"][0]


def _changing_cluster(names: list[str], change: str, every_pass: bool):
    """A cluster ``c`` of ``names`` whose catalog changes after the first page of its first listing
    (of every listing, ``every_pass``): a column deleted, or inserted, at its front."""
    served = Counter()

    def pages(skip: int, limit: int) -> tuple[list[dict], int]:
        served["passes"] += skip == 0
        if skip == limit and (every_pass or served["passes"] == 1):  # after the first page
            if change == "deleted":
                del names[0]
            else:
                names.insert(0, f"s.t.c.new{served['passes']}")
        return [{**column(0), "fullyQualifiedName": name} for name in names[skip : skip + limit]], len(names)

    return _one_cluster(pages, size=200), served


@pytest.mark.parametrize(("change", "processes"), [("deleted", "0"), ("inserted", "0"), ("deleted", "1")])
def test_a_cluster_whose_columns_change_while_it_is_listed_is_listed_again(
    loopback, tmp_path, change, processes
):
    """A hostile-server probe: a column deleted (or inserted) at the front of a cluster after its
    first page shifts every later one, so ``skip`` steps over a column that still exists (or serves
    one twice and never reaches the new one); the run was ``complete`` with a column missing. The
    totalCount moving between pages (200, then 199 or 201) tells: the cluster is listed again from
    its first page, and the run holds exactly the columns of the catalog as it then stands."""
    import sqlite3

    from .test_bigid_leaks import run_auditor

    names = [f"s.t.c.col{i}" for i in range(200)]
    handler, served = _changing_cluster(names, change, every_pass=False)
    loopback.reset(handler)
    env = {"BIGID_URL": loopback.url, "BIGID_TOKEN": "SAMPLE"}
    said, run = snapshot_run(
        tmp_path,
        env,
        "snapshot",
        "--db",
        "a.db",
        "--page-size",
        "100",
        "--workers",
        "1",
        "--processes",
        processes,
    )
    assert served["passes"] == 2
    relisted = (
        "1 cluster changed while listed (the totalCount moved between pages) and was listed again from "
        "the first page"
    )
    assert f"note: {relisted}" in said
    details = run["details"]
    then = 199 if change == "deleted" else 201
    assert details["relisted"] == [{"cluster_id": "c", "total_first": 200, "total_then": then}]
    assert (details["relisted_count"], details["changed_while_listed_count"]) == (1, 0)
    assert details["changed_while_listed"] == [] and details["total_mismatches"] == []
    from auditor.render.context import fetch_notes

    assert relisted in fetch_notes(details)  # the report's evidence says it as the snapshot does
    # the first listing's pages 1 and 2 (cut short there), then the whole cluster: two pages, and
    # two more to its end (201: a page of 1 and an empty one; 199: an empty page, below the cluster's
    # size of 200, asked for twice)
    assert details["pages"] == 2 + 4
    with sqlite3.connect(tmp_path / "a.db") as db:
        assert db.execute("SELECT fetch_status, columns_fetched FROM run_clusters").fetchall() == [
            ("complete", then)
        ]
        stored = [fqn for (fqn,) in db.execute("SELECT fqn FROM run_columns ORDER BY fqn")]
    assert stored == sorted(names) and len(stored) == then
    check = run_auditor("check", "--db", "a.db", "--format", "json", env=env, cwd=tmp_path)
    assert json.loads(check.stdout)["shortfall_note"] is None


@pytest.mark.parametrize("change", ["deleted", "inserted"])
def test_a_cluster_that_changes_again_when_listed_again_is_recorded_short(loopback, tmp_path, change):
    """The same, with the catalog changing during the second listing too: the columns of that
    listing are kept, the cluster is recorded short, and the snapshot and check say why."""
    import sqlite3

    from .test_bigid_leaks import run_auditor

    names = [f"s.t.c.col{i}" for i in range(200)]
    handler, served = _changing_cluster(names, change, every_pass=True)
    loopback.reset(handler)
    env = {"BIGID_URL": loopback.url, "BIGID_TOKEN": "SAMPLE"}
    said, run = snapshot_run(
        tmp_path, env, "snapshot", "--db", "a.db", "--page-size", "100", "--workers", "1"
    )
    assert served["passes"] == 2  # listed again once, not for ever
    assert (
        "note: 1 cluster changed while listed (the totalCount moved between pages), and again when listed "
        "once more: recorded short (columns added or removed meanwhile may be missing or stale, and a diff "
        "does not compare it); snapshot again for a consistent copy"
    ) in said
    details = run["details"]
    totals = (200, 199, 198) if change == "deleted" else (200, 201, 202)  # each change moves it by 1
    assert details["relisted"] == [{"cluster_id": "c", "total_first": 200, "total_then": totals[1]}]
    assert details["changed_while_listed"] == [
        {
            "cluster_id": "c",
            "total_first": totals[1],
            "total_last": totals[2],
            "fetched": 198 if change == "deleted" else 201,
        }
    ]
    assert (details["changed_while_listed_count"], details["total_shortfall_count"]) == (1, 0)
    with sqlite3.connect(tmp_path / "a.db") as db:
        assert db.execute("SELECT fetch_status FROM run_clusters").fetchall() == [("short",)]
        (stored,) = db.execute("SELECT count(*) FROM run_columns").fetchone()
    assert stored == (198 if change == "deleted" else 201)  # the second listing's, nothing twice
    check = run_auditor("check", "--db", "a.db", "--format", "json", env=env, cwd=tmp_path)
    assert json.loads(check.stdout)["shortfall_note"] == (
        "in run 1, 1 cluster changed while it was listed (the totalCount moved between pages): columns "
        "added or removed meanwhile may be missing or stale, and auditor diff leaves that cluster out; "
        "snapshot again for a consistent copy (auditor runs --format json lists them under "
        "changed_while_listed)"
    )


def _shifting_cluster_list(
    ids: list[str],
    listings: Counter,
    *,
    drop: str | None,
    add: str | None,
    total: int | None = None,
    later: list[str] = (),
):
    """A bare array of clusters capped at ``limit`` (the tutorial's shape; ``{results, totalCount}``
    with ``total``): after its first page was served, ``drop`` leaves the list and ``add`` joins it
    at the front; the second listing puts ``later`` ids at its front. Columns: one per cluster."""
    from auditor.bigid.client import CLUSTERS_PATH

    def handler(request: Request) -> Reply:
        if request.path == CLUSTERS_PATH:
            skip, limit = int(request.query["skip"]), int(request.query["limit"])
            listings["pages"] += 1
            listings["listings"] += skip == 0
            served = [*later, *ids] if listings["listings"] > 1 else ids
            page = [{"id": cid, "name": cid[:20]} for cid in served[skip : skip + limit]]
            if skip == 0 and listings["listings"] == 1:  # the catalog changes once this page is out
                if drop:
                    ids.remove(drop)
                if add:
                    ids.insert(0, add)
            return Reply(200, page if total is None else {"results": page, "totalCount": total})
        cluster = request.query["clusterId"]
        rows = [{**column(0), "fullyQualifiedName": f"s.t.{cluster}.c"}][int(request.query["skip"]) :]
        return Reply(200, {"results": rows, "totalCount": 1})

    return handler


@pytest.mark.parametrize(
    ("drop", "add", "found", "gone"),
    # (a cluster added at the front alone serves k09 twice: the listing is then asked for in one
    # page, which holds it: the duplicate defence, tested above)
    [("k03", None, ["k10"], ["k03"]), ("k03", "k99", ["k99"], ["k03"])],
)
def test_a_cluster_hidden_by_a_change_to_the_cluster_list_while_it_is_paged_is_fetched(
    loopback, tmp_path, drop, add, found, gone
):
    """A hostile-server probe: a cluster deleted from the list's first page after that page was
    served made skip=10 step over another one (the 11th), never listed; the run was complete without
    it, and the next diff would have called it removed. One created at the front as another left
    was never listed either. The list is listed once more at the end: the clusters it holds that the first
    listing did not are fetched too."""
    import sqlite3

    ids = [f"k{i:02d}" for i in range(25)]
    listings = Counter()
    loopback.reset(_shifting_cluster_list(ids, listings, drop=drop, add=add))
    env = {"BIGID_URL": loopback.url, "BIGID_TOKEN": "SAMPLE"}
    said, run = snapshot_run(tmp_path, env, "snapshot", "--db", "a.db", "--page-size", "10")
    assert listings["listings"] == 2
    assert run["status"] == "complete"
    assert run["details"]["cluster_relisting"] == {
        "found_count": len(found),
        "found": found,
        "gone_count": len(gone),
        "gone": gone,  # served before it left: kept, as it was then
    }
    from auditor.render.context import fetch_notes

    note = (
        "the cluster list changed while it was paged: listed a second time, it held 1 cluster the first "
        "listing did not, fetched too"
    )
    assert f"note: {note}" in said and note in fetch_notes(run["details"])
    expected = sorted({f"k{i:02d}" for i in range(25)} | set(found))
    assert (run["clusters_announced"], run["clusters_stored"], run["columns_stored"]) == (
        len(expected),
        len(expected),
        len(expected),
    )
    with sqlite3.connect(tmp_path / "a.db") as db:
        rows = db.execute("SELECT cluster_id, position, fetch_status FROM run_clusters ORDER BY position")
        stored = rows.fetchall()
    assert sorted(cid for cid, _, _ in stored) == expected
    assert [cid for cid, _, _ in stored[-len(found) :]] == found  # after the first listing's
    assert [position for _, position, _ in stored] == list(range(len(expected)))
    assert {status for _, _, status in stored} == {"complete"}


def test_a_cluster_list_served_in_one_answer_is_not_listed_again(loopback, tmp_path):

    listings = Counter()
    ids = [f"k{i}" for i in range(5)]
    loopback.reset(_shifting_cluster_list(ids, listings, drop=None, add=None, total=5))
    env = {"BIGID_URL": loopback.url, "BIGID_TOKEN": "SAMPLE"}
    _said, run = snapshot_run(tmp_path, env, "snapshot", "--db", "a.db", "--page-size", "10")
    # a page of 5 and the empty page that confirms it: one page of records, not full
    assert (listings["listings"], listings["pages"]) == (1, 2)
    assert "cluster_relisting" not in run["details"]


def test_a_cluster_list_that_cannot_be_listed_again_keeps_the_first_listing(loopback, tmp_path):
    from auditor.bigid.client import CLUSTERS_PATH

    listings = Counter()
    serve = _shifting_cluster_list([f"k{i:02d}" for i in range(15)], listings, drop=None, add=None)

    def handler(request: Request) -> Reply:
        if request.path == CLUSTERS_PATH and listings["listings"] >= 1 and request.query["skip"] == "0":
            return Reply(400, {"message": "listing disabled"})  # the second listing: refused
        return serve(request)

    loopback.reset(handler)
    env = {"BIGID_URL": loopback.url, "BIGID_TOKEN": "SAMPLE"}
    said, run = snapshot_run(tmp_path, env, "snapshot", "--db", "a.db", "--page-size", "10")
    said = [line for line in said if "listed a second time" in line]
    assert said == [
        "note: the cluster list could not be listed a second time, to find clusters a change while it "
        "was paged would have hidden: the API rejected the request (HTTP 400 from GET /api/v1/clusters): "
        "listing disabled"
    ]
    assert (run["status"], run["clusters_stored"]) == ("complete", 15)
    assert set(run["details"]["cluster_relisting"]) == {"error"}


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.filter_too_much])
@given(
    records=st.lists(st.tuples(st.integers(0, 8), st.integers(0, 2)), max_size=30),
    cap=st.integers(1, 6),
    with_total=st.booleans(),
)
def test_records_sharing_a_key_on_one_page_count_as_received_and_repeats_do_not(records, cap, with_total):
    """Records (key, content) served ``cap`` a page: a key first seen on an earlier page is a repeat
    whatever it holds (``duplicates``); on its own page, the same content again is a repeat and
    other content another record (``conflicts``). The first of each key is yielded, and the listing,
    whose total counts the records served, never ends short of it."""
    seen: set[int] = set()
    expected_got: list[tuple[int, int]] = []
    repeats = others = 0
    other_keys: list[int] = []
    for start in range(0, len(records), cap):
        firsts: dict[int, int] = {}
        extra: set[tuple[int, int]] = set()
        for key, content in records[start : start + cap]:
            if key not in seen:
                seen.add(key)
                firsts[key] = content
                expected_got.append((key, content))
            elif key in firsts and content != firsts[key] and (key, content) not in extra:
                extra.add((key, content))
                others += 1
                other_keys.append(key)
            else:
                repeats += 1
    total = len(expected_got) + others

    def fetch(skip: int, limit: int) -> RawPage[tuple[int, int]]:
        return RawPage(records[skip : skip + min(cap, limit)], total=total if with_total else None)

    stats = PagingStats()
    listing = paginate(fetch, limit=cap, key=lambda r: r[0], content=lambda r: r[1], stats=stats)
    try:
        got = [row for page in listing for row in page]
    except NoProgress:  # pages that add nothing new, over and over: paging's echo rules, tested above
        assume(False)
    assume(not stats.stopped_on_repeat)
    assert got == expected_got
    assert (stats.fetched, stats.conflicts, stats.duplicates) == (len(expected_got), others, repeats)
    assert stats.received == total
    assert not stats.ended_short and not stats.total_mismatch
    assert stats.conflict_keys == other_keys[:20]


def test_a_record_served_again_on_a_later_page_with_new_content_is_a_repeat():
    """A review: paging's overlap served 'b' twice, updated in between, in place of 'c', which never
    came; counted as another record of 'b', it made the listing look complete. A key first seen on an
    earlier page is a repeat whatever it holds: the listing ends short."""
    served = {0: [("a", 1), ("b", 1)], 2: [("b", 2)], 3: []}

    def fetch(skip: int, limit: int) -> RawPage[tuple[str, int]]:
        return RawPage(served.get(skip, []), total=3)

    stats = PagingStats()
    pages = paginate(fetch, limit=2, key=lambda r: r[0], content=lambda r: r[1], stats=stats)
    assert [r for page in pages for r in page] == [("a", 1), ("b", 1)]
    assert (stats.fetched, stats.duplicates, stats.conflicts, stats.ended_short) == (2, 1, 0, True)


def test_a_repeat_that_displaced_a_record_still_ends_short():
    """An order that shifts between pages serves one record twice (the same content) and never
    another: the listing is short of its total, whatever ``content`` says."""
    served = [(1, "a"), (2, "b"), (2, "b")]  # record 3 never served

    def fetch(skip: int, limit: int) -> RawPage[tuple[int, str]]:
        return RawPage(served[skip : skip + limit], total=3)

    stats = PagingStats()
    got = [
        r
        for page in paginate(fetch, limit=2, key=lambda r: r[0], content=lambda r: r[1], stats=stats)
        for r in page
    ]
    assert got == [(1, "a"), (2, "b")]
    assert (stats.duplicates, stats.conflicts, stats.ended_short) == (1, 0, True)


@pytest.mark.parametrize("processes", ["0", "1"])
def test_two_records_of_one_fqn_are_no_shortfall_and_are_named(loopback, tmp_path, processes):
    """A hostile-server probe: two different records sharing a fullyQualifiedName in one cluster
    (totalCount counting both). The second was taken for a repeat, the listing for one that ended
    short of its total: the cluster was recorded short, check said columns were not served, and a
    diff left it out. It now holds the first record, complete, and says which fqn was shared."""
    import sqlite3

    from .test_bigid_leaks import run_auditor

    rows = [  # pages of 3
        {**column(0), "dataType": "varchar"},
        {**column(0), "dataType": "int"},  # another record under col0's fqn, on the same page
        column(1),
        column(2),
        column(1),  # a repeat of col1 on a later page: no record of its own
    ]

    loopback.reset(_one_cluster(rows, size=4, total=4))
    env = {"BIGID_URL": loopback.url, "BIGID_TOKEN": "SAMPLE"}
    said, run = snapshot_run(
        tmp_path, env, "snapshot", "--db", "a.db", "--page-size", "3", "--processes", processes
    )
    assert not any("differs from the columns fetched" in line for line in said)  # 4 records were served
    conflicts = (
        "1 column record shared a fullyQualifiedName with another record of its cluster and differed from "
        "it: only the first of each was stored and checked (auditor runs --format json lists them under "
        "fqn_conflicts)"
    )
    assert f"note: {conflicts}" in said
    details = run["details"]
    assert details["fqn_conflicts"] == [{"cluster_id": "c", "fqn": "src.schema.table.col0"}]
    assert (details["fqn_conflict_count"], details["duplicate_rows"], details["total_shortfall_count"]) == (
        1,
        1,
        0,
    )
    with sqlite3.connect(tmp_path / "a.db") as db:
        assert db.execute("SELECT fetch_status, columns_fetched FROM run_clusters").fetchall() == [
            ("complete", 3)
        ]
        assert db.execute(
            "SELECT v.data_type FROM run_columns m JOIN column_versions v ON v.id = m.column_id "
            "WHERE m.fqn = 'src.schema.table.col0'"
        ).fetchall() == [("varchar",)]
    from auditor.render.context import fetch_notes

    assert conflicts in fetch_notes(details)
    check = run_auditor("check", "--db", "a.db", "--format", "json", env=env, cwd=tmp_path)
    assert json.loads(check.stdout)["shortfall_note"] == f"in run 1, {conflicts}"


def test_a_cluster_list_left_with_one_full_page_is_listed_again(loopback, tmp_path):
    """Found by a probe of the above: 11 clusters in pages of 10, the 4th deleted once the first page
    was out: the second page came back empty, so the listing had records on one page only, and the
    11th cluster was never listed (the first version listed again only after two pages of records).
    A full first page is listed again too."""

    listings = Counter()
    ids = [f"k{i:02d}" for i in range(11)]
    loopback.reset(_shifting_cluster_list(ids, listings, drop="k03", add=None))
    env = {"BIGID_URL": loopback.url, "BIGID_TOKEN": "SAMPLE"}
    _said, run = snapshot_run(tmp_path, env, "snapshot", "--db", "a.db", "--page-size", "10")
    assert run["details"]["cluster_relisting"]["found"] == ["k10"]
    assert (run["clusters_announced"], run["clusters_stored"]) == (11, 11)


def test_clusters_found_by_the_second_listing_end_the_total_s_shortfall(loopback, tmp_path):
    """With a totalCount of 15 throughout and a cluster stepped over, the first listing held 14: the
    run said 'announced 15 clusters but 14 arrived', and, once the second listing had found the
    15th, announced 16 (a probe). Found, it is no shortfall, and 15 were announced."""
    from .test_bigid_leaks import run_auditor

    listings = Counter()
    ids = [f"k{i:02d}" for i in range(15)]
    loopback.reset(_shifting_cluster_list(ids, listings, drop="k03", add=None, total=15))
    env = {"BIGID_URL": loopback.url, "BIGID_TOKEN": "SAMPLE"}
    said, run = snapshot_run(tmp_path, env, "snapshot", "--db", "a.db", "--page-size", "10")
    assert not any("arrived" in line for line in said)
    assert run["details"]["cluster_relisting"]["found"] == ["k10"]
    assert "cluster_total_mismatch" not in run["details"]
    assert (run["clusters_announced"], run["clusters_stored"]) == (15, 15)
    check = run_auditor("check", "--db", "a.db", "--format", "json", env=env, cwd=tmp_path)
    assert json.loads(check.stdout)["shortfall_note"] is None


def test_a_second_listing_s_new_ids_too_long_or_to_leave_out_are_left_out(loopback, tmp_path):
    """A probe: an id too long to store, new in the second listing, failed a run whose clusters were
    all stored (exit 3); and an id to leave out that only the second listing held was called 'not
    listed'. The first is left out and counted, the second recorded as listed and left out."""
    import sqlite3

    listings = Counter()
    ids = [f"k{i:02d}" for i in range(15)]
    later = ["L" * 5000, "skipme", "newok"]
    loopback.reset(_shifting_cluster_list(ids, listings, drop=None, add=None, later=later))
    env = {"BIGID_URL": loopback.url, "BIGID_TOKEN": "SAMPLE"}
    said, run = snapshot_run(
        tmp_path, env, "snapshot", "--db", "a.db", "--page-size", "10", "--skip-cluster", "skipme"
    )
    assert (
        "note: listed a second time, the cluster list held 1 new cluster id too long to store: left out"
    ) in said
    assert run["status"] == "complete"
    assert run["details"]["cluster_relisting"] == {
        "found_count": 1,
        "found": ["newok"],
        "gone_count": 0,
        "gone": [],
        "ids_too_long": 1,
    }
    assert (run["details"]["skipped_clusters"], run["details"]["skipped_cluster_count"]) == (["skipme"], 1)
    assert "skip_clusters_not_listed" not in run["details"]
    with sqlite3.connect(tmp_path / "a.db") as db:
        stored = {cid for (cid,) in db.execute("SELECT cluster_id FROM run_clusters")}
    assert stored == {*ids, "newok"}


def test_an_id_to_leave_out_found_by_the_second_listing_makes_up_the_total(loopback, tmp_path):
    """A review: the only cluster the first listing stepped over was one to leave out (it only came
    in the second listing); the run said 'announced 16 clusters but 15 arrived' and counted 16."""
    from .test_bigid_leaks import run_auditor

    listings = Counter()
    ids = [f"k{i:02d}" for i in range(10)] + ["skipme"] + [f"k{i:02d}" for i in range(10, 15)]
    loopback.reset(_shifting_cluster_list(ids, listings, drop="k03", add=None, total=16))
    env = {"BIGID_URL": loopback.url, "BIGID_TOKEN": "SAMPLE"}
    _said, run = snapshot_run(
        tmp_path, env, "snapshot", "--db", "a.db", "--page-size", "10", "--skip-cluster", "skipme"
    )
    assert run["details"]["cluster_relisting"]["found"] == []
    assert (run["details"]["skipped_clusters"], "cluster_total_mismatch" in run["details"]) == (
        ["skipme"],
        False,
    )
    assert (run["clusters_announced"], run["clusters_stored"]) == (15, 15)
    check = run_auditor("check", "--db", "a.db", "--format", "json", env=env, cwd=tmp_path)
    assert json.loads(check.stdout)["shortfall_note"] is None


def test_an_understated_cluster_total_stays_recorded_when_the_second_listing_finds_more(loopback, tmp_path):
    """A review: a total below the clusters listed (wrong) was erased, and replaced by the count,
    as soon as the second listing found a cluster. It stays, counting those found among those that
    arrived."""

    listings = Counter()
    ids = [f"k{i:02d}" for i in range(15)]
    loopback.reset(_shifting_cluster_list(ids, listings, drop="k03", add=None, total=12))
    env = {"BIGID_URL": loopback.url, "BIGID_TOKEN": "SAMPLE"}
    _said, run = snapshot_run(tmp_path, env, "snapshot", "--db", "a.db", "--page-size", "10")
    assert run["details"]["cluster_relisting"]["found"] == ["k10"]
    # (a probe: the clusters found were not counted in what arrived)
    assert run["details"]["cluster_total_mismatch"] == {"announced": 12, "fetched": 15}
    assert (run["clusters_announced"], run["clusters_stored"]) == (12, 15)


def test_a_time_limit_passing_during_the_second_listing_leaves_the_run_complete(
    loopback, make_client, tmp_path
):
    """A review: every cluster of the first listing was stored, and the optional second listing,
    cut by the snapshot's time limit, failed the run. It is recorded as a second listing that could
    not be made."""
    from auditor.bigid.client import CLUSTERS_PATH
    from auditor.snapshot import take_snapshot
    from auditor.store.db import open_database

    listings = Counter()
    serve = _shifting_cluster_list([f"k{i:02d}" for i in range(12)], listings, drop=None, add=None)

    def handler(request: Request) -> Reply:
        if request.path == CLUSTERS_PATH and listings["listings"] >= 1 and request.query["skip"] == "0":
            return Reply(200, [], delay=3.0)  # the second listing: slower than the time left
        return serve(request)

    loopback.reset(handler)
    client = make_client(loopback.url, page_size=10)
    run = take_snapshot(open_database(tmp_path / "s.db"), client, workers=2, processes=0, max_seconds=1.5)
    assert (run.status, run.clusters_stored, run.columns_stored) == ("complete", 12, 12)
    assert run.details["cluster_relisting"] == {
        "error": "the snapshot's time limit (--max-minutes) passed while the clusters were listed"
    }
    assert not client._closing.is_set()  # resumed: the client goes on working for its caller


@pytest.mark.parametrize("processes", ["0", "1"])
def test_a_total_that_moves_on_the_last_empty_page_lists_the_cluster_again(loopback, tmp_path, processes):
    """A probe: a column deleted once the last page was asked for shifted the last one into a page
    already served; the empty page's totalCount (6, after 7) went unread, and the cluster was
    complete without a column that still existed. It is listed again."""
    names = [f"s.t.c.col{i}" for i in range(7)]
    served = Counter()

    def pages(skip: int, limit: int) -> tuple[list[dict], int]:
        served["passes"] += skip == 0
        if skip >= 6 and "s.t.c.col1" in names:
            names.remove("s.t.c.col1")
        return [{**column(0), "fullyQualifiedName": name} for name in names[skip : skip + limit]], len(names)

    loopback.reset(_one_cluster(pages, size=7))
    env = {"BIGID_URL": loopback.url, "BIGID_TOKEN": "SAMPLE"}
    args = ("snapshot", "--db", "a.db", "--page-size", "2", "--workers", "1", "--processes", processes)
    _said, run = snapshot_run(tmp_path, env, *args)
    assert served["passes"] == 2
    assert run["details"]["relisted"] == [{"cluster_id": "c", "total_first": 7, "total_then": 6}]
    import sqlite3

    with sqlite3.connect(tmp_path / "a.db") as db:
        stored = sorted(fqn for (fqn,) in db.execute("SELECT fqn FROM run_columns"))
        assert db.execute("SELECT fetch_status FROM run_clusters").fetchall() == [("complete",)]
    assert stored == sorted(names) and len(stored) == 6


def test_records_sharing_names_counted_by_the_size_are_no_size_mismatch(loopback, tmp_path):
    """A probe: a cluster of 6 names, each served with another record of its name on the same page
    (12 records, totalCount 12, size 6), was noted as 'size differs from the columns fetched' with an
    entry saying size 6, fetched 6. A size or total that counts either the names or the records
    agrees."""

    rows = [record for i in range(6) for record in (column(i), {**column(i), "dataType": "other"})]

    loopback.reset(_one_cluster(rows, size=6, total=12))
    env = {"BIGID_URL": loopback.url, "BIGID_TOKEN": "SAMPLE"}
    said, run = snapshot_run(tmp_path, env, "snapshot", "--db", "a.db", "--page-size", "4")
    assert not any("differs from the columns fetched" in line for line in said)
    details = run["details"]
    assert (details["size_mismatches"], details["total_mismatches"], details["fqn_conflict_count"]) == (
        [],
        [],
        6,
    )
    assert run["columns_stored"] == 6


def test_an_id_to_leave_out_that_only_the_second_listing_held_is_not_said_to_be_missing(
    loopback, make_client, tmp_path, caplog
):
    """A probe: the snapshot warned that the tenant did not list an id to leave out, then said it
    had left that cluster out (the second listing held it). The warning waits for the last listing."""
    import logging

    from auditor.snapshot import take_snapshot
    from auditor.store.db import open_database

    listings = Counter()
    ids = [f"k{i:02d}" for i in range(12)]
    loopback.reset(_shifting_cluster_list(ids, listings, drop=None, add=None, later=["k98", "k99"]))
    client = make_client(loopback.url, page_size=10)
    with caplog.at_level(logging.WARNING, logger="auditor.snapshot"):
        run = take_snapshot(
            open_database(tmp_path / "s.db"), client, workers=2, processes=0, skip_clusters=["k98", "k97"]
        )
    assert run.status == "complete"
    assert (run.details["skipped_clusters"], run.details["skip_clusters_not_listed"]) == (["k98"], ["k97"])
    assert [r.getMessage() for r in caplog.records if "to skip" in r.getMessage()] == [
        "the tenant did not list these clusters to skip: 'k97'"
    ]


def test_a_null_item_counts_as_served_for_paging_but_is_no_record():
    """A page of ``limit`` items one of which is ``null`` (dropped by the client) is a full page, so
    the next is asked for; a total that counts the null is met (no shortfall)."""
    served = {0: ([1, 2], 1), 3: ([3, 4], 0), 5: ([], 0)}  # skip: (records, nulls); 5 items in all
    asked: list[int] = []

    def fetch(skip: int, limit: int) -> RawPage[int]:
        asked.append(skip)
        records, nulls = served[skip]
        return RawPage(records, total=5, nulls=nulls)

    stats = PagingStats()
    pages = paginate(fetch, limit=3, key=lambda r: r, stats=stats)
    assert [r for page in pages for r in page] == [1, 2, 3, 4]
    assert asked[:2] == [0, 3]
    assert (stats.fetched, stats.nulls, stats.received, stats.rows_received) == (4, 1, 5, 5)
    assert not stats.ended_short and not stats.total_mismatch


@pytest.mark.parametrize("processes", ["0", "1"])
def test_null_items_in_the_cluster_list_and_in_a_columns_page_are_dropped(loopback, tmp_path, processes):
    """A hostile-server probe: ``[k1, null, k2]`` as the cluster list stopped the snapshot (exit 3,
    'cluster 1: (record): Input should be a valid dictionary'), and a ``null`` among a cluster's
    columns failed that cluster. docs/fetch.md says null items in lists are dropped: they are, and
    counted, as served (a total or size counting them is no shortfall), and the run says so."""
    import sqlite3

    from auditor.bigid.client import CLUSTERS_PATH
    from auditor.render.context import fetch_notes

    columns = [column(0), None, column(1), column(2)]

    def handler(request: Request) -> Reply:
        skip, limit = int(request.query["skip"]), int(request.query["limit"])
        if request.path == CLUSTERS_PATH:
            listed = [{"id": "k1", "size": 4}, None, {"id": "k2", "size": 1}]
            return Reply(200, {"results": listed[skip : skip + limit], "totalCount": 3})
        rows = columns if request.query["clusterId"] == "k1" else [column(9)]
        return Reply(200, {"results": rows[skip : skip + limit], "totalCount": len(rows)})

    loopback.reset(handler)
    env = {"BIGID_URL": loopback.url, "BIGID_TOKEN": "SAMPLE"}
    said, run = snapshot_run(
        tmp_path, env, "snapshot", "--db", "a.db", "--page-size", "2", "--processes", processes
    )
    notes = [
        "the cluster list held 1 null item in place of records: dropped, nothing stored or checked for it "
        "(auditor runs --format json counts them under null_clusters)",
        "the column pages held 1 null item in place of records: dropped, nothing stored or checked for it "
        "(auditor runs --format json counts them under null_rows)",
    ]
    assert [line for line in said if line.startswith("note: ")] == [f"note: {note}" for note in notes]
    assert run["status"] == "complete" and (run["clusters_announced"], run["clusters_stored"]) == (2, 2)
    details = run["details"]
    assert (details["null_clusters"], details["null_rows"]) == (1, 1)
    assert (details["size_mismatch_count"], details["total_mismatch_count"]) == (0, 0)
    assert details["total_shortfall_count"] == 0 and "cluster_total_mismatch" not in details
    assert details["failed_clusters"] == []
    with sqlite3.connect(tmp_path / "a.db") as db:
        assert db.execute(
            "SELECT cluster_id, fetch_status, columns_fetched FROM run_clusters ORDER BY cluster_id"
        ).fetchall() == [("k1", "complete", 3), ("k2", "complete", 1)]
    assert all(note in fetch_notes(details) for note in notes)


@pytest.mark.parametrize(
    "second",
    [
        {"id": "k1", "name": "One v2", "labels": []},  # the probe's: the same id, other labels
        {"id": 1, "name": "One", "labels": ["Confidential"]},  # 1 and "1" are one cluster id
    ],
)
def test_two_different_records_of_one_cluster_id_are_a_conflict_said_everywhere(loopback, tmp_path, second):
    """A hostile-server probe: the cluster list held k1 labelled Confidential, k2, then k1 again with
    no labels. The first was stored, the run was complete and nothing was said (only
    cluster_duplicates: 1), though labels decide rule outcomes. Two different records of one id on
    a page are now a conflict, as two records of one fqn are: the first is stored and checked, and
    the snapshot, the report and check say so."""
    import sqlite3

    from auditor.bigid.client import CLUSTERS_PATH
    from auditor.render.context import fetch_notes

    from .test_bigid_leaks import run_auditor

    first = {"id": "k1" if second["id"] == "k1" else "1", "name": "One", "labels": ["Confidential"]}
    ident = first["id"]

    def handler(request: Request) -> Reply:
        skip, limit = int(request.query["skip"]), int(request.query["limit"])
        if request.path == CLUSTERS_PATH:
            return Reply(200, [first, {"id": "k2"}, second][skip : skip + limit])
        own = {**column(0), "fullyQualifiedName": f"{request.query['clusterId']}.c0"}  # each its own
        return Reply(200, {"results": [own][skip:], "totalCount": 1})

    loopback.reset(handler)
    env = {"BIGID_URL": loopback.url, "BIGID_TOKEN": "SAMPLE"}
    said, run = snapshot_run(tmp_path, env, "snapshot", "--db", "a.db")
    conflict = (
        "1 cluster record shared its id with another record of the cluster list and differed from it: "
        "only the first of each was stored and checked (auditor runs --format json lists them under "
        "cluster_conflicts)"
    )
    assert [line for line in said if line.startswith("note: ")] == [f"note: {conflict}"]
    details = run["details"]
    assert (details["cluster_conflicts"], details["cluster_conflict_count"]) == ([ident], 1)
    assert details["cluster_duplicates"] == 0 and "cluster_total_mismatch" not in details
    assert run["status"] == "complete" and (run["clusters_announced"], run["clusters_stored"]) == (2, 2)
    with sqlite3.connect(tmp_path / "a.db") as db:
        assert db.execute(
            "SELECT v.name, l.label FROM run_clusters r JOIN cluster_versions v ON v.hash = r.cluster_hash "
            "LEFT JOIN cluster_labels l ON l.cluster_hash = v.hash WHERE r.cluster_id = ?",
            (ident,),
        ).fetchall() == [("One", "Confidential")]
    assert conflict in fetch_notes(details)
    check = run_auditor("check", "--db", "a.db", "--format", "json", env=env, cwd=tmp_path)
    assert check.returncode == 0, check.stderr.decode()
    assert json.loads(check.stdout)["shortfall_note"] == f"in run 1, {conflict}"


def test_an_identical_cluster_record_listed_twice_stays_a_silent_duplicate(loopback, tmp_path):
    """The same record of an id twice is a repeat: counted in cluster_duplicates, no conflict."""
    from auditor.bigid.client import CLUSTERS_PATH

    def handler(request: Request) -> Reply:
        skip, limit = int(request.query["skip"]), int(request.query["limit"])
        if request.path == CLUSTERS_PATH:
            listed = [{"id": "k1", "labels": ["Confidential"]}, {"id": "k2"}]
            return Reply(200, [*listed, listed[0]][skip : skip + limit])
        own = {**column(0), "fullyQualifiedName": f"{request.query['clusterId']}.c0"}  # each its own
        return Reply(200, {"results": [own][skip:], "totalCount": 1})

    loopback.reset(handler)
    said, run = snapshot_run(
        tmp_path, {"BIGID_URL": loopback.url, "BIGID_TOKEN": "SAMPLE"}, "snapshot", "--db", "a.db"
    )
    assert not any(line.startswith("note: ") for line in said)
    details = run["details"]
    assert (
        details["cluster_duplicates"],
        details["cluster_conflict_count"],
        details["cluster_conflicts"],
    ) == (
        1,
        0,
        [],
    )


def test_a_tenant_listing_no_clusters_is_said_by_the_snapshot_the_report_and_check(loopback, tmp_path):
    """A hostile-server probe: a tenant answering ``[]`` (as one that reads an unknown header form
    as an anonymous user's may) gave a complete run of nothing, without a word, and check passed it."""
    from auditor.bigid.client import CLUSTERS_PATH
    from auditor.store.runs import NO_CLUSTERS_NOTE

    from .test_bigid_leaks import run_auditor

    def handler(request: Request) -> Reply:
        assert request.path == CLUSTERS_PATH
        return Reply(200, [])

    loopback.reset(handler)
    env = {"BIGID_URL": loopback.url, "BIGID_TOKEN": "SAMPLE"}
    said, run = snapshot_run(tmp_path, env, "snapshot", "--db", "a.db")
    assert said[0].startswith("run 1 complete: 0 clusters, 0 columns in ")
    assert said[0].endswith(" s (1 request, 0 retries, auth scheme bearer)")
    assert said[1:] == [f"note: {NO_CLUSTERS_NOTE}"]
    assert run["details"]["listed_no_clusters"] is True
    check = run_auditor(
        "check", "--db", "a.db", "--fail-on", "high", "--format", "json", env=env, cwd=tmp_path
    )
    assert check.returncode == 0
    assert json.loads(check.stdout)["shortfall_note"] == f"in run 1, {NO_CLUSTERS_NOTE}"
    report = run_auditor("report", "--db", "a.db", "-o", "r.html", env=env, cwd=tmp_path)
    assert report.returncode == 0, report.stderr.decode()
    assert "the tenant listed no clusters" in (tmp_path / "r.html").read_text(encoding="utf-8")


@pytest.mark.parametrize(("n", "page"), [(7, 3), (6, 3), (2, 3)])
def test_a_total_that_only_counts_its_own_page_is_no_total(loopback, make_client, tmp_path, n, page):
    """A hostile-server probe: a tenant whose totalCount is each page's own row count (as
    ``totalRowsCounter`` echoes it) had its last, empty page's 0 recorded as the total of 7 columns
    served, with a mismatch said. An echo on every page of several is no total; one page's count
    stays its total (it may be the whole cluster)."""
    from sqlalchemy import select

    from auditor.snapshot import take_snapshot
    from auditor.store.db import open_database
    from auditor.store.schema import run_clusters

    truth = [column(i) for i in range(n)]

    def handler(request: Request) -> Reply:
        if request.path != COLUMNS_PATH:
            return Reply(200, [{"id": "k1", "name": "K"}] if request.query.get("skip", "0") == "0" else [])
        skip, limit = int(request.query["skip"]), int(request.query["limit"])
        rows = truth[skip : skip + limit]
        return Reply(200, {"results": rows, "totalCount": len(rows)})

    loopback.reset(handler)
    client = make_client(loopback.url, page_size=page)
    fetched = client.fetch_all_columns("k1", size=None)
    assert [raw for rows in fetched for _, raw in rows] == truth
    several = n > page
    assert fetched.stats.announced_total == (None if several else n)
    assert not fetched.stats.total_mismatch and fetched.stats.total_changed is None
    engine = open_database(tmp_path / "a.db")
    run = take_snapshot(engine, make_client(loopback.url, page_size=page), workers=1, processes=0)
    assert run.status == "complete"
    with engine.connect() as connection:
        row = connection.execute(select(run_clusters.c.total_announced, run_clusters.c.fetch_status)).one()
    assert tuple(row) == (None if several else n, "complete")
    assert "total_mismatch_count" not in run.details or run.details["total_mismatch_count"] == 0
    engine.dispose()


def test_one_page_served_again_is_asked_for_once_more_before_skip_is_said_to_be_ignored(
    loopback, make_client
):
    """A hostile-server probe: a tenant (a lagging replica) served the first page again once, for
    skip=3; the next request went by ``offset``, which it reads as 0, and the cluster failed with
    "it ignores skip". The same skip is now asked for once more, and the listing goes on."""
    truth = [column(i) for i in range(7)]
    glitched = []

    def handler(request: Request) -> Reply:
        skip, limit = int(request.query.get("skip", 0)), int(request.query["limit"])
        if skip == 3 and not glitched:
            glitched.append(skip)
            skip = 0
        return Reply(200, {"results": truth[skip : skip + limit], "totalCount": 7})

    loopback.reset(handler)
    client = make_client(loopback.url, page_size=3)
    fetched = client.fetch_all_columns("k1", size=7)
    assert [raw for rows in fetched for _, raw in rows] == truth
    assert fetched.stats.duplicates == 0 and client.offset_param == "skip"
    assert [r.query.get("skip") for r in loopback.seen] == ["0", "3", "3", "6"]

    # every page served a first time as the one before it (a review): each is asked for once more
    truth = [column(i) for i in range(8)]
    asked: set[int] = set()

    def lagging(request: Request) -> Reply:
        skip, limit = int(request.query.get("skip", 0)), int(request.query["limit"])
        if skip and skip not in asked:
            asked.add(skip)
            skip -= limit
        return Reply(200, {"results": truth[skip : skip + limit], "totalCount": 8})

    loopback.reset(lagging)
    client = make_client(loopback.url, page_size=2)
    fetched = client.fetch_all_columns("k1", size=8)
    assert [raw for rows in fetched for _, raw in rows] == truth and client.offset_param == "skip"
    # (the total reached on a full page, one more confirms the end: served again there, it ends it)
    assert [r.query.get("skip") for r in loopback.seen] == ["0", "2", "2", "4", "4", "6", "6", "8"]


@pytest.mark.parametrize("total", [None, 18])
def test_pages_of_nulls_only_are_served_records_not_repeats(total):
    """A review: two pages holding only nulls looked alike (no keys), so the second was taken for
    the first served again: its nulls went uncounted (a false shortfall), and five of them ended a
    cluster list early (clusters past them never stored, the run complete)."""
    served = [1, 2, *[None] * 14, 4, 5]
    stats = PagingStats()

    def fetch(skip: int, limit: int) -> RawPage:
        page = served[skip : skip + limit]
        rows = [x for x in page if x is not None]
        return RawPage(rows, total=total, nulls=len(page) - len(rows))

    got = [
        x for page in paginate(fetch, limit=2, key=lambda x: x, stats=stats, on_repeat="stop") for x in page
    ]
    assert got == [1, 2, 4, 5]
    assert (
        stats.nulls == 14 and stats.received == 18 and not stats.ended_short and not stats.stopped_on_repeat
    )
    assert not stats.total_mismatch


@pytest.mark.parametrize("processes", [0, 1])
def test_a_record_that_does_not_fit_is_named_by_its_place_among_the_nulls_served(
    loopback, make_client, tmp_path, processes
):
    """A helper's remark on dropping nulls: errors named a record by its place in the page without
    its nulls ("cluster 1" for the fourth item served). They count as the server does."""
    from auditor.bigid.client import CLUSTERS_PATH
    from auditor.errors import PartialSnapshotError
    from auditor.snapshot import take_snapshot
    from auditor.store.db import open_database
    from auditor.store.runs import get_run

    bad_cluster = [None, {"id": "k1"}, None, {"name": "no id"}]
    bad_columns = [None, None, column(0), {"fullyQualifiedName": [5]}]

    def handler(request: Request) -> Reply:
        skip = int(request.query.get("skip", 0))
        if request.path == CLUSTERS_PATH:
            return Reply(200, listed[skip:])
        return Reply(200, {"results": bad_columns[skip:], "totalCount": 4})

    listed = bad_cluster
    loopback.reset(handler)
    with pytest.raises(PayloadError) as caught:
        make_client(loopback.url).list_clusters()
    assert caught.value.message == f"GET {CLUSTERS_PATH}: cluster 3: id: Field required"
    with pytest.raises(PayloadError) as caught:
        list(make_client(loopback.url).fetch_all_columns("k1", size=4))
    assert caught.value.message.startswith("cluster k1: column 3 ([5]): fullyQualifiedName: ")
    listed = [None, {"id": "k1", "size": 4}]
    engine = open_database(tmp_path / "a.db")
    with pytest.raises(PartialSnapshotError):  # (the decoding pool reports it the same way)
        take_snapshot(
            engine, make_client(loopback.url), workers=1, processes=processes, max_failed_clusters=1
        )
    assert (
        get_run(engine, 1)
        .details["failed_clusters"][0]["error"]
        .startswith("PayloadError: cluster k1: column 3 ([5]): fullyQualifiedName: ")
    )
    engine.dispose()
