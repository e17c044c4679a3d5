"""Every endpoint and error body over real HTTP, paging against the ground truth, filters, envelopes."""

from __future__ import annotations

import base64
import socket

import pytest
import requests

from auditor.sandbox.server import CLUSTERS_PATH as CLUSTERS
from auditor.sandbox.server import SIMILAR_PATH as SIMILAR


def test_clusters_is_the_tutorials_bare_array(sandbox, api_for):
    server = sandbox()
    response = api_for(server).get(CLUSTERS)
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/json; charset=utf-8"
    assert response.headers["Connection"] == "keep-alive"
    assert response.json() == list(server.dataset.clusters())


def test_similar_columns_is_results_and_total_count(sandbox, api_for):
    server = sandbox()
    cluster = next(server.dataset.clusters())
    body = api_for(server).get(SIMILAR, clusterId=cluster["id"]).json()
    assert set(body) == {"results", "totalCount"}
    assert body["totalCount"] == cluster["size"] == len(body["results"])
    assert body["results"] == list(server.dataset.columns(cluster["id"]))


def test_paging_with_limit_and_skip_matches_the_truth(sandbox, api_for):
    server = sandbox(clusters=5, columns=400, epoch=1)
    api = api_for(server)
    for cluster in server.dataset.clusters():
        truth = list(server.dataset.columns(cluster["id"]))
        pages = []
        for skip in range(0, len(truth) + 7, 7):
            body = api.get(SIMILAR, clusterId=cluster["id"], limit=7, skip=skip).json()
            assert body["totalCount"] == len(truth)
            pages.extend(body["results"])
        assert pages == truth
    clusters = list(server.dataset.clusters())
    assert api.get(CLUSTERS, limit=2, skip=1).json() == clusters[1:3]
    assert api.get(CLUSTERS, skip=100).json() == []
    assert api.get(SIMILAR, clusterId=clusters[0]["id"], limit=0).json() == {
        "results": [],
        "totalCount": clusters[0]["size"],
    }
    # found by a probe: a limit past sys.maxsize was an internal error (500) of the server
    huge = api.get(CLUSTERS, limit=9223372036854775807)
    assert huge.status_code == 400
    assert "limit must be at most 2147483647" in huge.text


def test_default_limit_is_ten_thousand_and_ignore_limit_lifts_it(sandbox, api_for):
    server = sandbox(clusters=1, columns=10_050)
    api = api_for(server)
    cid = next(server.dataset.cluster_ids())
    assert len(api.get(SIMILAR, clusterId=cid).json()["results"]) == 10_000
    assert len(api.get(SIMILAR, clusterId=cid, ignoreLimit="true").json()["results"]) == 10_050


@pytest.mark.parametrize("bad", ["", "abc123def456", "zz" * 12, "0" * 25, "not an id"])
def test_malformed_cluster_id_is_400(sandbox, api_for, bad):
    response = api_for(sandbox()).get(SIMILAR, clusterId=bad)
    assert response.status_code == 400
    assert response.json() == {"error": "Cluster ID is invalid"}


def test_missing_cluster_id_is_400(sandbox, api_for):
    response = api_for(sandbox()).get(SIMILAR, limit=5)
    assert (response.status_code, response.json()) == (400, {"error": "Cluster ID is invalid"})


def test_unknown_cluster_is_404(sandbox, api_for):
    server = sandbox(epoch=1)
    api = api_for(server)
    response = api.get(SIMILAR, clusterId="65b2f0c4a91e3d0012ab77e1")
    assert (response.status_code, response.json()) == (
        404,
        {"error": "Cluster 65b2f0c4a91e3d0012ab77e1 was not found"},
    )
    # a cluster removed by drift is gone too
    removed = set(server.dataset.cluster_ids()) ^ set(sandbox(epoch=0).dataset.cluster_ids())
    gone = next(cid for cid in removed if cid not in set(server.dataset.cluster_ids()))
    assert api.get(SIMILAR, clusterId=gone).status_code == 404
    # ids are case-insensitive hex, like Mongo ObjectIds
    cid = next(server.dataset.cluster_ids())
    assert api.get(SIMILAR, clusterId=cid.upper(), limit=1).status_code == 200


