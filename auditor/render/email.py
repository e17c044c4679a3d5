"""The emailed report: one message per run, and its delivery over SMTP (or into an ``.eml`` file).

:func:`build_message` makes a ``multipart/mixed`` message holding a ``multipart/alternative`` (a
plain-text summary and an HTML body built for mail clients: table layout, inline styles, no scripts,
no images, nothing fetched) and, on request, the full HTML report and the findings CSV as attachments.
The body keeps to a size budget (Gmail clips HTML bodies past about 100 KB): rows are cut, with an
explicit "N more, see the attached report".

:func:`send` delivers over ``smtp://`` (STARTTLS when the server offers it), ``smtp+starttls://``
(STARTTLS required) or ``smtps://`` (implicit TLS), logging in with ``AUDITOR_SMTP_USER`` /
``AUDITOR_SMTP_PASSWORD``. The password is registered with :mod:`auditor.secrets`, never put in a
message, and never sent over an unencrypted connection. Failures raise
:class:`auditor.errors.DeliveryError` with one clear line.
"""

from __future__ import annotations

import base64
import contextlib
import inspect
import os
import re
import shlex
import smtplib
import socket
import ssl
import sys
import threading
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from email import policy as email_policy
from email.errors import HeaderParseError
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import formatdate, getaddresses, make_msgid
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote, urlsplit

import jinja2

from auditor import secrets
from auditor.errors import ConfigError, DeliveryError
from auditor.render.context import FindingRow, FindingSection, ReportContext
from auditor.render.env import make_environment, template_errors
from auditor.render.report import ReportBundle, default_report_name
from auditor.tls import ca_context, spoke_no_tls

log = secrets.scrubbed_logger(__name__)

ENV_SMTP_USER = "AUDITOR_SMTP_USER"
ENV_SMTP_PASSWORD = "AUDITOR_SMTP_PASSWORD"  # noqa: S105 - the name of the variable, not a secret
DEFAULT_SENDER = "cluster-auditor <cluster-auditor@localhost>"
DEFAULT_SIZE_BUDGET = 90_000  # bytes of HTML body; Gmail clips messages whose HTML exceeds ~102 KB
EMAIL_MAX_ROWS = 200  # per section, before the size budget cuts further
DEFAULT_TIMEOUT = 30.0  # seconds: each wait for the SMTP server
DEFAULT_DEADLINE = 600.0  # seconds: the whole SMTP session, however the server paces its answers
DEFAULT_PORTS = {"smtp": 25, "smtp+starttls": 587, "smtps": 465}


# --------------------------------------------------------------------------------------------------
# The message
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EmailSection:
    key: str
    title: str
    total: int
    rows: tuple[FindingRow, ...]

    @property
    def more(self) -> int:
        return self.total - len(self.rows)


@dataclass(frozen=True)
class EmailContext:
    """What ``email.html.j2`` and ``email.txt`` render: the report's summary and a few rows."""

    report: ReportContext
    sections: tuple[EmailSection, ...]
    more_hint: str  # how the reader gets the rows that were cut
    attachments: tuple[str, ...]
    rows_cut: bool

    @property
    def run(self) -> Any:
        return self.report.run


def default_subject(context: ReportContext) -> str:
    new = next((s.total for s in context.finding_sections if s.key == "new"), 0)
    resolved = next((s.total for s in context.finding_sections if s.key == "resolved"), 0)
    open_count = next((card.value for card in context.cards if card.key == "open"), 0)
    # a run that is not complete says so where it is read first (its findings cover part of it)
    state = "" if context.run.complete else f" ({context.run.status}, not complete)"
    return (
        f"[cluster-auditor] run {context.run.id}{state}: {new:,} new, {resolved:,} resolved, "
        f"{open_count:,} open findings"
    )


def _sections(context: ReportContext, limit: int) -> tuple[EmailSection, ...]:
    chosen: list[FindingSection] = [s for s in context.finding_sections if s.key in ("new", "resolved")]
    chosen += [s for s in context.finding_sections if s.key not in ("new", "resolved")]
    out = []
    for section in chosen:
        capped = section.capped(limit)
        rows = tuple(row for group in capped.groups for row in group.rows)
        out.append(EmailSection(section.key, section.title, section.total, rows))
    return tuple(out)


def _has_control(text: str) -> bool:
    """Line breaks of any kind (U+0085, U+2028 too) and other control characters: a header value
    holding one is refused by the email package, or would start another header."""
    return any(unicodedata.category(ch) in ("Cc", "Zl", "Zp") for ch in text)


def _as_read(name: str, value: str) -> str:
    """``value`` as a reader sees header ``name``: with RFC 2047 encoded words (``=?utf-8?q?…?=``)
    decoded, which the email package also does when the header is set."""
    return str(email_policy.default.header_factory(name, value))


_LDH_LABEL = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?")


