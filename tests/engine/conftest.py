"""Fixtures of the rules-engine tests.

* ``engine``: a migrated SQLite database in ``tmp_path`` (copied from one migrated per session, so
  each test pays a file copy rather than a migration).
* ``snapshot``: a factory writing one run through the real :class:`SnapshotWriter` from small dicts:
  ``snapshot(engine, [{"id": "c1", "labels": [...], "columns": [{...}, ...]}, ...], status="complete")``
  returns the run id. ``status="failed"`` ends the run failed; ``"running"`` leaves it running.
* ``write``: writes a text file in ``tmp_path`` and returns its path.
* ``CATALOG``: a small catalog covering every field the rules read.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine

from auditor.bigid.models import parse_cluster, parse_column
from auditor.store.db import open_database
from auditor.store.writer import ClusterStats, RunTotals, SnapshotWriter

CATALOG: list[dict[str, Any]] = [
    {
        "id": "c-hr",
        "name": "HR People",
        "size": 4,
        "labels": ["PII"],
        "severity": "High",
        "status": "Active",
        "columns": [
            {
                "fullyQualifiedName": "hr.emp.ssn",
                "columnName": "SSN",
                "source": "hr-db",
                "tableName": "emp",
                "dataType": "varchar",
                "isPrimary": True,
                "businessAttribute": "Social Security Number",
                "attributes": [{"attribute_name": "SSN", "rank": "High", "calc_confidence_level": 0.95}],
                "tags": [{"tagName": "Sensitivity", "tagValue": "HIGH", "isMutuallyExclusive": "true"}],
            },
            {
                "fullyQualifiedName": "crm.contact.ssn",
                "columnName": " ssn ",
                "source": "crm",
                "tableName": "contact",
                "dataType": "text",
                "isPrimary": False,
                "attributes": [{"attribute_name": "SSN", "rank": "Medium", "calc_confidence_level": 0.6}],
                "tags": [{"tagName": "sensitivity", "tagValue": "low", "properties": {"hidden": True}}],
            },
            {
                "fullyQualifiedName": "hr.emp.name",
                "columnName": "O'Brien_name",
                "source": "hr-db",
                "tableName": "emp",
                "dataType": "VARCHAR",
                "businessAttribute": "",
            },
            {
                "fullyQualifiedName": "hr.emp.notes%",
                "columnName": "notes_100%",
                "source": "hr-db",
                "tableName": "emp",
                "dataType": "clob",
                "tags": [{"tagName": "owner", "tagValue": "People Team"}],
            },
        ],
    },
    {
        "id": "c-fin",
        "name": "Finance",
        "size": 2,
        "labels": ["confidential", "PCI"],
        "severity": "low",
        "status": "Archived",
        "columns": [
            {
                "fullyQualifiedName": "fin.card.number",
                "columnName": "card_number",
                "source": "payments",
                "dataType": "varchar",
                "attributes": [
                    {"attribute_name": "Credit Card", "rank": "High", "calc_confidence_level": 0.99},
                    {"attribute_name": "Email", "rank": "Low", "calc_confidence_level": 0.2},
                ],
                "tags": [{"tagName": "sensitivity", "tagValue": "high"}],
            },
            {"fullyQualifiedName": "fin.card.brand", "columnName": "brand", "source": "payments"},
        ],
    },
    {"id": "c-empty", "name": "Nothing", "size": 0, "labels": [], "columns": []},
]

_TEMPLATE: dict[str, Path] = {}


@pytest.fixture
def engine(tmp_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Engine:
    if "db" not in _TEMPLATE:
        template = tmp_path_factory.mktemp("engine-template") / "template.db"
        open_database(template).dispose()
        _TEMPLATE["db"] = template
    target = tmp_path / "auditor.db"
    shutil.copyfile(_TEMPLATE["db"], target)
    created = open_database(target)
    yield created
    created.dispose()


def write_snapshot(engine: Engine, clusters: list[dict[str, Any]], status: str = "complete") -> int:
    writer = SnapshotWriter(engine, source_url="test://catalog")
    for position, raw in enumerate(clusters):
        data = {k: v for k, v in raw.items() if k != "columns"}
        cluster = parse_cluster(data)
        writer.add_cluster(cluster, data, position)
        columns = raw.get("columns", [])
        writer.add_columns(cluster.id, [(parse_column(c), c) for c in columns])
        writer.finish_cluster(cluster.id, ClusterStats(columns_fetched=len(columns), pages=1))
    if status == "complete":
        writer.complete(RunTotals(clusters_announced=len(clusters)))
    elif status == "failed":
        writer.fail("page 3 of cluster c-hr answered 500 five times")
    else:
        writer.flush()
    return writer.run_id


@pytest.fixture
def snapshot() -> Callable[..., int]:
    return write_snapshot


@pytest.fixture
def write(tmp_path: Path) -> Callable[[str, str], Path]:
    def _write(name: str, text: str) -> Path:
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        return path

    return _write
