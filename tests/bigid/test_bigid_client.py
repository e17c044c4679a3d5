"""The client against a programmable loopback server: the troubleshooting table's errors, retries
(429 with Retry-After, 5xx, resets, timeouts, gateway pages), envelopes, payload errors, logging."""

from __future__ import annotations

import logging
import re
import socket
import time
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest
from sqlalchemy import select

from auditor.bigid.client import CLUSTERS_PATH, COLUMNS_PATH, BigIDClient, ClientOptions, public_url
from auditor.errors import ApiError, AuthError, ConfigError, NetworkError, NotFoundError, PayloadError
from auditor.snapshot import take_snapshot
from auditor.store.db import open_database
from auditor.store.schema import column_versions

from .conftest import Loopback, Reply, Request
from .test_bigid_leaks import run_auditor

TUTORIAL_CLUSTERS = [
    {
        "id": "abc123def456",
        "name": "Sensitive HR Data",
        "size": 20,
        "labels": ["PII", "Confidential"],
        "severity": "High",
        "status": "Active",
        "createdAt": "2025-07-15T14:22:30.000Z",
    },
    {
        "id": "ghi789jkl012",
        "name": "Marketing Metrics",
        "size": 20,
        "labels": ["Analytics"],
        "severity": "Low",
        "status": "Archived",
        "createdAt": "2025-06-28T09:08:12.000Z",
    },
]


def cols(n: int, prefix: str = "s.t") -> list[dict]:
    return [{"fullyQualifiedName": f"{prefix}.c{i}", "columnName": f"c{i}"} for i in range(n)]


def sequence(*replies: Reply, then: Reply | None = None):
    """Answer with ``replies`` in turn, then ``then`` forever."""
    queue = list(replies)

    def handler(request: Request) -> Reply:
        if queue:
            return queue.pop(0)
        assert then is not None, f"unexpected request {request}"
        return then

    return handler


# -- the troubleshooting table -------------------------------------------------------------------


def test_400_names_the_malformed_cluster_id(loopback, make_client):
    loopback.reset(lambda r: Reply(400, {"error": "Cluster ID is invalid"}))
    client = make_client(loopback.url, auth_scheme="raw")
    with pytest.raises(ApiError) as caught:
        client.get_columns("not-an-id!")
    exc = caught.value
    assert type(exc) is ApiError and exc.status == 400 and exc.exit_code == 3
    assert exc.message == (
        f"the API says cluster id 'not-an-id!' is malformed (HTTP 400 from GET {COLUMNS_PATH}): "
        "Cluster ID is invalid"
    )
    assert exc.hint == "check the cluster id; list the valid ids with: auditor clusters"
    # one retry with the other parameter name (reference §9.21), then the first error
    assert [sorted(r.query) for r in loopback.seen] == [["clusterId"], ["cluster_id", "limit", "skip"]]


def test_a_400_to_a_request_with_options_names_the_options_too(loopback, make_client):
    # `auditor columns ID --sort nope` was reported as a malformed cluster id ("check the cluster id").
    loopback.reset(lambda r: Reply(400, {"error": "sort field 'nope' is not supported"}))
    client = make_client(loopback.url, auth_scheme="raw")
    with pytest.raises(ApiError) as caught:
        client.get_columns("643a490f575122cd5b000000", sort="nope", filter="x=1", limit=5)
    exc = caught.value
    assert exc.status == 400 and exc.exit_code == 3
    assert exc.message == (
        "the API rejected the request for cluster '643a490f575122cd5b000000' with --filter 'x=1', "
        f"--sort 'nope' (HTTP 400 from GET {COLUMNS_PATH}): sort field 'nope' is not supported"
    )
    assert exc.hint == "check --filter, --sort and the cluster id (list the ids with: auditor clusters)"


def test_cluster_id_parameter_falls_back_once_and_sticks(loopback, make_client):
    def handler(request: Request) -> Reply:
        if "cluster_id" in request.query:
            known = request.query["cluster_id"] in ("k1", "k2")
            return Reply(
                200, {"results": cols(2), "totalCount": 2} if known else {"results": [], "totalCount": 0}
            )
        return Reply(400, {"error": "clusterId is not allowed"})

    loopback.reset(handler)
    client = make_client(loopback.url, auth_scheme="raw")
    assert [raw for _, raw in client.iter_columns("k1")] == cols(2)
    assert client.cluster_id_param == "cluster_id"
    client.get_columns("k2")
    # before the switch: one row of k1 by the new spelling, and none of a cluster that cannot exist
    asked = [
        (sorted(r.query)[0], r.query.get("cluster_id", "")[:24], r.query.get("limit")) for r in loopback.seen
    ]
    assert asked == [
        ("clusterId", "", None),
        ("cluster_id", "k1", "1"),
        ("cluster_id", "auditor-no-such-cluster-", "1"),
        ("cluster_id", "k1", None),
        ("cluster_id", "k2", None),
    ]


@pytest.mark.parametrize("ignored", ["every cluster's columns", "no column"])
def test_a_cluster_id_spelling_the_tenant_ignores_is_not_adopted(loopback, make_client, ignored):
    """Found by a probe with its own server: 400 for clusterId, and a server ignoring the unknown
    cluster_id answered with the whole catalog (or nothing), stored as the cluster's columns of a
    complete run. The first error stands."""
    rows = cols(25) if ignored == "every cluster's columns" else []

    def handler(request: Request) -> Reply:
        if "clusterId" in request.query:
            return Reply(400, {"message": "Invalid cluster id"})
        return Reply(200, {"results": rows[: int(request.query["limit"])], "totalCount": len(rows)})

    loopback.reset(handler)
    client = make_client(loopback.url, auth_scheme="raw")
    with pytest.raises(ApiError) as caught:
        client.get_columns("k1")
    assert caught.value.status == 400
    assert caught.value.message.startswith("the API says cluster id 'k1' is malformed (HTTP 400")
    assert client.cluster_id_param == "clusterId"


def test_the_switch_to_cluster_id_is_said_once_when_every_worker_meets_it(loopback, make_client, caplog):
    import threading

    arrived = threading.Barrier(3)

    def handler(request: Request) -> Reply:
        if "cluster_id" in request.query:
            known = request.query["cluster_id"].startswith("k")
            return Reply(200, {"results": cols(1) if known else [], "totalCount": int(known)})
        arrived.wait(timeout=10)  # the three workers' first requests all fail before any switch
        return Reply(400, {"error": "clusterId is not allowed"})

    loopback.reset(handler)
    client = make_client(loopback.url, auth_scheme="raw")
    with caplog.at_level("WARNING", logger="auditor.bigid"):
        threads = [threading.Thread(target=client.get_columns, args=(f"k{i}",)) for i in range(3)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=30)
    said = [r.getMessage() for r in caplog.records if "cluster_id" in r.getMessage()]
    assert said == ["the tenant wants the cluster id as 'cluster_id'; using it from now on"]


