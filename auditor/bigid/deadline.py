"""A deadline for a whole HTTP answer, its status line and headers included.

A read timeout bounds each wait for bytes, not an answer: a server that sends its headers one byte
every few seconds never trips it, and ``requests`` offers no total timeout. :class:`DeadlineAdapter`
makes every socket read of a request made under :func:`watching` check the request's deadline (and
its cancellation) first, and wait no longer than the deadline leaves: from the status line to the
last byte of the body. Past the deadline a read raises :class:`AnswerLate`; once ``cancelled`` is
set, :class:`AnswerCancelled`. Neither is an ``OSError``, so urllib3 does not retry or rewrap them:
they reach the caller as raised, and urllib3 closes the connection they interrupted.
"""

from __future__ import annotations

import contextlib
import io
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool


class AnswerLate(Exception):
    """The answer (headers or body) was still arriving at the request's deadline."""


class AnswerCancelled(Exception):
    """The client was cancelled (the snapshot is stopping) while an answer was arriving."""


_watch = threading.local()
CANCEL_POLL = 0.25  # seconds between two looks at the cancellation while an answer is awaited


@contextlib.contextmanager
def watching(deadline: float, cancelled: threading.Event | None = None) -> Iterator[None]:
    """Requests made by this thread inside the block read their answers by ``deadline``
    (``time.monotonic()``), and stop reading once ``cancelled`` is set."""
    previous = getattr(_watch, "limits", None)
    _watch.limits = (deadline, cancelled)
    try:
        yield
    finally:
        _watch.limits = previous


class _DeadlineSocket:
    """A connected socket whose reads keep to a deadline; everything else is the socket's own."""

    def __init__(self, sock: socket.socket, deadline: float, cancelled: threading.Event | None) -> None:
        self._sock = sock
        self._deadline = deadline
        self._cancelled = cancelled

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)

    def makefile(self, mode: str = "rb", buffering: int | None = None, **_: Any) -> io.BufferedReader:
        """What ``http.client`` reads the answer through: ``socket.makefile`` over these reads."""
        if mode != "rb":
            raise ValueError(f"unsupported mode {mode!r}")
        raw = socket.SocketIO(self, "rb")  # type: ignore[arg-type]
        self._sock._io_refs += 1  # type: ignore[attr-defined]  # as socket.makefile does
        return io.BufferedReader(raw, buffering or io.DEFAULT_BUFFER_SIZE)

    def recv_into(self, buffer: Any, *args: Any) -> int:  # args as given: TLS sockets default differently
        """Read what has arrived, waiting no longer than the read timeout (the socket's own, raised as
        the socket raises it), nor past the deadline (:class:`AnswerLate`); and, while waiting,
        look at the cancellation every :data:`CANCEL_POLL` seconds (:class:`AnswerCancelled`): a
        server that went silent held a stopping snapshot for the whole read timeout (60 s), past
        the grace a stop is given, and its run was left running."""
        timeout = self._sock.gettimeout()
        read_by = None if timeout is None else time.monotonic() + timeout
        try:
            while True:
                if self._cancelled is not None and self._cancelled.is_set():
                    raise AnswerCancelled()
                now = time.monotonic()
                wait, limit = self._deadline - now, "deadline"
                if wait <= 0:
                    raise AnswerLate()
                if read_by is not None and read_by - now <= wait:
                    wait, limit = read_by - now, "read"
                    if wait <= 0:
                        raise TimeoutError("timed out")
                if self._cancelled is not None and wait > CANCEL_POLL:
                    wait, limit = CANCEL_POLL, "poll"
                self._sock.settimeout(wait)
                try:
                    return self._sock.recv_into(buffer, *args)
                except TimeoutError:
                    if limit == "deadline":
                        raise AnswerLate() from None
                    if limit == "read":
                        raise
                    # only the poll's slice ended: look at the cancellation, and wait on
        finally:
            self._sock.settimeout(timeout)


class _Watched:
    """Mixed into urllib3's connections: the answer is read under the thread's :func:`watching`."""

    sock: Any

    def getresponse(self) -> Any:
        limits = getattr(_watch, "limits", None)
        if limits is None or self.sock is None:
            return super().getresponse()  # type: ignore[misc]
        real = self.sock
        watched = self.sock = _DeadlineSocket(real, *limits)
        try:
            return super().getresponse()  # type: ignore[misc]
        finally:
            if self.sock is watched:  # not closed meanwhile (http.client sets it to None then)
                self.sock = real


class _HTTPConnection(_Watched, HTTPConnection):
    pass


class _HTTPSConnection(_Watched, HTTPSConnection):
    pass


class _HTTPConnectionPool(HTTPConnectionPool):
    ConnectionCls = _HTTPConnection


class _HTTPSConnectionPool(HTTPSConnectionPool):
    ConnectionCls = _HTTPSConnection


class DeadlineAdapter(HTTPAdapter):
    """``requests``' adapter, with connections whose answers keep to :func:`watching`."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {"http": _HTTPConnectionPool, "https": _HTTPSConnectionPool}
