"""The sandbox's knobs: what data it serves, how it authenticates, and which faults it injects.

:class:`SandboxConfig` is a frozen value object shared by the server (:mod:`auditor.sandbox.server`)
and the ground truth (:mod:`auditor.sandbox.data`). Validation happens once, here, and raises
:class:`auditor.errors.ConfigError` naming the knob, so that the CLI and test fixtures report a bad
knob in one line. Every knob is documented in ``docs/sandbox.md``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

import orjson

from auditor.errors import ConfigError

AUTH_MODES = ("bearer", "raw", "refresh")
ENVELOPES = ("tutorial", "results", "data", "status")
TOTALS_DIRECTIONS = ("over", "under", "both")
FAIL_STATUSES = (500, 502, 503, 504)
DEFAULT_TOKEN = "SAMPLE"  # noqa: S105 - the tutorial's public sandbox token, not a secret
MAX_CLUSTER_SLOTS = 0xFFFFFF  # cluster ids carry the slot in their last 6 hex digits


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def make_jwt(payload: dict[str, Any], secret: bytes) -> str:
    """A JWT-looking ``header.payload.signature`` string (HS256 over the first two parts)."""
    header = _b64url(orjson.dumps({"alg": "HS256", "typ": "JWT"}))
    body = _b64url(orjson.dumps(payload, option=orjson.OPT_SORT_KEYS))
    signing_input = f"{header}.{body}".encode("ascii")
    signature = _b64url(hmac.new(secret, signing_input, hashlib.sha256).digest())
    return f"{header}.{body}.{signature}"


def user_token_for(seed: int) -> str:
    """The long-lived user token the sandbox generates in ``refresh`` mode (a ``refresh-token`` JWT)."""
    secret = hashlib.blake2b(f"sandbox-user-token:{seed}".encode(), digest_size=32).digest()
    # 999 days after 2025-01-01: the longest lifetime BigID allows for a user token.
    return make_jwt({"type": "refresh-token", "sub": "sandbox-system-user", "exp": 1_821_139_200}, secret)


@dataclass(frozen=True)
class SandboxConfig:
    """Everything that shapes what the sandbox serves. See ``docs/sandbox.md`` for each knob.

    ``token`` defaults to the tutorial's ``SAMPLE`` in the ``bearer`` and ``raw`` modes and to a
    generated ``refresh-token`` JWT (:func:`user_token_for`) in ``refresh`` mode; after construction it
    always holds the key a client must present.
    """

    # data
    seed: int = 1
    epoch: int = 0
    clusters: int = 50
    columns: int = 2000
    # faults
    fail_rate: float = 0.0
    fail_statuses: tuple[int, ...] = (500,)
    gateway_rate: float = 0.0
    blank_rate: float = 0.0
    latency: float = 0.0
    # column pages asking for more rows than this get a gateway's 504 (building them takes too long)
    slow_pages_above: int | None = None
    max_page: int | None = None
    throttle: float = 0.0
    retry_after: int = 1
    max_fault_streak: int = 3
    repeat_rate: float = 0.0
    wrong_totals: float = 0.0
    totals_direction: str = "over"
    # shapes
    envelope: str = "tutorial"
    aliases: bool = False
    string_counts: bool = False
    content_type: str = "application/json; charset=utf-8"
    # auth
    auth: str = "bearer"
    token: str | None = None
    forbidden_token: str | None = None
    session_ttl: float | None = 3600.0
    session_max_requests: int | None = None
    soft_auth_errors: bool = False  # auth failures as HTTP 200 {"success": false}, like the 2023 sandbox
    # paging guard for sort (the only option that must look at a whole cluster at once)
    sort_limit: int = 100_000

    def __post_init__(self) -> None:
        problems = self._problems()
        if problems:
            raise ConfigError(
                f"sandbox: {problems[0]}", hint="see docs/sandbox.md for every knob and its range"
            )
        if self.token is None:
            token = user_token_for(self.seed) if self.auth == "refresh" else DEFAULT_TOKEN
            object.__setattr__(self, "token", token)
        object.__setattr__(self, "fail_statuses", tuple(int(s) for s in self.fail_statuses))

    def _problems(self) -> list[str]:
        """Every problem with the knobs, in field order (the first one is reported)."""
        problems: list[str] = []

        def rate(name: str) -> None:
            value = getattr(self, name)
            if not isinstance(value, int | float) or not 0.0 <= float(value) <= 1.0:
                problems.append(f"{name} must be a fraction between 0 and 1, not {value!r}")

        for name in ("seed", "epoch", "clusters", "columns", "retry_after", "max_fault_streak", "sort_limit"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                problems.append(f"{name} must be a non-negative integer, not {value!r}")
        if not problems:
            if self.clusters < 1:
                problems.append("clusters must be at least 1")
            elif self.columns < self.clusters:
                problems.append(
                    f"columns ({self.columns}) must be at least clusters ({self.clusters}): "
                    "every cluster holds at least one column"
                )
            if self.clusters + (self.epoch * max(1, round(self.clusters * 0.005))) > MAX_CLUSTER_SLOTS:
                problems.append(f"clusters must stay below {MAX_CLUSTER_SLOTS} (ids carry a 24-bit counter)")
            if self.max_fault_streak < 1:
                problems.append("max_fault_streak must be at least 1")
        for name in ("fail_rate", "gateway_rate", "blank_rate", "throttle", "repeat_rate", "wrong_totals"):
            rate(name)
        if isinstance(self.fail_rate, int | float) and self.fail_rate >= 1.0:
            problems.append("fail_rate must be below 1 so that a retried request eventually succeeds")
        if isinstance(self.throttle, int | float) and self.throttle >= 1.0:
            problems.append("throttle must be below 1 so that a retried request eventually succeeds")
        if not isinstance(self.latency, int | float) or self.latency < 0:
            problems.append(f"latency must be a non-negative number of seconds, not {self.latency!r}")
        if self.slow_pages_above is not None and (
            not isinstance(self.slow_pages_above, int)
            or isinstance(self.slow_pages_above, bool)
            or self.slow_pages_above < 1
        ):
            problems.append(
                f"slow_pages_above must be a positive integer or None, not {self.slow_pages_above!r}"
            )
        if self.max_page is not None and (not isinstance(self.max_page, int) or self.max_page < 1):
            problems.append(f"max_page must be a positive integer or None, not {self.max_page!r}")
        bad = [s for s in self.fail_statuses if int(s) not in FAIL_STATUSES]
        if bad or not self.fail_statuses:
            problems.append(f"fail_statuses must be a non-empty subset of {FAIL_STATUSES}, not {bad}")
        if self.envelope not in ENVELOPES:
            problems.append(f"envelope must be one of {', '.join(ENVELOPES)}, not {self.envelope!r}")
        if self.auth not in AUTH_MODES:
            problems.append(f"auth must be one of {', '.join(AUTH_MODES)}, not {self.auth!r}")
        if self.totals_direction not in TOTALS_DIRECTIONS:
            problems.append(f"totals_direction must be one of {', '.join(TOTALS_DIRECTIONS)}")
        if self.token is not None and (not self.token or self.token != self.token.strip()):
            problems.append("token must be a non-empty string without surrounding spaces")
        if self.forbidden_token is not None and self.forbidden_token == self.token:
            problems.append("forbidden_token must differ from token")
        if self.session_ttl is not None and (
            not isinstance(self.session_ttl, int | float) or self.session_ttl <= 0
        ):
            problems.append("session_ttl must be a positive number of seconds or None")
        if self.session_max_requests is not None and (
            not isinstance(self.session_max_requests, int) or self.session_max_requests < 1
        ):
            problems.append("session_max_requests must be a positive integer or None")
        return problems

    # -- helpers -------------------------------------------------------------------------------

    @property
    def key(self) -> str:
        """The API key a client must be given (the user token in ``refresh`` mode)."""
        assert self.token is not None
        return self.token

    def with_changes(self, **changes: Any) -> SandboxConfig:
        """A copy with some knobs changed (validated again)."""
        if (
            "auth" in changes
            and "token" not in changes
            and self.token in (DEFAULT_TOKEN, user_token_for(self.seed))
        ):
            changes["token"] = None
        return replace(self, **changes)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def knob_names(cls) -> list[str]:
        return [f.name for f in fields(cls)]