def test_401_says_the_key_is_missing_or_invalid(loopback, make_client):
    loopback.reset(lambda r: Reply(401, b"Unauthorized", {"Content-Type": "text/plain"}))
    client = make_client(loopback.url, token="wrong-key-123")
    with pytest.raises(AuthError) as caught:
        client.list_clusters()
    exc = caught.value
    assert (
        exc.message == "the API key is missing or invalid (HTTP 401; auth scheme tried: bearer, raw, refresh)"
    )
    assert "BIGID_TOKEN" in exc.hint and "--auth-scheme" in exc.hint
    assert exc.exit_code == 3
    # Bearer first (the tutorial), the bare form, then the exchange as the last resort
    assert [(r.path, r.authorization) for r in loopback.seen] == [
        (CLUSTERS_PATH, "Bearer wrong-key-123"),
        (CLUSTERS_PATH, "wrong-key-123"),
        ("/api/v1/refresh-access-token", "wrong-key-123"),
    ]


def test_403_says_the_key_lacks_permission(loopback, make_client):
    loopback.reset(lambda r: Reply(403, {"message": "Forbidden"}))
    with pytest.raises(AuthError) as caught:
        make_client(loopback.url).list_clusters()
    assert (
        caught.value.message == f"the API key lacks permission for GET {CLUSTERS_PATH} (HTTP 403): Forbidden"
    )
    assert caught.value.status == 403
    # auto tried the other forms of the key first (a tenant may refuse a form it does not take
    # with 403); the first refusal is what is said. A form given explicitly is never retried.
    assert [(r.path, r.authorization) for r in loopback.seen] == [
        (CLUSTERS_PATH, "Bearer SAMPLE"),
        (CLUSTERS_PATH, "SAMPLE"),
        ("/api/v1/refresh-access-token", "SAMPLE"),
    ]
    loopback.seen.clear()
    with pytest.raises(AuthError):
        make_client(loopback.url, auth_scheme="bearer").list_clusters()
    assert len(loopback.seen) == 1


@pytest.mark.parametrize("processes", [0, 2], ids=["in-thread", "pool"])
def test_an_error_given_with_no_record_is_not_an_empty_cluster(loopback, make_client, tmp_path, processes):
    """Found by a probe with its own server: {"results": [], "totalCount": 0, "error": "query failed:
    timeout"} under 200 stored the cluster complete with no column. An error beside records is
    not read so (the records are the answer)."""
    from auditor.errors import PartialSnapshotError
    from auditor.snapshot import take_snapshot
    from auditor.store.db import open_database
    from auditor.store.runs import list_runs

    from .test_bigid_snapshot_unit import make_tenant

    handler, _, _ = make_tenant({"k1": 3, "k2": 5, "k3": 2})

    def failing(request: Request) -> Reply:
        reply = handler(request)
        if request.path == COLUMNS_PATH and request.query["clusterId"] == "k2":
            return Reply(200, {"results": [], "totalCount": 0, "error": "query failed: timeout"})
        if request.path == COLUMNS_PATH and request.query["clusterId"] == "k3":
            reply.body = {**reply.body, "error": "partial results"}  # records beside it: data
        return reply

    loopback.reset(failing)
    engine = open_database(tmp_path / "e.db")
    with pytest.raises(PartialSnapshotError) as caught:
        take_snapshot(engine, make_client(loopback.url, max_retries=1), workers=2, processes=processes)
    (problem,) = caught.value.problems
    assert problem.startswith("k2: ") and "query failed: timeout" in problem
    (run,) = list_runs(engine)
    assert run.status == "failed" and run.columns_stored == 5  # k1's 3 and k3's 2


def test_an_error_wrapper_under_200_is_handled_as_the_status_it_names(loopback, make_client):
    """{"status": "error", "statusCode": 403, …} under HTTP 200 was retried five times as an outage,
    with the hint "the server is overloaded"; it is a missing role, said at once as a 403 is."""
    denied = {"status": "error", "statusCode": 403, "message": "Access denied: user lacks role Viewer"}
    loopback.reset(lambda r: Reply(200, denied))
    with pytest.raises(AuthError) as caught:
        make_client(loopback.url, auth_scheme="bearer").list_clusters()
    assert caught.value.message == (
        f"the API key lacks permission for GET {CLUSTERS_PATH} (HTTP 403): "
        "Access denied: user lacks role Viewer"
    )
    assert len(loopback.seen) == 1  # not retried
    loopback.seen.clear()
    # a permission denial worded like an authentication failure is still the 403 it says it is
    worded = {"status": "error", "statusCode": 403, "message": "User is not authorized to view clusters"}
    loopback.reset(lambda r: Reply(200, worded))
    with pytest.raises(AuthError) as caught:
        make_client(loopback.url, auth_scheme="bearer").list_clusters()
    assert caught.value.status == 403 and "lacks permission" in caught.value.message
    loopback.seen.clear()
    missing = {"status": "error", "statusCode": "404", "message": "Cluster k1 was not found"}
    loopback.reset(lambda r: Reply(200, missing))
    with pytest.raises(NotFoundError):
        make_client(loopback.url, auth_scheme="bearer").get_columns("k1")
    assert len(loopback.seen) == 1
    loopback.seen.clear()
    busy = {"status": "error", "statusCode": 503, "message": "try later"}  # still retried
    loopback.reset(lambda r: Reply(200, busy))
    with pytest.raises(ApiError, match="HTTP 200 with an error body"):
        make_client(loopback.url, auth_scheme="bearer", max_retries=2).list_clusters()
    assert len(loopback.seen) == 3


def test_404_names_the_cluster(loopback, make_client):
    loopback.reset(lambda r: Reply(404, {"error": "Cluster 65b2f0c4a91e3d0012ab77e1 was not found"}))
    with pytest.raises(NotFoundError) as caught:
        make_client(loopback.url).get_columns("65b2f0c4a91e3d0012ab77e1")
    assert caught.value.message == (
        f"cluster '65b2f0c4a91e3d0012ab77e1' was not found (HTTP 404 from GET {COLUMNS_PATH}): "
        "Cluster 65b2f0c4a91e3d0012ab77e1 was not found"
    )
    assert caught.value.hint == "list the valid cluster ids with: auditor clusters"


def test_400_unable_to_locate_is_not_found(loopback, make_client):
    loopback.reset(lambda r: Reply(400, {"message": "Unable to locate cluster k1"}))
    with pytest.raises(NotFoundError) as caught:
        make_client(loopback.url, cluster_id_fallback=False).get_columns("k1")
    assert caught.value.status == 404  # read as a 404; the message keeps the status the server sent
    assert caught.value.message == (
        f"cluster 'k1' was not found (HTTP 400 from GET {COLUMNS_PATH}): Unable to locate cluster k1"
    )


# -- retries ---------------------------------------------------------------------------------------


def test_429_honours_retry_after_seconds_and_dates(loopback, make_client):
    date = format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)
    loopback.reset(
        sequence(
            Reply(429, {"message": "slow down"}, {"Retry-After": "0.2"}),
            Reply(429, {"message": "slow down"}, {"Retry-After": date}),
            then=Reply(200, TUTORIAL_CLUSTERS),
        )
    )
    client = make_client(loopback.url, retry_after_cap=0.3, max_retry_time=5)
    started = time.monotonic()
    assert [c.id for c, _ in client.list_clusters()] == ["abc123def456", "ghi789jkl012"]
    elapsed = time.monotonic() - started
    assert 0.45 <= elapsed < 5.0  # 0.2 s, then the 30 s date capped at 0.3 s (not 30 s)
    # three attempts at the first page, then one more page confirms that the short one was the end
    # (the same page served again there ends the listing: it is not asked for once more)
    assert client.retries == 2 and client.requests == 4


