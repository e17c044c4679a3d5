"""Findings: what a rule found, its fingerprint, and how findings are stored per run.

A :class:`Finding` is one (rule, subject) pair. The subject is a column (cluster id + fully
qualified name), a cluster (its id) or a group (cluster id, or the snapshot, + the group key). Its
**fingerprint** is derived from the rule id and those catalog identifiers only, never from the
message or the rule's text, so it is stable across runs and across edits of a rule's wording or
condition.

Stored findings live in ``evaluations`` (one row per run and rules digest) and ``findings``; a later
request for the same run and the same rules reuses them instead of evaluating again.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from operator import attrgetter, itemgetter
from typing import Any

from sqlalchemy import (
    Column,
    ColumnElement,
    Connection,
    Engine,
    Integer,
    MetaData,
    Table,
    Text,
    and_,
    func,
    literal_column,
    select,
    text,
    update,
)
from sqlalchemy.exc import OperationalError

from auditor import __version__
from auditor.errors import StoreError
from auditor.gcpause import collector_paused
from auditor.store.db import WRITE_HINT, json_text, keys_in, lock_wait_notice, store_errors
from auditor.store.schema import RUN_COMPLETE, evaluations, findings, runs
from auditor.store.writer import insert_tuples, now, sqlite_executemany

FINGERPRINT_VERSION = "v1"
CHUNK = 500

# Column order of the rows store_evaluation inserts.
FINDING_FIELDS = (
    "evaluation_id",
    "run_id",
    "fingerprint",
    "rule_id",
    "severity",
    "kind",
    "cluster_id",
    "column_fqn",
    "subject",
    "columns",
    "message",
    "first_seen_run",
    "status",
    "waiver",
)

STATUS_NEW = "new"
STATUS_EXISTING = "existing"
STATUS_WAIVED = "waived"

KIND_COLUMN = "column"
KIND_CLUSTER = "cluster"
KIND_GROUP = "group"


def fingerprint(rule_id: str, kind: str, cluster_id: str | None, key: str | None) -> str:
    """The stable identity of a finding: 32 hex chars of BLAKE2b over rule id + catalog identifiers."""
    return fingerprint_with(fingerprint_prefix(rule_id, kind), cluster_id, key)


def fingerprint_prefix(rule_id: str, kind: str) -> bytes:
    """The fixed start of the fingerprints of one rule's findings of one kind (see :func:`fingerprint`).

    Rule ids and kinds hold no unit separator (rule ids are kebab-case), so these parts are
    unambiguous; the catalog's own parts are joined by :func:`subject_payload`.
    """
    return "\x1f".join((FINGERPRINT_VERSION, rule_id, kind, "")).encode("utf-8")


def _escaped(text: str) -> str:
    return "\x1e" + text.replace("\x1e", "\x1e\x1e").replace("\x1f", "\x1e_")


def subject_payload(cluster_id: str, key: str) -> str:
    """The catalog's part of a fingerprint: ``cluster_id`` and ``key`` joined by a unit separator.

    Catalog text may hold a unit separator itself: cluster 'p\\x1fq' with column 'r' and cluster
    'p' with column 'q\\x1fr' joined alike, and the two findings' one fingerprint stopped the
    check (a UNIQUE constraint). A part holding a unit or record separator is written escaped
    behind a record separator, so no two subjects join alike; any other part, as it is (every
    fingerprint of ordinary text stays what it was).
    """
    text = f"{cluster_id}\x1f{key}"
    if text.count("\x1f") == 1 and "\x1e" not in text:  # the usual case, in two scans
        return text
    cluster_id = _escaped(cluster_id) if "\x1f" in cluster_id or "\x1e" in cluster_id else cluster_id
    key = _escaped(key) if "\x1f" in key or "\x1e" in key else key
    return f"{cluster_id}\x1f{key}"


def fingerprint_with(prefix: bytes, cluster_id: str | None, key: str | None) -> str:
    """:func:`fingerprint` with the rule's part prepared by :func:`fingerprint_prefix` (hot loops)."""
    payload = prefix + subject_payload(cluster_id or "", key or "").encode()
    return hashlib.blake2b(payload, digest_size=16).hexdigest()


