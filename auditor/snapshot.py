"""Taking a snapshot: every cluster and every column of a tenant into one new run of the store.

:func:`take_snapshot` lists the clusters, then fetches each cluster's columns concurrently with a
bounded pool of worker threads sharing the client's pooled session. Workers hand pages through a
bounded queue to ONE writer, the calling thread, which feeds :class:`auditor.store.SnapshotWriter`
(many pages per transaction). Memory therefore depends on the page size and the number of workers,
never on the number of columns.

Decoding a page (JSON, envelope, pydantic validation, the store's row tuples and content hashes) costs
more CPU than fetching and writing it, and threads share one core (the GIL). With ``processes`` > 0
the worker threads keep the transport (auth, retries, errors) and hand each 200 body's *bytes* to a
process pool (``forkserver``) running :func:`auditor.bigid.client.decode_columns` with
:func:`auditor.store.writer.column_rows`; the writer gets finished row tuples. The pool never sees
the API key, ignores Ctrl-C (the parent handles it) and is shut down with the snapshot, however it
ends. ``processes=0`` decodes in the worker threads.

The run becomes ``complete`` only when every cluster was fetched in full. A failure that concerns
one cluster (its columns answer 403, 404, 5xx past the retries, time out, or hold an invalid record:
see :func:`cluster_scoped`) is recorded on that cluster (``failed``, none
of its columns kept) and the other clusters go on; at the end the run is marked ``failed``, saying
which clusters could not be fetched, and :class:`PartialSnapshotError` is raised. More than
``max_failed_clusters`` such failures (a tenant that is down) stop the snapshot there; 0 stops it at
the first, re-raising that cluster's error. Any other failure (a 401, the clusters listing, the
store, a decoding process dying, Ctrl-C, a bug) cancels the remaining work at once, marks the run
``failed`` with the reason and re-raises the error. Per cluster, the run records the total the
API announced, the distinct columns stored, duplicates received and pages; per run, the requests,
retries, the auth scheme that worked, the envelope shapes seen, how many times the API key was
found (and masked) in the data served, every mismatch between a cluster's ``size``, its
``totalCount`` and the columns actually fetched, and the clusters that failed (``runs.details``).
A cluster whose ``totalCount`` moves between pages (its columns changed while it was paged) is
listed once more from its first page, its rows so far dropped (:data:`RELISTINGS`).
"""

from __future__ import annotations

import contextlib
import functools
import gc
import os
import queue
import signal
import threading
import traceback
from collections.abc import Collection, Hashable, Mapping
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from typing import Any

from sqlalchemy import Engine

from auditor import secrets
from auditor.bigid.client import (
    BigIDClient,
    PageOffload,
    cluster_not_storable,
    record_not_storable,
)
from auditor.bigid.models import (
    MAX_CLUSTER_ID_BYTES,
    Cluster,
    RecordKeyTooLong,
    RecordNotStorable,
    check_key,
)
from auditor.bigid.paging import PagingStats
from auditor.errors import (
    ApiError,
    AuditorError,
    AuthError,
    PartialSnapshotError,
    PayloadError,
    StoreError,
    Terminated,
)
from auditor.gcpause import tune_for_throwaway_objects
from auditor.progress import Progress
from auditor.store.runs import LISTING_KEY, RELISTING_KEY, SKIP_KEY, RunInfo, get_run, name_ids
from auditor.store.writer import (
    ClusterStats,
    ColumnRows,
    RunTotals,
    SnapshotWriter,
    canonical_json,
    column_rows,
)
from auditor.workers import main_unimportable, start_pool

log = secrets.scrubbed_logger("auditor.snapshot")

THREADS_PER_WORKER = 2  # fetch threads per request slot (see _fetch_columns)
QUEUE_PAGES_PER_WORKER = 12  # pages waiting for the writer, per worker: bounds memory (~1 MB a page),
# deep enough that fetching goes on while the writer commits a 25,000-row batch
IDLE_FLUSH_ROWS = 10_000  # rows worth a transaction when the writer would otherwise wait
# Seconds after which what is queued is written when the writer would otherwise wait, however
# little it is: a snapshot of a few thousand columns (or a slow tenant) otherwise showed `auditor
# runs` nothing stored until it ended, and a kill -9 lost every cluster it had finished.
IDLE_FLUSH_SECONDS = 5.0
MAX_LISTED_MISMATCHES = 1000  # mismatches listed in runs.details (all are counted)
# runs.details keys listing clusters (and columns) a snapshot found something to say about
LISTED_KEYS = ("size_mismatches", "total_mismatches", "changed_while_listed", "relisted", "fqn_conflicts")
MAX_LISTED_FAILURES = 1000  # failed clusters listed in runs.details (all are counted)
MAX_FAILURE_PROBLEMS = 20  # failed clusters listed in the error the snapshot raises
MAX_FAILURES_IN_REASON = 5  # failed clusters named in the run's one-line error
DEFAULT_MAX_FAILED_CLUSTERS = 10
FORBIDDEN_HINT = "ask a BigID administrator to grant the API key's user access to"
_PUT_WAIT = 0.2
# A cluster whose totalCount moves between pages is listed again from its first page this many
# times; if it moves again, its columns are kept as served and it is recorded ``short``.
RELISTINGS = 1
POOL_MIN_COLUMNS = 20_000  # columns announced below which processes=None decodes in the threads
# Environment variables a decoding process must not inherit (it gets page bytes, nothing else).
_SECRET_ENV = ("BIGID_TOKEN",)


