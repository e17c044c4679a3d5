"""Retention: deleting old runs and the content versions no remaining run refers to.

``plan_prune(engine, keep=N, older_than=DAYS)`` decides, from the ``runs`` table alone, which runs go;
``prune(engine, plan)`` deletes them in one transaction and garbage-collects the shared versions;
``prune(engine, plan, dry_run=True)`` only counts what would go. ``auditor db prune`` is a thin
wrapper around the two.

Abandoned runs. A process killed hard (``kill -9``, out of memory, a CI runner torn down) leaves
its run ``running`` for ever. The writer records who writes a run (host, PID, boot id, process
start time: :func:`auditor.store.runs.writer_identity`), and :func:`auditor.store.runs.run_liveness`
classifies each ``running`` run: ``active`` (that process is alive on this host), ``abandoned``
(it ran on this host and is gone, its PID now belongs to another process, or the host restarted
since), or ``unknown`` (another host, or a run from before writers were recorded). With
``abandoned_after=HOURS``, an ``unknown`` run that started more than that long ago is abandoned
too; an ``active`` one never is. A prune first marks every abandoned run ``failed`` (``finished_at``
set, ``error`` saying why and when: ``abandoned: the process that wrote it (pid 1234 on host ci-7)
is gone; marked failed by auditor db prune at 2026-12-05T01:30:00Z``), then applies the policy
below, to which such a run is a failed run like any other. The marking happens in the prune's
transaction, under its lock, and only for runs that both the plan and a check made again under the
lock find abandoned; a dry run marks nothing and reports which runs it would mark.

What is kept, always (see :func:`decide`): the newest complete run (so ``--baseline previous``,
diffs and reports keep working); the ``keep`` newest complete runs; with ``older_than``, every run
that started less than that many days ago; every ``running`` run not found abandoned (it may be in
progress: it is reported as skipped); and every run newer than the oldest complete run kept (a
failed run there is recent evidence). "Newest" is by run id, the order runs were started in. With
no complete run at all, nothing is deleted.

What deleting a run removes: its findings, evaluations, cluster and column membership, and its row
in ``runs``; then every column version (with its tags and attributes) and every cluster version
(with its labels) that no remaining run's membership names. A remaining finding's
``first_seen_run`` may name a deleted run: it is kept as recorded (when the finding was first seen
is history, not a reference), and first-seen lookups of later checks still take the earliest value.

Why the statements look the way they do (measured at 200k columns, see ``bench/RESULTS.md``):

* Children are deleted explicitly, parents last, with set-based statements; no foreign-key
  cascade is relied on (SQLite enforces them only on connections that turned them on).
* A foreign key is checked for each deleted parent row by searching the child table. Nothing
  indexes ``run_columns.column_id`` (on SQLite an index of a ``WITHOUT ROWID`` table repeats the
  whole primary key, ~100 bytes per membership row), so with enforcement on, deleting N column
  versions scans the whole membership table N times. On SQLite the prune therefore runs on a
  dedicated connection with ``PRAGMA foreign_keys=OFF`` (set before its transaction starts, the
  only time SQLite honours it) and restored afterwards; the order of the deletes keeps the data
  consistent. On PostgreSQL, where the checks cannot be turned off without superuser rights,
  migration 0004 indexes ``run_columns.column_id`` and ``run_clusters.cluster_hash`` so each check
  is one index probe.
* Unreferenced versions are found once, by one anti-join over the remaining membership
  (``NOT IN (SELECT ...)`` on SQLite, which builds a temporary b-tree of the subquery once;
  ``NOT EXISTS`` on PostgreSQL, a hash anti-join: its ``NOT IN`` falls back to a linear search per
  row when the set outgrows ``work_mem``), into a temporary table the three deletes then use.
* Writers are kept out for the duration: SQLite ``BEGIN IMMEDIATE`` takes the write lock first;
  PostgreSQL takes the lock the snapshot writer takes on ``column_versions`` and, when it marks
  runs failed, locks the ``running`` rows it reads (``FOR UPDATE``): a writer ending such a run
  waits for the prune, then finds its run no longer ``running`` and says so. The plan is made
  again under the lock, and a run is marked failed or deleted only if both plans agree.
* PostgreSQL under REPEATABLE READ or SERIALIZABLE isolation rolls the transaction back when a
  concurrent one changed a row it deletes (or on a deadlock): it is tried again, planned afresh,
  up to :data:`CONFLICT_ATTEMPTS` times.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Engine, bindparam, delete, func, select, text
from sqlalchemy.exc import SQLAlchemyError

from auditor import secrets
from auditor.errors import ConfigError, StoreError
from auditor.stopping import signals_held
from auditor.store.db import WRITE_HINT, lock_wait_notice, sqlite_file, store_errors, transaction_conflict
from auditor.store.runs import (
    ABANDONED,
    DETAILS_TEXT,
    Liveness,
    NotATime,
    read_details,
    run_liveness,
    stored_time,
)
from auditor.store.schema import (
    RUN_COMPLETE,
    RUN_FAILED,
    RUN_RUNNING,
    cluster_labels,
    cluster_versions,
    column_attributes,
    column_tags,
    column_versions,
    evaluations,
    findings,
    run_clusters,
    run_columns,
    runs,
)

log = secrets.scrubbed_logger("auditor.store")

# Page cache of the prune's SQLite connection (and of its temporary tables), for the transaction
# only. Deleting versions dirties pages all over the version table and its hash index; with the
# default 2 MB cache SQLite spills dirty pages to the WAL again and again within the transaction.
# Measured on one of two unshared 1M-column runs (bench/RESULTS.md).
SQLITE_PRUNE_CACHE_KIB = 262_144

GONE_COLUMNS = "auditor_prune_gone_columns"  # the temporary table of column versions to delete


@dataclass(frozen=True)
class RunRow:
    """What the plan needs of a run."""

    id: int
    status: str
    started_at: datetime | None  # None: a damaged record's time that is not a time


@dataclass(frozen=True)
class PrunePlan:
    """Which runs a prune deletes and keeps, and the policy that decided it.

    ``deleted_runs``, ``kept_runs`` and ``skipped_running`` partition the runs that existed when
    the plan was made (ids ascending). ``skipped_running`` are ``running`` runs the policy would
    otherwise have deleted. ``planned_at`` is the instant the policy was applied at; the prune
    applies it again at that instant under the write lock. ``marked_failed`` are the ``running``
    runs found abandoned (``abandoned_after``: see :func:`auditor.store.runs.run_liveness`), which
    the prune marks failed first; the policy treats them as failed runs (they are in
    ``deleted_runs`` or ``kept_runs``), and ``reasons`` says why each ``running`` run was found
    abandoned, or why it may still be in progress (its writer is alive, or cannot be checked).
    """

    keep: int | None
    older_than: float | None
    planned_at: datetime
    deleted_runs: tuple[int, ...]
    kept_runs: tuple[int, ...]
    skipped_running: tuple[int, ...]
    abandoned_after: float | None = None
    marked_failed: tuple[int, ...] = ()
    reasons: dict[int, str] = field(default_factory=dict, compare=False)
    states: dict[int, str] = field(default_factory=dict, compare=False)  # running run → its liveness

    @property
    def cutoff(self) -> datetime | None:
        """Runs that started before this instant are old enough to go (``None``: any age)."""
        return _cutoff(self.planned_at, self.older_than)


@dataclass(frozen=True)
class PruneResult:
    """What a prune removed (or, with ``dry_run``, would remove).

    ``to_json()`` is the documented ``auditor db prune --format json`` shape.
    """

    dry_run: bool
    deleted_runs: tuple[int, ...]
    kept_runs: tuple[int, ...]
    skipped_running: tuple[int, ...]
    marked_failed: tuple[int, ...] = ()  # abandoned running runs marked failed (or, dry, to be)
    run_columns_removed: int = 0
    evaluations_removed: int = 0
    findings_removed: int = 0
    column_versions_removed: int = 0
    cluster_versions_removed: int = 0
    size_before: int | None = None  # bytes, only with vacuum
    size_after: int | None = None
    vacuumed: bool = False
    timings: dict[str, float] = field(default_factory=dict, compare=False)
    # why each marked run was found abandoned, and why each skipped one may still be in progress
    reasons: dict[int, str] = field(default_factory=dict, compare=False)
    states: dict[int, str] = field(default_factory=dict, compare=False)  # running run → its liveness

    def to_json(self) -> dict[str, Any]:
        return {
            "dry_run": self.dry_run,
            "deleted_runs": list(self.deleted_runs),
            "kept_runs": list(self.kept_runs),
            "skipped_running": list(self.skipped_running),
            "marked_failed": list(self.marked_failed),
            "run_columns_removed": self.run_columns_removed,
            "evaluations_removed": self.evaluations_removed,
            "findings_removed": self.findings_removed,
            "column_versions_removed": self.column_versions_removed,
            "cluster_versions_removed": self.cluster_versions_removed,
            "vacuum": (
                {"size_before": self.size_before, "size_after": self.size_after} if self.vacuumed else None
            ),
        }


# -- deciding ------------------------------------------------------------------------------------


def _utc(value: datetime) -> datetime:
    """Stored times are UTC; SQLite hands them back without a zone."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _cutoff(now: datetime, older_than: float | None) -> datetime | None:
    return None if older_than is None else _utc(now) - timedelta(days=older_than)