# The stored columns Finding.reader reads, in the order of Finding's fields.
_ROW_FIELDS = (
    "rule_id",
    "severity",
    "kind",
    "cluster_id",
    "column_fqn",
    "columns",
    "message",
    "subject",
    "fingerprint",
    "first_seen_run",
)


def subject_key(kind: str, cluster_id: str | None, key: str | None) -> str:
    """A readable, stable, unique key of the subject within a rule (JUnit case names, CSV, tables)."""
    cluster = cluster_id if cluster_id is not None else "*"
    if kind == KIND_COLUMN:
        return f"{cluster}/{key}"
    if kind == KIND_CLUSTER:
        return cluster
    return f"{cluster}/group:{key}" if key else f"{cluster}/group"


@dataclass(slots=True)
class Finding:
    """One rule matching one subject in one run."""

    rule: str
    severity: str
    kind: str  # column | cluster | group
    cluster_id: str | None
    column: str | None  # fullyQualifiedName for column findings, else None
    columns: list[str]
    message: str
    key: str | None = None  # fqn for column findings, the group key for group findings
    fingerprint: str = ""
    status: str = STATUS_NEW
    first_seen_run: int | None = None
    waiver: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        if not self.fingerprint:
            self.fingerprint = fingerprint(self.rule, self.kind, self.cluster_id, self.key)

    @classmethod
    def from_row(cls, row: Any, **overrides: Any) -> Finding:
        """A finding from a stored ``findings`` row (``overrides`` set status, waiver...).

        For a few rows; a long read builds one :meth:`reader` for its result instead.
        """
        finding = cls.reader(row._fields)(row)
        for name, value in overrides.items():
            setattr(finding, name, value)
        return finding

    @classmethod
    def reader(cls, keys: Iterable[str]) -> Callable[[Any], Finding]:
        """:meth:`from_row` for the rows of one result whose columns are named ``keys``, by position.

        Reading a row's fields by name costs ~0.5 us each in SQLAlchemy 2; by position the whole
        finding is built in ~0.8 us instead of ~7.5 (a 1M-column run has ~390k findings per read).
        """
        names = list(keys)
        get = itemgetter(*(names.index(name) for name in _ROW_FIELDS))

        def read(row: Any) -> Finding:
            rule, severity, kind, cluster_id, column, columns, message, key, fingerprint, first = get(row)
            # positional: the field order of this dataclass (status new, no waiver)
            return cls(
                rule, severity, kind, cluster_id, column, list(columns or ()), message, key, fingerprint,
                STATUS_NEW, first,
            )  # fmt: skip

        return read

    @property
    def subject(self) -> str:
        return subject_key(self.kind, self.cluster_id, self.key)

    @property
    def waived(self) -> bool:
        return self.status == STATUS_WAIVED

    @property
    def waiver_expired(self) -> bool:
        return bool(self.waiver and self.waiver.get("expired"))

    def to_json(self) -> dict[str, Any]:
        """The shared finding shape (check, diff and report all emit this)."""
        data: dict[str, Any] = {
            "rule": self.rule,
            "severity": self.severity,
            "cluster_id": self.cluster_id,
            "column": self.column,
            "columns": list(self.columns),
            "message": self.message,
            "fingerprint": self.fingerprint,
            "status": self.status,
            "first_seen_run": self.first_seen_run,
        }
        if self.waiver is not None:
            data["waiver"] = dict(self.waiver)
        return data


_by_fingerprint = attrgetter("fingerprint")


def sort_key(finding: Finding) -> tuple[Any, ...]:
    return (finding.rule, finding.cluster_id or "", finding.key or "")


# -- storage -------------------------------------------------------------------------------------


def latest_evaluation(connection: Connection, run_id: int, rules_digest: str) -> int | None:
    """The newest stored evaluation of ``run_id`` under exactly this rule set, if any (an
    evaluation of a run still being written is stored under :func:`while_running`'s digest, which
    no rule set has, so it is never found here)."""
    return connection.execute(
        select(func.max(evaluations.c.id)).where(
            evaluations.c.run_id == run_id, evaluations.c.rules_digest == rules_digest
        )
    ).scalar()