def _ascii_domain(domain: str, option: str, value: str) -> str:
    """An internationalised domain (``exämple.org``) in its ASCII form (``xn--exmple-cua.org``): the
    email package cannot write it otherwise (``--eml`` failed with an internal error), and sent raw it
    needs SMTPUTF8, which the message does not ask for.

    By IDNA 2008 with UTS #46 mapping, not transitional: the standard library's ``idna`` codec (IDNA
    2003) maps ``straße.de`` to ``strasse.de`` and a final sigma to a sigma, other registered
    domains, so the report would go to someone else."""
    import idna

    if domain.isascii():
        if domain.startswith("[") and domain.endswith("]"):  # an address literal: user@[192.0.2.1]
            return domain
        labels = domain.rstrip(".").split(".")
        bad = next((label for label in labels if not _LDH_LABEL.fullmatch(label)), None)
        if bad is not None:
            why = (
                f"label {bad!r}: letters, digits and inner hyphens, up to 63"
                if bad
                else "an empty label: two dots in a row, or a dot first"
            )
            raise ConfigError(f"{option}: {value!r}: {domain!r} is not a valid domain name ({why})")
        if (length := len(domain.rstrip("."))) > 253:  # (each label's 63 checked alone let 1,200 through)
            raise ConfigError(
                f"{option}: {value[:80]!r}…: the domain is {length:,} characters long, more than "
                "the 253 a domain name holds"
            )
        if any(label.lower().startswith("xn--") for label in labels):
            try:  # an A-label must decode: xn--zz does not
                idna.decode(domain)
            except (idna.IDNAError, UnicodeError) as exc:
                raise ConfigError(
                    f"{option}: {value!r}: {domain!r} is not a valid domain name ({exc})"
                ) from None
        return domain

    try:
        return idna.encode(domain, uts46=True, transitional=False).decode("ascii")
    except (idna.IDNAError, UnicodeError) as exc:
        raise ConfigError(f"{option}: {value!r}: {domain!r} is not a valid domain name ({exc})") from None


# Python 3.13 (and 3.12.6, 3.11.10) parse strictly by default (CVE-2023-27043): an address literal
# (user@[192.0.2.1]) or a value holding two addresses comes back as ('', ''), said to be "not an
# email address" instead of what is wrong. The checks below are this module's own.
_LENIENT = {"strict": False} if "strict" in inspect.signature(getaddresses).parameters else {}


def _address_pairs(value: str) -> list[tuple[str, str]]:
    """(display name, address) pairs of ``value``, read as Python 3.11.0-3.11.9 read them."""
    return getaddresses([value], **_LENIENT)


def parse_addresses(values: Sequence[str] | str | None, option: str) -> list[str]:
    """Validate addresses (``a@b.c`` or ``Name <a@b.c>``, comma separated); refuse header injection.

    A domain outside ASCII is given in its ASCII (IDNA) form; a local part outside ASCII is refused
    (it needs SMTPUTF8)."""
    if values is None:
        return []
    if isinstance(values, str):
        values = [values]
    found: list[str] = []
    for value in values:
        if _has_control(value):
            raise ConfigError(f"{option}: an address must not contain line breaks or control characters")
        pairs = _address_pairs(value)
        if len(pairs) > value.count(",") + 1:  # 'a@x.org <b@y.org>' read as two: it went to both
            raise ConfigError(
                f"{option}: {value!r} holds more than one address",
                hint="one address per value ('Name <name@example.org>' or name@example.org), or several "
                "separated by commas",
            )
        for name, address in pairs:
            local, at, domain = address.rpartition("@")
            if not at or not local or not domain or " " in address:
                raise ConfigError(f"{option}: {value!r} is not an email address", hint="use name@example.org")
            if not local.isascii():
                raise ConfigError(
                    f"{option}: {value!r}: the part before the @ holds characters outside ASCII, which "
                    "mail servers only take with SMTPUTF8",
                    hint="use an ASCII address for the same mailbox",
                )
            address = f"{local}@{_ascii_domain(domain, option, value)}"
            if any(ch in name for ch in "@<>"):  # '"a@x.org" <b@y.org>' reads as a@x.org, goes to b@y.org
                raise ConfigError(
                    f"{option}: {value!r}: a display name must not hold an address",
                    hint="one address per value: 'Name <name@example.org>' or name@example.org",
                )
            try:
                written = str(Address(display_name=name, addr_spec=address))
            except (ValueError, IndexError, HeaderParseError) as exc:  # 'x@ex..ample' is the last
                raise ConfigError(f"{option}: {value!r} is not an email address ({exc})") from None
            try:
                # as the header will read it: an encoded word in the name (=?utf-8?q?x=0D=0ABcc…?=)
                # decodes to a line break there (an internal error after the whole snapshot)
                read = email_policy.default.header_factory("To", written).addresses
            except (ValueError, IndexError, HeaderParseError):
                read = ()
            if len(read) != 1 or any(_has_control(a.display_name) for a in read):
                raise ConfigError(
                    f"{option}: {value!r}: the display name decodes (RFC 2047) to a line break or a control "
                    "character",
                    hint="write the name as plain text: it is encoded as needed",
                )
            found.append(written)
    return found


def _first_time(address: str, seen: set[str]) -> bool:
    key = _address_pairs(address)[0][1].lower()
    if key in seen:
        return False
    seen.add(key)
    return True


