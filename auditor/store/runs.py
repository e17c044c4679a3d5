"""Reading runs back: listing them, resolving ``--run`` references, and views of a run's records.

Every later stage (rules, diff, report) reads a snapshot through :func:`columns_view` and
:func:`clusters_view`, two SQL selectables that join a run's membership rows to the shared versions,
so no stage needs to know that records are content-addressed.

A ``running`` run's writer is recorded when the run starts (:func:`writer_identity`, kept in
``runs.details["writer"]``), so that :func:`run_liveness` can tell a run still being written
(``active``) from one whose process was killed hard (``abandoned``), or say it cannot tell
(``unknown``: another host, or a run started before writers were recorded).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import socket
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import Engine, Select, Text, TypeDecorator, cast, func, select, type_coerce
from sqlalchemy.exc import SQLAlchemyError

from auditor import secrets
from auditor.errors import ConfigError, RunNotUsableError
from auditor.store.db import store_errors
from auditor.store.schema import (
    MAX_RUN_ID,
    RUN_COMPLETE,
    RUN_FAILED,
    RUN_RUNNING,
    RUN_STATUSES,
    cluster_versions,
    column_versions,
    run_clusters,
    run_columns,
    runs,
)
from auditor.textsafe import counted

log = secrets.scrubbed_logger("auditor.store")


@dataclass(frozen=True)
class RunInfo:
    """One row of ``runs``, as every stage sees it."""

    id: int
    status: str
    started_at: datetime | None  # None only in a damaged record (see ``damaged``)
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
    # Why the run's record cannot be trusted (its details are not JSON, or a time is not a time:
    # the database was changed outside cluster-auditor, or damaged); None for a sound record.
    damaged: str | None = None

    @property
    def complete(self) -> bool:
        return self.status == RUN_COMPLETE

    @property
    def listing_stored(self) -> bool | None:
        """Whether the run holds a row for every cluster the API listed: true for a complete run,
        false for a snapshot that failed before (or while) storing its listing, ``None`` when the
        run does not say (written before cluster-auditor recorded it, or by another writer)."""
        if self.complete:
            return True
        stored = self.details.get(LISTING_KEY)
        return stored if isinstance(stored, bool) else None

    def to_json(self) -> dict[str, Any]:
        """The ``auditor runs --format json`` shape of this run."""
        data = asdict(self)
        data["started_at"] = _iso(self.started_at)
        data["finished_at"] = _iso(self.finished_at)
        data["clusters"] = self.clusters_stored or 0
        data["columns"] = self.columns_stored or 0
        if self.damaged is None:
            del data["damaged"]
        found = run_liveness(self.status, self.started_at, self.details)
        data["liveness"] = found.state if found else None
        data["liveness_reason"] = found.reason if found else None
        return data


SKIP_KEY = "skip_clusters"  # runs.details: the cluster ids a snapshot was asked to leave out
LISTING_KEY = "listing_stored"  # runs.details: false until every listed cluster has its row in the run
RELISTING_KEY = "cluster_relisting"  # runs.details: what listing the clusters a second time found
MAX_IDS_IN_NOTE = 5  # cluster ids a scope note names before "and N more"


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


def cluster_list_note(details: Mapping[str, Any]) -> str | None:
    """The sentence for a cluster listing that announced another number of clusters than arrived."""
    listed = details.get("cluster_total_mismatch")
    if not isinstance(listed, Mapping):
        return None
    return (
        f"the cluster list announced {listed.get('announced')} clusters but {listed.get('fetched')} arrived"
    )


def skipped_note(details: Mapping[str, Any]) -> str | None:
    """The sentence naming the clusters a run left out (``--skip-cluster``); None when none."""
    count = details.get("skipped_cluster_count")
    if not isinstance(count, int) or isinstance(count, bool) or count <= 0:
        return None
    listed = [str(i) for i in details.get("skipped_clusters") or []]
    return f"{count:,} cluster(s) left out of the run (--skip-cluster): {name_ids(listed)}"


def _source_key(url: str | None) -> tuple[str, ...] | None:
    """``url`` as a comparable source: scheme and host ignoring case, the scheme's default port
    filled in, the path without a trailing slash; ``None`` when no source was recorded."""
    if not url:
        return None
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:  # not a URL (a label such as "fixture"): compared as it is
        return (url.strip(),)
    scheme = parts.scheme.lower()
    port = port or {"http": 80, "https": 443}.get(scheme)
    return (scheme, (parts.hostname or "").lower(), str(port or ""), parts.path.rstrip("/"))


def skipped_ids(run: RunInfo) -> list[str]:
    """The cluster ids ``run`` was asked to leave out (``--skip-cluster``), sorted; [] for none."""
    details = run.details if isinstance(run.details, dict) else {}
    value = details.get(SKIP_KEY)
    return sorted(str(v) for v in value) if isinstance(value, list) else []


def name_ids(ids: list[str]) -> str:
    """``ids`` quoted for a sentence: the first :data:`MAX_IDS_IN_NOTE`, then "and N more"."""
    shown = ", ".join(repr(i) for i in ids[:MAX_IDS_IN_NOTE])
    more = len(ids) - MAX_IDS_IN_NOTE
    return shown + (f" and {more} more" if more > 0 else "")


def scope_note(base: RunInfo, run: RunInfo, *, skips: bool = True) -> str | None:
    """The sentence warning that ``run`` is compared with a ``base`` run taken another way: from
    another source, with another cluster filter, or leaving out other clusters (``--skip-cluster``;
    ``skips=False`` for a comparison that leaves such clusters out itself, as the diff does);
    ``None`` when both were taken alike.

    Findings and catalog records outside either run's scope then read as new or resolved, added
    or removed, which a reader must not take for changes in the catalog. A source not recorded in
    either run is not compared.
    """
    before, after = _source_key(base.source_url), _source_key(run.source_url)
    sources = before is not None and after is not None and before != after
    filters = (base.cluster_filter or None) != (run.cluster_filter or None)
    skips = skips and skipped_ids(base) != skipped_ids(run)
    if not sources and not filters and not skips:
        return None

    def scope(taken: RunInfo) -> str:
        parts = [f"from {taken.source_url}"] if sources else []
        if filters:
            value = taken.cluster_filter
            parts.append(f"with the cluster filter {value!r}" if value else "with no cluster filter")
        if skips:
            ids = skipped_ids(taken)
            parts.append(f"leaving out the clusters {name_ids(ids)}" if ids else "leaving out no cluster")
        return " ".join(parts)

    return (
        f"run {base.id} was taken {scope(base)} and run {run.id} {scope(run)}: what only one of them "
        "covers reads as new or resolved, added or removed"
    )


def cluster_param_note(found: Mapping[str, Any]) -> str:
    """The sentence for a tenant that seems to ignore the cluster id parameter (the run's
    ``details.cluster_param_ignored``, recorded by :class:`auditor.bigid.client.BigIDClient`)."""
    name = found.get("param", "clusterId")
    first, second = [*(found.get("clusters") or []), "?", "?"][:2]
    reads = found.get("reads")
    what = (
        f'pass --cluster-id-param {reads} (or set cluster_id_param = "{reads}" in auditor.toml): the '
        f"tenant reads that"
        if reads
        else "the tenant's similar-columns endpoint is not the documented one: report it to BigID support"
    )
    return (
        "GET /api/v1/data-catalog/column/cluster/similar seems to ignore the cluster id parameter "
        f"{name!r}: clusters {first} and {second} were served the same columns, and so was a cluster "
        "id that cannot exist; every cluster may hold the columns of all of them, and findings may name "
        f"the wrong cluster; {what}"
    )


# A tenant (or a --filter) that lists no cluster: a complete run holding nothing, which check passes.
NO_CLUSTERS_NOTE = (
    "the tenant listed no clusters (with the run's --filter, if it had one): there is nothing to check; "
    "if the tenant has clusters, check --url and the key's permissions (a tenant that answers a header "
    "form it does not recognise as an anonymous user's lists nothing: try --auth-scheme raw)"
)


def listing_notes(details: Mapping[str, Any]) -> list[str]:
    """Sentences on what changed in the catalog while a snapshot paged it, and what it did about
    it (the snapshot's notes and the report's evidence say the same)."""

    def count(key: str) -> int:
        value = details.get(key)
        return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0

    def clusters(n: int) -> str:
        return counted(n, "cluster")

    notes = []
    if details.get("listed_no_clusters") is True:
        notes.append(NO_CLUSTERS_NOTE)
    if isinstance(ignored := details.get("cluster_param_ignored"), Mapping):  # first: every cluster
        notes.append(cluster_param_note(ignored))
    if changed := count("changed_while_listed_count"):  # first: those clusters are not whole
        notes.append(
            f"{clusters(changed)} changed while listed (the totalCount moved between pages), and again "
            "when listed once more: recorded short (columns added or removed meanwhile may be missing "
            f"or stale, and a diff does not compare {'it' if changed == 1 else 'them'}); snapshot again "
            "for a consistent copy"
        )
    if relisted := count("relisted_count"):
        notes.append(
            f"{clusters(relisted)} changed while listed (the totalCount moved between pages) and "
            f"{'was' if relisted == 1 else 'were'} listed again from the first page"
        )
    notes += _conflict_notes(count)
    for key, where in (("null_clusters", "the cluster list"), ("null_rows", "the column pages")):
        if nulls := count(key):  # counted as served against the totals, but nothing to store or check
            items = counted(nulls, "null item")
            notes.append(
                f"{where} held {items} in place of records: dropped, nothing stored or checked for "
                f"{'it' if nulls == 1 else 'them'} (auditor runs --format json counts them under {key})"
            )
    relisting = details.get(RELISTING_KEY)
    if isinstance(relisting, Mapping):
        if isinstance(found := relisting.get("found_count"), int) and found:
            notes.append(
                f"the cluster list changed while it was paged: listed a second time, it held "
                f"{clusters(found)} the first listing did not, fetched too"
            )
        if isinstance(too_long := relisting.get("ids_too_long"), int) and too_long:
            ids = counted(too_long, "new cluster id")
            notes.append(f"listed a second time, the cluster list held {ids} too long to store: left out")
        if "error" in relisting:
            notes.append(
                "the cluster list could not be listed a second time, to find clusters a change while it "
                f"was paged would have hidden: {relisting['error']}"
            )
    return notes


# The records that shared their key with another, different one on a page (the first is kept):
# details key -> (the record counted, the key it shared, whose key).
_CONFLICTS = {
    "fqn_conflict_count": ("column record", "a fullyQualifiedName", "{its} cluster", "fqn_conflicts"),
    "cluster_conflict_count": ("cluster record", "{its} id", "the cluster list", "cluster_conflicts"),
}


def _conflict_notes(count: Callable[[str], int]) -> list[str]:
    """For the records that shared a key with another, different one on their page (column records
    a fullyQualifiedName, cluster records an id: labels decide rule outcomes, so which record was
    kept matters): that only the first of each was stored and checked. ``count(key)``: a count of
    the run's details."""
    notes = []
    for key, (record, shared, whose, listed) in _CONFLICTS.items():
        if records := count(key):
            its = "its" if records == 1 else "their"
            notes.append(
                f"{counted(records, record)} shared {shared.format(its=its)} with another record of "
                f"{whose.format(its=its)} and differed from it: only the first of each was stored and "
                f"checked (auditor runs --format json lists them under {listed})"
            )
    return notes


