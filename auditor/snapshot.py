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

The run becomes ``complete`` only when every cluster was fetched in full. Any failure (API, network,
payload, store, Ctrl-C) cancels the remaining work, marks the run ``failed`` with the reason and
re-raises the error. Per cluster, the run records the total the API announced, the distinct columns
stored, duplicates received and pages; per run, the requests, retries, the auth scheme that worked,
the envelope shapes seen, how many times the API key was found (and masked) in the data served,
and every mismatch between a cluster's ``size``, its ``totalCount`` and the
columns actually fetched (``runs.details``).
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import queue
import signal
import threading
import traceback
from collections.abc import Hashable
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from typing import Any

from sqlalchemy import Engine

from auditor import secrets
from auditor.bigid.client import BigIDClient, PageOffload, cluster_too_deep, record_too_deep
from auditor.bigid.models import RecordTooDeep
from auditor.bigid.paging import PagingStats
from auditor.errors import AuditorError, StoreError
from auditor.gcpause import tune_for_throwaway_objects
from auditor.progress import Progress
from auditor.store.runs import RunInfo, get_run
from auditor.store.writer import ClusterStats, ColumnRows, RunTotals, SnapshotWriter, column_rows
from auditor.workers import start_pool

log = logging.getLogger("auditor.snapshot")

THREADS_PER_WORKER = 2  # fetch threads per request slot (see _fetch_columns)
QUEUE_PAGES_PER_WORKER = 12  # pages waiting for the writer, per worker: bounds memory (~1 MB a page),
# deep enough that fetching goes on while the writer commits a 25,000-row batch
IDLE_FLUSH_ROWS = 10_000  # rows worth a transaction when the writer would otherwise wait
MAX_LISTED_MISMATCHES = 1000  # mismatches listed in runs.details (all are counted)
_PUT_WAIT = 0.2
POOL_MIN_COLUMNS = 20_000  # columns announced below which processes=None decodes in the threads
# Environment variables a decoding process must not inherit (it gets page bytes, nothing else).
_SECRET_ENV = ("BIGID_TOKEN",)


class _Cancelled(Exception):
    """A worker noticed that the snapshot is being abandoned."""


def take_snapshot(
    engine: Engine,
    client: BigIDClient,
    *,
    cluster_filter: str | None = None,
    workers: int = 4,
    progress: Progress | None = None,
    processes: int | None = None,
) -> RunInfo:
    """Fetch everything into a new run and return it (``complete``), or raise (run ``failed``).

    ``processes``: decoding processes (see the module docstring), 0 decodes in the worker threads.
    None means :func:`default_processes`, but only for a tenant whose clusters announce at least
    :data:`POOL_MIN_COLUMNS` columns (or do not say): starting the pool costs more than it saves on
    a small one. ``runs.details.processes`` records what was used.
    """
    if workers < 1:
        raise ValueError("workers must be at least 1")
    if processes is not None and processes < 0:
        raise ValueError("processes must be 0 or more")
    progress = progress or Progress(enabled=False)
    client.limit_requests(workers)  # ``workers`` requests in flight, whatever the client was built with
    writer = SnapshotWriter(
        engine,
        source_url=client.base_url,
        cluster_filter=cluster_filter,
        details={
            "page_size": client.options.page_size,
            "workers": workers,
            "auth_scheme_requested": client.options.auth_scheme,
        },
    )
    details: dict[str, Any] = {}
    totals = RunTotals()
    pool: ProcessPoolExecutor | None = None
    try:
        if processes:
            pool = start_decoders(processes)  # they start while the clusters are listed
        clusters = client.list_clusters(cluster_filter)
        if processes is None:
            processes = _processes_for(clusters)
            if processes:
                pool = start_decoders(processes)
        details["processes"] = processes
        listing = client.last_cluster_paging or PagingStats()
        totals.clusters_announced = listing.total if listing.total is not None else len(clusters)
        details["cluster_duplicates"] = listing.duplicates
        if listing.total is not None and listing.total != len(clusters):
            details["cluster_total_mismatch"] = {"announced": listing.total, "fetched": len(clusters)}
        for position, (cluster, raw) in enumerate(clusters):
            try:
                writer.add_cluster(cluster, raw, position)
            except RecordTooDeep as too_deep:
                raise cluster_too_deep(position, too_deep) from None
        progress.start(len(clusters))
        offload = PageOffload(pool, column_rows, _row_key) if pool is not None else None
        _fetch_columns(client, writer, clusters, workers, progress, details, offload)
    except BaseException as exc:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
        # The traceback's frames may hold the cursor of a write that was interrupted mid-flush
        # (Ctrl-C lands there most often); while it lives, SQLite keeps that transaction's lock and
        # marking the run failed would wait out the busy timeout. Locals are not needed any more.
        traceback.clear_frames(exc.__traceback__)
        gc.collect()  # the cursor may sit in a reference cycle too
        reason = _reason(exc)
        _fill_totals(totals, client, details)
        try:
            writer.fail(reason, totals)
        except StoreError as store_exc:  # the original error matters more; say both in the log
            log.error("could not mark run %s failed: %s", writer.run_id, store_exc)
        progress.close()
        raise
    if pool is not None:
        pool.shutdown(wait=True)
    _fill_totals(totals, client, details)
    try:
        writer.complete(totals)
    except BaseException as exc:  # the last flush failed: the run must not stay "running"
        with contextlib.suppress(StoreError):
            writer.fail(_reason(exc), totals)
        raise
    finally:
        progress.close()
    run = get_run(engine, writer.run_id)
    assert run is not None
    return run


