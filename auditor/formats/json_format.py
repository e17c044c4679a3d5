"""The ``json`` format: ``{"run", "findings": [...], "summary": {...}}`` in the shared finding shape."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from auditor.engine.check import CheckResult


def format(result: CheckResult) -> str:
    return json.dumps(result.to_json(), indent=2, ensure_ascii=False) + "\n"