MAX_DAYS = 36_500  # a century: more reaches past what a date can hold (and means "never" anyway)


def check_policy(keep: int | None, older_than: float | None, abandoned_after: float | None = None) -> None:
    """Refuse a policy that would mean nothing or everything (:class:`ConfigError`, exit 2)."""
    if keep is None and older_than is None:
        raise ConfigError(
            "prune needs --keep N or --older-than DAYS (or both)",
            hint="e.g. auditor db prune --keep 30 --older-than 90 --dry-run",
        )
    if keep is not None and keep < 1:
        raise ConfigError(
            f"--keep must be at least 1, not {keep}", hint="the newest complete run is always kept"
        )
    if older_than is not None and not 0 <= older_than <= MAX_DAYS:  # NaN too
        raise ConfigError(f"--older-than must be from 0 to {MAX_DAYS:,} days, not {older_than:g}")
    if abandoned_after is not None and not 0 < abandoned_after <= MAX_DAYS * 24:
        raise ConfigError(
            f"--abandoned-after must be more than 0 hours (and at most {MAX_DAYS * 24:,}), not "
            f"{abandoned_after:g}",
            hint="give it more hours than the longest snapshot takes, e.g. --abandoned-after 24",
        )


def decide(rows: Iterable[RunRow], *, keep: int | None, older_than: float | None, now: datetime) -> PrunePlan:
    """The plan for ``rows`` under the policy, at ``now`` (pure: no database)."""
    check_policy(keep, older_than)
    ordered = sorted(rows, key=lambda row: row.id)
    cutoff = _cutoff(now, older_than)

    def recent(row: RunRow) -> bool:
        # (a start time that is not a time, in a damaged record no command uses: as old as any,
        # so that --older-than removes it, as the error refusing the run says)
        return cutoff is not None and row.started_at is not None and _utc(row.started_at) >= cutoff

    complete = [row for row in reversed(ordered) if row.status == RUN_COMPLETE]  # newest first
    if not complete:
        return PrunePlan(keep, older_than, now, (), tuple(r.id for r in ordered), ())
    protected = {complete[0].id}  # the newest complete run: the baseline of the next check
    if keep is not None:
        protected.update(row.id for row in complete[:keep])
    protected.update(row.id for row in complete if recent(row))
    boundary = min(protected)  # every run from the oldest complete run kept on stays
    deleted: list[int] = []
    kept: list[int] = []
    skipped: list[int] = []
    for row in ordered:
        if row.id >= boundary or recent(row):
            kept.append(row.id)
        elif row.status == RUN_RUNNING:
            skipped.append(row.id)
        else:
            deleted.append(row.id)
    return PrunePlan(keep, older_than, now, tuple(deleted), tuple(kept), tuple(skipped))


