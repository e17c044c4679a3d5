"""Edges of the BigID client that a wrong implementation would pass unnoticed elsewhere.

Each test pins a documented behaviour (docs/fetch.md) that the other tests did not hold: changing the
client by hand (a page rule moved by one, a status dropped from a set, a default changed, an alias
removed) left them all passing.
"""

from __future__ import annotations

import base64
import json
import time
from datetime import UTC, datetime, timedelta

import pytest
from pydantic import AliasChoices

from auditor.bigid import auth as auth_module
from auditor.bigid import client as client_module
from auditor.bigid import models
from auditor.bigid.client import CLUSTERS_PATH, BigIDClient, ClientOptions
from auditor.bigid.paging import PagingStats, RawPage, paginate
from auditor.errors import ApiError, AuthError

from .conftest import Reply, Request

CLUSTER = [{"id": "k1", "name": "one", "size": 1}]


def _listing(request: Request) -> Reply:
    return Reply(200, CLUSTER if request.query.get("skip") == "0" else [])


# -- paging -------------------------------------------------------------------------------------------


def test_a_full_page_reaching_an_understated_total_still_asks_for_the_next():
    """fetch.md: the total reached on a full page is not trusted; the next page is asked for."""
    rows = ["r0", "r1", "r2", "r3", "r4"]  # the server says 4 in its total and in the cluster's size
    stats = PagingStats()
    pages = paginate(
        lambda skip, limit: RawPage(rows[skip : skip + limit], total=4),
        limit=2,
        key=lambda row: row,
        stats=stats,
        expected=4,
    )
    assert [row for page in pages for row in page] == rows


def test_a_listing_in_progress_takes_up_a_smaller_page_size_found_beside_it():
    asked: list[int] = []
    ceiling: list[int | None] = [None]

    def fetch(skip: int, limit: int) -> RawPage:
        asked.append(limit)
        ceiling[0] = 250  # another listing had to halve its pages meanwhile
        return RawPage([f"r{i}" for i in range(skip, min(skip + limit, 2500))], total=2500)

    for _ in paginate(
        fetch, limit=1000, key=lambda row: row, stats=PagingStats(), ceiling=lambda: ceiling[0]
    ):
        pass
    assert asked[0] == 1000 and set(asked[1:]) == {250}


# -- statuses -----------------------------------------------------------------------------------------


def test_a_422_for_clusterId_falls_back_to_cluster_id(loopback, make_client):
    def handler(request: Request) -> Reply:
        if "clusterId" in request.query:
            return Reply(422, {"message": "clusterId is not allowed"})
        if request.query.get("cluster_id") == "k1":
            return Reply(200, {"results": [{"fullyQualifiedName": "a.b"}], "totalCount": 1})
        return Reply(200, {"results": [], "totalCount": 0})

    loopback.reset(handler)
    client = make_client(loopback.url, auth_scheme="bearer")
    assert [column.fullyQualifiedName for column, _ in client.iter_columns("k1")] == ["a.b"]
    assert client.cluster_id_param == "cluster_id"


def test_a_422_on_the_listing_says_the_filter_could_not_be_processed(loopback, make_client):
    loopback.reset(lambda request: Reply(422, {"message": "bad filter"}))
    with pytest.raises(ApiError) as raised:
        make_client(loopback.url, auth_scheme="bearer").list_clusters(filter="x=")
    assert raised.value.message.startswith("the API could not process the request (")
    assert "HTTP 422" in raised.value.message and "--filter" in raised.value.hint


def test_a_300_is_a_redirect_not_followed(loopback, make_client):
    loopback.reset(lambda request: Reply(300, {}, {"Location": "/elsewhere"}))
    with pytest.raises(ApiError) as raised:
        make_client(loopback.url, auth_scheme="bearer").list_clusters()
    assert "(HTTP 300); redirects are not followed" in raised.value.message


# -- retries ------------------------------------------------------------------------------------------


def test_a_failing_server_s_own_words_are_in_the_final_error_and_its_html_is_not(loopback, make_client):
    """Found by an outside probe: a gateway answering one endpoint with `500 {"message": "jwt
    malformed"}` failed every cluster with "HTTP 500 (6 attempts …)", the cause nowhere. The JSON
    answer's message now follows the status (masked where it quotes the key); an HTML page's
    text does not."""
    key = "Tk-9f3a2b7c1d"
    for reply, said in (
        (Reply(500, {"status": "error", "message": "jwt malformed"}), "HTTP 500: jwt malformed"),
        (Reply(502, {"error": {"detail": f"refused key {key}"}}), "HTTP 502: refused key ***"),
        (Reply(503, b"<html><body><h1>503 Service Unavailable</h1></body></html>"), "HTTP 503"),
        (Reply(504, {}), "HTTP 504"),
    ):
        loopback.reset(lambda request, reply=reply: reply)
        client = make_client(loopback.url, token=key, auth_scheme="bearer", max_retries=1)
        with pytest.raises(ApiError) as caught:
            client.list_clusters()
        assert caught.value.message.startswith(f"GET {CLUSTERS_PATH} failed: {said} (2 attempts in "), reply


