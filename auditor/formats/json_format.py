"""The ``json`` format: ``{"run", "findings": [...], "summary": {...}}`` in the shared finding shape."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import orjson

from auditor import jsonstream

if TYPE_CHECKING:
    from auditor.engine.check import CheckResult


BATCH = 1_000  # findings per piece


def format(result: CheckResult) -> str:
    return "".join(chunks(result))


def chunks(result: CheckResult) -> Iterator[str]:
    """The document piece by piece, a batch of findings at a time (never held whole: ~300 MB at 1M).

    The bytes are those of ``json.dumps(result.to_json(), indent=2, ensure_ascii=False)`` (tested):
    orjson writes that layout, 1.4x faster.
    """
    document = result.to_json(findings=False)
    document["findings"] = [jsonstream.MARK]
    items = (finding.to_json() for finding in result.findings)
    yield from jsonstream.batches(_dumps, document, items, BATCH)


def _dumps(value: Any) -> str:
    return orjson.dumps(value, option=orjson.OPT_INDENT_2).decode() + "\n"