def test_429_with_a_retry_after_that_is_no_number_of_seconds_backs_off_as_usual(loopback, make_client):
    """'1e400' parsed as infinity and waited the whole cap (60 s by default); 'nan' reached the wait."""
    loopback.reset(
        sequence(
            Reply(429, {}, {"Retry-After": "1e400"}),
            Reply(429, {}, {"Retry-After": "nan"}),
            Reply(429, {}, {"Retry-After": "-inf"}),
            Reply(429, {}, {"Retry-After": "soon"}),
            then=Reply(200, TUTORIAL_CLUSTERS),
        )
    )
    client = make_client(loopback.url, retry_after_cap=3, max_retry_time=20)
    started = time.monotonic()
    assert len(client.list_clusters()) == 2
    assert time.monotonic() - started < 1.5  # the backoff (ms here), not 3 s per answer
    assert client.retries == 4


def test_5xx_resets_and_gateway_pages_are_retried(loopback, make_client):
    gateway = b"<html>\r\n<head><title>502 Bad Gateway</title></head><body>nginx</body></html>"
    loopback.reset(
        sequence(
            Reply(500, {"status": "error", "message": "Server error", "errors": [{}]}),
            Reply(503, b"busy", {"Content-Type": "text/plain"}),
            Reply(drop=True),
            Reply(200, gateway, {"Content-Type": "text/html"}),
            Reply(200, {"status": "error", "statusCode": 500, "message": "temporary"}),
            # found by a probe: an error code under "success", with no records, was an empty list
            Reply(200, {"status": "success", "statusCode": 500, "data": None, "message": "Internal error"}),
            Reply(200, {"statusCode": 503, "data": [None], "errors": ["Service unavailable"]}),
            Reply(200, b""),  # a proxy that lost its upstream
            Reply(200, b"  \r\n"),
            then=Reply(200, TUTORIAL_CLUSTERS, {"Content-Type": "text/html; charset=utf-8"}),
        )
    )
    client = make_client(loopback.url, max_retries=9)
    assert len(client.list_clusters()) == 2
    assert client.retries == 9


def test_a_sign_in_page_under_200_is_an_auth_failure_at_once(loopback, make_client):
    # Found by a probe: a single sign-on page in front of the API was asked for six times and
    # reported as "an HTML gateway page" with the hint that the server was overloaded.
    page = (
        b"<!DOCTYPE html><html><head><title>Sign in</title></head><body><form method=post>"
        b"<input name=user><input type='password' name=pw></form></body></html>"
    )
    loopback.reset(lambda r: Reply(200, page, {"Content-Type": "text/html"}))
    client = make_client(loopback.url, max_retries=5)
    with pytest.raises(AuthError) as caught:
        client.list_clusters()
    assert caught.value.message == (
        f"GET {CLUSTERS_PATH} answered 200 with an HTML sign-in page, not the API's JSON: a single "
        "sign-on or proxy login stands in front of the API"
    )
    assert caught.value.exit_code == 3 and client.retries == 0


@pytest.mark.parametrize("processes", [0, 2])
def test_a_persistently_empty_answer_fails_after_its_retries(loopback, make_client, tmp_path, processes):
    """An empty 200 is retried like a gateway page (in the decoding pool's path too), then named."""

    def tenant(request: Request) -> Reply:
        if request.path == CLUSTERS_PATH:
            return Reply(
                200, [{"id": "k1", "name": "one", "size": 1}] if request.query["skip"] == "0" else []
            )
        return Reply(200, b"")

    loopback.reset(lambda r: Reply(200, b""))
    with pytest.raises(ApiError) as caught:
        make_client(loopback.url, max_retries=2).list_clusters()
    assert re.fullmatch(
        rf"GET {CLUSTERS_PATH} failed: an empty answer under HTTP 200 \(3 attempts in \d+\.\d s\)",
        caught.value.message,
    )
    loopback.reset(tenant)
    engine = open_database(tmp_path / "empty.db")
    with pytest.raises(ApiError) as caught:
        take_snapshot(engine, make_client(loopback.url, max_retries=2), workers=1, processes=processes)
    ((problem),) = caught.value.problems
    assert problem.startswith(
        f"k1: ApiError: cluster k1: GET {COLUMNS_PATH} failed: an empty answer under HTTP 200 (3 attempts in "
    )
    engine.dispose()


def test_persistent_5xx_fails_after_a_bounded_number_of_attempts(loopback, make_client):
    loopback.reset(lambda r: Reply(503, {"message": "down"}))
    client = make_client(loopback.url, max_retries=3)
    with pytest.raises(ApiError) as caught:
        client.list_clusters()
    assert caught.value.message.startswith(f"GET {CLUSTERS_PATH} failed: HTTP 503: down (4 attempts in ")
    assert caught.value.status == 503
    assert len(loopback.seen) == 4


def test_retry_time_budget_is_enforced(loopback, make_client):
    loopback.reset(lambda r: Reply(429, {}, {"Retry-After": "1"}))
    client = make_client(loopback.url, max_retries=50, max_retry_time=2.5, retry_after_cap=1.0)
    started = time.monotonic()
    with pytest.raises(ApiError, match="HTTP 429"):
        client.list_clusters()
    # about 2 s; the bound leaves room for a loaded CI machine (the three requests pin the budget)
    assert time.monotonic() - started < 5.0
    assert len(loopback.seen) == 3


def test_read_timeout_and_connection_refused_are_network_errors(loopback, make_client):
    loopback.reset(lambda r: Reply(200, [], delay=0.5))
    client = make_client(loopback.url, read_timeout=0.1, max_retries=1)
    with pytest.raises(NetworkError) as caught:
        client.list_clusters()
    assert caught.value.message.startswith(
        f"GET {CLUSTERS_PATH} failed: timed out waiting for the answer (read timeout 0.1 s) (2 attempts in "
    )
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    assert caught.value.hint == (
        "check --url / BIGID_URL and the network; a slow tenant may need a larger --read-timeout"
    )
    closed = make_client(f"http://127.0.0.1:{port}", max_retries=1)
    with pytest.raises(NetworkError, match=r"failed: connection refused \(2 attempts") as refused:
        closed.list_clusters()
    # a new user's walkthrough: every network failure suggested a larger --read-timeout
    assert refused.value.hint == (
        "nothing accepts connections there: check the host and port in --url / BIGID_URL"
    )


def test_a_host_name_that_does_not_resolve_is_told_to_check_the_name(make_client, monkeypatch):
    for proxy in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(proxy, raising=False)  # (through a proxy, the proxy resolves the name)
    unknown = make_client("http://no-such-host.invalid", max_retries=0)
    with pytest.raises(NetworkError) as caught:
        unknown.list_clusters()
    assert caught.value.message.startswith(
        f"GET {CLUSTERS_PATH} failed: cannot resolve the host of http://no-such-host.invalid (1 attempt in "
    )
    assert caught.value.hint == (
        "check the host name in --url / BIGID_URL, and that this machine's DNS can resolve it"
    )


