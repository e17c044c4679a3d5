"""Edges of the sandbox found by hand mutation testing: boundaries of the paging parameters, the
tutorial's error bodies, filter semantics, search, sort and the header forms, over real HTTP."""

from __future__ import annotations

import http.client

import pytest

from auditor.sandbox.server import CLUSTERS_PATH as CLUSTERS
from auditor.sandbox.server import REFRESH_PATH as REFRESH
from auditor.sandbox.server import SIMILAR_PATH as SIMILAR


def _biggest(server):
    return max(server.dataset.clusters(), key=lambda c: c["size"])


# -- errors -------------------------------------------------------------------------------------


def test_unknown_cluster_404_names_the_id_as_sent(sandbox, api_for):
    # Tutorial: 404 | { "error": "Scan 1234 was not found" } | Scan ID doesn't exist
    api = api_for(sandbox(epoch=1))
    response = api.get(SIMILAR, clusterId="65B2F0C4A91E3D0012AB77E1")
    assert (response.status_code, response.json()) == (
        404,
        {"error": "Cluster 65B2F0C4A91E3D0012AB77E1 was not found"},
    )


def test_refresh_with_a_wrong_key_is_401_with_a_message(sandbox, api_for):
    # Tutorial: 401 | Unauthorized | API key missing or invalid
    api = api_for(sandbox(auth="refresh"))
    response = api.get(REFRESH, token="not-the-user-token", scheme=None)
    assert (response.status_code, response.json()) == (401, {"message": "Refresh token not valid"})


def test_a_trailing_slash_is_the_same_route(sandbox, api_for):
    server = sandbox(clusters=3)
    response = api_for(server).get(CLUSTERS + "/")
    assert response.status_code == 200
    assert response.json() == list(server.dataset.clusters())


# -- limit, skip, ignoreLimit, sample ---------------------------------------------------------------


def test_limit_bounds_are_exact(sandbox, api_for):
    # Tutorial: limit | number | Maximum number of results to return. | 10000 |
    server = sandbox(clusters=3, columns=60)
    api = api_for(server)
    cluster = _biggest(server)
    truth = list(server.dataset.columns(cluster["id"]))
    body = api.get(SIMILAR, clusterId=cluster["id"], limit=2147483647, skip=0).json()
    known = [r for r in truth if r.get("isPrimary") is not None]
    assert body == {"results": known, "totalCount": len(known)}
    response = api.get(SIMILAR, clusterId=cluster["id"], limit=2147483648)
    assert (response.status_code, response.json()) == (
        400,
        {"error": "limit must be at most 2147483647, not 2147483648"},
    )
    response = api.get(SIMILAR, clusterId=cluster["id"], limit=-1)
    assert (response.status_code, response.json()) == (400, {"error": "limit must be at least 0, not -1"})
    response = api.get(CLUSTERS, skip=2147483648)
    assert (response.status_code, response.json()) == (
        400,
        {"error": "skip must be at most 2147483647, not 2147483648"},
    )


def test_blank_limit_and_skip_mean_their_defaults(sandbox, api_for):
    # Tutorial defaults: limit 10000, skip 0
    server = sandbox(clusters=3, columns=60)
    cluster = _biggest(server)
    truth = list(server.dataset.columns(cluster["id"]))
    body = api_for(server).get(SIMILAR, clusterId=cluster["id"], limit="", skip="").json()
    known = [r for r in truth if r.get("isPrimary") is not None]
    assert body == {"results": known, "totalCount": len(known)}


@pytest.mark.parametrize(("value", "lifted"), [("0", False), ("false", False), ("1", True), ("true", True)])
def test_ignore_limit_spellings(sandbox, api_for, value, lifted):
    # Tutorial: ignoreLimit | boolean | If true, ignores the limit parameter. | false |
    server = sandbox(clusters=3, columns=60)
    cluster = _biggest(server)
    truth = list(server.dataset.columns(cluster["id"]))
    body = api_for(server).get(SIMILAR, clusterId=cluster["id"], limit=3, ignoreLimit=value).json()
    assert body == {"results": truth if lifted else truth[:3], "totalCount": len(truth)}


