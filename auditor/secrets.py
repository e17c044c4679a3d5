"""Keeping the API key out of every output.

Every secret the process handles (the API key, session tokens obtained from it, SMTP passwords) is
registered here the moment it is read. :func:`scrub` replaces registered secrets in any text, and a
logging filter applies it to every log record, so that a message, a ``--verbose`` trace or an
exception text cannot carry a secret out even by accident. Code should still never put a secret in a
message: this is the second line of defence, not the first.

Data is the other way out: a server that reflects the key (or a session token) inside the records it
serves would get it stored, then reported and emailed. :func:`redact_bytes` masks a client's own key
and session tokens in a response body before it is decoded (see ``BigIDClient._send``); other
registered secrets (a database or SMTP password) are not searched in data, where they would rewrite
catalog values that merely contain them.
"""

from __future__ import annotations

import base64
import functools
import logging
import re
import threading
from collections.abc import Iterable
from urllib.parse import quote, unquote

_lock = threading.Lock()
_secrets: set[str] = set()
# The API key and session tokens (``register(..., credential=True)``): the secrets a server is sent,
# and so may quote in part; their runs of FRAGMENT characters are masked in its texts (scrub_cut)
_credentials: set[str] = set()
MASK = "***"
MIN_SECRET_LENGTH = 4  # shorter strings would mask ordinary words; such keys are refused anyway
# Keys published as examples, never secrets: BigID's tutorial's (and the built-in sandbox's) SAMPLE.
# Registered, it masked the word in every later message of the process: after one sandbox run, a
# report path 'SAMPLE-report.html' was shown as '***-report.html'.
PUBLIC_KEYS = frozenset({"SAMPLE"})


def forms(secret: str | None) -> frozenset[str]:
    """``secret`` and its base64 and percent-encoded spellings (none for a secret shorter than
    :data:`MIN_SECRET_LENGTH`, nor for one of the :data:`PUBLIC_KEYS`): an SMTP login sends a
    password in base64, a URL carries it percent-encoded, and a server echoing either in an error
    would print it."""
    if not secret or len(secret) < MIN_SECRET_LENGTH or secret in PUBLIC_KEYS:
        return frozenset()
    encoded = base64.b64encode(secret.encode("utf-8")).decode("ascii")
    return frozenset({secret, quote(secret, safe=""), quote(secret), encoded, encoded.rstrip("=")})


def register(secret: str | None, *, credential: bool = False) -> None:
    """Remember ``secret`` (in all its :func:`forms`) so that :func:`scrub` hides it from texts,
    messages and log records from now on, in this process.

    Registered secrets are masked in *messages* only. Data is masked by :func:`redact_bytes` for
    the secrets its caller names (a client masks its own key and session tokens): a database or
    SMTP password registered here must not rewrite catalog values that happen to contain it.
    """
    found = forms(secret)
    if found:
        with _lock:
            _secrets.update(found)
            if credential and secret is not None:
                _credentials.add(secret)


def forget_all() -> None:
    """Forget every registered secret (tests use this between cases)."""
    with _lock:
        _secrets.clear()
        _credentials.clear()


def scrub(text: str, among: Iterable[str] | None = None) -> str:
    """``text`` with every registered secret (or each of ``among``: a secret's :func:`forms`)
    replaced by ``***``, also where a run of percent escapes spells one."""
    if among is not None:
        secrets = sorted(among, key=len, reverse=True)
        return _scrubbed(text, secrets) if text and secrets else text
    if not text or not _secrets:
        return text
    with _lock:
        secrets = sorted(_secrets, key=len, reverse=True)
    return _scrubbed(text, secrets)


def _scrubbed(text: str, secrets: list[str]) -> str:
    for secret in secrets:
        if secret in text:
            text = text.replace(secret, MASK)
    if "%" in text:
        text = _PERCENT_RUN.sub(lambda run: _unquoted_if_secret(run.group(0), secrets), text)
    return text


# A run of URL characters holding percent escapes. A server quoting the key from a URL may encode
# more than quote() does (``KEY%2D7f3a9`` for ``KEY-7f3a9``, lower-case hex): such a run is decoded,
# and shown decoded and masked when it holds a secret (a base64 key's + / = are always encoded).
# (Runs without an escape are left as they are; one pass over the text, no backtracking.) A run is
# everything between white space and quotes: quote() keeps '/' by default, so a base64 key quoted
# that way is split by none of its own characters.
_PERCENT_RUN = re.compile(r"""(?:%[0-9A-Fa-f]{2}|[^\s%"'<>])+""")