class _Cancelled(Exception):
    """A worker noticed that the snapshot (or its cluster) is being abandoned."""


class _Expired(Exception):
    """The snapshot's time limit (``max_seconds``) passed while clusters were being fetched."""


class _TooManyFailures(Exception):
    """More clusters failed than ``max_failed_clusters`` allows: the snapshot stops."""


def _leave_out(
    clusters: list[tuple[Any, dict[str, Any]]], skip: list[str], details: dict[str, Any]
) -> list[tuple[Any, dict[str, Any]]]:
    """``clusters`` without those whose id is in ``skip``; ``details`` records which were left out
    and which of ``skip`` the tenant did not list (a stale id in the settings, said on the log)."""
    wanted = set(skip)
    kept = [item for item in clusters if item[0].id not in wanted]
    seen = {cluster.id for cluster, _ in clusters}
    skipped = sorted(wanted & seen)
    missing = sorted(wanted - seen)
    details["skipped_cluster_count"] = len(skipped)
    details["skipped_clusters"] = skipped[:MAX_LISTED_FAILURES]
    if missing:  # (said once the clusters are listed for the last time: see _say_not_listed)
        details["skip_clusters_not_listed"] = missing[:MAX_LISTED_FAILURES]
    return kept


def _say_not_listed(details: dict[str, Any]) -> None:
    """Warn of the ids to leave out that no listing of the clusters held (a stale id in the
    settings)."""
    if missing := details.get("skip_clusters_not_listed"):
        log.warning("the tenant did not list these clusters to skip: %s", name_ids(missing))


STOP_PATIENCE = 5.0  # seconds a stopped snapshot waits for a lock to mark its run failed


def cluster_scoped(exc: BaseException) -> bool:
    """Whether ``exc``, raised while fetching one cluster's columns, concerns only that cluster.

    API answers about it (404, 400, 5xx past the retries, an invalid record or page) and network
    failures (a timeout on a huge cluster) do, and so does a 403 on its columns: a tenant can scope
    a user's access to some data sources, so one cluster's columns can be refused while the others
    are served (a key refused everywhere trips the breaker, whose hint then says so). A refused key
    (401, :class:`AuthError`) does not, nor does anything that is not an :class:`ApiError` (the
    store, a decoding process, a bug).
    """
    if isinstance(exc, AuthError):
        return exc.status == 403  # the key works, but not for this cluster
    return isinstance(exc, ApiError) and not isinstance(exc, PartialSnapshotError)