def test_sample_zero_is_400_and_one_is_one_row(sandbox, api_for):
    # Tutorial: sample | number | Number of columns to randomly sample from the cluster. | null |
    server = sandbox(clusters=3, columns=60)
    api = api_for(server)
    cluster = _biggest(server)
    response = api.get(SIMILAR, clusterId=cluster["id"], sample=0)
    assert (response.status_code, response.json()) == (400, {"error": "sample must be at least 1, not 0"})
    body = api.get(SIMILAR, clusterId=cluster["id"], sample=1).json()
    assert body["totalCount"] == 1 and len(body["results"]) == 1
    assert body["results"][0] in list(server.dataset.columns(cluster["id"]))


def test_filtered_clusters_page_with_skip_and_limit(sandbox, api_for):
    server = sandbox()
    matching = [c for c in server.dataset.clusters() if c["severity"] == "High"]
    assert len(matching) >= 4
    body = api_for(server).get(CLUSTERS, filter="severity=High", skip=1, limit=2).json()
    assert body == matching[1:3]


def test_offset_key_with_a_negative_position_is_400(sandbox, api_for):
    # Tutorial: offsetKey | string | Used for advanced pagination. | "" |
    server = sandbox(clusters=3, columns=60)
    response = api_for(server).get(SIMILAR, clusterId=_biggest(server)["id"], offsetKey="cG9zOi0x")  # pos:-1
    assert (response.status_code, response.json()) == (400, {"error": "offsetKey is invalid"})


# -- slow pages and page caps -------------------------------------------------------------------


def test_slow_pages_above_is_a_strict_bound_and_ignore_limit_is_slow(sandbox, api_for):
    server = sandbox(clusters=3, columns=300, slow_pages_above=50)
    api = api_for(server)
    cid = _biggest(server)["id"]
    truth = list(server.dataset.columns(cid))
    assert api.get(SIMILAR, clusterId=cid, limit=50).json()["results"] == truth[:50]
    assert api.get(SIMILAR, clusterId=cid, limit=51).status_code == 504
    assert api.get(SIMILAR, clusterId=cid, limit=5, ignoreLimit="true").status_code == 504


def test_max_page_caps_a_larger_limit_but_not_a_smaller_one(sandbox, api_for):
    server = sandbox(clusters=3, columns=300, max_page=5)
    api = api_for(server)
    cid = _biggest(server)["id"]
    truth = list(server.dataset.columns(cid))
    assert api.get(SIMILAR, clusterId=cid, limit=3).json() == {"results": truth[:3], "totalCount": len(truth)}
    assert api.get(SIMILAR, clusterId=cid, limit=9).json() == {"results": truth[:5], "totalCount": len(truth)}
    data = sandbox(clusters=3, columns=300, max_page=5, envelope="data")
    assert api_for(data).get(SIMILAR, clusterId=cid, limit=9).json() == {"data": truth[:9]}


def test_a_request_failing_max_fault_streak_times_is_then_served(sandbox, api_for):
    server = sandbox(fail_rate=0.999, max_fault_streak=2)
    api = api_for(server)
    assert [api.get(CLUSTERS, limit=1).status_code for _ in range(3)] == [500, 500, 200]


# -- sort and search ------------------------------------------------------------------------------


def test_sort_by_id_is_the_default_order(sandbox, api_for):
    # Tutorial: sort | string | Field to sort the results by. | _id |
    server = sandbox(clusters=3, columns=60)
    cid = _biggest(server)["id"]
    truth = list(server.dataset.columns(cid))
    body = api_for(server).get(SIMILAR, clusterId=cid, sort="_id", limit=7, skip=2).json()
    assert body == {"results": truth[2:9], "totalCount": len(truth)}


@pytest.mark.parametrize(
    ("sort", "reverse"), [("columnName", False), ("columnName desc", True), ("columnName:desc", True)]
)
def test_sort_directions(sandbox, api_for, sort, reverse):
    server = sandbox(clusters=3, columns=300)
    cid = _biggest(server)["id"]
    truth = list(server.dataset.columns(cid))
    expected = sorted(range(len(truth)), key=lambda i: (truth[i]["columnName"].lower(), i), reverse=reverse)
    body = api_for(server).get(SIMILAR, clusterId=cid, sort=sort).json()
    assert body == {"results": [truth[i] for i in expected], "totalCount": len(truth)}