def _unquoted_if_secret(run: str, secrets: list[str]) -> str:
    if "%" not in run:
        return run
    decoded = unquote(run)
    if not any(secret in decoded for secret in secrets):
        return run
    for secret in secrets:
        decoded = decoded.replace(secret, MASK)
    return decoded


def scrub_cut(text: str) -> str:
    """:func:`scrub`, for an excerpt of someone else's text that may begin or end inside a secret.

    A body cut short mid-key (a server that reflected the key and then dropped the connection),
    or a window taken out of a longer text, holds no whole secret for :func:`scrub` to find, yet
    shows most of one. A start that is a secret's ending, or an end that is a secret's beginning,
    of :data:`MIN_SECRET_LENGTH` characters or more, is masked too, as written or in any spelling a
    JSON encoder gives it (an excerpt of a raw body shows ``\\/`` or ``\\u002f`` for ``/``).
    """
    text = scrub(text)
    if not text or not _secrets:
        return text
    with _lock:
        secrets = sorted(_secrets, key=len, reverse=True)
    for secret in secrets:
        ends_with_start, starts_with_end = _edges(secret)
        found = ends_with_start.search(text)
        if found:
            text = text[: found.start()] + MASK
        found = starts_with_end.match(text)
        if found:
            text = MASK + text[found.end() :]
    with _lock:
        credentials = sorted(_credentials, key=len, reverse=True)
    return _mask_fragments(text, credentials)


FRAGMENT = 8  # a run of this many characters of a secret, found inside someone else's text, is masked
_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def _mask_fragments(text: str, credentials: list[str]) -> str:
    """``text`` with every run of :data:`FRAGMENT` or more characters of a credential (the API key,
    a session token; not a database or SMTP password, whose words may be ordinary) masked, wherever
    it stands and in either case: a server quoting the key cut short in the middle of its message
    (``token 'SuperSecretKey-123...'``), or escaping one of its characters (``\\u002d``), showed most
    of it, which the start-and-end checks above do not see. Only for text a server wrote: in a
    random key, eight characters in a row do not occur in ordinary words."""
    if len(text) < FRAGMENT:
        return text
    folded = text.translate(_ASCII_LOWER)  # ASCII only: the same length, so the same positions
    spans: list[tuple[int, int]] = []
    for secret in credentials:
        if len(secret) < 2 * FRAGMENT - 4:  # (a short secret's whole form is what scrub masks)
            continue
        key = secret.translate(_ASCII_LOWER)
        for start in range(len(key) - FRAGMENT + 1):
            window = key[start : start + FRAGMENT]
            at = folded.find(window)
            while at != -1:
                spans.append((at, at + FRAGMENT))
                at = folded.find(window, at + 1)
    if not spans:
        return text
    spans.sort()
    merged = [list(spans[0])]
    for begin, end in spans[1:]:
        if begin <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([begin, end])
    for begin, end in reversed(merged):
        text = text[:begin] + MASK + text[end:]
    return text


@functools.lru_cache(maxsize=64)
def _edges(secret: str) -> tuple[re.Pattern[str], re.Pattern[str]]:
    """Regexes for a text ending with a beginning of ``secret``, and starting with an ending of it
    (longest first; :data:`MIN_SECRET_LENGTH` characters or more, each in any JSON spelling, the
    cut possibly inside an escape)."""
    spelled = [_spelled(char) for char in secret]
    sizes = range(len(secret) - 1, MIN_SECRET_LENGTH - 1, -1)
    beginnings = "|".join("".join(spelled[:size]) for size in sizes) or "(?!)"
    endings = "|".join("".join(spelled[len(secret) - size :]) for size in sizes) or "(?!)"
    # a cut may also fall inside an escape: "…\\u00" at the end, "3d…" at the start
    return (
        re.compile(f"(?:{beginnings})(?:\\\\(?:u[0-9a-fA-F]{{0,3}})?)?\\Z"),
        re.compile(f"(?:u[0-9a-fA-F]{{0,4}}|[0-9a-fA-F]{{1,4}})?(?:{endings})"),
    )


def _spelled(char: str) -> str:
    """A regex (text) for ``char`` as a JSON encoder may write it inside a string."""
    literal = re.escape(char)
    if char.isascii() and char.isalnum():
        return literal
    forms = [_utf16_escape(char).decode()]
    if char in _SHORT_ESCAPES:
        forms.append(re.escape(_SHORT_ESCAPES[char].decode()))
    if char not in '"\\' and ord(char) >= 0x20:
        forms.append(literal)
    return "(?:" + "|".join(forms) + ")"


# JSON's two-character escapes, by the character they stand for.
_SHORT_ESCAPES = {
    '"': b'\\"',
    "\\": b"\\\\",
    "/": b"\\/",
    "\b": b"\\b",
    "\f": b"\\f",
    "\n": b"\\n",
    "\r": b"\\r",
    "\t": b"\\t",
}


