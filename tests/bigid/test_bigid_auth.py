"""The three auth schemes and ``auto`` against a programmable loopback tenant: which header is sent
in which order, the exchange, one shared re-exchange on a 401 mid-run, refresh ahead of ``exp``."""

from __future__ import annotations

import base64
import itertools
import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from auditor.bigid.auth import is_user_token, jwt_payload, token_expiry
from auditor.bigid.client import CLUSTERS_PATH, COLUMNS_PATH
from auditor.errors import ApiError, AuthError

from .conftest import Reply, Request

REFRESH = "/api/v1/refresh-access-token"
CLUSTERS = [{"id": "k1", "name": "one", "size": 1}]


def jwt(payload: dict) -> str:
    def part(data: dict) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()

    return f"{part({'alg': 'HS256'})}.{part(payload)}.c2lnbmF0dXJl"


USER_JWT = jwt({"type": "refresh-token", "sub": "svc"})


def tenant(
    accept: str, *, key: str = "KEY-1234", sessions: list[str] | None = None, refuse: Reply | None = None
):
    """``accept``: bearer | raw | refresh. In refresh mode, the key exchanges for ``sessions`` in turn.
    ``refuse``: the answer to a form it does not take (default: a 401)."""
    issued: list[str] = []
    pool = iter(sessions or (f"session-{i}" for i in itertools.count(1)))
    lock = threading.Lock()

    def handler(request: Request) -> Reply:
        if request.path == REFRESH:
            if accept == "refresh" and request.authorization == key:
                with lock:
                    issued.append(next(pool))
                    return Reply(200, {"success": True, "systemToken": issued[-1]})
            return Reply(200, {"success": False, "message": "Refresh token not valid"})
        ok = {
            "bearer": request.authorization == f"Bearer {key}",
            "raw": request.authorization == key,
            "refresh": bool(issued) and request.authorization == issued[-1],
        }[accept]
        if not ok:
            return refuse or Reply(401, b"Unauthorized", {"Content-Type": "text/plain"})
        if request.path == CLUSTERS_PATH:
            return Reply(200, CLUSTERS[int(request.query.get("skip", 0)) :])
        return Reply(200, {"results": [{"fullyQualifiedName": "a.b"}], "totalCount": 1})

    handler.issued = issued  # type: ignore[attr-defined]
    return handler


@pytest.mark.parametrize(
    ("accept", "expected_headers"),
    [
        ("bearer", ["Bearer KEY-1234"]),
        ("raw", ["Bearer KEY-1234", "KEY-1234"]),
        ("refresh", ["Bearer KEY-1234", "KEY-1234", "KEY-1234", "session-1"]),
    ],
)
def test_auto_finds_the_scheme_and_keeps_it(loopback, make_client, accept, expected_headers):
    loopback.reset(tenant(accept))
    client = make_client(loopback.url, token="KEY-1234")
    assert len(client.list_clusters()) == 1
    # the listing has no total: its short page is confirmed by one more (empty) page
    assert [r.authorization for r in loopback.seen] == [*expected_headers, expected_headers[-1]]
    assert client.auth_scheme_used == accept
    loopback.seen.clear()
    client.get_columns("k1")
    assert [r.authorization for r in loopback.seen] == [expected_headers[-1]]  # no more probing


@pytest.mark.parametrize(
    "refuse",
    [Reply(403, {"message": "Forbidden"}), Reply(400, {"message": "invalid authorization header"})],
    ids=["403", "400-about-the-header"],
)
def test_auto_also_moves_on_when_a_form_is_refused_with_400_or_403(loopback, make_client, refuse):
    # Found by a probe: a tenant refusing 'Bearer <key>' with 403 (or a 400 about the header) and
    # taking the bare key ended the run with 'the API key lacks permission', raw never tried.
    loopback.reset(tenant("raw", refuse=refuse))
    client = make_client(loopback.url, token="KEY-1234")
    assert len(client.list_clusters()) == 1
    assert client.auth_scheme_used == "raw"
    # refused in every form: the first refusal is what is said, not a 401 nobody sent
    loopback.reset(tenant("bearer", key="OTHER", refuse=refuse))
    with pytest.raises(ApiError) as caught:
        make_client(loopback.url, token="KEY-1234").list_clusters()
    assert caught.value.status == refuse.status
    # found by a probe: an exchange answering 200 without a systemToken was said instead (with the
    # hint "try --auth-scheme raw", tried already)
    refusing = tenant("bearer", key="OTHER", refuse=refuse)
    loopback.reset(lambda r: Reply(200, {"success": True}) if r.path == REFRESH else refusing(r))
    with pytest.raises(ApiError) as caught:
        make_client(loopback.url, token="KEY-1234").list_clusters()
    assert caught.value.status == refuse.status and "systemToken" not in caught.value.message
    # a 400 about a parameter is no refusal of the form: said at once, nothing else tried
    loopback.reset(lambda request: Reply(400, {"message": "invalid value for parameter limit"}))
    with pytest.raises(ApiError) as caught:
        make_client(loopback.url, token="KEY-1234").list_clusters()
    assert caught.value.status == 400 and len(loopback.seen) == 1