def while_running(rules_digest: str) -> str:
    """The digest an evaluation of a run that was still being written is stored under.

    Such an evaluation holds what had been written when it started (``check --allow-incomplete``
    beside a running snapshot); reused once the run was complete, it passed the gate on a partial
    catalog. Stored under this digest (64 hex digits, as a rule set's), it stays readable by the
    command that made it and is never taken for the run's evaluation. Deciding by the run's status
    read before evaluating, rather than by timestamps, holds whatever the machines' clocks say.
    """
    return hashlib.sha256(f"while-running:{rules_digest}".encode()).hexdigest()


def load_findings(connection: Connection, evaluation_id: int) -> list[Finding]:
    rows = connection.execute(
        select(findings)
        .where(findings.c.evaluation_id == evaluation_id)
        .order_by(findings.c.rule_id, findings.c.cluster_id, findings.c.subject)
    )
    read = Finding.reader(rows.keys())
    with collector_paused():  # hundreds of thousands of findings at 1M columns
        out = [read(row) for row in rows]
        out.sort(key=sort_key)
    return out


def evaluation_rows(
    connection: Connection, table: Any, evaluation_id: int, bounds: Any = ...
) -> ColumnElement[bool]:
    """The condition "a row of evaluation ``evaluation_id``" of ``table``, for reading all its rows.

    On SQLite the primary key (evaluation_id, fingerprint) would drive such a scan in fingerprint
    order: one random seek into the table per row. An evaluation's rows are inserted together, so
    its rowid range is read in table order instead, the evaluation id checked on each row (its index
    not used): the same rows, 3 to 8 times faster at 400,000 findings. The plain condition on other
    databases, and for a table without rowid. ``bounds``: :func:`evaluation_bounds`, when the caller
    reads the same evaluation several times (finding the range scans its index entries, ~80 ms at
    400,000 findings).
    """
    if bounds is ...:
        bounds = evaluation_bounds(connection, evaluation_id)
    plain = table.c.evaluation_id == evaluation_id
    if bounds is None:
        return plain
    low, high = bounds
    rowid = literal_column(f"{table.name}.rowid")
    return and_(rowid.between(low, high), (table.c.evaluation_id + 0) == evaluation_id)


def evaluation_bounds(connection: Connection, evaluation_id: int) -> tuple[int, int] | None:
    """The rowid range of an evaluation's findings on SQLite (None elsewhere, or without rows)."""
    if connection.dialect.name != "sqlite":
        return None
    try:
        low, high = connection.execute(
            select(func.min(literal_column("rowid")), func.max(literal_column("rowid")))
            .select_from(findings)
            .where(findings.c.evaluation_id == evaluation_id)
        ).one()
    except OperationalError:  # pragma: no cover - a WITHOUT ROWID table
        return None
    return None if low is None else (int(low), int(high))


def earliest_sightings(connection: Connection, run_id: int, fingerprints: Sequence[str]) -> dict[str, int]:
    """For each fingerprint, the earliest complete run before ``run_id`` known to have had it (any
    rule set).

    Only complete runs count, as for baselines: a finding new against the previous complete run
    had "since run 2" when run 2 was a failed snapshot that was checked with --allow-incomplete.
    Looked up by fingerprint, a chunk at a time (~1.2 s for 400,000 at 1M columns); skipped when no
    earlier complete run has findings at all (the first check of a database).
    """
    found: dict[str, int] = {}
    if not fingerprints:
        return found
    complete = select(runs.c.id).where(runs.c.id < run_id, runs.c.status == RUN_COMPLETE)
    earlier = connection.execute(
        select(findings.c.run_id).where(findings.c.run_id.in_(complete)).limit(1)
    ).first()
    if earlier is None:
        return found
    first = func.min(func.coalesce(findings.c.first_seen_run, findings.c.run_id))
    for start in range(0, len(fingerprints), CHUNK):
        chunk = list(fingerprints[start : start + CHUNK])
        rows = connection.execute(
            select(findings.c.fingerprint, first)
            .where(findings.c.run_id.in_(complete), keys_in(connection, findings.c.fingerprint, chunk))
            .group_by(findings.c.fingerprint)
        )
        for fp, earliest in rows:
            found[fp] = int(earliest)
    return found


