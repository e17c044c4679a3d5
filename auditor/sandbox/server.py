"""The sandbox's HTTP side: routes, envelopes, error bodies, fault injection, and the server itself.

:class:`SandboxApp` turns one request (method, path, query, ``Authorization`` header) into one
response; it holds no per-request state besides thread-safe counters, and is what the tests of the
error bodies exercise through real HTTP. :class:`SandboxServer` runs it on a stdlib
``ThreadingHTTPServer`` (daemon threads, HTTP/1.1 keep-alive, Nagle off, each response written in one
call) on an ephemeral loopback port, in a background thread or in the foreground for the CLI.

Faults are decided per *request key* (path and query) and attempt number from a seeded hash, so a
test sees the same faults every run whatever the thread interleaving, and a request that failed
``max_fault_streak`` times in a row is then served: a retrying client always gets through.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import itertools
import random
import re
import socket
import sys
import threading
import time
import zlib
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, NamedTuple
from urllib.parse import parse_qs, urlsplit

import orjson

from auditor import secrets
from auditor.errors import ConfigError
from auditor.sandbox.auth import Authenticator, Verdict
from auditor.sandbox.config import SandboxConfig
from auditor.sandbox.data import K_SAMPLE, Dataset, mix, unit
from auditor.sandbox.filters import (
    CLUSTER_FIELDS,
    COLUMN_FIELDS,
    FilterError,
    column_dynamic_field,
    compile_filter,
)

log = secrets.scrubbed_logger("auditor.sandbox")

CLUSTERS_PATH = "/api/v1/clusters"
SIMILAR_PATH = "/api/v1/data-catalog/column/cluster/similar"
REFRESH_PATH = "/api/v1/refresh-access-token"
DEFAULT_COLUMN_LIMIT = 10_000
MAX_QUERY_INT = 2**31 - 1  # the largest skip or limit answered (a larger one is a 400, not a 500)
CLUSTER_ID = re.compile(r"^[0-9a-fA-F]{24}$")

JSON = "application/json; charset=utf-8"
GATEWAY_PAGE = (
    b"<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n"
    b"<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n"
)
GATEWAY_TIMEOUT_PAGE = GATEWAY_PAGE.replace(b"502 Bad Gateway", b"504 Gateway Time-out")
SERVER_ERROR = {"status": "error", "message": "Server error", "errors": [{}]}

# Salts for the fault decisions.
F_THROTTLE, F_FAIL, F_GATEWAY, F_STATUS, F_TOTALS, F_REPEAT, F_BLANK = range(101, 108)


class Response(NamedTuple):
    status: int
    body: bytes
    content_type: str = JSON
    headers: tuple[tuple[str, str], ...] = ()


def _json(status: int, payload: Any, headers: tuple[tuple[str, str], ...] = ()) -> Response:
    return Response(status, orjson.dumps(payload), JSON, headers)


class BadRequest(Exception):
    """A 400 with ``{"error": message}``."""


class ServerStats:
    """Thread-safe counters of what the server did (tests assert on them)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.requests: Counter[tuple[str, int]] = Counter()  # (path, status) -> count
        self.faults: Counter[str] = Counter()  # throttle, fail, gateway
        self.rows: Counter[str] = Counter()  # path -> rows served
        self.bytes_sent = 0
        self.sessions_issued = 0

    def record(self, path: str, status: int, rows: int = 0, size: int = 0, fault: str | None = None) -> None:
        with self._lock:
            self.requests[(path, status)] += 1
            if rows:
                self.rows[path] += rows
            self.bytes_sent += size
            if fault:
                self.faults[fault] += 1

    def session_issued(self) -> None:
        with self._lock:
            self.sessions_issued += 1

    def count(self, path: str | None = None, status: int | None = None) -> int:
        """Requests answered, optionally only for one path and/or one status."""
        with self._lock:
            return sum(
                n
                for (p, s), n in self.requests.items()
                if (path is None or p == path) and (status is None or s == status)
            )

    @property
    def total(self) -> int:
        return self.count()

    def by_status(self) -> dict[int, int]:
        with self._lock:
            out: Counter[int] = Counter()
            for (_path, status), n in self.requests.items():
                out[status] += n
            return dict(out)

    def as_dict(self) -> dict[str, Any]:
        with self._lock:
            return {
                "requests": {f"{p} {s}": n for (p, s), n in sorted(self.requests.items())},
                "faults": dict(self.faults),
                "rows": dict(self.rows),
                "bytes_sent": self.bytes_sent,
                "sessions_issued": self.sessions_issued,
            }

    def reset(self) -> None:
        with self._lock:
            self.requests.clear()
            self.faults.clear()
            self.rows.clear()
            self.bytes_sent = 0
            self.sessions_issued = 0