def test_auto_exchanges_a_user_token_first(loopback, make_client):
    loopback.reset(tenant("refresh", key=USER_JWT))
    client = make_client(loopback.url, token=USER_JWT)
    client.list_clusters()
    assert [(r.path, r.authorization) for r in loopback.seen] == [
        (REFRESH, USER_JWT),
        (CLUSTERS_PATH, "session-1"),
        (CLUSTERS_PATH, "session-1"),  # the short page confirmed by an empty one
    ]
    assert client.auth_scheme_used == "refresh" and client.auth.exchanges == 1


@pytest.mark.parametrize("scheme", ["bearer", "raw"])
def test_explicit_schemes_do_not_probe(loopback, make_client, scheme):
    loopback.reset(tenant("refresh"))
    with pytest.raises(AuthError, match=rf"missing or invalid \(HTTP 401; auth scheme tried: {scheme}\)"):
        make_client(loopback.url, token="KEY-1234", auth_scheme=scheme).list_clusters()
    assert len(loopback.seen) == 1


def test_explicit_refresh_with_a_refused_user_token(loopback, make_client):
    loopback.reset(tenant("refresh", key="OTHER-KEY"))
    with pytest.raises(AuthError) as caught:
        make_client(loopback.url, token="KEY-1234", auth_scheme="refresh").list_clusters()
    assert caught.value.message == (
        f"the BigID user token was refused by GET {REFRESH}: it is invalid or expired, or its "
        "user was not saved after the token was generated"
    )
    assert [r.path for r in loopback.seen] == [REFRESH]


def test_session_expiry_mid_run_is_one_shared_re_exchange(loopback, make_client):
    handler = tenant("refresh", key=USER_JWT)
    expired = threading.Event()

    def expiring(request: Request) -> Reply:
        # after the 6th data request the first session expires, for every worker at once
        data = [r for r in loopback.seen if r.path == COLUMNS_PATH]
        if len(data) > 6 and request.authorization == "session-1":
            expired.set()
            return Reply(401, {"message": "Token expired"})
        return handler(request)

    loopback.reset(expiring)
    client = make_client(loopback.url, token=USER_JWT, workers=4)
    client.list_clusters()
    barrier = threading.Barrier(4)

    def work(i: int) -> int:
        barrier.wait()
        return sum(len(client.get_columns(f"k{i}-{j}").rows) for j in range(5))

    with ThreadPoolExecutor(4) as pool:
        assert sum(pool.map(work, range(4))) == 20
    assert expired.is_set()
    assert handler.issued == ["session-1", "session-2"]  # exactly one re-exchange
    assert client.auth.exchanges == 2


def test_auto_tries_the_bare_key_where_only_the_columns_endpoint_wants_it(loopback, make_client):
    """Found by a probe with its own server: a gateway let any header through to the cluster list
    but wanted the bare key for the columns; auto kept Bearer, and the first columns 401 stopped
    the snapshot as a key "revoked during the snapshot"."""
    raw_only = tenant("raw")

    def handler(request: Request) -> Reply:
        if request.path == CLUSTERS_PATH:
            return Reply(200, CLUSTERS[int(request.query.get("skip", 0)) :])
        return raw_only(request)

    loopback.reset(handler)
    client = make_client(loopback.url, token="KEY-1234")
    client.list_clusters()
    assert client.auth.scheme_used == "bearer"
    assert [c.fullyQualifiedName for c, _ in client.iter_columns("k1")] == ["a.b"]
    assert client.auth.scheme_used == "raw"
    client.list_clusters()  # the bare key from now on, everywhere
    seen = [(r.path, r.authorization) for r in loopback.seen]
    # Bearer asked twice (a passing 401 is not taken for a form refused: a re-probe), then the bare key
    assert [a for path, a in seen if path == COLUMNS_PATH] == [
        "Bearer KEY-1234",
        "Bearer KEY-1234",
        "KEY-1234",
    ]
    assert seen[-1] == (CLUSTERS_PATH, "KEY-1234")  # the last listing's