def _processes_for(clusters: list[tuple[Any, dict[str, Any]]]) -> int:
    """The default number of decoding processes for these clusters (see :func:`take_snapshot`)."""
    sizes = [cluster.size for cluster, _ in clusters]
    if None not in sizes and sum(size or 0 for size in sizes) < POOL_MIN_COLUMNS:
        return 0
    return default_processes()


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


def _fetch_columns(
    client: BigIDClient,
    writer: SnapshotWriter,
    clusters: list[tuple[Any, dict[str, Any]]],
    workers: int,
    progress: Progress,
    details: dict[str, Any],
    offload: PageOffload | None = None,
) -> None:
    """Run the worker pool and write what it hands over, on this thread."""
    pages: queue.Queue[tuple[str, str, Any]] = queue.Queue(maxsize=max(workers * QUEUE_PAGES_PER_WORKER, 2))
    stop = threading.Event()
    sizes = {cluster.id: cluster.size for cluster, _ in clusters}
    size_mismatches: list[dict[str, Any]] = []
    total_mismatches: list[dict[str, Any]] = []
    # the mismatches are all counted (``*_count``) and the first MAX_LISTED_MISMATCHES listed
    counts = {"size_mismatch_count": 0, "total_mismatch_count": 0, "duplicate_rows": 0, "pages": 0}

    def put(item: tuple[str, str, Any]) -> None:
        while True:
            if stop.is_set():
                raise _Cancelled
            try:
                pages.put(item, timeout=_PUT_WAIT)
                return
            except queue.Full:
                continue

    def work(cluster_id: str, size: int | None) -> None:
        try:
            if stop.is_set():
                return
            fetch = client.fetch_all_columns(cluster_id, size=size, offload=offload)
            for page in fetch:
                put(("page", cluster_id, page))
            put(("done", cluster_id, fetch.stats))
        except _Cancelled:
            return
        except BaseException as exc:  # noqa: BLE001 - handed to the writer thread, which fails the run
            with contextlib.suppress(_Cancelled):
                put(("error", cluster_id, exc))

    # Twice as many threads as requests in flight (the client caps those at ``workers``): while one
    # thread decodes and hands over its page, another already waits on the network.
    executor = ThreadPoolExecutor(
        max_workers=workers * THREADS_PER_WORKER, thread_name_prefix="auditor-fetch"
    )
    remaining = len(clusters)
    unflushed = 0
    try:
        for cluster, _ in clusters:
            executor.submit(work, cluster.id, cluster.size)
        while remaining:
            try:
                kind, cluster_id, payload = pages.get(timeout=0.5)
            except queue.Empty:
                continue
            if kind == "page":
                rows: list[Any] = payload
                if rows:
                    if offload is not None:
                        writer.add_column_rows(cluster_id, rows)
                    else:
                        try:
                            writer.add_columns(cluster_id, rows)
                        except RecordTooDeep as too_deep:  # as decode_columns reports it in the pool
                            raise record_too_deep(cluster_id, too_deep) from None
                    progress.add_columns(len(rows))
                    unflushed += len(rows)
                    if unflushed >= writer.batch_rows:
                        unflushed = 0  # the writer flushed on its own
            elif kind == "done":
                stats: PagingStats = payload
                remaining -= 1
                _record_cluster(
                    writer,
                    cluster_id,
                    stats,
                    sizes.get(cluster_id),
                    counts,
                    size_mismatches,
                    total_mismatches,
                )
                progress.cluster_done()
            else:
                exc: BaseException = payload
                writer.finish_cluster(cluster_id, ClusterStats(error=_reason(exc)))
                raise exc
            if unflushed >= IDLE_FLUSH_ROWS and pages.empty():
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
        details.update(counts)
        details["size_mismatches"] = size_mismatches
        details["total_mismatches"] = total_mismatches
    executor.shutdown(wait=True)


def _record_cluster(
    writer: SnapshotWriter,
    cluster_id: str,
    stats: PagingStats,
    size: int | None,
    counts: dict[str, int],
    size_mismatches: list[dict[str, Any]],
    total_mismatches: list[dict[str, Any]],
) -> None:
    writer.finish_cluster(
        cluster_id,
        ClusterStats(
            total_announced=stats.total,
            columns_fetched=stats.fetched,
            duplicate_rows=stats.duplicates,
            pages=stats.pages,
        ),
    )
    counts["duplicate_rows"] += stats.duplicates
    counts["pages"] += stats.pages
    if size is not None and size != stats.fetched:
        counts["size_mismatch_count"] += 1
        if len(size_mismatches) < MAX_LISTED_MISMATCHES:
            size_mismatches.append({"cluster_id": cluster_id, "size": size, "fetched": stats.fetched})
    if stats.total is not None and stats.total != stats.fetched:
        counts["total_mismatch_count"] += 1
        if len(total_mismatches) < MAX_LISTED_MISMATCHES:
            total_mismatches.append(
                {"cluster_id": cluster_id, "total_count": stats.total, "fetched": stats.fetched}
            )


def _fill_totals(totals: RunTotals, client: BigIDClient, details: dict[str, Any]) -> None:
    totals.requests = client.requests
    totals.retries = client.retries
    totals.auth_scheme = client.auth_scheme_used
    totals.details = {
        **details,
        "envelopes": {kind: sorted(shapes) for kind, shapes in client.envelopes.items()},
        "cluster_id_param": client.cluster_id_param,
        "token_exchanges": client.auth.exchanges,
        # always recorded, 0 included: a run says that its data was checked for the key
        "secrets_redacted": client.secrets_redacted,
    }


def _reason(exc: BaseException) -> str:
    """The one line recorded as a failed run's error (scrubbed, like every message)."""
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted (Ctrl-C)"
    if isinstance(exc, AuditorError):
        text = f"{type(exc).__name__}: {exc.message}"
    else:
        text = f"{type(exc).__name__}: {exc}"
    return secrets.scrub(text)