def _run_rows(connection: Connection) -> list[RunRow]:
    return [
        RunRow(int(i), str(s), _time(t))
        for i, s, t in connection.execute(select(runs.c.id, runs.c.status, stored_time(runs.c.started_at)))
    ]


def _time(value: datetime | NotATime | None) -> datetime | None:
    return None if isinstance(value, NotATime) else value


def _running(
    connection: Connection, *, abandoned_after: float | None, now: datetime, lock: bool = False
) -> dict[int, Liveness]:
    """The liveness of every ``running`` run (run id → state and why), as the database is now.

    Only the ``running`` rows' details are read (a few runs, whatever the history's length). With
    ``lock`` (PostgreSQL, in the prune's transaction) those rows stay locked until it ends.
    """
    query = select(runs.c.id, stored_time(runs.c.started_at), DETAILS_TEXT).where(
        runs.c.status == RUN_RUNNING
    )
    if lock and connection.dialect.name == "postgresql":
        query = query.with_for_update()
    found: dict[int, Liveness] = {}
    for run_id, started_at, stored in connection.execute(query.order_by(runs.c.id)):
        details, _damaged = read_details(stored)  # damaged: its writer is unknown, as on another host
        liveness = run_liveness(
            RUN_RUNNING, _time(started_at), details, abandoned_after=abandoned_after, now=now
        )
        if liveness is not None:
            found[int(run_id)] = liveness
    return found


