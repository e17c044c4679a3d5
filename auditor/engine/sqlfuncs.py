"""Portable SQL pieces the compiler needs: substring test, safe regular expressions.

* :class:`TextContains` compiles to ``instr(a, b) > 0`` on SQLite and ``strpos(a, b) > 0`` on
  PostgreSQL (``LIKE`` would treat ``%``/``_`` in values as wildcards and, on SQLite, ignore case
  even when a rule asked for exact case).
* :class:`RegexSearch` compiles to ``a ~ p`` / ``a ~* p`` on PostgreSQL and to a Python ``re``
  search registered as the SQLite function ``auditor_regexp`` (:func:`register_sqlite_functions`).
* :func:`check_pattern` decides whether a rule's pattern is acceptable *before* anything runs:
  it must compile, stay within a portable subset of regex syntax (what Python and PostgreSQL agree
  on), and have none of the shapes that backtrack for ages: nested unbounded quantifiers, groups of
  varying length repeated many times, ambiguous repeated alternations, and repeats in a row that
  can match the same characters (:func:`_chained`). Input longer than :data:`MAX_INPUT`
  characters is searched only in its first :data:`MAX_INPUT` characters, a second guard on the
  SQLite side.
* :func:`search_watch` is the last guard, for the shapes the checks above do not know: on SQLite, a
  search of one value that runs longer than :data:`SEARCH_SECONDS` stops the rule's evaluation with
  a :class:`~auditor.errors.RuleError` naming the rule and its pattern, instead of holding a check
  for hours (an accepted pattern searched one 143-character name for 219 s; a run holds a million).
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import re
import signal
import threading
import time
import warnings
from collections.abc import Iterator
from typing import Any

from sqlalchemy import Boolean, ColumnElement, Text
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.functions import FunctionElement

from auditor.errors import RuleError
from auditor.textsafe import one_line

try:  # the letters re.IGNORECASE folds alike beyond lower() (Python 3.11+)
    from re._casefix import _EXTRA_CASES
except ImportError:  # pragma: no cover
    _EXTRA_CASES = {}

try:  # Python 3.11+: the parser moved to a private module; sre_parse is deprecated.
    import re._constants as _c
    import re._parser as _parser
except ImportError:  # pragma: no cover
    import sre_constants as _c
    import sre_parse as _parser

MAX_PATTERN = 300
PG_DUPMAX = 255  # PostgreSQL's largest repetition count
MAX_INPUT = 2_000
VARIABLE_REPEATS = 10  # a group of varying length may repeat this often
# Ways a repeated group of varying length may split a value among its repetitions ((spread + 1) to
# the power of its count): (\d{1,3}\.?){4} makes 256, (a{1,10}){1,10} ten billion.
SPLITS = 10_000
CHAIN_SPLITS = 1_024  # ways varying parts in a row may split a value among them (a?a?…a? ten times)
UNBOUNDED_SPREAD = 100
WIDE_SPREAD = 20  # a bounded repeat varying this much is chained like an unbounded one (a{0,100}a{0,100})

_UNSUPPORTED = {
    "GROUPREF": "backreferences (\\1) are not supported",
    "GROUPREF_EXISTS": "conditional groups are not supported",
    "ATOMIC_GROUP": "atomic groups are not supported",
    "POSSESSIVE_REPEAT": "possessive quantifiers are not supported",
    "POSSESSIVE_REPEAT_ONE": "possessive quantifiers are not supported",
}


def check_pattern(pattern: str, *, whole: bool = False) -> str | None:
    """Return why ``pattern`` is refused, or ``None`` when it is safe to run. ``whole``: the
    pattern must match a whole value (a waiver's ``column_regex``), not be searched in it, and the
    advice says what does that instead.

    Remembered per pattern: a realistic alternation takes 25-90 ms to analyse, and a large pack
    repeats patterns across rules and waivers (a probe: 1,000 rules took 20 s to validate)."""
    why = _pattern_problem(pattern)
    # the search's advice (drop the leading .*) made a waiver's pattern that matched nothing (a probe)
    return _UNBOUNDED_WHOLE if whole and why == _UNBOUNDED else why


@functools.lru_cache(maxsize=1024)
def _pattern_problem(pattern: str) -> str | None:
    if len(pattern) > MAX_PATTERN:
        return f"the pattern is longer than {MAX_PATTERN} characters"
    if "(?P" in pattern or ("(?<" in pattern and "(?<=" not in pattern and "(?<!" not in pattern):
        return "named groups are not supported (PostgreSQL has no such syntax); use (...) instead"
    for shape, why in _NOT_PORTABLE:
        if shape.search(pattern):
            return why
    misread = _misread(pattern)
    if misread:
        return misread
    try:
        with warnings.catch_warnings(record=True) as warned:
            warnings.simplefilter("always", FutureWarning)
            re.compile(pattern)
            parsed = _parser.parse(pattern)
    except re.error as exc:
        return f"invalid regular expression: {exc.msg} at position {exc.pos}"
    for warning in warned:
        if issubclass(warning.category, FutureWarning):
            # "Possible nested set" ([[a]]), set difference ([a--b], [a&&b]), union ([a||b]) or
            # symmetric difference ([a~~b]): Python reads them as plain characters today and says it
            # will not, and the check printed its FutureWarning to the user (a probe)
            return (
                f"{str(warning.message).replace('Possible', 'a possible')}: Python's re will read it as "
                "set syntax in a future version; escape the character (\\[, \\-, \\&, \\|, \\~) to mean it"
            )
    token = _OWN.set("".join(sorted(_own_characters(list(parsed)))))
    try:
        return _walk(list(parsed), inside_unbounded=False) or _chained(list(parsed))
    finally:
        _OWN.reset(token)


_HEX_ESCAPE = re.compile(r"(?<!\\)((?:\\\\)*)\\x([0-9A-Fa-f]{2})")


def portable_pattern(pattern: str) -> str:
    """``pattern`` as both engines read it alike: ``\\xHH`` (two hex digits in Python, every hex digit
    that follows in PostgreSQL: ``\\x41B`` was ``AB`` on SQLite and U+041B there) spelt
    ``\\u00HH``, which both read as the one character."""
    return _HEX_ESCAPE.sub(r"\1\\u00\2", pattern) if "\\x" in pattern else pattern


# Shapes Python's re reads one way and PostgreSQL another, or not at all (an error there, exit 3
# in the middle of an evaluation). Each is matched outside an escape (an even run of backslashes).
_UNESCAPED = r"(?<!\\)(?:\\\\)*"
_NOT_PORTABLE = [
    (
        re.compile(_UNESCAPED + r"\(\?[aiLmsux-]+[:)]"),
        "inline flags such as (?i) or (?s:…) are not supported (PostgreSQL reads them differently, or "
        "not at all); case is ignored unless the rule says case: exact",
    ),
    (re.compile(_UNESCAPED + r"\\N\{"), "named characters (\\N{…}) are not supported by PostgreSQL"),
    (
        re.compile(_UNESCAPED + r"\{,\d*\}"),
        "{,n} means 0 to n in Python but is no repetition in PostgreSQL; write {0,n}",
    ),
]

_BOUND = re.compile(r"\{\d+(?:,\d*)?\}")
_IN_BRACKETS = {
    "[:": "POSIX classes such as [[:alpha:]] are not supported by Python's re; use [a-z], \\w or \\d",
    "[.": "collating elements such as [[.e.]] mean a letter to PostgreSQL and a set to Python's re; "
    "list the characters instead",
    "[=": "equivalence classes such as [[=e=]] mean a letter to PostgreSQL and a set to Python's re; "
    "list the characters instead",
    "\\D": "\\D inside [...] is a different set on each database (all Unicode digits or only 0-9); "
    "write [^0-9] or list the characters",
}


_LOOKAROUND = ("(?=", "(?!", "(?<=", "(?<!")
_QUANTIFIERS = "*+?{"


def _misread(pattern: str) -> str | None:
    """Why ``pattern`` is read differently by PostgreSQL (or not at all), from its spelling: inside
    brackets, ``[:``, ``[.``, ``[=`` (POSIX classes, collating elements, equivalence classes),
    ``\\D`` and ``\\1``…``\\7`` (octal to Python, an error to PostgreSQL); outside, a ``{`` and
    a digit that do not make a whole bound (``id{1``, ``a{1,2``, ``a{1 }``: literal text to Python,
    an error to PostgreSQL), and a quantifier right after a lookaround (``(?=a)*``; in a group,
    ``(?:(?!x).)*``, it is fine). Comments ``(?#…)`` are skipped."""
    i, bracket = 0, False
    groups: list[bool] = []  # for each open group: is it a lookaround?
    while i < len(pattern):
        char = pattern[i]
        if char == "\\":
            pair = pattern[i : i + 2]
            if bracket and pair in _IN_BRACKETS:
                return _IN_BRACKETS[pair]
            if bracket and len(pair) == 2 and pair[1] in "1234567":
                return (
                    f"{pair} inside [...] is an octal escape to Python's re and an error to "
                    "PostgreSQL; write the character as \\xHH or \\uHHHH"
                )
            i += 2
            continue
        if bracket:
            if pattern[i : i + 2] in _IN_BRACKETS:
                return _IN_BRACKETS[pattern[i : i + 2]]
            if char == "]":
                bracket = False
        elif char == "[":
            bracket = True
            i += 1
            if pattern.startswith("^", i):  # a ']' first (after an optional '^') is a member
                i += 1
            if pattern.startswith("]", i):
                i += 1
            continue
        elif pattern.startswith("(?#", i):  # a comment, up to the first ')'
            end = pattern.find(")", i)
            i = len(pattern) if end < 0 else end + 1
            continue
        elif char == "(":
            groups.append(pattern.startswith(_LOOKAROUND, i))
        elif char == ")":
            if groups and groups.pop() and pattern[i + 1 : i + 2] and pattern[i + 1] in _QUANTIFIERS:
                return (
                    "a quantifier on a lookaround such as (?=a)* is refused by PostgreSQL; drop it "
                    "((?=a)+ means (?=a), and (?=a)? or (?=a)* match anything)"
                )
        elif char == "{" and pattern[i + 1 : i + 2].isdigit() and not _BOUND.match(pattern, i):
            return (
                f"'{{' at position {i} starts a repetition count it does not finish (such as a{{1,2}}): "
                "PostgreSQL refuses it; write \\{ for a literal brace"
            )
        i += 1
    return None


def _walk(
    items: list[Any], *, inside_unbounded: bool, repeated: bool = False, scanning: bool = False
) -> str | None:
    """Why ``items`` are refused (the shapes of :func:`check_pattern`), or ``None``.

    ``inside_unbounded``: inside a group repeated more than once whose repetitions are not
    separated (an unbounded repeat there is nested); ``repeated``: inside any group repeated more
    than once (an alternation there must not have branches that start alike); ``scanning``: inside
    an unbounded repeat, separated or not (a lookaround there holding an unbounded repeat scans the
    rest of the value at every repetition).
    """
    for op, av in items:
        name = str(op)
        if name in _UNSUPPORTED:
            return _UNSUPPORTED[name]
        if op in (_c.MAX_REPEAT, _c.MIN_REPEAT):
            low, high, sub = av
            if low > PG_DUPMAX or (high != _c.MAXREPEAT and high > PG_DUPMAX):
                return f"repetition counts above {PG_DUPMAX} are not supported (PostgreSQL's limit)"
            unbounded = high == _c.MAXREPEAT or high > 100
            if unbounded and inside_unbounded:
                return (
                    "nested quantifiers such as (a+)+ can take exponential time; "
                    "rewrite the pattern without a repeated group that itself repeats"
                )
            low_width, high_width = sub.getwidth()
            if not unbounded and high > VARIABLE_REPEATS and low_width != high_width:
                return (
                    f"a group of varying length repeated {high} times (such as (a?){{60}}) can take "
                    f"exponential time; repeat such a group at most {VARIABLE_REPEATS} times"
                )
            # Each repetition holding a required character none of its varying parts can take
            # (the '_' of ^[a-z]+(_[a-z]+)*$, the '.' of ^([^.]+\.){2}) splits a value among the
            # repetitions one way only.
            varying = _varying_parts(list(sub)) if high > 1 else []
            separated = not varying or _delimited(list(sub), frozenset().union(*varying))
            spread = high_width - low_width if high_width < _c.MAXREPEAT else 0
            many = spread and (spread + 1) ** min(high, 64) > SPLITS
            if not separated and (many or (spread and _repeated_varying_group(list(sub)))):
                return (
                    "a repeated group holding a repeat of varying count (such as (a{1,10}){1,10} or "
                    "([a-z]{1,10}_?){1,10}) can take exponential time: there are many ways to split a "
                    "value among the repeats; keep one repeat ([a-z_]{1,110}), or end each repetition "
                    "of the group with a required character the inner repeat cannot match "
                    "(([a-z]{1,10}_){1,10})"
                )
            # Anything repeated more than once makes an unbounded repeat inside it dangerous, unless
            # its repetitions are separated.
            problem = _walk(
                list(sub),
                inside_unbounded=inside_unbounded or (high > 1 and not separated),
                repeated=repeated or high > 1,
                scanning=scanning or unbounded,
            )
            if problem:
                return problem
        elif op == _c.SUBPATTERN:
            problem = _walk(
                list(av[-1]), inside_unbounded=inside_unbounded, repeated=repeated, scanning=scanning
            )
            if problem:
                return problem
        elif op == _c.BRANCH:
            branches = [list(b) for b in av[1]]
            if (inside_unbounded or repeated) and _branches_overlap(branches):
                return (
                    "a repeated alternation whose branches can start with the same character "
                    "(such as (a|ab)*) can take exponential time; make the branches distinct"
                )
            for branch in branches:
                problem = _walk(
                    branch, inside_unbounded=inside_unbounded, repeated=repeated, scanning=scanning
                )
                if problem:
                    return problem
        elif op == _c.AT and av in (_c.AT_BOUNDARY, _c.AT_NON_BOUNDARY):
            return "word boundaries (\\b, \\B) mean different things in PostgreSQL; use ([^a-z]|$) instead"
        elif op in (_c.ASSERT, _c.ASSERT_NOT):
            if scanning and _holds_unbounded(list(av[1])):
                return (
                    "a lookaround holding an unbounded repeat inside an unbounded repeat (such as "
                    "(?:(?![a-z_]*_bak)[a-z_])+) scans the rest of the value at every repetition and "
                    "can take minutes; test it once, outside the repeat (^(?![a-z_]*_bak)[a-z_]+), or "
                    "give its repeat a small bound ({0,10})"
                )
            problem = _walk(
                list(av[1]), inside_unbounded=inside_unbounded, repeated=repeated, scanning=scanning
            )
            if problem:
                return problem
    return None


def _holds_unbounded(items: list[Any]) -> bool:
    """Whether ``items`` hold (at any depth) a repeat without bound, or varying by
    :data:`WIDE_SPREAD` or more (counted as unbounded, as in :func:`_chained`)."""
    for op, av in items:
        if op in (_c.MAX_REPEAT, _c.MIN_REPEAT) and (av[1] == _c.MAXREPEAT or av[1] - av[0] >= WIDE_SPREAD):
            return True
        if any(_holds_unbounded(list(inner)) for inner in _inner(op, av)):
            return True
    return False


def _repeated_varying_group(items: list[Any]) -> bool:
    """Whether ``items`` hold (at any depth) a group repeated more than once whose length varies,
    such as the (\\w?){1,3} of ((\\w?){1,3}){0,5}: nested in another repeat, the ways to split
    a value multiply level by level."""
    for op, av in items:
        if op in (_c.MAX_REPEAT, _c.MIN_REPEAT):
            low_width, high_width = av[2].getwidth()
            if av[1] > 1 and low_width != high_width:
                return True
        if op not in (_c.ASSERT, _c.ASSERT_NOT) and any(
            _repeated_varying_group(list(sequence)) for sequence in _inner(op, av)
        ):
            return True
    return False


def _varying_parts(items: list[Any]) -> list[frozenset[str]]:
    """The characters of each part of ``items`` (at any depth) whose length varies: repeats of
    varying count, optional parts, branches of different lengths."""
    found: list[frozenset[str]] = []
    for op, av in items:
        if op in (_c.MAX_REPEAT, _c.MIN_REPEAT):
            low, high, sub = av
            if low != high:
                found.append(_chars(sub))
            found.extend(_varying_parts(list(sub)))
        elif op == _c.SUBPATTERN:
            found.extend(_varying_parts(list(av[-1])))
        elif op == _c.BRANCH:
            least, most = _width(op, av)
            if least != most:
                found.append(_chars([(op, av)]))
            for branch in av[1]:
                found.extend(_varying_parts(list(branch)))
    return found


def _delimited(items: list[Any], chars: frozenset[str]) -> bool:
    """Whether the sequence ``items`` holds a required part that matches none of ``chars``: each
    repetition of a group made of ``items`` then ends at a character the repeats inside it cannot
    take, so a value splits among the repetitions in one way only."""
    for op, av in _flattened(items):
        if op in (_c.MAX_REPEAT, _c.MIN_REPEAT):
            required = av[0] >= 1
        elif op in (_c.AT, _c.ASSERT, _c.ASSERT_NOT):
            continue
        else:
            required = _width(op, av)[0] >= 1
        part = _chars([(op, av)])
        if required and part and not (part & chars):  # an empty set proves nothing
            return True
    return False


def _width(op: Any, av: Any) -> tuple[int, int]:
    """The least and most characters one item of a parsed pattern matches."""
    return _parser.SubPattern(_parser.State(), [(op, av)]).getwidth()


# Characters tried to tell whether two parts of a pattern can match the same text.
# Beyond Latin, a few letters, digits, marks and symbols of the scripts catalogs hold (Greek,
# Cyrillic, Armenian, Hebrew, Arabic, Devanagari, Thai, CJK, kana, Hangul, full-width forms, an emoji,
# private use, the replacement character): a class whose members all lay outside the sample read as
# matching nothing, so its repeats were never found to overlap ([^\x00-\u0300]* four times passed,
# and took hours on a name in Cyrillic).
_SCRIPTS = (
    0x0301, 0x0391, 0x03B1, 0x03C9, 0x0416, 0x0430, 0x044F, 0x0531, 0x0561, 0x05D0, 0x0628, 0x0663,
    0x0915, 0x0966, 0x0E01, 0x1E9E, 0x2003, 0x20AC, 0x2160, 0x3000, 0x3042, 0x30A2, 0x4E2D, 0x65E5,
    0xAC00, 0xE000, 0xFF10, 0xFF21, 0xFFFD, 0x1F600, 0x10FFFD,
)  # fmt: skip
_SAMPLE = "".join(
    chr(c) for c in (*range(9, 14), *range(0x20, 0x7F), *range(0xA0, 0x250), 0x2028, 0x660, *_SCRIPTS)
)
# What a one-character part matching none of the characters tried stands for: some character
# outside them, which such parts are taken to share (so their repeats count as overlapping).
_UNSEEN = "\U000f0000"
# The characters a pattern names itself (its literals, and its ranges' ends and middles), tried
# beside the sample while it is checked: without them, [а-я]+[а-я]+ or (ж{1,10}){1,10} matched no
# sample character, and parts that share every Cyrillic letter read as sharing none.
_OWN: contextvars.ContextVar[str] = contextvars.ContextVar("_OWN", default="")


def _inner(op: Any, av: Any) -> list[Any]:
    """The sequences one item of a parsed pattern holds: a repeat's or a group's body, a branch's
    alternatives, a lookaround's pattern (none for a single character)."""
    if op in (_c.MAX_REPEAT, _c.MIN_REPEAT):
        return [av[2]]
    if op == _c.SUBPATTERN:
        return [av[-1]]
    if op == _c.BRANCH:
        return list(av[1])
    if op in (_c.ASSERT, _c.ASSERT_NOT):
        return [av[1]]
    return []


def _own_characters(items: Any) -> set[str]:
    found: set[str] = set()
    for op, av in items:
        if op in (_c.LITERAL, _c.NOT_LITERAL):
            found |= _variants(chr(av))
        elif op == _c.RANGE:
            for c in (av[0], (av[0] + av[1]) // 2, av[1]):
                found |= _variants(chr(c))
        if op in (_c.LITERAL, _c.NOT_LITERAL, _c.RANGE):
            # and the characters just outside what it names: where a negated class's members begin
            # ([^\x00-\u0300] from U+0301)
            for c in av if op == _c.RANGE else (av,):
                found.update(chr(n) for n in (c - 1, c + 1) if 0 <= n <= 0x10FFFF)
        elif op == _c.IN:
            found |= _own_characters(av)
        for sequence in _inner(op, av):
            found |= _own_characters(sequence)
    return {ch for ch in found if ch not in _SAMPLE}


_CATEGORIES = {
    # \d is matched as [0-9] (see _as_postgresql), and \D as [^0-9]: not str.isdecimal, which
    # took other scripts' digits for \d's and refused [\u0900-\u097f]+\d* as overlapping
    _c.CATEGORY_DIGIT: lambda ch: "0" <= ch <= "9",
    _c.CATEGORY_SPACE: str.isspace,
    _c.CATEGORY_WORD: lambda ch: ch.isalnum() or ch == "_",
}


@functools.lru_cache(maxsize=4096)
def _variants(ch: str) -> frozenset[str]:
    """``ch`` and the characters ``re.IGNORECASE`` takes for it: its other cases, and the letters
    Unicode folds alike (ı and i, ſ and s, ς and σ, µ and μ…), which re knows and lower() does not."""
    found = {ch, ch.lower(), ch.upper()}
    for one in list(found):
        lowered = one.lower()
        if len(lowered) == 1:
            found.update(chr(c) for c in _EXTRA_CASES.get(ord(lowered), ()))
    found |= {c.upper() for c in found} | {c.lower() for c in found}
    return frozenset(c for c in found if len(c) == 1)


def _char_matches(op: Any, av: Any, ch: str) -> bool:
    """Whether one-character item ``(op, av)`` matches ``ch`` (ignoring case, as rules do)."""
    if op == _c.LITERAL:
        return chr(av) in _variants(ch)
    if op == _c.NOT_LITERAL:
        return chr(av) not in _variants(ch)
    if op == _c.ANY:
        return True
    if op == _c.RANGE:
        return any(av[0] <= ord(c) <= av[1] for c in _variants(ch))
    if op == _c.CATEGORY:
        name = str(av)
        positive = name.replace("CATEGORY_NOT_", "CATEGORY_")
        test = next((f for key, f in _CATEGORIES.items() if str(key) == positive), None)
        if test is None:
            return True
        return test(ch) != (positive != name)
    if op == _c.IN:
        negated = bool(av) and av[0][0] == _c.NEGATE
        items = av[1:] if negated else av
        return any(_char_matches(o, a, ch) for o, a in items) != negated
    return True  # anything else: assume it can


def _chars(items: Any) -> frozenset[str]:
    """The sample characters a part of a pattern can consume."""
    found: set[str] = set()
    for op, av in items:
        if op in (_c.MAX_REPEAT, _c.MIN_REPEAT):
            found |= _chars(av[2])
        elif op == _c.SUBPATTERN:
            found |= _chars(av[-1])
        elif op == _c.BRANCH:
            for branch in av[1]:
                found |= _chars(branch)
        elif op in (_c.AT, _c.ASSERT, _c.ASSERT_NOT):
            continue
        else:
            found |= _item_chars(op, av)
    return frozenset(found)


_ITEM_CHARS: dict[tuple[Any, str, str], frozenset[str]] = {}


def _item_chars(op: Any, av: Any) -> frozenset[str]:
    """The sample characters one single-character item can consume (remembered: an alternation
    of words repeats its letters, and each was tried against ~570 sample characters, 300,000
    calls for the built-in PII pattern)."""
    own = _OWN.get()
    key = (op, repr(av), own)
    known = _ITEM_CHARS.get(key)
    if known is None:
        matched = {ch for ch in _SAMPLE + own if _char_matches(op, av, ch)}
        if not matched or _broad(op, av):
            # a class of only characters not tried stands for them; a broad one (., \w, \S,
            # [^…]) can match those too (a review: \w+N+\w+$ passed, N such a class)
            matched.add(_UNSEEN)
        if len(_ITEM_CHARS) >= 20_000:
            _ITEM_CHARS.clear()
        known = _ITEM_CHARS[key] = frozenset(matched)
    return known


def _broad(op: Any, av: Any) -> bool:
    r"""Whether a one-character item may match characters beyond any list tried: any character, a
    negation, or a category but \s (whose characters are tried) and \d (which is [0-9])."""
    if op in (_c.ANY, _c.NOT_LITERAL):
        return True
    if op == _c.CATEGORY:
        return str(av) not in (str(_c.CATEGORY_DIGIT), str(_c.CATEGORY_SPACE))
    if op == _c.IN:
        negated = bool(av) and av[0][0] == _c.NEGATE
        return negated or any(_broad(o, a) for o, a in av)
    return False


def _flattened(items: list[Any]) -> list[Any]:
    """A sequence with its plain groups opened (a group that is not repeated is its items in line)."""
    out: list[Any] = []
    for op, av in items:
        if op == _c.SUBPATTERN:
            out.extend(_flattened(list(av[-1])))
        else:
            out.append((op, av))
    return out


def _chained(items: list[Any]) -> str | None:
    """Refuse repeats in a row that can all consume the same character, the polynomial blow-up.

    ``a*a*b`` or ``.*x.*y`` searched in a value that almost matches tries every way to split it
    among the repeats, from every start: time grows with the value's length to the power of their
    number plus one (``.*a.*b`` in 1,000 ``a``: 1 s; in 10,000: about 1,000 s). Two unbounded
    repeats are refused, and more than :data:`VARIABLE_REPEATS` optional parts (``a?a?a?…``,
    exponential). A part that is required and shares no character with the repeats around it (the
    ``-`` of ``\\d+-\\d+-\\d+``) ends a chain, and a group taken at most once is followed part by
    part (the ``.`` of ``\\d+(\\.\\d+)?`` ends the first ``\\d+``).
    """
    return _extend_chain(items, [], [])


_UNBOUNDED_REPEATS = (
    "two unbounded repeats in a row that can match the same characters (such as "
    ".*a.*b, a*a* or a+b*a+) take time growing with a power of the value's length; "
)
_UNBOUNDED = (
    _UNBOUNDED_REPEATS + "keep one (a search finds the pattern anywhere, so a leading .* is not "
    "needed), or make them exclusive ([^.]*\\. instead of .*\\.)"
)
_UNBOUNDED_WHOLE = (  # (check_pattern(whole=True))
    _UNBOUNDED_REPEATS + "it must match the whole name: for names holding a part, write column: "
    "'*PART*' (a glob) instead, or make the repeats exclusive ([^.]*\\. instead of .*\\.)"
)

# What a part of a chain can match, for telling whether two parts can take the same text: the
# characters of each of its required items, and all its characters. A plain repeat is one item;
# a repeated group such as ([a-z]{1,8}\.) needs a '.' in every repetition, so [a-z]+ next to it
# cannot take one of them, while (ab)+ next to (ab)+ can.
Sig = tuple[tuple[frozenset[str], ...], frozenset[str]]
Link = tuple[frozenset[str], int, Sig]  # a part of a chain: its characters, how much it varies, its Sig


def _meet(x: Sig, y: Sig) -> bool:
    """Whether parts ``x`` and ``y`` can match one same piece of text."""
    return all(r & y[1] for r in x[0]) and all(r & x[1] for r in y[0])


def _signature(op: Any, av: Any) -> Sig:
    everything = _chars([(op, av)])
    if op in (_c.MAX_REPEAT, _c.MIN_REPEAT):
        required = tuple(_chars([item]) for item in _parts(list(av[2])) if _width(*item)[0] >= 1)
        if len(required) > 1:
            return required, everything
    return (everything,), everything


def _extend_chain(items: list[Any], chain: list[Link], unbounded: list[Sig]) -> str | None:
    """:func:`_chained` over ``items``, continuing the chain given (``chain``: the parts of varying
    length in a row, with how much each varies; ``unbounded``: those of them that can match
    without bound), which it updates."""
    for op, av in _flattened(items):
        if op == _c.AT:
            continue
        if op in (_c.ASSERT, _c.ASSERT_NOT):
            problem = _chained(list(av[1]))  # a lookahead is searched like the rest
            if problem:
                return problem
            continue
        if op in (_c.MAX_REPEAT, _c.MIN_REPEAT):
            low, high, sub = av
            problem = _chained(list(sub))
        elif op == _c.BRANCH:
            low = high = 1
            problem = next((p for p in (_chained(list(b)) for b in av[1]) if p), None)
        else:
            low = high = 1
            problem = None
        if problem:
            return problem
        least, most = _width(op, av)
        part = _chars([(op, av)])
        if op in (_c.MAX_REPEAT, _c.MIN_REPEAT) and high != _c.MAXREPEAT and high <= VARIABLE_REPEATS:
            body_least, body_most = av[2].getwidth()
            grouped = len(_parts(list(av[2]))) > 1 or (high > 1 and body_least != body_most)
        else:
            grouped = False
        if not grouped and op in (_c.MAX_REPEAT, _c.MIN_REPEAT) and len(_parts(list(av[2]))) > 1:
            # A group repeated without bound (or many times) is one part below, whose every
            # repetition needs all its required characters; but an attempt at a repetition that
            # then fails has taken its first parts already, in as many ways as they meet the chain
            # ((aa*)(a*ax)* on a run of a's with no x: minutes, a fuzzing test). Its first
            # repetition is followed part by part too, for those ways alone.
            problem = _extend_chain(list(av[2]), list(chain), list(unbounded))
            if problem:
                return problem
        if grouped:
            # A group repeated a few times ((\w+\.)?, (\.\d+)?, (\d{1,3}\.?){4}, (\w?){10}) is
            # followed part by part through its repetitions: taken, its parts continue the chain one
            # by one; skipped (low 0), it adds nothing; what follows may meet the parts of either
            # way. (Read as one part holding all its characters, \d+(\.\d+)? was refused, although
            # its '.' ends the \d+ before it, and (\w?){10}(\w?){10} counted 121 ways, not 2^20.)
            taken_chain, taken_unbounded = list(chain), list(unbounded)
            for _ in range(high):
                problem = _extend_chain(list(av[2]), taken_chain, taken_unbounded)
                if problem:
                    return problem
            if low == 0:
                chain.extend(p for p in taken_chain if not any(p is q for q in chain))
                unbounded.extend(p for p in taken_unbounded if not any(p is q for q in unbounded))
            else:
                chain[:], unbounded[:] = taken_chain, taken_unbounded
            continue
        choices = len(av[1]) - 1 if op == _c.BRANCH and _branches_overlap([list(b) for b in av[1]]) else 0
        varying = low != high or least != most or choices > 0  # (a|a) twenty times: 2^20 ways
        reached = frozenset().union(*(link[0] for link in chain)) if chain else frozenset()
        if least >= 1 and part and chain and not (part & reached):
            # required, and none of its characters continues any part of the chain (an optional
            # part between them lets any of them come right before it): a separator (the '-' of
            # \d+-\d+, the \s+ of \w+\s+\w+) ends the chain
            chain.clear()
            unbounded.clear()
        if not varying:
            continue
        # an unbounded part counts as varying by 100 here (two of them that meet are refused below)
        spread = min(most - least, UNBOUNDED_SPREAD) if most < _c.MAXREPEAT else UNBOUNDED_SPREAD
        if op == _c.BRANCH:
            spread = min(spread, len(av[1]) - 1) if least != most else choices  # a branch: one of a few
        signature = _signature(op, av)
        ways = spread + 1
        for _part, earlier, earlier_signature in chain:
            if _meet(signature, earlier_signature):
                ways *= earlier + 1
        chain.append((part, spread, signature))
        if high == _c.MAXREPEAT or high - low >= WIDE_SPREAD or most - least >= WIDE_SPREAD:
            if any(_meet(signature, earlier) for earlier in unbounded):
                return _UNBOUNDED
            unbounded.append(signature)
        if _share([link[0] for link in chain], VARIABLE_REPEATS + 1):
            return (
                f"more than {VARIABLE_REPEATS} optional or varying parts in a row that can match the "
                "same characters (such as a?a?a?…) can take exponential time; use fewer"
            )
        if ways > CHAIN_SPLITS:
            return (
                f"varying parts in a row that can match the same characters (such as "
                f"a{{0,30}}[a-z]{{1,10}}\\w{{1,10}}) can split a value in {ways:,} ways, which takes "
                f"exponential time; use fewer, or separate them with a required character none of "
                f"them matches"
            )
    return None


def _parts(items: list[Any]) -> list[Any]:
    """A sequence's items with its plain groups opened, lookarounds and anchors left out."""
    return [(op, av) for op, av in _flattened(items) if op not in (_c.AT, _c.ASSERT, _c.ASSERT_NOT)]


def _share(parts: list[frozenset[str]], count: int) -> bool:
    """Whether the last ``count`` of ``parts`` can all match one same character."""
    return len(parts) >= count and bool(frozenset.intersection(*parts[-count:]))


def _first_chars(items: list[Any]) -> set[int] | None:
    """Literal code points a branch can start with, or ``None`` when that is not a plain literal."""
    if not items:
        return None
    op, av = items[0]
    if op == _c.LITERAL:
        # (ß upper-cases to SS, İ lower-cases to two characters: _variants keeps single ones)
        return {av, *(ord(ch) for ch in _variants(chr(av)))}
    if op == _c.SUBPATTERN:
        return _first_chars(list(av[-1]))
    return None


def _branches_overlap(branches: list[list[Any]]) -> bool:
    seen: set[int] = set()
    for branch in branches:
        first = _first_chars(branch)
        if first is None or first & seen:
            return True
        seen |= first
    return False


@functools.lru_cache(maxsize=256)
def _compiled(pattern: str, ignore_case: bool) -> re.Pattern[str]:
    """``pattern`` for Python's re, read as PostgreSQL reads it (its ``~`` / ``~*``).

    PostgreSQL's ``.`` matches a newline and its ``$`` only the very end, where Python's ``.``
    stops at a newline and its ``$`` also matches before a final one: ``re.DOTALL``, and the
    spelling of :func:`_as_postgresql`.
    """
    return re.compile(_as_postgresql(pattern), re.DOTALL | (re.IGNORECASE if ignore_case else 0))


_DIGITS = {"\\d": ("[0-9]", "0-9"), "\\D": ("[^0-9]", "\\D")}  # (outside, inside brackets)


def _as_postgresql(pattern: str) -> str:
    """``pattern`` with PostgreSQL's meaning of ``$`` and ``\\d`` spelt out for Python.

    Each ``$`` that is an anchor (not escaped, not in brackets) becomes ``\\Z``; ``\\d`` becomes
    ``[0-9]`` (Python's also matches other scripts' digits, such as ``١٢٣``; PostgreSQL's does not).
    """
    out: list[str] = []
    i, bracket = 0, False
    while i < len(pattern):
        char = pattern[i]
        if char == "\\":
            escape = pattern[i : i + 2]
            out.append(_DIGITS[escape][bracket] if escape in _DIGITS else escape)
            i += 2
            continue
        if bracket:
            if char == "]":
                bracket = False
        elif char == "[":
            bracket = True
            out.append(char)
            i += 1
            # a ']' first in the bracket (after an optional '^') is a member, not its end
            if i < len(pattern) and pattern[i] == "^":
                out.append("^")
                i += 1
            if i < len(pattern) and pattern[i] == "]":
                out.append("]")
                i += 1
            continue
        elif char == "$":
            out.append("\\Z")
            i += 1
            continue
        out.append(char)
        i += 1
    return "".join(out)


_MEMO: dict[tuple[str, bool], dict[str, int]] = {}
MEMO_SIZE = 200_000


def _sqlite_regexp(pattern: str | None, value: Any, ignore_case: int | None) -> int:
    # Catalog values repeat a lot (attribute names, tag values): remember each verdict per pattern.
    if pattern is None or value is None:
        return 0
    text = value if isinstance(value, str) else str(value)
    memo = _MEMO.setdefault((pattern, bool(ignore_case)), {})
    verdict = memo.get(text)
    if verdict is None:
        watch = _WATCH
        if watch.thread == threading.get_ident():  # timed (see search_watch)
            watch.pattern = pattern
            watch.since = time.monotonic()
            verdict = 1 if _compiled(pattern, bool(ignore_case)).search(text[:MAX_INPUT]) else 0
            watch.since = 0.0
        else:
            verdict = 1 if _compiled(pattern, bool(ignore_case)).search(text[:MAX_INPUT]) else 0
        if len(memo) >= MEMO_SIZE:
            memo.clear()
        memo[text] = verdict
    return verdict


SEARCH_SECONDS = 5.0  # one value's search may take this long (legitimate ones take microseconds)
WATCH_TICK = 0.25  # seconds of CPU time between two looks at the search in progress


class _SearchTooSlow(Exception):
    """Raised inside a search that outlasted :data:`SEARCH_SECONDS` (by :func:`search_watch`'s handler)."""


class _Watch:
    """The main thread's search in progress (``since`` 0.0: none), and the one found too slow."""

    def __init__(self) -> None:
        self.since = 0.0
        self.pattern = ""
        self.fired: tuple[float, str] | None = None
        self.stopped = False  # the handler raised inside that search
        self.thread = 0  # the thread watched (searches of other threads are not timed)


_WATCH = _Watch()


@contextlib.contextmanager
def search_watch(rule: Any) -> Iterator[None]:
    """Within the block, a regular-expression search on SQLite that runs longer than
    :data:`SEARCH_SECONDS` on one value is stopped, and the block raises a :class:`RuleError` (exit 2)
    naming ``rule`` (its file and line) and the pattern.

    Python's ``re`` runs Python's signal handlers while it backtracks (it holds the GIL throughout:
    no other thread can look at it meanwhile), so a virtual interval timer (``SIGVTALRM``, every
    :data:`WATCH_TICK` s of the process's CPU time: it does not tick while the process waits) calls
    a handler that raises inside a search older than the limit. Signals are handled in the main
    thread, so the block is watched there only, on platforms with ``setitimer``; elsewhere it runs
    unwatched, guarded by :func:`check_pattern` alone. A ``SIGVTALRM`` handler and timer of the
    caller's own are suspended for the block and put back at its end. The searches themselves pay
    two assignments.
    """
    if threading.current_thread() is not threading.main_thread() or not hasattr(signal, "SIGVTALRM"):
        yield
        return
    watch = _WATCH
    watch.since, watch.fired, watch.stopped, watch.thread = 0.0, None, False, threading.get_ident()

    def tick(signum: int, frame: Any) -> None:
        since = watch.since  # (set only inside a search of this thread, the one running handlers)
        if since and time.monotonic() - since > SEARCH_SECONDS and not watch.stopped:
            watch.fired, watch.stopped = (since, watch.pattern), True
            raise _SearchTooSlow

    previous = signal.signal(signal.SIGVTALRM, tick)
    left, interval = signal.setitimer(signal.ITIMER_VIRTUAL, WATCH_TICK, WATCH_TICK)
    try:
        yield
    except Exception:
        fired = watch.fired
        if fired is None:
            raise
        raise RuleError(
            f"{rule.source}:{rule.line}: rule {rule.id}: its pattern '{one_line(fired[1])}' searched one "
            f"value for more than {SEARCH_SECONDS:g} s (it backtracks catastrophically on some values); "
            "the check was stopped",
            hint="rewrite the pattern so that no two parts can match the same characters (anchor it, "
            "end each repeat at a character it cannot take, merge repeats in a row: [a-z]{0,38} for "
            "[a-z]{0,19}[a-z]{0,19}); `auditor rules validate` refuses the shapes it knows",
        ) from None
    finally:
        signal.setitimer(signal.ITIMER_VIRTUAL, left, interval)
        signal.signal(signal.SIGVTALRM, previous)
        watch.since, watch.fired, watch.stopped, watch.thread = 0.0, None, False, 0


_SIMPLE_LOWER: dict[str, str] = {}


def _sqlite_lower(value: Any) -> Any:
    """PostgreSQL's ``lower()``: each character's own lower case, one character for one. Python's
    ``str.lower`` differs on two counts: a capital sigma at the end of a word becomes a final ``ς``
    (PostgreSQL: ``σ``), and ``İ`` becomes two characters, ``i`` and a combining dot (PostgreSQL:
    ``i``), so that ``eq: İstanbul`` and ``eq: οδος`` gave other findings on each store."""
    if not isinstance(value, str):
        return value
    if value.isascii():
        return value.lower()
    lower = _SIMPLE_LOWER
    out = []
    for ch in value:
        mapped = lower.get(ch)
        if mapped is None:
            mapped = ch.lower()[:1] or ch  # the simple mapping: 'İ' → 'i'
            if len(lower) < 100_000:
                lower[ch] = mapped
        out.append(mapped)
    return "".join(out)


def register_sqlite_functions(dbapi_connection: Any) -> None:
    """Register ``auditor_regexp(pattern, value, ignore_case)`` and ``auditor_lower(value)`` (Unicode
    lower-casing, see :class:`UnicodeLower`) on a sqlite3 connection."""
    dbapi_connection.create_function("auditor_regexp", 3, _sqlite_regexp, deterministic=True)
    dbapi_connection.create_function("auditor_lower", 1, _sqlite_lower, deterministic=True)


class TextContains(FunctionElement[bool]):
    """``haystack`` contains ``needle`` as a plain substring (no wildcards, exact bytes)."""

    type = Boolean()
    name = "text_contains"
    inherit_cache = True


@compiles(TextContains)
def _contains_default(element: TextContains, compiler: Any, **kw: Any) -> str:
    haystack, needle = list(element.clauses)
    return f"(instr({compiler.process(haystack, **kw)}, {compiler.process(needle, **kw)}) > 0)"


@compiles(TextContains, "postgresql")
def _contains_pg(element: TextContains, compiler: Any, **kw: Any) -> str:
    haystack, needle = list(element.clauses)
    return f"(strpos({compiler.process(haystack, **kw)}, {compiler.process(needle, **kw)}) > 0)"


class Parenthesised(FunctionElement[bool]):
    """``(condition)``: a boolean part SQLAlchemy keeps apart. ``or_(or_(a, b), c)`` is flattened
    to ``a OR b OR c`` whatever grouping is asked for, and SQLite refuses a flat list of more than
    ~1,000 terms (its expression tree is as deep as the list is long): see
    ``auditor.engine.conditions._balanced``."""

    type = Boolean()
    name = "parenthesised"
    inherit_cache = True


@compiles(Parenthesised)
def _parenthesised(element: Parenthesised, compiler: Any, **kw: Any) -> str:
    (condition,) = list(element.clauses)
    return f"({compiler.process(condition, **kw)})"


class CaseFolded(FunctionElement[str]):
    """``value`` for case-insensitive equality, IN, grouping and DISTINCT (not for output or substrings).

    SQLite: ``value COLLATE NOCASE``. Its built-in ``lower()`` folds ASCII letters only, and so does
    ``NOCASE``, so the two agree on every comparison with an already lower-cased value; NOCASE
    compares in place, where ``lower()`` allocates a lowered copy of every value it reads (a scan
    of 1.7M tags with two case-insensitive tests measured 2x faster). Grouping and ``count(DISTINCT
    …)`` use the collation too. The value itself keeps its case, so an output that must be the
    lower-cased key uses ``lower()``. Elsewhere (PostgreSQL): ``lower(value)``.
    """

    type = Text()
    name = "case_folded"
    inherit_cache = True


@compiles(CaseFolded)
def _folded_default(element: CaseFolded, compiler: Any, **kw: Any) -> str:
    (value,) = list(element.clauses)
    return f"lower({compiler.process(value, **kw)})"


@compiles(CaseFolded, "sqlite")
def _folded_sqlite(element: CaseFolded, compiler: Any, **kw: Any) -> str:
    (value,) = list(element.clauses)
    return f"{compiler.process(value, **kw)} COLLATE NOCASE"


class UnicodeLower(FunctionElement[str]):
    """``value`` lower-cased in all of Unicode: a test against a value outside ASCII (``Élevé``).

    SQLite's ``lower()`` and ``NOCASE`` fold ASCII letters only, so ``ÉLEVÉ`` would not equal
    ``élevé`` there; a rule whose literal is not plain ASCII compares through ``auditor_lower``
    (each character's simple lower case, registered by :func:`register_sqlite_functions`), as
    PostgreSQL's ``lower()`` does. Such rules pay a Python call per value read; ASCII literals keep the faster
    :class:`CaseFolded` (the two foldings agree on them, but for the odd compatibility character
    such as the Kelvin sign, which ``str.lower`` turns into ``k``).
    """

    type = Text()
    name = "unicode_lower"
    inherit_cache = True


@compiles(UnicodeLower)
def _unicode_lower_default(element: UnicodeLower, compiler: Any, **kw: Any) -> str:
    (value,) = list(element.clauses)
    return f"lower({compiler.process(value, **kw)})"


@compiles(UnicodeLower, "sqlite")
def _unicode_lower_sqlite(element: UnicodeLower, compiler: Any, **kw: Any) -> str:
    (value,) = list(element.clauses)
    return f"auditor_lower({compiler.process(value, **kw)})"


class GroupFolded(FunctionElement[str]):
    """``GroupFolded(value, column)``: ``value`` (``column`` trimmed) as a group key or a distinct
    value, equal exactly when the two values lower-case alike.

    PostgreSQL: ``lower(value)``. SQLite: ``value COLLATE NOCASE`` (:class:`CaseFolded`) where the
    value is plain ASCII, and ``auditor_lower(value)`` (:class:`UnicodeLower`) where it is not, so
    that ``ÄNDERUNGSDATUM`` from one source and ``änderungsdatum`` from another are one group there
    too, while the Python call is paid only for the values outside ASCII. The lowered value is
    compared with ``NOCASE`` like the others: an ASCII value and a lowered one are then equal exactly
    when their lower cases are (the Kelvin sign lowers to ``k``).
    """

    type = Text()
    name = "group_folded"
    inherit_cache = True


class GroupLowered(FunctionElement[str]):
    """``GroupLowered(value, column)``: ``value`` lower-cased for output as a group's key, as
    :class:`GroupFolded` compares it.

    PostgreSQL: ``lower(value)``. SQLite: ``lower(value)`` for plain ASCII, ``auditor_lower(value)``
    otherwise (SQLite's ``lower()`` leaves ``Ä`` as it is)."""

    type = Text()
    name = "group_lowered"
    inherit_cache = True


@compiles(GroupFolded)
@compiles(GroupLowered)
def _group_default(element: FunctionElement[str], compiler: Any, **kw: Any) -> str:
    value, _column = list(element.clauses)
    return f"lower({compiler.process(value, **kw)})"


@compiles(GroupFolded, "sqlite")
@compiles(GroupLowered, "sqlite")
def _group_sqlite(element: FunctionElement[str], compiler: Any, **kw: Any) -> str:
    value, column = list(element.clauses)
    text, raw = compiler.process(value, **kw), compiler.process(column, **kw)
    # More bytes than characters: a character outside ASCII (the length of a BLOB is its size, read
    # in place; a GLOB for such a character cost 5x more per value). Tested on the column itself:
    # trimming takes spaces only, and it copies the value.
    outside = f"length(CAST({raw} AS BLOB)) <> length({raw})"
    if isinstance(element, GroupFolded):
        return f"(CASE WHEN {outside} THEN auditor_lower({text}) ELSE {text} END) COLLATE NOCASE"
    return f"(CASE WHEN {outside} THEN auditor_lower({text}) ELSE lower({text}) END)"


class RegexSearch(FunctionElement[bool]):
    """``value`` matches ``pattern`` anywhere (Python ``re.search`` semantics), case-sensitive."""

    type = Boolean()
    name = "regex_search"
    inherit_cache = True
    ignore_case = False


class RegexSearchIgnoreCase(RegexSearch):
    """The case-insensitive variant."""

    name = "regex_search_ci"
    inherit_cache = True
    ignore_case = True


@compiles(RegexSearch)
def _regex_default(element: RegexSearch, compiler: Any, **kw: Any) -> str:
    value, pattern = list(element.clauses)
    flag = 1 if element.ignore_case else 0
    return f"(auditor_regexp({compiler.process(pattern, **kw)}, {compiler.process(value, **kw)}, {flag}) = 1)"


@compiles(RegexSearch, "postgresql")
def _regex_pg(element: RegexSearch, compiler: Any, **kw: Any) -> str:
    value, pattern = list(element.clauses)
    operator = "~*" if element.ignore_case else "~"
    # the first MAX_INPUT characters, as on SQLite (a value longer than that matched there only)
    searched = f"substr({compiler.process(value, **kw)}, 1, {MAX_INPUT})"
    return f"({searched} {operator} {compiler.process(pattern, **kw)})"


SEPARATOR = "\x1f"


class JoinedText(FunctionElement[str]):
    """Aggregate: the group's values joined by :data:`SEPARATOR` (order unspecified)."""

    type = Text()
    name = "joined_text"
    inherit_cache = True


@compiles(JoinedText)
def _joined_default(element: JoinedText, compiler: Any, **kw: Any) -> str:
    (value,) = list(element.clauses)
    return f"group_concat({compiler.process(value, **kw)}, char(31))"


@compiles(JoinedText, "postgresql")
def _joined_pg(element: JoinedText, compiler: Any, **kw: Any) -> str:
    (value,) = list(element.clauses)
    return f"string_agg({compiler.process(value, **kw)}, chr(31))"


class DialectChoice(ColumnElement[bool]):
    """A boolean condition written one way for SQLite and another way for other databases.

    Quantifiers over tags and attributes use it: on SQLite ``hash IN (SELECT hash FROM tags WHERE
    …)`` scans the element table once into an in-memory set and probes it per column, 2-3x faster
    than a correlated ``EXISTS`` seeking into the on-disk b-tree by a random hash for every column;
    PostgreSQL plans the correlated ``EXISTS`` as a hash semi-join, and ``NOT IN`` over a large
    subquery can degrade there. Both forms are equivalent because the keys are never NULL.
    """

    type = Boolean()
    inherit_cache = False  # holds two statements; evaluation compiles each rule once anyway

    def __init__(self, sqlite_form: ColumnElement[bool], other_form: ColumnElement[bool]) -> None:
        self.sqlite_form = sqlite_form
        self.other_form = other_form


@compiles(DialectChoice)
def _choice_default(element: DialectChoice, compiler: Any, **kw: Any) -> str:
    return compiler.process(element.other_form, **kw)


@compiles(DialectChoice, "sqlite")
def _choice_sqlite(element: DialectChoice, compiler: Any, **kw: Any) -> str:
    return compiler.process(element.sqlite_form, **kw)