OTHER_PROXY_VARIABLES = (
    "HTTPS_PROXY",
    "ALL_PROXY",
    "NO_PROXY",
    "https_proxy",
    "all_proxy",
    "no_proxy",
    "http_proxy",
)


def test_a_proxy_that_refuses_is_named_not_the_url(loopback, make_client, monkeypatch):
    # Found by a probe: HTTP_PROXY pointing at a closed port said "nothing accepts connections
    # there: check the host and port in --url / BIGID_URL", with the tenant answering fine
    for proxy in OTHER_PROXY_VARIABLES:
        monkeypatch.delenv(proxy, raising=False)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    monkeypatch.setenv("HTTP_PROXY", f"http://proxy-user:proxy-pass@127.0.0.1:{port}")
    loopback.reset(lambda request: Reply(200, []))
    hint = (
        f"the request went through the proxy http://127.0.0.1:{port} (from HTTP_PROXY): check that it runs "
        "there and that HTTP_PROXY names it, or set NO_PROXY to the tenant's host if it needs no proxy"
    )
    with pytest.raises(NetworkError) as caught:
        make_client(loopback.url, max_retries=0).list_clusters()
    assert caught.value.message.startswith(f"GET {CLUSTERS_PATH} failed: connection refused (1 attempt in ")
    assert caught.value.hint == hint
    assert loopback.seen == []
    monkeypatch.setenv("HTTP_PROXY", "http://proxy-user:proxy-pass@no-such-host.invalid:3128")
    with pytest.raises(NetworkError) as caught:
        make_client(loopback.url, max_retries=0).list_clusters()
    assert caught.value.message.startswith(
        f"GET {CLUSTERS_PATH} failed: cannot resolve the host of the proxy (1 attempt in "
    )
    assert caught.value.hint == hint.replace(f"127.0.0.1:{port}", "no-such-host.invalid:3128")
    # NO_PROXY for the tenant's host: straight to it, and answered
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    assert make_client(loopback.url).list_clusters() == []


@pytest.mark.slow
def test_the_command_names_a_refusing_proxy_without_its_credentials(loopback, monkeypatch, tmp_path):
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    loopback.reset(lambda request: Reply(200, []))
    env = {
        "BIGID_URL": loopback.url,
        "BIGID_TOKEN": "SAMPLE-KEY-123",
        "HTTP_PROXY": f"http://proxy-user:proxy-pass@127.0.0.1:{port}",
    }
    for proxy in OTHER_PROXY_VARIABLES:
        monkeypatch.delenv(proxy, raising=False)
    failed = run_auditor("clusters", env=env, cwd=tmp_path)  # six attempts: about 8 s of backoff
    stderr = failed.stderr.decode()
    assert failed.returncode == 3, stderr
    lines = stderr.splitlines()
    assert re.fullmatch(
        rf"error: GET {CLUSTERS_PATH} failed: connection refused \(6 attempts in [0-9.]+ s\)", lines[-2]
    )
    assert lines[-1] == (
        f"hint: the request went through the proxy http://127.0.0.1:{port} (from HTTP_PROXY): check that it "
        "runs there and that HTTP_PROXY names it, or set NO_PROXY to the tenant's host if it needs no proxy"
    )
    assert "proxy-pass" not in stderr and "proxy-user" not in stderr
    assert loopback.seen == []


@pytest.mark.parametrize(
    ("part", "body"),
    [("trickle", b"[" + b" " * 400 + b"]"), ("trickle_headers", b"[]")],  # headers: 200+ bytes
)
def test_an_answer_trickling_in_is_cut_at_its_deadline(loopback, make_client, part, body):
    """One byte every 50 ms never trips a 0.5 s read timeout: such an answer held the request
    forever (the retry budget only counts between attempts), and so did headers sent that way
    (the deadline covered the body only)."""
    loopback.reset(lambda r: Reply(200, body, **{part: 0.05}))
    client = make_client(loopback.url, auth_scheme="raw", read_timeout=0.5, answer_timeout=1.0, max_retries=1)
    started = time.monotonic()
    with pytest.raises(NetworkError) as caught:
        client.list_clusters()
    assert time.monotonic() - started < 5
    assert re.fullmatch(
        rf"GET {CLUSTERS_PATH} failed: the answer was still arriving after 1 s \(sent too slowly\) "
        r"\(2 attempts in \d+\.\d s\)",
        caught.value.message,
    )
    loopback.reset(lambda r: Reply(200, b"[" + b" " * 10 + b"]", **{part: 0.002}))  # slow but in time
    assert (
        make_client(loopback.url, auth_scheme="raw", read_timeout=0.5, answer_timeout=5).list_clusters() == []
    )


def test_persistent_resets_end_in_a_network_error(loopback, make_client):
    loopback.reset(lambda r: Reply(drop=True))
    with pytest.raises(NetworkError) as caught:
        make_client(loopback.url, max_retries=2).list_clusters()
    assert "(3 attempts in" in caught.value.message
    assert "check --url / BIGID_URL" in caught.value.hint


def test_redirects_are_not_followed(loopback, make_client):
    """A redirect to another host must neither carry the key there nor have that host's answer
    stored as the tenant's; a redirect loop is the same clear error, not an internal one."""
    other = Loopback()  # another host name for the same machine: "localhost" vs 127.0.0.1
    other.reset(lambda r: Reply(200, TUTORIAL_CLUSTERS))
    port = other.server.server_address[1]
    try:
        loopback.reset(
            lambda r: Reply(302, b"", {"Location": f"http://u:pw@localhost:{port}/api/v1/clusters?limit=9"})
        )
        client = make_client(loopback.url, auth_scheme="raw")
        with pytest.raises(ApiError) as caught:
            client.list_clusters()
        assert type(caught.value) is ApiError and caught.value.status == 302
        assert caught.value.exit_code == 3
        assert caught.value.message == (
            f"GET {CLUSTERS_PATH} was redirected to http://localhost:{port}/api/v1/clusters (HTTP 302); "
            "redirects are not followed"
        )
        assert "--url / BIGID_URL" in caught.value.hint
        assert other.seen == [] and len(loopback.seen) == 1  # nothing sent there, nothing retried

        loopback.reset(lambda r: Reply(301, b"", {"Location": "/api/v1/clusters?again=1"}))
        with pytest.raises(ApiError) as caught:
            make_client(loopback.url, auth_scheme="raw").get_columns("c1")
        assert caught.value.message == (
            f"cluster c1: GET {COLUMNS_PATH} was redirected to {loopback.url}/api/v1/clusters (HTTP 301); "
            "redirects are not followed"
        )
        assert len(loopback.seen) == 1
    finally:
        other.close()