def test_unauthorized_is_plain_text_401(sandbox, api_for):
    api = api_for(sandbox())
    for token, scheme in ((None, None), ("wrong", "Bearer"), ("SAMPLE", None), ("SAMPLE", "Basic")):
        response = api.get(CLUSTERS, token=token, scheme=scheme)
        assert (response.status_code, response.text) == (401, "Unauthorized")


def test_forbidden_token_is_403(sandbox, api_for):
    server = sandbox(forbidden_token="READONLY-NOTHING")
    response = api_for(server).get(CLUSTERS, token="READONLY-NOTHING")
    assert response.status_code == 403
    assert response.json() == {"error": "Forbidden: this token lacks permission for cluster analysis"}


def test_unknown_routes_and_methods_are_404(sandbox):
    server = sandbox()
    headers = {"Authorization": "Bearer SAMPLE"}
    response = requests.get(server.url + "/api/v1/scans", headers=headers, timeout=10)
    assert (response.status_code, response.json()) == (404, {"error": "Cannot GET /api/v1/scans"})
    response = requests.post(server.url + "/api/v1/refresh-access-token", headers=headers, timeout=10)
    assert (response.status_code, response.json()) == (
        404,
        {"error": "Cannot POST /api/v1/refresh-access-token"},
    )


def test_fail_rate_500_has_the_tutorial_body(sandbox, api_for):
    server = sandbox(fail_rate=0.99, max_fault_streak=1)
    response = api_for(server).get(CLUSTERS)
    assert response.status_code == 500
    assert response.json() == {"status": "error", "message": "Server error", "errors": [{}]}


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        ("size=20", lambda c: c["size"] == 20),
        ("size>60", lambda c: c["size"] > 60),
        ("size<10 AND status=Archived", lambda c: c["size"] < 10 and c["status"] == "Archived"),
        ('severity != "High"', lambda c: c["severity"] != "High"),
        (
            'labels="PII" AND labels = "Confidential"',
            lambda c: {"PII", "Confidential"} <= set(c.get("labels") or []),
        ),
        (
            '(size > to_number(50)) OR name = "Phone Numbers"',
            lambda c: c["size"] > 50 or c["name"] == "Phone Numbers",
        ),
        ('createdAt > "2024-06-01"', lambda c: (c["createdAt"] or "") > "2024-06-01"),
        ("NOT status = active", lambda c: c["status"] != "Active"),
    ],
)
def test_cluster_filters(sandbox, api_for, expr, expected):
    server = sandbox(clusters=60, columns=3000)
    got = api_for(server).get(CLUSTERS, filter=expr).json()
    truth = [c for c in server.dataset.clusters() if expected(c)]
    assert got == truth
    assert truth  # every expression selects something in this data set


@pytest.mark.parametrize(
    ("expr", "message"),
    [
        ("size>", "the filter ends too early"),
        ("size 20", "expected an operator after 'size', found '20'"),
        ("(size=1", "a parenthesis is not closed"),
        ('name="abc', "unterminated double quote at character 6"),
        ("owner=bob", "unknown field 'owner'"),
        ("size=1 size=2", "unexpected 'size' after a complete expression"),
    ],
)
def test_unparseable_filters_are_400_with_a_json_error(sandbox, api_for, expr, message):
    server = sandbox()
    response = api_for(server).get(CLUSTERS, filter=expr)
    assert response.status_code == 400
    assert response.json()["error"].startswith("Filter is invalid: " + message)
    cid = next(server.dataset.cluster_ids())
    response = api_for(server).get(SIMILAR, clusterId=cid, filter=expr)
    assert response.status_code == 400