def _abandoned(
    connection: Connection, *, abandoned_after: float | None, now: datetime, lock: bool = False
) -> dict[int, Liveness]:
    """The ``running`` runs found abandoned (run id → why), as the database is now."""
    found = _running(connection, abandoned_after=abandoned_after, now=now, lock=lock)
    return {run_id: liveness for run_id, liveness in found.items() if liveness.state == ABANDONED}


def _as_failed(rows: list[RunRow], ids: Iterable[int]) -> list[RunRow]:
    marked = set(ids)
    return [replace(row, status=RUN_FAILED) if row.id in marked else row for row in rows]


def plan_prune(
    engine: Engine,
    *,
    keep: int | None = None,
    older_than: float | None = None,
    abandoned_after: float | None = None,
    now: datetime | None = None,
) -> PrunePlan:
    """Which runs a prune with this policy would delete, keep, skip and mark failed, as things are now.

    ``keep``: keep the ``keep`` newest complete runs; ``older_than``: only runs that started more
    than this many days before ``now`` (default: the current time) may go. With both, a run goes
    only when both allow it. Raises :class:`ConfigError` for a policy with neither.
    ``abandoned_after``: a ``running`` run that started more than this many hours before ``now``
    and whose writer cannot be checked from here counts as abandoned (see the module docstring);
    runs proven abandoned on this host are marked failed with or without it.
    """
    check_policy(keep, older_than, abandoned_after)
    now = now or datetime.now(UTC)
    with store_errors("could not read the runs to prune"), engine.connect() as connection:
        rows = _run_rows(connection)
        running = _running(connection, abandoned_after=abandoned_after, now=now)
    abandoned = {run_id for run_id, liveness in running.items() if liveness.state == ABANDONED}
    plan = decide(_as_failed(rows, abandoned), keep=keep, older_than=older_than, now=now)
    return replace(
        plan,
        abandoned_after=abandoned_after,
        marked_failed=tuple(sorted(abandoned)),
        reasons={run_id: liveness.reason for run_id, liveness in running.items()},
        states={run_id: liveness.state for run_id, liveness in running.items()},
    )


# -- deleting ------------------------------------------------------------------------------------


def prune(engine: Engine, plan: PrunePlan, *, dry_run: bool = False, vacuum: bool = False) -> PruneResult:
    """Delete the runs of ``plan`` and every version no remaining run refers to, in one transaction.

    A failure or an interruption leaves the database as it was (:class:`StoreError` for database
    errors). With ``dry_run``, only count what would be removed and report which runs would be
    marked failed (nothing is written, no lock is taken). With ``vacuum``, reclaim the freed space
    afterwards (SQLite ``VACUUM``; PostgreSQL ``VACUUM ANALYZE`` of the pruned tables, which makes
    the space reusable by later runs) and report the database size before and after. The
    ``VACUUM`` comes after the commit: its failure (or a Ctrl-C during it) raises with the
    committed result attached (:func:`committed_prune`), as does a Ctrl-C landing just after the
    commit.
    """
    if dry_run:
        with store_errors("could not count what the prune would remove"), engine.connect() as connection:
            return _count(connection, plan)
    size_before = database_size(engine) if vacuum else None
    with store_errors("could not prune the database; nothing was deleted", WRITE_HINT):
        result = _delete_retrying(engine, plan)
    if not vacuum:
        return result
    try:
        with store_errors("the prune was committed, but VACUUM failed", VACUUM_HINT):
            vacuum_database(engine)
    except (StoreError, KeyboardInterrupt) as exc:
        # The deletion is committed: whoever reads the error must still learn what went.
        exc.committed = result  # type: ignore[union-attr]
        raise
    return replace(result, vacuumed=True, size_before=size_before, size_after=database_size(engine))


