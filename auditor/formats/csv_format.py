"""The ``csv`` format: one row per finding, with spreadsheet formula injection neutralised.

A cell that starts with ``=``, ``+``, ``-``, ``@``, a tab or a carriage return is prefixed with an
apostrophe, so that a spreadsheet shows catalog text instead of executing it (OWASP CSV injection).
So is one where such a character (or its full-width form, ``＝`` ``＋`` ``－`` ``＠``, which Excel
with an East Asian input method takes as a formula too) follows leading spaces: LibreOffice and
Google Sheets strip them on import and then run the rest.
Rows end with CRLF (RFC 4180, as the report's ``findings.csv``): with a bare ``\n`` terminator the
csv module leaves a cell holding a carriage return unquoted, and readers split the row there.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from auditor.engine.check import CheckResult

HEADER = [
    "rule",
    "severity",
    "status",
    "cluster_id",
    "column",
    "columns",
    "message",
    "fingerprint",
    "first_seen_run",
    "waiver_reason",
    "waiver_owner",
    "waiver_expires",
    "waiver_expired",
    "waiver_ticket",
]
# What a spreadsheet may run as a formula at the start of a cell (OWASP's list, plus a line feed,
# '|' (DDE in old Excel) and '%'). The one list for every CSV this tool writes: the check's and the
# report's export.
_DANGEROUS = ("=", "+", "-", "@", "\t", "\r", "\n", "|", "%", "\uff1d", "\uff0b", "\uff0d", "\uff20")


def neutralise(value: Any) -> str:
    """A CSV cell a spreadsheet will not run as a formula: a quote before a dangerous first character,
    leading whitespace (spaces, no-break and full-width spaces, line breaks) looked past."""
    text = "" if value is None else str(value)
    return "'" + text if text.startswith(_DANGEROUS) or text.lstrip().startswith(_DANGEROUS) else text


BATCH = 1_000  # findings per piece


def format(result: CheckResult) -> str:
    return "".join(chunks(result))


def chunks(result: CheckResult) -> Iterator[str]:
    """The CSV text piece by piece, a batch of findings at a time (never held whole at 1M columns)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(HEADER)
    for number, f in enumerate(result.findings, 1):
        waiver = f.waiver or {}
        row = [
            f.rule,
            f.severity,
            f.status,
            f.cluster_id,
            f.column,
            ";".join(f.columns),
            f.message,
            f.fingerprint,
            f.first_seen_run,
            waiver.get("reason"),
            waiver.get("owner"),
            waiver.get("expires"),
            "" if not waiver else str(bool(waiver.get("expired"))).lower(),
            waiver.get("ticket"),
        ]
        writer.writerow([neutralise(cell) for cell in row])
        if number % BATCH == 0:
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue()
