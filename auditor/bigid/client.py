"""The BigID REST client: one pooled ``requests`` session, auth, retries, envelopes, paging, errors.

:class:`BigIDClient` talks to the two Cluster Analysis endpoints (``GET /api/v1/clusters`` and
``GET /api/v1/data-catalog/column/cluster/similar``) and to the token exchange. What it does, and
where the rules come from (``shared/seed/cluster-analysis-api-tutorial.txt``,
``shared/reference/bigid-api.md``):

* auth: :mod:`auditor.bigid.auth` (Bearer, raw, session exchange, ``auto``);
* transport: per-request connect/read timeouts; 429 honours ``Retry-After`` (seconds or an HTTP
  date, capped); 500/502/503/504, an HTML gateway page or an empty answer under 200, connection
  resets and timeouts are retried with exponential backoff and full jitter, bounded in attempts and
  in total time; TLS is verified unless ``verify=False`` (which logs a warning);
* envelopes: :mod:`auditor.bigid.envelope` (the shapes seen are recorded in :attr:`envelopes`);
* paging: :mod:`auditor.bigid.paging`; a snapshot never sends ``ignoreLimit`` or ``sample``;
* secrets: a 200 data answer that carries the key (or a session token) has every occurrence
  masked on its bytes before it is decoded (:func:`auditor.secrets.redact_bytes`), counted in
  :attr:`BigIDClient.secrets_redacted`, with one warning per client;
* errors: the tutorial's troubleshooting table, as :mod:`auditor.errors` classes whose messages name
  the URL path, the status and the cluster, never the key. ``requests``' own exception texts are set
  aside (they may carry URLs and internals); messages are built here and scrubbed once more.

A client is safe to share between the worker threads of one snapshot.
"""

from __future__ import annotations

import codecs
import email.utils
import ipaddress
import random
import re
import threading
import time
from collections.abc import Callable, Hashable, Iterator
from concurrent.futures import CancelledError, Executor, Future
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote, urlencode, urljoin, urlsplit, urlunsplit

import requests
import urllib3.exceptions
import urllib3.response
from pydantic import ValidationError

from auditor import secrets
from auditor.bigid.auth import REFRESH_PATH, SCHEMES, Authenticator, check_token
from auditor.bigid.deadline import AnswerCancelled as _AnswerCancelled
from auditor.bigid.deadline import AnswerLate, DeadlineAdapter, watching
from auditor.bigid.envelope import (
    ErrorUnder200,
    NotJson,
    UnknownEnvelope,
    check_error_under_200,
    continuation_key,
    ends_early,
    error_message,
    is_auth_message,
    looks_like_html,
    looks_like_sign_in,
    may_report_error,
    parse_body,
    unwrap,
)
from auditor.bigid.models import (
    UNION_ACCEPTS,
    Cluster,
    Column,
    RecordNotStorable,
    parse_clusters,
    parse_columns,
)
from auditor.bigid.paging import (
    MIN_PAGE_SIZE,
    NoProgress,
    PageTooSlow,
    PagingStats,
    RawPage,
    announced_more,
    paginate,
    shrink,
)
from auditor.errors import (
    ApiError,
    AuditorError,
    AuthError,
    ConfigError,
    NetworkError,
    NotFoundError,
    PayloadError,
)
from auditor.tls import ca_context, spoke_no_tls

log = secrets.scrubbed_logger("auditor.bigid")
CA_HINT = "give the PEM file of the CA that signed the tenant's certificate"

CLUSTERS_PATH = "/api/v1/clusters"
COLUMNS_PATH = "/api/v1/data-catalog/column/cluster/similar"
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
# Retry-After as a number: whole seconds (RFC 9110), a decimal fraction tolerated; no sign, no exponent
_DELAY_SECONDS = re.compile(r"[0-9]+(?:\.[0-9]+)?")
# The largest limit asked for when a cluster listing must be fetched in one page (see
# BigIDClient._regrow_listing): --page-size's own bound.
MAX_LISTING_LIMIT = 1_000_000
MAX_AUTH_RETRIES = 6  # per request: the auto probes, then re-exchanges of expired sessions
KEY_HINT = (
    "set BIGID_TOKEN (or --token-file FILE) to a valid BigID API key; if the tenant wants another "
    "header form, pass --auth-scheme bearer|raw|refresh"
)


_FQN_NAMES = ("fullyQualifiedName", "fully_qualified_name", "fqn")

ColumnRow = tuple[Column, dict[str, Any]]
ClusterRow = tuple[Cluster, dict[str, Any]]


@dataclass
class ClientOptions:
    """How to reach and talk to a tenant. ``token`` is hidden from ``repr``."""

    url: str
    token: str = field(repr=False)
    auth_scheme: str = "auto"
    connect_timeout: float = 10.0
    read_timeout: float = 60.0
    ca_bundle: str | None = None
    verify: bool = True
    max_retries: int = 5
    max_retry_time: float = 120.0
    page_size: int = 1000
    cluster_id_param: str = "clusterId"
    cluster_id_fallback: bool = True  # on 400/422, try ``cluster_id`` once (reference §9.21)
    workers: int = 4
    max_pages: int = 10_000  # per listing; reaching it fails the listing
    backoff_base: float = 0.5
    backoff_cap: float = 30.0
    retry_after_cap: float = 60.0
    answer_timeout: float = 300.0  # the whole body of one answer (the read timeout bounds each wait)
    max_answer_bytes: int = 256 * 2**20  # one answer's body, decoded (a gzip bomb stops here)
    source_label: str | None = None  # what runs record as their source (default: the public URL)

    def __post_init__(self) -> None:
        # A URL pasted with a trailing space: 'host:8080 ' is no valid port, and 'host:8080/ ' asked
        # for /%20/api/v1/clusters and blamed the tenant with a 404.
        self.url = (self.url or "").strip()

    def __repr__(self) -> str:
        # the key pasted into the URL (a path segment, a query parameter) is masked there too
        shown = ", ".join(
            f"{name}={_masked_text(value, self.token) if isinstance(value, str) else repr(value)}"
            for name, value in vars(self).items()
            if name != "token"
        )
        return f"ClientOptions({shown}, token='***')"


# ClientOptions' numbers and the least each may be: (name, least, whether the least is allowed).
_LIMITS = (
    ("connect_timeout", 0, False),
    ("read_timeout", 0, False),
    ("answer_timeout", 0, False),
    ("max_retry_time", 0, True),
    ("backoff_base", 0, True),
    ("backoff_cap", 0, True),
    ("retry_after_cap", 0, True),
    ("max_retries", 0, True),
    ("workers", 1, True),
    ("max_pages", 1, True),
    ("max_answer_bytes", 1, True),
)


def _check_limits(options: ClientOptions) -> None:
    """Refuse a number the client cannot work with (from Python: the CLI checks its own settings),
    before any request: a negative timeout failed the snapshot it had started, with requests'
    "Invalid timeout", and a negative retry count or worker count was taken as it was."""
    for name, least, allowed in _LIMITS:
        value = getattr(options, name)
        # ``not (value > least)`` also refuses NaN, which passes every comparison as False
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not (value >= least if allowed else value > least)
        ):
            bound = f"at least {least}" if allowed else f"more than {least}"
            raise ConfigError(f"ClientOptions.{name} must be {bound}, got {value!r}")


@dataclass
class ColumnsPage:
    """One answer of the similar-columns endpoint (``auditor columns``)."""

    rows: list[ColumnRow]
    total: int | None
    shape: str


@dataclass
class DecodedColumns:
    """A 200 body of the similar-columns endpoint decoded by :func:`decode_columns` (picklable).

    Exactly one outcome is set: ``not_json`` (gateway?, snippet, problem), ``error_under_200`` (message,
    auth?), ``unknown_envelope`` (description), ``invalid`` (row index, fqn, field path, message),
    or else ``rows`` (one ``transform(column, raw)`` per record), ``total`` and ``shape``.
    """

    rows: list[Any] = field(default_factory=list)
    total: int | None = None
    shape: str = ""
    not_json: tuple[bool, str, str] | None = None
    error_under_200: tuple[str, bool] | None = None
    unknown_envelope: str | None = None
    invalid: tuple[int | None, Any, str, str] | None = None
    nulls: int = 0  # ``null`` items dropped from the page (see :func:`drop_nulls`)
    next_key: Any = None  # the page's ``offset.offsetKey`` continuation (see continuation_key)


def decode_columns(content: bytes, transform: Callable[[Column, dict[str, Any]], Any]) -> DecodedColumns:
    """Parse, unwrap and validate one column page; ``transform`` each ``(Column, raw)`` record.

    A pure function of the body's bytes (no credentials, no I/O, no logging): the snapshot runs it
    in a process pool. Every failure comes back as data, not as an exception, so that the calling
    thread raises exactly what the in-thread path raises (see :meth:`PageOffload.decode`).
    """
    try:
        body = parse_body(content)
        check_error_under_200(body)
    except NotJson as exc:
        return DecodedColumns(not_json=(exc.gateway, exc.snippet, exc.problem))
    except ErrorUnder200 as exc:
        return DecodedColumns(error_under_200=(exc.message, exc.auth))
    try:
        envelope = unwrap(body)
    except UnknownEnvelope as exc:
        return DecodedColumns(unknown_envelope=exc.description)
    rows, nulls = drop_nulls(envelope.rows)
    try:
        models = parse_columns(rows)
    except ValidationError as exc:
        return DecodedColumns(invalid=_column_problem(exc, rows, envelope.rows))
    try:
        out = list(map(transform, models, rows))
    except RecordNotStorable as exc:
        return DecodedColumns(invalid=(None, exc.key, "(record)", str(exc)))
    return DecodedColumns(
        rows=out, total=envelope.total, shape=envelope.shape, nulls=nulls, next_key=continuation_key(body)
    )


def drop_nulls(rows: list[Any]) -> tuple[list[Any], int]:
    """``rows`` without their ``null`` items, and how many there were. A ``null`` in a list of
    records is no record (docs/fetch.md: dropped), not one that does not fit the models: it failed
    its cluster, or in the cluster list the whole snapshot. Paging still counts it as served."""
    records = [row for row in rows if row is not None]
    return records, len(rows) - len(records)


def served_at(served: list[Any], index: int) -> int:
    """Where the ``index``-th record left by :func:`drop_nulls` stood in the page as ``served``
    (nulls included): the position an error names (``column 17``), as the server counts it."""
    for position, row in enumerate(served):
        if row is not None:
            if index == 0:
                return position
            index -= 1
    return index


