"""Keeping the API key out of every output.

Every secret the process handles (the API key, session tokens obtained from it, SMTP passwords) is
registered here the moment it is read. :func:`scrub` replaces registered secrets in any text, and a
logging filter applies it to every log record, so that a message, a ``--verbose`` trace or an
exception text cannot carry a secret out even by accident. Code should still never put a secret in a
message: this is the second line of defence, not the first.

Data is the other way out: a server that reflects the key (or a session token) inside the records it
serves would get it stored, then reported and emailed. :func:`redact_bytes` masks registered secrets
in a response body before it is decoded (see ``BigIDClient._send``).
"""

from __future__ import annotations

import logging
import threading

_lock = threading.Lock()
_secrets: set[str] = set()
MASK = "***"
MIN_SECRET_LENGTH = 4  # shorter strings would mask ordinary words; such keys are refused anyway


def register(secret: str | None) -> None:
    """Remember ``secret`` so that :func:`scrub` hides it (and its ``Bearer`` form) from now on."""
    if secret and len(secret) >= MIN_SECRET_LENGTH:
        with _lock:
            _secrets.add(secret)


def forget_all() -> None:
    """Forget every registered secret (tests use this between cases)."""
    with _lock:
        _secrets.clear()


def scrub(text: str) -> str:
    """``text`` with every registered secret replaced by ``***``."""
    if not text or not _secrets:
        return text
    with _lock:
        secrets = sorted(_secrets, key=len, reverse=True)
    for secret in secrets:
        if secret in text:
            text = text.replace(secret, MASK)
    return text


def redact_bytes(content: bytes) -> tuple[bytes, int]:
    """``content`` with every registered secret replaced by ``***``, and how many were replaced.

    Meant for a JSON body before it is decoded: each secret is searched (longest first, so a secret
    that contains another is masked whole) as its UTF-8 bytes and, when it contains ``/``, as JSON
    may also write it, with every ``/`` escaped as ``\\/``. ``***`` is valid inside a JSON string, so
    the body still parses and the masked value takes the secret's place.

    Not caught: a secret spelled with ``\\uXXXX`` escapes (or with only some of its slashes
    escaped), split across two JSON strings, or encoded (base64, URL-encoding...): only the literal
    spellings above are searched. When nothing matches, the cost is one substring search per
    secret (and per escaped form) and ``content`` itself is returned, with a count of 0.
    """
    if not _secrets or not content:
        return content, 0
    with _lock:
        secrets = sorted(_secrets, key=len, reverse=True)
    mask = MASK.encode()
    replaced = 0
    for secret in secrets:
        forms = [secret.encode()]
        if "/" in secret:
            forms.append(secret.replace("/", "\\/").encode())
        for form in forms:
            if form in content:
                replaced += content.count(form)
                content = content.replace(form, mask)
    return content, replaced


class ScrubFilter(logging.Filter):
    """A logging filter that scrubs the formatted message of every record."""

    def filter(self, record: logging.LogRecord) -> bool:
        if _secrets:
            message = scrub(record.getMessage())
            record.msg, record.args = message, None
            if record.exc_text:
                record.exc_text = scrub(record.exc_text)
        return True


_installed = False


def install_log_filter() -> None:
    """Attach :class:`ScrubFilter` to the root, ``auditor``, urllib3 and requests loggers."""
    global _installed
    if _installed:
        return
    scrubber = ScrubFilter()
    for name in ("", "auditor", "urllib3", "requests"):
        logging.getLogger(name).addFilter(scrubber)
    _installed = True