def take_snapshot(
    engine: Engine,
    client: BigIDClient,
    *,
    cluster_filter: str | None = None,
    workers: int = 4,
    progress: Progress | None = None,
    processes: int | None = None,
    max_failed_clusters: int = DEFAULT_MAX_FAILED_CLUSTERS,
    max_seconds: float | None = None,
    skip_clusters: Collection[str] = (),
) -> RunInfo:
    """Fetch everything into a new run and return it (``complete``), or raise (run ``failed``).

    ``max_failed_clusters``: clusters whose columns could not be fetched (see :func:`cluster_scoped`)
    are recorded and the others fetched; the run then ends ``failed`` and
    :class:`PartialSnapshotError` is raised. Once more than that many have failed, the snapshot
    stops (the remaining clusters are not fetched). 0: the first such error stops the snapshot and
    is raised as it is.

    ``processes``: decoding processes (see the module docstring), 0 decodes in the worker threads.
    None means :func:`default_processes`, but only for a tenant whose clusters announce at least
    :data:`POOL_MIN_COLUMNS` columns (or do not say): starting the pool costs more than it saves on
    a small one. ``runs.details.processes`` records what was used.

    ``max_seconds``: the whole fetch's time limit (reference §9 item 6, a run deadline). When it
    passes, the requests in flight are cancelled, the clusters fetched in full stay in the run,
    the run ends ``failed`` and :class:`PartialSnapshotError` says so (``details.deadline_seconds``
    records the limit). ``None``: no limit.

    ``skip_clusters``: ids of clusters left out of the run, as if the tenant had not listed them (a
    cluster known to fail, or one the key may not read): their columns are not asked for, and the
    run can be complete without them. The ids asked for are part of the run's scope
    (``details.skip_clusters``, compared by :func:`auditor.store.runs.scope_note`); the run records
    which were listed and left out (``details.skipped_clusters``) and which were not listed at all.
    """
    if isinstance(skip_clusters, str):  # its characters were taken as ids: 'abc' skipped a, b and c
        raise TypeError("skip_clusters takes a collection of cluster ids, not one string")
    skip = sorted({str(cluster_id).strip() for cluster_id in skip_clusters} - {""})
    if max_seconds is not None and max_seconds <= 0:
        raise ValueError("max_seconds must be more than 0")
    if workers < 1:
        raise ValueError("workers must be at least 1")
    if processes is not None and processes < 0:
        raise ValueError("processes must be 0 or more")
    if max_failed_clusters < 0:
        raise ValueError("max_failed_clusters must be 0 or more")
    progress = progress or Progress(enabled=False)
    client.limit_requests(workers)  # ``workers`` requests in flight, whatever the client was built with
    writer = SnapshotWriter(
        engine,
        source_url=client.source,
        cluster_filter=cluster_filter,
        details={
            "page_size": client.options.page_size,
            "workers": workers,
            "auth_scheme_requested": client.options.auth_scheme,
            **({SKIP_KEY: skip} if skip else {}),
        },
    )
    details: dict[str, Any] = {LISTING_KEY: False}  # until every listed cluster has its row in the run
    failures: list[tuple[str, str]] = []  # (cluster id, reason) of the clusters that failed
    totals = RunTotals()
    pool: ProcessPoolExecutor | None = None
    clusters: list[tuple[Any, dict[str, Any]]] | None = None
    expired = threading.Event()
    timer: threading.Timer | None = None
    if max_seconds is not None:
        details["deadline_seconds"] = max_seconds

        def expire() -> None:
            expired.set()  # first: whatever the cancelled requests raise is read as the deadline
            client.cancel()

        timer = threading.Timer(max_seconds, expire)
        timer.daemon = True
        timer.start()
    try:
        processes = _startable(processes)
        if processes:
            pool = start_decoders(processes)  # they start while the clusters are listed
        # A cluster record that does not fit the models, but has an id, fails that cluster alone.
        # Labels decide findings: two different records of one id must not pass for a repeat.
        clusters = client.list_clusters(cluster_filter, lenient=True, content=_raw_content)
        listed = len(clusters)
        listed_ids = {cluster.id for cluster, _ in clusters}
        if not listed:  # said by the snapshot, the report and check: nothing to check is no clean bill
            details["listed_no_clusters"] = True
        if skip:
            clusters = _leave_out(clusters, skip, details)
        if processes is None:
            processes = _startable(_processes_for(clusters))
            if processes:
                pool = start_decoders(processes)
        details["processes"] = processes
        listing = client.last_cluster_paging or PagingStats()
        # the clusters left out are out of the run's scope, as if the tenant had not listed them
        left_out = listed - len(clusters)
        announced = listing.announced_total if listing.announced_total is not None else listed
        # a total counting an id listed twice, twice, or the null items served in place of clusters
        served = listing.received  # the records, those sharing an id on a page, and nulls
        counted = {listed, listed + listing.duplicates, served, served + listing.duplicates}
        if announced in counted:
            announced = listed
        totals.clusters_announced = announced - left_out
        details["cluster_duplicates"] = listing.duplicates
        details["null_clusters"] = listing.nulls  # dropped: nothing to store or check
        # records sharing an id with a different one on their page: the first is stored and checked
        details["cluster_conflict_count"] = listing.conflicts
        details["cluster_conflicts"] = [str(key) for key in listing.conflict_keys]
        if listing.regrown is not None:  # the tenant ignores skip: the list was asked for in one page
            details["cluster_listing_limit"] = listing.regrown
        # A total that counts the records as listed, a second record of an id included, is right:
        # no cluster is missing (a probe saw "announced 4 clusters but 3 arrived", and check then
        # said clusters were not served, for a tenant that listed one id twice).
        if listing.announced_total is not None and listing.announced_total not in counted:
            details["cluster_total_mismatch"] = {"announced": listing.announced_total, "fetched": listed}
        invalid = client.last_invalid_clusters
        _add_clusters(writer, clusters, 0, invalid)
        writer.flush()  # the listing is in the run before the run says so (a full disk fails here)
        details[LISTING_KEY] = True
        progress.start(len(clusters))
        offload = PageOffload(pool, column_rows, _row_key) if pool is not None else None
        fetch = functools.partial(
            _fetch_columns,
            client,
            writer,
            workers=workers,
            progress=progress,
            details=details,
            offload=offload,
            max_failed_clusters=max_failed_clusters,
            failures=failures,
            expired=expired,
        )
        fetch(clusters, invalid=invalid)
        full = (listing.first_page_rows or 0) >= client.options.page_size
        if (listing.pages_with_records > 1 or full) and listing.regrown is None:
            # Paged, the list may have changed between its pages: a cluster removed from a page
            # already served makes skip step over another one, never listed (and the next page may
            # then come back empty: hence a full first page counts). Listed once more, the clusters
            # it holds that the first listing did not are fetched too (or created since: as well).
            found, skipped = _list_again(client, cluster_filter, listed_ids, skip, clusters, details, expired)
            # The clusters a total said would come and did not may be those found (or left out):
            # what the first listing lacked is made up, and so is the run's count of those announced.
            mismatch = details.get("cluster_total_mismatch")
            if mismatch is not None:  # (an understated total stays a mismatch, counting them too)
                mismatch["fetched"] += len(found) + skipped
                if mismatch["fetched"] == mismatch["announced"]:
                    del details["cluster_total_mismatch"]
            if listing.announced_total is None or listing.announced_total >= listed:
                in_scope = len(clusters) + len(found)
                totals.clusters_announced = max((totals.clusters_announced or 0) - skipped, in_scope)
            if found:
                _add_clusters(writer, found, len(clusters), client.last_invalid_clusters)
                writer.flush()
                clusters = clusters + found
                progress.add_clusters(len(found))
                fetch(found, invalid=client.last_invalid_clusters)
        _say_not_listed(details)
    except BaseException as exc:
        if timer is not None:
            timer.cancel()
            timer.join()  # gone with the snapshot, not a moment later
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
        # The traceback's frames may hold the cursor of a write that was interrupted mid-flush
        # (Ctrl-C lands there most often); while it lives, SQLite keeps that transaction's lock and
        # marking the run failed would wait out the busy timeout. Locals are not needed any more.
        traceback.clear_frames(exc.__traceback__)
        gc.collect()  # the cursor may sit in a reference cycle too
        tripped = isinstance(exc, _TooManyFailures)
        late = expired.is_set() and not isinstance(exc, KeyboardInterrupt | StoreError)
        total = len(clusters) if clusters is not None else None
        if late:
            client.resume()
            assert max_seconds is not None
            reason = _deadline_reason(max_seconds, writer.clusters_stored, total)
        elif tripped:
            assert total is not None
            reason = _partial_reason(failures, total, max_failed_clusters)
        else:
            reason = _reason(exc)
        _fill_totals(totals, client, details)
        # A run holds whole clusters or none of a cluster, however it ends: the clusters cut short
        # in flight keep none of their columns (they stay ``fetching``).
        writer.discard_unfinished()
        try:
            # Stopped by the user (Ctrl-C, SIGTERM): mark the run failed only if no other writer's
            # lock holds it up for long; else it is left running, abandoned (auditor db prune).
            patience = STOP_PATIENCE if isinstance(exc, KeyboardInterrupt) else None
            writer.fail(reason, totals, patience=patience)
        except StoreError as store_exc:  # the original error matters more; say both in the log
            log.error("could not mark run %s failed: %s", writer.run_id, store_exc)
            _say_left_running(exc, writer.run_id)
        progress.close()
        if late:
            raise _deadline_error(writer, failures, total, max_seconds) from None
        if tripped:
            assert total is not None
            raise _partial_error(writer, failures, total, max_failed_clusters) from None
        raise
    if timer is not None:
        timer.cancel()
        timer.join()  # a cancelled timer's thread ends when it next wakes: gone with the snapshot
        client.resume()  # in case the limit passed as the last cluster arrived: nothing was cut short
    if pool is not None:
        pool.shutdown(wait=True)
    _fill_totals(totals, client, details)
    if failures:  # every cluster was tried; some could not be fetched: the run is not complete
        try:
            writer.fail(_partial_reason(failures, len(clusters), None), totals)
        finally:
            progress.close()
        raise _partial_error(writer, failures, len(clusters), None)
    try:
        writer.complete(totals)
    except BaseException as exc:  # the last flush failed: the run must not stay "running"
        try:
            writer.fail(_reason(exc), totals)
        except StoreError:  # (a full disk fails this write too)
            _say_left_running(exc, writer.run_id)
        raise
    finally:
        progress.close()
    run = get_run(engine, writer.run_id)
    assert run is not None
    return run