# -- envelopes and payloads ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "shape", "total"),
    [
        (TUTORIAL_CLUSTERS, "array", None),
        ({"results": TUTORIAL_CLUSTERS, "totalCount": "2"}, "results", 2),
        ({"data": TUTORIAL_CLUSTERS}, "data", None),
        ({"data": {"clusters": TUTORIAL_CLUSTERS, "totalCount": 2}}, "data.clusters", 2),
        (
            {
                "status": "success",
                "statusCode": 200,
                "data": {"clusters": TUTORIAL_CLUSTERS, "totalCount": 2},
                "message": None,
            },
            "status+data.clusters",
            2,
        ),
        (
            {"status": "success", "statusCode": 200, "data": TUTORIAL_CLUSTERS, "message": None},
            "status+data",
            None,
        ),
        ({"clusters": TUTORIAL_CLUSTERS}, "clusters", None),
        # an empty list named like records beside the records: read as an empty page, they were lost
        ({"data": TUTORIAL_CLUSTERS, "results": [], "totalCount": 2}, "data", 2),
        ({"results": [], "clusters": TUTORIAL_CLUSTERS}, "clusters", None),
        ({"results": [], "data": {"clusters": TUTORIAL_CLUSTERS, "totalCount": 2}}, "data.clusters", 2),
        ({"clusters": TUTORIAL_CLUSTERS, "columns": ["name", "size"]}, "clusters", None),  # names: no records
    ],
)
def test_cluster_envelopes(loopback, make_client, body, shape, total):
    loopback.reset(lambda r: Reply(200, body if int(r.query["skip"]) == 0 else []))
    client = make_client(loopback.url)
    got = client.list_clusters()
    assert [raw for _, raw in got] == TUTORIAL_CLUSTERS
    assert client.envelopes["clusters"] >= {shape}
    assert client.last_cluster_paging is not None and client.last_cluster_paging.total == total


def test_column_envelopes_with_aliases(loopback, make_client):
    aliased = [
        {
            "fully_qualified_name": "a.b.c",
            "objectName": "b",
            "fieldType": "VARCHAR",
            "isPrimary": "Yes",
            "attributeDetails": ["classifier.Email"],
            "tags": None,
            "futureField": {"x": 1},
        },
    ]
    loopback.reset(lambda r: Reply(200, {"data": {"columns": aliased, "totalCount": 1}}))
    page = make_client(loopback.url).get_columns("k1")
    ((column, raw),) = page.rows
    assert raw == aliased[0]  # the raw record is kept exactly as served
    assert (column.fullyQualifiedName, column.tableName, column.dataType, column.isPrimary) == (
        "a.b.c",
        "b",
        "VARCHAR",
        True,
    )
    assert column.attributes[0].attribute_name == "classifier.Email" and column.tags == []
    assert page.total == 1 and page.shape == "data.columns"


@pytest.mark.parametrize("processes", [0, 2], ids=["in-thread", "pool"])
def test_a_null_spelling_does_not_hide_the_value_of_another(loopback, make_client, tmp_path, processes):
    """pydantic reads the first spelling present: ``{"tableName": null, "objectName": "T"}`` was a
    column without a table (silently), and ``{"id": null, "clusterId": "k9"}`` a cluster without an id
    (a payload error)."""
    column = {
        "fullyQualifiedName": None,
        "fqn": "a.b.c",
        "tableName": None,
        "objectName": "T",
        "dataType": None,
        "fieldType": "int",
        "tags": [{"tagName": None, "name": "sensitivity", "tagValue": "high"}],
        "attributes": None,
        "attributeDetails": [{"attribute_name": None, "attributeName": "SSN"}],
    }
    cluster = {"id": None, "clusterId": "k9", "name": None, "clusterName": "HR", "size": 1}

    def handler(request: Request) -> Reply:
        if request.path == CLUSTERS_PATH:
            return Reply(200, [cluster])
        return Reply(200, {"results": [column][int(request.query.get("skip", 0)) :], "totalCount": 1})

    loopback.reset(handler)
    client = make_client(loopback.url, auth_scheme="raw")
    ((parsed_cluster, raw_cluster),) = client.list_clusters()
    assert (parsed_cluster.id, parsed_cluster.name, raw_cluster) == ("k9", "HR", cluster)
    ((parsed, raw),) = client.get_columns("k9").rows
    assert raw == column  # kept exactly as served
    assert (parsed.fullyQualifiedName, parsed.tableName, parsed.dataType) == ("a.b.c", "T", "int")
    assert (parsed.tags[0].tagName, parsed.attributes[0].attribute_name) == ("sensitivity", "SSN")
    # an empty list gives way as a null does (found by a probe: `attributes: []` beside a filled
    # `attributeDetails` stored no attribute for any column, the run complete)
    from auditor.bigid.models import _column_for_model

    # an empty list gives way to a list only: not to "n/a" read as an attribute so named (a review)
    odd = {"fullyQualifiedName": "x", "attributes": [], "attributeDetails": "n/a"}
    assert _column_for_model(odd) is odd
    for blank in ([], [{}], [None], {}):  # nothing in it once empty items are dropped (a re-probe)
        column["attributes"] = blank
        ((parsed, raw),) = client.get_columns("k9").rows
        assert raw["attributes"] == blank and [a.attribute_name for a in parsed.attributes] == ["SSN"]

    engine = open_database(tmp_path / "n.db")
    run = take_snapshot(engine, client, workers=1, processes=processes)
    assert run.status == "complete" and run.columns_stored == 1
    with engine.connect() as connection:
        assert connection.execute(
            select(column_versions.c.table_name, column_versions.c.data_type)
        ).one() == (
            "T",
            "int",
        )


def test_payload_errors_name_cluster_column_field_and_problem(loopback, make_client):
    rows = [*cols(17), {"fullyQualifiedName": "x.y.z", "isPrimary": "perhaps"}]
    loopback.reset(lambda r: Reply(200, {"results": rows[int(r.query["skip"]) :][:10], "totalCount": 18}))
    client = make_client(loopback.url, page_size=10)
    with pytest.raises(PayloadError) as caught:
        for _ in client.fetch_all_columns("65b2f0c4a91e3d0012ab77e1"):
            pass
    assert caught.value.message == (
        "cluster 65b2f0c4a91e3d0012ab77e1: column 17 (x.y.z): isPrimary: Input should be a valid boolean, "
        "unable to interpret input"
    )


@pytest.mark.parametrize(
    ("attribute", "said"),
    [
        (
            {"name": "SSN", "calc_confidence_level": [0.5]},
            "attributes.0.calc_confidence_level: Input should be a number, a numeric string or a percentage "
            '(0.69, "0.69" or "69%")',
        ),
        (
            {"name": "SSN", "calcConfidenceLevel": {"value": 0.5}},
            "attributes.0.calcConfidenceLevel: Input should be a number, a numeric string or a percentage "
            '(0.69, "0.69" or "69%")',
        ),
        (
            {"name": "SSN", "ranks": {"HIGH": 1}},
            "attributes.0.ranks: Input should be a string or a list of strings",
        ),
    ],
)
def test_a_field_of_several_types_is_named_with_what_it_accepts(
    loopback, make_client, tmp_path, attribute, said
):
    # Found by a probe: "attributes.0.calc_confidence_level.bool: Input should be a valid boolean",
    # the ".bool" pydantic's tag for the first type it tried, and a boolean not what it wants
    rows = [{"fullyQualifiedName": "x.y.z", "attributes": [attribute]}]
    loopback.reset(lambda r: Reply(200, {"results": rows, "totalCount": 1}))
    with pytest.raises(PayloadError) as caught:
        make_client(loopback.url).get_columns("k1")
    assert caught.value.message == f"cluster k1: column 0 (x.y.z): {said}"
    env = {"BIGID_URL": loopback.url, "BIGID_TOKEN": "SAMPLE-KEY-123"}
    failed = run_auditor("columns", "k1", env=env, cwd=tmp_path)
    assert failed.returncode == 3
    assert failed.stderr.decode().splitlines()[0] == f"error: cluster k1: column 0 (x.y.z): {said}"


