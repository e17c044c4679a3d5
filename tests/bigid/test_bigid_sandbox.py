"""Snapshots of the sandbox over real loopback HTTP are exact: every key and every value of every
stored cluster and column equals the sandbox's ground truth (``Dataset``), under page caps, 5xx,
429s, latency, repeated rows, wrong totals, every envelope and field aliases; ``auto`` auth works
against every header form the sandbox can demand, and a session expiring mid-run is re-exchanged
once. The exactness tests run with pages decoded in the fetching threads and in a process pool."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from auditor.bigid.models import parse_cluster, parse_column
from auditor.errors import AuthError
from auditor.snapshot import take_snapshot
from auditor.store.db import open_database
from auditor.store.runs import list_runs
from auditor.store.schema import cluster_versions, column_versions, run_clusters, run_columns

SMALL = {"clusters": 6, "columns": 240, "seed": 7}


def truth(dataset) -> tuple[dict, dict]:
    clusters = {parse_cluster(raw).id: raw for raw in dataset.clusters()}
    columns = {
        (cid, parse_column(raw).fullyQualifiedName): raw for cid in clusters for raw in dataset.columns(cid)
    }
    return clusters, columns


def stored(engine, run_id: int) -> tuple[dict, dict]:
    with engine.connect() as connection:
        clusters = dict(
            connection.execute(
                select(run_clusters.c.cluster_id, cluster_versions.c.raw)
                .join(cluster_versions, cluster_versions.c.hash == run_clusters.c.cluster_hash)
                .where(run_clusters.c.run_id == run_id)
            ).all()
        )
        columns = {
            (row.cluster_id, row.fqn): row.raw
            for row in connection.execute(
                select(run_columns.c.cluster_id, run_columns.c.fqn, column_versions.c.raw)
                .join(column_versions, column_versions.c.id == run_columns.c.column_id)
                .where(run_columns.c.run_id == run_id)
            )
        }
    return clusters, columns


def snapshot_of(server, tmp_db, make_client, *, workers: int = 3, processes: int | None = None, **options):
    engine = open_database(tmp_db)
    client = make_client(server.url, token=server.key, **options)
    run = take_snapshot(engine, client, workers=workers, processes=processes)
    return engine, client, run


def assert_exact(engine, run, dataset) -> None:
    want_clusters, want_columns = truth(dataset)
    got_clusters, got_columns = stored(engine, run.id)
    assert got_clusters == want_clusters  # every key and every value, raw as served
    assert got_columns == want_columns
    assert run.status == "complete"
    assert run.clusters_stored == len(want_clusters) and run.columns_stored == len(want_columns)


SCENARIOS = {
    "plain": {},
    "max_page": {"max_page": 7},
    "fail_rate": {"fail_rate": 0.3, "fail_statuses": (500, 502, 503, 504)},
    "throttle": {"throttle": 0.3, "retry_after": 0},
    "latency": {"latency": 0.02},
    "repeat_rate": {"repeat_rate": 0.2, "max_page": 9},
    "wrong_totals_over": {"wrong_totals": 1.0, "totals_direction": "over"},
    "wrong_totals_under": {"wrong_totals": 1.0, "totals_direction": "under", "max_page": 11},
    "envelope_results": {"envelope": "results", "max_page": 13},
    "envelope_data": {"envelope": "data"},
    "envelope_status": {"envelope": "status", "max_page": 13, "string_counts": True},
    "aliases": {"aliases": True},
    "gateway_pages": {"gateway_rate": 0.25},
    "blank_answers": {"blank_rate": 0.25},
    "capped_cluster_listing": {"clusters": 40, "columns": 400, "envelope": "results", "max_page": 7},
    "everything": {
        "envelope": "status",
        "max_page": 6,
        "repeat_rate": 0.25,
        "wrong_totals": 0.5,
        "totals_direction": "both",
        "fail_rate": 0.15,
        "throttle": 0.1,
        "retry_after": 0,
        "gateway_rate": 0.1,
        "blank_rate": 0.1,
        "aliases": True,
        "auth": "refresh",
    },
}


@pytest.mark.parametrize("processes", [0, 2], ids=["in-thread", "pool"])
@pytest.mark.parametrize("name", list(SCENARIOS))
def test_snapshot_is_exact(sandbox, tmp_db, make_client, name, processes):
    server = sandbox(**{**SMALL, **SCENARIOS[name]})
    engine, _, run = snapshot_of(server, tmp_db, make_client, page_size=25, processes=processes)
    assert_exact(engine, run, server.dataset)
    assert run.details["processes"] == processes
    assert run.requests == server.stats.total
    faults = {
        k: v
        for k, v in SCENARIOS[name].items()
        if k in ("fail_rate", "throttle", "gateway_rate", "blank_rate")
    }
    assert (run.retries > 0) == bool(faults)
    if name.startswith("wrong_totals"):
        assert len(run.details["total_mismatches"]) == SMALL["clusters"]
        assert run.details["size_mismatches"] == []
        # the sizes agree with what was served: wrong totals alone are no shortfall, no page re-asked
        assert run.details["total_shortfall_count"] == 0 == run.details["empty_pages_reasked"]
    if name == "repeat_rate":
        assert run.details["duplicate_rows"] > 0


def test_envelope_shapes_are_recorded(sandbox, tmp_db, make_client):
    server = sandbox(**SMALL, envelope="status")
    _, _, run = snapshot_of(server, tmp_db, make_client)
    assert run.details["envelopes"] == {
        "clusters": ["status+data.clusters"],
        "columns": ["status+data.results"],
    }


@pytest.mark.parametrize(
    ("mode", "token", "scheme", "exchanges"),
    [
        ("bearer", None, "bearer", 0),
        ("raw", None, "raw", 0),
        ("refresh", None, "refresh", 1),  # a user-token JWT: exchanged first
        ("refresh", "opaque-user-key-42", "refresh", 1),  # not a JWT: Bearer, bare, then the exchange
    ],
)
def test_auto_auth_against_each_mode(sandbox, tmp_db, make_client, mode, token, scheme, exchanges):
    knobs = {"token": token} if token else {}
    server = sandbox(**SMALL, auth=mode, **knobs)
    engine, client, run = snapshot_of(server, tmp_db, make_client)
    assert_exact(engine, run, server.dataset)
    assert run.auth_scheme == scheme == client.auth_scheme_used
    assert run.details["token_exchanges"] == exchanges == server.stats.sessions_issued
    assert run.details["auth_scheme_requested"] == "auto"


@pytest.mark.parametrize("processes", [0, 2], ids=["in-thread", "pool"])
def test_session_expiring_mid_run_is_exchanged_again_exactly_once(
    sandbox, tmp_db, make_client, tmp_path, processes
):
    probe = sandbox(**SMALL, auth="refresh")
    snapshot_of(probe, str(tmp_path / "probe.db"), make_client, page_size=10)
    data_requests = probe.stats.total - probe.stats.sessions_issued
    server = sandbox(**SMALL, auth="refresh", session_max_requests=data_requests // 2 + 1)
    engine, _, run = snapshot_of(server, tmp_db, make_client, page_size=10, workers=4, processes=processes)
    assert_exact(engine, run, server.dataset)
    assert server.stats.sessions_issued == 2 == run.details["token_exchanges"]
    assert server.stats.count(status=401) >= 1


def test_wrong_key_fails_the_run(sandbox, tmp_db, make_client):
    server = sandbox(**SMALL, auth="raw")
    engine = open_database(tmp_db)
    with pytest.raises(AuthError, match="the API key is missing or invalid"):
        take_snapshot(engine, make_client(server.url, token="not-the-key"), workers=2)
    (run,) = list_runs(engine)
    assert run.status == "failed" and run.error.startswith("AuthError: the API key is missing or invalid")
