"""Which ``Authorization`` header to send, and when to change it: the three schemes and ``auto``.

* ``bearer``: ``Authorization: Bearer <key>`` (the Cluster Analysis tutorial).
* ``raw``: ``Authorization: <key>`` (every real client and tenant, reference §1.4).
* ``refresh``: the key is a long-lived *user token*; ``GET /api/v1/refresh-access-token`` (sent
  with the raw user token) returns a short-lived ``systemToken`` that is sent raw on data calls
  (reference §1.2). It is exchanged again ahead of its JWT ``exp``, and once on a 401 mid-run.
* ``auto``: a key whose JWT payload says ``type: refresh-token`` is exchanged first; any other key is
  tried as Bearer (as the tutorial documents), then bare on a 401, then exchanged as the last resort.
  The first scheme that gets a non-401 answer is kept for the rest of the run
  (:attr:`Authenticator.scheme_used`).

The state is shared by every worker thread of a client: changes happen under one lock and carry a
generation number, so that when several workers see the same 401 only one of them re-exchanges and
the others retry with the new token. Every key and token is registered with
:func:`auditor.secrets.register` and none is ever put in a message or a log record.
"""

from __future__ import annotations

import base64
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

from auditor import secrets
from auditor.errors import ConfigError

SCHEMES = ("auto", "bearer", "raw", "refresh")
REFRESH_PATH = "/api/v1/refresh-access-token"
NO_EXP_LIFETIME = 3600.0  # a session token without ``exp`` is renewed at least hourly (§9.3)
REFRESH_MARGIN = 120.0  # renew this long before ``exp`` (less for very short-lived tokens)


def check_token(token: str, origin: str) -> None:
    """Raise ConfigError (exit 2) when the API key ``token`` (from ``origin``) holds a character an
    HTTP header cannot carry: a line break or another control character (``BIGID_TOKEN=$(cat f)``
    of a file of two lines), or one outside ASCII. Sent as it was, the HTTP library's error quoted
    the header, key included, in an escaped spelling the secret scrubber did not know. The key
    itself is never shown."""
    for position, char in enumerate(token, 1):
        if char < " " or char == "\x7f":
            what = "a line break" if char in "\r\n" else f"a control character (U+{ord(char):04X})"
        elif not char.isascii():
            what = f"a character outside ASCII (U+{ord(char):04X})"
        else:
            continue
        raise ConfigError(
            f"{origin}: the API key holds {what} at character {position}, which an HTTP header cannot carry",
            hint="copy the key again: it is one line of ASCII characters (a JWT or an API token)",
        )


def jwt_payload(token: str) -> dict[str, Any] | None:
    """The payload of a JWT, decoded without verification (we only read ``type`` and ``exp``)."""
    parts = token.split(".")
    if len(parts) != 3 or not parts[1]:
        return None
    try:
        padded = parts[1] + "=" * (-len(parts[1]) % 4)
        payload = orjson.loads(base64.urlsafe_b64decode(padded.encode("ascii")))
    except (ValueError, UnicodeError, orjson.JSONDecodeError):
        return None
    return payload if isinstance(payload, dict) else None


def is_user_token(token: str) -> bool:
    """True for a BigID user token (a JWT whose payload ``type`` is ``refresh-token``)."""
    payload = jwt_payload(token)
    return payload is not None and str(payload.get("type", "")).lower() == "refresh-token"


def token_expiry(token: str) -> float | None:
    """The JWT ``exp`` claim as a UNIX time, if there is one."""
    payload = jwt_payload(token)
    if not payload:
        return None
    exp = payload.get("exp")
    if isinstance(exp, int | float) and not isinstance(exp, bool):
        return float(exp)
    return None


class ExchangeRefused(Exception):
    """The refresh endpoint refused the user token (401, or ``success: false`` under 200)."""


@dataclass
class _Session:
    token: str
    obtained_at: float
    expires_at: float | None


# 401s of a key already accepted that a run asks again (each request once): a gateway's passing
# refusal costs a request for each request in flight, a revoked key one before the run stops
MAX_REFUSALS_RETRIED = 20