TAG_SAID = "has none of the fields of a tag (tagName, tagValue, tagId, valueId, …; its keys: {})"
ATTRIBUTE_SAID = "has none of the fields of an attribute (attribute_name, rank, …; its keys: {})"


@pytest.mark.parametrize(
    ("field", "value", "said"),
    [
        ("tags", {"sensitivity": "high"}, "tags: Value error, tag 0 " + TAG_SAID.format("sensitivity")),
        (
            "tags",
            [None, {"tagName": "pii", "tagValue": "yes"}, {"key": "sensitivity", "val": "high"}],
            "tags: Value error, tag 2 " + TAG_SAID.format("key, val"),  # its place in the list as sent
        ),
        (
            "attributes",
            [{"classification": "SSN", "confidence": 0.99}],
            "attributes: Value error, attribute 0 " + ATTRIBUTE_SAID.format("classification, confidence"),
        ),
    ],
)
def test_tags_and_attributes_of_another_shape_are_refused_not_stored_empty(
    loopback, make_client, field, value, said
):
    """A tenant sending tags as a map or as {key, val} objects had them stored as empty tags: every
    finding about tags changed silently (the high-sensitivity ones lost, false missing-tag ones)."""
    rows = [{"fullyQualifiedName": "x.y.z", field: value}]
    loopback.reset(lambda r: Reply(200, {"results": rows, "totalCount": 1}))
    with pytest.raises(PayloadError) as caught:
        make_client(loopback.url).get_columns("k1")
    assert caught.value.message == f"cluster k1: column 0 (x.y.z): {said}"


def test_empty_tag_objects_are_no_tags_and_an_empty_list_is_an_empty_map(loopback, make_client):
    rows = [
        {
            "fullyQualifiedName": "x.y.z",
            "tags": [{}, {"tagName": "pii", "tagValue": "yes", "properties": []}],
            "attributes": [{}, {"attributeId": "a1"}],
        }
    ]
    loopback.reset(lambda r: Reply(200, {"results": rows, "totalCount": 1}))
    ((column, _raw),) = make_client(loopback.url).get_columns("k1").rows
    assert [(t.tagName, t.tagValue, t.properties) for t in column.tags] == [("pii", "yes", None)]
    assert [a.attribute_id for a in column.attributes] == ["a1"]


# (createdAt as sent, as read): it is shown nowhere and read by no rule, so no value of it may refuse
# the listing. 1e308 or a year past 9999 failed it as an internal error (OverflowError); `true` and
# MongoDB's `{"$date": …}` refused it, exit 3 (a probe).
CREATION_TIMES = [
    (1e308, "1e+308"),
    (99999999999999999999999, "99999999999999999999999"),
    (253402300800000, "253402300800000"),
    (1.5e20, "1.5e+20"),
    (1752589350000, "2025-07-15T14:22:30Z"),
    ({"$date": "2026-01-01T00:00:00Z"}, "2026-01-01T00:00:00Z"),
    ({"$date": 1700000000000}, "2023-11-14T22:13:20Z"),
    ({"$date": 86400000}, "1970-01-02T00:00:00Z"),  # extended JSON counts milliseconds, however few
    ({"$date": {"$numberLong": "1700000000000"}}, "2023-11-14T22:13:20Z"),
    ({"$date": {"$numberLong": "--5"}}, "--5"),  # no number: its text (a review)
    (True, "true"),
    ({"when": [2026, 1, 1]}, '{"when": [2026, 1, 1]}'),
    (["2026-01-01"], '["2026-01-01"]'),
    (None, None),
]


def test_a_creation_time_of_any_shape_is_kept_and_never_refuses_the_listing(loopback, make_client):
    stamps = [stamp for stamp, _read in CREATION_TIMES]
    clusters = [{"id": f"k{i}", "name": "n", "size": 1, "createdAt": stamp} for i, stamp in enumerate(stamps)]
    loopback.reset(lambda r: Reply(200, clusters if r.query.get("skip", "0") == "0" else []))
    listed = make_client(loopback.url).list_clusters()
    assert [c.createdAt for c, _raw in listed] == [read for _stamp, read in CREATION_TIMES]
    assert [raw["createdAt"] for _c, raw in listed] == stamps  # the record as sent is kept whole


def test_unknown_envelope_and_non_json_are_payload_errors(loopback, make_client):
    loopback.reset(lambda r: Reply(200, {"weird": 1}))
    with pytest.raises(
        PayloadError, match=r"cluster k1: GET .* answered an object without a list of records"
    ):
        make_client(loopback.url).get_columns("k1")
    loopback.reset(lambda r: Reply(200, b"plain words", {"Content-Type": "text/plain"}))
    with pytest.raises(PayloadError) as caught:
        make_client(loopback.url).list_clusters()
    assert caught.value.message == (
        f"GET {CLUSTERS_PATH} answered 200 with a body that is not JSON "
        "(unexpected character, expected a JSON value at character 0): 'plain words'"
    )


@pytest.mark.parametrize("processes", [0, 2], ids=["in-thread", "pool"])
def test_malformed_json_far_into_a_page_is_shown_where_it_breaks(loopback, make_client, tmp_path, processes):
    """A bad value 700 KB into a page was reported with the page's first 120 characters, which look fine
    (once a NaN: read as null now, see test_nan_and_infinity_as_values_are_read_as_unknown)."""
    rows = b",".join(b'{"fullyQualifiedName": "s.t.c%d"}' % i for i in range(20_000))
    body = b'{"results": [' + rows + b', {"fullyQualifiedName": "s.t.x", "score": nan}], "totalCount": 1}'
    position = body.index(b"nan}")

    def handler(request: Request) -> Reply:
        if request.path == CLUSTERS_PATH:
            return Reply(200, [{"id": "k1"}])
        return Reply(200, body)

    loopback.reset(handler)
    with pytest.raises(PayloadError) as caught:
        take_snapshot(  # the cluster's own error, as the first failed cluster aborts (max 0)
            open_database(tmp_path / "m.db"),
            make_client(loopback.url),
            workers=1,
            processes=processes,
            max_failed_clusters=0,
        )
    assert caught.value.message == (
        f"cluster k1: GET {COLUMNS_PATH} answered 200 with a body that is not JSON (invalid literal, "
        f"expected 'null' at character {position:,}): "
        '\'e": "s.t.c19999"}, {"fullyQualifiedName": "s.t.x", "score": nan}], "totalCount": 1}\''
    )
    assert "malformed JSON" in caught.value.hint


