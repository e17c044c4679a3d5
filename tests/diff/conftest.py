"""Fixtures for the diff tests: small catalogs as dicts, written through the real snapshot writer."""

from __future__ import annotations

import copy
from collections.abc import Callable, Collection, Iterator
from types import SimpleNamespace
from typing import Any

import pytest
from sqlalchemy import Engine

from auditor.bigid.models import parse_cluster, parse_column
from auditor.store.db import open_database
from auditor.store.writer import ClusterStats, RunTotals, SnapshotWriter

Catalog = list[tuple[dict[str, Any], list[dict[str, Any]]]]

# The diff JSON's top-level keys, in their order (the contract in docs/diff.md).
DIFF_KEYS = [
    "from_run",
    "to_run",
    "summary",
    "clusters",
    "columns",
    "findings",
    "not_compared",
    "scope_note",
    "findings_compared",
]


def column(
    fqn: str,
    *,
    tags: dict[str, str] | None = None,
    attributes: list[tuple[str, str, float]] | None = None,
    **fields: Any,
) -> dict[str, Any]:
    """A raw column record; ``tags`` name -> value, ``attributes`` (name, rank, confidence)."""
    source, _, rest = fqn.partition(".")
    table = rest.rsplit(".", 1)[0] if "." in rest else rest
    record: dict[str, Any] = {
        "fullyQualifiedName": fqn,
        "columnName": fqn.rsplit(".", 1)[-1],
        "tableName": table,
        "source": source,
        "isPrimary": False,
        "dataType": "varchar",
        "businessAttribute": None,
        "tags": [
            {"tagId": f"t-{name}", "valueId": f"v-{value}", "tagName": name, "tagValue": value}
            for name, value in (tags or {}).items()
        ],
        "attributes": [
            {"attribute_name": name, "rank": rank, "calc_confidence_level": confidence}
            for name, rank, confidence in (attributes or [])
        ],
    }
    record.update(fields)
    return record


def cluster(cluster_id: str, *, labels: list[str] | None = None, **fields: Any) -> dict[str, Any]:
    record: dict[str, Any] = {
        "id": cluster_id,
        "name": f"cluster {cluster_id}",
        "size": 2,
        "labels": list(labels if labels is not None else ["PII"]),
        "severity": "High",
        "status": "Active",
    }
    record.update(fields)
    return record


def base_catalog() -> Catalog:
    """Two clusters of two columns each: the starting point most tests modify."""
    return [
        (
            cluster("c1", labels=["PII", "Confidential"]),
            [
                column(
                    "crm.public.users.email",
                    tags={"sensitivity": "high"},
                    attributes=[("Email", "High", 0.9)],
                ),
                column("crm.public.users.id", isPrimary=True, dataType="int"),
            ],
        ),
        (
            cluster("c2", labels=["Analytics"], severity="Low"),
            [
                column("dwh.sales.orders.total", dataType="decimal", tags={"sensitivity": "low"}),
                column("dwh.sales.orders.ssn", attributes=[("SSN", "Medium", 0.6)]),
            ],
        ),
    ]


def write_catalog(
    engine: Engine, catalog: Catalog, *, complete: bool = True, cluster_filter: str | None = None
) -> int:
    writer = SnapshotWriter(engine, source_url="http://127.0.0.1:1", cluster_filter=cluster_filter)
    for position, (raw_cluster, columns) in enumerate(catalog):
        writer.add_cluster(parse_cluster(raw_cluster), raw_cluster, position)
        writer.add_columns(raw_cluster["id"], [(parse_column(raw), raw) for raw in columns])
        writer.finish_cluster(
            raw_cluster["id"],
            ClusterStats(total_announced=len(columns), columns_fetched=len(columns), pages=1),
        )
    if complete:
        writer.complete(RunTotals(clusters_announced=len(catalog), requests=len(catalog) + 1))
    else:
        writer.fail("the test stopped it")
    return writer.run_id


def write_partial(
    engine: Engine,
    catalog: Catalog,
    *,
    failed: Collection[str] = (),
    fetching: Collection[str] = (),
) -> int:
    """A ``failed`` run of ``catalog`` written as a snapshot that went wrong, through the real writer.

    The clusters in ``failed`` could not be fetched (``finish_cluster`` with an error, after a page
    of their columns arrived); those in ``fetching`` were cut short when the snapshot stopped (a
    page arrived, then ``discard_unfinished``). Neither keeps a column in the run.
    """
    writer = SnapshotWriter(engine, source_url="http://127.0.0.1:1", cluster_filter=None)
    for position, (raw_cluster, columns) in enumerate(catalog):
        cluster_id = raw_cluster["id"]
        writer.add_cluster(parse_cluster(raw_cluster), raw_cluster, position)
        writer.add_columns(cluster_id, [(parse_column(raw), raw) for raw in columns])
        writer.flush()  # the page is written before the cluster fails or the snapshot stops
        if cluster_id in fetching:
            continue
        if cluster_id in failed:
            writer.finish_cluster(cluster_id, ClusterStats(error="HTTP 500 on page 2"))
        else:
            writer.finish_cluster(
                cluster_id,
                ClusterStats(total_announced=len(columns), columns_fetched=len(columns), pages=1),
            )
    writer.discard_unfinished()
    writer.fail("the snapshot stopped", RunTotals(clusters_announced=len(catalog)))  # listed, then stopped
    return writer.run_id


def find_column(catalog: Catalog, fqn: str) -> dict[str, Any]:
    for _cluster, columns in catalog:
        for record in columns:
            if record["fullyQualifiedName"] == fqn:
                return record
    raise KeyError(fqn)


@pytest.fixture
def engine(tmp_path) -> Iterator[Engine]:
    db = open_database(tmp_path / "diff.db")
    yield db
    db.dispose()


@pytest.fixture(scope="module")
def pg_engine(postgres_url: str) -> Iterator[Engine]:
    """A PostgreSQL database of this module's own (skipped when AUDITOR_TEST_POSTGRES_URL is unset).

    Not the session's shared one: a test comparing a diff's findings with SQLite's would otherwise
    see the statuses other modules' runs of the same catalog recorded there.
    """
    from tests.conftest import scratch_database

    with scratch_database(postgres_url, "auditor_diff") as url:
        db = open_database(url)
        yield db
        db.dispose()


@pytest.fixture
def write() -> Callable[..., int]:
    return write_catalog


@pytest.fixture
def base() -> Callable[[], Catalog]:
    return lambda: copy.deepcopy(base_catalog())


@pytest.fixture
def kit() -> SimpleNamespace:
    """The record builders, for tests that assemble their own catalogs."""
    return SimpleNamespace(column=column, cluster=cluster, find=find_column, memberships=memberships)


def memberships(spec: dict[str, list[str]]) -> Catalog:
    """A catalog from ``{cluster_id: [fqn, ...]}`` with default records."""
    return [(cluster(cid), [column(fqn) for fqn in fqns]) for cid, fqns in spec.items()]
