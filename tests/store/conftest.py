"""Fixtures for the store tests: small snapshots written through the real writer."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from auditor.bigid.models import parse_cluster, parse_column
from auditor.store.writer import ClusterStats, RunTotals, SnapshotWriter


def make_catalog(
    n_clusters: int = 3, n_columns: int = 4, *, variant: int = 0
) -> list[tuple[dict, list[dict]]]:
    """A small catalog of raw dicts; ``variant`` changes one column's tag value."""
    catalog = []
    for c in range(n_clusters):
        cluster = {
            "id": f"{c:024x}",
            "name": f"cluster {c}",
            "size": n_columns,
            "labels": ["PII", "Confidential"] if c % 2 else ["Analytics"],
            "severity": "High",
            "status": "Active",
            "createdAt": "2025-07-15T14:22:30.000Z",
            "extraClusterField": {"nested": [1, 2]},
        }
        columns = []
        for i in range(n_columns):
            value = "high" if (c, i) != (0, 0) or variant == 0 else "low"
            columns.append(
                {
                    "fullyQualifiedName": f"src{i % 2}.db.t{c}.col{i}",
                    "columnName": f"col{i}",
                    "tableName": f"t{c}",
                    "source": f"src{i % 2}",
                    "isPrimary": i == 0,
                    "dataType": "varchar",
                    "businessAttribute": None,
                    "attributes": [
                        {
                            "attribute_name": "SSN",
                            "rank": "High",
                            "calc_confidence_level": 0.9,
                            "attribute_id": "a1",
                        }
                    ],
                    "tags": [
                        {
                            "tagId": "t1",
                            "valueId": "v1",
                            "isMutuallyExclusive": "true",
                            "properties": {"hidden": False, "applicationType": "sensitivityClassification"},
                            "tagName": "sensitivity",
                            "tagValue": value,
                        }
                    ],
                    "unknownColumnField": "kept",
                }
            )
        catalog.append((cluster, columns))
    return catalog


def write_catalog(engine, catalog, *, complete: bool = True, source_url: str = "http://127.0.0.1:1") -> int:
    writer = SnapshotWriter(engine, source_url=source_url, cluster_filter=None)
    for position, (cluster, columns) in enumerate(catalog):
        writer.add_cluster(parse_cluster(cluster), cluster, position)
        writer.add_columns(cluster["id"], [(parse_column(raw), raw) for raw in columns])
        writer.finish_cluster(
            cluster["id"], ClusterStats(total_announced=len(columns), columns_fetched=len(columns), pages=1)
        )
    if complete:
        writer.complete(
            RunTotals(clusters_announced=len(catalog), requests=len(catalog) + 1, auth_scheme="bearer")
        )
    else:
        writer.fail("the test stopped it")
    return writer.run_id


@pytest.fixture
def catalog_writer() -> Callable[..., int]:
    return write_catalog


@pytest.fixture
def catalog() -> Callable[..., Any]:
    return make_catalog
