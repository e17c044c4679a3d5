"""Fixtures for the client tests: a programmable HTTP server on loopback, and client factories.

``loopback`` is a real ``ThreadingHTTPServer`` on 127.0.0.1; each test installs a handler function
``(Request) -> Reply`` and reads back the requests it saw. Tests of tenant-like behaviour as a whole
use the project's sandbox (``tests/conftest.py``'s ``sandbox`` factory) instead.
"""

from __future__ import annotations

import json
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from auditor import secrets
from auditor.bigid.client import BigIDClient, ClientOptions


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, str]
    authorization: str | None


@dataclass
class Reply:
    status: int = 200
    body: Any = None  # bytes are sent as is, anything else as JSON
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    drop: bool = False  # close the connection without answering (a reset)
    trickle: float = 0.0  # send the body one byte at a time, this many seconds apart
    trickle_headers: float = 0.0  # the same for the status line and headers
    close_delimited: bool = False  # no Content-Length, no chunks: the body ends where the connection does


Handler = Callable[[Request], Reply]


class Loopback:
    """The running server: ``url``, the ``handler`` to answer with, and the ``seen`` requests."""

    def __init__(self, tls: ssl.SSLContext | None = None) -> None:
        self.handler: Handler = lambda request: Reply(404, {"error": "no handler"})
        self.seen: list[Request] = []
        self.lock = threading.Lock()
        owner = self

        class _RequestHandler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True

            def do_GET(self) -> None:
                parts = urlsplit(self.path)
                query = {k: v[0] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
                request = Request("GET", parts.path, query, self.headers.get("Authorization"))
                with owner.lock:
                    owner.seen.append(request)
                reply = owner.handler(request)
                if reply.delay:
                    time.sleep(reply.delay)
                if reply.drop:
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                body = reply.body if isinstance(reply.body, bytes) else json.dumps(reply.body).encode()
                if reply.trickle_headers:
                    pad = "x" * 200  # ten seconds of headers at 50 ms a byte
                    head = (
                        f"HTTP/1.1 {reply.status} OK\r\nX-Pad: {pad}\r\nContent-Length: {len(body)}\r\n\r\n"
                    )
                    head = head.encode()
                    for i in range(len(head)):
                        self.wfile.write(head[i : i + 1])
                        self.wfile.flush()
                        time.sleep(reply.trickle_headers)
                    self.wfile.write(body)
                    return
                self.send_response(reply.status)
                headers = {"Content-Type": "application/json", **reply.headers}
                for name, value in headers.items():
                    self.send_header(name, value)
                if reply.close_delimited:
                    self.send_header("Connection", "close")
                    self.close_connection = True
                else:
                    self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if reply.trickle:
                    for i in range(len(body)):
                        self.wfile.write(body[i : i + 1])
                        self.wfile.flush()
                        time.sleep(reply.trickle)
                    return
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                return

        class _Server(ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, request: Any, client_address: Any) -> None:
                return  # clients that gave up (timeouts) break pipes; that is the point of the test

        self.server = _Server(("127.0.0.1", 0), _RequestHandler)
        if tls is not None:  # an HTTPS server (each connection's handshake runs in its thread)
            self.server.socket = tls.wrap_socket(self.server.socket, server_side=True)
        scheme = "https" if tls is not None else "http"
        self.url = f"{scheme}://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def reset(self, handler: Handler) -> None:
        with self.lock:
            self.handler = handler
            self.seen = []

    def paths(self) -> list[str]:
        return [r.path for r in self.seen]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="session")
def loopback_server() -> Iterator[Loopback]:
    server = Loopback()
    yield server
    server.close()


@pytest.fixture
def tls_loopback(tmp_path: Path) -> Iterator[tuple[Loopback, Path]]:
    """An HTTPS loopback server with a certificate from a private CA, and that CA's PEM file."""
    import trustme

    authority = trustme.CA()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    authority.issue_cert("127.0.0.1").configure_cert(context)
    bundle = tmp_path / "private-ca.pem"
    authority.cert_pem.write_to_path(str(bundle))
    server = Loopback(tls=context)
    yield server, bundle
    server.close()


@pytest.fixture
def loopback(loopback_server: Loopback) -> Loopback:
    loopback_server.reset(lambda request: Reply(404, {"error": "no handler"}))
    return loopback_server


FAST = {"backoff_base": 0.001, "backoff_cap": 0.01, "max_retry_time": 10.0}


@pytest.fixture
def make_client() -> Iterator[Callable[..., BigIDClient]]:
    """``make_client(url, token="SAMPLE", **options)``: a client with fast backoffs, closed after."""
    made: list[BigIDClient] = []

    def factory(url: str, token: str = "SAMPLE", **options: Any) -> BigIDClient:
        client = BigIDClient(ClientOptions(url=url, token=token, **{**FAST, **options}))
        made.append(client)
        return client

    yield factory
    for client in made:
        client.close()


@pytest.fixture(autouse=True)
def _forget_secrets() -> Iterator[None]:
    yield
    secrets.forget_all()
