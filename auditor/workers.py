"""The start method of this package's worker processes (page decoders, rule evaluators).

``forkserver`` where the platform has it (``spawn`` elsewhere): forking the calling process, which
runs threads, could copy a lock some thread holds. The fork server imports ``preload`` once, so each
worker starts with it loaded.

CPython 3.11's fork server starts as ``python -c …``, which puts the current directory first on its
``sys.path``, and it ignores the parent's path. Run from a folder holding another ``auditor``
package (a different checkout, someone's own project), every worker would import that one instead
of this one. In that case the fork server is started at once with ``PYTHONSAFEPATH=1`` (Python
3.11+: do not prepend the current directory), so it imports the same package as the process that
started it, and the variable is then put back as it was: a program using the library starts its own
subprocesses with its own environment. (Where there is no fork server, on Windows, each spawned
worker reads the environment as it starts, so the variable stays set there.)

Ctrl-C while a pool starts must not print a traceback from a process the user never asked for: the
fork server is started with SIGINT ignored (a disposition that survives ``exec``, so its own import
of ``preload`` cannot be interrupted), and :func:`starting_workers` holds an interrupt until the
pool's processes exist, so that the caller's cleanup can shut the pool down and join them (an
interrupt inside ``submit`` left a half-started worker that failed on semaphores already gone).
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import shutil
import signal
import threading
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from multiprocessing.context import BaseContext
from pathlib import Path

import auditor
from auditor.stopping import signals_held

# Held while os.environ is changed for the fork server's start and put back.
_environment_changing = threading.Lock()


def worker_context(preload: str) -> BaseContext:
    """A multiprocessing context for a pool of this package's workers, importing ``preload`` once."""
    methods = multiprocessing.get_all_start_methods()
    context = multiprocessing.get_context("forkserver" if "forkserver" in methods else "spawn")
    forking = context.get_start_method() == "forkserver"
    if forking:
        context.set_forkserver_preload([preload])
    shadowed = shadowed_by_current_directory()
    if not forking:
        # No fork server on this platform (Windows): every spawned child reads the environment
        # when it starts, so the variable is left set for the rest of the process there.
        if shadowed:
            os.environ["PYTHONSAFEPATH"] = "1"
        return context
    from multiprocessing import forkserver

    with _environment_changing:  # two threads starting pools: neither restores the other's value
        _start_fork_server(forkserver, shadowed)
    return context


def _start_fork_server(forkserver, shadowed: bool) -> None:
    """Start the fork server now, with ``PYTHONSAFEPATH=1`` when ``shadowed``, then put the
    variable back as it was (under :data:`_environment_changing`)."""
    before = os.environ.get("PYTHONSAFEPATH")
    if shadowed:
        os.environ["PYTHONSAFEPATH"] = "1"  # read once, when the fork server starts (just below)
    try:
        if _main_thread():
            previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
            try:
                forkserver.ensure_running()  # a fork and an exec: the ignored Ctrl-C is a moment's
            finally:
                signal.signal(signal.SIGINT, previous)
        else:  # (signal dispositions can only be changed from the main thread)
            forkserver.ensure_running()
    finally:
        if shadowed:  # the caller's environment as it was: its own subprocesses are not ours
            if before is None:
                os.environ.pop("PYTHONSAFEPATH", None)
            else:
                os.environ["PYTHONSAFEPATH"] = before


def _stop_only_for_owner(owner: int) -> None:
    """In a worker: end on a SIGTERM from the process that owns the pool (the pool's own
    ``terminate`` of a broken pool), or once that owner is gone, and not on one sent to the whole
    process group.

    ``systemctl stop``, GNU ``timeout`` and CI runners signal the process group: the fork server
    and the workers died with the command, which then met ``EOFError`` (an internal error, exit 3)
    or waited for pages the dead workers would never decode (exit only after the 10 s grace, the
    run left ``running``). Ctrl-C already reaches only the command (workers ignore SIGINT, as
    multiprocessing's own processes do); SIGTERM is now the command's to handle too: it stops the
    pool itself. The signal is blocked and one thread waits for it, reading who sent it. (The
    fork server itself is left as it is, shared with any pool the program makes: a group's SIGTERM
    ending it while a pool starts is the stop, see :func:`auditor.stopping.signals_held`.)
    """
    if not hasattr(signal, "sigwaitinfo"):  # macOS: the signal's default action, as before
        return
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})

    def wait() -> None:
        while True:
            sender = signal.sigwaitinfo({signal.SIGTERM}).si_pid
            if sender == owner or not _running(owner):
                # the default action, from the one thread that takes the signal: the process ends
                # as a terminated process does, which is what the pool that sent it expects
                signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})
                os.kill(os.getpid(), signal.SIGTERM)
                os._exit(128 + signal.SIGTERM)  # (not reached)

    threading.Thread(target=wait, name="owner-stop", daemon=True).start()