class SandboxApp:
    """Answers requests for one configuration; safe to call from many threads."""

    def __init__(self, config: SandboxConfig, dataset: Dataset | None = None) -> None:
        self.config = config
        self.dataset = dataset or Dataset(config)
        self.auth = Authenticator(config)
        self.stats = ServerStats()
        self._attempts: dict[int, int] = {}
        self._streaks: dict[int, int] = {}
        self._lock = threading.Lock()

    # -- entry point -----------------------------------------------------------------------------

    def handle(self, method: str, target: str, authorization: str | None) -> Response:
        """The response to one request (``target`` is the path with its query string)."""
        split = urlsplit(target)
        path = split.path.rstrip("/") or "/"
        try:
            if self.config.latency:
                time.sleep(self.config.latency)
            response, rows, fault = self._route(method, path, split.query, authorization)
        except Exception:  # a sandbox bug must still answer like a server, not hang
            log.exception("sandbox: internal error answering %s %s", method, path)
            response, rows, fault = _json(500, SERVER_ERROR), 0, None
        self.stats.record(path, response.status, rows, len(response.body), fault)
        return response

    def _route(
        self, method: str, path: str, query_string: str, authorization: str | None
    ) -> tuple[Response, int, str | None]:
        """(response, rows served, fault injected) for one request."""
        if method != "GET" or path not in (CLUSTERS_PATH, SIMILAR_PATH, REFRESH_PATH):
            return _json(404, {"error": f"Cannot {method} {path}"}), 0, None
        if path == REFRESH_PATH:
            return self._refresh(authorization), 0, None
        verdict = self.auth.check(authorization)
        if verdict is Verdict.UNAUTHORIZED:
            if self.config.soft_auth_errors:
                return _json(200, {"success": False, "message": "Failed to authenticate token."}), 0, None
            return Response(401, b"Unauthorized", "text/plain; charset=utf-8"), 0, None
        if verdict is Verdict.FORBIDDEN:
            body = {"error": "Forbidden: this token lacks permission for cluster analysis"}
            return _json(403, body), 0, None
        injected = self._fault(path, query_string)
        if injected is not None:
            fault, response = injected
            return response, 0, fault
        query = {k: v[0] for k, v in parse_qs(query_string, keep_blank_values=True).items()}
        if path == SIMILAR_PATH and self._too_slow(query):
            return Response(504, GATEWAY_TIMEOUT_PAGE, "text/html"), 0, "slow_page"
        try:
            response, rows = self._clusters(query) if path == CLUSTERS_PATH else self._similar(query)
        except BadRequest as exc:
            response, rows = _json(400, {"error": str(exc)}), 0
        self._succeeded(path, query_string)
        return response, rows, None

    # -- token exchange --------------------------------------------------------------------------

    def _refresh(self, authorization: str | None) -> Response:
        token = self.auth.exchange(authorization)
        if token is None:
            if self.config.soft_auth_errors:
                return _json(200, {"success": False, "message": "Refresh token not valid"})
            return _json(401, {"message": "Refresh token not valid"})
        self.stats.session_issued()
        return _json(200, {"success": True, "systemToken": token})

    # -- faults ----------------------------------------------------------------------------------

    def _key(self, path: str, query: str) -> int:
        return zlib.crc32(f"{path}?{query}".encode())

    def _fault(self, path: str, query: str) -> tuple[str, Response] | None:
        config = self.config
        if not (config.throttle or config.fail_rate or config.gateway_rate or config.blank_rate):
            return None
        key = self._key(path, query)
        with self._lock:
            attempt = self._attempts.get(key, 0)
            self._attempts[key] = attempt + 1
            streak = self._streaks.get(key, 0)
            if streak >= config.max_fault_streak:
                return None
            decision = self._decide(key, attempt)
            if decision is not None:
                self._streaks[key] = streak + 1
        return decision

    def _decide(self, key: int, attempt: int) -> tuple[str, Response] | None:
        config, seed = self.config, self.config.seed
        if config.throttle and unit(mix(seed, F_THROTTLE, key, attempt)) < config.throttle:
            payload = {"error": "Too many requests", "retryAfter": config.retry_after}
            return "throttle", _json(429, payload, (("Retry-After", str(config.retry_after)),))
        if config.fail_rate and unit(mix(seed, F_FAIL, key, attempt)) < config.fail_rate:
            statuses = config.fail_statuses
            status = statuses[mix(seed, F_STATUS, key, attempt) % len(statuses)]
            if status == 500:
                return "fail", _json(500, SERVER_ERROR)
            if status == 503:
                return "fail", _json(
                    503, {"status": "error", "message": "Service unavailable", "errors": [{}]}
                )
            page = GATEWAY_PAGE if status == 502 else GATEWAY_TIMEOUT_PAGE
            return "fail", Response(status, page, "text/html")
        if config.gateway_rate and unit(mix(seed, F_GATEWAY, key, attempt)) < config.gateway_rate:
            return "gateway", Response(200, GATEWAY_PAGE, "text/html")
        if config.blank_rate and unit(mix(seed, F_BLANK, key, attempt)) < config.blank_rate:
            return "blank", Response(200, b"", "application/json")  # a proxy that lost its upstream
        return None

    def _succeeded(self, path: str, query: str) -> None:
        """A request served: forget its history, so memory holds only requests being retried."""
        if self._attempts:
            key = self._key(path, query)
            with self._lock:
                self._streaks.pop(key, None)
                self._attempts.pop(key, None)

    # -- parameters ------------------------------------------------------------------------------

    @staticmethod
    def _int(query: dict[str, str], name: str, default: int | None, minimum: int = 0) -> int | None:
        raw = query.get(name)
        if raw is None or raw.strip() == "":
            return default
        try:
            value = int(raw.strip())
        except ValueError:
            raise BadRequest(f"{name} must be an integer, not {raw!r}") from None
        if value < minimum:
            raise BadRequest(f"{name} must be at least {minimum}, not {value}")
        if value > MAX_QUERY_INT:  # islice and the data set's arithmetic stop at sys.maxsize
            raise BadRequest(f"{name} must be at most {MAX_QUERY_INT}, not {value}")
        return value

    @staticmethod
    def _bool(query: dict[str, str], name: str) -> bool:
        raw = query.get(name, "").strip().lower()
        if raw in ("", "false", "0", "no"):
            return False
        if raw in ("true", "1", "yes"):
            return True
        raise BadRequest(f"{name} must be true or false, not {raw!r}")

    def _page_size(self, limit: int | None, capped: bool) -> int | None:
        if capped and self.config.max_page is not None:
            return self.config.max_page if limit is None else min(limit, self.config.max_page)
        return limit

    def _count(self, value: int) -> int | str:
        return str(value) if self.config.string_counts else value

    # -- GET /api/v1/clusters --------------------------------------------------------------------

    def _clusters(self, query: dict[str, str]) -> tuple[Response, int]:
        try:
            predicate = compile_filter(query.get("filter"), CLUSTER_FIELDS)
        except FilterError as exc:
            raise BadRequest(f"Filter is invalid: {exc}") from None
        skip = self._int(query, "skip", 0) or 0
        limit = self._int(query, "limit", None)
        envelope = self.config.envelope
        size = self._page_size(limit, capped=envelope in ("results", "status"))
        page: list[dict[str, Any]] = []
        dataset = self.dataset
        if (query.get("filter") or "").strip():
            total = 0
            for record in dataset.clusters():
                if predicate(record):
                    if total >= skip and (size is None or len(page) < size):
                        page.append(record)
                    total += 1
        else:  # only the page's records are generated
            total = dataset.cluster_count()
            stop = None if size is None else skip + size
            page = [
                dataset.cluster_record(slot) for slot in itertools.islice(dataset.cluster_slots(), skip, stop)
            ]
        if envelope == "tutorial":
            payload: Any = page
        elif envelope == "results":
            payload = {"results": page, "totalCount": self._count(total)}
        elif envelope == "data":
            payload = {"data": {"clusters": page}}
        else:
            payload = {
                "status": "success",
                "statusCode": 200,
                "data": {"clusters": page, "totalCount": self._count(total)},
                "message": None,
            }
        return Response(200, orjson.dumps(payload), self.config.content_type), len(page)

    # -- GET /api/v1/data-catalog/column/cluster/similar -----------------------------------------

    def _too_slow(self, query: dict[str, str]) -> bool:
        """``slow_pages_above``: a page of more rows than that (or of every row) would take longer
        to build than the gateway in front waits, so the gateway answers 504 every time."""
        above = self.config.slow_pages_above
        if above is None:
            return False
        if self._bool(query, "ignoreLimit"):
            return True
        try:
            limit = self._int(query, "limit", DEFAULT_COLUMN_LIMIT)
        except BadRequest:
            return False  # answered as a bad request below
        return limit is None or limit > above

    def _similar(self, query: dict[str, str]) -> tuple[Response, int]:
        cluster_id = query.get("clusterId")
        if cluster_id is None and self.config.aliases:
            cluster_id = query.get("cluster_id")
        if not cluster_id or not CLUSTER_ID.match(cluster_id):
            raise BadRequest("Cluster ID is invalid")
        slot = self.dataset.slot_of(cluster_id.lower())
        if slot is None:
            return _json(404, {"error": f"Cluster {cluster_id} was not found"}), 0
        limit = self._int(query, "limit", DEFAULT_COLUMN_LIMIT)
        skip = self._int(query, "skip", 0) or 0
        if self._bool(query, "ignoreLimit"):
            limit = None
        sample = self._int(query, "sample", None, minimum=1)
        start = 0
        with_offset = "offsetKey" in query
        if with_offset and query["offsetKey"]:
            start = _decode_offset(query["offsetKey"])
        try:
            predicate = compile_filter(query.get("filter"), COLUMN_FIELDS, column_dynamic_field)
        except FilterError as exc:
            raise BadRequest(f"Filter is invalid: {exc}") from None
        search = (query.get("searchText") or "").strip().lower()
        sort = (query.get("sort") or "").strip()
        filtered = bool((query.get("filter") or "").strip() or search)
        envelope = self.config.envelope
        size = self._page_size(limit, capped=envelope != "data")
        dataset = self.dataset
        cluster_size = dataset.cluster_size(slot)

        def matches(record: dict[str, Any]) -> bool:
            return predicate(record) and (not search or _search_hit(record, search))

        rows: list[dict[str, Any]]
        if sample is not None:
            positions = (
                [p for p, r in enumerate(dataset.columns(slot)) if matches(r)]
                if filtered
                else range(cluster_size)
            )
            rng = random.Random(mix(self.config.seed, K_SAMPLE, slot, sample, self.config.epoch))
            chosen = sorted(rng.sample(positions, min(sample, len(positions))))
            rows = [dataset.column_at(slot, p) for p in chosen]
            total = len(rows)
            first = 0
        elif sort and sort != "_id":
            rows, total = self._sorted(slot, sort, matches, skip + start, size)
            first = skip + start
        elif filtered:
            first = skip + start
            rows, total = [], 0
            for record in dataset.columns(slot):
                if matches(record):
                    if total >= first and (size is None or len(rows) < size):
                        rows.append(record)
                    total += 1
        else:
            total = cluster_size
            first = skip + start
            rows = self._stream_page(slot, total, first, size)
        reported = self._reported_total(slot, total)
        extra: dict[str, Any] = {}
        if with_offset:
            extra["offset"] = {"offsetKey": _encode_offset(first + len(rows))}
        if envelope in ("tutorial", "results"):
            payload: Any = {"results": rows, "totalCount": reported, **extra}
        elif envelope == "data":
            payload = {"data": rows}
        else:
            payload = {
                "status": "success",
                "statusCode": 200,
                "data": {"results": rows, "totalCount": reported, **extra},
                "message": None,
            }
        return Response(200, orjson.dumps(payload), self.config.content_type), len(rows)

    def _stream_page(self, slot: int, total: int, first: int, size: int | None) -> list[dict[str, Any]]:
        """Rows at served positions ``first..`` (with repeats when ``repeat_rate`` is set)."""
        dataset = self.dataset
        if not self.config.repeat_rate:
            stop = total if size is None else min(total, first + size)
            return list(dataset.columns(slot, first, stop))
        # The served sequence repeats the previous row at every position p >= 1 with
        # (p + offset) % period == 0; position p holds true row p - repeats(p).
        period = max(2, round(1 / self.config.repeat_rate))
        offset = mix(self.config.seed, F_REPEAT, slot) % period

        def true_index(p: int) -> int:
            return p - (p + offset) // period

        indices: list[int] = []
        p = first
        while size is None or len(indices) < size:
            t = true_index(p)
            if t >= total:
                break
            indices.append(t)
            p += 1
        if not indices:
            return []
        block = list(dataset.columns(slot, indices[0], indices[-1] + 1))
        return [block[t - indices[0]] for t in indices]

    def _sorted(
        self, slot: int, sort: str, matches: Any, first: int, size: int | None
    ) -> tuple[list[dict[str, Any]], int]:
        descending = sort.startswith("-")
        name = sort.lstrip("-+").strip()
        if name.lower().endswith((":desc", " desc")):
            descending, name = True, name[:-5]
        getter = COLUMN_FIELDS.get(name.lower())
        if getter is None:
            raise BadRequest(f"sort field {name!r} is not supported")
        if self.dataset.cluster_size(slot) > self.config.sort_limit:
            raise BadRequest(f"sort is limited to clusters of at most {self.config.sort_limit} columns")
        keyed = [
            (_sort_key(getter(record)), position)
            for position, record in enumerate(self.dataset.columns(slot))
            if matches(record)
        ]
        keyed.sort(reverse=descending)
        chosen = keyed[first:] if size is None else keyed[first : first + size]
        return [self.dataset.column_at(slot, p) for _k, p in chosen], len(keyed)

    def _reported_total(self, slot: int, total: int) -> int | str:
        config = self.config
        if config.wrong_totals and unit(mix(config.seed, F_TOTALS, slot)) < config.wrong_totals:
            delta = 1 + total // 10
            direction = config.totals_direction
            if direction == "both":
                direction = "over" if mix(config.seed, F_TOTALS, slot, 1) % 2 else "under"
            total = total + delta if direction == "over" else max(0, total - delta)
        return self._count(total)


