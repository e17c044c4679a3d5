"""Output formats of ``auditor check``: one module per format behind ``format(result) -> str``.

:class:`Format` is the str Enum that feeds ``click.Choice``; :func:`render` imports the module named
after the member and calls its ``format``. Every module takes a
:class:`~auditor.engine.check.CheckResult` and returns text; none writes files or prints.
"""

from __future__ import annotations

import importlib
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
    member = Format(fmt)
    module = importlib.import_module(f"auditor.formats.{member.value}_format")
    with collector_paused():  # one dict or element per finding
        text: str = module.format(result)
    return text