@contextlib.contextmanager
def _run_deleted_meanwhile(engine: Engine, run_id: int) -> Iterator[None]:
    """A store that failed because a prune deleted the run meanwhile says so (its foreign key
    error read 'check that the database is writable and not full')."""
    try:
        yield
    except StoreError:
        from auditor.store.runs import check_not_deleted

        check_not_deleted(
            engine,
            [run_id],
            "while its findings were being stored",  # the run checked, or its baseline
            "check a run that is kept, against a baseline that is kept; schedule prunes apart from checks",
        )
        raise


def store_evaluation(
    engine: Engine,
    run_id: int,
    rules_digest: str,
    rule_ids: Iterable[str],
    items: Sequence[Finding],
    *,
    record: bool = False,
    waivers_digest: str | None = None,
) -> int:
    """Store an evaluation and its findings in one transaction; returns the evaluation id.

    With ``record``, each finding's status and waiver are stored with it, as :func:`record_check`
    would record them afterwards (a first check then writes each row once, not twice).

    Two processes checking one run at once (two CI jobs) both evaluate it; the one that comes to
    store second finds the other's evaluation of the same rule set under the write lock, and keeps
    that one (recording its statuses on it with ``record``) instead of storing a duplicate.
    """
    with (
        _run_deleted_meanwhile(engine, run_id),
        store_errors(f"could not store the findings of run {run_id}", WRITE_HINT),
        engine.begin() as connection,
    ):
        _lock_evaluations(connection, run_id, rules_digest)
        stored_meanwhile = latest_evaluation(connection, run_id, rules_digest)
        if stored_meanwhile is None:
            recorded = waivers_digest if record else None
            return _insert_evaluation(connection, run_id, rules_digest, rule_ids, items, record, recorded)
    if record:
        record_check(engine, run_id, stored_meanwhile, waivers_digest, items)
    return int(stored_meanwhile)


def _lock_evaluations(connection: Connection, run_id: int, rules_digest: str) -> None:
    """Take the lock under which an evaluation of (run, rule set) is looked for and then stored."""
    if connection.dialect.name == "sqlite":
        # The write lock now (waiting up to the busy timeout), so that what is read next stays true
        # until the commit; a deferred transaction could not write after another's commit anyway.
        with lock_wait_notice():
            connection.exec_driver_sql("BEGIN IMMEDIATE")
    elif connection.dialect.name == "postgresql":
        digest = hashlib.blake2b(f"evaluation:{run_id}:{rules_digest}".encode(), digest_size=8).digest()
        key = int.from_bytes(digest, "big", signed=True)  # advisory lock keys are signed 64-bit
        connection.exec_driver_sql("SELECT pg_advisory_xact_lock(%(key)s)", {"key": key})


def _insert_evaluation(
    connection: Connection,
    run_id: int,
    rules_digest: str,
    rule_ids: Iterable[str],
    items: Sequence[Finding],
    record: bool,
    waivers_digest: str | None,
) -> int:
    inserted = connection.execute(
        evaluations.insert().values(
            run_id=run_id,
            created_at=now(),
            rules_digest=rules_digest,
            waivers_digest=waivers_digest,
            rule_ids=sorted(rule_ids),
            tool_version=__version__,
        )
    ).inserted_primary_key
    assert inserted is not None
    evaluation_id = int(inserted[0])
    # Sorted by fingerprint: the three indexes on fingerprints then grow in key order instead
    # of taking ~400k inserts at random places (1M columns), and the rows of an evaluation
    # sit in the table in primary-key order, which later key-ordered reads follow.
    rows = sorted(
        (
            (
                evaluation_id,
                run_id,
                f.fingerprint,
                f.rule,
                f.severity,
                f.kind,
                f.cluster_id,
                f.column,
                f.key,
                json_text(list(f.columns)),
                f.message,
                f.first_seen_run,
                f.status if record else None,
                json_text(f.waiver if record else None),
            )
            for f in items
        ),
        key=itemgetter(2),
    )
    insert_tuples(connection, findings, FINDING_FIELDS, rows, ignore=False)
    return evaluation_id