def _sort_key(value: Any) -> tuple[int, Any]:
    if value is None:
        return (0, "")
    if isinstance(value, bool):
        return (1, int(value))
    if isinstance(value, int | float):
        return (1, value)
    if isinstance(value, list):
        return (2, ",".join(map(str, value)).lower())
    return (2, str(value).lower())


def _search_hit(record: dict[str, Any], needle: str) -> bool:
    for key in ("columnName", "tableName", "objectName", "fullyQualifiedName", "businessAttribute"):
        value = record.get(key)
        if isinstance(value, str) and needle in value.lower():
            return True
    for attribute in record.get("attributes", record.get("attributeDetails")) or []:
        name = attribute.get("attribute_name") if isinstance(attribute, dict) else None
        if isinstance(name, str) and needle in name.lower():
            return True
    return False


def _encode_offset(position: int) -> str:
    return base64.urlsafe_b64encode(f"pos:{position}".encode()).decode().rstrip("=")


def _decode_offset(key: str) -> int:
    try:
        text = base64.urlsafe_b64decode(key + "=" * (-len(key) % 4)).decode()
        prefix, _, number = text.partition(":")
        if prefix != "pos" or not number.isdigit():
            raise ValueError(text)
        return int(number)
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise BadRequest("offsetKey is invalid") from None


