"""Garbage collection for bulk work: paused around bulk building, tuned in our own worker processes.

Pausing Python's cyclic garbage collector while building many long-lived objects:

A 1M-column run has ~400k findings. Building them (and the rows, lists and dicts around them)
triggers the cyclic collector every few hundred allocations, and each older-generation pass walks
every object built so far: a quarter of the CPU of evaluating the rule pack and a third of
``auditor check`` went to collections that free nothing, since findings hold no reference cycles.
Reference counting still frees ordinary garbage while the collector is paused; cyclic garbage made
inside the window waits until it ends. Pause only bounded, allocation-heavy steps, never a
long-running loop such as a server.
"""

from __future__ import annotations

import contextlib
import gc
import threading
from collections.abc import Iterator

_lock = threading.Lock()
_depth = 0
_was_enabled = False


@contextlib.contextmanager
def collector_paused() -> Iterator[None]:
    """Pause the cyclic collector for the ``with`` body (nestable, and safe across threads)."""
    global _depth, _was_enabled
    with _lock:
        if _depth == 0:
            _was_enabled = gc.isenabled()
            gc.disable()
        _depth += 1
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0 and _was_enabled:
                gc.enable()


THROWAWAY_THRESHOLD = 100_000  # allocations between collections in a process of throwaway objects


def tune_for_throwaway_objects() -> None:
    """For a process of our own that builds objects, hands them on and drops them, without cycles.

    Page decoders and ``auditor sandbox serve``: a page is some 10,000-20,000 fresh containers.
    Under the default threshold (700) each page set off dozens of collections and promoted its
    objects, so that full collections kept rescanning everything, imported modules included (a
    quarter to a third of a decoder's CPU). What exists now is frozen out of collection, and a
    page's objects mostly die before a collection starts; collection still runs, so memory stays
    bounded. Never for a process that is not ours (a server started in a thread of a caller's).
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(THROWAWAY_THRESHOLD)
