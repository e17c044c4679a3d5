"""The snapshot writer: streams clusters and column pages into one run, in batched transactions.

One :class:`SnapshotWriter` per run, used from one thread (the fetch stage hands it pages through a
queue). Records are content-addressed (see :mod:`auditor.store.schema`): a version already in the
database is not written again; the run only gains membership rows pointing at it. All writes are
bulk Core ``INSERT``\\s, batched so that many pages share one transaction.

A run is created ``running`` and becomes ``complete`` only through :meth:`SnapshotWriter.complete`;
:meth:`SnapshotWriter.fail` marks it ``failed`` with the reason. A process killed in between leaves
the run ``running``, which nothing downstream treats as usable. So that such a run can be told
from one still being written, the run records its writer when it starts (host, PID, boot id and
process start time: :func:`auditor.store.runs.writer_identity`, in ``runs.details["writer"]``);
``auditor db prune`` marks it failed once that process is provably gone.

A run ends once: :meth:`SnapshotWriter.complete` and :meth:`SnapshotWriter.fail` only change a run
that is still ``running``, and raise :class:`StoreError` when a prune marked it failed (or deleted
it) meanwhile, rather than report a run that is not there as complete.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import operator
import time
from collections.abc import Iterable, Mapping, Sequence, Sized
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import orjson
from sqlalchemy import JSON, Boolean, Connection, Engine, Table, bindparam, delete, func, select, update
from sqlalchemy.dialects import postgresql
from sqlalchemy.exc import DBAPIError, SQLAlchemyError

from auditor import __version__
from auditor.bigid.models import (
    MAX_CLUSTER_ID_BYTES,
    MAX_DEPTH,
    MAX_FQN_BYTES,
    Cluster,
    Column,
    RecordTooDeep,
    check_key,
    nesting_depth,
)
from auditor.errors import StoreError
from auditor.store.db import (
    WRITE_HINT,
    bounded_lock_wait,
    file_identity,
    json_text,
    keys_in,
    lock_wait_notice,
    require_same_file,
    sidecar_identities,
    store_errors,
)
from auditor.store.runs import WRITER_KEY, writer_identity
from auditor.store.schema import (
    RUN_COMPLETE,
    RUN_FAILED,
    RUN_RUNNING,
    cluster_labels,
    cluster_versions,
    column_attributes,
    column_tags,
    column_versions,
    run_clusters,
    run_columns,
    runs,
)

HASH_CHUNK = 500  # bound parameters per "which hashes exist" query
SQLITE_CACHE_KIB = 65_536  # page cache of the writing connection (64 MiB)


def canonical_json(value: Any) -> bytes:
    """Canonical JSON bytes (sorted keys): the input of every content hash.

    Raises :class:`auditor.bigid.models.RecordTooDeep` for a value nested more than ``MAX_DEPTH``
    levels deep (:func:`cluster_record` and :func:`column_rows` say which record).

    Records parsed from JSON only have string keys, which orjson sorts faster without
    ``OPT_NON_STR_KEYS`` (a third of this call); other keys take the slower option, with the same
    bytes for the string keys either way.
    """
    try:
        return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)
    except TypeError:  # orjson.JSONEncodeError: a key that is not a string, or a huge integer
        pass
    try:
        return orjson.dumps(value, option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS)
    except TypeError:  # e.g. integers beyond 64 bits, or nested deeper than orjson's 255 levels
        pass
    if nesting_depth(value) > MAX_DEPTH:  # the standard library would run out of recursion
        raise RecordTooDeep
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str).encode()


def now() -> datetime:
    return datetime.now(UTC)


def _insert_ignore_core(connection: Connection, table: Table, rows: list[dict[str, Any]]) -> None:
    """Bulk insert through SQLAlchemy, skipping rows whose primary key exists (PostgreSQL)."""
    connection.execute(postgresql.insert(table).on_conflict_do_nothing(), rows)


def storable_text(text: str | None) -> str | None:
    """An error message as the database can hold it: a lone UTF-16 surrogate (from a record quoted
    in it) as its escape, NUL as ``\\x00``. Otherwise the write that marks a run failed failed too,
    with an internal error, and left the run ``running``."""
    if text is None:
        return None
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text.replace("\x00", "\\x00")


CLUSTER_SHORT = "short"  # a cluster's fetch_status when it served fewer columns than announced


@dataclass
class ClusterStats:
    """What fetching one cluster's columns found, recorded in ``run_clusters``."""

    total_announced: int | None = None  # ``totalCount`` from the columns endpoint
    columns_fetched: int = 0  # distinct columns stored
    duplicate_rows: int = 0
    pages: int = 0
    error: str | None = None  # set when the cluster could not be fetched in full
    # the listing ended (an empty page, asked for twice) before what the API announced: the columns
    # served are stored, and the cluster is recorded ``short`` (a diff does not compare it)
    ended_short: bool = False