# -- the HTTP server ------------------------------------------------------------------------------


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    server_version = "bigid-sandbox"
    sys_version = ""
    timeout = 30  # idle keep-alive connections are closed after this many seconds
    server: _HTTPServer

    def setup(self) -> None:
        super().setup()
        self.server.track(self.connection, add=True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.track(self.connection, add=False)

    def _serve(self, method: str) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        response = self.server.app.handle(method, self.path, self.headers.get("Authorization"))
        self._write(response)

    def _write(self, response: Response) -> None:
        reason = self.responses.get(response.status, ("",))[0]
        lines = [
            f"HTTP/1.1 {response.status} {reason}",
            f"Content-Type: {response.content_type}",
            f"Content-Length: {len(response.body)}",
            f"Date: {self.date_time_string()}",
            "Connection: keep-alive" if not self.close_connection else "Connection: close",
        ]
        lines.extend(f"{name}: {value}" for name, value in response.headers)
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        self.wfile.write(head + response.body)  # one write: no Nagle stall, no split packets

    def do_GET(self) -> None:
        self._serve("GET")

    def do_POST(self) -> None:
        self._serve("POST")

    def do_PUT(self) -> None:
        self._serve("PUT")

    def do_DELETE(self) -> None:
        self._serve("DELETE")

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the server's stats say what happened; request lines may carry filters."""


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    block_on_close = False
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], app: SandboxApp) -> None:
        self.app = app
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, _Handler)

    def track(self, connection: socket.socket, *, add: bool) -> None:
        with self._connections_lock:
            if add:
                self._connections.add(connection)
            else:
                self._connections.discard(connection)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that hung up is no error worth a traceback; anything else is logged."""
        exc = sys.exc_info()[1]
        if isinstance(exc, ConnectionError | TimeoutError):
            return
        log.error("sandbox: error serving %s", client_address, exc_info=exc)

    def close_connections(self) -> None:
        with self._connections_lock:
            connections = list(self._connections)
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)


class SandboxServer:
    """A BigID-compatible API on ``host:port`` (port 0 picks a free one); a context manager.

    ``server.url`` is the base URL to give a client, ``server.key`` the API key it must present,
    ``server.stats`` the request counters and ``server.dataset`` the ground truth it serves.
    """

    def __init__(
        self, config: SandboxConfig | None = None, *, host: str = "127.0.0.1", port: int = 0, **knobs: Any
    ) -> None:
        if config is None:
            config = SandboxConfig(**knobs)
        elif knobs:
            config = config.with_changes(**knobs)
        self.config = config
        self.host = host
        self.requested_port = port
        self.app = SandboxApp(config)
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- properties ------------------------------------------------------------------------------

    @property
    def dataset(self) -> Dataset:
        return self.app.dataset

    @property
    def stats(self) -> ServerStats:
        return self.app.stats

    @property
    def key(self) -> str:
        return self.config.key

    token = key

    @property
    def port(self) -> int:
        if self._httpd is None:
            raise RuntimeError("the sandbox is not started")
        return int(self._httpd.server_address[1])

    @property
    def url(self) -> str:
        host = self.host if ":" not in self.host else f"[{self.host}]"
        return f"http://{host}:{self.port}"

    # -- life cycle ------------------------------------------------------------------------------

    def bind(self) -> SandboxServer:
        if self._httpd is None:
            try:
                self._httpd = _HTTPServer((self.host, self.requested_port), self.app)
            except OSError as exc:
                raise ConfigError(
                    f"sandbox: cannot listen on {self.host}:{self.requested_port}: {exc.strerror or exc}",
                    hint="choose another --port (0 picks a free one) or --host",
                ) from None
        return self

    def start(self) -> SandboxServer:
        """Serve in a background daemon thread (idempotent)."""
        self.bind()
        if self._thread is None:
            assert self._httpd is not None
            self._thread = threading.Thread(
                target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True, name="sandbox"
            )
            self._thread.start()
        return self

    def serve_forever(self) -> None:
        """Serve in the calling thread until :meth:`stop` or KeyboardInterrupt."""
        self.bind()
        assert self._httpd is not None
        try:
            self._httpd.serve_forever(poll_interval=0.2)
        finally:
            self._close()

    def stop(self) -> None:
        if self._httpd is None:
            return
        if self._thread is not None:
            self._httpd.shutdown()
            self._thread.join(timeout=5)
            self._thread = None
        self._close()

    def _close(self) -> None:
        if self._httpd is not None:
            self._httpd.close_connections()
            self._httpd.server_close()
            self._httpd = None

    def __enter__(self) -> SandboxServer:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        where = self.url if self._httpd else "not started"
        config = self.config
        return f"<SandboxServer {where} auth={config.auth} seed={config.seed} epoch={config.epoch}>"