def test_by_default_a_request_is_tried_six_times_with_a_doubling_backoff(loopback, monkeypatch):
    """fetch.md: at most 5 retries, waits of up to 0.5 s, 1 s, 2 s ... (full jitter)."""
    waits: list[float] = []
    monkeypatch.setattr(client_module.random, "uniform", lambda low, high: high)
    loopback.reset(lambda request: Reply(503, {"message": "down"}))
    client = BigIDClient(ClientOptions(url=loopback.url, token="SAMPLE", auth_scheme="bearer"))
    monkeypatch.setattr(client._closing, "wait", lambda delay: waits.append(delay) or False)
    try:
        with pytest.raises(ApiError, match=r"HTTP 503: down \(6 attempts"):
            client.list_clusters()
    finally:
        client.close()
    assert (len(loopback.seen), waits) == (6, [0.5, 1.0, 2.0, 4.0, 8.0])


def test_the_backoff_is_capped_at_30_seconds(loopback, monkeypatch):
    waits: list[float] = []
    monkeypatch.setattr(client_module.random, "uniform", lambda low, high: high)
    loopback.reset(lambda request: Reply(503, {"message": "down"}))
    client = BigIDClient(
        ClientOptions(
            url=loopback.url, token="SAMPLE", auth_scheme="bearer", backoff_base=10, max_retry_time=1e6
        )
    )
    monkeypatch.setattr(client._closing, "wait", lambda delay: waits.append(delay) or False)
    try:
        with pytest.raises(ApiError):
            client.list_clusters()
    finally:
        client.close()
    assert waits == [10.0, 20.0, 30.0, 30.0, 30.0]


def test_a_503_with_retry_after_waits_that_long(loopback, make_client):
    replies = iter([Reply(503, {}, {"Retry-After": "0.3"})])
    loopback.reset(lambda request: next(replies, None) or _listing(request))
    started = time.monotonic()
    assert [c.id for c, _ in make_client(loopback.url, auth_scheme="bearer").list_clusters()] == ["k1"]
    assert time.monotonic() - started >= 0.3


def test_retry_after_is_capped_at_a_minute_and_read_as_a_date_in_any_zone_spelling():
    client = BigIDClient(ClientOptions(url="http://127.0.0.1:9", token="SAMPLE"))
    try:
        assert client._retry_after("120") == 60.0
        soon = (datetime.now(UTC) + timedelta(seconds=30)).strftime("%a, %d %b %Y %H:%M:%S -0000")
        assert 25 < client._retry_after(soon) <= 30
        assert (client._retry_after(" 7 "), client._retry_after("0"), client._retry_after("1.5")) == (
            7,
            0,
            1.5,
        )
        # no seconds and no date (an outside probe): "-5" meant retrying at once, twelve times, a
        # server asking to slow down, and "1e3" a minute's wait each time, past the request's budget;
        # both now leave the usual backoff to apply, as the docs say
        for bad in ("-5", "+5", "1e3", "0x10", ".5", "5.", "inf", "nan", "1e400", "5 s", "soon", ""):
            assert client._retry_after(bad) is None, bad
    finally:
        client.close()


# -- session tokens -----------------------------------------------------------------------------------


def _jwt(payload: dict) -> str:
    def part(data: dict) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()

    return f"{part({'alg': 'HS256'})}.{part(payload)}.c2ln"


def _exchanging(loopback, token_for):
    issued: list[str] = []

    def handler(request: Request) -> Reply:
        if request.path == "/api/v1/refresh-access-token":
            issued.append(token_for(len(issued) + 1))
            return Reply(200, {"success": True, "systemToken": issued[-1]})
        if request.path == CLUSTERS_PATH:
            return _listing(request)
        return Reply(200, {"results": [{"fullyQualifiedName": "a.b"}], "totalCount": 1})

    loopback.reset(handler)
    return issued


def test_a_short_lived_session_token_is_used_for_most_of_its_life(loopback, make_client):
    """A 60-second token is renewed a tenth of its life before it ends, not 2 minutes before."""
    issued = _exchanging(
        loopback, lambda n: _jwt({"type": "access-token", "exp": int(time.time()) + 60, "n": n})
    )
    client = make_client(loopback.url, token="user-token-0123456789", auth_scheme="refresh")
    client.list_clusters()
    list(client.iter_columns("k1"))
    assert len(issued) == 1


def test_a_session_token_without_expiry_is_renewed_after_an_hour(loopback, make_client):
    issued = _exchanging(loopback, lambda n: f"session-token-{n}")
    client = make_client(loopback.url, token="user-token-0123456789", auth_scheme="refresh")
    client.list_clusters()
    client.auth._session.obtained_at -= auth_module.NO_EXP_LIFETIME + 1
    client.list_clusters()
    assert issued == ["session-token-1", "session-token-2"]
    assert loopback.seen[-1].authorization == "session-token-2"