def test_a_key_refused_by_the_columns_endpoint_in_both_forms_is_named_revoked(loopback, make_client):
    handler = tenant("bearer")

    def revoked(request: Request) -> Reply:
        if request.path == COLUMNS_PATH:
            return Reply(401, {"message": "Unauthorized"})
        return handler(request)

    loopback.reset(revoked)
    client = make_client(loopback.url, token="KEY-1234")
    client.list_clusters()
    with pytest.raises(AuthError) as caught:
        client.get_columns("k1")
    seen = [(r.path, r.authorization) for r in loopback.seen if r.path != CLUSTERS_PATH]
    assert seen == [(COLUMNS_PATH, "Bearer KEY-1234")] * 2 + [(COLUMNS_PATH, "KEY-1234")]  # no exchange
    assert caught.value.message == (
        f"the API key was refused (HTTP 401 on GET {COLUMNS_PATH} for cluster k1) after the tenant had "
        "accepted it (auth scheme bearer; refused here as bearer, raw alike): it expired or was revoked "
        "during the snapshot, or it may not read that cluster"
    )


def test_a_second_401_after_the_re_exchange_fails(loopback, make_client):
    handler = tenant("refresh", key=USER_JWT)

    def revoked(request: Request) -> Reply:
        if request.path == COLUMNS_PATH:
            return Reply(401, {"message": "Token expired"})
        return handler(request)

    loopback.reset(revoked)
    client = make_client(loopback.url, token=USER_JWT)
    client.list_clusters()
    with pytest.raises(AuthError) as caught:
        client.get_columns("k1")
    assert handler.issued == ["session-1", "session-2"]
    # it had worked (the listing): a key revoked or expired meanwhile, named as such (a probe saw
    # "missing or invalid", with no word of the request or of the key having worked)
    assert caught.value.message == (
        f"the API key was refused (HTTP 401 on GET {COLUMNS_PATH} for cluster k1) after the tenant had "
        "accepted it (auth scheme refresh): it expired or was revoked during the snapshot, or it may not "
        "read that cluster"  # refused for one cluster, the key may still read the others (a probe)
    )
    assert caught.value.hint == (
        "issue a new key (or extend its validity) and run the snapshot again; a cluster the key may not "
        "read is left out with --skip-cluster k1"
    )


def test_refresh_ahead_of_jwt_expiry(loopback, make_client):
    now = int(time.time())
    sessions = [
        jwt({"type": "access-token", "exp": now + 1}),
        jwt({"type": "access-token", "exp": now + 3600}),
    ]
    handler = tenant("refresh", key=USER_JWT, sessions=sessions)
    loopback.reset(handler)
    client = make_client(loopback.url, token=USER_JWT)
    client.list_clusters()
    time.sleep(1.05)
    client.get_columns("k1")
    assert handler.issued == sessions
    # after the exchange, the listing's page and the empty page confirming it: no request with the stale one
    assert all(r.authorization != sessions[0] for r in loopback.seen[3:])


def test_success_false_under_200_is_an_auth_failure(loopback, make_client):
    def handler(request: Request) -> Reply:
        if request.authorization == "KEY-1234":
            return Reply(200, CLUSTERS)
        return Reply(200, {"success": False, "message": "Failed to authenticate token."})

    loopback.reset(handler)
    client = make_client(loopback.url, token="KEY-1234")
    assert len(client.list_clusters()) == 1
    assert client.auth_scheme_used == "raw"


def test_jwt_helpers():
    assert jwt_payload(USER_JWT) == {"type": "refresh-token", "sub": "svc"}
    assert is_user_token(USER_JWT)
    assert not is_user_token(jwt({"type": "access-token"}))
    assert not is_user_token("SAMPLE") and jwt_payload("a.b.c") is None
    assert token_expiry(jwt({"exp": 1_760_000_000})) == 1_760_000_000.0


