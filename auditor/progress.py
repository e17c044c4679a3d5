"""A one-line progress display on stderr for long fetches: clusters done/total, failed, columns, rate.

Shown only when the stream is a terminal and not silenced (``--quiet``); otherwise every call is a
no-op, so callers never need to check. Redrawn with ``\\r`` at most a few times per second, from the
single thread that writes the snapshot. No dependency beyond the standard library.

Log lines (a warning, ``--verbose`` traces) go to the same stderr from other threads: the CLI's log
handler writes them inside :func:`cleared`, which erases the progress line first (the next update
draws it again below), so a log line never starts in the middle of the progress text.
"""

from __future__ import annotations

import contextlib
import sys
import threading
import time
from collections.abc import Iterator
from typing import TextIO

_lock = threading.Lock()  # one writer at a time for the progress line and what interrupts it
_shown: Progress | None = None  # the progress whose line is on screen now, if any


class Progress:
    """``update()`` as work advances, ``close()`` at the end (clears the line)."""

    def __init__(
        self,
        *,
        stream: TextIO | None = None,
        enabled: bool | None = None,
        min_interval: float = 0.2,
        label: str = "snapshot",
    ) -> None:
        self.stream = stream if stream is not None else sys.stderr
        if enabled is None:
            isatty = getattr(self.stream, "isatty", None)
            enabled = bool(isatty and isatty())
        self.enabled = enabled
        self.min_interval = min_interval
        self.label = label
        self.total_clusters: int | None = None
        self.clusters_done = 0
        self.clusters_failed = 0
        self.columns = 0
        self._started = time.monotonic()
        self._last_draw = 0.0
        self._width = 0

    def start(self, total_clusters: int) -> None:
        self.total_clusters = total_clusters
        self._started = time.monotonic()
        self._draw(force=True)

    def add_clusters(self, count: int) -> None:
        """More clusters to fetch than :meth:`start` said (found by listing them again)."""
        self.total_clusters = (self.total_clusters or 0) + count
        self._draw(force=True)

    def add_columns(self, count: int) -> None:
        self.columns += count
        self._draw()

    def cluster_done(self) -> None:
        self.clusters_done += 1
        self._draw()

    def cluster_failed(self) -> None:
        """A cluster could not be fetched (shown in the line, so a partial fetch never looks clean)."""
        self.clusters_failed += 1
        self._draw(force=True)

    def rate(self) -> float:
        elapsed = time.monotonic() - self._started
        return self.columns / elapsed if elapsed > 0 else 0.0

    def line(self) -> str:
        total = "?" if self.total_clusters is None else str(self.total_clusters)
        failed = f", {self.clusters_failed} failed" if self.clusters_failed else ""
        return (
            f"{self.label}: clusters {self.clusters_done}/{total}{failed}, columns {self.columns:,}, "
            f"{self.rate():,.0f} columns/s"
        )

    def _draw(self, *, force: bool = False) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if not force and now - self._last_draw < self.min_interval:
            return
        self._last_draw = now
        global _shown
        with _lock:
            text = self.line()
            padding = " " * max(self._width - len(text), 0)
            self._width = len(text)
            self.stream.write(f"\r{text}{padding}")
            self.stream.flush()
            _shown = self

    def close(self) -> None:
        """Draw the final state and end the line."""
        if not self.enabled:
            return
        global _shown
        self._draw(force=True)
        with _lock:
            self.stream.write("\n")
            self.stream.flush()
            self._width = 0
            if _shown is self:
                _shown = None


@contextlib.contextmanager
def cleared(stream: TextIO) -> Iterator[None]:
    """Write to ``stream`` inside the block with no progress line in the way.

    If a progress line is drawn on ``stream``, it is erased first and drawn again at its next
    update; meanwhile no progress is drawn, so what the block writes starts at the left margin.
    """
    global _shown
    with _lock:
        shown = _shown
        if shown is not None and shown.stream is stream and shown._width:
            stream.write("\r" + " " * shown._width + "\r")
            shown._width = 0
            shown._last_draw = float("-inf")  # drawn again at the next update, below what is written now
            _shown = None
        yield