class Authenticator:
    """Produces the header for each request and reacts to 401s. Thread-safe.

    ``exchange`` is a callable doing ``GET /api/v1/refresh-access-token`` with the raw user token and
    returning the session token (the client supplies it, so that the exchange goes through the same
    transport, retries and TLS settings as every other call).
    """

    def __init__(self, key: str, scheme: str, exchange: Callable[[str], str]) -> None:
        if scheme not in SCHEMES:
            raise ValueError(f"unknown auth scheme {scheme!r}")
        secrets.register(key, credential=True)
        self._key = key
        self._exchange_call = exchange
        self._lock = threading.Lock()
        self._generation = 0
        self._last_ok = -1  # the newest generation a request succeeded with
        self._session: _Session | None = None
        self.exchanges = 0  # how many times the key was exchanged for a session token
        self.requested = scheme
        if scheme == "auto":
            self._candidates = (
                ["refresh", "raw", "bearer"] if is_user_token(key) else ["bearer", "raw", "refresh"]
            )
        else:
            self._candidates = [scheme]
        self._index = 0
        self.scheme_used: str | None = None  # set once a request was accepted
        self.first_accepted: str | None = None  # the first form any request was accepted with
        # the endpoints (paths) that accepted the current form: a 401 from another one, under
        # ``auto``, moves on to the next form rather than being taken for a revoked key
        self._accepted_paths: set[str] = set()
        self.tried: list[str] = []
        self.refusals_retried = 0  # 401s of an accepted key, asked again (see unauthorized)

    def __repr__(self) -> str:
        return f"Authenticator(requested={self.requested!r}, used={self.scheme_used!r})"

    @property
    def current(self) -> str:
        return self._candidates[self._index]

    # -- headers -------------------------------------------------------------------------------

    def header(self) -> tuple[str, int]:
        """``(Authorization value, generation)`` for the next request."""
        with self._lock:
            scheme = self.current
            if scheme not in self.tried:
                self.tried.append(scheme)
            if scheme == "bearer":
                return f"Bearer {self._key}", self._generation
            if scheme == "raw":
                return self._key, self._generation
            if self._session is None or self._due(self._session):
                self._renew_locked()
            assert self._session is not None
            return self._session.token, self._generation

    @staticmethod
    def _due(session: _Session) -> bool:
        now = time.time()
        if session.expires_at is None:
            return now - session.obtained_at >= NO_EXP_LIFETIME
        lifetime = max(session.expires_at - session.obtained_at, 0.0)
        margin = min(REFRESH_MARGIN, lifetime / 10)
        return now >= session.expires_at - margin

    def _renew_locked(self) -> None:
        token = self._exchange_call(self._key)
        secrets.register(token, credential=True)
        self.exchanges += 1
        self._session = _Session(token, time.time(), token_expiry(token))
        self._generation += 1

    # -- reacting ------------------------------------------------------------------------------

    def accepted(self, generation: int, path: str | None = None) -> None:
        """A request (to ``path``) sent with ``generation``'s header was not refused: keep that scheme."""
        if self.scheme_used is None or generation > self._last_ok or path not in self._accepted_paths:
            with self._lock:
                if self.scheme_used is None and generation == self._generation:
                    self.scheme_used = self.current
                    self.first_accepted = self.first_accepted or self.current
                if path is not None and generation == self._generation:
                    self._accepted_paths.add(path)
                self._last_ok = max(self._last_ok, generation)

    def probing(self) -> bool:
        """Whether ``auto`` is still looking for the form the tenant takes: no request was accepted
        yet, and another candidate is left."""
        with self._lock:
            return self.scheme_used is None and self._index + 1 < len(self._candidates)

    def unauthorized(self, generation: int, path: str | None = None, *, again: bool = False) -> bool:
        """A request (to ``path``) sent with ``generation``'s header got a 401. True: retry with a
        new header.

        Before any scheme was accepted, ``auto`` moves to the next candidate; so it does when the
        refusing endpoint never accepted the current form (a gateway that lets any header through
        to the cluster list but wants the bare key for the columns). Once the session scheme
        was accepted, an expired session is exchanged again (once for all workers that saw the same
        401) -- but a fresh session refused before any request succeeded with it means the tenant
        no longer accepts the key: False. A bearer or raw key that an endpoint accepted and now
        refuses is asked again (the same header) once per request (``again``: this request's 401
        came after such a re-ask), up to :data:`MAX_REFUSALS_RETRIED` times a run; then False.
        """
        with self._lock:
            if generation != self._generation:
                return True  # another worker already changed the header
            if self.scheme_used is None and self._index + 1 < len(self._candidates):
                self._index += 1
                self._generation += 1
                return True
            if self.current == "refresh" and self.scheme_used == "refresh" and self._last_ok == generation:
                self._renew_locked()
                return True
            if (
                path is not None
                and path not in self._accepted_paths
                and self._index + 1 < len(self._candidates)
                and {self.current, self._candidates[self._index + 1]} == {"bearer", "raw"}
            ):
                if not again and self.refusals_retried < MAX_REFUSALS_RETRIED:
                    # the same form once more first: a passing 401 on this endpoint's first request
                    # switched forms for good, and the other form's refusal ended the run
                    self.refusals_retried += 1
                    return True
                # accepted elsewhere, refused here again before this endpoint ever took it: the
                # other header form, as when probing (never an exchange: that is the key's own kind)
                self._index += 1
                self._candidates = self._candidates[: self._index + 1]  # and no probing past it
                self._generation += 1
                self.scheme_used = None  # set again by the next form's first accepted request
                self._accepted_paths.clear()
                return True
            if (
                not again
                and self.current in ("bearer", "raw")
                and self.scheme_used == self.current
                and path in self._accepted_paths
                and self.refusals_retried < MAX_REFUSALS_RETRIED
            ):
                # a key this endpoint took and now refuses: each request asks once more before the
                # run stops (a gateway's passing 401, on every request in flight at that moment,
                # stopped a whole snapshot); revoked, the key is refused again
                self.refusals_retried += 1
                return True
            return False
