"""Stopping the command when its own cleanup cannot finish: the hard stop after Ctrl-C or SIGTERM.

Ctrl-C and SIGTERM raise in the main thread, and the command unwinds: a snapshot marks its run
failed, worker pools are shut down, half-written outputs are removed. Python runs a signal handler
only between bytecodes, though. A SQLite statement that waits for another process's write lock
sleeps inside SQLite's C busy handler for up to the 5-minute busy timeout, and neither the signal
nor ``Connection.interrupt()`` ends that wait: Ctrl-C did nothing until the other writer let go.

:func:`armed` arms, while the command runs, a watcher thread on the signal wakeup descriptor
(written by the C-level handler the moment a signal arrives, whatever the main thread is doing).
Once Ctrl-C or SIGTERM has been received, the command gets :data:`GRACE_SECONDS` to stop on its own;
a second Ctrl-C or SIGTERM, or the end of the grace, stops the process at once with the signal's
exit code, after removing the temporary files registered with :func:`removed_on_hard_stop`. A run it
was writing is then left ``running``: ``auditor runs`` shows it abandoned, ``auditor db prune``
marks it so, and it is never taken for complete. Worker processes end on their own when their owner
is gone (:mod:`auditor.workers`)."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import threading
import time
from collections.abc import Iterator
from typing import Any

# How long a stopped command may take to unwind before it is stopped outright. A snapshot gives a
# lock held by another writer 5 s (``snapshot.STOP_PATIENCE``) before leaving its run running;
# ``docker stop`` sends SIGKILL after 10 s.
GRACE_SECONDS = 10.0

_STOPS = {signal.SIGINT: 130, signal.SIGTERM: 143}
# A SIGTERM this soon after the first is the same stop, sent twice: GNU timeout signals the command,
# then its whole process group (the command again), and systemd may do alike. Taken for a second
# stop, it ended the command at once, its run left running. (A second Ctrl-C still stops at once.)
ECHO_SECONDS = 1.0
_last_term = [0.0]


def repeated_term() -> bool:
    """In the SIGTERM handler: whether this SIGTERM repeats one handled less than
    :data:`ECHO_SECONDS` ago (then it is ignored, not raised again into the cleanup)."""
    now = time.monotonic()
    echo = now - _last_term[0] < ECHO_SECONDS
    if not echo:
        _last_term[0] = now
    return echo


_leftovers: set[str] = set()


# The stops the command's signal handlers raised (Ctrl-C, SIGTERM). Python raises a pending
# signal's exception at the next function call, often the first line of a function SQLite calls
# (auditor_regexp, auditor_lower), where nothing can catch it: SQLite reports it as "user-defined
# function raised exception", which read as a database failure (exit 3) instead of the stop it
# was (130, 143).
_stops_raised: list[KeyboardInterrupt] = []


def stop_raised(exc: KeyboardInterrupt) -> KeyboardInterrupt:
    """Remember a stop a signal handler raises (returns it, for ``raise stop_raised(…)``)."""
    _stops_raised.append(exc)
    return exc


def stop_inside_database(detail: str) -> KeyboardInterrupt | None:
    """The stop behind a database error saying ``detail``, when it is SQLite's word for an
    exception raised inside a function it called and a stop was raised (then forgotten)."""
    if "user-defined function raised exception" not in detail or not _stops_raised:
        return None
    found = _stops_raised[-1]
    _stops_raised.clear()
    return found


@contextlib.contextmanager
def removed_on_hard_stop(path: str | os.PathLike[str]) -> Iterator[None]:
    """Inside the block, a hard stop removes ``path`` (a temporary file or folder) before exiting."""
    key = os.fspath(path)
    _leftovers.add(key)
    try:
        yield
    finally:
        _leftovers.discard(key)


@contextlib.contextmanager
def signals_held() -> Iterator[None]:
    """Hold Ctrl-C and SIGTERM until the block is done, then handle the first one held as usual:
    for short steps that must not be cut in two (registering a started worker, printing what a
    committed transaction did). Only in the main thread; elsewhere the block runs as it is."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    held: list[tuple[int, object]] = []
    previous: dict[int, Any] = {}
    for number in (signal.SIGINT, signal.SIGTERM):
        handler = signal.getsignal(number)
        if callable(handler):  # not ignored, not the default (which ends the process outright)
            previous[number] = handler
            signal.signal(number, lambda signum, frame: held.append((signum, frame)))
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
        if held:
            # raised here also when the block failed: the stop wins, chained to the failure (a
            # SIGTERM sent to the whole process group also ends the fork server a pool was starting
            # from: its EOFError is the stop's doing, not an internal error)
            signum, frame = held[0]
            previous[signum](signum, frame)


