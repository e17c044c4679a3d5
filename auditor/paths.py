"""Where the bundled data folders (``rules/``, ``reports/``, ``migrations/``) live.

In a wheel they ship inside the package as ``auditor/_bundled/<name>``; in a source checkout (and an
editable install) they are the top-level folders of the repository. This is the one place that knows.
"""

from __future__ import annotations

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