@dataclass
class RunTotals:
    """Run-level counters recorded when the run ends."""

    clusters_announced: int | None = None
    requests: int = 0
    retries: int = 0
    auth_scheme: str | None = None
    details: dict[str, Any] = field(default_factory=dict)


def cluster_record(
    cluster: Cluster, raw: Mapping[str, Any]
) -> tuple[str, dict[str, Any], list[dict[str, Any]]]:
    """(hash, cluster_versions row, cluster_labels rows) for one cluster."""
    check_key(cluster.id, MAX_CLUSTER_ID_BYTES)
    try:
        blob = canonical_json(raw)  # one serialisation: the hash and the stored raw (as for columns)
    except RecordTooDeep:
        raise RecordTooDeep(cluster.id) from None
    digest = hashlib.blake2b(blob, digest_size=16).hexdigest()
    row = {
        "hash": digest,
        "cluster_id": cluster.id,
        "name": cluster.name,
        "size": cluster.size,
        "severity": cluster.severity,
        "status": cluster.status,
        "created_at": cluster.createdAt,
        "cluster_type": cluster.type,
        "raw": blob.decode(),  # JSON text: see insert_tuples
    }
    labels = [
        {"cluster_hash": digest, "position": i, "label": label} for i, label in enumerate(cluster.labels)
    ]
    return digest, row, labels


# Column order of the tuples the hot path builds (and of the INSERTs that take them).
COLUMN_FIELDS = (
    "hash",
    "fqn",
    "column_name",
    "table_name",
    "source",
    "data_type",
    "is_primary",
    "business_attribute",
    "raw",
)
TAG_FIELDS = (
    "column_id",
    "position",
    "tag_id",
    "value_id",
    "tag_name",
    "tag_value",
    "is_mutually_exclusive",
    "hidden",
    "application_type",
)
ATTRIBUTE_FIELDS = (
    "column_id",
    "position",
    "attribute_name",
    "attribute_original_name",
    "rank",
    "confidence",
    "attribute_type",
    "attribute_id",
)
MEMBER_FIELDS = ("run_id", "cluster_id", "fqn", "column_id")
VERSION_FIELDS = ("id", *COLUMN_FIELDS)


ColumnRows = tuple[str, tuple, tuple[tuple, ...], tuple[tuple, ...]]
# Booleans travel as the integers SQLite stores: its driver binds an exact int directly but looks
# a bool up as a type to adapt first (two failed attribute lookups per value). insert_tuples turns
# them back into booleans for databases with a real boolean type.
_FLAG: dict[bool | None, int | None] = {True: 1, False: 0, None: None}
_digest_of = operator.itemgetter(0)  # a ColumnRows' content hash
# One object per distinct repeated value seen lately (bounded: cleared when it grows past the max).
_SHARED: dict[str | None, str | None] = {}
SHARED_VALUES_MAX = 50_000