# The states of one check, copied in for a single UPDATE (PostgreSQL; dropped at commit).
_CHECK_STATES = Table(
    "auditor_check_states",
    MetaData(),
    Column("fingerprint", Text, primary_key=True),
    Column("status", Text),
    Column("waiver", Text),  # JSON text, compared as text with the stored json value's text
    Column("first_seen_run", Integer),
    prefixes=["TEMPORARY"],
    postgresql_on_commit="DROP",
)


def _record_states_postgresql(connection: Connection, evaluation_id: int, ordered: Sequence[Finding]) -> None:
    """:func:`record_check` on PostgreSQL: the states are copied into a temporary table and one
    ``UPDATE … FROM`` rewrites only the rows whose state changed, as the SQLite path does.

    An ``UPDATE`` per finding wrote every row (its ``json`` type has no equality to skip unchanged
    ones): 11.7 s for a repeated check of 389k findings that changed none.
    """
    _CHECK_STATES.create(connection)
    insert_tuples(
        connection,
        _CHECK_STATES,
        ("fingerprint", "status", "waiver", "first_seen_run"),
        ((f.fingerprint, f.status, json_text(f.waiver), f.first_seen_run) for f in ordered),
        ignore=False,
    )
    connection.execute(
        text(
            "UPDATE findings AS f SET status = s.status, waiver = s.waiver::json, "
            "first_seen_run = s.first_seen_run FROM auditor_check_states AS s "
            "WHERE f.evaluation_id = :evaluation AND f.fingerprint = s.fingerprint "
            "AND (f.status IS DISTINCT FROM s.status OR f.waiver::text IS DISTINCT FROM s.waiver "
            "OR f.first_seen_run IS DISTINCT FROM s.first_seen_run)"
        ),
        {"evaluation": evaluation_id},
    )


def record_check(
    engine: Engine, run_id: int, evaluation_id: int, waivers_digest: str | None, items: Sequence[Finding]
) -> None:
    """Record the statuses and waiver states of the latest check of run ``run_id``'s stored
    evaluation ``evaluation_id`` (errors name the run: the evaluation's id is nowhere to be seen)."""
    from sqlalchemy import bindparam

    with (
        store_errors(f"could not record the check of run {run_id}", WRITE_HINT),
        engine.begin() as connection,
    ):
        connection.execute(
            update(evaluations).where(evaluations.c.id == evaluation_id).values(waivers_digest=waivers_digest)
        )
        ordered = sorted(items, key=_by_fingerprint)  # the key lookups walk the primary key in order
        if ordered and connection.dialect.name == "sqlite":
            # A repeated check (the same baseline and waivers) changes nothing: rows already
            # holding their state are not rewritten (~400k rows at 1M columns).
            # Plain '?' with the values repeated: CPython 3.12.0-3.12.3 warn of numbered ones ('?1')
            # bound from a sequence, as of a named placeholder.
            sqlite_executemany(
                connection,
                "UPDATE findings SET status = ?, waiver = ?, first_seen_run = ? "
                "WHERE evaluation_id = ? AND fingerprint = ? "
                "AND (status IS NOT ? OR waiver IS NOT ? OR first_seen_run IS NOT ?)",
                (
                    (state := (f.status, json_text(f.waiver), f.first_seen_run))
                    + (evaluation_id, f.fingerprint)
                    + state
                    for f in ordered
                ),
            )
        elif ordered and connection.dialect.name == "postgresql":
            _record_states_postgresql(connection, evaluation_id, ordered)
        elif ordered:  # other databases: every row is written
            connection.execute(
                update(findings)
                .where(
                    findings.c.evaluation_id == bindparam("b_eval"),
                    findings.c.fingerprint == bindparam("b_fp"),
                )
                .values(
                    status=bindparam("status"),
                    waiver=bindparam("waiver"),
                    first_seen_run=bindparam("first_seen_run"),
                ),
                [
                    {
                        "status": f.status,
                        "waiver": f.waiver,
                        "first_seen_run": f.first_seen_run,
                        "b_eval": evaluation_id,
                        "b_fp": f.fingerprint,
                    }
                    for f in ordered
                ],
            )
