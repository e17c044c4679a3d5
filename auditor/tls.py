"""TLS settings shared by the BigID client and SMTP delivery: a private CA file, and telling a
peer without TLS from a failed certificate check."""

from __future__ import annotations

import os
import ssl

from auditor.errors import ConfigError


def ca_context(cafile: str | os.PathLike[str] | None, option: str, hint: str | None = None) -> ssl.SSLContext:
    """A default client context trusting ``cafile`` too (``None``: the system's CAs only); a file
    that does not load is a usage error naming ``option`` (exit 2), found before any connection."""
    try:
        return ssl.create_default_context(cafile=os.fspath(cafile) if cafile else None)
    except (OSError, ssl.SSLError, ValueError) as exc:
        raise ConfigError(f"{option}: cannot load {cafile} ({exc})", hint=hint) from None


def spoke_no_tls(error_text: str) -> bool:
    """Whether a TLS error's text says the peer answered in plain text (an ``https://`` or
    ``smtps://`` URL pointed at a port without TLS), rather than failing a certificate check."""
    return "WRONG_VERSION_NUMBER" in error_text or "record layer failure" in error_text.lower()