# VACUUM rebuilds the database through a temporary copy: SQLite writes it in its temporary folder
# (SQLITE_TMPDIR, else TMPDIR, else /var/tmp or /tmp), which fills up before the database's disk does.
VACUUM_HINT = (
    "VACUUM needs free space about the database's size, on the database's disk and in the temporary "
    "folder ($SQLITE_TMPDIR, else $TMPDIR, else /var/tmp or /tmp); the database is as the prune left it"
)


def committed_prune(exc: BaseException) -> PruneResult | None:
    """The committed prune an error of :func:`prune`'s ``VACUUM`` step carries (else ``None``)."""
    found = getattr(exc, "committed", None)
    return found if isinstance(found, PruneResult) else None


def _ids(values: Sequence[int]):
    return bindparam("ids", list(values), expanding=True, unique=True)


def _count(connection: Connection, plan: PrunePlan) -> PruneResult:
    ids = list(plan.deleted_runs)
    counts: dict[str, int] = {}
    if ids:
        sqlite = connection.dialect.name == "sqlite"
        counts["run_columns_removed"] = connection.execute(
            select(func.count()).select_from(run_columns).where(run_columns.c.run_id.in_(_ids(ids)))
        ).scalar_one()
        counts["evaluations_removed"] = connection.execute(
            select(func.count()).select_from(evaluations).where(evaluations.c.run_id.in_(_ids(ids)))
        ).scalar_one()
        counts["findings_removed"] = sum(
            connection.execute(select(func.count()).select_from(findings).where(where)).scalar_one()
            for where in _doomed_findings(ids)
        )
        # versions that no run outside the plan refers to (the same anti-joins as the prune)
        members = select(run_columns.c.column_id).where(run_columns.c.run_id.not_in(_ids(ids)))
        holders = select(run_clusters.c.cluster_hash).where(run_clusters.c.run_id.not_in(_ids(ids)))
        if sqlite:
            column_gone = column_versions.c.id.not_in(members)
            cluster_gone = cluster_versions.c.hash.not_in(holders)
        else:
            column_gone = ~members.where(run_columns.c.column_id == column_versions.c.id).exists()
            cluster_gone = ~holders.where(run_clusters.c.cluster_hash == cluster_versions.c.hash).exists()
        counts["column_versions_removed"] = connection.execute(
            select(func.count()).select_from(column_versions).where(column_gone)
        ).scalar_one()
        counts["cluster_versions_removed"] = connection.execute(
            select(func.count()).select_from(cluster_versions).where(cluster_gone)
        ).scalar_one()
    return PruneResult(
        True,
        plan.deleted_runs,
        plan.kept_runs,
        plan.skipped_running,
        plan.marked_failed,
        **{k: int(v) for k, v in counts.items()},
        reasons=dict(plan.reasons),
        states=dict(plan.states),
    )


def _doomed_findings(ids: list[int]) -> tuple[Any, Any]:
    """Findings of the deleted runs, then (defensively) any other finding of their evaluations.

    Two conditions, each served by an index (``ix_findings_run_fingerprint``, the primary key),
    rather than one ``OR`` that a planner may answer with a scan of every finding.
    """
    own = findings.c.run_id.in_(_ids(ids))
    of_evaluations = findings.c.evaluation_id.in_(
        select(evaluations.c.id).where(evaluations.c.run_id.in_(_ids(ids)))
    )
    return own, of_evaluations & findings.c.run_id.not_in(_ids(ids))