def column_rows(column: Column, raw: Mapping[str, Any]) -> ColumnRows:
    """(hash, column_versions row, column_tags rows, column_attributes rows) as tuples.

    The raw record is serialised once, canonically: the same bytes give the content hash and are
    stored as ``raw`` (a snapshot's hot path: one call per column). Rows follow ``COLUMN_FIELDS``,
    ``TAG_FIELDS[1:]`` and ``ATTRIBUTE_FIELDS[1:]``: the version id they lack is only known to the
    writer, which prepends it when it inserts a new version.

    Tuples, not lists: a snapshot's writer keeps up to a batch of these alive across many garbage
    collections, and the collector stops tracking a tuple of plain values after its first pass,
    whereas every list stays tracked and is scanned again by each full collection (this cost the
    writing process a fifth of its CPU when the rows were lists).

    Values that repeat from column to column (names of tables, sources and types; tag and
    attribute names, values and ids) are shared objects (see :data:`_SHARED`), so a page pickled
    for the writing process carries each of them once and unpickles into one object.
    """
    share = _SHARED.setdefault
    if len(_SHARED) > SHARED_VALUES_MAX:
        _SHARED.clear()
    check_key(column.fullyQualifiedName, MAX_FQN_BYTES)
    try:
        blob = canonical_json(raw)
    except RecordTooDeep:
        raise RecordTooDeep(column.fullyQualifiedName) from None
    digest = hashlib.blake2b(blob, digest_size=16).hexdigest()
    version = (
        digest,
        column.fullyQualifiedName,
        share(column.columnName, column.columnName),
        share(column.tableName, column.tableName),
        share(column.source, column.source),
        share(column.dataType, column.dataType),
        _FLAG[column.isPrimary],
        share(column.businessAttribute, column.businessAttribute),
        blob.decode(),  # JSON text, stored as is (see insert_tuples)
    )
    tags = []
    for i, tag in enumerate(column.tags):
        props = tag.properties
        tags.append(
            (
                i,
                share(tag.tagId, tag.tagId),
                share(tag.valueId, tag.valueId),
                share(tag.tagName, tag.tagName),
                share(tag.tagValue, tag.tagValue),
                _FLAG[tag.isMutuallyExclusive],
                _FLAG[props.hidden] if props is not None else None,
                share(props.applicationType, props.applicationType) if props is not None else None,
            )
        )
    attributes = tuple(
        [
            (
                i,
                share(attribute.attribute_name, attribute.attribute_name),
                share(attribute.attribute_original_name, attribute.attribute_original_name),
                share(rank, rank) if (rank := attribute.rank).__class__ is not list else one_rank(rank),
                # NaN and infinities are no confidence (SQLite stored NaN as NULL, PostgreSQL as NaN
                # above every number): x - x is 0.0 for a finite float only. + 0.0 turns -0.0 into
                # 0.0, as SQLite stores it (PostgreSQL kept the sign: the diff showed "-0.0" there)
                value + 0.0
                if (value := attribute.calc_confidence_level).__class__ is float and value - value == 0.0
                else confidence(value),
                share(kind, kind)
                if (kind := attribute.attribute_type).__class__ is not list
                else one_text(kind),
                share(attribute.attribute_id, attribute.attribute_id),
            )
            for i, attribute in enumerate(column.attributes)
        ]
    )
    return digest, version, tuple(tags), attributes


