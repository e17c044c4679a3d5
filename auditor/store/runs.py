"""Reading runs back: listing them, resolving ``--run`` references, and views of a run's records.

Every later stage (rules, diff, report) reads a snapshot through :func:`columns_view` and
:func:`clusters_view`, two SQL selectables that join a run's membership rows to the shared versions,
so no stage needs to know that records are content-addressed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, Select, func, select

from auditor.errors import ConfigError, RunNotUsableError
from auditor.store.db import store_errors
from auditor.store.schema import (
    RUN_COMPLETE,
    cluster_versions,
    column_versions,
    run_clusters,
    run_columns,
    runs,
)


@dataclass(frozen=True)
class RunInfo:
    """One row of ``runs``, as every stage sees it."""

    id: int
    status: str
    started_at: datetime
    finished_at: datetime | None
    source_url: str | None
    cluster_filter: str | None
    auth_scheme: str | None
    tool_version: str
    clusters_announced: int | None
    clusters_stored: int | None
    columns_announced: int | None
    columns_stored: int | None
    requests: int | None
    retries: int | None
    error: str | None
    details: dict[str, Any]

    @property
    def complete(self) -> bool:
        return self.status == RUN_COMPLETE

    def to_json(self) -> dict[str, Any]:
        """The ``auditor runs --format json`` shape of this run."""
        data = asdict(self)
        data["started_at"] = _iso(self.started_at)
        data["finished_at"] = _iso(self.finished_at)
        data["clusters"] = self.clusters_stored or 0
        data["columns"] = self.columns_stored or 0
        return data


def mismatch_count(details: Mapping[str, Any], kind: str) -> int:
    """How many clusters' ``kind`` (``size`` or ``total``) differed from the columns fetched.

    A run records the count as ``<kind>_mismatch_count`` and lists the first 1,000 under
    ``<kind>_mismatches``; runs taken before the count was recorded have only the list.
    """
    count = details.get(f"{kind}_mismatch_count")
    if isinstance(count, int):
        return count
    listed = details.get(f"{kind}_mismatches")
    return len(listed) if isinstance(listed, list) else 0


def _iso(value: datetime | None) -> str | None:
    if value is None:
        return None
    return value.isoformat().replace("+00:00", "Z") if value.tzinfo else value.isoformat() + "Z"


def _row_to_run(row: Any) -> RunInfo:
    data = dict(row._mapping)
    data["details"] = data.get("details") or {}
    return RunInfo(**data)


def list_runs(engine: Engine) -> list[RunInfo]:
    """Every run, oldest first."""
    with store_errors("could not read runs"), engine.connect() as connection:
        return [_row_to_run(row) for row in connection.execute(select(runs).order_by(runs.c.id))]


def get_run(engine: Engine, run_id: int) -> RunInfo | None:
    with engine.connect() as connection:
        row = connection.execute(select(runs).where(runs.c.id == run_id)).first()
    return _row_to_run(row) if row else None


def latest_complete_runs(engine: Engine, count: int, *, before: int | None = None) -> list[RunInfo]:
    """Up to ``count`` complete runs, newest first (only runs older than ``before`` if given)."""
    query = select(runs).where(runs.c.status == RUN_COMPLETE)
    if before is not None:
        query = query.where(runs.c.id < before)
    with engine.connect() as connection:
        return [_row_to_run(row) for row in connection.execute(query.order_by(runs.c.id.desc()).limit(count))]


def previous_complete_run(engine: Engine, run_id: int) -> RunInfo | None:
    """The newest complete run older than ``run_id``: the default baseline and diff base."""
    found = latest_complete_runs(engine, 1, before=run_id)
    return found[0] if found else None


def resolve_run(
    engine: Engine, ref: str | int | None = "latest", *, allow_incomplete: bool = False, option: str = "--run"
) -> RunInfo:
    """Resolve ``--run ID|latest`` to a run, refusing runs that are not complete.

    ``latest`` means the newest *complete* run (or the newest run of any status when
    ``allow_incomplete``). Raises :class:`RunNotUsableError` (exit 3) with a hint otherwise, and
    :class:`ConfigError` (exit 2, naming ``option``) when ``ref`` is not a run reference at all.
    """
    if ref is None or str(ref).strip().lower() == "latest":
        if allow_incomplete:
            with engine.connect() as connection:
                row = connection.execute(select(runs).order_by(runs.c.id.desc()).limit(1)).first()
            found = _row_to_run(row) if row else None
        else:
            newest = latest_complete_runs(engine, 1)
            found = newest[0] if newest else None
        if found is None:
            raise RunNotUsableError(
                "there is no complete run in this database yet",
                hint="take a snapshot first: auditor snapshot (or auditor demo)",
            )
        return found
    try:
        run_id = int(str(ref).strip())
    except ValueError:
        raise ConfigError(
            f"{option} {ref!r} is neither a run id nor 'latest'", hint="list runs with: auditor runs"
        ) from None
    run = get_run(engine, run_id)
    if run is None:
        raise RunNotUsableError(f"run {run_id} does not exist", hint="list runs with: auditor runs")
    if not run.complete and not allow_incomplete:
        reason = f": {run.error}" if run.error else ""
        raise RunNotUsableError(
            f"run {run_id} is {run.status}, not complete{reason}",
            hint="take a new snapshot, or pass --allow-incomplete to use it anyway",
        )
    return run


def columns_view(run_id: int) -> Select:
    """The columns of a run: one row per (cluster_id, fqn) with every field, its version id and hash."""
    return (
        select(
            run_columns.c.run_id,
            run_columns.c.cluster_id,
            run_columns.c.fqn,
            run_columns.c.column_id,
            column_versions.c.hash.label("column_hash"),
            column_versions.c.column_name,
            column_versions.c.table_name,
            column_versions.c.source,
            column_versions.c.data_type,
            column_versions.c.is_primary,
            column_versions.c.business_attribute,
        )
        .join(column_versions, column_versions.c.id == run_columns.c.column_id)
        .where(run_columns.c.run_id == run_id)
    )


def clusters_view(run_id: int) -> Select:
    """The clusters of a run: one row per cluster with every cluster field, its hash and fetch stats."""
    return (
        select(
            run_clusters.c.run_id,
            run_clusters.c.cluster_id,
            run_clusters.c.cluster_hash,
            run_clusters.c.position,
            run_clusters.c.size_announced,
            run_clusters.c.total_announced,
            run_clusters.c.columns_fetched,
            run_clusters.c.duplicate_rows,
            run_clusters.c.fetch_status,
            cluster_versions.c.name,
            cluster_versions.c.size,
            cluster_versions.c.severity,
            cluster_versions.c.status,
            cluster_versions.c.created_at,
            cluster_versions.c.cluster_type,
        )
        .join(cluster_versions, cluster_versions.c.hash == run_clusters.c.cluster_hash)
        .where(run_clusters.c.run_id == run_id)
    )


def count_run_rows(engine: Engine, run_id: int) -> tuple[int, int]:
    """(clusters, columns) stored for a run, counted from the membership tables."""
    with engine.connect() as connection:
        clusters = connection.execute(
            select(func.count()).select_from(run_clusters).where(run_clusters.c.run_id == run_id)
        ).scalar_one()
        columns = connection.execute(
            select(func.count()).select_from(run_columns).where(run_columns.c.run_id == run_id)
        ).scalar_one()
    return int(clusters), int(columns)
