"""The snapshot store: schema, migrations driven from code, the snapshot writer, and run queries."""

from auditor.store.db import open_database
from auditor.store.runs import (
    RunInfo,
    clusters_view,
    columns_view,
    list_runs,
    previous_complete_run,
    resolve_run,
)
from auditor.store.writer import ClusterStats, RunTotals, SnapshotWriter

__all__ = [
    "ClusterStats",
    "RunInfo",
    "RunTotals",
    "SnapshotWriter",
    "clusters_view",
    "columns_view",
    "list_runs",
    "open_database",
    "previous_complete_run",
    "resolve_run",
]