def confidence(value: Any) -> float | None:
    """An attribute's confidence as stored: a number as it is (NaN and infinities as none), text as
    the number it writes ("0.69"), a percentage as a fraction ("69.5%" is 0.695), anything else as
    none (the raw record keeps it as sent)."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | float):
        number = float(value)
    else:
        text = str(value).strip()
        if "_" in text:  # (float() reads "1_0" as 10: a Python literal's digit separator)
            return None
        try:
            # a percentage divided in decimal: "33.3%" is the double nearest 0.333, which a rule's
            # threshold of 0.333 is too (float("33.3") / 100 is 0.33299999999999996: a probe)
            number = float(Decimal(text[:-1]) / 100) if text.endswith("%") else float(text)
        except (ValueError, ArithmeticError):  # (decimal.InvalidOperation is an ArithmeticError)
            return None
    return number + 0.0 if math.isfinite(number) else None  # -0.0 as 0.0, on every database


_RANK_ORDER = {"high": 3, "medium": 2, "low": 1}


def one_rank(ranks: list[str]) -> str | None:
    """The rank of an attribute sent as a list (``ranks: ["MEDIUM", "HIGH"]``): the highest one
    (High, Medium, Low, any case), else the first; ``None`` for an empty list."""
    if not ranks:
        return None
    return max(ranks, key=lambda rank: _RANK_ORDER.get(rank.strip().lower(), 0))


def one_text(values: list[str]) -> str | None:
    """A field sent as a list where one text is stored (an attribute's ``type``): joined by ", "."""
    return ", ".join(values) if values else None


def insert_dicts(connection: Connection, table: Table, rows: list[dict[str, Any]], *, ignore: bool) -> None:
    """:func:`insert_tuples` for rows given as dicts that all carry the same keys."""
    if rows:
        fields = tuple(rows[0])
        insert_tuples(connection, table, fields, [tuple(row.values()) for row in rows], ignore=ignore)


def sqlite_executemany(connection: Connection, statement: str, rows: Iterable[Sequence[Any]]) -> None:
    """SQLite's own ``executemany`` in the connection's transaction, for bulk writes.

    It takes rows as any sequences, from any iterable (the writer streams rows from a generator),
    with none of SQLAlchemy's per-row checks; a driver error is raised as SQLAlchemy's
    ``DBAPIError``, which callers already turn into a one-line ``StoreError``.
    """
    cursor = connection.connection.cursor()
    driver_error = connection.dialect.dbapi.Error  # pysqlite3's or sqlite3's (auditor.store.db)
    try:
        cursor.executemany(statement, rows)
    except driver_error as exc:
        raise DBAPIError.instance(statement, None, exc, driver_error) from None
    finally:
        cursor.close()


def _copy_rows(
    connection: Connection, table: Table, fields: tuple[str, ...], rows: Iterable[Sequence[Any]]
) -> None:
    """Rows into a PostgreSQL table with ``COPY … FROM STDIN`` (psycopg 3), in the connection's
    transaction, written as they come.

    An ``executemany`` of ``INSERT`` sends one statement per row (psycopg pipelines them, but each
    row is still bound and executed on its own): ~20 µs of client time per row, three quarters of a
    PostgreSQL snapshot's writing. JSON values arrive as JSON text and are sent as such (``None``
    as JSON ``null``, as SQLAlchemy's JSON type stores it); flags as 0/1, which PostgreSQL's boolean
    input accepts. A driver error (a NUL character in a text value, say) is raised as SQLAlchemy's
    ``DBAPIError``, as the ``INSERT`` would raise it.
    """
    json_positions = [i for i, name in enumerate(fields) if isinstance(table.c[name].type, JSON)]
    statement = f"COPY {table.name} ({', '.join(fields)}) FROM STDIN"
    dbapi = connection.dialect.loaded_dbapi
    try:
        with connection.connection.driver_connection.cursor() as cursor, cursor.copy(statement) as copy:
            for row in rows:
                if json_positions:
                    row = list(row)
                    for i in json_positions:
                        value = row[i]
                        if not isinstance(value, str):
                            row[i] = json_text(value)
                copy.write_row(row)
    except dbapi.Error as exc:
        raise DBAPIError.instance(statement, None, exc, dbapi.Error) from exc


def insert_tuples(
    connection: Connection,
    table: Table,
    fields: tuple[str, ...],
    rows: Iterable[Sequence[Any]],
    *,
    ignore: bool,
) -> None:
    """Bulk insert of positional rows (``fields`` order); ``ignore`` skips existing primary keys.

    Values of JSON columns are given as JSON *text* (the canonical serialisation the content hash
    was computed from; a plain ``str``, which pickles cheaply between processes), stored as is;
    values of boolean columns may be given as 0/1 (what SQLite stores).
    SQLite gets the rows (tuples or lists, or a generator of them) as they come, in one driver
    ``executemany``; PostgreSQL through psycopg 3, the same, in one ``COPY`` (:func:`_copy_rows`);
    other databases, and rows to skip on PostgreSQL, go as dicts through SQLAlchemy, the JSON text
    decoded back for their JSON type.
    """
    if isinstance(rows, Sized) and not rows:
        return
    if connection.dialect.name == "sqlite":
        verb = "INSERT OR IGNORE" if ignore else "INSERT"
        placeholders = ", ".join("?" for _ in fields)
        statement = f"{verb} INTO {table.name} ({', '.join(fields)}) VALUES ({placeholders})"
        sqlite_executemany(connection, statement, rows)
        return
    if not ignore and connection.dialect.name == "postgresql" and connection.dialect.driver == "psycopg":
        _copy_rows(connection, table, fields, rows)
        return
    json_fields = {name for name in fields if isinstance(table.c[name].type, JSON)}
    flag_fields = {name for name in fields if isinstance(table.c[name].type, Boolean)}
    dicts = [
        {
            name: (
                orjson.loads(value)
                if name in json_fields and isinstance(value, str)
                else bool(value)
                if name in flag_fields and value is not None
                else value
            )
            for name, value in zip(fields, row, strict=True)
        }
        for row in rows
    ]
    if not dicts:
        return
    if ignore:
        _insert_ignore_core(connection, table, dicts)
    else:
        connection.execute(table.insert(), dicts)


class SnapshotWriter:
    """Writes one run. Not thread-safe: feed it from a single thread.

    Typical use::

        writer = SnapshotWriter(engine, source_url=url, cluster_filter=None)
        run_id = writer.run_id
        writer.add_cluster(cluster, raw, position=0)
        writer.add_columns(cluster.id, [(column, raw_column), ...])
        writer.finish_cluster(cluster.id, ClusterStats(columns_fetched=..., pages=...))
        writer.complete(RunTotals(...))      # or writer.fail("reason")
    """

    def __init__(
        self,
        engine: Engine,
        *,
        source_url: str | None,
        cluster_filter: str | None = None,
        batch_rows: int = 25_000,
        details: dict[str, Any] | None = None,
    ) -> None:
        self.engine = engine
        self.batch_rows = batch_rows
        self._pending_cluster_versions: dict[str, dict[str, Any]] = {}
        self._pending_labels: dict[str, list[dict[str, Any]]] = {}
        self._pending_run_clusters: list[dict[str, Any]] = []
        self._pending_column_versions: dict[str, ColumnRows] = {}
        self._pending_pages: list[tuple[str, list[ColumnRows]]] = []  # (cluster id, rows): membership
        self._pending_rows = 0
        self._pending_stats: list[dict[str, Any]] = []
        self._discarded: list[str] = []  # failed clusters whose written columns are to be deleted
        self._unfinished: set[str] = set()  # clusters added and not finished yet
        self._written: set[str] = set()  # unfinished clusters with columns already written
        # What the database holds (counted when a flush commits), and what the queue will add: a
        # failed run whose last flush could not be written (a full disk) records what it holds.
        self._clusters_stored = 0
        self._columns_stored = 0
        self._queued_clusters = 0
        self._queued_columns = 0
        self._columns_announced = 0
        self._any_announced = False
        self._closed = False
        self.flushed_at = time.monotonic()  # when the last flush committed (or the run began)
        with store_errors("could not start a run", WRITE_HINT), engine.begin() as connection:
            result = connection.execute(
                runs.insert().values(
                    started_at=now(),
                    status=RUN_RUNNING,
                    source_url=source_url,
                    cluster_filter=cluster_filter,
                    tool_version=__version__,
                    details={**(details or {}), WRITER_KEY: writer_identity()},
                )
            )
            self.run_id: int = int(result.inserted_primary_key[0])
        self._file = file_identity(engine)  # checked before every write: see require_same_file
        self._sidecars = sidecar_identities(engine)

    # -- feeding -------------------------------------------------------------------------------

    def add_cluster(self, cluster: Cluster, raw: Mapping[str, Any], position: int) -> str:
        """Register a cluster of this run (before its columns). Returns its content hash."""
        digest, row, labels = cluster_record(cluster, raw)
        self._unfinished.add(cluster.id)
        self._pending_cluster_versions[digest] = row
        self._pending_labels[digest] = labels
        self._pending_run_clusters.append(
            {
                "run_id": self.run_id,
                "cluster_id": cluster.id,
                "cluster_hash": digest,
                "position": position,
                "size_announced": cluster.size,
                "total_announced": None,
                "columns_fetched": 0,
                "duplicate_rows": 0,
                "pages": 0,
                "fetch_status": "fetching",
                "error": None,
            }
        )
        return digest

    def add_columns(self, cluster_id: str, columns: Iterable[tuple[Column, Mapping[str, Any]]]) -> int:
        """Queue the columns of a page (already de-duplicated by the fetcher). Returns how many."""
        return self.add_column_rows(cluster_id, (column_rows(column, raw) for column, raw in columns))

    def add_column_rows(self, cluster_id: str, rows: Iterable[ColumnRows]) -> int:
        """:meth:`add_columns` for rows :func:`column_rows` already built (e.g. in another process).

        The page is kept as it came (its rows give the membership rows at the flush); a version
        seen twice in a batch (the same content under two clusters) is one entry, with equal rows.
        """
        page = rows if isinstance(rows, list) else list(rows)
        self._pending_column_versions.update(zip(map(_digest_of, page), page, strict=True))
        self._pending_pages.append((cluster_id, page))
        self._pending_rows += len(page)
        if self._pending_rows >= self.batch_rows:
            self.flush()
        return len(page)

    def finish_cluster(self, cluster_id: str, stats: ClusterStats) -> None:
        """Record how fetching the cluster went (complete, or failed with ``stats.error``).

        A failed cluster keeps no column in the run: the pages of it still queued are dropped, and
        those already written are deleted with the next flush. A cluster is in a run with all its
        columns or with none (``fetch_status = 'failed'``, ``columns_fetched = 0``), so a run read
        with ``--allow-incomplete`` never holds half a cluster. Feed no more of its pages after.
        """
        self._unfinished.discard(cluster_id)
        if stats.error is None:
            self._written.discard(cluster_id)
        else:
            self._discard_columns({cluster_id})
            stats = ClusterStats(total_announced=stats.total_announced, error=stats.error)
        self._pending_stats.append(
            {
                "b_run_id": self.run_id,
                "b_cluster_id": cluster_id,
                "total_announced": stats.total_announced,
                "columns_fetched": stats.columns_fetched,
                "duplicate_rows": stats.duplicate_rows,
                "pages": stats.pages,
                "fetch_status": "failed"
                if stats.error
                else CLUSTER_SHORT
                if stats.ended_short
                else "complete",
                "error": storable_text(stats.error),
            }
        )
        if stats.error is None:
            self._queued_clusters += 1
        self._queued_columns += stats.columns_fetched

    def restart_cluster(self, cluster_id: str) -> None:
        """Drop the columns fed so far for unfinished ``cluster_id``: it is listed again from its first
        page (its listing changed while it was paged). Those already written are deleted with the
        next flush, before any page fed after this call is written."""
        if cluster_id not in self._unfinished:
            raise ValueError(f"cluster {cluster_id!r} is not being fetched in run {self.run_id}")
        self._discard_columns({cluster_id})

    def discard_unfinished(self) -> None:
        """Keep no column of the clusters not finished yet (a snapshot stopped before them).

        They stay ``fetching`` in ``run_clusters``; what was written of them is deleted with the
        next flush, as for a failed cluster. Feed no more of their pages after.
        """
        self._discard_columns(self._unfinished)

    def _discard_columns(self, cluster_ids: set[str]) -> None:
        kept = [(cid, page) for cid, page in self._pending_pages if cid not in cluster_ids]
        if len(kept) != len(self._pending_pages):
            self._pending_pages = kept
            self._pending_rows = sum(len(page) for _, page in kept)
        # only clusters some of whose columns an earlier flush wrote need a DELETE (a stopped
        # snapshot discards every cluster not fetched yet: thousands, mostly never written)
        written = self._written & cluster_ids
        self._written -= written
        self._discarded.extend(sorted(written))

    # -- writing -------------------------------------------------------------------------------

    @property
    def pending(self) -> bool:
        """Whether anything is queued that :meth:`flush` would write."""
        queued = (self._pending_run_clusters, self._pending_rows, self._pending_stats, self._discarded)
        return any(queued)

    def waited(self, seconds: float) -> bool:
        """Whether something is queued and the last flush (or the run's start) is ``seconds`` old."""
        return self.pending and time.monotonic() - self.flushed_at >= seconds

    def flush(self, *, patience: float | None = None) -> None:
        """Write everything queued, in one transaction (``patience``: see :meth:`fail`)."""
        if not self.pending:
            return
        require_same_file(self.engine, self._file, f"run {self.run_id} was written", self._sidecars)
        with store_errors(f"could not write run {self.run_id}", WRITE_HINT):
            try:
                with self.engine.begin() as connection, bounded_lock_wait(connection, patience):
                    if connection.dialect.name == "sqlite":
                        # content hashes are random keys: a 2 MB default cache thrashes on big runs
                        connection.exec_driver_sql(f"PRAGMA cache_size=-{SQLITE_CACHE_KIB}")
                    self._write(connection)
            except SQLAlchemyError as exc:  # NUL (PostgreSQL): say which record; else store_errors'
                where = self._holder_of_nul() if "NUL" in str(getattr(exc, "orig", exc)) else None
                if where is None:
                    raise
                raise StoreError(
                    f"could not write run {self.run_id}: the database cannot store the NUL character "
                    f"(U+0000) that {where} contains",
                    hint="PostgreSQL text cannot hold U+0000 (SQLite can: --db FILE.db); or have the "
                    "value corrected in BigID",
                ) from None
            except (OverflowError, ValueError) as exc:  # a value the driver cannot bind (SQLite)
                raise StoreError(
                    f"could not write run {self.run_id}: {type(exc).__name__}: {str(exc)[:200]}",
                    hint="a value received does not fit the database; re-run with --debug and report it",
                ) from None
        self._written.update(cid for cid, _ in self._pending_pages if cid in self._unfinished)
        self._clusters_stored += self._queued_clusters
        self._columns_stored += self._queued_columns
        self._queued_clusters = self._queued_columns = 0
        self._pending_cluster_versions.clear()
        self._pending_labels.clear()
        self._pending_run_clusters.clear()
        self._pending_column_versions.clear()
        self._pending_pages.clear()
        self._pending_rows = 0
        self._pending_stats.clear()
        self._discarded.clear()
        self.flushed_at = time.monotonic()

    @property
    def clusters_stored(self) -> int:
        """Clusters recorded complete so far (written, or queued to be with the next flush)."""
        return self._clusters_stored + self._queued_clusters

    def _holder_of_nul(self) -> str | None:
        """Which queued record has a text value with a NUL character (PostgreSQL refuses them)."""
        for digest, row in self._pending_cluster_versions.items():
            labels = [label["label"] for label in self._pending_labels.get(digest, ())]
            if _has_nul([*row.values(), *labels]):
                return f"cluster {row['cluster_id']!r}"
        for cluster_id, page in self._pending_pages:
            for _digest, version, tags, attributes in page:
                if _has_nul([*version[:-1], *(v for t in (*tags, *attributes) for v in t)]):
                    return f"column {version[1]!r} of cluster {cluster_id!r}"
        return None

    def _write(self, connection: Connection) -> None:
        # Lock first, before any read: on SQLite a transaction that read and then writes after
        # another writer committed fails at once (SQLITE_BUSY_SNAPSHOT) instead of waiting.
        _lock_versions(connection, self.run_id)
        if self._pending_cluster_versions:  # versions stored before are skipped by their key
            insert_dicts(
                connection, cluster_versions, list(self._pending_cluster_versions.values()), ignore=True
            )
            insert_dicts(
                connection,
                cluster_labels,
                [label for labels in self._pending_labels.values() for label in labels],
                ignore=True,
            )
        if self._pending_run_clusters:
            connection.execute(run_clusters.insert(), self._pending_run_clusters)
        # Columns earlier flushes wrote of a cluster that failed or is listed again: deleted before
        # the pages fed since are written (a cluster listed again has some among them).
        for cluster_id in self._discarded:
            connection.execute(
                delete(run_columns)
                .where(run_columns.c.run_id == self.run_id)
                .where(run_columns.c.cluster_id == cluster_id)
            )
        if self._pending_rows:
            ids = _store_versions(connection, self._pending_column_versions)
            run_id = self.run_id
            members = (
                (run_id, cluster_id, row[1][1], ids[row[0]])  # row[1][1]: the fqn (COLUMN_FIELDS)
                for cluster_id, page in self._pending_pages
                for row in page
            )
            insert_tuples(connection, run_columns, MEMBER_FIELDS, members, ignore=False)
        if self._pending_stats:
            connection.execute(
                update(run_clusters)
                .where(run_clusters.c.run_id == bindparam("b_run_id"))
                .where(run_clusters.c.cluster_id == bindparam("b_cluster_id"))
                .values(
                    total_announced=bindparam("total_announced"),
                    columns_fetched=bindparam("columns_fetched"),
                    duplicate_rows=bindparam("duplicate_rows"),
                    pages=bindparam("pages"),
                    fetch_status=bindparam("fetch_status"),
                    error=bindparam("error"),
                ),
                self._pending_stats,
            )
            for stat in self._pending_stats:
                announced = stat["total_announced"]
                if announced is not None:
                    self._any_announced = True
                    self._columns_announced += announced

    # -- ending --------------------------------------------------------------------------------

    def complete(self, totals: RunTotals) -> None:
        """Flush and mark the run ``complete``. Call only when every cluster was fetched in full."""
        self.flush()
        self._end(RUN_COMPLETE, totals, None)

    def fail(self, error: str, totals: RunTotals | None = None, *, patience: float | None = None) -> None:
        """Flush what can be flushed and mark the run ``failed`` with ``error``.

        ``patience`` (seconds; a user stopping the command): the last flush and the marking wait at
        most that long for another writer's lock. Otherwise Ctrl-C or SIGTERM would wait it out
        (minutes); the run is then left ``running``, and ``auditor db prune`` marks it failed once
        its process is gone (abandoned).
        """
        # A flush failure of any kind must not keep the run from being marked failed (it would stay
        # ``running``); the run stays not-complete either way.
        deadline = None if patience is None else time.monotonic() + patience
        with contextlib.suppress(Exception):
            self.flush(patience=patience)
        # the flush and the marking share the patience: a stop waits at most that long in all
        left = None if deadline is None else max(0.1, deadline - time.monotonic())
        self._end(RUN_FAILED, totals or RunTotals(), error, patience=left)

    def _end(
        self, status: str, totals: RunTotals, error: str | None, *, patience: float | None = None
    ) -> None:
        if self._closed:
            return
        require_same_file(self.engine, self._file, f"run {self.run_id} was written", self._sidecars)
        with (
            store_errors(f"could not finish run {self.run_id}", WRITE_HINT),
            self.engine.begin() as connection,
            bounded_lock_wait(connection, patience),
        ):
            details = (
                connection.execute(select(runs.c.details).where(runs.c.id == self.run_id)).scalar() or {}
            )
            details = {**details, **totals.details}
            ended = connection.execute(
                update(runs)
                .where(runs.c.id == self.run_id)
                .where(runs.c.status == RUN_RUNNING)  # a prune may have marked it failed meanwhile
                .values(
                    status=status,
                    finished_at=now(),
                    clusters_announced=totals.clusters_announced,
                    clusters_stored=self._clusters_stored,
                    columns_announced=self._columns_announced if self._any_announced else None,
                    columns_stored=self._columns_stored,
                    requests=totals.requests,
                    retries=totals.retries,
                    auth_scheme=totals.auth_scheme,
                    error=storable_text(error),
                    details=details,
                )
            )
            if ended.rowcount != 1:
                self._closed = True  # nothing more can be recorded for it
                current = connection.execute(
                    select(runs.c.status, runs.c.error).where(runs.c.id == self.run_id)
                ).first()
                if current is None:
                    state = "it was deleted while it was being written"
                else:
                    said = f" ({current.error})" if current.error else ""
                    state = f"it is {current.status} already{said}"
                raise StoreError(
                    f"could not finish run {self.run_id}: {state}",
                    hint="auditor db prune --abandoned-after HOURS counts a run as abandoned by its "
                    "age: give it more hours than a snapshot takes",
                )
        self._closed = True


def _known_ids(connection: Connection, hashes: list[str]) -> dict[str, int]:
    """hash → id of the column versions among ``hashes`` already stored.

    In chunks of bound parameters; on SQLite as plain driver SQL (once per 500 columns of a
    snapshot: no expanding IN compiled each time).
    """
    known: dict[str, int] = {}
    table = column_versions
    sqlite = connection.dialect.name == "sqlite"
    for start in range(0, len(hashes), HASH_CHUNK):
        chunk = hashes[start : start + HASH_CHUNK]
        if sqlite:
            marks = ", ".join("?" * len(chunk))
            rows = connection.exec_driver_sql(
                f"SELECT hash, id FROM column_versions WHERE hash IN ({marks})", tuple(chunk)
            )
        else:
            rows = connection.execute(
                select(table.c.hash, table.c.id).where(keys_in(connection, table.c.hash, chunk))
            )
        known.update((digest, version_id) for digest, version_id in rows)
    return known


def _new_ids(connection: Connection, count: int) -> range | list[int]:
    """``count`` fresh column-version ids. The caller holds the write lock (see _lock_versions)."""
    if connection.dialect.name == "postgresql":
        return list(
            connection.exec_driver_sql(
                "SELECT nextval(pg_get_serial_sequence('column_versions', 'id')) "
                "FROM generate_series(1, %(n)s)",
                {"n": count},
            ).scalars()
        )
    first = connection.execute(select(func.coalesce(func.max(column_versions.c.id), 0))).scalar_one() + 1
    return range(first, first + count)


def _lock_versions(connection: Connection, run_id: int) -> None:
    """Take the database's write lock before deciding which versions are new and numbering them.

    SQLite: a write statement (a no-op update of this run) takes the single writer lock, waiting
    out the busy timeout, and starts a fresh read snapshot; nobody else can add a version until
    this transaction ends, so ``max(id) + 1`` is free. PostgreSQL: a table lock that serialises
    concurrent writers of versions (readers are not blocked); ids come from the sequence.
    """
    if connection.dialect.name == "sqlite":
        with lock_wait_notice():
            connection.execute(update(runs).where(runs.c.id == run_id).values(status=runs.c.status))
    elif connection.dialect.name == "postgresql":
        connection.exec_driver_sql("LOCK TABLE column_versions IN SHARE ROW EXCLUSIVE MODE")


def _store_versions(connection: Connection, pending: dict[str, ColumnRows]) -> dict[str, int]:
    """Store the versions of ``pending`` not stored yet (with their tags and attributes); hash → id.

    The caller holds the write lock (:func:`_lock_versions`). Rows get their version id prepended
    as they stream into the driver: nothing is copied into an intermediate list. (``(id,) + row``
    rather than ``(id, *row)``: one tuple built instead of a list and a tuple, 40% faster.)
    """
    hashes = list(pending)
    ids = _known_ids(connection, hashes)
    new = [h for h in hashes if h not in ids]
    if not new:
        return ids
    new_ids = _new_ids(connection, len(new))
    ids.update(zip(new, new_ids, strict=True))
    numbered = [(version_id, pending[digest]) for digest, version_id in zip(new, new_ids, strict=True)]
    versions = ((version_id,) + row[1] for version_id, row in numbered)
    tags = ((version_id,) + tag for version_id, row in numbered for tag in row[2])  # noqa: RUF005
    attributes = ((version_id,) + attr for version_id, row in numbered for attr in row[3])  # noqa: RUF005
    insert_tuples(connection, column_versions, VERSION_FIELDS, versions, ignore=False)
    insert_tuples(connection, column_tags, TAG_FIELDS, tags, ignore=False)
    insert_tuples(connection, column_attributes, ATTRIBUTE_FIELDS, attributes, ignore=False)
    return ids


def _has_nul(values: Iterable[Any]) -> bool:
    return any(isinstance(value, str) and "\x00" in value for value in values)