class PageOffload:
    """Decode column pages on ``executor`` (a process pool) instead of in the fetching thread.

    The fetching thread keeps the transport (auth, retries, 401s, gateway pages, errors under 200)
    and hands only the body's bytes over: the pool never sees the key. ``key(row)`` is the
    de-duplication key of a transformed row (the column's fully qualified name).
    """

    def __init__(
        self,
        executor: Executor,
        transform: Callable[[Column, dict[str, Any]], Any],
        key: Callable[[Any], Hashable],
    ) -> None:
        self.executor = executor
        self.transform = transform
        self.key = key

    def submit(self, content: bytes) -> Future[DecodedColumns]:
        """Start decoding a 200 body; what the transport must act on is raised here, at once.

        A body that may be an HTML gateway page, an empty answer or an error under 200 is checked in
        this thread
        (raising :class:`NotJson` / :class:`ErrorUnder200` exactly as the in-thread path does);
        any other body is data as far as the transport is concerned, so the request counts as
        accepted while the pool decodes it (sessions shared by workers depend on that timing).
        """
        if looks_like_html(content) or may_report_error(content) or not content.strip():
            _decode_json(content)
        try:
            return self.executor.submit(decode_columns, content, self.transform)
        except BrokenProcessPool:
            raise _decoder_died() from None
        except RuntimeError:  # the pool was shut down: the snapshot is being abandoned
            raise CancelledError() from None

    @staticmethod
    def result(future: Future[DecodedColumns]) -> DecodedColumns:
        """Wait for a page submitted with :meth:`submit`."""
        try:
            return future.result()
        except BrokenProcessPool:
            raise _decoder_died() from None


def _decoder_died() -> AuditorError:
    return AuditorError(
        "a page-decoding process died unexpectedly (out of memory, killed, or it could not start)",
        hint="re-run; with --processes 0 the pages are decoded in the fetching threads (a Python script "
        "that calls take_snapshot must guard its entry point with if __name__ == '__main__':)",
    )