def _envelope(
    to: Sequence[str],
    cc: Sequence[str],
    sender: str | None,
    subject: str | None,
    names: Mapping[str, str] | None = None,
) -> tuple[list[str], list[str], str]:
    """(recipients, copies, sender) checked, and the subject: ConfigError (exit 2) otherwise.
    ``names`` says where ``to``, ``cc`` and ``from`` were given, for the errors (default: the flags
    of ``auditor email``)."""
    names = {"to": "--to", "cc": "--cc", "from": "--from", **(names or {})}
    recipients = parse_addresses(to, names["to"])
    if not recipients:
        raise ConfigError(
            f"{names['to']}: at least one recipient is required", hint="auditor email --to team@example.org"
        )
    copies = parse_addresses(cc, names["cc"])
    # each mailbox once: `--to ops@x.org --cc OPS@X.org` had the server deliver it twice
    seen: set[str] = set()
    recipients, copies = ([a for a in group if _first_time(a, seen)] for group in (recipients, copies))
    senders = parse_addresses(sender or DEFAULT_SENDER, names["from"])
    if len(senders) != 1:
        raise ConfigError(f"{names['from']}: give exactly one sender address")
    if subject is not None and _has_control(subject):
        raise ConfigError("--subject: must be one line, without control characters")
    if subject is not None and _has_control(_as_read("Subject", subject)):
        # the email package decodes encoded words when the header is set, and writes the line
        # breaks they hold back out: '=?utf-8?q?x=0D=0ABcc:_evil@x?=' added a Bcc header
        raise ConfigError(
            "--subject: an encoded word (=?charset?…?=) in it decodes to a line break or a control character",
            hint="write the subject as plain text: it is encoded as needed",
        )
    return recipients, copies, senders[0]


def check_email_settings(
    *,
    to: Sequence[str],
    cc: Sequence[str] = (),
    sender: str | None = None,
    subject: str | None = None,
    smtp_url: str | None = None,
    cafile: str | Path | None = None,
    environ: Mapping[str, str] | None = None,
    names: Mapping[str, str] | None = None,
) -> None:
    """Everything :func:`deliver_email` would refuse as a usage error (exit 2), checked before any
    work: a job that emails last must not find out after an hour-long snapshot that its sender,
    subject, SMTP URL, credentials or CA file were wrong. ``names`` says where each was given
    (keys ``to``, ``cc``, ``from``, ``smtp``, ``smtp_ca_bundle``; default: ``auditor email``'s flags),
    so that an error names the flag, the variable or the settings file's key that holds it."""
    names = names or {}
    _envelope(to, cc, sender, subject, names)
    if smtp_url is not None:
        target = parse_smtp_url(smtp_url, names.get("smtp", "--smtp"))
        _credentials(target, None, None, os.environ if environ is None else environ)
        ca_context(cafile, names.get("smtp_ca_bundle", "--smtp-ca-bundle"))


def _credentials(
    target: SmtpTarget, username: str | None, password: str | None, environ: Mapping[str, str]
) -> tuple[str | None, str | None]:
    username = username or target.username or environ.get(ENV_SMTP_USER) or None
    password = password or environ.get(ENV_SMTP_PASSWORD) or None
    secrets.register(password)
    if username and password:
        # AUTH PLAIN sends base64("\0user\0password"): a server echoing it back in an error must not
        # show a spelling of the password that decodes at once
        with contextlib.suppress(UnicodeError):
            secrets.register(base64.b64encode(f"\0{username}\0{password}".encode("ascii")).decode("ascii"))
    if password and not username:
        raise ConfigError(f"{ENV_SMTP_PASSWORD} is set but no SMTP user name", hint=f"set {ENV_SMTP_USER}")
    if username and not password:
        raise ConfigError(f"no SMTP password for user {username}", hint=f"set {ENV_SMTP_PASSWORD}")
    if not (username or "").isascii() or not (password or "").isascii():
        # smtplib sends AUTH in ASCII; it failed with an internal error naming the character
        raise ConfigError(
            "the SMTP user name or password holds characters outside ASCII, which the login cannot send",
            hint=f"check {ENV_SMTP_USER} and {ENV_SMTP_PASSWORD}",
        )
    return username, password


def _render_parts(env: jinja2.Environment, context: EmailContext) -> tuple[str, str]:
    with template_errors("email"):
        html = env.get_template("email.html.j2").render(mail=context, report=context.report)
        text = env.get_template("email.txt").render(mail=context, report=context.report)
    return text, html


def _fit_budget(
    env: jinja2.Environment,
    report: ReportContext,
    *,
    attachments: tuple[str, ...],
    attach_report: bool,
    size_budget: int,
) -> tuple[str, str, EmailContext]:
    """The most rows per section whose HTML body fits ``size_budget`` bytes (binary search)."""
    hint = "see the attached report" if attach_report else f"see the full report ({report.report_command})"

    def render(limit: int) -> tuple[str, str, EmailContext]:
        sections = _sections(report, limit)
        context = EmailContext(
            report=report,
            sections=sections,
            more_hint=hint,
            attachments=attachments,
            rows_cut=any(section.more for section in sections),
        )
        text, html = _render_parts(env, context)
        return text, html, context

    upper = min(EMAIL_MAX_ROWS, max((s.shown for s in report.finding_sections), default=0))
    best = render(upper)
    if len(best[1].encode("utf-8")) <= size_budget:
        return best
    low, high = 0, upper - 1
    best = render(0)
    while low <= high:
        middle = (low + high) // 2
        candidate = render(middle)
        if len(candidate[1].encode("utf-8")) <= size_budget:
            best, low = candidate, middle + 1
        else:
            high = middle - 1
    return best