@contextlib.contextmanager
def _writing(engine: Engine, outcome: _Outcome | None = None) -> Iterator[Connection]:
    """One transaction holding the write lock; on SQLite with foreign-key checks off for its duration.

    SQLite ignores ``PRAGMA foreign_keys`` inside a transaction, so it is set on this connection
    before ``BEGIN IMMEDIATE`` and set back before the connection returns to the pool; a connection
    whose setting could not be restored is closed instead of being reused. ``outcome.committed``
    is set once the transaction is committed (what is raised afterwards, such as a Ctrl-C while
    the settings are restored, comes after the deletion).
    """
    with engine.connect() as connection:
        if connection.dialect.name != "sqlite":
            with _committing(connection, outcome):
                # the lock the snapshot writer takes before adding versions: no writer adds
                # membership to a version this transaction is about to find unreferenced
                connection.exec_driver_sql("LOCK TABLE column_versions IN SHARE ROW EXCLUSIVE MODE")
                yield connection
            return
        connection.exec_driver_sql("PRAGMA foreign_keys=OFF")
        if connection.exec_driver_sql("PRAGMA foreign_keys").scalar() != 0:  # pragma: no cover
            log.warning("SQLite kept its foreign-key checks on: deleting versions may be slow")
        caches = {
            schema: connection.exec_driver_sql(f"PRAGMA {schema}.cache_size").scalar()
            for schema in ("main", "temp")
        }
        for schema in caches:
            connection.exec_driver_sql(f"PRAGMA {schema}.cache_size=-{SQLITE_PRUNE_CACHE_KIB}")
        connection.commit()
        restored = False
        try:
            with _committing(connection, outcome):
                with lock_wait_notice():
                    connection.exec_driver_sql("BEGIN IMMEDIATE")
                yield connection
            connection.exec_driver_sql("PRAGMA foreign_keys=ON")
            for schema, size in caches.items():
                connection.exec_driver_sql(f"PRAGMA {schema}.cache_size={int(size)}")
            connection.commit()
            restored = connection.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        finally:
            if not restored:
                connection.invalidate()  # never hand a connection without foreign keys back


@contextlib.contextmanager
def _committing(connection: Connection, outcome: _Outcome | None) -> Iterator[None]:
    """A transaction of ``connection``, committed with Ctrl-C held until ``outcome`` records it: an
    interrupt can come before the commit (nothing deleted) or after the record (the deletion is
    reported), never in between."""
    transaction = connection.begin()
    try:
        yield
    except BaseException:
        transaction.rollback()
        raise
    with signals_held():
        transaction.commit()
        if outcome is not None:
            outcome.committed = True


class _Statements:
    """Runs the prune's statements on one connection, timing each kind (for the benchmark)."""

    def __init__(self, connection: Connection) -> None:
        self.connection = connection
        self.sqlite = connection.dialect.name == "sqlite"
        self.timings: dict[str, float] = {}

    def run(self, name: str, statement: Any) -> int:
        started = time.perf_counter()
        removed = self.connection.execute(statement).rowcount
        self.timings[name] = self.timings.get(name, 0.0) + time.perf_counter() - started
        return int(removed)

    def driver_sql(self, name: str, sql: str) -> None:
        started = time.perf_counter()
        self.connection.exec_driver_sql(sql)
        self.timings[name] = self.timings.get(name, 0.0) + time.perf_counter() - started


def abandoned_error(reason: str, marked_at: datetime) -> str:
    """The error recorded for a run a prune marks failed because its writer is gone."""
    return f"abandoned: {reason}; marked failed by auditor db prune at {marked_at:%Y-%m-%dT%H:%M:%SZ}"


def _mark_failed(connection: Connection, plan: PrunePlan) -> dict[int, str]:
    """Mark failed the runs that the plan and a check made now (under the lock) find abandoned.

    Returns run id → why it was found abandoned (the error recorded: :func:`abandoned_error`). A
    run whose writer is alive is never found abandoned, by either check; one the plan did not name
    is left for the next prune.
    """
    if not plan.marked_failed:
        return {}
    fresh = _abandoned(connection, abandoned_after=plan.abandoned_after, now=plan.planned_at, lock=True)
    marked_at = datetime.now(UTC)
    marked: dict[int, str] = {}
    for run_id in sorted(set(plan.marked_failed) & set(fresh)):
        reason = fresh[run_id].reason
        changed = connection.execute(
            runs.update()
            .where(runs.c.id == run_id)
            .where(runs.c.status == RUN_RUNNING)
            .values(status=RUN_FAILED, finished_at=marked_at, error=abandoned_error(reason, marked_at))
        ).rowcount
        if changed == 1:
            marked[run_id] = reason
    return marked


@dataclass
class _Outcome:
    """How far a prune's transaction got: committed or not, and its result once known."""

    committed: bool = False
    result: PruneResult | None = None


CONFLICT_ATTEMPTS = 5  # a prune's transaction, tried again while it meets concurrent writers
CONFLICT_PAUSE = 0.2  # seconds before the second attempt, doubled for each later one