def test_column_filter_search_and_sort(sandbox, api_for):
    server = sandbox(clusters=10, columns=2000)
    api = api_for(server)
    cluster = max(server.dataset.clusters(), key=lambda c: c["size"])
    truth = list(server.dataset.columns(cluster["id"]))
    source = truth[0]["source"]
    body = api.get(SIMILAR, clusterId=cluster["id"], filter=f'source="{source}"', limit=5, skip=2).json()
    matching = [c for c in truth if c["source"] == source]
    assert body == {"results": matching[2:7], "totalCount": len(matching)}
    tagged = [
        c
        for c in truth
        if any(t["tagName"] == "sensitivity" and t["tagValue"].lower() == "high" for t in c.get("tags") or [])
    ]
    body = api.get(SIMILAR, clusterId=cluster["id"], filter="tags.sensitivity=high").json()
    assert body["results"] == tagged and body["totalCount"] == len(tagged)
    needle = truth[3]["tableName"][:6].upper()
    body = api.get(SIMILAR, clusterId=cluster["id"], searchText=needle).json()
    assert truth[3] in body["results"]
    assert all(
        needle.lower() in (c["fullyQualifiedName"] + (c["businessAttribute"] or "")).lower()
        or any(needle.lower() in a["attribute_name"].lower() for a in c.get("attributes") or [])
        for c in body["results"]
    )
    body = api.get(SIMILAR, clusterId=cluster["id"], sort="-columnName", limit=10).json()
    names = [c["columnName"].lower() for c in truth]
    assert [c["columnName"].lower() for c in body["results"]] == sorted(names, reverse=True)[:10]
    assert api.get(SIMILAR, clusterId=cluster["id"], sort="nope").status_code == 400


def test_sample_is_deterministic_and_a_subset(sandbox, api_for):
    server = sandbox()
    api = api_for(server)
    cluster = max(server.dataset.clusters(), key=lambda c: c["size"])
    first = api.get(SIMILAR, clusterId=cluster["id"], sample=5).json()
    assert first == api.get(SIMILAR, clusterId=cluster["id"], sample=5).json()
    assert first["totalCount"] == len(first["results"]) == 5
    truth = list(server.dataset.columns(cluster["id"]))
    assert all(row in truth for row in first["results"])
    assert api.get(SIMILAR, clusterId=cluster["id"], sample=0).status_code == 400


def test_offset_key_continues_where_the_last_page_stopped(sandbox, api_for):
    server = sandbox()
    api = api_for(server)
    cluster = max(server.dataset.clusters(), key=lambda c: c["size"])
    truth = list(server.dataset.columns(cluster["id"]))
    rows, key = [], ""
    while True:
        body = api.get(SIMILAR, clusterId=cluster["id"], limit=13, offsetKey=key).json()
        rows.extend(body["results"])
        key = body["offset"]["offsetKey"]
        if not body["results"]:
            break
    assert rows == truth
    bad = base64.urlsafe_b64encode(b"nope").decode()
    response = api.get(SIMILAR, clusterId=cluster["id"], offsetKey=bad)
    assert (response.status_code, response.json()) == (400, {"error": "offsetKey is invalid"})


@pytest.mark.parametrize(("name", "value"), [("limit", "ten"), ("skip", "-1"), ("ignoreLimit", "maybe")])
def test_bad_parameters_are_400(sandbox, api_for, name, value):
    server = sandbox()
    cid = next(server.dataset.cluster_ids())
    response = api_for(server).get(SIMILAR, clusterId=cid, **{name: value})
    assert response.status_code == 400
    assert name in response.json()["error"]


def test_envelopes(sandbox, api_for):
    for envelope in ("results", "data", "status"):
        server = sandbox(envelope=envelope)
        api = api_for(server)
        clusters = list(server.dataset.clusters())
        cid = clusters[0]["id"]
        columns = list(server.dataset.columns(cid))
        got_clusters = api.get(CLUSTERS).json()
        got_columns = api.get(SIMILAR, clusterId=cid).json()
        if envelope == "results":
            assert got_clusters == {"results": clusters, "totalCount": len(clusters)}
            assert got_columns == {"results": columns, "totalCount": len(columns)}
        elif envelope == "data":
            assert got_clusters == {"data": {"clusters": clusters}}
            assert got_columns == {"data": columns}
        else:
            assert got_clusters == {
                "status": "success",
                "statusCode": 200,
                "data": {"clusters": clusters, "totalCount": len(clusters)},
                "message": None,
            }
            assert got_columns == {
                "status": "success",
                "statusCode": 200,
                "data": {"results": columns, "totalCount": len(columns)},
                "message": None,
            }