def details_count(run: RunInfo, key: str) -> int:
    """A count ``run`` recorded in its details; 0 when absent or not a count (older runs)."""
    details = run.details if isinstance(run.details, dict) else {}
    value = details.get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def shortfall_note(run: RunInfo) -> str | None:
    """For a complete run that may lack records the tenant announced: some of its clusters served
    fewer columns than their ``totalCount`` (an empty page asked for twice ended them), or the
    cluster list announced more clusters than arrived. What checking it may miss.

    ``None`` when neither happened, or for runs taken before the count was recorded.
    """
    notes = []
    details = run.details if isinstance(run.details, dict) else {}
    counts = details.get("cluster_total_mismatch")
    announced, fetched = (
        (counts.get("announced"), counts.get("fetched")) if isinstance(counts, Mapping) else (0, 0)
    )
    listing = cluster_list_note(details)
    if listing and isinstance(announced, int) and isinstance(fetched, int) and announced > fetched:
        notes.append(f"in run {run.id}, {listing}; clusters not served, if they exist, were not checked")
    changed = details_count(run, "changed_while_listed_count")
    if changed:
        clusters = counted(changed, "cluster")
        notes.append(
            f"in run {run.id}, {clusters} changed while {'it was' if changed == 1 else 'they were'} listed "
            "(the totalCount moved between pages): columns added or removed meanwhile may be missing "
            "or stale, and auditor diff leaves "
            f"{'that cluster' if changed == 1 else 'those clusters'} out; snapshot again for a consistent "
            "copy (auditor runs --format json lists them under changed_while_listed)"
        )
    if details.get("listed_no_clusters") is True:
        notes.append(f"in run {run.id}, {NO_CLUSTERS_NOTE}")
    notes += [f"in run {run.id}, {note}" for note in _conflict_notes(lambda key: details_count(run, key))]
    count = details_count(run, "total_shortfall_count")
    if count:
        clusters = counted(count, "cluster")
        notes.append(
            f"in run {run.id}, {clusters} served fewer columns than announced (by their totalCount, "
            f"or their size where no total came); the columns not served were not checked (auditor "
            f"runs --format json lists them under total_mismatches and size_mismatches)"
        )
    return "; ".join(notes) or None