def _add_clusters(
    writer: SnapshotWriter,
    clusters: list[tuple[Any, dict[str, Any]]],
    start: int,
    invalid: dict[str, ApiError],
) -> None:
    """Give the writer each cluster's row, at positions from ``start`` on."""
    for position, (cluster, raw) in enumerate(clusters, start):
        try:
            writer.add_cluster(cluster, raw, position)
        except RecordNotStorable as unstorable:
            if isinstance(unstorable, RecordKeyTooLong):  # no id to keep it under
                raise cluster_not_storable(position, unstorable) from None
            # Too deep to store, but it has an id: that cluster fails alone, as a record that
            # does not fit the models does, kept in the run by its id alone.
            invalid[cluster.id] = cluster_not_storable(position, unstorable)
            writer.add_cluster(Cluster.model_construct(id=cluster.id), {"id": cluster.id}, position)


def _list_again(
    client: BigIDClient,
    cluster_filter: str | None,
    listed_ids: set[str],
    skip: list[str],
    clusters: list[tuple[Any, dict[str, Any]]],
    details: dict[str, Any],
    expired: threading.Event,
) -> tuple[list[tuple[Any, dict[str, Any]]], int]:
    """The clusters a second listing holds that the first did not (those asked to be left out
    aside), recorded in ``details[RELISTING_KEY]`` with those it no longer holds, and how many ids
    to leave out it held that the first did not. A second listing that fails, or that the
    snapshot's time limit cuts short, is recorded and said: the run is what the first listing
    gave."""
    try:
        again = client.list_clusters(cluster_filter, lenient=True)
    except Exception as exc:  # a request the time limit cancelled may raise anything
        if expired.is_set():  # every cluster of the first listing is stored: the run is complete
            said = "the snapshot's time limit (--max-minutes) passed while the clusters were listed"
        elif isinstance(exc, AuditorError):
            said = secrets.scrub(exc.message)
        else:
            raise
        details[RELISTING_KEY] = {"error": said}
        log.warning("the cluster list could not be listed again: %s", said)
        return [], 0
    now = {cluster.id for cluster, _ in again}
    left_out = set(skip)
    found = [item for item in again if item[0].id not in listed_ids and item[0].id not in left_out]
    # an id too long to store, new in the second listing: left out (in the first, it stops the run)
    storable = [item for item in found if _storable_id(item[0].id)]
    gone = [cluster.id for cluster, _ in clusters if cluster.id not in now]
    details[RELISTING_KEY] = {
        "found_count": len(storable),
        "found": [cluster.id for cluster, _ in storable[:MAX_LISTED_MISMATCHES]],
        "gone_count": len(gone),
        "gone": gone[:MAX_LISTED_MISMATCHES],
        **({"ids_too_long": len(found) - len(storable)} if len(storable) < len(found) else {}),
    }
    # ids to leave out that only the second listing held: listed after all (see _leave_out)
    newly_skipped = sorted((now - listed_ids) & left_out)
    if newly_skipped:
        skipped = sorted({*details.get("skipped_clusters", ()), *newly_skipped})
        details["skipped_clusters"] = skipped[:MAX_LISTED_FAILURES]
        details["skipped_cluster_count"] = details.get("skipped_cluster_count", 0) + len(newly_skipped)
        not_listed = [i for i in details.get("skip_clusters_not_listed", ()) if i not in newly_skipped]
        if not_listed:
            details["skip_clusters_not_listed"] = not_listed
        else:
            details.pop("skip_clusters_not_listed", None)
    return storable, len(newly_skipped)


