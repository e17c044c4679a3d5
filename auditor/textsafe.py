"""Catalog text made safe to show: on a terminal, in one line of a table, in XML.

Names, labels, tags, messages and server error texts come from the catalog, that is from whoever can
name a column in any connected data source, and from the BigID server itself. Shown verbatim:

* a control character rewrites what a terminal displays (an ANSI escape sequence recolours or erases
  lines, an OSC one retitles the window), and a newline inside a name forges a whole line of a table;
* bidirectional overrides and isolates reorder what a reviewer reads ("Trojan Source"), and
  zero-width characters make two different names look the same;
* characters XML 1.0 forbids make a JUnit file unreadable by the CI server that should parse it.

These functions show such characters as visible escapes (``\\x1b``, ``\\u202e``), so that the reader
sees that they are there. Stored data and data formats (JSON, SARIF, CSV) keep text exactly as the
catalog sent it; the CSV's formula neutralisation is its own concern.
"""

from __future__ import annotations

import re
import unicodedata

# Besides the C0 controls: DEL and the C1 controls; lone surrogates (a UTF-8 terminal cannot even
# encode them); and the invisible format characters that change how the text around them reads:
# Arabic letter mark, zero-width space, joiners and marks, line and paragraph separators, bidi
# embeddings, overrides and isolates, word joiner and invisible operators, byte order mark. Every
# one is a character ``str.isprintable`` rejects, which is what makes the fast paths below exact.
_INVISIBLE = "\x7f-\x9f\u061c\u200b-\u200f\u2028-\u202e\u2060-\u2069\ufeff\ud800-\udfff"
_ONE_LINE = re.compile(f"[\x00-\x1f{_INVISIBLE}]")
_VISIBLE = re.compile(f"[\x00-\x08\x0b-\x1f{_INVISIBLE}]")  # keeps tab and line feed
# What XML 1.0 cannot carry at all, not even as a character reference (ElementTree escapes the rest).
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def one_line(text: str) -> str:
    """``text`` for one line of terminal or table output: every unsafe character escaped, tabs and
    newlines included (``"a\\nb"`` shows as ``a\\x0ab``)."""
    if text.isprintable():  # the usual case, checked in C
        return text
    return _ONE_LINE.sub(_escape, text)


def unambiguous(text: str) -> str:
    """Like :func:`one_line`, with backslashes doubled too, so that two different texts never read
    the same (a name holding a real backslash followed by ``x0a`` is not taken for one holding a line
    break): for names that must stay unique, such as JUnit test case names."""
    if text.isprintable() and "\\" not in text:
        return text
    return _ONE_LINE.sub(_escape, text.replace("\\", "\\\\"))


def visible(text: str) -> str:
    """Like :func:`one_line`, but tabs and line feeds are kept (text that may span lines: an error
    with its details, a rule description in a report). A carriage return is escaped: on a terminal
    it would let the rest of a line overwrite its beginning."""
    if text.isprintable():
        return text
    return _VISIBLE.sub(_escape, text)


def xml_text(text: str) -> str:
    """``text`` that an XML 1.0 document can carry: the characters it forbids escaped."""
    return _NOT_XML.sub(_escape, text)


def display_width(text: str) -> int:
    """Terminal columns ``text`` takes: East Asian wide characters two, combining marks none."""
    if text.isascii():  # the usual case, known without looking at the characters
        return len(text)
    return sum(
        0 if unicodedata.combining(ch) else 2 if unicodedata.east_asian_width(ch) in "WF" else 1
        for ch in text
    )


def fit(text: str, width: int) -> str:
    """``text`` in exactly ``width`` terminal columns: cut with ``…`` when longer, padded when
    shorter (a column of a table for people, where names may be Japanese or Chinese)."""
    if text.isascii():  # one column per character (the usual case, on a 1M-column run's table)
        return (text[: width - 1] + "…" if len(text) > width else text).ljust(width)
    used = display_width(text)
    if used > width:
        kept = 0
        for index, ch in enumerate(text):
            kept += display_width(ch)
            if kept > width - 1:
                text = text[:index] + "…"
                break
        used = display_width(text)
    return text + " " * (width - used)