def _utf16_escape(char: str) -> bytes:
    """A regex for ``char`` written as ``\\uXXXX`` (a surrogate pair above U+FFFF), hex in any case."""
    units = char.encode("utf-16-be")
    return b"".join(
        b"\\\\u"
        + b"".join(
            b"[%s%s]" % (d.lower().encode(), d.upper().encode()) if d.isalpha() else d.encode()
            for d in f"{unit:04x}"
        )
        for unit in (int.from_bytes(units[i : i + 2], "big") for i in range(0, len(units), 2))
    )


@functools.lru_cache(maxsize=64)
def _spellings(secret: str) -> re.Pattern[bytes]:
    """A regex for every way a JSON encoder writes ``secret`` inside a string.

    Letters and digits stand for themselves (no JSON encoder escapes them); any other character
    may also be written ``\\uXXXX`` (Gson writes ``=`` as ``\\u003d``, ensure-ASCII encoders write
    every non-ASCII character so) or with its two-character escape (``\\/``).
    """
    return re.compile("".join(_spelled(char) for char in secret).encode())


def redact_bytes(content: bytes, among: Iterable[str] | None = None) -> tuple[bytes, int]:
    """``content`` with every secret of ``among`` (by default, every registered one) replaced by
    ``***``, and how many were replaced.

    Meant for a JSON body before it is decoded. Each secret is searched (longest first, so a secret
    that contains another is masked whole) in every spelling a JSON encoder may give it inside a
    string: as its UTF-8 bytes, and with any of its characters other than letters and digits
    escaped, as ``\\/`` or as ``\\uXXXX`` in either case (Gson's ``\\u003d`` for ``=``, an
    ensure-ASCII encoder's escapes of non-ASCII characters), each character independently.
    ``***`` is valid inside a JSON string, so the body still parses and the mask takes the secret's
    place.

    Not caught: a secret split across two JSON strings, with its letters or digits escaped (no
    encoder writes them so), or encoded otherwise than :func:`register` records it (its base64
    and percent-encoded spellings are searched like the secret itself). A body without a backslash
    costs one substring search per secret; only a body with a backslash is searched with the
    spellings' regular expression. When nothing matches, ``content`` itself is returned, with a
    count of 0.
    """
    if among is None:
        with _lock:
            among = set(_secrets)
    if not among or not content:
        return content, 0
    secrets = sorted(among, key=len, reverse=True)
    mask = MASK.encode()
    replaced = 0
    escapes = b"\\" in content
    for secret in secrets:
        if escapes:
            content, count = _spellings(secret).subn(mask, content)
        else:
            form = secret.encode()
            count = content.count(form)
            if count:
                content = content.replace(form, mask)
        replaced += count
    return content, replaced


class ScrubFilter(logging.Filter):
    """A logging filter that scrubs every record: its message, the traceback of the exception it
    carries, and its stack.

    A filter runs before any formatter, and a formatter writes the traceback only when the record
    has no ``exc_text`` yet: so the traceback is formatted here, as a formatter would, and scrubbed
    (it repeats the exception's text, and the source lines that raised it).
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if _secrets:
            message = scrub(record.getMessage())
            record.msg, record.args = message, None
            if record.exc_info and not record.exc_text:
                record.exc_text = _FORMATTER.formatException(record.exc_info)
            if record.exc_text:
                record.exc_text = scrub(record.exc_text)
            if record.stack_info:
                record.stack_info = scrub(record.stack_info)
        return True


_FORMATTER = logging.Formatter()


_OWN_FILTER = ScrubFilter()


def scrubbed_logger(name: str) -> logging.Logger:
    """The logger ``name`` (one of the package's own), its records scrubbed as they are made.

    A filter on a logger applies to the records logged through that very logger, whatever
    handlers the application installed: a program using the library without the CLI (which also
    installs :func:`install_log_filter`) gets the package's log records scrubbed too.
    """
    logger = logging.getLogger(name)
    if _OWN_FILTER not in logger.filters:
        logger.addFilter(_OWN_FILTER)
    return logger


_installed = False


def install_log_filter() -> None:
    """Attach :class:`ScrubFilter` to the root, ``auditor``, urllib3 and requests loggers (for the
    records logged on each of them: a logger's filters do not see its children's records, so a
    handler printing them carries a :class:`ScrubFilter` of its own, as the CLI's does)."""
    global _installed
    if _installed:
        return
    scrubber = ScrubFilter()
    for name in ("", "auditor", "urllib3", "requests"):
        logging.getLogger(name).addFilter(scrubber)
    _installed = True