def _storable_id(cluster_id: str) -> bool:
    try:
        check_key(cluster_id, MAX_CLUSTER_ID_BYTES)
    except RecordKeyTooLong:
        return False
    return True


def _say_left_running(exc: BaseException, run_id: int) -> None:
    """Add to ``exc``'s hint that run ``run_id`` could not be marked failed either (the disk that
    filled up refuses that write too): it stays ``running`` until a prune marks it abandoned."""
    from auditor.store.db import DatabaseFileGone

    if isinstance(exc, AuditorError) and not isinstance(exc, DatabaseFileGone):  # (no file to prune)
        note = f"run {run_id} is left running (it could not be marked failed); auditor db prune marks it so"
        exc.hint = f"{exc.hint}; {note}" if exc.hint else note


def _processes_for(clusters: list[tuple[Any, dict[str, Any]]]) -> int:
    """The default number of decoding processes for these clusters (see :func:`take_snapshot`)."""
    sizes = [cluster.size for cluster, _ in clusters]
    if None not in sizes and sum(size or 0 for size in sizes) < POOL_MIN_COLUMNS:
        return 0
    return default_processes()


def _startable(processes: int | None) -> int | None:
    """``processes``, or 0 (decoding in the threads, said in a warning) where this program cannot
    start worker processes (:func:`auditor.workers.main_unimportable`)."""
    if processes and (why := main_unimportable()):
        log.warning("pages are decoded in this process's threads, not in %d processes: %s", processes, why)
        return 0
    return processes


def default_processes() -> int:
    """2 decoding processes on a machine with 2 or more CPUs, else 0 (decode in the threads)."""
    return 2 if (os.cpu_count() or 1) >= 2 else 0


def start_decoders(processes: int) -> ProcessPoolExecutor:
    """A pool of ``processes`` page decoders, already starting.

    ``forkserver`` (``spawn`` where there is none): forking this process, which runs threads, could
    copy a lock some thread holds. The forkserver imports this module once, so each decoder starts
    with the models and the writer's helpers loaded.
    """

    def start_now(pool: ProcessPoolExecutor) -> None:  # rather than at the first pages
        for _ in range(processes):
            pool.submit(int)

    return start_pool("auditor.snapshot", processes, _init_decoder, start_now)


def _init_decoder() -> None:
    """In each decoding process: Ctrl-C is the parent's to handle; no secret in the environment;
    garbage collection tuned for a page's throwaway objects."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    for name in _SECRET_ENV:
        os.environ.pop(name, None)
    tune_for_throwaway_objects()


def _row_key(row: ColumnRows) -> Hashable:
    """A :func:`column_rows` row's column fqn (the paging de-duplication key; ``COLUMN_FIELDS``)."""
    return row[1][1]


def _row_digest(row: ColumnRows) -> Hashable:
    """A :func:`column_rows` row's content hash (two records of one fqn: see ``paginate``)."""
    return row[0]


def _raw_content(row: tuple[Any, dict[str, Any]]) -> Hashable:
    """A ``(Column, raw)`` or ``(Cluster, raw)`` row's content, as a hash of its canonical JSON
    (None when too deep to encode: the writer fails that record's cluster)."""
    try:
        return hash(canonical_json(row[1]))
    except RecordNotStorable:
        return None


