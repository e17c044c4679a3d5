"""Reading JSON with every number as it was written: the one way the tool parses JSON it did not
build in the same call (API answers, and the records it stored from them).

orjson is fast, and reads an integer past 64 bits as a float (a 20-digit cluster id became
``9.876543210987654e+19``) and refuses a number too large for a double (``1e400``, valid JSON).
:func:`loads` uses orjson, and the standard library for the rare text that may hold either:
integers of any size stay exact; a number too large for a double is kept as its text (it then
counts as no number, and the record it is in can be stored as JSON again).
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

import orjson

# 19 digits in a row: the shortest integer orjson may not hold exactly (below -2^63). Long digit
# runs inside strings only send the text the slower, exact way. Found by mapping every digit to
# '0' and everything else to ' ' and searching for 19 zeros: a tenth of a regular expression's
# time (4 ms against 44 ms for a 2.5 MB page of 10,000 columns, which orjson parses in 22 ms).
_DIGITS_ONLY = bytes(48 if 48 <= byte <= 57 else 32 for byte in range(256))
_LONG_RUN = b"0" * 19


def _may_hold_a_long_integer(content: bytes | str) -> bool:
    raw = content if isinstance(content, bytes) else content.encode("utf-8", "surrogatepass")
    return _LONG_RUN in raw.translate(_DIGITS_ONLY)


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _finite_or_text(text: str) -> float | str:
    value = float(text)
    return value if math.isfinite(value) else text


def _exactly(content: bytes | str, constant: Any = _no_constant) -> Any:
    # ``constant``: what NaN, Infinity and -Infinity read as (by default, not JSON: ValueError).
    # Bytes as orjson reads them, strict UTF-8: the standard library also takes a byte order mark
    # and UTF-16 or UTF-32 text, so a page holding a long integer (or ten CJK digits in UTF-16)
    # was JSON here and no JSON to orjson (a ValueError here: orjson then says why).
    text = content.decode("utf-8") if isinstance(content, bytes) else content
    value = json.loads(text, parse_constant=constant, parse_float=_finite_or_text)
    # The standard library takes a lone UTF-16 surrogate ("\ud800", or its bytes), which is no
    # Unicode text: orjson refuses it, and every later step (the database, the outputs) fails on
    # it. Refused here too, so that which decoder reads a page never decides whether it is JSON.
    try:
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        text = content if isinstance(content, str) else content.decode("utf-8", "replace")
        where = _SURROGATE_ESCAPE.search(text)
        position = where.start() if where else max(text.find("\ufffd"), 0)
        raise orjson.JSONDecodeError(_SURROGATE, text, position) from None
    return value


_SURROGATE = "str is not valid UTF-8: surrogates not allowed"  # orjson's own words
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")  # where to say it is (roughly)


def loads(content: bytes | str) -> Any:
    """``content`` parsed as JSON (see the module docstring); ``orjson.JSONDecodeError`` when it is
    not JSON, as orjson words it (NaN and Infinity, which are not JSON, and lone surrogates
    included)."""
    if _may_hold_a_long_integer(content):
        try:
            return _exactly(content)
        except (ValueError, RecursionError):
            pass  # not JSON: orjson says why
    try:
        return orjson.loads(content)
    except orjson.JSONDecodeError as exc:
        if "infinity" not in exc.msg:
            raise
        try:
            return _exactly(content)
        except orjson.JSONDecodeError as surrogate:
            raise surrogate from None
        except (ValueError, RecursionError):
            raise exc from None


_LONE_SURROGATE = re.compile("[\ud800-\udfff]")
# How deeply a text with lone surrogate escapes may nest: as deep as orjson writes (a value nested
# 255 levels cannot be stored). A fixed number: the interpreter's recursion limit, which refused it
# before, counts differently from one Python to the next (3.12 inlines comprehensions).
MAX_SURROGATE_DEPTH = 254


def _without_lone_surrogates(value: Any, depth: int = 1) -> Any:
    if isinstance(value, str):
        return _LONE_SURROGATE.sub("\ufffd", value)
    if isinstance(value, list | dict) and depth > MAX_SURROGATE_DEPTH:
        raise RecursionError(f"nested more than {MAX_SURROGATE_DEPTH} levels deep")
    if isinstance(value, list):
        return [_without_lone_surrogates(item, depth + 1) for item in value]
    if isinstance(value, dict):
        return {_without_lone_surrogates(k): _without_lone_surrogates(v, depth + 1) for k, v in value.items()}
    return value


def loads_replacing_lone_surrogates(content: bytes | str) -> Any:
    """:func:`loads` for a text whose only fault is a lone UTF-16 surrogate *escape* (``"\\ud83d"``):
    each is read as U+FFFD, the replacement character, as a browser decodes it. JavaScript's
    ``JSON.stringify`` writes one for a string cut inside an emoji (a Node.js server truncating a
    name), which RFC 8259's grammar allows but no Unicode text holds. Raw surrogate bytes are still
    invalid UTF-8; any other fault raises as :func:`loads` does."""
    try:
        text = content.decode("utf-8") if isinstance(content, bytes) else content  # strict: no raw surrogates
        value = json.loads(text, parse_constant=_no_constant, parse_float=_finite_or_text)
        # (too deep for the walk, MAX_SURROGATE_DEPTH: refused as orjson words it)
        return _without_lone_surrogates(value)
    except (ValueError, RecursionError):
        return loads(content)  # raises, worded as orjson words it


_CONSTANTS = (b"NaN", b"Infinity")  # -Infinity included


def may_hold_constants(content: bytes) -> bool:
    """Whether ``content`` may hold JavaScript's ``NaN``/``Infinity`` outside strings (a cheap test:
    the words anywhere)."""
    return any(word in content for word in _CONSTANTS)


def _null_constant(_name: str) -> None:
    return None


def loads_constants_as_null(content: bytes | str) -> Any:
    """:func:`loads` for a text whose fault is ``NaN``, ``Infinity`` or ``-Infinity`` used as a
    value, each read as ``null`` (a value not known). They are not JSON, but Python's ``json.dumps``
    writes them by default (a float confidence that is NaN): every page of such a server failed
    its cluster. Any other fault raises as :func:`loads` does, worded as orjson words it."""
    try:
        return _exactly(content, constant=_null_constant)
    except (ValueError, RecursionError):  # (orjson's JSONDecodeError for a lone surrogate included)
        return loads(content)
