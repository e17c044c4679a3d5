"""Catalog text made safe for a terminal or a line-oriented log.

Cluster names, column names and messages come from the catalog: an ESC sequence in one would drive
the reader's terminal (retitle it, hide text, write the clipboard), and a newline would forge a line
of output (a fake summary line in a CI log). :func:`printable` writes C0 and C1 control characters
(newlines and tabs included) as visible ``\\xNN`` escapes.
"""

from __future__ import annotations

import re

_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")


def printable(text: object) -> str:
    """``text`` with every control character written as a ``\\xNN`` escape."""
    return _CONTROL.sub(lambda m: f"\\x{ord(m[0]):02x}", str(text))