def test_a_byte_order_mark_is_skipped_and_bad_bytes_and_depth_are_said_where(loopback, make_client):
    """A BOM before the JSON (RFC 8259 lets parsers ignore it) failed the listing as not JSON; a
    byte that is not UTF-8 was placed 'at character 0'; JSON nested past the parser's limit read as
    'depth limit exceeded'."""
    loopback.reset(lambda r: Reply(200, b"\xef\xbb\xbf" + b'[{"id": "k1"}]'))
    assert [c.id for c, _ in make_client(loopback.url).list_clusters()] == ["k1"]
    for body, problem in (
        (b'[{"id": "k1", "name": "caf\xe9 ' + b"x" * 80 + b'"}]', "not valid UTF-8 at byte 26"),
        (
            b"[" * 2000 + b"]" * 2000,
            "nested more than 1,024 levels deep, too deep to read (a record may nest 512)",
        ),
    ):
        loopback.reset(lambda r, body=body: Reply(200, body))
        with pytest.raises(PayloadError) as caught:
            make_client(loopback.url).list_clusters()
        assert caught.value.message.startswith(
            f"GET {CLUSTERS_PATH} answered 200 with a body that is not JSON ({problem}): "
        )


@pytest.mark.parametrize(
    ("body", "said"),
    [
        (b"null", "answered JSON null instead of a list or an object"),
        (b'"hello"', "answered a JSON string instead of a list or an object"),
        (b"42", "answered a JSON number instead of a list or an object"),
        (b"true", "answered JSON true instead of a list or an object"),
    ],
)
def test_bodies_that_are_not_a_page_say_what_they_are_in_json_terms(loopback, make_client, body, said):
    """These read 'a JSON NoneType' / 'a JSON str' / "a body that is not JSON: ''"."""
    loopback.reset(lambda r: Reply(200, body))
    with pytest.raises(PayloadError) as caught:
        make_client(loopback.url, auth_scheme="raw").list_clusters()
    assert caught.value.message == f"GET {CLUSTERS_PATH} {said}"
    with pytest.raises(PayloadError) as caught:
        make_client(loopback.url, auth_scheme="raw").get_columns("k1")
    assert caught.value.message == f"cluster k1: GET {COLUMNS_PATH} {said}"


def test_columns_command_parameters_are_sent_as_documented(loopback, make_client):
    loopback.reset(lambda r: Reply(200, {"results": [], "totalCount": 0}))
    make_client(loopback.url).get_columns(
        "k1",
        limit=5,
        skip=10,
        filter="columnName=email",
        search_text="mail",
        sort="columnName",
        offset_key="abc",
        ignore_limit=True,
        sample=3,
    )
    assert loopback.seen[0].query == {
        "clusterId": "k1",
        "limit": "5",
        "skip": "10",
        "filter": "columnName=email",
        "searchText": "mail",
        "sort": "columnName",
        "offsetKey": "abc",
        "ignoreLimit": "true",
        "sample": "3",
    }


def test_cluster_filter_is_url_encoded_and_paged(loopback, make_client):
    def handler(request: Request) -> Reply:
        skip, limit = int(request.query["skip"]), int(request.query["limit"])
        return Reply(200, TUTORIAL_CLUSTERS[skip : skip + limit])

    loopback.reset(handler)
    got = make_client(loopback.url, page_size=1).list_clusters(filter='size=20 AND name="HR & Co"')
    assert len(got) == 2
    assert [r.query for r in loopback.seen] == [
        {"limit": "1", "skip": str(skip), "filter": 'size=20 AND name="HR & Co"'} for skip in (0, 1, 2)
    ]


# -- secrets, options, TLS -------------------------------------------------------------------------


def test_verbose_log_has_method_path_status_and_params_never_the_key(loopback, make_client, caplog):
    loopback.reset(lambda r: Reply(200, TUTORIAL_CLUSTERS))
    token = "sk-LOGCHECK-8c1d"
    with caplog.at_level(logging.DEBUG):
        make_client(loopback.url, token=token).list_clusters(filter="size=20")
    text = "\n".join(record.getMessage() for record in caplog.records)
    assert "GET /api/v1/clusters?limit=1000&skip=0&filter=size%3D20 -> 200 in" in text
    assert token not in text


def test_reprs_hide_the_key(loopback):
    options = ClientOptions(url=loopback.url, token="sk-REPR-123456")
    assert "sk-REPR-123456" not in repr(options) and "token='***'" in repr(options)
    client = BigIDClient(options)
    assert "sk-REPR" not in repr(client)
    client.close()
    # ... also where it was pasted into the URL (a probe of the library: the URL was shown as given)
    key = "sk-live-ABCDEFGHIJKLMNOP1234"
    for url in (
        f"{loopback.url}/?apikey={key}",
        f"{loopback.url}/{key}",
        f"{loopback.url}/sk%2Dlive-ABCDEFGHIJKLMNOP1234",
    ):
        options = ClientOptions(url=url, token=key)
        assert key not in repr(options) and "ABCDEFGHIJKLMNOP" not in repr(options), repr(options)
        client = BigIDClient(options)
        try:
            assert "ABCDEFGHIJKLMNOP" not in repr(client), repr(client)
        finally:
            client.close()


def test_bad_settings_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="not an http"):
        BigIDClient(ClientOptions(url="ftp://x", token="abcd"))
    with pytest.raises(ConfigError, match="must not carry credentials"):
        BigIDClient(ClientOptions(url="https://u:p@host", token="abcd"))
    with pytest.raises(ConfigError, match="--auth-scheme 'basic'"):
        BigIDClient(ClientOptions(url="https://host", token="abcd", auth_scheme="basic"))
    with pytest.raises(ConfigError, match="--ca-bundle"):
        BigIDClient(ClientOptions(url="https://host", token="abcd", ca_bundle=str(tmp_path / "none.pem")))


def test_a_private_ca_is_trusted_through_ca_bundle_only(tls_loopback, make_client):
    server, bundle = tls_loopback
    server.reset(lambda request: Reply(200, TUTORIAL_CLUSTERS))
    with pytest.raises(NetworkError) as caught:
        make_client(server.url, max_retry_time=0.5).list_clusters()
    assert caught.value.message == (
        f"GET {CLUSTERS_PATH}: the TLS certificate of {server.url} could not be verified"
    )
    assert caught.value.hint == "for a private CA pass --ca-bundle FILE (or, at your own risk, --insecure)"
    trusted = make_client(server.url, ca_bundle=str(bundle))
    assert [c.id for c, _ in trusted.list_clusters()] == ["abc123def456", "ghi789jkl012"]


def test_headers_trickling_in_over_tls_are_cut_at_the_deadline_too(tls_loopback, make_client):
    server, bundle = tls_loopback
    server.reset(lambda r: Reply(200, TUTORIAL_CLUSTERS, trickle_headers=0.05))
    client = make_client(
        server.url, ca_bundle=str(bundle), read_timeout=0.5, answer_timeout=1.0, max_retries=0
    )
    started = time.monotonic()
    with pytest.raises(NetworkError, match=r"the answer was still arriving after 1 s \(sent too slowly\)"):
        client.list_clusters()
    assert time.monotonic() - started < 6  # the 1 s deadline, not the ~10 s of trickling
    server.reset(lambda r: Reply(200, TUTORIAL_CLUSTERS, trickle_headers=0.001))  # slow but in time
    trusted = make_client(server.url, ca_bundle=str(bundle), read_timeout=0.5, answer_timeout=5)
    assert [c.id for c, _ in trusted.list_clusters()] == ["abc123def456", "ghi789jkl012"]