def test_a_session_renewal_refused_mid_run_says_the_key_was_accepted_before(loopback, make_client):
    """A user token under ``auto``: its session worked, then the renewal was refused (the token was
    revoked). That was worded "the API key is missing or invalid", as for a key never accepted."""
    issued = _exchanging(loopback, lambda n: f"session-token-{n}")
    handler = loopback.handler

    def revoked_after_one(request: Request) -> Reply:
        if request.path == "/api/v1/refresh-access-token" and issued:
            return Reply(401, {"status": "error", "message": "Unauthorized"})
        return handler(request)

    loopback.reset(revoked_after_one)
    user_token = _jwt({"type": "refresh-token", "n": 0})
    client = make_client(loopback.url, token=user_token, max_retries=0)
    client.list_clusters()
    client.auth._session.obtained_at -= auth_module.NO_EXP_LIFETIME + 1  # due for renewal
    with pytest.raises(AuthError) as refused:
        client.list_clusters()
    assert refused.value.message == (
        "the API key was refused (HTTP 401 on GET /api/v1/refresh-access-token) after the tenant had "
        "accepted it (auth scheme refresh): it expired or was revoked during the snapshot"
    )


# -- payload spellings --------------------------------------------------------------------------------

SAMPLES = {
    "id": "k9",
    "name": "n",
    "createdAt": "2024-01-01T00:00:00Z",
    "fullyQualifiedName": "s.t.c",
    "columnName": "c",
    "businessAttribute": "Email",
    "tableName": "t",
    "source": "pg",
    "isPrimary": True,
    "dataType": "varchar",
    "attributes": [{"attribute_name": "Email", "rank": "High"}],
    "tagId": "t-1",
    "valueId": "v-1",
    "isMutuallyExclusive": True,
    "tagName": "sensitivity",
    "tagValue": "high",
    "attribute_original_name": "E-mail",
    "attribute_name": "Email",
    "rank": "High",
    "calc_confidence_level": 0.9,
    "attribute_type": "classifier",
    "attribute_id": "a-1",
}


def _parsed(model: type, alias: str, value):
    if model is models.Cluster:
        record = (
            {"id": "k1", alias: value}
            if alias not in ("id", "clusterId", "_id", "cluster_id")
            else {alias: value}
        )
        return models.parse_cluster(record)
    if model is models.Column:
        fqn = (
            {}
            if alias in ("fullyQualifiedName", "fully_qualified_name", "fqn")
            else {"fullyQualifiedName": "x"}
        )
        return models.parse_column({**fqn, alias: value})
    key = "tags" if model is models.Tag else "attributes"
    return getattr(models.parse_column({"fullyQualifiedName": "x", key: [{alias: value}]}), key)[0]


# The spellings the client reads besides each field's usual one (docs/fetch.md, reference §9).
SPELLINGS = {
    ("Cluster", "id"): ("clusterId", "_id", "cluster_id"),
    ("Cluster", "name"): ("clusterName", "cluster_name"),
    ("Cluster", "createdAt"): ("created_at", "creationDate"),
    ("Column", "fullyQualifiedName"): ("fully_qualified_name", "fqn"),
    ("Column", "columnName"): ("column_name", "fieldName"),
    ("Column", "businessAttribute"): ("business_attribute",),
    ("Column", "tableName"): ("objectName", "table_name"),
    ("Column", "source"): ("dataSourceName", "source_name"),
    ("Column", "isPrimary"): ("is_primary",),
    ("Column", "dataType"): ("fieldType", "data_type"),
    ("Column", "attributes"): ("attributeDetails", "attribute_details", "fieldClassifications"),
    ("Tag", "tagId"): ("tag_id",),
    ("Tag", "valueId"): ("value_id",),
    ("Tag", "isMutuallyExclusive"): ("is_mutually_exclusive",),
    ("Tag", "tagName"): ("tag_name", "name"),
    ("Tag", "tagValue"): ("tag_value", "value"),
    ("Attribute", "attribute_original_name"): ("attributeOriginalName",),
    ("Attribute", "attribute_name"): ("attributeName", "name", "classificationName"),
    ("Attribute", "rank"): ("ranks",),
    ("Attribute", "calc_confidence_level"): ("calcConfidenceLevel", "confidence_level"),
    ("Attribute", "attribute_type"): ("attributeType", "type"),
    ("Attribute", "attribute_id"): ("attributeId",),
}


def test_the_spellings_listed_are_all_the_models_read():
    read = {
        (model.__name__, name): tuple(info.validation_alias.choices[1:])
        for model in (models.Cluster, models.Column, models.Tag, models.Attribute)
        for name, info in model.model_fields.items()
        if isinstance(info.validation_alias, AliasChoices)
    }
    assert read == SPELLINGS


@pytest.mark.parametrize(
    ("model", "field", "alias"),
    [
        (getattr(models, model), field, alias)
        for (model, field), aliases in SPELLINGS.items()
        for alias in aliases
    ],
)
def test_every_spelling_of_a_field_reads_as_its_usual_one(model, field, alias):
    canonical = getattr(
        _parsed(model, field if field != "attributes" else "attributes", SAMPLES[field]), field
    )
    assert canonical not in (None, [], "")
    assert getattr(_parsed(model, alias, SAMPLES[field]), field) == canonical