def _delete_retrying(engine: Engine, plan: PrunePlan) -> PruneResult:
    """:func:`_delete`, tried again when PostgreSQL rolled it back for a conflict with a concurrent
    transaction (a serialization failure under REPEATABLE READ or SERIALIZABLE isolation, or a
    deadlock): nothing was deleted, and the next attempt plans again under the lock from what the
    other transaction committed. After :data:`CONFLICT_ATTEMPTS` attempts the conflict is the error."""
    for attempt in range(1, CONFLICT_ATTEMPTS + 1):
        try:
            return _delete(engine, plan)
        except SQLAlchemyError as exc:  # (raised before the commit: _delete wraps what comes after)
            if attempt == CONFLICT_ATTEMPTS or not transaction_conflict(exc):
                raise
            log.info(
                "the prune met a concurrent transaction (%s) and was rolled back; "
                "trying again (attempt %d of %d)",
                getattr(exc.orig, "sqlstate", None),
                attempt + 1,
                CONFLICT_ATTEMPTS,
            )
            time.sleep(CONFLICT_PAUSE * 2 ** (attempt - 1))
    raise AssertionError("unreachable")  # pragma: no cover


def _delete(engine: Engine, plan: PrunePlan) -> PruneResult:
    """Delete what ``plan`` says, in one transaction. Anything raised once the transaction is
    committed (a Ctrl-C as it returns) carries the committed result (:func:`committed_prune`)."""
    outcome = _Outcome()
    try:
        return _delete_in(engine, plan, outcome)
    except BaseException as exc:
        if not outcome.committed:
            raise
        if isinstance(exc, SQLAlchemyError):  # restoring the connection's settings failed
            error = StoreError(
                "the prune was committed, but restoring the connection's settings failed: "
                f"{getattr(exc, 'orig', None) or exc}",
                hint=WRITE_HINT,
            )
            error.committed = outcome.result  # type: ignore[attr-defined]
            raise error from None
        exc.committed = outcome.result  # type: ignore[union-attr]
        raise


def _delete_in(engine: Engine, plan: PrunePlan, outcome: _Outcome) -> PruneResult:
    with _writing(engine, outcome) as connection:
        marked = _mark_failed(connection, plan)
        fresh = decide(_run_rows(connection), keep=plan.keep, older_than=plan.older_than, now=plan.planned_at)
        # delete only what both the caller's plan and the plan made under the lock delete
        ids = sorted(set(plan.deleted_runs) & set(fresh.deleted_runs))
        kept = tuple(sorted({*fresh.kept_runs, *(set(fresh.deleted_runs) - set(ids))}))
        step = _Statements(connection)
        counts: dict[str, int] = {}
        if ids:
            # children before parents, so no foreign key is left dangling at any statement
            counts["findings_removed"] = sum(
                step.run("findings", delete(findings).where(where)) for where in _doomed_findings(ids)
            )
            counts["evaluations_removed"] = step.run(
                "evaluations", delete(evaluations).where(evaluations.c.run_id.in_(_ids(ids)))
            )
            counts["run_columns_removed"] = step.run(
                "run_columns", delete(run_columns).where(run_columns.c.run_id.in_(_ids(ids)))
            )
            step.run("run_clusters", delete(run_clusters).where(run_clusters.c.run_id.in_(_ids(ids))))
            step.run("runs", delete(runs).where(runs.c.id.in_(_ids(ids))))
            counts["column_versions_removed"] = _collect_columns(step)
            counts["cluster_versions_removed"] = _collect_clusters(step)
        result = PruneResult(
            False,
            tuple(ids),
            kept,
            fresh.skipped_running,
            tuple(marked),
            **counts,
            timings=step.timings,
            reasons={**plan.reasons, **marked},
            states=dict(plan.states),
        )
        outcome.result = result  # known before the commit, for what is raised after it
    return result


