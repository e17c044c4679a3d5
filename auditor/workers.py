"""The start method of this package's worker processes (page decoders, rule evaluators).

``forkserver`` where the platform has it (``spawn`` elsewhere): forking the calling process, which
runs threads, could copy a lock some thread holds. The fork server imports ``preload`` once, so each
worker starts with it loaded.

CPython 3.11's fork server starts as ``python -c …``, which puts the current directory first on its
``sys.path``, and it ignores the parent's path. Run from a folder holding another ``auditor``
package (a different checkout, someone's own project), every worker would import that one instead
of this one. In that case the fork server is started with ``PYTHONSAFEPATH=1`` (Python 3.11+: do not
prepend the current directory), so it imports the same package as the process that started it.
"""

from __future__ import annotations

import multiprocessing
import os
from multiprocessing.context import BaseContext
from pathlib import Path

import auditor


def worker_context(preload: str) -> BaseContext:
    """A multiprocessing context for a pool of this package's workers, importing ``preload`` once."""
    methods = multiprocessing.get_all_start_methods()
    context = multiprocessing.get_context("forkserver" if "forkserver" in methods else "spawn")
    if context.get_start_method() == "forkserver":
        context.set_forkserver_preload([preload])
    if shadowed_by_current_directory():
        os.environ["PYTHONSAFEPATH"] = "1"  # read once, when the fork server starts
    return context


def shadowed_by_current_directory() -> bool:
    """True when ``./auditor`` is a package other than the one this process imported."""
    try:
        candidate = Path.cwd() / "auditor"
        return candidate.is_dir() and candidate.resolve() != Path(auditor.__file__).resolve().parent
    except OSError:  # the current directory was removed
        return False
