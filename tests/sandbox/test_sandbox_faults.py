"""Fault knobs: deterministic, bounded, and never changing the data a careful client ends up with."""

from __future__ import annotations

import time
from collections import Counter

from auditor.sandbox.server import CLUSTERS_PATH as CLUSTERS
from auditor.sandbox.server import SIMILAR_PATH as SIMILAR


def fetch_until_ok(api, path, attempts=10, **params):
    statuses = []
    for _ in range(attempts):
        response = api.get(path, **params)
        statuses.append(response.status_code)
        if response.status_code == 200 and response.headers["Content-Type"].startswith("application/json"):
            return response, statuses
    raise AssertionError(statuses)


def test_fail_rate_is_deterministic_and_a_retry_gets_through(sandbox, api_for):
    runs = []
    for _ in range(2):
        server = sandbox(fail_rate=0.5)
        api = api_for(server)
        statuses = []
        for cid in server.dataset.cluster_ids():
            response, seen = fetch_until_ok(api, SIMILAR, clusterId=cid, limit=5)
            assert response.json()["results"] == list(server.dataset.columns(cid, 0, 5))
            statuses.append(seen)
        runs.append(statuses)
        assert server.stats.faults["fail"] == sum(len(s) - 1 for s in statuses)
    assert runs[0] == runs[1]
    flat = Counter(s for seen in runs[0] for s in seen)
    assert flat[500] > 10 and flat[200] == 50
    assert max(len(seen) for seen in runs[0]) <= 4  # max_fault_streak 3, then served


def test_fail_statuses_and_gateway_pages(sandbox, api_for):
    server = sandbox(fail_rate=0.9, fail_statuses=(502, 503, 504))
    api = api_for(server)
    seen = {}
    for skip in range(40):
        response = api.get(CLUSTERS, limit=1, skip=skip)
        seen.setdefault(response.status_code, response)
    assert {502, 503, 504} <= set(seen)
    assert seen[502].text.startswith("<html>\r\n<head><title>502 Bad Gateway</title>")
    assert seen[502].headers["Content-Type"] == "text/html"
    assert seen[503].json() == {"status": "error", "message": "Service unavailable", "errors": [{}]}
    assert "504 Gateway Time-out" in seen[504].text
    server = sandbox(gateway_rate=0.9)
    response = api_for(server).get(CLUSTERS)
    assert response.status_code == 200 and response.headers["Content-Type"] == "text/html"
    assert "502 Bad Gateway" in response.text
    assert server.stats.faults["gateway"] == 1
    server = sandbox(blank_rate=0.9)
    response = api_for(server).get(CLUSTERS)
    assert (response.status_code, response.content) == (200, b"")
    assert server.stats.faults["blank"] == 1


def test_throttle_answers_429_with_retry_after(sandbox, api_for):
    server = sandbox(throttle=0.9, retry_after=0)
    api = api_for(server)
    response = api.get(CLUSTERS)
    assert response.status_code == 429
    assert response.headers["Retry-After"] == "0"
    assert response.json() == {"error": "Too many requests", "retryAfter": 0}
    response, statuses = fetch_until_ok(api, CLUSTERS)
    assert statuses[-1] == 200 and set(statuses[:-1]) == {429}
    assert response.json() == list(server.dataset.clusters())
    server = sandbox(throttle=0.9, retry_after=7)
    assert api_for(server).get(CLUSTERS).headers["Retry-After"] == "7"


def test_faults_only_hit_data_calls_after_auth(sandbox, api_for):
    server = sandbox(fail_rate=0.9, throttle=0.5)
    api = api_for(server)
    assert api.get(CLUSTERS, token="wrong").status_code == 401


def test_latency_is_added_to_every_request(sandbox, api_for):
    server = sandbox(latency=0.2)
    api = api_for(server)
    started = time.perf_counter()
    api.get(CLUSTERS, limit=1)
    api.get(CLUSTERS, limit=1)
    assert time.perf_counter() - started >= 0.4


def test_max_page_caps_pages_while_total_count_tells_the_truth(sandbox, api_for):
    server = sandbox(max_page=7, clusters=5, columns=300)
    api = api_for(server)
    for cluster in server.dataset.clusters():
        body = api.get(SIMILAR, clusterId=cluster["id"], limit=50).json()
        assert len(body["results"]) == min(7, cluster["size"])
        assert body["totalCount"] == cluster["size"]
        assert api.all_columns(cluster["id"], limit=50) == list(server.dataset.columns(cluster["id"]))
    # clusters are capped only where a total says more exist
    assert len(api.get(CLUSTERS, limit=3).json()) == 3
    assert len(api.get(CLUSTERS).json()) == 5
    server = sandbox(max_page=2, envelope="results")
    body = api_for(server).get(CLUSTERS, limit=10).json()
    assert len(body["results"]) == 2 and body["totalCount"] == 50


def test_repeat_rate_repeats_rows_across_pages_without_losing_any(sandbox, api_for):
    server = sandbox(repeat_rate=0.1, clusters=3, columns=600)
    api = api_for(server)
    repeats = 0
    for cluster in server.dataset.clusters():
        truth = list(server.dataset.columns(cluster["id"]))
        raw = []
        skip = 0
        while True:
            body = api.get(SIMILAR, clusterId=cluster["id"], limit=25, skip=skip).json()
            assert body["totalCount"] == len(truth)
            if not body["results"]:
                break
            raw.extend(body["results"])
            skip += len(body["results"])
        repeats += len(raw) - len(truth)
        unique = list({r["fullyQualifiedName"]: r for r in raw}.values())
        assert unique == truth
        assert api.all_columns(cluster["id"], limit=25) == truth
    assert 50 < repeats < 70  # about one row in ten is served twice


def test_wrong_totals_over_and_under(sandbox, api_for):
    server = sandbox(wrong_totals=1.0)
    api = api_for(server)
    cluster = next(server.dataset.clusters())
    body = api.get(SIMILAR, clusterId=cluster["id"]).json()
    assert len(body["results"]) == cluster["size"]
    assert body["totalCount"] == cluster["size"] + 1 + cluster["size"] // 10
    server = sandbox(wrong_totals=1.0, totals_direction="under")
    body = api_for(server).get(SIMILAR, clusterId=cluster["id"]).json()
    assert body["totalCount"] == cluster["size"] - 1 - cluster["size"] // 10
    server = sandbox(wrong_totals=0.3)
    api = api_for(server)
    wrong = sum(
        api.get(SIMILAR, clusterId=c["id"], limit=0).json()["totalCount"] != c["size"]
        for c in server.dataset.clusters()
    )
    assert 5 <= wrong <= 25


def test_latency_does_not_serialise_concurrent_requests(sandbox):
    from concurrent.futures import ThreadPoolExecutor

    import requests

    server = sandbox(latency=0.3)

    def one(_n: int) -> int:
        response = requests.get(
            server.url + CLUSTERS, params={"limit": 1}, headers={"Authorization": "Bearer SAMPLE"}, timeout=10
        )
        return response.status_code

    started = time.perf_counter()
    with ThreadPoolExecutor(8) as pool:
        assert list(pool.map(one, range(8))) == [200] * 8
    assert time.perf_counter() - started < 0.3 * 8 / 2