FOLD_AT = 997  # header lines stay within RFC 5322's 998 characters


def build_message(
    bundle: ReportBundle,
    *,
    to: Sequence[str],
    cc: Sequence[str] = (),
    sender: str | None = None,
    subject: str | None = None,
    attach_report: bool = False,
    attach_csv: bool = False,
    size_budget: int = DEFAULT_SIZE_BUDGET,
    templates_dir: str | Path | None = None,
) -> EmailMessage:
    """One message for the run of ``bundle``: text + HTML alternatives and the optional attachments."""
    recipients, copies, the_sender = _envelope(to, cc, sender, subject)

    env = make_environment(templates_dir)
    run_id = bundle.context.run.id
    report_name = default_report_name(run_id)
    csv_name = f"auditor-findings-run{run_id}.csv"
    attachments = tuple(
        name for name, wanted in ((report_name, attach_report), (csv_name, attach_csv)) if wanted
    )
    text, html, _context = _fit_budget(
        env, bundle.context, attachments=attachments, attach_report=attach_report, size_budget=size_budget
    )

    message = EmailMessage()
    message["Subject"] = subject or default_subject(bundle.context)
    message["From"] = the_sender
    message["To"] = ", ".join(recipients)
    if copies:
        message["Cc"] = ", ".join(copies)
    message["Date"] = formatdate(usegmt=True)
    domain = the_sender.rpartition("@")[2].rstrip(">") or "localhost"
    message["Message-ID"] = make_msgid(idstring=f"run{run_id}", domain=domain)
    message["X-Auditor-Run"] = str(run_id)
    # quoted-printable whatever the text: left to choose, the email package sent a custom
    # template's short non-ASCII lines as raw 8-bit bytes, which a server without 8BITMIME may mangle
    message.set_content(text, cte="quoted-printable")
    message.add_alternative(html, subtype="html", cte="quoted-printable")
    # Attachments as bytes, base64 (long lines and any byte survive every relay) with an explicit
    # charset (readers decode them right): given as str, the email package rewrites their line
    # ends, turning the CSV's CRLF rows (RFC 4180) and the carriage returns inside its values into
    # line feeds, so the attachment would differ from the file auditor report exports.
    if attach_report:
        _attach_text(message, bundle.html, "html", report_name)
    if attach_csv:
        _attach_text(message, bundle.findings_csv(), "csv", csv_name)
    if all(str(value).isascii() for value in message.values()):
        # Headers are folded at 998 characters (RFC 5322's limit) rather than 78: folded there, a
        # subject a little over 70 characters went whole to a continuation line, which readers
        # (Python's parser too) took with a leading space. Only plain ASCII headers: an encoded word
        # must stay within 75 characters. Last: every part is encoded
        # by now, under the default (76-character lines).
        # 997: folded at 998, the email package let lines of 999 characters through.
        message.policy = message.policy.clone(max_line_length=FOLD_AT)
    return message


def _attach_text(message: EmailMessage, text: str, subtype: str, filename: str) -> None:
    message.add_attachment(
        text.encode("utf-8"), maintype="text", subtype=subtype, filename=filename, params={"charset": "utf-8"}
    )


def write_eml(message: EmailMessage, path: str | Path) -> Path:
    """Write ``message`` as an RFC 5322 file (what ``--eml FILE`` does instead of sending); ``"-"``
    writes it to standard output (``auditor email --eml - | sendmail -t``)."""
    from auditor.outfile import reader_of_stdout_gone, replacing

    target = Path(path)
    # CRLF line ends, as on the wire (RFC 5322; mail programs importing .eml expect them)
    data = message.as_bytes(policy=message.policy.clone(linesep="\r\n"))
    if str(path) == "-":
        if sys.stdout is None:
            raise DeliveryError(
                "standard output is closed: the message cannot be written", hint="pass --eml FILE"
            )
        binary = getattr(sys.stdout, "buffer", None)  # (a text-only stream in place of stdout: as text)
        try:
            sys.stdout.flush()
            if binary is not None:
                binary.write(data)
                binary.flush()
            else:
                sys.stdout.write(data.decode("utf-8", "surrogateescape"))
                sys.stdout.flush()
        except BrokenPipeError:
            raise
        except OSError as exc:
            raise DeliveryError(f"cannot write the message to standard output: {exc.strerror}") from None
        return target
    try:
        with replacing(target, binary=True) as stream:
            stream.write(data)
    except OSError as exc:
        if reader_of_stdout_gone(exc, target):
            raise
        raise DeliveryError(f"cannot write {target}: {exc.strerror}") from None
    return target