def public_url(url: str) -> str:
    """``scheme://host[:port]/path`` of ``url``: no user, password, query or fragment."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), "", ""))


def _masked_text(text: str, token: str | None) -> str:
    """``repr(text)`` with ``token`` masked as :func:`auditor.secrets.scrub` masks a secret (the
    client's key need not be registered for a repr of its settings)."""
    return repr(secrets.scrub(text, among=secrets.forms(token)))


def _masked_source(url: str, token: str | None) -> str:
    """``url`` (a :func:`public_url`) with ``token`` masked wherever it is spelt, percent-encoded
    characters included: ``…/SECRET%2DKEY`` was recorded as the run's source as it was (a probe)."""
    forms = sorted(secrets.forms(token), key=len, reverse=True)
    if not forms or token is None:
        return url
    for form in forms:
        url = url.replace(form, secrets.MASK)
    parts = urlsplit(url)
    segments = []
    for segment in parts.path.split("/"):
        decoded = unquote(segment)
        if token in decoded:  # spelt with other characters percent-encoded
            segment = quote(decoded.replace(token, secrets.MASK), safe="*")
        segments.append(segment)
    return urlunsplit((parts.scheme, parts.netloc, "/".join(segments), "", ""))


class _Failure:
    """Why one attempt failed in a retryable way (for the final message)."""

    def __init__(self, reason: str, *, status: int | None, network: bool) -> None:
        self.reason, self.status, self.network = reason, status, network


CLUSTER_PARAM_TRIES = 3  # checks of the cluster id parameter in a run, when they meet passing failures

# The columns endpoint's optional parameters, by the ``auditor columns`` option that sets them: a
# 400 to a request carrying any of them may be about them rather than about the cluster id.
FLAGS = {
    "filter": "--filter",
    "searchText": "--search-text",
    "sort": "--sort",
    "offsetKey": "--offset-key",
    "sample": "--sample",
}


class BigIDClient:
    """A client for one tenant. Use as a context manager, or call :meth:`close`."""

    def __init__(self, options: ClientOptions) -> None:
        if options.auth_scheme not in SCHEMES:
            raise ConfigError(f"--auth-scheme {options.auth_scheme!r} is not one of {', '.join(SCHEMES)}")
        try:
            parts = urlsplit(options.url or "")
            parts.port  # noqa: B018 - raises ValueError for a port out of range or not a number
        except ValueError:  # the message names no part of the URL: it may carry credentials
            raise ConfigError(
                "the BigID URL is not a valid URL (check the host and the port, 1-65535)",
                hint="pass --url https://your-tenant.example.net (or set BIGID_URL)",
            ) from None
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(
                f"the BigID URL {public_url(options.url or '')!r} is not an http(s) URL",
                hint="pass --url https://your-tenant.example.net (or set BIGID_URL)",
            )
        if parts.username or parts.password:
            raise ConfigError(
                "the BigID URL must not carry credentials", hint="pass the API key through BIGID_TOKEN"
            )
        if not options.token:
            raise ConfigError("no BigID API key", hint=KEY_HINT)
        check_token(options.token, "the BigID API key")  # before anything could quote it
        if options.page_size < 1:
            raise ConfigError("--page-size must be at least 1")
        _check_limits(options)
        secrets.register(options.token, credential=True)
        # what _redact masks in data: this client's key and session tokens, never another secret
        # of the process (a database password would rewrite the catalog values holding it)
        self._own_secrets: set[str] = set(_data_forms(options.token))
        if options.ca_bundle:
            bundle = Path(options.ca_bundle).expanduser()
            if not bundle.exists():
                raise ConfigError(
                    f"--ca-bundle / ca_bundle: {bundle} does not exist",
                    hint=CA_HINT,
                )
            # loaded now, as --smtp-ca-bundle is: a wrong file must not wait for the first request
            ca_context(bundle, "--ca-bundle / ca_bundle", hint=CA_HINT)
            self._verify: bool | str = str(bundle)
        else:
            self._verify = options.verify
        self.options = options
        self.base_url = public_url(options.url)
        # what runs record as their source: a key pasted into the URL's path is not stored with it
        # (this client's key only: another secret of the process, "prod" say, is no part of it)
        self.source = options.source_label or _masked_source(self.base_url, options.token)
        self.session = requests.Session()
        pool = max(options.workers * 2, 10)
        adapter = DeadlineAdapter(pool_connections=2, pool_maxsize=pool, max_retries=0, pool_block=False)
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)
        self.session.headers.update({"Accept": "application/json", "User-Agent": _user_agent()})
        # Proxies from the environment still apply; a no-op auth hook stops requests from reading
        # ~/.netrc on every request (a file lookup per call, and credentials we never asked for).
        self.session.auth = _no_auth
        if self._verify is False:
            log.warning(
                "TLS certificate verification is OFF (--insecure): the connection to %s can be "
                "intercepted; use --ca-bundle for a private CA instead",
                self.base_url,
            )
            import urllib3

            urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)
        if _in_clear(self.base_url):
            log.warning(
                "the BigID URL %s is http://: the API key travels unencrypted to it (and to any proxy on "
                "the way); use https://",
                self.base_url,
            )
        self.auth = Authenticator(options.token, options.auth_scheme, self._exchange)
        self._lock = threading.Lock()
        # At most ``workers`` requests in flight, however many threads call: a snapshot runs more
        # threads than that so that decoding one page never leaves a request slot idle.
        self._slots = threading.BoundedSemaphore(max(1, options.workers))
        self._closing = threading.Event()
        self._closed = False
        self.requests = 0
        self.retries = 0
        self._secrets_redacted = 0
        self.envelopes: dict[str, set[str]] = {"clusters": set(), "columns": set()}
        self._answer_timeout = max(options.answer_timeout, options.read_timeout)
        self.cluster_id_param = options.cluster_id_param
        # note_first_page: first pages seen (their keys -> the cluster served it), and the verdict
        # on the cluster id parameter once checked (read; or the error saying it is ignored)
        self._first_pages: dict[tuple[int, int], str] = {}
        self._cluster_param_checked = False
        self._cluster_param_tries = 0  # checks that met a passing failure (see _check_cluster_param)
        self._param_check_lock = threading.Lock()
        self.cluster_param_ignored: dict[str, Any] | None = None
        # how a columns page's offset is sent: ``skip`` (the tutorial's), or ``offset``, adopted
        # once a tenant is seen to ignore ``skip`` and honour ``offset`` (see ColumnFetch)
        self.offset_param = "skip"
        self.last_cluster_paging: PagingStats | None = None
        self.last_invalid_clusters: dict[str, PayloadError] = {}  # see list_clusters(lenient=True)
        # Set when a page of columns timed out: later listings start at this size rather than time
        # out on their first page again (see :meth:`shrank_page`).
        self.page_ceiling: int | None = None

    def shrank_page(self, cluster_id: str, limit: int, reason: str) -> None:
        """A page of ``limit`` columns of ``cluster_id`` timed out (``reason``): its listing asks
        for half as many, and so do the listings that start after it."""
        smaller = shrink(limit)
        with self._lock:
            if self.page_ceiling is None or smaller < self.page_ceiling:
                self.page_ceiling = smaller
                log.warning(
                    "cluster %s: a page of %d columns failed (%s); asking for %d at a time from now on",
                    cluster_id,
                    limit,
                    reason,
                    smaller,
                )

    def __repr__(self) -> str:
        return f"BigIDClient(url={_masked_text(self.base_url, self.options.token)}, auth={self.auth!r})"

    def limit_requests(self, in_flight: int) -> None:
        """Allow at most ``in_flight`` requests at once (call before the requests start)."""
        self._slots = threading.BoundedSemaphore(max(1, in_flight))

    # -- lifecycle -----------------------------------------------------------------------------

    def __enter__(self) -> BigIDClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop waiting in backoffs and close the pooled connections."""
        self._closed = True
        self._closing.set()
        self.session.close()

    def cancel(self) -> None:
        """Make every request in a backoff (or about to start) give up (a snapshot is failing)."""
        self._closing.set()

    def resume(self) -> None:
        """Undo :meth:`cancel` once the cancelled work has stopped."""
        if not self._closed:
            self._closing.clear()

    @property
    def auth_scheme_used(self) -> str | None:
        """``bearer``, ``raw`` or ``refresh``: the scheme the tenant accepted (None before a request)."""
        return self.auth.scheme_used

    # -- clusters ------------------------------------------------------------------------------

    def list_clusters(
        self,
        filter: str | None = None,
        *,
        lenient: bool = False,
        content: Callable[[ClusterRow], Hashable] | None = None,
    ) -> list[ClusterRow]:
        """Every cluster (de-duplicated by id) as ``(Cluster, raw dict)``, in the API's order.

        A record that does not fit the models raises :class:`PayloadError`, unless ``lenient``
        and it still has an id: it is then listed with that id alone (and the raw record), and its
        error is in :attr:`last_invalid_clusters`, for the snapshot to record that cluster failed.
        ``content(row)``, when given, tells two different records of one id on a page (the first is
        listed; :attr:`last_cluster_paging` counts and names the others, ``conflicts``) from a
        repeat, as for columns (see :func:`auditor.bigid.paging.paginate`).
        """
        stats = PagingStats()
        self.last_cluster_paging = stats
        invalid: dict[str, PayloadError] | None = {} if lenient else None
        self.last_invalid_clusters = invalid if invalid is not None else {}

        def fetch(skip: int, limit: int) -> RawPage[ClusterRow]:
            params: dict[str, Any] = {"limit": limit, "skip": skip}
            if filter:
                params["filter"] = filter
            try:
                body = self._request(CLUSTERS_PATH, params, filter=filter)
            except NotFoundError as exc:
                if not skip:
                    raise
                # the first page answered at this address: the URL is right, the paging is not
                said = exc.message.partition("): ")[2]  # the server's own words, if it gave some
                raise NotFoundError(
                    f"GET {CLUSTERS_PATH} with skip={skip} was not found (HTTP 404) after the first "
                    f"{skip:,} clusters had been listed" + (f": {said}" if said else ""),
                    hint="the tenant may not page its cluster list past the first page: run again; if it "
                    "persists, raise --page-size above the number of clusters or narrow --filter",
                    status=404,
                ) from None
            envelope = self._unwrap(body, "clusters", CLUSTERS_PATH, None)
            rows, nulls = self._validate_clusters(envelope.rows, skip, invalid)
            return RawPage(rows, envelope.total, envelope.shape, nulls)

        out: list[ClusterRow] = []
        try:
            for page in paginate(
                fetch,
                limit=self.options.page_size,
                key=lambda row: row[0].id,
                stats=stats,
                max_pages=self.options.max_pages,
                on_repeat="stop",
                content=content,
            ):
                out.extend(page)
        except NoProgress as exc:
            # a server that sends everything at once in a new order each time: pages of nothing
            # new; asked in one page, it is listed whole (or the error stands)
            stuck = ApiError(
                f"GET {CLUSTERS_PATH}: paging made no progress: {exc}",
                hint="the server may ignore limit/skip; try a narrower --filter or a larger --page-size",
            )
            try:
                listed = self._regrow_listing(fetch, out, stats)
            except ApiError:
                raise stuck from None
            missing = announced_more(stats, None)
            if missing:
                # asked in one answer, still fewer than the totalCount: the server caps its answers
                # and ignores skip, and the clusters past them cannot be reached (a run stored with
                # the ones that came was complete, and the rest never checked, without a word)
                raise ApiError(
                    f"GET {CLUSTERS_PATH}: the server serves the same clusters whatever skip says, and "
                    f"no more when asked for {stats.regrown:,} at once: {missing}",
                    hint="narrow the listing with --filter, so that it fits in one answer",
                ) from None
            return listed
        reordered = stats.duplicates and stats.fetched < 10 * self.options.page_size
        if (stats.stopped_on_repeat and stats.repeated_full_page) or reordered:
            # the same full page again (skip ignored), or ids listed twice across pages (an order
            # that changes between requests: as many others were skipped), when the list fits in
            # one answer of ten pages: asked in one page
            out = self._regrow_listing(fetch, out, stats)
        return out

    def _regrow_listing(
        self, fetch: Callable[[int, int], RawPage[ClusterRow]], out: list[ClusterRow], stats: PagingStats
    ) -> list[ClusterRow]:
        """The whole cluster list from a server whose pages cannot be trusted to add up.

        One that served a full page again for the next skip either ignores ``limit`` and ``skip``
        (every cluster came at once, and the page was full by chance) or honours ``limit`` and
        ignores ``skip``: the clusters past the first page were then never listed, and the run ended
        complete without them (the tutorial's bare array has no total to tell). One that lists ids
        again on later pages orders them differently each time, and skipped as many others. Asked
        again from the start with ten times the limit, until a page comes back not full, it lists
        them all either way.
        """
        known = {row[0].id for row in out}
        size = self.options.page_size
        grew = False  # a larger limit gave more clusters: the server honours limit
        previous = size  # what the last request gave: the full page served again
        while True:
            if size >= MAX_LISTING_LIMIT:
                raise ApiError(
                    f"GET {CLUSTERS_PATH}: the server serves the same {size:,} clusters whatever skip "
                    "says, so the clusters past them cannot be listed",
                    hint="narrow the listing with --filter, so that it fits in one page",
                )
            asked, size = size, min(size * 10, MAX_LISTING_LIMIT)
            page = fetch(0, size)
            stats.pages += 1
            stats.requests += 1
            stats.regrown = size
            for row in page.rows:
                if row[0].id not in known:
                    known.add(row[0].id)
                    out.append(row)
                    stats.fetched += 1
            got = len(page.rows) + page.nulls
            if got < size:
                if grew and got == previous == asked:
                    # it honoured the limit up to here, then gave no more for ten times as much:
                    # a cap on its answers, with skip ignored; the rest cannot be listed
                    raise ApiError(
                        f"GET {CLUSTERS_PATH}: the server answers at most {got:,} clusters a request and "
                        "ignores skip, so the clusters past them cannot be listed",
                        hint="narrow the listing with --filter, so that it fits in one answer",
                    )
                return out
            grew = grew or got > previous
            previous = got

    # -- columns -------------------------------------------------------------------------------

    def get_columns(
        self,
        cluster_id: str,
        *,
        limit: int | None = None,
        skip: int | None = None,
        filter: str | None = None,
        search_text: str | None = None,
        sort: str | None = None,
        offset_key: str | None = None,
        ignore_limit: bool | None = None,
        sample: int | None = None,
    ) -> ColumnsPage:
        """One request with exactly the given parameters (``auditor columns``)."""
        if not cluster_id.strip():  # sent as ``clusterId=``, a tenant may answer for no cluster, or all
            raise ConfigError(
                "the cluster id is empty", hint="list the valid cluster ids with: auditor clusters"
            )
        for name, value in (("limit", limit), ("skip", skip)):  # (as `auditor columns` takes them)
            if value is not None and value < 0:  # the tenant's 400 read as about the cluster id
                raise ValueError(f"{name} must be at least 0, not {value}")
        params: dict[str, Any] = {}
        for name, value in (
            ("limit", limit),
            ("skip", skip),
            ("filter", filter),
            ("searchText", search_text),
            ("sort", sort),
            ("offsetKey", offset_key),
            ("sample", sample),
        ):
            if value is not None and value != "":
                params[name] = value
        if ignore_limit is not None:
            params["ignoreLimit"] = "true" if ignore_limit else "false"
        body = self._columns_request(cluster_id, params)
        envelope = self._unwrap(body, "columns", COLUMNS_PATH, cluster_id)
        rows, _nulls = self._validate_columns(envelope.rows, cluster_id, skip or 0)
        return ColumnsPage(rows, envelope.total, envelope.shape)

    def iter_columns(self, cluster_id: str, **params: Any) -> Iterator[ColumnRow]:
        """The ``(Column, raw dict)`` rows of one :meth:`get_columns` answer."""
        yield from self.get_columns(cluster_id, **params).rows

    def fetch_all_columns(
        self,
        cluster_id: str,
        *,
        size: int | None = None,
        page_size: int | None = None,
        offload: PageOffload | None = None,
        content: Callable[[Any], Hashable] | None = None,
    ) -> ColumnFetch:
        """Every column of a cluster, page after page; iterate it, then read ``.stats``.

        ``size`` is the cluster's announced size: when it agrees with ``totalCount`` the listing can
        end without a confirming request. With ``offload``, pages are decoded in its pool and the
        rows yielded are its ``transform``'s results instead of ``(Column, raw)``. ``content(row)``
        of a row yielded tells a column served twice from two records sharing a fully qualified
        name (see :func:`auditor.bigid.paging.paginate`); without it, both are repeats.
        """
        page_size = page_size or self.options.page_size
        ceiling = self.page_ceiling
        if ceiling is not None:
            page_size = min(page_size, ceiling)
        return ColumnFetch(self, cluster_id, page_size, size, offload, content)

    def _columns_request(
        self,
        cluster_id: str,
        params: dict[str, Any],
        decode: Callable[[bytes], Any] | None = None,
        *,
        shrinkable: bool = False,
        spent: tuple[int, float] | None = None,
    ) -> Any:
        """One columns request; ``shrinkable``: a page that times out raises :class:`PageTooSlow`
        at once (the caller asks for fewer rows) instead of being retried as it is; ``spent``:
        see :meth:`_send`."""
        name = self.cluster_id_param
        try:
            return self._request(
                COLUMNS_PATH,
                {name: cluster_id, **params},
                cluster_id=cluster_id,
                decode=decode,
                shrinkable=shrinkable,
                spent=spent,
            )
        except ApiError as first:
            if not (
                self.options.cluster_id_fallback
                and name == "clusterId"
                and first.status in (400, 422)
                and type(first) is ApiError
            ):
                raise
            try:
                if not self._honours_cluster_id(cluster_id):
                    raise first
                body = self._request(
                    COLUMNS_PATH,
                    {"cluster_id": cluster_id, **params},
                    cluster_id=cluster_id,
                    decode=decode,
                    shrinkable=shrinkable,
                    spent=spent,
                )
            except ApiError:
                raise first from None
            with self._lock:  # every worker may have met the 400 at once: said once
                first_to_switch = self.cluster_id_param != "cluster_id"
                self.cluster_id_param = "cluster_id"
            if first_to_switch:
                log.warning("the tenant wants the cluster id as 'cluster_id'; using it from now on")
            return body

    def note_first_page(self, cluster_id: str, keys: tuple[Hashable, ...]) -> None:
        """A cluster's first page of columns arrived, holding ``keys`` (fullyQualifiedNames, in
        order): a second cluster served the very same first page means the tenant may ignore the
        cluster id parameter, which is checked then (once per run, :meth:`_check_cluster_param`).

        A tenant that ignores a parameter it does not read (one that wants ``cluster_id``) answers
        with the columns of every cluster: each cluster was stored holding all of them, and check
        blamed every cluster for every column, without a word (a hostile-server probe).
        """
        if not keys or self._cluster_param_checked:
            return
        seen = (hash(keys), len(keys))  # not the keys: thousands of clusters of 1,000-row pages
        with self._lock:
            other = self._first_pages.setdefault(seen, cluster_id)
        if other != cluster_id:
            self._check_cluster_param(other, cluster_id)

    def _check_cluster_param(self, first: str, second: str) -> None:
        """Two clusters got the same first page: ask for a cluster id that cannot exist. Columns for
        it mean the parameter is ignored: :attr:`cluster_param_ignored` records it, and whether the
        tenant reads ``cluster_id`` instead (the snapshot's notes and the report say so). The run
        goes on as the tenant serves it: a test double answering every cluster alike must not fail
        every snapshot. An error, or no columns: the parameter was read."""
        with self._param_check_lock:  # one check for every worker that saw a repeat
            if self._cluster_param_checked:
                return
            self._cluster_param_checked = True
            name = self.cluster_id_param
            nowhere = f"auditor-no-such-cluster-{random.getrandbits(64):016x}"
            try:
                # Asked without retries: an answer about that id (a 404, a 400, a 500 for an id it
                # cannot find) means the parameter was read, and retrying it cost ~7 s of backoff per
                # run. A passing failure (rate limit, gateway, network) says nothing: the check is
                # left to the next two clusters served alike, three times in a run at most.
                body = self._request(
                    COLUMNS_PATH, {name: nowhere, "limit": 1, "skip": 0}, cluster_id=None, retry=False
                )
                rows = self._unwrap(body, "columns", COLUMNS_PATH, None).rows
                served = any(row is not None for row in rows)
            except ApiError as exc:  # never charged to the cluster whose page led here (a probe)
                passing = isinstance(exc, NetworkError) or exc.status in (429, 502, 503, 504)
                self._cluster_param_tries += 1
                if passing and self._cluster_param_tries < CLUSTER_PARAM_TRIES:
                    self._cluster_param_checked = False
                served = False
            if not served:
                return
            other_name = "cluster_id" if name == "clusterId" else None
            try:
                reads_other = other_name is not None and self._honours_cluster_id(second)
            except ApiError:
                reads_other = False
            self.cluster_param_ignored = {
                "param": name,
                "clusters": sorted([first, second]),  # (whichever worker got there first)
                "reads": other_name if reads_other else None,
            }

    def adopt_offset(self) -> None:
        """Send columns offsets as ``offset`` from now on (a listing advanced with it after the
        tenant had ignored ``skip``)."""
        with self._lock:  # several listings may find it at once: said once
            first = self.offset_param != "offset"
            self.offset_param = "offset"
        if first:
            log.warning("the tenant ignores 'skip' and pages by 'offset'; using it from now on")

    def _honours_cluster_id(self, cluster_id: str) -> bool:
        """Whether the tenant filters columns by ``cluster_id``, checked before the spelling is
        adopted. A server that ignores a parameter it does not know answers 200 with the columns of
        every cluster (or none): taken for this cluster's, they were stored under it and the run
        ended complete. So the spelling must give this cluster some columns, and a cluster id that
        cannot exist none (an error for it is fine: the parameter was read)."""
        if self.cluster_id_param == "cluster_id":
            return True  # checked when it was adopted
        own = self._request(
            COLUMNS_PATH, {"cluster_id": cluster_id, "limit": 1, "skip": 0}, cluster_id=cluster_id
        )
        if not self._unwrap(own, "columns", COLUMNS_PATH, cluster_id).rows:
            return False
        nowhere = f"auditor-no-such-cluster-{random.getrandbits(64):016x}"
        try:
            other = self._request(
                COLUMNS_PATH, {"cluster_id": nowhere, "limit": 1, "skip": 0}, cluster_id=cluster_id
            )
        except ApiError:
            return True
        return not self._unwrap(other, "columns", COLUMNS_PATH, cluster_id).rows

    # -- validation ----------------------------------------------------------------------------

    def _unwrap(self, body: Any, kind: str, path: str, cluster_id: str | None) -> Any:
        try:
            envelope = unwrap(body)
        except ErrorUnder200 as exc:  # already handled by the transport; kept for safety
            raise _about_cluster(_error_under_200(path, exc.message), cluster_id) from None
        except UnknownEnvelope as exc:
            raise _unknown_envelope(path, cluster_id, exc.description) from None
        self._record_envelope(kind, envelope.shape)
        return envelope

    def _record_envelope(self, kind: str, shape: str) -> None:
        with self._lock:
            self.envelopes[kind].add(shape)

    @staticmethod
    def _validate_clusters(
        served: list[Any], skip: int, invalid: dict[str, PayloadError] | None = None
    ) -> tuple[list[ClusterRow], int]:
        """A page of cluster records as ``served`` validated, without its nulls (:func:`drop_nulls`),
        and how many there were; see :meth:`list_clusters` for ``invalid``. Errors name a record by
        its place in the page as served."""
        rows, nulls = drop_nulls(served)
        try:
            models = parse_clusters(rows)
        except ValidationError as exc:
            if invalid is None:
                raise _invalid_cluster(exc, rows, skip, served) from None
        else:
            return list(zip(models, rows, strict=True)), nulls
        assert invalid is not None
        out: list[ClusterRow] = []
        for position, raw in enumerate(rows):  # one at a time, to tell the bad records apart
            try:
                (model,) = parse_clusters([raw])
            except ValidationError as exc:
                listed_at = skip + served_at(served, position)
                error = _invalid_cluster(exc, [raw], listed_at, [raw])
                ident = _field(raw, CLUSTER_ID_NAMES)
                if isinstance(ident, bool) or not isinstance(ident, str | int) or not str(ident).strip():
                    # No id to fetch its columns by, nor to record it under: recorded under its place
                    # in the listing (no real id holds a space), failed, and the others fetched. It
                    # stopped every snapshot of the tenant, with no way round it (a probe).
                    ident = missing_id_name(listed_at)
                model = Cluster.model_construct(id=str(ident).strip())
                invalid.setdefault(model.id, error)
            out.append((model, raw))
        return out, nulls

    @staticmethod
    def _validate_columns(served: list[Any], cluster_id: str, skip: int) -> tuple[list[ColumnRow], int]:
        """A page of column records as ``served`` validated, as :meth:`_validate_clusters` does."""
        rows, nulls = drop_nulls(served)
        try:
            models = parse_columns(rows)
        except ValidationError as exc:
            raise _invalid_column(cluster_id, skip, _column_problem(exc, rows, served)) from None
        return list(zip(models, rows, strict=True)), nulls

    # -- auth ----------------------------------------------------------------------------------

    def _exchange(self, user_token: str) -> str:
        """``GET /api/v1/refresh-access-token`` with the raw user token → the session token."""
        status, body = self._send(REFRESH_PATH, {}, user_token)
        if status == 200 and isinstance(body, dict):
            token = _session_token(body)
            if token:
                secrets.register(token, credential=True)
                with self._lock:
                    self._own_secrets.update(_data_forms(token))
                try:
                    check_token(token, f"GET {REFRESH_PATH}")
                except ConfigError:  # never shown: the token is a secret too
                    raise PayloadError(
                        f"GET {REFRESH_PATH} answered a session token that an HTTP header cannot carry "
                        "(a line break, a control character or a character outside ASCII)",
                        hint="the tenant's token exchange is not the documented one; try --auth-scheme raw",
                    ) from None
                return token
            raise PayloadError(
                f"GET {REFRESH_PATH} answered 200 without a systemToken",
                hint="the tenant's token exchange is not the documented one; try --auth-scheme raw",
            )
        if status in (200, 401, 403):
            raise AuthError(
                f"the BigID user token was refused by GET {REFRESH_PATH}: it is invalid or expired, or "
                "its user was not saved after the token was generated",
                hint="generate a new token (Administration → Access Management → user → Tokens), save the "
                "user, and set BIGID_TOKEN",
                status=401,
            )
        raise self._http_error(status, body, REFRESH_PATH, None, None)

    def _header(self) -> tuple[str, int]:
        try:
            return self.auth.header()
        except ApiError as exc:
            # ``auto`` reaches the exchange only as the last resort: a refusal there (or a tenant
            # without the endpoint) means the key itself is wrong -- unless a session from it was
            # accepted before: then the renewal was refused, the key revoked or expired meanwhile.
            if self.auth.requested == "auto" and (isinstance(exc, AuthError) or exc.status == 404):
                renewing = self.auth.first_accepted is not None
                raise self._unauthorized(REFRESH_PATH if renewing else None) from None
            raise

    def _unauthorized(self, path: str | None = None, cluster_id: str | None = None) -> AuthError:
        tried = ", ".join(self.auth.tried) or self.auth.requested
        worked = self.auth.scheme_used or self.auth.first_accepted
        if worked is not None and path is not None:
            # It worked before: a key that expired or was revoked meanwhile, not a wrong one.
            where = f"GET {path}" + (f" for cluster {cluster_id}" if cluster_id else "")
            also = f"; refused here as {tried} alike" if self.auth.scheme_used is None else ""
            # refused for one cluster only, the key still reads the others (a hostile-server probe)
            scoped = ", or it may not read that cluster" if cluster_id else ""
            return AuthError(
                f"the API key was refused (HTTP 401 on {where}) after the tenant had accepted it "
                f"(auth scheme {worked}{also}): it expired or was revoked during the snapshot{scoped}",
                hint="issue a new key (or extend its validity) and run the snapshot again"
                + (
                    f"; a cluster the key may not read is left out with --skip-cluster {cluster_id}"
                    if scoped
                    else ""
                ),
                status=401,
            )
        return AuthError(
            f"the API key is missing or invalid (HTTP 401; auth scheme tried: {tried})",
            hint=KEY_HINT,
            status=401,
        )

    # -- transport -----------------------------------------------------------------------------

    def _request(
        self,
        path: str,
        params: dict[str, Any],
        *,
        cluster_id: str | None = None,
        filter: str | None = None,
        decode: Callable[[bytes], Any] | None = None,
        shrinkable: bool = False,
        retry: bool = True,
        spent: tuple[int, float] | None = None,
    ) -> Any:
        """GET ``path`` with auth handling; the parsed (or decoded) body of a 200, or an error
        (:class:`PageTooSlow` for a ``shrinkable`` page that timed out, see :meth:`_send`).
        ``retry=False``: one attempt; the caller decides what a failure means."""
        auth_retries = 0
        refusal: ApiError | None = None  # the first form's refusal, while ``auto`` tries the others
        asked = {FLAGS[name]: value for name, value in params.items() if name in FLAGS}
        while True:
            try:
                header, generation = self._header()
            except ApiError:
                # the exchange, last resort, failed too (refused, or answered without a session
                # token): say the first refusal, as for every other form
                if refusal is not None:
                    raise refusal from None
                raise
            try:
                status, body = self._send(
                    path, params, header, decode, shrinkable=shrinkable, retry=retry, spent=spent
                )
            except ApiError as exc:
                raise _about_cluster(exc, cluster_id) from None
            if status in (400, 403, 500) and self._refused_form(status, body):
                # Some tenants refuse a header form they do not take with 403, or with a 400 about
                # the header, not 401: before any form was accepted, ``auto`` tries the next one.
                if refusal is None:
                    refusal = _about_cluster(
                        self._http_error(status, body, path, cluster_id, filter, asked), cluster_id
                    )
                if self.auth.unauthorized(generation):
                    log.debug(
                        "HTTP %s on %s before any request was accepted; trying the next credential form",
                        status,
                        path,
                    )
                    continue
            if status == 401:
                # every retry needs a header that changed since (see Authenticator.unauthorized);
                # the cap only guards against a tenant whose sessions die faster than workers use them
                allowed = MAX_AUTH_RETRIES
                auth_retries += 1
                if auth_retries <= allowed and self.auth.unauthorized(
                    generation, path, again=auth_retries > 1
                ):
                    log.debug("HTTP 401 on %s; trying the next credential form", path)
                    continue
                raise refusal or self._unauthorized(path, cluster_id)
            if refusal is not None and status in (400, 403, 500):
                raise refusal  # every form refused alike: the first refusal says most
            self.auth.accepted(generation, path)
            if status == 200:
                return body
            error = self._http_error(status, body, path, cluster_id, filter, asked)
            raise _about_cluster(error, cluster_id)

    def _refused_form(self, status: int, body: Any) -> bool:
        """Whether a 400, 403 or 500 may refuse the header's form, while ``auto`` still looks for
        it: any 403, and a 400 or 500 whose message is about authorisation (not about a parameter;
        a tenant failing on a header it cannot parse: ``500 jwt malformed`` for the Bearer form)."""
        if not self.auth.probing():
            return False
        return status == 403 or _about_credentials(error_message(body))

    def _send(
        self,
        path: str,
        params: dict[str, Any],
        authorization: str,
        decode: Callable[[bytes], Any] | None = None,
        *,
        shrinkable: bool = False,
        retry: bool = True,
        spent: tuple[int, float] | None = None,
    ) -> tuple[int, Any]:
        """One logical request with retries: ``(status, body)`` of the first non-retryable answer.

        ``spent`` (attempts, when the first began): what earlier requests for the same page (asked
        with more rows, see ``shrinkable``) cost: their time counts against ``max_retry_time``, and
        their attempts are counted in the error (each request still has its own ``max_retries``).

        ``shrinkable`` (a page whose size can still be halved): a read timeout or an answer still
        arriving at its deadline raises :class:`PageTooSlow` at once, and so does HTTP 504 the
        second time for the same page (one is retried: gateways also answer so when a backend hiccups), so
        that the page is asked for again with fewer rows rather than retried as it is (a page too
        large for the tenant to serve in time would time out on every attempt).

        A 200 body goes through ``decode`` (default: parse JSON and check for an error under 200),
        which raises :class:`NotJson` or :class:`ErrorUnder200` for what the transport handles.
        A 200 carrying an auth error comes back as ``(401, None)``.
        """
        decode = decode or _decode_json
        url = self.base_url + path
        prior, started = spent if spent is not None else (0, time.monotonic())
        attempt = 0
        gateway_timeouts = 0
        query = urlencode(params)
        while True:
            attempt += 1
            if self._closed and attempt == 1:  # (not "cancelled": nothing was, it was closed before)
                raise NetworkError(
                    f"GET {path}: this BigIDClient was closed",
                    hint="make a new one for more requests (a client used as a context manager is "
                    "closed when its block ends)",
                )
            if self._closing.is_set():
                raise NetworkError(f"GET {path}: cancelled")
            retry_after: float | None = None
            t0 = time.monotonic()
            deadline = t0 + self._answer_timeout
            try:
                # The deadline covers the whole answer, headers included (a server may trickle
                # those a byte at a time too: the read timeout alone would wait for days).
                with self._slots, watching(deadline, self._closing):
                    try:
                        response = self.session.get(
                            url,
                            params=params,
                            headers={"Authorization": authorization},
                            timeout=(self.options.connect_timeout, self.options.read_timeout),
                            verify=self._verify,
                            stream=True,
                            allow_redirects=False,  # see _redirected
                        )
                        # Large reads, not ``response.content``'s 10 KB chunks (each a GIL hand-off
                        # among the worker threads: a third of a snapshot's CPU), bounded in total
                        # time. Reading to the end returns the connection to the pool.
                        content = _read_body(response, deadline, self.options.max_answer_bytes, self._closing)
                    except AnswerLate:
                        raise _AnswerTooSlow() from None
            except _AnswerCancelled:
                self._count(retry=False)  # a request was made, as for every other outcome
                raise NetworkError(f"GET {path}: cancelled") from None
            except _AnswerTooLarge:
                self._count(retry=False)
                raise self._too_large(path) from None
            except requests.exceptions.SSLError as exc:
                raise self._tls_error(path, str(exc)) from None
            except (
                requests.exceptions.ConnectionError,
                requests.exceptions.Timeout,
                requests.exceptions.ChunkedEncodingError,
                *_MALFORMED_ANSWERS,
            ) as exc:
                self._count(retry=False)
                failure = _Failure(self._describe(exc), status=None, network=True)
                log.debug("GET %s?%s -> %s after %.0f ms", path, query, failure.reason, _ms(t0))
                slow = isinstance(exc, requests.exceptions.ReadTimeout)  # _AnswerTooSlow included
                if shrinkable and slow:
                    raise PageTooSlow(failure.reason, prior + attempt) from None
            else:
                self._count(retry=False)
                status = response.status_code
                log.debug("GET %s?%s -> %s in %.0f ms", path, query, status, _ms(t0))
                if status == 200:
                    undecoded = _undecoded(path, response.headers.get("Content-Encoding"), content)
                    if undecoded is not None:  # the same bytes on every attempt: not retried
                        raise undecoded
                    if path != REFRESH_PATH:  # the exchange's body is a session token, by design
                        content = self._redact(path, content)
                    try:
                        body = decode(content)
                    except NotJson as exc:
                        if not exc.gateway:
                            raise _not_json(path, exc.snippet, exc.problem) from None
                        if looks_like_sign_in(content):  # asking again, or later, gives the same page
                            raise AuthError(
                                f"GET {path} answered 200 with an HTML sign-in page, not the API's JSON: "
                                "a single sign-on or proxy login stands in front of the API",
                                hint="point --url / BIGID_URL at an address where the API takes the key "
                                "itself (ask the BigID administrators which), or check the proxy's rules "
                                "for API clients",
                                status=401,
                            ) from None
                        what = "an HTML gateway page" if content.strip() else "an empty answer"
                        failure = _Failure(f"{what} under HTTP 200", status=502, network=False)
                    except ErrorUnder200 as exc:
                        # the wrapper's statusCode says what the error is (403: a missing role,
                        # 404, 400), handled as that status is, not retried as an outage; its
                        # wording decides only without one ("not authorized" is a 403's wording too)
                        if exc.status == 401 or (exc.status is None and exc.auth):
                            return 401, None
                        if exc.status is not None and exc.status not in RETRY_STATUSES:
                            return exc.status, _lenient_body(content)
                        failure = _Failure(
                            f"HTTP 200 with an error body ({secrets.scrub_cut(exc.message)})",
                            status=500,
                            network=False,
                        )
                    else:
                        return 200, body
                elif 300 <= status < 400:
                    raise self._redirected(path, status, response.headers.get("Location"))
                elif (
                    status == 500
                    and self.auth.probing()
                    and _about_credentials(error_message(said := _lenient_body(content)))
                ):
                    return status, said  # about the header's form: see _request
                elif status in RETRY_STATUSES:
                    # the server's own words, when it gave some in JSON: "HTTP 500: jwt malformed"
                    # says what six attempts of "HTTP 500" did not (an outside probe)
                    body = _lenient_body(content)
                    detail = error_message(body) if isinstance(body, dict) else None
                    said = f": {secrets.scrub_cut(detail)}" if detail else ""
                    failure = _Failure(f"HTTP {status}{said}", status=status, network=False)
                    if status == 504:  # the gateway gave up waiting for the page
                        gateway_timeouts += 1
                        if shrinkable and gateway_timeouts >= 2:  # twice: not a passing hiccup
                            raise PageTooSlow(f"{failure.reason}, twice", prior + attempt)
                    if status in (429, 503):
                        retry_after = self._retry_after(response.headers.get("Retry-After"))
                else:
                    return status, _lenient_body(content)
            elapsed = time.monotonic() - started
            if retry_after is not None:
                delay = retry_after
            else:
                ceiling = min(self.options.backoff_cap, self.options.backoff_base * 2 ** (attempt - 1))
                delay = random.uniform(0, ceiling)
            if (
                not retry
                or attempt > self.options.max_retries
                or elapsed + delay > self.options.max_retry_time
            ):
                raise self._exhausted(path, failure, prior + attempt, elapsed)
            self._count(retry=True)
            log.debug("retrying GET %s in %.2f s (%s, attempt %d)", path, delay, failure.reason, attempt)
            if self._closing.wait(delay):
                raise NetworkError(f"GET {path}: cancelled")

    def _redact(self, path: str, content: bytes) -> bytes:
        """``content`` with this client's key and session tokens masked (in every spelling
        :func:`auditor.secrets.redact_bytes` knows).

        Done on the bytes, before anything is decoded (here or in a decoding process), so a server
        reflecting the key in its data cannot get it into a record, the store, a report or an email.
        """
        with self._lock:
            own = tuple(self._own_secrets)
        content, found = secrets.redact_bytes(content, own)
        if found:
            with self._lock:
                first = self._secrets_redacted == 0
                self._secrets_redacted += found
            if first:
                log.warning(
                    "GET %s answered with the API key (or its session token) inside its data; every "
                    "occurrence was replaced by %s before anything was decoded or stored (the server "
                    "reflects the credential it is sent: tell its administrators)",
                    path,
                    secrets.MASK,
                )
        return content

    @property
    def secrets_redacted(self) -> int:
        """How many occurrences of a secret were masked in the data answers so far."""
        with self._lock:
            return self._secrets_redacted

    def _count(self, *, retry: bool) -> None:
        with self._lock:
            if retry:
                self.retries += 1
            else:
                self.requests += 1

    def _retry_after(self, value: str | None) -> float | None:
        """``Retry-After`` in seconds (a number or an HTTP date), capped; None when absent or bad.

        A number is digits, with a decimal fraction tolerated (``0.5``; RFC 9110 has whole seconds):
        ``-5`` was read as no delay at all (retrying at once a server that asked for less), and
        ``1e3`` as 1,000 s (capped at a minute, a wait that used up the request's time budget).
        """
        if not value:
            return None
        value = value.strip()
        if _DELAY_SECONDS.fullmatch(value):
            seconds = float(value)
        else:  # an HTTP date, or nothing we read ("-5", "1e3", "inf" are no dates either)
            try:
                when = email.utils.parsedate_to_datetime(value)
            except (TypeError, ValueError):
                return None
            if when.tzinfo is None:
                when = when.replace(tzinfo=UTC)
            seconds = (when - datetime.now(UTC)).total_seconds()
        return min(max(seconds, 0.0), self.options.retry_after_cap)

    def _describe(self, exc: Exception) -> str:
        """A message for a transport failure, built without the exception's own text."""
        if isinstance(exc, _AnswerTooSlow):
            return f"the answer was still arriving after {self._answer_timeout:g} s (sent too slowly)"
        if isinstance(exc, requests.exceptions.ConnectTimeout):
            return f"timed out connecting (connect timeout {self.options.connect_timeout:g} s)"
        if isinstance(exc, requests.exceptions.ReadTimeout):
            return f"timed out waiting for the answer (read timeout {self.options.read_timeout:g} s)"
        if isinstance(exc, _AnswerUndecodable):
            return f"the answer could not be decoded as its Content-Encoding ({exc}) says"
        if isinstance(exc, _CompressedCut):
            return "the compressed answer stopped before its stream's end (cut short)"
        if isinstance(exc, _ClosedCut):
            return "the connection closed before the answer's JSON ended (cut short)"
        if isinstance(exc, requests.exceptions.ChunkedEncodingError):
            return "the connection broke while reading the answer"
        if isinstance(exc, _MALFORMED_ANSWERS):
            said = secrets.scrub_cut(" ".join(str(exc).split()))
            return f"the answer was malformed ({type(exc).__name__}: {said})"
        text = repr(exc).lower()
        if "got more than" in text and "headers" in text:
            return "the answer had too many headers (more than 100)"
        if "refused" in text:
            return "connection refused"
        if "reset" in text or "aborted" in text or "remotedisconnected" in text:
            return "connection reset"
        if "name or service not known" in text or "nodename nor servname" in text or "resolve" in text:
            if isinstance(exc, requests.exceptions.ProxyError):  # the proxy resolves the tenant's name
                return "cannot resolve the host of the proxy"
            return f"cannot resolve the host of {self.base_url}"
        return "connection failed"

    def _redirected(self, path: str, status: int, location: str | None) -> ApiError:
        """A 3xx answer. Redirects are never followed: BigID's API does not redirect, so one means
        the URL is not the tenant's API (a login page, ``http`` → ``https``, a moved host), and
        following it to another host would store that host's answers as the tenant's."""
        try:
            target = public_url(urljoin(self.base_url + path, location)) if location else "nowhere"
        except ValueError:  # a Location that is not a URL (a bad port, a broken IPv6 literal)
            target = "an address that is not a valid URL"
        return ApiError(
            f"GET {path} was redirected to {secrets.scrub(target)} (HTTP {status}); redirects are "
            "not followed",
            hint="set --url / BIGID_URL to the tenant's address itself (e.g. https://… if it "
            "redirects to https, not a login page or a proxy in front of it)",
            status=status,
        )

    def _tls_error(self, path: str, text: str) -> NetworkError:
        """The TLS failure of a request, said as what to do about it (certificate or no TLS at all)."""
        if spoke_no_tls(text):
            return NetworkError(
                f"GET {path}: {self.base_url} did not answer in TLS (it looks like a plain-HTTP server)",
                hint="check the URL's scheme and port: http:// if the server has no TLS, or its HTTPS port",
            )
        if "CERTIFICATE_VERIFY_FAILED" in text or "certificate verify failed" in text.lower():
            return NetworkError(
                f"GET {path}: the TLS certificate of {self.base_url} could not be verified",
                hint="for a private CA pass --ca-bundle FILE (or, at your own risk, --insecure)",
            )
        reason = re.search(r"\[SSL: ([A-Z_]+)\]", text)
        return NetworkError(
            f"GET {path}: the TLS handshake with {self.base_url} failed"
            + (f" ({reason.group(1)})" if reason else ""),
            hint="check the URL's scheme and port, and that the server's TLS setup accepts modern clients",
        )

    def _too_large(self, path: str) -> ApiError:
        """An answer larger than ``max_answer_bytes`` (decoded): not retried, a page that large is no
        catalog page (or the tenant's pages are larger than this client was told to hold)."""
        mib = self.options.max_answer_bytes / 2**20
        return ApiError(
            f"GET {path}: the answer is larger than {mib:g} MiB (decoded); it was not read further",
            hint=f"lower --page-size (now {self.options.page_size}), or raise --max-answer-mib if the "
            "tenant's pages really are that large",
        )

    def _proxy(self) -> tuple[str, str] | None:
        """The proxy the requests go through (without its credentials) and the environment variable
        that sets it, or None. requests reads HTTP_PROXY / HTTPS_PROXY / ALL_PROXY / NO_PROXY on
        every request: a proxy that refused was blamed on --url, and its user:password never shown."""
        proxies = self.session.merge_environment_settings(self.base_url, {}, None, None, None)["proxies"]
        proxy = requests.utils.select_proxy(self.base_url, proxies)
        if not proxy:
            return None
        key = next((name for name, value in proxies.items() if value == proxy), "")
        variable = f"{(key.partition('://')[0] or urlsplit(self.base_url).scheme).upper()}_PROXY"
        try:
            shown = public_url(requests.utils.prepend_scheme_if_needed(proxy, "http"))
        except ValueError:  # a port that is no number: named by the variable alone
            shown = f"that {variable} names"
        return shown, variable

    def _exhausted(self, path: str, failure: _Failure, attempts: int, elapsed: float) -> ApiError:
        spent = f"{attempts} attempt{'s' if attempts > 1 else ''} in {elapsed:.1f} s"
        if failure.network:
            return NetworkError(
                f"GET {path} failed: {failure.reason} ({spent})",
                hint=_network_hint(failure.reason, self._proxy()),
            )
        return ApiError(
            f"GET {path} failed: {failure.reason} ({spent})",
            hint="the BigID server is overloaded or failing; wait a moment and retry, "
            "and contact BigID support if it persists",
            status=failure.status,
        )

    def _http_error(
        self,
        status: int,
        body: Any,
        path: str,
        cluster_id: str | None,
        filter: str | None,
        asked: dict[str, Any] | None = None,
    ) -> ApiError:
        detail = error_message(body)
        said = f": {secrets.scrub_cut(detail)}" if detail else ""  # cut at 200 characters, maybe mid-key
        where = f"HTTP {status} from GET {path}"
        if status == 400 and detail and "unable to locate" in detail.lower():
            status = 404
        if status == 400:
            if cluster_id is not None and asked:  # the options the user gave may be what is wrong
                shown = ", ".join(f"{flag} {value!r}" for flag, value in asked.items())
                return ApiError(
                    f"the API rejected the request for cluster {cluster_id!r} with {shown} ({where}){said}",
                    hint=f"check {', '.join(asked)} and the cluster id (list the ids with: auditor clusters)",
                    status=400,
                )
            if cluster_id is not None:
                return ApiError(
                    f"the API says cluster id {cluster_id!r} is malformed ({where}){said}",
                    hint="check the cluster id; list the valid ids with: auditor clusters",
                    status=400,
                )
            with_filter = f" with filter {filter!r}" if filter else ""
            return ApiError(
                f"the API rejected the request{with_filter} ({where}){said}",
                hint="check --filter (e.g. size=20)" if filter else None,
                status=400,
            )
        if status == 403:
            return AuthError(
                f"the API key lacks permission for GET {path} (HTTP 403){said}",
                hint="ask a BigID administrator to grant the key's user access to Cluster Analysis and "
                "the Data Catalog",
                status=403,
            )
        if status == 404:
            if cluster_id is not None:
                return NotFoundError(
                    f"cluster {cluster_id!r} was not found ({where}){said}",
                    hint="list the valid cluster ids with: auditor clusters",
                    status=404,
                )
            return NotFoundError(
                f"GET {path} was not found (HTTP 404){said}",
                hint="check that --url / BIGID_URL is the base URL of a BigID tenant (without /api/v1)",
                status=404,
            )
        if status == 422:
            return ApiError(
                f"the API could not process the request ({where}){said}",
                hint="simplify the --filter expression (quote values, avoid double quotes inside them)",
                status=422,
            )
        if status == 407:  # answered by a proxy between us and the tenant, not by BigID
            return ApiError(
                f"a proxy in front of the tenant requires its own authentication ({where}){said}",
                hint="give the proxy's credentials in HTTPS_PROXY (https://user:password@proxy:port), "
                "or set NO_PROXY for the tenant's host if it needs no proxy",
                status=407,
            )
        return ApiError(f"GET {path} failed ({where}){said}", status=status)


class ColumnFetch:
    """Iterating yields each page's new ``(Column, raw)`` rows; :attr:`stats` holds the counts.

    ``skip`` advances by the rows received; the stop rules are :func:`auditor.bigid.paging.paginate`'s.
    Only ``clusterId``, ``limit`` and ``skip`` are sent (never ``ignoreLimit`` or ``sample``).
    """

    def __init__(
        self,
        client: BigIDClient,
        cluster_id: str,
        page_size: int,
        size: int | None,
        offload: PageOffload | None = None,
        content: Callable[[Any], Hashable] | None = None,
    ) -> None:
        self.client = client
        self.cluster_id = cluster_id
        self.page_size = page_size
        self.size = size
        self.offload = offload
        self.content = content
        self.stats = PagingStats()
        self.offset_param = client.offset_param  # this listing's; "offset" once switched
        self.switched = False
        # A tenant that ignores skip (and offset) but offers an ``offset.offsetKey`` continuation
        # with its pages is listed by that key (``keyed``): the cluster failed, "made no progress",
        # the key it offered never used (a probe). ``next_key``: the last page's.
        self.keyed = False
        self.next_key: Any = None
        # (skip, attempts, since): what asking for the page at ``skip`` has cost so far, halvings
        # included, so that they count against the request's retries and its 120 s (a server
        # silent on one cluster held a snapshot ~11 read timeouts for it: a probe)
        self._spent: tuple[int, int, float] | None = None

    def _ignores_skip(self) -> bool:
        """The server served the same page for the next ``skip``: ask with the ``offsetKey`` its
        pages offer, when they offer one, else with ``offset`` instead, once per listing (reference
        §9.21: some catalog endpoints page by ``offset``; §5.1: ``offsetKey`` continues a listing).
        A listing that then advances by ``offset`` makes it the client's for every later cluster."""
        if self._follows_key():
            return True
        if self.keyed or self.switched or self.offset_param != "skip":
            return False
        self.switched = True
        self.offset_param = "offset"
        return True

    def _follows_key(self) -> bool:
        """Whether the listing goes on by the key the last page offered (once per listing)."""
        if self.keyed or self.next_key is None:
            return False
        self.keyed = True
        return True

    def _request(self, skip: int, limit: int, decode: Callable[[bytes], Any] | None = None) -> Any:
        """One page's request; a page that timed out and can still shrink raises PageTooSlow.

        A page can shrink while its attempts so far (its halvings) leave time in the request's
        budget (``max_retry_time``, 120 s); it is then retried as it is within what is left, and
        an error counts every attempt and second the page took."""
        if self._spent is None or self._spent[0] != skip:
            self._spent = (skip, 0, time.monotonic())
        _, attempts, since = self._spent
        # (a gateway's quick 504s halve a page down to the floor; read timeouts spend the time)
        budget_left = time.monotonic() - since < self.client.options.max_retry_time
        try:
            where = {"offsetKey": self.next_key} if self.keyed else {self.offset_param: skip}
            answer = self.client._columns_request(
                self.cluster_id,
                {"limit": limit, **where},
                decode,
                shrinkable=limit > MIN_PAGE_SIZE and budget_left,
                spent=(attempts, since),
            )
            self._spent = None  # answered: a page asked for again at this skip starts afresh
            return answer
        except PageTooSlow as exc:
            self._spent = (skip, exc.attempts, since)
            self.client._count(retry=True)  # the page is asked for again, smaller
            self.client.shrank_page(self.cluster_id, limit, exc.reason)
            raise

    def _fetch(self, skip: int, limit: int) -> RawPage[ColumnRow]:
        client = self.client
        if self.keyed and self.next_key is None:
            return RawPage([])  # listed by key, and the last page offered none: the end
        body = self._request(skip, limit)
        self.next_key = continuation_key(body)
        envelope = client._unwrap(body, "columns", COLUMNS_PATH, self.cluster_id)
        rows, nulls = client._validate_columns(envelope.rows, self.cluster_id, skip)
        return RawPage(rows, envelope.total, envelope.shape, nulls)

    def _fetch_offloaded(self, skip: int, limit: int) -> RawPage[Any]:
        """:meth:`_fetch` with the decoding done by the offload's pool; the same errors, in order."""
        assert self.offload is not None
        client = self.client
        if self.keyed and self.next_key is None:
            return RawPage([])  # listed by key, and the last page offered none: the end
        pending = self._request(skip, limit, self.offload.submit)
        decoded = self.offload.result(pending)
        self.next_key = decoded.next_key
        if decoded.not_json is not None:  # not HTML (screened by submit): not retried, as in _send
            raise _about_cluster(_not_json(COLUMNS_PATH, *decoded.not_json[1:]), self.cluster_id)
        if decoded.error_under_200 is not None:  # screened by submit; kept for safety, as in _unwrap
            raise _about_cluster(_error_under_200(COLUMNS_PATH, decoded.error_under_200[0]), self.cluster_id)
        if decoded.unknown_envelope is not None:
            raise _unknown_envelope(COLUMNS_PATH, self.cluster_id, decoded.unknown_envelope)
        if decoded.invalid is not None:
            raise _invalid_column(self.cluster_id, skip, decoded.invalid)
        client._record_envelope("columns", decoded.shape)
        return RawPage(decoded.rows, decoded.total, decoded.shape, decoded.nulls)

    def __iter__(self) -> Iterator[list[Any]]:
        if self.offload is not None:
            fetch: Callable[[int, int], RawPage[Any]] = self._fetch_offloaded
            key: Callable[[Any], Hashable] = self.offload.key
        else:
            fetch, key = self._fetch, _column_key
        first = True
        try:
            for page in paginate(
                fetch,
                limit=self.page_size,
                key=key,
                stats=self.stats,
                max_pages=self.client.options.max_pages,
                on_repeat="fail",
                expected=self.size,
                ceiling=lambda: self.client.page_ceiling,
                ignores_skip=self._ignores_skip,
                content=self.content,
                follows_key=self._follows_key,
            ):
                if first:  # another cluster's very page: is the cluster id read? (see note_first_page)
                    first = False
                    self.client.note_first_page(self.cluster_id, tuple(key(row) for row in page))
                if self.switched and self.client.offset_param != "offset":
                    self.client.adopt_offset()  # new rows at an offset skip could not reach
                yield page
        except NoProgress as exc:
            both = (
                " (with skip, and with the offsetKey its pages offered)"
                if self.keyed
                else " (with skip, and with offset)"
                if self.switched
                else ""
            )
            raise ApiError(
                f"cluster {self.cluster_id}: GET {COLUMNS_PATH} made no progress{both}: {exc}",
                hint="the server may ignore skip/limit; nothing was stored for this cluster as complete",
            ) from None


def _network_hint(reason: str, proxy: tuple[str, str] | None = None) -> str:
    """What to do about a request that failed on the network, by how it failed (a read timeout's
    advice, a larger --read-timeout, does nothing for a host name that does not resolve); through
    a ``proxy`` (its public URL, its variable), a connection that could not be made was the proxy's."""
    if proxy is not None and (
        reason == "connection refused"
        or reason.startswith(("cannot resolve the host", "timed out connecting"))
    ):
        shown, variable = proxy
        return (
            f"the request went through the proxy {shown} (from {variable}): check that it runs there and "
            f"that {variable} names it, or set NO_PROXY to the tenant's host if it needs no proxy"
        )
    if reason.startswith("cannot resolve the host"):
        return "check the host name in --url / BIGID_URL, and that this machine's DNS can resolve it"
    if reason == "connection refused":
        return "nothing accepts connections there: check the host and port in --url / BIGID_URL"
    if reason.startswith("timed out connecting"):
        return (
            "check the host and port in --url / BIGID_URL, and any firewall or proxy on the way; a slow "
            "network may need a larger --connect-timeout"
        )
    if "timed out" in reason or "too slow" in reason:
        return "check --url / BIGID_URL and the network; a slow tenant may need a larger --read-timeout"
    return "check --url / BIGID_URL and the network"


def _about_cluster(exc: ApiError, cluster_id: str | None) -> ApiError:
    """``exc`` naming the cluster whose request failed (one of many in a snapshot): the one place
    a columns error gets its ``cluster ID:`` prefix, whichever way the request failed.

    Errors about the key itself (401) are the same for every cluster, and a 400 or 404 about the
    cluster id already names it: those are left as they are.
    """
    named = exc.status in (400, 401, 404) or exc.message.startswith(f"cluster {cluster_id}: ")
    if cluster_id is None or named:
        return exc
    return type(exc)(f"cluster {cluster_id}: {exc.message}", hint=exc.hint, status=exc.status)


def _column_key(row: ColumnRow) -> Hashable:
    return row[0].fullyQualifiedName


def _unknown_envelope(path: str, cluster_id: str | None, description: str) -> PayloadError:
    where = f"cluster {cluster_id}: " if cluster_id else ""
    return PayloadError(
        f"{where}GET {path} answered {description}",
        hint="this response shape is not supported yet; re-run with --verbose and report it",
    )


def _column_problem(
    exc: ValidationError, rows: list[Any], served: list[Any]
) -> tuple[int | None, Any, str, str]:
    """(place in the page as ``served``, fullyQualifiedName, field, problem) of the first column
    record of ``rows`` (``served`` without its nulls) that does not fit the model."""
    index, field_path, message = _first_error(exc)
    raw = rows[index] if index is not None and index < len(rows) else None
    at = None if index is None else served_at(served, index)
    return at, _field(raw, _FQN_NAMES), field_path, message


def _invalid_column(cluster_id: str, skip: int, problem: tuple[int | None, Any, str, str]) -> PayloadError:
    """The error for a column record that does not fit the model: cluster, column, field, problem."""
    index, fqn, field_path, message = problem
    label = _record_label("column", None if index is None else skip + index, fqn)
    return PayloadError(
        f"cluster {cluster_id}: {label}: {field_path}: {message}",
        hint="the payload does not fit the Column model; re-run with --verbose and report it",
    )


def record_not_storable(cluster_id: str, exc: RecordNotStorable) -> PayloadError:
    """The error for a column record the store cannot take (as :func:`decode_columns` says it)."""
    return _invalid_column(cluster_id, 0, (None, exc.key, "(record)", str(exc)))


def cluster_not_storable(position: int, exc: RecordNotStorable) -> PayloadError:
    """The error for a cluster record the store cannot take (worded as the cluster checks)."""
    return PayloadError(
        f"GET {CLUSTERS_PATH}: cluster {position} ({exc.key}): (record): {exc}",
        hint="the payload does not fit the Cluster model; re-run with --verbose and report it",
    )


def _not_json(path: str, snippet: str, problem: str = "") -> PayloadError:
    said = f" ({problem})" if problem else ""
    what = f"a body that is not JSON{said}: {secrets.scrub_cut(snippet)!r}" if snippet else "an empty body"
    return PayloadError(
        f"GET {path} answered 200 with {what}",
        hint="check that --url is the base URL of a BigID tenant; if it is, the tenant sent malformed "
        "JSON: re-run with --verbose and report it",
    )


# Content-Encodings urllib3 decodes (brotli and zstd too when their packages are installed)
_DECODABLE = frozenset(urllib3.response.HTTPResponse.CONTENT_DECODERS) | {"identity"}
_GZIP_MAGIC = b"\x1f\x8b"  # no JSON text starts so
# what a JSON text starts with, after a byte order mark and white space (an empty body too)
_JSON_START = re.compile(rb"(?:\xef\xbb\xbf)?[ \t\r\n]*(?:[\[{\"\-0-9tfn]|\Z)")


def _undecoded(path: str, encoding: str | None, content: bytes) -> PayloadError | None:
    """The error for a 200 body still compressed as it reaches the JSON parser, or None.

    An encoding urllib3 cannot decode (``br`` without brotli) passes the compressed bytes through,
    and a body compressed twice (a proxy compressing again) is gzip once decoded: both were "not
    valid UTF-8 at byte 1", with binary in the message and in the run's recorded error.
    """
    if _JSON_START.match(content):  # JSON as it stands (a harmless 'Content-Encoding: none'): read it
        return None
    codings = [part.strip().lower() for part in (encoding or "").split(",") if part.strip()]
    unknown = [coding for coding in codings if coding not in _DECODABLE]
    hint = (
        f"this client asks for {requests.utils.DEFAULT_ACCEPT_ENCODING}; a proxy in front of the tenant may "
        "compress answers itself: check its settings, and if there is none, re-run with --verbose and "
        "report it"
    )  # (built only for a body that is no JSON as it stands: see above)
    if unknown:
        shown = secrets.scrub_cut(", ".join(codings))
        return PayloadError(
            f"GET {path} answered 200 compressed as {shown!r}, which this client cannot decode", hint=hint
        )
    if content.startswith(_GZIP_MAGIC):
        how = (
            f"compressed twice (still gzip once decoded as its Content-Encoding {', '.join(codings)!r} says)"
            if codings
            else "compressed as gzip without a Content-Encoding saying so"
        )
        return PayloadError(f"GET {path} answered 200 {how}", hint=hint)
    return None


def _error_under_200(path: str, message: str) -> ApiError:
    return ApiError(f"GET {path}: the server reported an error: {secrets.scrub_cut(message)}")


def _decode_json(content: bytes) -> Any:
    """The transport's default decoding of a 200 body: JSON, not an error in disguise."""
    body = parse_body(content)
    check_error_under_200(body)
    return body


# Answers the HTTP stack refuses to read (two Content-Length headers that disagree, a body its
# Content-Encoding does not decode, another protocol violation): a failure of that request, retried
# and then recorded against its cluster, like a connection that broke. They were internal errors.
_MALFORMED_ANSWERS: tuple[type[Exception], ...] = (
    requests.exceptions.InvalidHeader,
    requests.exceptions.ContentDecodingError,
    urllib3.exceptions.HTTPError,
)

CLUSTER_ID_NAMES = ("id", "clusterId", "_id", "cluster_id")


def missing_id_name(position: int) -> str:
    """What a listed cluster record without an id is recorded under: its place in the listing."""
    return f"(no id, listed at {position})"


def _invalid_cluster(exc: ValidationError, rows: list[Any], skip: int, served: list[Any]) -> PayloadError:
    """The error for a page of cluster records (at ``skip``; ``rows``: ``served`` without its
    nulls) that does not fit the models."""
    index, field_path, message = _first_error(exc)
    raw = rows[index] if index is not None and index < len(rows) else None
    position = None if index is None else skip + served_at(served, index)
    label = _record_label("cluster", position, _field(raw, CLUSTER_ID_NAMES))
    return PayloadError(
        f"GET {CLUSTERS_PATH}: {label}: {field_path}: {message}",
        hint="the payload does not fit the Cluster model; re-run with --verbose and report it",
    )


def _record_label(kind: str, position: int | None, ident: Any) -> str:
    """``column 17 (a.b.c)``: a record of a page by its position in the listing and its key."""
    label = f"{kind} {position}" if position is not None else f"a {kind}"
    return label if ident is None else f"{label} ({ident})"


def _first_error(exc: ValidationError) -> tuple[int | None, str, str]:
    """(row index, dotted field path, message) of the first problem pydantic found."""
    error = exc.errors(include_url=False)[0]
    loc = list(error.get("loc", ()))
    first = loc[0] if loc else None
    index: int | None = None
    if isinstance(first, int):
        index = first
        loc.pop(0)
    message = str(error.get("msg", "invalid"))
    if len(loc) >= 2 and isinstance(loc[-1], str) and loc[-2] in UNION_ACCEPTS:
        # none of the field's types took the value: pydantic names the first it tried, by its tag
        loc.pop()
        message = f"Input should be {UNION_ACCEPTS[loc[-1]]}"
    path = ".".join(str(part) for part in loc) or "(record)"
    return index, path, message


def _field(raw: Any, names: tuple[str, ...]) -> Any:
    if isinstance(raw, dict):
        for name in names:
            value = raw.get(name)
            if value is not None and not (isinstance(value, str) and not value.strip()):
                return value
    return None


def _session_token(body: dict[str, Any]) -> str | None:
    data = body.get("data")
    for container in (body, data if isinstance(data, dict) else {}):
        for key in ("systemToken", "auth_token", "token", "access_token", "accessToken"):
            value = container.get(key)
            if isinstance(value, str) and value:
                return value
    return None


READ_CHUNK = 1 << 20  # bytes asked for per read of a body
# A key searched in data answers is at least this long. A shorter one (the tutorial's and the
# sandbox's SAMPLE) matches ordinary catalog words: SAMPLE_DATA was stored as ***_DATA and the
# warning blamed the tenant. Real API keys and session tokens (JWTs) are far longer.
DATA_MIN_SECRET_LENGTH = 12


def _data_forms(secret: str) -> frozenset[str]:
    """The spellings of ``secret`` that data answers are searched for (none for a short key)."""
    return secrets.forms(secret) if len(secret) >= DATA_MIN_SECRET_LENGTH else frozenset()


class _AnswerTooSlow(requests.exceptions.ReadTimeout):
    """The body was still arriving at its deadline (bytes trickling in defeat the read timeout)."""


class _AnswerUndecodable(requests.exceptions.ChunkedEncodingError):
    """The body could not be decompressed as its ``Content-Encoding`` says (retried like a cut body)."""


class _AnswerTooLarge(Exception):
    """The body, decoded, is larger than the client holds for one answer."""


def _read_body(
    response: requests.Response, deadline: float, limit: int, cancelled: threading.Event | None = None
) -> bytes:
    """The whole (decoded) body of a streamed response, complete by ``deadline`` (monotonic), and
    no larger than ``limit`` bytes (raises :class:`_AnswerTooLarge`, the connection closed).
    ``cancelled`` set between two pieces stops the read (:class:`_AnswerCancelled`): a server
    trickling an answer must not hold a stopping snapshot until the deadline.

    urllib3 (2.6 and later) decodes a compressed body a piece at a time, so a small gzip body that
    expands to gigabytes is stopped at ``limit`` with no more than a piece beyond it in memory.

    Read in large pieces, each whatever has arrived (up to :data:`READ_CHUNK`): ``response.content``
    would pull a large page in 10 KB chunks, each a GIL hand-off among the worker threads, and one
    ``read()`` of the whole body could not be stopped by a server sending a byte at a time.
    """
    from urllib3 import exceptions as u3

    raw = response.raw
    coding = raw.headers.get("Content-Encoding", "")
    if "," in coding:  # urllib3 decodes 'identity' in a list as deflate: 'gzip, identity' failed (a probe)
        kept = [part.strip() for part in coding.split(",") if part.strip().lower() not in ("", "identity")]
        raw.headers["Content-Encoding"] = ", ".join(kept)
    decode = "Content-Encoding" in response.headers  # urllib3's decoding buffers cost a copy
    declared = response.headers.get("Content-Length", "")
    if not decode and declared.isdigit() and int(declared) > limit:
        response.close()
        raise _AnswerTooLarge()
    pieces: list[bytes] = []
    size = 0
    late = False
    try:
        while piece := raw.read1(READ_CHUNK, decode_content=decode):
            pieces.append(piece)
            size += len(piece)
            if size > limit:
                response.close()
                raise _AnswerTooLarge()
            if time.monotonic() > deadline:
                late = True
                break
            if cancelled is not None and cancelled.is_set():
                response.close()
                raise _AnswerCancelled()
    except u3.ReadTimeoutError as exc:  # the same translation requests applies in ``.content``
        response.close()
        raise requests.exceptions.ReadTimeout(str(exc)) from None
    except (u3.ProtocolError, u3.IncompleteRead) as exc:
        response.close()
        raise requests.exceptions.ChunkedEncodingError(str(exc)) from None
    except u3.DecodeError:
        response.close()
        raise _AnswerUndecodable(response.headers.get("Content-Encoding", "?")) from None  # retried
    except (u3.SSLError, OSError) as exc:
        response.close()
        raise requests.exceptions.ConnectionError(str(exc)) from None
    if late:
        response.close()
        raise _AnswerTooSlow()
    if decode and _compressed_stream_cut(raw):
        # the bytes announced all came, but the gzip or deflate stream inside stops short: decoded,
        # it is the start of the JSON, read as a tenant's malformed JSON and never asked again
        response.close()
        raise _CompressedCut()
    content = pieces[0] if len(pieces) == 1 else b"".join(pieces)
    if not decode and response.status_code == 200 and _close_delimited(response) and ends_early(content):
        # no Content-Length and no chunks: the body ends where the connection does, so one closed
        # early leaves no trace but JSON that stops short, read as the tenant's malformed JSON and
        # never asked again (a probe). ends_early parses only a body that does not close as it opened.
        response.close()
        raise _ClosedCut()
    if "charset" in response.headers.get("Content-Type", "").lower():  # (else requests' default)
        content = _as_utf8(content, requests.utils.get_encoding_from_headers(response.headers))
    if len(content) > limit:  # (Latin-1 outside ASCII takes two bytes in UTF-8)
        response.close()
        raise _AnswerTooLarge()
    response._content = content  # later readers of ``response.content`` see the same bytes
    response._content_consumed = True
    return content


def _as_utf8(content: bytes, charset: str | None) -> bytes:
    """``content`` in UTF-8, when it is not and the ``charset`` its Content-Type declares is another
    (``application/json; charset=ISO-8859-1``: every page failed as "not valid UTF-8", a probe).
    JSON is UTF-8 (RFC 8259), and servers often declare a charset they do not use: a body that is
    valid UTF-8 is kept as it is whatever the header says."""
    if charset is None or content.startswith(_GZIP_MAGIC):
        return content  # (a body still compressed is said so by _undecoded, not recoded)
    try:
        if codecs.lookup(charset).name in ("utf-8", "utf-8-sig", "ascii"):
            return content
        content.decode("utf-8")
    except LookupError:  # a charset Python does not know: read as UTF-8, as JSON is
        return content
    except UnicodeDecodeError:
        try:
            return content.decode(charset).encode("utf-8")
        except (UnicodeDecodeError, LookupError):
            return content  # neither: said as not valid UTF-8, where it is not
    return content


class _CompressedCut(requests.exceptions.ChunkedEncodingError):
    """A gzip or deflate answer whose stream stopped short: retried as a body cut in transit."""


class _ClosedCut(requests.exceptions.ChunkedEncodingError):
    """An answer delimited by the connection's end whose JSON stops short: retried as a cut body."""


def _close_delimited(response: requests.Response) -> bool:
    """Whether the body of ``response`` ends where its connection does (no length, no chunks)."""
    headers = response.headers
    return "Content-Length" not in headers and "chunked" not in headers.get("Transfer-Encoding", "").lower()


def _compressed_stream_cut(raw: Any) -> bool:
    """Whether urllib3's gzip or deflate decoder of ``raw`` stopped before its stream's end (read
    from the zlib object urllib3 keeps; a decoder without one, brotli or zstd, is not judged)."""
    decoder = getattr(raw, "_decoder", None)
    for one in getattr(decoder, "_decoders", None) or [decoder]:
        eof = getattr(getattr(one, "_obj", None), "eof", None)
        if eof is False:
            return True
    return False


def _lenient_body(content: bytes) -> Any:
    """The body of an error answer: JSON, else its first words (nothing for an HTML page)."""
    try:
        return parse_body(content)
    except NotJson as exc:
        return None if exc.gateway else exc.snippet


def _no_auth(request: requests.PreparedRequest) -> requests.PreparedRequest:
    return request


def _ms(t0: float) -> float:
    return (time.monotonic() - t0) * 1000


def _about_credentials(message: str | None) -> bool:
    """Whether a server's error message is about the credentials (``jwt malformed`` too)."""
    return is_auth_message(message) or "jwt" in (message or "").lower()


def _in_clear(url: str) -> bool:
    """Whether ``url`` sends the key unencrypted over a network: ``http://`` to a host other than
    this machine (the sandbox on loopback is fine)."""
    parts = urlsplit(url)
    if parts.scheme != "http":
        return False
    host = (parts.hostname or "").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return False
    try:
        return not ipaddress.ip_address(host).is_loopback
    except ValueError:
        return True


def _user_agent() -> str:
    from auditor import __version__

    return f"cluster-auditor/{__version__}"