def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def starting_workers() -> contextlib.AbstractContextManager[None]:
    """Hold Ctrl-C and SIGTERM until the block (creating a pool and submitting its first tasks) is
    done (:func:`auditor.stopping.signals_held`): a signal inside ``submit`` could land between a
    worker's start and its registration in the pool, and the pool's shutdown would then not wait
    for that worker, which failed on the pool's semaphores, already gone, with a traceback on the
    command's stderr. The first signal held is then handled as usual."""
    return signals_held()


def start_pool(
    preload: str,
    workers: int,
    initializer: Callable[[], None],
    submit_first: Callable[[ProcessPoolExecutor], object],
) -> ProcessPoolExecutor:
    """A pool of ``workers`` processes (:func:`worker_context`, ``preload`` imported once), with its
    first tasks submitted by ``submit_first``, Ctrl-C held meanwhile (:func:`starting_workers`).

    If anything fails or is interrupted on the way, the pool is shut down and its processes joined
    before the error goes on: no half-started worker is left to fail on its own.
    """
    pool: ProcessPoolExecutor | None = None
    try:
        with starting_workers():
            pool = ProcessPoolExecutor(
                max_workers=workers,
                mp_context=worker_context(preload),
                initializer=_watched,
                initargs=(os.getpid(), initializer),
            )
            submit_first(pool)
    except BaseException:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
        raise
    return pool


WATCH_SECONDS = 1.0
_OWNER_FILES: set[str] = set()  # in a worker: folders to remove should its owner die


def remove_if_orphaned(path: str) -> None:
    """In a worker: remove folder ``path`` (the owner's spool, say) if the owner dies before it
    does (``kill -9``, an out-of-memory kill); its own cleanup never runs then, and a folder in
    ``/dev/shm`` holds memory until the machine restarts."""
    _OWNER_FILES.add(path)


def _watched(owner: int, initializer: Callable[[], None]) -> None:
    """A worker's initializer: ``initializer``, then a watch on the process that started the pool.

    A worker waits for tasks on a queue it holds both ends of, so it never sees its owner die: after
    a ``kill -9`` (or an out-of-memory kill) of the command, its workers lived on, holding the
    command's stdout open (``RUN=$(auditor snapshot)`` never returned) and its spool folder. The
    watch ends the worker within :data:`WATCH_SECONDS` of its owner's death.
    """
    _stop_only_for_owner(owner)
    initializer()

    def watch() -> None:
        while True:
            time.sleep(WATCH_SECONDS)
            if not _running(owner):
                for path in list(_OWNER_FILES):  # nobody else is left to remove them
                    shutil.rmtree(path, ignore_errors=True)
                os._exit(1)

    threading.Thread(target=watch, name="owner-watch", daemon=True).start()


def _running(pid: int) -> bool:
    """Whether process ``pid`` still runs: it exists, is ours, and is no zombie (a killed process
    its parent has not reaped yet still answers ``kill(pid, 0)``)."""
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, PermissionError):  # gone, or its pid reused by another user
        return False
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            return stat.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except (OSError, IndexError):  # no /proc (macOS): kill(pid, 0) is all there is
        return True


def main_unimportable() -> str | None:
    """Why worker processes cannot start from this program, or ``None`` when they can.

    A fork server's (or spawn's) child imports the caller's main module again, by its path when it
    was run as a script; a program read from standard input (``python - < job.py``) names
    ``<stdin>``, which no child can import, and every worker died as it started (the snapshot
    failed with "a page-decoding process died unexpectedly"). Callers then work in this process.
    """
    import sys
    from multiprocessing import process

    main = sys.modules.get("__main__")
    if main is None or getattr(main, "__spec__", None) is not None:  # -m module: imported by name
        return None
    path = getattr(main, "__file__", None)
    if path is None:  # the interactive interpreter, python -c: nothing for a child to import
        return None
    if not os.path.isabs(path) and process.ORIGINAL_DIR is not None:
        path = os.path.join(process.ORIGINAL_DIR, path)
    if os.path.isfile(path):
        return None
    return f"the main program ({main.__file__}) is not a file that worker processes could import"


def shadowed_by_current_directory() -> bool:
    """True when ``./auditor`` is a package other than the one this process imported."""
    try:
        candidate = Path.cwd() / "auditor"
        return candidate.is_dir() and candidate.resolve() != Path(auditor.__file__).resolve().parent
    except OSError:  # the current directory was removed
        return False