def test_aliases_serve_real_tenant_field_names(sandbox, api_for):
    server = sandbox(aliases=True)
    api = api_for(server)
    clusters = api.get(CLUSTERS).json()
    assert clusters == list(server.dataset.clusters())
    assert all("clusterId" in c and "id" not in c and "clusterName" in c for c in clusters)
    cid = clusters[0]["clusterId"]
    body = api.get(SIMILAR, cluster_id=cid, limit=3).json()
    assert body["results"] == list(server.dataset.columns(cid, 0, 3))
    row = body["results"][0]
    assert {"objectName", "fieldType"} <= set(row) and not {"tableName", "dataType", "attributes"} & set(row)
    assert api.get(SIMILAR, clusterId=cid, limit=1).status_code == 200
    # without aliases the api-evangelist parameter name is not understood
    plain = sandbox()
    response = api_for(plain).get(SIMILAR, cluster_id=next(plain.dataset.cluster_ids()))
    assert (response.status_code, response.json()) == (400, {"error": "Cluster ID is invalid"})


def test_string_counts(sandbox, api_for):
    server = sandbox(string_counts=True, envelope="results")
    api = api_for(server)
    body = api.get(CLUSTERS).json()
    assert body["totalCount"] == "50" and all(isinstance(c["size"], str) for c in body["results"])
    cid = body["results"][0]["id"]
    assert api.get(SIMILAR, clusterId=cid, limit=1).json()["totalCount"] == body["results"][0]["size"]


def test_keep_alive_serves_many_requests_on_one_connection(sandbox):
    server = sandbox()
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as conn:
        request = b"GET /api/v1/clusters?limit=1 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer SAMPLE\r\n\r\n"
        data = b""
        for _ in range(3):
            conn.sendall(request)
        while data.count(b"HTTP/1.1 200 OK") < 3:
            chunk = conn.recv(65536)
            assert chunk
            data += chunk
    assert server.stats.count(CLUSTERS, 200) == 3


def test_stats_count_requests_by_path_and_status(sandbox, api_for):
    server = sandbox()
    api = api_for(server)
    api.get(CLUSTERS)
    api.get(CLUSTERS, token="bad")
    api.get(SIMILAR, clusterId="x")
    assert server.stats.count(CLUSTERS) == 2
    assert server.stats.count(CLUSTERS, 401) == 1
    assert server.stats.by_status() == {200: 1, 401: 1, 400: 1}
    assert server.stats.rows[CLUSTERS] == 50
    assert server.stats.as_dict()["requests"]["/api/v1/clusters 200"] == 1


def test_content_type_knob(sandbox, api_for):
    server = sandbox(content_type="text/html; charset=utf-8")
    response = api_for(server).get(CLUSTERS, limit=1)
    assert response.headers["Content-Type"] == "text/html; charset=utf-8"
    assert response.json() == list(server.dataset.clusters())[:1]


def test_the_docs_example_id_is_the_first_cluster():
    from pathlib import Path

    from auditor.sandbox import Dataset

    first = next(Dataset().cluster_ids())
    assert first == "643a490f575122cd5b000000"
    docs = Path(__file__).resolve().parents[2] / "docs" / "sandbox.md"
    assert f"clusterId={first}" in docs.read_text(encoding="utf-8")


def test_concurrent_clients_see_consistent_pages(sandbox):
    from concurrent.futures import ThreadPoolExecutor

    server = sandbox(clusters=20, columns=4000, epoch=2)
    truth = {cid: list(server.dataset.columns(cid)) for cid in server.dataset.cluster_ids()}

    def fetch(cid: str) -> list[dict]:
        rows: list[dict] = []
        with requests.Session() as session:
            session.headers["Authorization"] = "Bearer SAMPLE"
            while True:
                body = session.get(
                    server.url + SIMILAR,
                    params={"clusterId": cid, "limit": 37, "skip": len(rows)},
                    timeout=30,
                ).json()
                if not body["results"]:
                    return rows
                rows.extend(body["results"])

    with ThreadPoolExecutor(8) as pool:
        got = dict(zip(truth, pool.map(fetch, truth), strict=True))
    assert got == truth


def test_ipv6_loopback():
    from auditor.errors import ConfigError
    from auditor.sandbox import SandboxServer

    try:
        server = SandboxServer(host="::1").start()
    except ConfigError as exc:
        pytest.skip(f"no IPv6 loopback here: {exc}")
    try:
        assert server.url.startswith("http://[::1]:")
        response = requests.get(server.url + CLUSTERS, headers={"Authorization": "Bearer SAMPLE"}, timeout=10)
        assert response.status_code == 200
    finally:
        server.stop()