def test_sort_limit_is_inclusive(sandbox, api_for):
    server = sandbox(clusters=1, columns=40, sort_limit=40)
    cid = next(server.dataset.cluster_ids())
    assert server.dataset.cluster(cid)["size"] == 40
    api = api_for(server)
    assert api.get(SIMILAR, clusterId=cid, sort="columnName").status_code == 200
    small = sandbox(clusters=1, columns=40, sort_limit=39)
    response = api_for(small).get(SIMILAR, clusterId=cid, sort="columnName")
    assert (response.status_code, response.json()) == (
        400,
        {"error": "sort is limited to clusters of at most 39 columns"},
    )


def _hits(row: dict, needle: str) -> bool:
    texts = [row.get(k) for k in ("columnName", "tableName", "fullyQualifiedName", "businessAttribute")]
    texts += [a["attribute_name"] for a in row.get("attributes") or []]
    return any(isinstance(t, str) and needle in t.lower() for t in texts)


def test_search_text_is_case_insensitive_and_covers_attributes(sandbox, api_for):
    # Tutorial: searchText | string | Search across column names and attributes. | "" (empty) |
    server = sandbox(clusters=10, columns=2000)
    api = api_for(server)
    found = None
    for cluster in server.dataset.clusters():
        truth = list(server.dataset.columns(cluster["id"]))
        for row in truth:
            other = {k: v for k, v in row.items() if k != "attributes"}
            for attribute in row.get("attributes") or []:
                name = attribute["attribute_name"]
                if name and not _hits(other, name.lower()):
                    found = found or (cluster["id"], truth, row, name)
    cid, truth, row, attribute = found
    for needle in (attribute.upper(), attribute.lower(), row["columnName"].swapcase()):
        body = api.get(SIMILAR, clusterId=cid, searchText=needle).json()
        expected = [r for r in truth if _hits(r, needle.lower())]
        assert row in expected
        assert body == {"results": expected, "totalCount": len(expected)}


def test_search_text_matches_the_business_attribute(sandbox, api_for):
    server = sandbox(clusters=10, columns=2000)
    for cluster in server.dataset.clusters():
        truth = list(server.dataset.columns(cluster["id"]))
        with_ba = [r for r in truth if r["businessAttribute"]]
        if with_ba:
            break
    needle = with_ba[0]["businessAttribute"]
    body = api_for(server).get(SIMILAR, clusterId=cluster["id"], searchText=needle).json()
    expected = [r for r in truth if _hits(r, needle.lower())]
    assert with_ba[0] in body["results"]
    assert body == {"results": expected, "totalCount": len(expected)}


# -- filters --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expr", "keep"),
    [
        ("size>16", lambda c: c["size"] > 16),
        ("size>=16", lambda c: c["size"] >= 16),
        ("size<16", lambda c: c["size"] < 16),
        ("size<=16", lambda c: c["size"] <= 16),
        ("size>9", lambda c: c["size"] > 9),
        ("labels!=HR", lambda c: "HR" not in (c.get("labels") or [])),
        ("severity=high", lambda c: c["severity"] == "High"),
        ("Size=16", lambda c: c["size"] == 16),
        ("size=16 or size=9", lambda c: c["size"] in (16, 9)),
        ("size>10 and size<300", lambda c: 10 < c["size"] < 300),
        ("not size=16", lambda c: c["size"] != 16),
    ],
)
def test_cluster_filter_semantics(sandbox, api_for, expr, keep):
    # Tutorial: "the following request retrieves all clusters where the size equals 20"
    server = sandbox(clusters=10, columns=2000)
    clusters = list(server.dataset.clusters())
    expected = [c for c in clusters if keep(c)]
    assert 0 < len(expected) < len(clusters)
    assert api_for(server).get(CLUSTERS, filter=expr).json() == expected


@pytest.mark.parametrize(
    ("expr", "message"),
    [
        ("size=16 size=9", "Filter is invalid: unexpected 'size' after a complete expression"),
        ("(size=16", "Filter is invalid: a parenthesis is not closed"),
        ("(size=16 x", "Filter is invalid: a parenthesis is not closed"),
    ],
)
def test_malformed_filters_are_400(sandbox, api_for, expr, message):
    # Tutorial: 400 | { "error": "Scan ID is invalid" } (a JSON "error" body)
    response = api_for(sandbox(clusters=10, columns=2000)).get(CLUSTERS, filter=expr)
    assert (response.status_code, response.json()) == (400, {"error": message})