def _fetch_columns(
    client: BigIDClient,
    writer: SnapshotWriter,
    clusters: list[tuple[Any, dict[str, Any]]],
    workers: int,
    progress: Progress,
    details: dict[str, Any],
    offload: PageOffload | None = None,
    max_failed_clusters: int = DEFAULT_MAX_FAILED_CLUSTERS,
    failures: list[tuple[str, str]] | None = None,
    expired: threading.Event | None = None,
    invalid: Mapping[str, ApiError] | None = None,
) -> None:
    """Run the worker pool and write what it hands over, on this thread.

    ``expired`` set (the snapshot's time limit passed) raises :class:`_Expired` within half a
    second, before anything a cancelled request handed over is read as a cluster's failure.

    A cluster that fails (:func:`cluster_scoped`) is recorded failed and appended to ``failures``;
    its worker stops and anything it still hands over is ignored. More than ``max_failed_clusters``
    of them raise :class:`_TooManyFailures`; with 0, the first one's error is raised as it is.
    The clusters in ``invalid`` (id → the error of a listed record that did not fit the models)
    fail so before anything is fetched.
    """
    failures = [] if failures is None else failures
    abandoned: set[str] = set()  # failed clusters: their pages still queued are ignored
    pages: queue.Queue[tuple[str, str, Any]] = queue.Queue(maxsize=max(workers * QUEUE_PAGES_PER_WORKER, 2))
    stop = threading.Event()
    sizes = {cluster.id: cluster.size for cluster, _ in clusters}
    # what is listed in runs.details under each key (the first MAX_LISTED_MISMATCHES of each)
    listed: dict[str, list[dict[str, Any]]] = {key: [] for key in LISTED_KEYS}
    # the mismatches are all counted (``*_count``) and the first MAX_LISTED_MISMATCHES listed
    counts = {
        "size_mismatch_count": 0,
        "total_mismatch_count": 0,
        "duplicate_rows": 0,
        "pages": 0,
        "empty_pages_reasked": 0,
        "pages_shrunk": 0,
        "total_shortfall_count": 0,
        "changed_while_listed_count": 0,
        "relisted_count": 0,
        "fqn_conflict_count": 0,
        "null_rows": 0,
    }

    def put(item: tuple[str, str, Any]) -> None:
        while True:
            if stop.is_set() or item[1] in abandoned:
                raise _Cancelled
            try:
                pages.put(item, timeout=_PUT_WAIT)
                return
            except queue.Full:
                continue

    handed_errors = 0  # errors the workers handed over: past the limit, no new cluster starts
    errors_lock = threading.Lock()

    def work(cluster_id: str, size: int | None) -> None:
        nonlocal handed_errors
        last: PagingStats | None = None  # the stats of this cluster's last listing
        try:
            if stop.is_set() or handed_errors > max_failed_clusters:
                return  # the writer stops the snapshot once it reads those errors
            content = _row_digest if offload is not None else _raw_content
            for attempt in range(RELISTINGS + 1):
                fetch = client.fetch_all_columns(cluster_id, size=size, offload=offload, content=content)
                last = fetch.stats
                again = attempt < RELISTINGS
                for page in fetch:
                    put(("page", cluster_id, page))
                    if again and fetch.stats.total_changed is not None:
                        break  # its totalCount moved: what came so far may skip or repeat columns
                if not (again and fetch.stats.total_changed is not None):
                    break
                put(("restart", cluster_id, fetch.stats))  # from its first page, once more
            put(("done", cluster_id, fetch.stats))
        except _Cancelled:
            return
        except BaseException as exc:  # noqa: BLE001 - handed to the writer thread, which decides
            with contextlib.suppress(_Cancelled):
                if last is not None and last.shrunk:  # (a failed cluster's halvings count in the run's)
                    put(("halved", cluster_id, last.shrunk))
                put(("error", cluster_id, exc))
                with errors_lock:
                    handed_errors += 1

    # Twice as many threads as requests in flight (the client caps those at ``workers``): while one
    # thread decodes and hands over its page, another already waits on the network.
    executor = ThreadPoolExecutor(
        max_workers=workers * THREADS_PER_WORKER, thread_name_prefix="auditor-fetch"
    )
    remaining = len(clusters)
    unflushed = 0

    def cluster_failed(cluster_id: str, exc: BaseException) -> None:
        """Record the cluster failed; raise when the snapshot must stop (see the docstring)."""
        nonlocal remaining
        if not cluster_scoped(exc):  # a refused key, the store, a bug: the snapshot's failure, not its
            raise exc
        reason = _reason(exc)
        abandoned.add(cluster_id)  # before anything else: its worker stops at its next page
        writer.finish_cluster(cluster_id, ClusterStats(error=reason))
        failures.append((cluster_id, reason))
        if max_failed_clusters == 0:
            raise exc
        remaining -= 1
        progress.cluster_failed()
        log.info("cluster %s could not be fetched: %s", cluster_id, reason)
        if len(failures) > max_failed_clusters:
            raise _TooManyFailures

    try:
        for cluster, _ in clusters:
            if invalid and cluster.id in invalid:
                cluster_failed(cluster.id, invalid[cluster.id])
            else:
                executor.submit(work, cluster.id, cluster.size)
        while remaining:
            try:
                kind, cluster_id, payload = pages.get(timeout=0.5)
            except queue.Empty:
                if expired is not None and expired.is_set():
                    raise _Expired from None
                if writer.waited(IDLE_FLUSH_SECONDS):
                    writer.flush()  # waiting on the network: what was fetched is written meanwhile
                    unflushed = 0
                continue
            if expired is not None and expired.is_set():
                raise _Expired
            if cluster_id in abandoned:  # what a failed cluster's worker handed over before it stopped
                continue
            if kind == "page":
                rows: list[Any] = payload
                if rows:
                    if offload is not None:
                        writer.add_column_rows(cluster_id, rows)
                    else:
                        unstorable: RecordNotStorable | None = None
                        try:
                            writer.add_columns(cluster_id, rows)
                        except RecordNotStorable as exc:  # as decode_columns reports it in the pool
                            unstorable = exc
                        if unstorable is not None:  # out of the except: raised without its context
                            cluster_failed(cluster_id, record_not_storable(cluster_id, unstorable))
                            continue
                    progress.add_columns(len(rows))
                    unflushed += len(rows)
                    if unflushed >= writer.batch_rows:
                        unflushed = 0  # the writer flushed on its own
            elif kind == "restart":  # its listing changed while it was paged: listed again
                first: PagingStats = payload
                writer.restart_cluster(cluster_id)
                for key, value in (
                    ("pages", first.pages),
                    ("empty_pages_reasked", first.empty_reasked),
                    ("pages_shrunk", first.shrunk),
                    ("relisted_count", 1),
                ):
                    counts[key] += value
                assert first.total_changed is not None
                _list(
                    listed,
                    "relisted",
                    cluster_id=cluster_id,
                    total_first=first.total_changed[0],
                    total_then=first.total_changed[1],
                )
            elif kind == "done":
                stats: PagingStats = payload
                remaining -= 1
                _record_cluster(
                    writer,
                    cluster_id,
                    stats,
                    sizes.get(cluster_id),
                    counts,
                    listed,
                )
                progress.cluster_done()
            elif kind == "halved":  # the pages a cluster that then failed asked for again, halved
                counts["pages_shrunk"] += payload
            else:
                cluster_failed(cluster_id, payload)
            if pages.empty() and (unflushed >= IDLE_FLUSH_ROWS or writer.waited(IDLE_FLUSH_SECONDS)):
                # nothing to do until the network answers: write now rather than after the fetch
                writer.flush()
                unflushed = 0
    except BaseException:
        stop.set()
        client.cancel()
        if offload is not None:  # threads waiting for a decoder get CancelledError and stop
            offload.executor.shutdown(wait=False, cancel_futures=True)
        executor.shutdown(wait=True, cancel_futures=True)
        client.resume()
        raise
    finally:
        # added to what an earlier call for the same run recorded (the clusters a second listing found)
        for key, value in counts.items():
            details[key] = details.get(key, 0) + value
        for key, items in listed.items():
            details[key] = [*details.get(key, ()), *items][:MAX_LISTED_MISMATCHES]
        details["failed_cluster_count"] = len(failures)
        details["failed_clusters"] = [
            {"cluster_id": cluster_id, "error": error} for cluster_id, error in failures[:MAX_LISTED_FAILURES]
        ]
    executor.shutdown(wait=True)


