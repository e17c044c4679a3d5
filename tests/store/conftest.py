"""Fixtures for the store tests: small snapshots written through the real writer."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
import sqlalchemy as sa

from auditor.bigid.models import parse_cluster, parse_column
from auditor.store.writer import (
    ATTRIBUTE_FIELDS,
    COLUMN_FIELDS,
    TAG_FIELDS,
    ClusterStats,
    RunTotals,
    SnapshotWriter,
    cluster_record,
    column_rows,
    now,
)


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


def schema_drift(connection) -> list:
    """Differences between the database and the models, compared as ``migrations/env.py`` does
    (indexes declared for one dialect only are compared on that dialect only)."""
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    from auditor.store.schema import include_object, metadata

    options = {"include_object": include_object(connection.dialect.name)}
    return compare_metadata(MigrationContext.configure(connection, opts=options), metadata)


@pytest.fixture
def catalog_writer() -> Callable[..., int]:
    return write_catalog


@pytest.fixture
def catalog() -> Callable[..., Any]:
    return make_catalog


# -- the schema before revision 0003 (columns keyed by content hash), for migration tests ---------

LEGACY_TAG_FIELDS = ("column_hash", *TAG_FIELDS[1:])
LEGACY_ATTRIBUTE_FIELDS = ("column_hash", *ATTRIBUTE_FIELDS[1:])


def write_legacy_catalog(engine, catalog) -> int:
    """Write ``catalog`` as one complete run in the layout of revisions 0001-0002 (hash keys).

    Rows are built by the real record functions, then inserted with plain SQL, since the writer
    only knows the current layout.
    """

    flags = {"is_primary", "is_mutually_exclusive", "hidden"}  # 0/1 in the rows (see column_rows)

    def insert(connection, name: str, fields, rows) -> None:
        if rows:
            table = sa.table(name, *(sa.column(f, sa.JSON if f == "raw" else None) for f in fields))
            connection.execute(
                table.insert(),
                [
                    {
                        f: bool(v) if f in flags and v is not None else v
                        for f, v in zip(fields, row, strict=True)
                    }
                    for row in rows
                ],
            )

    with engine.begin() as connection:
        run_id = connection.execute(
            sa.text(
                "INSERT INTO runs (started_at, finished_at, status, tool_version, clusters_stored, "
                "columns_stored, details) VALUES (:t, :t, 'complete', 'legacy', :n, :m, '{}') RETURNING id"
            ).bindparams(sa.bindparam("t", type_=sa.DateTime(timezone=True))),  # as the schema stores it
            {"t": now(), "n": len(catalog), "m": sum(len(columns) for _, columns in catalog)},
        ).scalar_one()
        for position, (cluster, columns) in enumerate(catalog):
            digest, row, labels = cluster_record(parse_cluster(cluster), cluster)
            row = {**row, "raw": json.loads(row["raw"])}
            insert(connection, "cluster_versions", tuple(row), [tuple(row.values())])
            insert(
                connection,
                "cluster_labels",
                ("cluster_hash", "position", "label"),
                [tuple(label.values()) for label in labels],
            )
            insert(
                connection,
                "run_clusters",
                ("run_id", "cluster_id", "cluster_hash", "position", "columns_fetched", "fetch_status"),
                [(run_id, cluster["id"], digest, position, len(columns), "complete")],
            )
            for raw in columns:
                column_hash, version, tags, attributes = column_rows(parse_column(raw), raw)
                version = (*version[:-1], json.loads(version[-1]))  # COLUMN_FIELDS, raw decoded
                insert(connection, "column_versions", COLUMN_FIELDS, [version])
                insert(connection, "column_tags", LEGACY_TAG_FIELDS, [(column_hash, *t) for t in tags])
                insert(
                    connection,
                    "column_attributes",
                    LEGACY_ATTRIBUTE_FIELDS,
                    [(column_hash, *a) for a in attributes],
                )
                insert(
                    connection,
                    "run_columns",
                    ("run_id", "cluster_id", "fqn", "column_hash"),
                    [(run_id, cluster["id"], version[1], column_hash)],
                )
    return int(run_id)


def snapshot_content(connection) -> dict[str, list[tuple]]:
    """Every stored column fact with versions named by content hash, whatever the key layout."""
    keyed_by_id = "column_id" in {c["name"] for c in sa.inspect(connection).get_columns("run_columns")}
    join = (
        "JOIN column_versions v ON v.id = o.column_id"
        if keyed_by_id
        else ("JOIN column_versions v ON v.hash = o.column_hash")
    )
    tag_fields = ", ".join(f"o.{f}" for f in TAG_FIELDS[1:])
    attribute_fields = ", ".join(f"o.{f}" for f in ATTRIBUTE_FIELDS[1:])
    queries = {
        "runs": "SELECT id, status, columns_stored FROM runs",
        "cluster_versions": "SELECT hash, cluster_id, name FROM cluster_versions",
        "column_versions": f"SELECT {', '.join(COLUMN_FIELDS[:-1])} FROM column_versions",
        "raw": "SELECT hash, raw FROM column_versions",
        "column_tags": f"SELECT v.hash, {tag_fields} FROM column_tags o {join}",
        "column_attributes": f"SELECT v.hash, {attribute_fields} FROM column_attributes o {join}",
        "run_columns": f"SELECT o.run_id, o.cluster_id, o.fqn, v.hash FROM run_columns o {join}",
    }
    out = {}
    for name, query in queries.items():
        rows = connection.execute(sa.text(query)).all()
        out[name] = sorted(tuple(str(v) if name == "raw" else v for v in row) for row in rows)
    return out