def test_https_to_a_plain_http_server_is_not_blamed_on_the_certificate(loopback, make_client):
    # It said "the TLS certificate could not be verified" and suggested --insecure, even when given.
    url = loopback.url.replace("http://", "https://")
    for options in ({}, {"verify": False}):
        with pytest.raises(NetworkError) as caught:
            make_client(url, max_retry_time=0.5, **options).list_clusters()
        assert caught.value.message == (
            f"GET {CLUSTERS_PATH}: {url} did not answer in TLS (it looks like a plain-HTTP server)"
        )
        assert "http:// if the server has no TLS" in caught.value.hint


def test_insecure_warns(loopback, caplog):
    with caplog.at_level(logging.WARNING):
        BigIDClient(ClientOptions(url=loopback.url, token="abcd", verify=False)).close()
    assert "TLS certificate verification is OFF (--insecure)" in caplog.text


def test_public_url_drops_credentials_query_and_fragment():
    assert (
        public_url("https://u:p@bigid.example.net:8443/base/?token=x#f")
        == "https://bigid.example.net:8443/base"
    )


def test_a_null_list_of_records_is_no_records_and_token_alone_is_no_auth_word():
    # Found by a probe: {"results": null, "totalCount": 7} failed its cluster though {"data": null}
    # was read as no records; "offsetKey token is stale" under 200 ended the run as a bad API key.
    from auditor.bigid.envelope import is_auth_message, unwrap

    assert (
        unwrap({"results": None, "totalCount": 7}).rows,
        unwrap({"results": None, "totalCount": 7}).total,
    ) == (
        [],
        7,
    )
    assert not is_auth_message("offsetKey token is stale")
    for said in ("Invalid token", "Refresh token not valid", "Session token has expired", "Unauthorized"):
        assert is_auth_message(said), said
    # found by a probe: an expired session under 200 was retried six times as a server error
    for said in (
        "Session expired, please login",
        "Login required",
        "You are not logged in",
        "Please sign in",
    ):
        assert is_auth_message(said), said
    assert not is_auth_message("scroll session expired, start the listing again")


def test_a_list_of_names_beside_an_empty_list_of_records_is_no_records():
    from auditor.bigid.envelope import unwrap

    envelope = unwrap({"results": [], "columns": ["name", "size"], "totalCount": 0})
    assert (envelope.rows, envelope.shape) == ([], "results")


def test_records_led_by_a_null_are_still_the_records():
    """A page's null records are dropped and counted; one at the head of the list made the shape
    detection pass the list over for another one, or for the records under "data"."""
    from auditor.bigid.envelope import unwrap

    rows = [None, {"id": "k1"}, None, {"id": "k2"}]
    beside_empty = unwrap({"results": [], "clusters": rows, "totalCount": 2})
    assert (beside_empty.rows, beside_empty.shape) == (rows, "clusters")
    beside_data = unwrap({"results": rows, "data": {"clusters": [{"id": "other"}]}})
    assert (beside_data.rows, beside_data.shape) == (rows, "results")
    nested = unwrap({"data": {"page": rows, "names": ["a"]}, "totalCount": 2})
    assert (nested.rows, nested.shape, nested.total) == (rows, "data.page", 2)
    assert unwrap({"results": [None, "k1"], "clusters": rows}).shape == "clusters"


def test_tag_objects_of_any_mapping_type_are_checked_and_positions_are_those_sent():
    from collections import OrderedDict

    from pydantic import ValidationError

    from auditor.bigid.models import parse_columns

    assert parse_columns([{"fullyQualifiedName": "a", "tags": [OrderedDict()]}])[0].tags == []
    for tags, position in (([OrderedDict(key=1)], 0), ((None, {"key": 1}), 1)):
        with pytest.raises(ValidationError, match=f"tag {position} has none of the fields of a tag"):
            parse_columns([{"fullyQualifiedName": "a", "tags": tags}])


def test_a_proxy_asking_for_its_own_credentials_says_so(loopback, make_client):
    """Found by a probe: HTTP 407 read "GET /api/v1/clusters failed (HTTP 407 from GET
    /api/v1/clusters)", with no word of the proxy."""
    loopback.reset(lambda r: Reply(407, b"Proxy Authentication Required", {"Content-Type": "text/plain"}))
    with pytest.raises(ApiError) as caught:
        make_client(loopback.url, auth_scheme="raw").list_clusters()
    assert caught.value.status == 407
    assert caught.value.message.startswith(
        f"a proxy in front of the tenant requires its own authentication (HTTP 407 from GET {CLUSTERS_PATH})"
    )
    assert caught.value.hint.startswith("give the proxy's credentials in HTTPS_PROXY")
    assert len(loopback.seen) == 1


def test_a_404_past_the_first_page_of_the_cluster_list_does_not_blame_the_url(loopback, make_client):
    """Found by a probe: a 404 for the second page of the listing said "check that --url is the
    base URL", although the first page had answered at that very URL."""

    def handler(request: Request) -> Reply:
        if int(request.query["skip"]) == 0:
            return Reply(200, [{"id": f"k{i}", "name": "n", "size": 1} for i in range(2)])
        return Reply(404, {"message": "Not Found"})

    loopback.reset(handler)
    with pytest.raises(NotFoundError) as caught:
        make_client(loopback.url, auth_scheme="raw", page_size=2).list_clusters()
    assert caught.value.message == (
        f"GET {CLUSTERS_PATH} with skip=2 was not found (HTTP 404) after the first 2 clusters had been "
        "listed: Not Found"
    )
    assert caught.value.hint.startswith("the tenant may not page its cluster list past the first page")


def test_the_error_screen_looks_for_a_key_not_for_a_catalog_value():
    """A page holding a column named "error" was decoded twice (in the fetching thread, then by
    the pool) once the screen looked for "error" at all; only a key is an error under 200."""
    from auditor.bigid.envelope import may_report_error

    assert not may_report_error(b'{"results": [{"columnName": "error", "tags": ["error"]}], "totalCount": 1}')
    assert may_report_error(b'{"results": [], "totalCount": 0, "error": "query failed"}')
    assert may_report_error(b'{"results":[],"error" : "x"}')
    assert may_report_error(b'{"status": "error"}')


def test_a_plain_http_url_to_another_host_is_warned_about(make_client, caplog):
    # Found by a security probe: --insecure warned, a plain http:// tenant (the key in clear text
    # on the network, and to any HTTP_PROXY) said nothing
    import logging

    caplog.set_level(logging.WARNING, logger="auditor.bigid")
    make_client("http://bigid.example.net", token="k" * 20)
    assert [r.getMessage() for r in caplog.records] == [
        "the BigID URL http://bigid.example.net is http://: the API key travels unencrypted to it (and to "
        "any proxy on the way); use https://"
    ]
    caplog.clear()
    for url in (
        "https://bigid.example.net",
        "http://127.0.0.1:8080",
        "http://localhost:8080",
        "http://[::1]:80",
    ):
        make_client(url, token="k" * 20)
    assert caplog.records == []