def _record_cluster(
    writer: SnapshotWriter,
    cluster_id: str,
    stats: PagingStats,
    size: int | None,
    counts: dict[str, int],
    listed: dict[str, list[dict[str, Any]]],
) -> None:
    writer.finish_cluster(
        cluster_id,
        ClusterStats(
            total_announced=stats.announced_total,
            columns_fetched=stats.fetched,
            duplicate_rows=stats.duplicates,
            pages=stats.pages,
            # changed while listed: stored as served, but short (a diff leaves it out)
            ended_short=stats.ended_short or stats.total_changed is not None,
        ),
    )
    counts["duplicate_rows"] += stats.duplicates
    counts["null_rows"] += stats.nulls
    counts["pages"] += stats.pages
    counts["empty_pages_reasked"] += stats.empty_reasked
    counts["pages_shrunk"] += stats.shrunk
    if stats.disagrees(size):
        counts["size_mismatch_count"] += 1
        _list(listed, "size_mismatches", cluster_id=cluster_id, size=size, fetched=stats.fetched)
    if stats.total_changed is not None:  # its totalCount moved between pages (a hostile-server probe)
        counts["changed_while_listed_count"] += 1
        first, last = stats.total_changed
        _list(
            listed,
            "changed_while_listed",
            cluster_id=cluster_id,
            total_first=first,
            total_last=last,
            fetched=stats.fetched,
        )
    elif stats.ended_short:  # an empty page, asked for twice, before what was announced
        counts["total_shortfall_count"] += 1
    if stats.total_mismatch:
        counts["total_mismatch_count"] += 1
        _list(
            listed,
            "total_mismatches",
            cluster_id=cluster_id,
            total_count=stats.announced_total,
            fetched=stats.fetched,
        )
    if stats.conflicts:  # two records of one fqn, with different content: the first is stored
        counts["fqn_conflict_count"] += stats.conflicts
        for fqn in stats.conflict_keys:
            _list(listed, "fqn_conflicts", cluster_id=cluster_id, fqn=fqn)


def _list(listed: dict[str, list[dict[str, Any]]], key: str, **entry: Any) -> None:
    """Add ``entry`` to what runs.details lists under ``key``, unless it holds enough already."""
    if len(listed[key]) < MAX_LISTED_MISMATCHES:
        listed[key].append(entry)


def _fill_totals(totals: RunTotals, client: BigIDClient, details: dict[str, Any]) -> None:
    totals.requests = client.requests
    totals.retries = client.retries
    totals.auth_scheme = client.auth_scheme_used
    totals.details = {
        **details,
        "envelopes": {kind: sorted(shapes) for kind, shapes in client.envelopes.items()},
        "cluster_id_param": client.cluster_id_param,
        **({"cluster_param_ignored": client.cluster_param_ignored} if client.cluster_param_ignored else {}),
        "offset_param": client.offset_param,
        # the page size the snapshot ended with, after pages that timed out were halved (or None)
        "page_size_shrunk_to": client.page_ceiling,
        "token_exchanges": client.auth.exchanges,
        # always recorded, 0 included: a run says that its data was checked for the key
        "secrets_redacted": client.secrets_redacted,
    }