def test_null_column_field_matches_only_not_equal(sandbox, api_for):
    server = sandbox(clusters=10, columns=2000)
    cid = _biggest(server)["id"]
    truth = list(server.dataset.columns(cid))
    nulls = [r for r in truth if r["businessAttribute"] is None]
    assert nulls
    api = api_for(server)
    assert api.get(SIMILAR, clusterId=cid, filter="businessAttribute!=zzz").json()["totalCount"] == len(truth)
    assert api.get(SIMILAR, clusterId=cid, filter="businessAttribute<zzzz").json()["results"] == [
        r for r in truth if r["businessAttribute"] is not None and r["businessAttribute"] < "zzzz"
    ]


def test_boolean_column_filter(sandbox, api_for):
    server = sandbox(clusters=10, columns=2000)
    cid = _biggest(server)["id"]
    truth = list(server.dataset.columns(cid))
    body = api_for(server).get(SIMILAR, clusterId=cid, filter="isPrimary=true").json()
    expected = [r for r in truth if r.get("isPrimary") is True]
    assert body == {"results": expected, "totalCount": len(expected)}
    # filters.py: ">" compares numbers, or text; a boolean is no number, so "True"/"False" > "0" as text
    body = api_for(server).get(SIMILAR, clusterId=cid, filter="isPrimary>0").json()
    known = [r for r in truth if r.get("isPrimary") is not None]
    assert body == {"results": known, "totalCount": len(known)}


# -- header forms ---------------------------------------------------------------------------------


def _raw_get(server, path: str, authorization: bytes) -> tuple[int, bytes]:
    connection = http.client.HTTPConnection(server.host, server.port, timeout=10)
    try:
        connection.putrequest("GET", path)
        connection.putheader("Authorization", authorization)
        connection.endheaders()
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def test_raw_mode_tolerates_whitespace_around_the_token(sandbox):
    server = sandbox(auth="raw", clusters=2)
    status, _ = _raw_get(server, CLUSTERS, server.key.encode() + b"  ")
    assert status == 200


def test_refresh_mode_data_calls_refuse_the_user_token_itself(sandbox, api_for):
    # Tutorial: 401 | Unauthorized | API key missing or invalid
    server = sandbox(auth="refresh")
    response = api_for(server).get(CLUSTERS, token=server.key, scheme=None)
    assert (response.status_code, response.text) == (401, "Unauthorized")


@pytest.mark.parametrize("auth", ["bearer", "raw"])
def test_sessions_of_the_forbidden_token_are_forbidden(sandbox, api_for, auth):
    server = sandbox(auth=auth, forbidden_token="READONLY-NOTHING")
    api = api_for(server)
    scheme = "Bearer" if auth == "bearer" else None
    session = api.get(REFRESH, token="READONLY-NOTHING", scheme=scheme).json()["systemToken"]
    response = api.get(CLUSTERS, token=session, scheme=scheme)
    assert (response.status_code, response.json()) == (
        403,
        {"error": "Forbidden: this token lacks permission for cluster analysis"},
    )


def test_integer_columns_carry_the_tutorials_data_type_name(sandbox, api_for):
    # Tutorial example row: "dataType": "integer"
    server = sandbox()
    api = api_for(server)
    types = set()
    for cluster in api.get(CLUSTERS).json():
        types |= {r["dataType"] for r in api.get(SIMILAR, clusterId=cluster["id"]).json()["results"]}
    assert "integer" in types and "int" not in types


def test_a_repeated_parameter_takes_its_first_value(sandbox, api_for):
    server = sandbox(clusters=3, columns=60)
    cid = _biggest(server)["id"]
    truth = list(server.dataset.columns(cid))
    response = api_for(server).get(SIMILAR, clusterId=cid, limit=[2, 5])
    assert response.request.url.endswith("limit=2&limit=5")
    assert response.json() == {"results": truth[:2], "totalCount": len(truth)}
