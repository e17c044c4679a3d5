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
# encode them); private-use characters (a blank, a box or some icon font's glyph); and every
# character that is invisible or changes how the text around it reads: the Unicode format
# characters (soft hyphen, Arabic letter mark, zero-width space, joiners and marks, bidi embeddings,
# overrides and isolates, word joiner and invisible operators, byte order mark, interlinear
# annotation, tag characters), line and paragraph separators, and the other default-ignorable
# code points (combining grapheme joiner, Hangul fillers, Khmer inherent vowels, Mongolian
# variation selectors, variation selectors, and the reserved ranges meant to stay invisible); and
# the spaces other than the ASCII one (no-break, en, em, thin, ideographic...), which read as it;
# and the noncharacters (U+FDD0-U+FDEF and the last two code points of every plane: U+FFFE, U+FFFF,
# U+1FFFE...), which XML cannot carry and a terminal shows as nothing or a box.
# Two names that differ only by one of them look the same unless it is shown.
_INVISIBLE = (
    "\x7f-\xa0\u1680\u2000-\u200a\u202f\u205f\u3000\u00ad\u034f\u0600-\u0605\u061c\u06dd\u070f\u0890\u0891\u08e2\u115f\u1160"
    "\u17b4\u17b5\u180b-\u180f\u200b-\u200f\u2028-\u202e\u2060-\u206f\u3164\ud800-\udfff"
    "\ue000-\uf8ff\ufdd0-\ufdef\ufe00-\ufe0f\ufeff\uffa0\ufff0-\ufffb\ufffe\uffff\U000110bd\U000110cd"
    "\U00013430-\U0001343f\U0001bca0-\U0001bca3\U0001d173-\U0001d17a\U000e0000-\U000e0fff"
    "\U000f0000-\U0010ffff"
    + "".join(f"{chr(plane << 16 | 0xFFFE)}{chr(plane << 16 | 0xFFFF)}" for plane in range(1, 15))
)
# Those of them that ``str.isprintable`` accepts (it rejects the rest), looked for on the fast path.
_PRINTABLE_INVISIBLE = re.compile(
    "[\u034f\u115f\u1160\u17b4\u17b5\u180b-\u180d\u180f\u3164\ufe00-\ufe0f\uffa0\U000e0100-\U000e01ef]"
)
_ONE_LINE = re.compile(f"[\x00-\x1f{_INVISIBLE}]")
_VISIBLE = re.compile(f"[\x00-\x08\x0b-\x1f{_INVISIBLE}]")  # keeps tab and line feed
# What XML 1.0 cannot carry at all, not even as a character reference (ElementTree escapes the rest).
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    if code < 0x100:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def _plain(text: str) -> bool:
    """Whether ``text`` holds nothing to escape (checked in C: the usual case)."""
    # ASCII holds none of the printable invisible characters: no search for it (most catalog text)
    return text.isprintable() and (text.isascii() or not _PRINTABLE_INVISIBLE.search(text))


def one_line(text: str) -> str:
    """``text`` for one line of terminal or table output: every unsafe character escaped, tabs and
    newlines included (``"a\\nb"`` shows as ``a\\x0ab``)."""
    if _plain(text):
        return text
    return _ONE_LINE.sub(_escape, text)


def prose(text: str) -> str:
    """Text the team wrote (a waiver's reason, folded over lines in YAML) for one line: runs of
    whitespace, line breaks included, become one space; what else is unsafe is escaped as by
    :func:`one_line`."""
    return one_line(" ".join(text.split()))


def unambiguous(text: str) -> str:
    """Like :func:`one_line`, with backslashes doubled too, so that two different texts never read
    the same (a name holding a real backslash followed by ``x0a`` is not taken for one holding a line
    break): for names that must stay unique, such as JUnit test case names."""
    if _plain(text) and "\\" not in text:
        return text
    return _ONE_LINE.sub(_escape, text.replace("\\", "\\\\"))


def visible(text: str) -> str:
    """Like :func:`one_line`, but tabs and line feeds are kept (text that may span lines: an error
    with its details, a rule description in a report). A carriage return is escaped: on a terminal
    it would let the rest of a line overwrite its beginning."""
    if _plain(text):
        return text
    return _VISIBLE.sub(_escape, text)


def xml_text(text: str) -> str:
    """``text`` that an XML 1.0 document can carry: the characters it forbids escaped."""
    return _NOT_XML.sub(_escape, text)


_ZERO_WIDTH_CATEGORIES = frozenset({"Mn", "Me"})  # nonspacing and enclosing marks


def display_width(text: str) -> int:
    """Terminal columns ``text`` takes: East Asian wide characters two, nonspacing and enclosing
    marks none (by category: 813 of them, Thai's vowel signs among them, have no combining class)."""
    if text.isascii():  # the usual case, known without looking at the characters
        return len(text)
    return sum(
        0
        if unicodedata.category(ch) in _ZERO_WIDTH_CATEGORIES
        else 2
        if unicodedata.east_asian_width(ch) in "WF"
        else 1
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


def counted(count: int, word: str, many: str | None = None) -> str:
    """``counted(1, "cluster")`` → ``1 cluster``; ``counted(1200, "cluster")`` → ``1,200 clusters``."""
    return f"{count:,} {word if count == 1 else (many or word + 's')}"