def in_utc(value: datetime) -> datetime:
    """``value`` as a UTC time: stored times are UTC (SQLite keeps them without a zone), and an
    aware one with another offset is converted, not relabelled."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _iso(value: datetime | None) -> str | None:
    if value is None:
        return None
    return in_utc(value).isoformat().replace("+00:00", "Z")


# ``runs.details`` read as text, to be parsed by :func:`read_details`: one damaged record must not
# stop every command that lists or checks runs.
DETAILS_TEXT = cast(runs.c.details, Text).label("details")


def read_details(text: str | None) -> tuple[dict[str, Any], str | None]:
    """(details, why they are damaged or None) of ``runs.details`` read as :data:`DETAILS_TEXT`."""
    import orjson

    try:
        details = orjson.loads(text) if text is not None else None
    except orjson.JSONDecodeError as exc:
        return {}, f"its details are not valid JSON: {exc}"
    if details is not None and not isinstance(details, dict):
        return {}, f"its details are a JSON {type(details).__name__}, not an object"
    return details or {}, None


class NotATime(str):
    """A stored run time that does not read as one (see :class:`StoredTime`): the text found."""


class StoredTime(TypeDecorator[Any]):
    """``runs.started_at``/``finished_at`` read leniently: a value that is not a time (written
    into a SQLite file outside the tool; SQLite keeps any value in any column) comes back as
    :class:`NotATime` instead of raising ``ValueError`` out of SQLAlchemy's row processing, which
    stopped every command that lists or checks runs with an internal error."""

    impl = Text
    cache_ok = True

    def process_result_value(self, value: Any, dialect: Any) -> Any:
        if value is None or isinstance(value, datetime):  # (PostgreSQL's driver gives datetimes)
            return value
        try:
            return datetime.fromisoformat(value)  # SQLite: '2026-12-07 21:00:00.123456', as written
        except (TypeError, ValueError):
            return NotATime(value)


def stored_time(column: Any) -> Any:
    """``column`` (a run time) read through :class:`StoredTime`, labelled as itself."""
    return type_coerce(column, StoredTime()).label(column.name)


def _runs_query() -> Select[Any]:
    times = ("started_at", "finished_at")
    return select(
        *(stored_time(c) if c.name in times else c for c in runs.c if c.name != "details"), DETAILS_TEXT
    )


def _row_to_run(row: Any) -> RunInfo:
    data = dict(row._mapping)
    data["details"], data["damaged"] = read_details(data["details"])
    for key, what in (("finished_at", "end"), ("started_at", "start")):
        if isinstance(data[key], NotATime):
            data["damaged"] = f"its {what} time is not a time: {str(data[key])[:40]!r}"
            data[key] = None
    if data["status"] not in RUN_STATUSES:  # read as none of them, it would be listed as it is
        data["damaged"] = f"its status {str(data['status'])[:40]!r} is not one this tool writes"
    return RunInfo(**data)


def refuse_damaged(run: RunInfo) -> RunInfo:
    """``run``, unless its record is damaged (RunNotUsableError, exit 3): its counts, its skipped
    clusters and the notes a check or a diff prints would be guessed at."""
    if run.damaged is not None:
        raise RunNotUsableError(
            f"run {run.id}'s record is damaged ({run.damaged}), so it is not used",
            hint="restore the database from a backup, or leave this run aside by naming others "
            "(--run, --baseline, --from, --against); auditor db prune deletes it once it is old enough",
        )
    return run


def list_runs(engine: Engine) -> list[RunInfo]:
    """Every run, oldest first."""
    with store_errors("could not read runs"), engine.connect() as connection:
        return [_row_to_run(row) for row in connection.execute(_runs_query().order_by(runs.c.id))]


def stored_so_far(engine: Engine, run_ids: list[int]) -> dict[int, tuple[int, int]]:
    """For runs still ``running`` (whose counters are written when they end): the clusters and
    columns stored so far, by run id. ``auditor runs`` showed an abandoned run holding 40 clusters
    and 11,431 columns as 0 and 0."""
    if not run_ids:
        return {}
    with store_errors("could not read runs"), engine.connect() as connection:
        clusters = dict(
            connection.execute(
                select(run_clusters.c.run_id, func.count())
                .where(
                    run_clusters.c.run_id.in_(run_ids), run_clusters.c.fetch_status.in_(("complete", "short"))
                )
                .group_by(run_clusters.c.run_id)
            ).all()
        )
        columns = dict(
            connection.execute(
                select(run_columns.c.run_id, func.count())
                .where(run_columns.c.run_id.in_(run_ids))
                .group_by(run_columns.c.run_id)
            ).all()
        )
    return {run_id: (int(clusters.get(run_id, 0)), int(columns.get(run_id, 0))) for run_id in run_ids}


def missing_run(run_id: int) -> RunNotUsableError:
    """The error for a run that does not exist (never did, or a prune deleted it)."""
    return RunNotUsableError(f"run {run_id} does not exist", hint="list runs with: auditor runs")


def can_be_run_id(run_id: int) -> bool:
    """Whether ``run_id`` is in the range of run ids (1 to :data:`MAX_RUN_ID`): one outside it names
    no run, on any database (PostgreSQL would refuse the query: "integer out of range")."""
    return 1 <= run_id <= MAX_RUN_ID


def get_run(engine: Engine, run_id: int) -> RunInfo | None:
    if not can_be_run_id(run_id):
        return None
    with engine.connect() as connection:
        row = connection.execute(_runs_query().where(runs.c.id == run_id)).first()
    return _row_to_run(row) if row else None


def check_not_deleted(engine: Engine, run_ids: list[int], while_: str, hint: str) -> None:
    """Raise :class:`RunNotUsableError` when one of ``run_ids`` no longer exists: a prune in another
    process deleted it while it was being read or checked (``while_``: "while the diff read it").

    Called after such work, and when it failed: its result would be wrong, or its error (a missing
    key, a foreign key) would blame something else. A database error here leaves that work's own
    result or error standing.
    """
    try:
        gone = [run_id for run_id in run_ids if get_run(engine, run_id) is None]
    except SQLAlchemyError:
        return
    if gone:
        raise RunNotUsableError(f"run {gone[0]} was deleted {while_} (by auditor db prune?)", hint=hint)


def latest_complete_runs(engine: Engine, count: int, *, before: int | None = None) -> list[RunInfo]:
    """Up to ``count`` complete runs, newest first (only runs older than ``before`` if given)."""
    query = _runs_query().where(runs.c.status == RUN_COMPLETE)
    if before is not None:
        query = query.where(runs.c.id < before)
    with engine.connect() as connection:
        return [_row_to_run(row) for row in connection.execute(query.order_by(runs.c.id.desc()).limit(count))]


def previous_complete_run(engine: Engine, run_id: int) -> RunInfo | None:
    """The newest complete run older than ``run_id``: the default baseline and diff base."""
    found = latest_complete_runs(engine, 1, before=run_id)
    return refuse_damaged(found[0]) if found else None


def resolve_run(
    engine: Engine,
    ref: str | int | RunInfo | None = "latest",
    *,
    allow_incomplete: bool = False,
    option: str = "--run",
    words: tuple[str, ...] = ("latest",),
) -> RunInfo:
    """Resolve ``--run ID|latest`` to a run, refusing runs that are not complete.

    ``latest`` means the newest *complete* run (or the newest run of any status when
    ``allow_incomplete``). Raises :class:`RunNotUsableError` (exit 3) with a hint otherwise, and
    :class:`ConfigError` (exit 2, naming ``option`` and the ``words`` it also takes) when ``ref``
    is not a run reference at all. A :class:`RunInfo` is read again by its id (its status may have
    changed since).
    """
    if isinstance(ref, RunInfo):
        ref = ref.id
    if ref is None or str(ref).strip().lower() == "latest":
        if allow_incomplete:
            with engine.connect() as connection:
                row = connection.execute(_runs_query().order_by(runs.c.id.desc()).limit(1)).first()
            found = _row_to_run(row) if row else None
        else:
            newest = latest_complete_runs(engine, 1)
            found = newest[0] if newest else None
            if found is not None:
                _warn_newer_failed(engine, found)
        if found is None:
            raise _no_complete_run(engine)
        return refuse_damaged(found)
    try:
        run_id = int(str(ref).strip())
    except ValueError:
        run_id = 0
    if run_id < 1:  # ids start at 1: '0' or '-1' is no run reference, as 'abc' is not
        raise ConfigError(
            f"{option} {ref!r} is neither a run id nor {words[0]!r}"
            if len(words) == 1
            else f"{option} {ref!r} is not a run id, {', '.join(map(repr, words[:-1]))} or {words[-1]!r}",
            hint="list runs with: auditor runs",
        ) from None
    run = get_run(engine, run_id)
    if run is None:
        raise missing_run(run_id)
    refuse_damaged(run)  # (first: a damaged status would be named as if it were one)
    if not run.complete and not allow_incomplete:
        reason = f": {run.error}" if run.error else ""
        raise RunNotUsableError(
            f"run {run_id} is {run.status}, not complete{reason}",
            hint="take a new snapshot, or pass --allow-incomplete to use it anyway",
        )
    return run


def _no_complete_run(engine: Engine) -> RunNotUsableError:
    """The error for ``latest`` when no run is complete, naming the newest run there is (failed, or
    still running or abandoned): "take a snapshot first" alone misled after a failed one."""
    with engine.connect() as connection:
        row = connection.execute(_runs_query().order_by(runs.c.id.desc()).limit(1)).first()
    if row is None:
        return RunNotUsableError(
            "there is no complete run in this database yet",
            hint="take a snapshot first: auditor snapshot (or auditor demo)",
        )
    newest = _row_to_run(row)
    said = _what_became_of(newest) or "is still being written"
    return RunNotUsableError(
        f"there is no complete run in this database yet: the newest, run {newest.id}, {said}",
        hint=f"take a new snapshot (auditor snapshot), or pass --run {newest.id} --allow-incomplete "
        "to use that run as it is",
    )


def _what_became_of(run: RunInfo) -> str | None:
    """``failed (its error)``, or ``was abandoned by its writer (why it is known)``, for a run that
    did not complete; ``None`` for one still being written (or whose writer cannot be checked)."""
    if run.status == RUN_FAILED:
        return f"failed ({run.error})" if run.error else "failed"
    liveness = run_liveness(run.status, run.started_at, run.details)
    if liveness is None or liveness.state != ABANDONED:
        return None
    return f"was abandoned by its writer ({liveness.reason})"


def _warn_newer_failed(engine: Engine, latest: RunInfo) -> None:
    """Warn when ``latest`` (the newest complete run) is older than a run that failed, or that was
    left ``running`` by a writer that is gone (killed, stopped outright): a CI job whose snapshot
    step failed would otherwise check, report and gate on stale data without a word. A run still
    being written (or one whose writer cannot be checked from here) is no such news."""
    with engine.connect() as connection:
        rows = connection.execute(
            _runs_query()
            .where(runs.c.id > latest.id, runs.c.status.in_((RUN_FAILED, RUN_RUNNING)))
            .order_by(runs.c.id.desc())
        ).all()
    for row in rows:
        run = _row_to_run(row)
        if (said := _what_became_of(run)) is None:
            continue
        log.warning(
            "run %s, newer than run %s, %s: 'latest' is run %s, the newest complete run",
            run.id,
            latest.id,
            said,
            latest.id,
        )
        return


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


# -- who writes a run, and is it still being written? ----------------------------------------------

ACTIVE = "active"  # its writer process is alive on this host
ABANDONED = "abandoned"  # its writer is gone: it will never end by itself
UNKNOWN = "unknown"  # cannot be checked from here (another host, or no writer recorded)
WRITER_KEY = "writer"  # the key of ``runs.details`` that holds :func:`writer_identity`


def _read(path: str) -> str | None:
    try:
        with open(path, encoding="ascii") as file:
            return file.read().strip() or None
    except (OSError, ValueError):
        return None


def _proc_stat(pid: int) -> tuple[str, int] | None:
    """(state, start time in clock ticks since boot) of a process, from ``/proc/PID/stat`` (Linux).

    The command name (field 2) may hold spaces and parentheses: the fields are counted from the
    last ``)``; the state is field 3, the start time field 22.
    """
    try:
        with open(f"/proc/{pid}/stat", "rb") as file:
            data = file.read()
        fields = data[data.rindex(b")") + 2 :].split()
        return fields[0].decode("ascii"), int(fields[19])
    except (OSError, ValueError, IndexError):
        return None


def writer_identity() -> dict[str, Any]:
    """Who this process is, for recognising it later: what the writer records when a run starts.

    ``host`` and ``pid`` always; on Linux also ``boot_id`` (a new one each boot), ``start`` (the
    process start time in clock ticks since boot: a PID reused by another process has another),
    ``pid_ns`` (the PID namespace: a container's differs from the host's) and ``machine`` (a hash of
    ``/etc/machine-id``, never the id itself, which is meant to stay private). A handful of small
    reads from ``/proc``: nothing that slows the start of a run.
    """
    identity: dict[str, Any] = {"host": socket.gethostname(), "pid": os.getpid()}
    boot_id = _read("/proc/sys/kernel/random/boot_id")
    if boot_id:
        identity["boot_id"] = boot_id
    stat = _proc_stat(os.getpid())
    if stat is not None:
        identity["start"] = stat[1]
    with contextlib.suppress(OSError, AttributeError):
        identity["pid_ns"] = os.readlink("/proc/self/ns/pid")
    machine = _read("/etc/machine-id") or _read("/var/lib/dbus/machine-id")
    if machine:
        identity["machine"] = hashlib.blake2b(
            machine.encode(), digest_size=8, person=b"auditor-writer"
        ).hexdigest()
    return identity


@dataclass(frozen=True)
class Liveness:
    """Whether a ``running`` run is still being written: ``state`` and a clause saying why.

    ``reason`` reads on its own ("the process that wrote it (pid 1234 on host ci-7) is gone") and
    after ``abandoned:`` in the error a prune records when it marks the run failed.
    """

    state: str  # ACTIVE | ABANDONED | UNKNOWN
    reason: str


def _differ(a: Mapping[str, Any], b: Mapping[str, Any], key: str) -> bool:
    return a.get(key) is not None and b.get(key) is not None and a.get(key) != b.get(key)


def _same(a: Mapping[str, Any], b: Mapping[str, Any], key: str) -> bool:
    return a.get(key) is not None and a.get(key) == b.get(key)


def _process_alive(pid: int) -> bool:
    """Whether a process with this PID exists on this machine (a zombie does not count)."""
    try:
        os.kill(pid, 0)  # signal 0: only the existence and permission checks
    except ProcessLookupError:
        return False
    except OSError:  # PermissionError: it exists, under another user
        return True
    stat = _proc_stat(pid)
    return stat is None or stat[0] not in ("Z", "X", "x")  # dead, not yet reaped by its parent


def writer_liveness(writer: Any, here: Mapping[str, Any] | None = None) -> Liveness:
    """Whether the process recorded as ``writer`` (a :func:`writer_identity`) still runs.

    ``active``: it is alive on this host (a run of this very process included). ``abandoned``: it
    ran on this host and is gone, its PID belongs to a process started at another time, or the host
    restarted since (another boot id, same machine and PID namespace). ``unknown``: anything that
    cannot be checked from here: another host, another machine or container of the same name, no
    writer recorded, or a platform where processes cannot be probed safely. When in doubt the
    answer is ``active`` or ``unknown``, never ``abandoned``.
    """
    here = writer_identity() if here is None else here
    if not isinstance(writer, Mapping):
        return Liveness(UNKNOWN, "no writer was recorded for it (a run started before auditor recorded them)")
    host, pid = writer.get("host"), writer.get("pid")
    if not isinstance(host, str) or not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
        return Liveness(UNKNOWN, "no usable writer was recorded for it")
    writes = f"the process that writes it (pid {pid} on host {host})"
    wrote = f"the process that wrote it (pid {pid} on host {host})"
    if host != here.get("host"):
        return Liveness(UNKNOWN, f"{writes} cannot be checked from host {here.get('host')}")
    if _differ(writer, here, "machine"):
        return Liveness(UNKNOWN, f"{writes} runs on another machine of that name: it cannot be checked")
    if _differ(writer, here, "boot_id"):
        if _same(writer, here, "machine") and _same(writer, here, "pid_ns"):
            restarted = f"host {host} has restarted since the process that wrote it (pid {pid}) started"
            return Liveness(ABANDONED, restarted)
        return Liveness(
            UNKNOWN, f"{writes} runs under another boot id (another machine or container of that name?)"
        )
    if _differ(writer, here, "pid_ns"):
        return Liveness(UNKNOWN, f"{writes} runs in another PID namespace (container): it cannot be checked")
    if os.name != "posix":  # os.kill(pid, 0) would terminate it on Windows
        return Liveness(UNKNOWN, f"{writes} cannot be checked on this platform")
    if not _process_alive(pid):
        return Liveness(ABANDONED, f"{wrote} is gone")
    start = writer.get("start")
    if isinstance(start, int) and _same(writer, here, "boot_id"):
        stat = _proc_stat(pid)
        if stat is not None and stat[1] != start:
            return Liveness(ABANDONED, f"{wrote} is gone: pid {pid} now belongs to another process")
    return Liveness(ACTIVE, f"{writes} is alive")


def _utc(value: datetime) -> datetime:
    """Stored times are UTC; SQLite hands them back without a zone."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def run_liveness(
    status: str,
    started_at: datetime | None,
    details: Any,
    *,
    abandoned_after: float | None = None,
    now: datetime | None = None,
    here: Mapping[str, Any] | None = None,
) -> Liveness | None:
    """:func:`writer_liveness` of a run (``None`` unless it is ``running``), with the age rule.

    With ``abandoned_after`` (hours), a run that started more than that long before ``now`` and
    whose writer cannot be checked (``unknown``) counts as ``abandoned``: a run written on another
    CI runner can only be judged by its age. A run whose writer is alive here stays ``active``
    however old it is.
    """
    if status != RUN_RUNNING:
        return None
    writer = details.get(WRITER_KEY) if isinstance(details, Mapping) else None
    found = writer_liveness(writer, here)
    if found.state != UNKNOWN or abandoned_after is None or started_at is None:
        return found  # (no start time, in a damaged record: no age to judge by)
    hours = ((now or datetime.now(UTC)) - _utc(started_at)).total_seconds() / 3600
    if hours <= abandoned_after:
        return found
    return Liveness(
        ABANDONED,
        f"it started {hours:.1f} hours ago, more than --abandoned-after {abandoned_after:g}, "
        f"and {found.reason}",
    )
