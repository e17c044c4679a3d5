"""Output formats of ``auditor check``: one module per format behind ``format(result) -> str``.

:class:`Format` is the str Enum that feeds ``click.Choice``; :func:`render` imports the module named
after the member and calls its ``format`` (:func:`render_chunks` its ``chunks``, where it
streams). Every module takes a :class:`~auditor.engine.check.CheckResult` and returns text; none
writes files or prints.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from enum import StrEnum
from typing import TYPE_CHECKING

from auditor.gcpause import collector_paused

if TYPE_CHECKING:
    from auditor.engine.check import CheckResult


class Format(StrEnum):
    TABLE = "table"
    JSON = "json"
    JUNIT = "junit"
    SARIF = "sarif"
    MARKDOWN = "markdown"
    CSV = "csv"


def render(fmt: Format | str, result: CheckResult) -> str:
    """Render ``result`` in ``fmt``."""
    return "".join(render_chunks(fmt, result))


def render_chunks(fmt: Format | str, result: CheckResult) -> Iterator[str]:
    """Render ``result`` in ``fmt`` piece by piece: the pieces joined are :func:`render`'s text.

    A format module with a ``chunks(result)`` generator streams (the JSON document of a 1M-column
    run is ~300 MB: written as it is produced, it is never held whole); the others give their
    whole text as one piece.
    """
    member = Format(fmt)
    module = importlib.import_module(f"auditor.formats.{member.value}_format")
    produce = getattr(module, "chunks", None)
    with collector_paused():  # one dict or element per finding
        if produce is None:
            yield module.format(result)
        else:
            yield from produce(result)