# --------------------------------------------------------------------------------------------------
# Delivery
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SmtpTarget:
    scheme: str
    host: str
    port: int
    username: str | None

    @property
    def where(self) -> str:
        """The server, for messages: never the credentials (an IPv6 address in brackets, as in a URL)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}"

    @property
    def url(self) -> str:
        """The URL again, user name included (it never holds a password): for a command to repeat."""
        if not self.username:
            return self.where
        scheme, _, rest = self.where.partition("://")
        return f"{scheme}://{quote(self.username, safe='')}@{rest}"


def parse_smtp_url(url: str, name: str = "--smtp") -> SmtpTarget:
    """``smtp://host[:25]``, ``smtp+starttls://host[:587]`` or ``smtps://host[:465]``.

    A user name may be given in the URL; a password may not (it would show in ``ps`` and logs).
    Errors never repeat the URL: a password holding ``#``, ``/`` or ``?`` ends the URL's authority
    early, so a parser would read part of it as the host or the port, and print it. ``name`` says
    where the URL was given, in the errors (the option, its variable, or the settings file's key).
    """
    text = url.strip()
    scheme, sep, rest = text.partition("://")
    scheme = scheme.lower()
    if not sep or scheme not in DEFAULT_PORTS:
        raise ConfigError(
            f"{name}: unsupported scheme {scheme or '(none)'!r}"
            if sep
            else f"{name}: not a URL (no scheme://)",
            hint="use smtp://host:25 (STARTTLS when offered), smtp+starttls://host:587 or smtps://host:465",
        )
    # The user information ends at the last '@' (a password may hold any other character).
    userinfo, at, hostport = rest.rpartition("@")
    if at and ":" in userinfo:
        raise ConfigError(
            f"{name}: the URL must not contain a password",
            hint=f"put it in the {ENV_SMTP_PASSWORD} environment variable instead",
        )
    shown = f"{scheme}://{'…@' if at else ''}{hostport}"
    if at and any(ch in userinfo for ch in "/?#"):  # a path or query holding an '@', not a user
        raise ConfigError(f"{name}: the URL takes no path, query or fragment", hint="smtp://host:port")
    try:
        parts = urlsplit(f"{scheme}://{hostport.rstrip('/')}")
        port = parts.port
    except ValueError:
        raise ConfigError(f"{name}: {shown!r} is not a valid URL (check the host and the port)") from None
    if parts.query or parts.fragment or parts.path:
        raise ConfigError(f"{name}: {shown!r} takes no path, query or fragment", hint="smtp://host:port")
    if not parts.hostname:
        raise ConfigError(f"{name}: {scheme}:// needs a host name")
    if port == 0:
        raise ConfigError(f"{name}: {shown!r}: the port must be 1-65535")
    try:
        parts.hostname.encode("idna")
    except UnicodeError:
        raise ConfigError(f"{name}: {parts.hostname!r} is not a valid host name") from None
    username = unquote(userinfo) if at and userinfo else None
    return SmtpTarget(scheme, parts.hostname, port or DEFAULT_PORTS[scheme], username)


SEND_PIECE = 64 * 1024  # bytes of the message handed to the socket at a time (see _PiecewiseSend)


class _PiecewiseSend(smtplib.SMTP):
    """smtplib hands the whole message to one ``sendall``, and a socket timeout bounds a
    ``sendall`` as a whole (Python 3.5+): a 5 MB message on a link that carries 120 KB/s failed
    after the 30 s meant for each wait for the server, while the server read steadily (a probe;
    smtplib also reworded the timeout as "Server not connected"). Sent a piece at a time, each
    piece has the timeout; the session's deadline still bounds the whole."""

    def send(self, s: Any) -> None:
        if isinstance(s, str) or len(s) <= SEND_PIECE or self.sock is None:
            return super().send(s)
        sys.audit("smtplib.send", self, s)
        view = memoryview(s)
        try:
            for start in range(0, len(view), SEND_PIECE):
                self.sock.sendall(view[start : start + SEND_PIECE])
        except OSError as exc:
            self.close()
            # (the cause's words kept: "timed out" is told from a connection the server ended)
            raise smtplib.SMTPServerDisconnected(
                f"Server not connected ({exc or type(exc).__name__})"
            ) from exc
        return None


class _PiecewiseSendSSL(_PiecewiseSend, smtplib.SMTP_SSL):
    pass


def send(
    message: EmailMessage,
    smtp_url: str,
    *,
    username: str | None = None,
    password: str | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    deadline: float = DEFAULT_DEADLINE,
    cafile: str | Path | None = None,
    environ: Mapping[str, str] | None = None,
) -> None:
    """Send ``message`` to its To and Cc recipients through the server at ``smtp_url``.

    Credentials: ``username``/``password`` if given, else the URL's user name and the environment
    (``AUDITOR_SMTP_USER``, ``AUDITOR_SMTP_PASSWORD``). ``cafile`` trusts a private CA. ``timeout``
    bounds each wait for the server; ``deadline`` the whole session (a server answering a line at
    a time, each within the timeout, would otherwise hold a scheduled job for ever).
    """
    target = parse_smtp_url(smtp_url)
    username, password = _credentials(target, username, password, os.environ if environ is None else environ)
    context = ca_context(cafile, "--smtp-ca-bundle")

    where = target.where
    client: smtplib.SMTP = (
        _PiecewiseSendSSL(timeout=timeout, context=context)
        if target.scheme == "smtps"
        else _PiecewiseSend(timeout=timeout)
    )
    late = threading.Event()
    in_data = threading.Event()

    def cut_short() -> None:  # wakes the read in progress: the server sees the connection end
        late.set()
        sock = client.sock
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    watchdog = threading.Timer(deadline, cut_short)
    watchdog.daemon = True
    watchdog.start()
    encrypted = target.scheme == "smtps"
    try:
        # Connected after the watchdog starts (the greeting is read inside connect). smtplib takes
        # the host name that TLS verifies (SNI, the certificate) from the constructor's argument,
        # which connecting later leaves empty: it is set as the constructor would have.
        client._host = target.host  # type: ignore[attr-defined]
        greeted, greeting = client.connect(target.host, target.port)
        if greeted != 220:  # 421 "busy, try later" (then the server hangs up), 554 "no service"
            raise smtplib.SMTPConnectError(greeted, greeting)
        client.ehlo_or_helo_if_needed()  # EHLO, else HELO (a server that only speaks HELO)
        if not encrypted:
            if client.has_extn("starttls"):
                client.starttls(context=context)
                client.ehlo()
                encrypted = True
            elif target.scheme == "smtp+starttls":
                raise DeliveryError(
                    f"{where}: the server does not offer STARTTLS",
                    hint="use smtps:// for implicit TLS, or smtp:// to allow an unencrypted connection",
                )
        if username:
            if not encrypted:
                raise DeliveryError(
                    f"{where}: refusing to send the SMTP password over an unencrypted connection",
                    hint="the server offers no STARTTLS: use smtps://, or send without credentials",
                )
            _log_in(client, where, username, password or "")
        log.debug("sending message %s via %s", message.get("Message-ID"), where)
        data = client.data

        def data_noted(msg: Any) -> Any:  # from here on, the server may have taken the message
            in_data.set()
            return data(msg)

        client.data = data_noted  # type: ignore[method-assign]
        refused = client.send_message(message)
        # Sent: a server answering QUIT oddly (or not at all) must not turn a delivery into a failure.
        with contextlib.suppress(smtplib.SMTPException, OSError):
            client.quit()
    except DeliveryError:
        raise
    except KeyboardInterrupt:  # Ctrl-C or SIGTERM in the session: say what became of the message
        if in_data.is_set():
            log.warning(
                "stopped while the message was sent to %s (DATA): the server may have delivered it; "
                "check with a recipient before sending it again",
                where,
            )
        else:
            log.warning("stopped before the message was sent to %s: nothing was delivered", where)
        raise
    except Exception as exc:  # noqa: BLE001 - each kind is worded by _delivery_error
        if late.is_set():
            raise DeliveryError(
                f"{where}: the server did not finish within {deadline:g} s (it answers too slowly)"
            ) from None
        # (every SMTPException is an OSError: a server's answer is not a lost connection)
        lost = isinstance(exc, smtplib.SMTPServerDisconnected) or (
            isinstance(exc, OSError) and not isinstance(exc, smtplib.SMTPException)
        )
        if in_data.is_set() and lost:
            timed_out = isinstance(exc, TimeoutError) or isinstance(exc.__cause__, TimeoutError)
            timed_out = timed_out or "timed out" in str(exc)
            what = (
                f"timed out after {timeout:g} s"
                if timed_out
                else f"the connection ended ({secrets.scrub(str(exc)) or type(exc).__name__})"
            )
            raise DeliveryError(
                f"{where}: {what} while the message was sent or just after (DATA); the server may "
                "have delivered it",
                hint="check with a recipient before sending it again, or it may arrive twice",
            ) from None
        raise _delivery_error(exc, where, username, timeout, message, encrypted=encrypted) from None
    finally:
        watchdog.cancel()
        client.close()
    if refused:
        again = " ".join(f"--to {shlex.quote(address)}" for address in sorted(refused))
        temporary = all(400 <= code < 500 for code, _ in refused.values())  # greylisting, a full box
        error = DeliveryError(
            f"{where}: some recipients were refused{' for now (a temporary failure)' if temporary else ''}: "
            f"{_refusals(refused)}; the message was delivered to {', '.join(_accepted(message, refused))}",
            hint=f"send it again{' later' if temporary else ''} to the refused ones only: the same command "
            f"with {again} in place of --to and --cc",
        )
        error.refused = tuple(sorted(refused))
        raise error


def _log_in(client: smtplib.SMTP, where: str, username: str, password: str) -> None:
    """Log in with the first mechanism both sides know (PLAIN, LOGIN, CRAM-MD5).

    ``SMTP.login`` tries every mechanism the server offers until one succeeds: a wrong password
    was two or three failed logins per run against the account's lockout policy. A refusal of the
    credentials themselves (535) ends it, and so does a temporary failure (4xx, such as 454: the
    server cannot check them now); another answer (a mechanism the server offers but does not
    take) tries the next.
    """
    offered = client.esmtp_features.get("auth", "").upper().split() if client.has_extn("auth") else []
    if not offered:
        raise DeliveryError(
            f"{where}: the server offers no login (no AUTH), but credentials were given",
            hint=f"send without them: unset {ENV_SMTP_USER} and {ENV_SMTP_PASSWORD} (and the user "
            "name in the SMTP URL)",
        )
    # PLAIN first (the channel is encrypted: CRAM-MD5 adds nothing, and a server keeping hashed
    # passwords refuses it with 535 while PLAIN works), then LOGIN, then CRAM-MD5
    known = [mechanism for mechanism in ("PLAIN", "LOGIN", "CRAM-MD5") if mechanism in offered]
    if not known:
        raise DeliveryError(
            f"{where}: the server offers no login method this tool knows ({' '.join(offered)}); "
            "it knows CRAM-MD5, PLAIN and LOGIN"
        )
    client.user, client.password = username, password  # read by smtplib's auth_* callbacks
    refused: smtplib.SMTPAuthenticationError | None = None
    for mechanism in known:
        answer = getattr(client, "auth_" + mechanism.lower().replace("-", "_"))
        try:
            client.auth(mechanism, answer, initial_response_ok=True)
            return
        except smtplib.SMTPAuthenticationError as exc:
            if exc.smtp_code == 535 or 400 <= exc.smtp_code < 500:
                # the credentials (another mechanism would only fail again), or a temporary failure
                # (454: the server cannot check them now): one login attempt
                raise
            refused = exc
    assert refused is not None
    raise refused


LARGE_MESSAGE = 10_000_000  # bytes: the smallest size limit common among mail servers
TRY_LATER = "a 4xx answer is temporary: send it again later (nothing was delivered)"


def _megabytes(message: EmailMessage) -> str:
    """The message's size for people: "4.8 MB", or "63 KB" under 0.1 MB (not "0.0 MB")."""
    size = len(bytes(message))
    return f"{size / 1_000_000:.1f} MB" if size >= 100_000 else f"{max(1, round(size / 1000))} KB"


def _refused_for_size(code: int, said: str) -> bool:
    """Whether an answer to DATA refuses the message for its size: ``5.3.4`` (message too big for
    the system), or a 552 that says so. A 552 is also "exceeded storage allocation": ``552 5.2.2
    Mailbox full`` is no reason to leave the attachments out."""
    if "5.3.4" in said:
        return True
    return (
        code == 552
        and "5.2.2" not in said
        and re.search(r"size|too (big|large)|exceed", said, re.I) is not None
    )


def _too_large(where: str, message: EmailMessage, said: str) -> DeliveryError:
    """The error for a message refused for its size (``too_large``: a resend leaves the attachments out)."""
    attached = any(True for _ in message.iter_attachments())
    error = DeliveryError(
        f"{where}: the message ({_megabytes(message)}) is larger than the server accepts ({said})",
        hint="send it without the attachments, or raise the server's message size limit"
        if attached
        else "raise the server's message size limit (the message has no attachment to leave out)",
    )
    error.too_large = True
    return error


def _delivery_error(
    exc: Exception,
    where: str,
    username: str | None,
    timeout: float,
    message: EmailMessage,
    *,
    encrypted: bool = True,
) -> Exception:
    """The DeliveryError (exit 3) saying what failed in the SMTP session, with the server's words
    (``encrypted``: whether the session was, when it failed)."""
    if isinstance(exc, smtplib.SMTPAuthenticationError) and 400 <= exc.smtp_code < 500:
        return DeliveryError(  # 454: the server could not check the credentials now
            f"{where}: the login of {username} failed for now, a temporary failure "
            f"({_said(exc.smtp_code, exc.smtp_error)})",
            hint=TRY_LATER,
        )
    if isinstance(exc, smtplib.SMTPAuthenticationError):
        return DeliveryError(
            f"{where}: the server refused the login of {username} ({_said(exc.smtp_code, exc.smtp_error)})",
            hint=f"check {ENV_SMTP_USER} and {ENV_SMTP_PASSWORD}",
        )
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        if any(code == 421 for code, _ in exc.recipients.values()):  # the server ended the session
            return DeliveryError(
                f"{where}: the server closed the session while taking the recipients "
                f"({_refusals(exc.recipients)}); nothing was delivered",
                hint=TRY_LATER,  # 421: the service is not available now
            )
        if all(400 <= code < 500 for code, _ in exc.recipients.values()):  # greylisting, a full queue
            return DeliveryError(
                f"{where}: every recipient was refused for now (a temporary failure): "
                f"{_refusals(exc.recipients)}",
                hint=TRY_LATER,
            )
        return DeliveryError(f"{where}: every recipient was refused: {_refusals(exc.recipients)}")
    if isinstance(exc, smtplib.SMTPSenderRefused):
        said = _said(exc.smtp_code, exc.smtp_error)
        if exc.smtp_code == 552:  # the SIZE the MAIL command announced
            return _too_large(where, message, said)
        if exc.smtp_code == 530:
            return DeliveryError(
                f"{where}: the server wants a login first ({said})",
                hint=f"set {ENV_SMTP_USER} and {ENV_SMTP_PASSWORD}"
                if encrypted
                # (a password is never sent unencrypted: setting them would only be refused)
                else f"it offers no STARTTLS here, and a password is never sent unencrypted: use "
                f"smtps:// (port 465) or smtp+starttls:// on its submission port (587), with "
                f"{ENV_SMTP_USER} and {ENV_SMTP_PASSWORD} set",
            )
        if 400 <= exc.smtp_code < 500:
            return DeliveryError(
                f"{where}: the sender {exc.sender} was refused for now ({said})", hint=TRY_LATER
            )
        return DeliveryError(f"{where}: the sender {exc.sender} was refused ({said})")
    if isinstance(exc, smtplib.SMTPResponseException) and exc.smtp_code == -1:
        # smtplib's code for a reply line that does not start with one (it drops the line's first
        # four characters): an HTTP server, a database, a proxy's banner on the mail port
        text = secrets.scrub(" ".join(_decode(exc.smtp_error).split()))[:120]
        quoted = f": …{text!r}" if text else ""
        return DeliveryError(
            f"{where}: the server's answer is not SMTP (no reply code{quoted})",
            hint="check the host and port: is a mail server listening there?",
        )
    if isinstance(exc, smtplib.SMTPResponseException):
        said = _said(exc.smtp_code, exc.smtp_error)
        if isinstance(exc, smtplib.SMTPDataError) and _refused_for_size(exc.smtp_code, said):
            # a server that announces no SIZE refuses an oversized message at the end of DATA
            return _too_large(where, message, said)
        if 400 <= exc.smtp_code < 500:
            return DeliveryError(f"{where}: the server answered {said} (a temporary failure)", hint=TRY_LATER)
        return DeliveryError(f"{where}: the server answered {said}")
    if isinstance(exc, smtplib.SMTPServerDisconnected) and "timed out" in str(exc):
        return DeliveryError(f"{where}: timed out after {timeout:g} s")
    if isinstance(exc, smtplib.SMTPException):
        return DeliveryError(f"{where}: {secrets.scrub(str(exc)) or type(exc).__name__}")
    if isinstance(exc, ssl.SSLCertVerificationError):
        if "mismatch" in str(exc.verify_message or exc).lower():
            return DeliveryError(
                f"{where}: TLS failed: the server's certificate is not for this host name "
                f"({exc.verify_message})",
                hint="connect by the host name the certificate names",
            )
        return DeliveryError(
            f"{where}: TLS failed: the certificate could not be verified "
            f"({exc.verify_message or exc.reason})",
            hint="if the server uses a private CA, pass it with --smtp-ca-bundle FILE",
        )
    if isinstance(exc, ssl.SSLError):
        if spoke_no_tls(str(exc)):
            return DeliveryError(
                f"{where}: the server did not answer in TLS",
                hint="smtps:// is for implicit TLS (port 465); use smtp:// or smtp+starttls:// "
                "(port 25 or 587)",
            )
        return DeliveryError(f"{where}: TLS failed: {exc.reason or exc}")
    if isinstance(exc, TimeoutError):
        return DeliveryError(f"{where}: timed out after {timeout:g} s")
    if isinstance(exc, OSError):
        return DeliveryError(f"{where}: cannot connect: {exc.strerror or exc}")
    return exc  # a bug: reported as an internal error


def _said(code: int, text: bytes | str) -> str:
    """A server's answer, as it said it: code and text (secrets masked)."""
    return f"{code} {secrets.scrub(' '.join(_decode(text).split()))}".strip()


def _refusals(refused: Mapping[str, tuple[int, bytes | str]]) -> str:
    return ", ".join(f"{address} ({_said(*answer)})" for address, answer in sorted(refused.items()))


def _accepted(message: EmailMessage, refused: Mapping[str, Any]) -> list[str]:
    headers = [*message.get_all("To", []), *message.get_all("Cc", [])]
    return [address for _, address in getaddresses(headers) if address not in refused]


def _decode(value: bytes | str) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def check_one_destination(smtp_url: str | None, eml_path: str | Path | None) -> None:
    """A message goes to a server or into a file: exactly one of the two (a ConfigError, exit 2)."""
    if (smtp_url is None) == (eml_path is None):
        raise ConfigError("give exactly one of --smtp URL or --eml FILE")


def deliver_email(
    bundle: ReportBundle,
    *,
    to: Sequence[str],
    cc: Sequence[str] = (),
    sender: str | None = None,
    subject: str | None = None,
    smtp_url: str | None = None,
    eml_path: str | Path | None = None,
    attach_report: bool = False,
    attach_csv: bool = False,
    size_budget: int = DEFAULT_SIZE_BUDGET,
    templates_dir: str | Path | None = None,
    cafile: str | Path | None = None,
    timeout: float = DEFAULT_TIMEOUT,
) -> EmailMessage:
    """Build the message for ``bundle`` and send it (``smtp_url``) or write it (``eml_path``)."""
    check_one_destination(smtp_url, eml_path)
    message = build_message(
        bundle,
        to=to,
        cc=cc,
        sender=sender,
        subject=subject,
        attach_report=attach_report,
        attach_csv=attach_csv,
        size_budget=size_budget,
        templates_dir=templates_dir,
    )
    # measured only when something is attached (the body alone is kept small by size_budget)
    size = len(bytes(message)) if any(True for _ in message.iter_attachments()) else 0
    if size > LARGE_MESSAGE:
        log.warning(
            "the message is %.1f MB with its attachments; many mail servers refuse more than 10 MB "
            "(leave them out: --no-email-attachments for auditor run, no --attach-* for auditor email)",
            size / 1_000_000,
        )
    if bundle.data.source is not None:  # a prune deleted what the report read: nothing half-read is sent
        bundle.data.source.check_still_there()
    if eml_path is not None:
        write_eml(message, eml_path)
    else:
        send(message, str(smtp_url), timeout=timeout, cafile=cafile)
    return message
