"""Reading a BigID response body: JSON by body, the envelope variants, and errors hidden under 200.

BigID has no single envelope (``shared/reference/bigid-api.md`` §0, §9 items 4, 8 and 9). This module
turns any of the shapes public sources show into ``(rows, total, shape)``:

* a bare array (the tutorial's ``/clusters``),
* ``{results: [...], totalCount}`` (the tutorial's similar-columns),
* ``{data: [...]}``, ``{data: {clusters|results|columns|<plural>: [...], totalCount}}``,
* the status wrapper ``{status, statusCode, data, message}`` around either,
* ``{clusters: [...]}`` / ``{columns: [...]}`` at the top level.

It also recognises what must not be read as data: ``success: false`` or ``status: "error"`` under
HTTP 200 (an authentication message becomes an auth failure), and an HTML gateway page under 200
(treated as a 502 so that the transport retries it). ``totalRowsCounter`` is never a total (§7.3).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import orjson

from auditor import jsonexact
from auditor.bigid.models import coerce_count

# Keys under which a list of records may sit, most specific first.
_LIST_KEYS = ("results", "clusters", "columns", "items", "records")
_TOTAL_KEYS = ("totalCount", "total_count", "total")
# Words of a message about the credentials (the Authorization header and what it carries), not
# about a parameter or the data: under HTTP 200 they make the answer an auth failure, and on a 400
# before any form of the key was accepted they make ``auto`` try the next form.
_AUTH_WORDS = (
    "authenticat",
    "unauthori",
    "authoriz",
    "authoris",
    "bearer",
    "api key",
    "apikey",
    "credential",
)
# "token" alone is no auth word ("offsetKey token is stale" is about paging): with one of these it is
_TOKEN_TROUBLE = re.compile(
    r"\b(?:invalid|not valid|expired?|missing|required|revoked|bad|wrong|malformed|unknown)\b"
)
# A request to sign in again ("Session expired, please login"): about the credentials whatever else
# the message says (a paging "session" alone is not)
_SIGN_IN = re.compile(
    r"\b(?:please (?:re-?)?(?:log ?in|sign ?in)|(?:log ?in|sign ?in) (?:is )?required"
    r"|not (?:logged|signed) in)\b"
)


@dataclass(frozen=True)
class Envelope:
    """The records of one response, the total it announced (if any) and the shape it came in."""

    rows: list[Any]
    total: int | None
    shape: str


class NotJson(Exception):
    """The body is not JSON. ``gateway`` is true when it looks like an HTML gateway/error page, or
    is empty (a proxy that lost its upstream answers so too): a transient failure, retried;
    ``snippet`` is the text where parsing failed (the start, for most bodies), ``problem`` what the
    parser said and where."""

    def __init__(self, gateway: bool, snippet: str, problem: str = "") -> None:
        super().__init__(snippet)
        self.gateway = gateway
        self.snippet = snippet
        self.problem = problem


class ErrorUnder200(Exception):
    """A body that reports an error although the HTTP status was 200."""

    def __init__(self, message: str, *, auth: bool, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.auth = auth
        self.status = status  # the wrapper's statusCode, when it gives an HTTP error status


class UnknownEnvelope(Exception):
    """A JSON body whose records could not be found."""

    def __init__(self, description: str) -> None:
        super().__init__(description)
        self.description = description


_BOM = b"\xef\xbb\xbf"


def parse_body(content: bytes) -> Any:
    """Parse JSON whatever the ``Content-Type`` says; raise :class:`NotJson` otherwise.

    A UTF-8 byte order mark before the JSON is skipped (RFC 8259 lets parsers ignore it; some
    servers send one), a lone UTF-16 surrogate escape is read as U+FFFD
    (:func:`auditor.jsonexact.loads_replacing_lone_surrogates`), and ``NaN``/``Infinity`` as a
    value as ``null`` (:func:`auditor.jsonexact.loads_constants_as_null`).
    """
    if content.startswith(_BOM):
        content = content[len(_BOM) :]
    try:
        return jsonexact.loads(content)  # integers past 64 bits exact, 1e400 kept as text
    except orjson.JSONDecodeError as first:
        exc = first
        if "surrogate" in exc.msg:  # a lone "\ud83d" (a Node.js server cut a name inside an emoji)
            try:
                return jsonexact.loads_replacing_lone_surrogates(content)
            except orjson.JSONDecodeError as other:
                exc = other
        elif jsonexact.may_hold_constants(content):
            # NaN or Infinity as a value (Python's json.dumps writes them): read as null. (orjson
            # words each differently: "unexpected character", "no digit after sign" for -Infinity)
            try:
                return jsonexact.loads_constants_as_null(content)
            except orjson.JSONDecodeError as other:
                exc = other
        # a large page may be broken far from its start (a NaN, a bad byte): show that place
        position = exc.pos if isinstance(exc.pos, int) and exc.pos > 60 else 0
        problem = f"{exc.msg} at character {exc.pos:,}" if isinstance(exc.pos, int) else str(exc.msg)
        if "not valid UTF-8" in exc.msg:  # orjson does not say where: the decoder does
            try:
                content.decode("utf-8")
            except UnicodeDecodeError as bad:
                position = bad.start
                problem = f"not valid UTF-8 at byte {bad.start:,}"
        elif "depth" in exc.msg.lower():
            problem = "nested more than 1,024 levels deep, too deep to read (a record may nest 512)"
        snippet = _snippet(content) if position <= 60 else _excerpt(content, position)
        raise NotJson(looks_like_html(content) or not content.strip(), snippet, problem) from None


def ends_early(content: bytes) -> bool:
    """Whether ``content`` is the start of a JSON text that stops before its end (``[{"id": "c-1"},
    {"na``), a character's bytes cut included: what a body cut short in transit decodes to."""
    if content.startswith(_BOM):
        content = content[len(_BOM) :]
    text = content.strip()
    if not text:
        return False  # no JSON begun: an empty answer, said as one
    if text[:1] + text[-1:] in (b"{}", b"[]"):
        # Closed as it was opened: taken as whole, unparsed (a tenant behind an HTTP/1.0 proxy sends
        # every page so, and the page is parsed anyway). A cut right after an inner object of an
        # object reads, as before, as malformed JSON.
        return False
    try:
        orjson.loads(content)  # orjson says this only when the data ran out
    except orjson.JSONDecodeError as exc:
        if exc.msg == "unexpected end of data":
            return True
        try:
            content.decode("utf-8")
        except UnicodeDecodeError as bad:  # cut inside a character: orjson calls it bad UTF-8
            return bad.reason == "unexpected end of data" and ends_early(content[: bad.start])
    return False


def looks_like_html(content: bytes) -> bool:
    """Whether a body starts like an HTML (gateway/error) page."""
    head = content[:512].lstrip().lower()
    return head.startswith((b"<", b"<!doctype")) or b"<html" in head


_PASSWORD_FIELD = re.compile(rb"""type\s*=\s*["']?password""")


def looks_like_sign_in(content: bytes) -> bool:
    """Whether an HTML body is a sign-in page (it has a password field): a single sign-on or proxy
    login in front of the API, not a gateway's error page."""
    return looks_like_html(content) and _PASSWORD_FIELD.search(content[:65536].lower()) is not None


def may_report_error(content: bytes) -> bool:
    """False only when a body certainly holds no error under 200 (:func:`check_error_under_200`).

    That needs a top-level ``success``, ``status`` or ``error`` key, whose name appears in the bytes
    as is, or written with ``\\u`` escapes. A cheap screen (a substring search) for callers that parse
    later. ``error`` is looked for as a key (followed by a colon): a catalog value "error" (a column
    so named) would otherwise send every page holding it through a second, in-thread decoding.
    """
    return (
        b'"success"' in content
        or b'"status"' in content
        or b'"error":' in content
        or b'"error" :' in content
        or b"\\u" in content
    )


def _excerpt(content: bytes, position: int) -> str:
    """The text around character ``position`` of ``content``, on one line.

    Like every excerpt here, it may begin or end inside a key the server reflected: whoever puts
    it in an error masks it with :func:`auditor.secrets.scrub_cut` (this module runs in decoding
    processes too, which hold no secret).
    """
    text = content.decode("utf-8", "replace")[max(0, position - 60) : position + 60]
    return " ".join(text.split())[:120]


def _snippet(content: bytes) -> str:
    text = content[:200].decode("utf-8", "replace")
    return " ".join(text.split())[:120]


def error_message(body: Any) -> str | None:
    """The human message of an error body (``error``, ``message``, ``detail``), one line, if any."""
    if isinstance(body, dict):
        for key in ("error", "message", "detail", "msg"):
            value = body.get(key)
            if isinstance(value, str) and value.strip():
                return " ".join(value.split())[:200]
            if isinstance(value, dict):
                nested = error_message(value)
                if nested:
                    return nested
    elif isinstance(body, str) and body.strip():
        return " ".join(body.split())[:200]
    return None


def is_auth_message(message: str | None) -> bool:
    lowered = (message or "").lower()
    if any(word in lowered for word in _AUTH_WORDS):
        return True
    if _SIGN_IN.search(lowered):
        return True
    return "token" in lowered and _TOKEN_TROUBLE.search(lowered) is not None


def check_error_under_200(body: Any) -> None:
    """Raise :class:`ErrorUnder200` for ``success: false`` or ``status: "error"`` bodies, and for an
    ``error`` or an error ``statusCode`` (400-599) given with no record (``{"results": [],
    "totalCount": 0, "error": "query failed: timeout"}`` read as an empty cluster, stored complete)."""
    if not isinstance(body, dict):
        return
    failed = body.get("success") is False or str(body.get("success")).lower() == "false"
    status = body.get("status")
    if isinstance(status, str) and status.lower() in ("error", "fail", "failure"):
        failed = True
    error = body.get("error")
    # (a list of records: an "errors": ["Internal error"] list, or [null], holds none)
    no_records = not any(isinstance(value, list) and _records(value) for value in body.values()) and not (
        _holds_records(body.get("data"))
    )
    if no_records and (
        (isinstance(error, str) and error.strip())
        or (isinstance(error, dict) and error_message(error))
        # {"status": "success", "statusCode": 500, "data": null, "message": "Internal error…"}: an
        # error status with no record, stored as an empty cluster (a probe); records beside one stand
        or _error_status(body) is not None
    ):
        failed = True
    if failed:
        message = error_message(body) or "the server reported an error"
        raise ErrorUnder200(message, auth=is_auth_message(message), status=_error_status(body))


def _error_status(body: dict[str, Any]) -> int | None:
    """The HTTP error status a ``{status: "error", statusCode: 403, …}`` wrapper gives, if any."""
    code = body.get("statusCode")
    if isinstance(code, str) and code.strip().isdigit():
        code = int(code)
    if isinstance(code, int) and not isinstance(code, bool) and 400 <= code <= 599:
        return code
    return None


def _total(container: dict[str, Any]) -> int | None:
    for key in _TOTAL_KEYS:
        if key in container:
            return coerce_count(container[key])
    return None


def unwrap(body: Any) -> Envelope:
    """Find the records in ``body``; raise :class:`ErrorUnder200` or :class:`UnknownEnvelope`."""
    if isinstance(body, list):
        return Envelope(body, None, "array")
    if not isinstance(body, dict):
        raise UnknownEnvelope(f"{_json_kind(body)} instead of a list or an object")
    check_error_under_200(body)
    wrapped = "statusCode" in body or ("status" in body and "data" in body)
    prefix = "status+" if wrapped else ""
    lists = [(key, body[key]) for key in (*_LIST_KEYS, "data") if isinstance(body.get(key), list)]
    if lists:
        # The records are the first non-empty list of objects: {"data": [25 rows], "results": []}
        # read as an empty page lost them silently; a list of names is no records. An empty list
        # stands only when "data" holds no records either ({"results": [], "data": {"clusters": …}}).
        chosen = next(((key, value) for key, value in lists if _records(value)), None)
        if chosen is None and not _holds_records(body.get("data")):
            chosen = lists[0]
        if chosen is not None:
            return Envelope(chosen[1], _total(body), f"{prefix}{chosen[0]}")
    for key in _LIST_KEYS:  # a null list is no records, as {"data": null} is
        if key in body and body[key] is None and "data" not in body:
            return Envelope([], _total(body), f"{prefix}{key}")
    if "data" in body:
        data = body["data"]
        if data is None:
            return Envelope([], _total(body), f"{prefix}data")
        if isinstance(data, list):
            return Envelope(data, _total(body), f"{prefix}data")
        if isinstance(data, dict):
            for key in _LIST_KEYS:
                value = data.get(key)
                if isinstance(value, list):
                    total = _total(data)
                    return Envelope(
                        value, total if total is not None else _total(body), f"{prefix}data.{key}"
                    )
            key = _single_list_key(data)
            if key:
                total = _total(data)
                return Envelope(
                    data[key], total if total is not None else _total(body), f"{prefix}data.{key}"
                )
    keys = ", ".join(sorted(map(str, body))[:8]) or "none"
    raise UnknownEnvelope(f"an object without a list of records (keys: {keys})")


def continuation_key(body: Any) -> Any:
    """The continuation a page offers for the next one, as the data-catalog family gives it
    (reference §5.1: ``{"results": [...], "offset": {"offsetKey": ["…"]}}``; at the top, or under
    ``data``): a non-blank string or a list of strings, sent back as the ``offsetKey`` parameter;
    ``None`` when the page offers none."""
    containers = [body, body.get("data")] if isinstance(body, dict) else []
    for container in containers:
        if not isinstance(container, dict):
            continue
        offset = container.get("offset")
        key = offset.get("offsetKey") if isinstance(offset, dict) else container.get("offsetKey")
        if isinstance(key, str) and key.strip():
            return key
        if isinstance(key, list) and key and all(isinstance(item, str) for item in key):
            return key
    return None


def _holds_records(data: Any) -> bool:
    """Whether ``data`` is an object with a non-empty list of objects among its values."""
    return isinstance(data, dict) and any(
        isinstance(value, list) and _records(value) for value in data.values()
    )


def _records(items: list[Any]) -> bool:
    """Whether ``items`` is a non-empty list of records: its first item that is not null (null
    records are dropped and counted later) is an object."""
    return isinstance(next((item for item in items if item is not None), None), dict)


def _json_kind(value: Any) -> str:
    """What a JSON scalar is, in JSON's words (not Python's ``NoneType`` or ``str``)."""
    if value is None:
        return "JSON null"
    if isinstance(value, bool):
        return f"JSON {str(value).lower()}"
    if isinstance(value, str):
        return "a JSON string"
    return "a JSON number" if isinstance(value, int | float) else f"a JSON {type(value).__name__}"


def _single_list_key(data: dict[str, Any]) -> str:
    """The one key of ``data`` holding a list of objects (``ds_connections``-style plurals), or ''."""
    found = [
        k for k, v in data.items() if isinstance(v, list) and all(i is None or isinstance(i, dict) for i in v)
    ]
    return found[0] if len(found) == 1 else ""