def test_a_passing_401_of_an_accepted_key_is_asked_again_once(loopback, make_client):
    """Found by a probe: one 401 in the middle of a run (a gateway's hiccup) stopped the whole
    snapshot, the clusters after it left unfetched, although the next request was accepted. A key
    an endpoint took and now refuses is asked again (a few times a run at most)."""
    handler = tenant("bearer")
    refusals = {"k2": 1}

    def hiccup(request: Request) -> Reply:
        cluster = request.query.get("clusterId")
        if request.path == COLUMNS_PATH and refusals.get(cluster, 0) > 0:
            refusals[cluster] -= 1
            return Reply(401, {"message": "Unauthorized"})
        return handler(request)

    loopback.reset(hiccup)
    client = make_client(loopback.url, token="KEY-1234")
    client.list_clusters()
    client.get_columns("k1")  # the columns endpoint takes the key
    assert [c.fullyQualifiedName for c, _ in client.iter_columns("k2")] == [
        c.fullyQualifiedName for c, _ in client.iter_columns("k1")
    ]
    assert client.auth.refusals_retried == 1 and client.auth.scheme_used == "bearer"
    # a blip that every request in flight meets (a re-probe: four workers at once used up a budget
    # of three): each request is asked again once
    refusals.update({"k1": 1, "k2": 1, "k3": 1, "k4": 1})
    for cluster in ("k1", "k2", "k3", "k4"):
        client.get_columns(cluster)
    assert client.auth.refusals_retried == 5
    # revoked for good: refused again once asked again, the run stops
    refusals["k1"] = 100
    with pytest.raises(AuthError) as caught:
        client.get_columns("k1")
    assert "after the tenant had accepted it" in caught.value.message
    assert client.auth.refusals_retried == 6


def test_auto_tries_the_next_form_when_the_first_fails_with_a_500(loopback, make_client):
    """Found by a probe: a tenant answering the Bearer form with HTTP 500 ("jwt malformed") and
    taking the bare key failed the run as an outage ("the BigID server is overloaded"), the bare
    key never tried."""
    loopback.reset(tenant("raw", refuse=Reply(500, {"message": "jwt malformed"})))
    client = make_client(loopback.url, token="KEY-1234", max_retries=1)
    assert len(client.list_clusters()) == 1 and client.auth_scheme_used == "raw"
    forms = [r.authorization for r in loopback.seen]
    assert forms == ["Bearer KEY-1234", "KEY-1234", "KEY-1234"]  # about the header: not retried
    # a real outage (its message not about the credentials): retried, then said; no other form is
    # tried (a review: the outage took twice as long to report, and could leave the wrong form)
    loopback.reset(lambda request: Reply(500, {"message": "internal error"}))
    with pytest.raises(ApiError) as caught:
        make_client(loopback.url, token="KEY-1234", max_retries=1).list_clusters()
    assert caught.value.status == 500 and caught.value.message.startswith(
        "GET /api/v1/clusters failed: HTTP 500"
    )
    assert {r.authorization for r in loopback.seen} == {"Bearer KEY-1234"}
    # once a form was accepted, a 500 is an outage again: no other form is tried
    loopback.reset(tenant("bearer"))
    client = make_client(loopback.url, token="KEY-1234", max_retries=1)
    client.list_clusters()
    loopback.reset(lambda request: Reply(500, {"message": "internal error"}))
    with pytest.raises(ApiError):
        client.list_clusters()
    assert {r.authorization for r in loopback.seen} == {"Bearer KEY-1234"}


def test_a_passing_401_on_an_endpoints_first_request_is_asked_again_in_the_same_form(loopback, make_client):
    """Found by a re-probe: the first columns request of each cluster met one 401; the client took
    it for Bearer refused there, switched to the bare key, was refused, and the run failed with 0
    columns although Bearer worked."""
    handler = tenant("bearer")
    refused = set()

    def blip(request: Request) -> Reply:
        cluster = request.query.get("clusterId")
        if request.path == COLUMNS_PATH and cluster not in refused:
            refused.add(cluster)
            return Reply(401, {"message": "Unauthorized"})
        return handler(request)

    loopback.reset(blip)
    client = make_client(loopback.url, token="KEY-1234")
    client.list_clusters()
    assert [c.fullyQualifiedName for c, _ in client.iter_columns("k1")] == ["a.b"]
    assert client.auth.scheme_used == "bearer"
    assert {r.authorization for r in loopback.seen} == {"Bearer KEY-1234"}