def _reason(exc: BaseException) -> str:
    """The one line recorded as a failed run's error (scrubbed, like every message)."""
    if isinstance(exc, Terminated):
        return "terminated (SIGTERM)"
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted (Ctrl-C)"
    if isinstance(exc, AuditorError):
        text = f"{type(exc).__name__}: {exc.message}"
    else:
        text = f"{type(exc).__name__}: {exc}"
    return secrets.scrub(text)


def _partial_reason(failures: list[tuple[str, str]], total: int, tripped_at: int | None) -> str:
    """The run's error when clusters failed: how many, and the first ones with their errors."""
    named = "; ".join(f"{cluster_id}: {reason}" for cluster_id, reason in failures[:MAX_FAILURES_IN_REASON])
    more = len(failures) - MAX_FAILURES_IN_REASON
    if more > 0:
        named += f"; … and {more} more"
    if tripped_at is not None:
        head = (
            f"stopped after {len(failures)} of {total} clusters failed (more than {tripped_at} allowed); "
            "the remaining clusters were not fetched"
        )
    else:
        head = f"{len(failures)} of {total} clusters could not be fetched"
    return secrets.scrub(f"{head}: {named}")


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:g} min" if seconds >= 60 else f"{seconds:g} s"


def _deadline_reason(max_seconds: float, stored: int, total: int | None) -> str:
    """The run's error when the snapshot's time limit passed."""
    limit = _minutes(max_seconds)
    if total is None:
        return f"did not finish within {limit} (--max-minutes): the clusters were still being listed"
    return (
        f"did not finish within {limit} (--max-minutes): {stored} of {total} clusters were "
        "stored, the others were not fetched in full"
    )


def _deadline_error(
    writer: SnapshotWriter, failures: list[tuple[str, str]], total: int | None, max_seconds: float
) -> PartialSnapshotError:
    """What a snapshot cut short by its time limit raises."""
    run_id = writer.run_id
    return PartialSnapshotError(
        f"run {run_id} is not complete: the snapshot "
        + _deadline_reason(max_seconds, writer.clusters_stored, total),
        hint=(
            f"auditor check --run {run_id} --allow-incomplete evaluates what was stored; raise --max-minutes "
            "(or narrow the snapshot with --filter) and run it again"
        ),
        run_id=run_id,
        failed=failures,
        problems=[f"{cluster_id}: {error}" for cluster_id, error in failures[:MAX_FAILURE_PROBLEMS]],
    )


def _partial_error(
    writer: SnapshotWriter, failures: list[tuple[str, str]], total: int, tripped_at: int | None
) -> PartialSnapshotError:
    """What a snapshot with failed clusters raises: the run, how many failed, one line each."""
    run_id, stored = writer.run_id, writer.clusters_stored
    if tripped_at is not None:
        remaining = total - stored - len(failures)
        message = (
            f"run {run_id} is not complete: the snapshot stopped after {len(failures)} clusters failed "
            f"(more than {tripped_at} allowed); {stored} of {total} clusters were stored, "
            f"the remaining {remaining} {'was' if remaining == 1 else 'were'} not fetched"
        )
        check = f"auditor check --run {run_id} --allow-incomplete evaluates what was stored"
        more = "(--max-failed-clusters N allows more failed clusters)"
        if all(reason.startswith(f"{PayloadError.__name__}:") for _, reason in failures):
            # records that do not fit the models are no outage: asking again would not help
            hint = "the tenant's records do not fit the models: re-run with --verbose and report them; "
            hint += f"{check} {more}"
        elif all(reason.startswith(f"{AuthError.__name__}:") for _, reason in failures):
            # every cluster refused (HTTP 403): the key lacks a permission, the tenant is not down
            hint = f"{FORBIDDEN_HINT} Cluster Analysis and the Data Catalog; {check} {more}"
        else:
            hint = f"is the tenant down? {check}; run the snapshot again once the tenant answers {more}"
    else:
        others = {0: "none was stored", 1: "the other one was stored"}.get(
            stored, f"the other {stored} were stored"
        )
        head = f"{len(failures)} of {total} clusters could not be fetched"
        message = f"run {run_id} is not complete: {head} ({others})"
        hint = (
            f"auditor check --run {run_id} --allow-incomplete evaluates what was stored; run the snapshot "
            "again once the tenant serves those clusters, or leave them out with --skip-cluster ID"
        )
        if any(reason.startswith(f"{AuthError.__name__}:") for _, reason in failures):
            hint = f"{FORBIDDEN_HINT} the data sources of the clusters refused (HTTP 403); {hint}"
    problems = [f"{cluster_id}: {reason}" for cluster_id, reason in failures[:MAX_FAILURE_PROBLEMS]]
    if len(failures) > MAX_FAILURE_PROBLEMS:
        problems.append(f"… and {len(failures) - MAX_FAILURE_PROBLEMS} more")
    return PartialSnapshotError(
        secrets.scrub(message),
        secrets.scrub(hint),
        run_id=run_id,
        failed=failures,
        problems=[secrets.scrub(problem) for problem in problems],
        tripped=tripped_at is not None,
    )