@contextlib.contextmanager
def armed(grace: float | None = None) -> Iterator[bool]:
    """The hard stop, armed for the block (from the main thread; yields whether it is armed: not
    off the main thread, or when another wakeup descriptor is in place, an event loop's). Leaving
    the block disarms it: a program that runs a command in-process and handles a later Ctrl-C
    itself is never ended by it. ``grace``: :data:`GRACE_SECONDS` unless given."""
    grace = GRACE_SECONDS if grace is None else grace
    if threading.current_thread() is not threading.main_thread():
        yield False
        return
    read_end, write_end = os.pipe()
    os.set_blocking(write_end, False)  # a full pipe must never block the C signal handler
    try:
        previous = signal.set_wakeup_fd(write_end, warn_on_full_buffer=False)
    except (ValueError, OSError):
        os.close(read_end)
        os.close(write_end)
        yield False
        return
    if previous != -1:  # someone else's (an event loop's): theirs stays
        signal.set_wakeup_fd(previous)
        os.close(read_end)
        os.close(write_end)
        yield False
        return
    done = threading.Event()
    watcher = threading.Thread(
        target=_watch, args=(read_end, grace, done), name="auditor-hard-stop", daemon=True
    )
    watcher.start()
    try:
        yield True
    finally:
        done.set()
        signal.set_wakeup_fd(-1)
        os.close(write_end)  # the watcher reads the end of the pipe and returns
        watcher.join(timeout=1)


def _watch(read_end: int, grace: float, done: threading.Event) -> None:
    """The watcher thread: wait for a stop signal, then for a second one or the end of the grace;
    return when the block that armed it is left (``done``, and the pipe's end)."""
    first: int | None = None
    deadline = None
    echo_until = 0.0
    try:
        while not done.is_set():
            timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
            if not _readable(read_end, timeout):
                if not done.is_set():
                    _hard_stop(first, f"still stopping after {grace:g} s")  # the grace ended
                return
            try:
                data = os.read(read_end, 64)
            except OSError:
                return
            if not data or done.is_set():
                return
            for number in data:
                if number not in _STOPS:
                    continue
                if first is not None:
                    if number == first == signal.SIGTERM and time.monotonic() < echo_until:
                        continue  # the same stop sent twice (see ECHO_SECONDS)
                    _hard_stop(first, "stopped again")
                    return
                first = number
                deadline = time.monotonic() + grace
                echo_until = time.monotonic() + ECHO_SECONDS
    finally:
        os.close(read_end)


def _readable(fd: int, timeout: float | None) -> bool:
    import select

    while True:
        try:
            ready, _, _ = select.select([fd], [], [], timeout)
        except InterruptedError:  # pragma: no cover - PEP 475 retries select itself
            continue
        return bool(ready)


def _multiprocessing_folder() -> list[str]:
    """The ``pymp-…`` folder multiprocessing made for its fork server's socket, if any: its own
    cleanup runs at a normal exit, not at :func:`os._exit`, and it was left in $TMPDIR."""
    with contextlib.suppress(Exception):  # (a private attribute of multiprocessing, kept for years)
        from multiprocessing import process

        folder = process.current_process()._config.get("tempdir")  # type: ignore[attr-defined]
        if isinstance(folder, str) and os.path.basename(folder).startswith("pymp-"):
            return [folder]
    return []


def _hard_stop(number: int | None, why: str) -> None:
    code = _STOPS.get(number, 130) if number is not None else 130
    for path in [*_leftovers, *_multiprocessing_folder()]:
        with contextlib.suppress(OSError):
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path, ignore_errors=True)
            else:
                os.unlink(path)
    message = (
        f"\nauditor: {why}: exiting without finishing the cleanup (a database write may be waiting "
        "for another process's lock); a run being written, if any, is left running and shows as "
        "abandoned (auditor db prune marks it so)\n"
    )
    with contextlib.suppress(OSError):  # not through sys.stderr: the main thread may hold its lock
        os.write(2, message.encode())
    os._exit(code)
