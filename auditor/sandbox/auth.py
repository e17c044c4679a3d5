"""How the sandbox authenticates requests: the three header forms and the token exchange.

* ``bearer`` (the tutorial): data calls need ``Authorization: Bearer <token>``.
* ``raw`` (real tenants): data calls need the bare ``Authorization: <token>``; ``Bearer …`` is 401.
* ``refresh`` (real tenants with a user token): the configured key is a long-lived user token that
  only ``GET /api/v1/refresh-access-token`` accepts (raw header); it answers a short-lived session
  token (a JWT whose payload says ``type: access-token`` and ``exp``), and data calls accept only raw
  session tokens. Sessions expire after ``session_ttl`` seconds or ``session_max_requests`` data calls.

In every mode the exchange works with the configured key in that mode's header form, and data calls
also accept session tokens it issued. ``forbidden_token`` is a valid key without permission: its data
calls (or those of its sessions) get 403. Secrets are compared in constant time.
"""

from __future__ import annotations

import base64
import hmac
import secrets
import threading
import time
from enum import Enum
from typing import Any

import orjson

from auditor.sandbox.config import SandboxConfig, make_jwt


class Verdict(Enum):
    OK = "ok"
    UNAUTHORIZED = "unauthorized"
    FORBIDDEN = "forbidden"


def _same(a: str, b: str | None) -> bool:
    return b is not None and hmac.compare_digest(a.encode("utf-8"), b.encode("utf-8"))


class Authenticator:
    """Checks ``Authorization`` headers and issues session tokens (thread-safe)."""

    def __init__(self, config: SandboxConfig) -> None:
        self.config = config
        self._secret = secrets.token_bytes(32)  # sessions do not survive a restart, as on a tenant
        self._lock = threading.Lock()
        self._issued = 0
        self._uses: dict[int, int] = {}

    # -- header forms ----------------------------------------------------------------------------

    def _credential(self, header: str | None) -> str | None:
        """The token in ``header`` if it has this mode's form, else None."""
        if not header:
            return None
        header = header.strip()
        scheme, _, rest = header.partition(" ")
        if self.config.auth == "bearer":
            if scheme.lower() != "bearer" or not rest.strip():
                return None
            return rest.strip()
        if " " in header:  # "Bearer x" (or any scheme word) is rejected by real tenants
            return None
        return header

    # -- exchange --------------------------------------------------------------------------------

    def exchange(self, header: str | None) -> str | None:
        """A new session token for a valid key in this mode's header form, else None."""
        credential = self._credential(header)
        if credential is None:
            return None
        if _same(credential, self.config.token):
            scope = "read"
        elif _same(credential, self.config.forbidden_token):
            scope = "none"
        else:
            return None
        with self._lock:
            self._issued += 1
            jti = self._issued
            self._uses[jti] = 0
        now = time.time()
        payload: dict[str, object] = {
            "type": "access-token",
            "sub": "sandbox-system-user",
            "iat": int(now),
            "jti": jti,
            "scope": scope,
        }
        if self.config.session_ttl is not None:
            payload["exp"] = round(now + self.config.session_ttl, 3)
        return make_jwt(payload, self._secret)

    @property
    def sessions_issued(self) -> int:
        return self._issued

    def _session(self, token: str) -> dict[str, Any] | None:
        """The payload of a session token this server issued and that has not expired."""
        parts = token.split(".")
        if len(parts) != 3:
            return None
        header, body, _signature = parts
        expected = make_jwt_signature(f"{header}.{body}", self._secret)
        if not hmac.compare_digest(expected.encode(), parts[2].encode()):
            return None
        try:
            payload = orjson.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
        except (ValueError, orjson.JSONDecodeError):
            return None
        if not isinstance(payload, dict) or payload.get("type") != "access-token":
            return None
        exp = payload.get("exp")
        if exp is not None and time.time() >= float(exp):
            return None
        limit = self.config.session_max_requests
        jti = payload.get("jti")
        if not isinstance(jti, int):
            return None
        with self._lock:
            uses = self._uses.get(jti)
            if uses is None or (limit is not None and uses >= limit):
                return None
            self._uses[jti] = uses + 1
        return payload

    # -- data calls ------------------------------------------------------------------------------

    def check(self, header: str | None) -> Verdict:
        credential = self._credential(header)
        if credential is None:
            return Verdict.UNAUTHORIZED
        if self.config.auth != "refresh":
            if _same(credential, self.config.token):
                return Verdict.OK
            if _same(credential, self.config.forbidden_token):
                return Verdict.FORBIDDEN
        if credential.count(".") == 2:
            payload = self._session(credential)
            if payload is not None:
                return Verdict.OK if payload.get("scope") == "read" else Verdict.FORBIDDEN
        return Verdict.UNAUTHORIZED


def make_jwt_signature(signing_input: str, secret: bytes) -> str:
    """The signature part :func:`auditor.sandbox.config.make_jwt` computes."""
    import hashlib

    digest = hmac.new(secret, signing_input.encode("ascii"), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")
