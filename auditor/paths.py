"""Where the bundled data folders (``rules/``, ``reports/``, ``migrations/``) live.

In a wheel they ship inside the package as ``auditor/_bundled/<name>``; in a source checkout (and an
editable install) they are the top-level folders of the repository. This is the one place that knows.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent


def bundled(name: str) -> Path:
    """Return the folder ``name`` (``rules``, ``reports`` or ``migrations``)."""
    for candidate in (_PACKAGE / "_bundled" / name, _PACKAGE.parent / name):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"bundled folder {name!r} is missing from this installation")


def rules_dir() -> Path:
    return bundled("rules")


def reports_dir() -> Path:
    return bundled("reports")


def migrations_dir() -> Path:
    return bundled("migrations")


def absolute_path(path: str | os.PathLike[str]) -> str:
    """``path`` as a command printed for later names it from any folder."""
    return str(Path(path).expanduser().absolute())


def input_words(
    rules: Sequence[str | os.PathLike[str]] | None,
    waivers: str | os.PathLike[str] | None,
    templates: str | os.PathLike[str] | None = None,
) -> list[str]:
    """The ``--rules``, ``--waivers`` and ``--templates`` of a command printed for later (a job's
    follow-up, a report's hint), each file by its absolute path."""
    words: list[str] = []
    for value in rules or ():
        words += ["--rules", absolute_path(value)]
    if waivers:
        words += ["--waivers", absolute_path(waivers)]
    if templates:
        words += ["--templates", absolute_path(templates)]
    return words