def _collect_columns(step: _Statements) -> int:
    """Delete the column versions no remaining run refers to, with their tags and attributes.

    The unreferenced versions are found by one anti-join into a temporary table, which the three
    deletes then read (three anti-joins would read the whole membership three times).
    """
    if step.sqlite:
        step.driver_sql("unreferenced columns", f"DROP TABLE IF EXISTS temp.{GONE_COLUMNS}")
        step.driver_sql("unreferenced columns", f"CREATE TEMP TABLE {GONE_COLUMNS} (id INTEGER PRIMARY KEY)")
        step.driver_sql(
            "unreferenced columns",
            f"INSERT INTO {GONE_COLUMNS} (id) SELECT id FROM column_versions "
            "WHERE id NOT IN (SELECT column_id FROM run_columns)",
        )
    else:
        step.driver_sql(
            "unreferenced columns",
            f"CREATE TEMP TABLE {GONE_COLUMNS} ON COMMIT DROP AS SELECT v.id FROM column_versions v "
            "WHERE NOT EXISTS (SELECT 1 FROM run_columns r WHERE r.column_id = v.id)",
        )
        step.driver_sql("unreferenced columns", f"ALTER TABLE {GONE_COLUMNS} ADD PRIMARY KEY (id)")
        step.driver_sql("unreferenced columns", f"ANALYZE {GONE_COLUMNS}")
    gone = select(text("id")).select_from(text(GONE_COLUMNS))
    step.run("column_tags", delete(column_tags).where(column_tags.c.column_id.in_(gone)))
    step.run("column_attributes", delete(column_attributes).where(column_attributes.c.column_id.in_(gone)))
    removed = step.run("column_versions", delete(column_versions).where(column_versions.c.id.in_(gone)))
    if step.sqlite:
        step.driver_sql("unreferenced columns", f"DROP TABLE temp.{GONE_COLUMNS}")
    return removed


def _collect_clusters(step: _Statements) -> int:
    """Delete the cluster versions no remaining run refers to, with their labels (few rows)."""
    holders = select(run_clusters.c.cluster_hash)
    if step.sqlite:
        label_gone = cluster_labels.c.cluster_hash.not_in(holders)
        cluster_gone = cluster_versions.c.hash.not_in(holders)
    else:
        label_gone = ~holders.where(run_clusters.c.cluster_hash == cluster_labels.c.cluster_hash).exists()
        cluster_gone = ~holders.where(run_clusters.c.cluster_hash == cluster_versions.c.hash).exists()
    step.run("cluster_labels", delete(cluster_labels).where(label_gone))
    return step.run("cluster_versions", delete(cluster_versions).where(cluster_gone))


# -- reclaiming space ----------------------------------------------------------------------------


def database_size(engine: Engine) -> int | None:
    """The database's size in bytes: the SQLite file with its WAL, or ``pg_database_size``."""
    if engine.dialect.name == "sqlite":
        path = sqlite_file(engine.url)
        if not path:
            return None
        return sum(os.path.getsize(p) for p in (path, f"{path}-wal") if os.path.exists(p))
    if engine.dialect.name == "postgresql":
        with engine.connect() as connection:
            return int(connection.execute(text("SELECT pg_database_size(current_database())")).scalar_one())
    return None  # pragma: no cover - no other dialect is supported


PRUNED_TABLES = (
    "findings",
    "evaluations",
    "run_columns",
    "run_clusters",
    "runs",
    "column_tags",
    "column_attributes",
    "column_versions",
    "cluster_labels",
    "cluster_versions",
)


def vacuum_database(engine: Engine) -> None:
    """Reclaim the space freed by a prune (outside any transaction, as both databases require)."""
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        if connection.dialect.name == "sqlite":
            connection.exec_driver_sql("VACUUM")
            connection.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
        else:
            # PostgreSQL skips a table the role does not own with a mere WARNING, and the prune
            # then said "vacuumed" with nothing vacuumed (found by a PostgreSQL probe)
            foreign = (
                connection.exec_driver_sql(
                    "SELECT c.relname FROM pg_class c WHERE c.relnamespace = current_schema()::regnamespace "
                    "AND c.relname = ANY(%(names)s) AND NOT pg_has_role(c.relowner, 'USAGE') ORDER BY 1",
                    {"names": list(PRUNED_TABLES)},
                )
                .scalars()
                .all()
            )
            if foreign:
                raise StoreError(
                    f"the prune was committed, but VACUUM was not run: only the owner of a table may "
                    f"vacuum it, and this role does not own {', '.join(foreign)}",
                    hint="run auditor db prune --vacuum (or VACUUM) as the role that owns the tables "
                    "(the one that created them)",
                )
            for table in PRUNED_TABLES:
                connection.exec_driver_sql(f"VACUUM (ANALYZE) {table}")
