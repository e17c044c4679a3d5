"""The report email: message structure, size budget, and delivery to a real aiosmtpd server on loopback."""

from __future__ import annotations

import contextlib
import csv
import email
import email.policy
import io
import logging
import socket
import threading
import time
from collections.abc import Callable
from email.utils import getaddresses
from pathlib import Path
from typing import Any

import pytest
from bs4 import BeautifulSoup

from auditor import secrets
from auditor.errors import ConfigError, DeliveryError
from auditor.render.email import (
    build_message,
    deliver_email,
    parse_addresses,
    parse_smtp_url,
    send,
    write_eml,
)
from auditor.render.report import bundle_from_input

from .conftest import HOSTILE, hostile_input, scale_input

PASSWORD = "s3cr3t-smtp-Passw0rd"


@pytest.fixture(autouse=True)
def _forget_secrets():
    yield
    secrets.forget_all()


def parse(raw: bytes) -> email.message.EmailMessage:
    return email.message_from_bytes(raw, policy=email.policy.default)  # type: ignore[return-value]


def parts(message: email.message.EmailMessage) -> list[str]:
    return [part.get_content_type() for part in message.walk()]


def test_message_structure_and_headers(sample) -> None:
    bundle = bundle_from_input(sample.data)
    message = build_message(
        bundle,
        to=["team@example.org", "Lead <lead@example.org>"],
        cc=["audit@example.org"],
        sender="Auditor <auditor@example.org>",
        attach_report=True,
        attach_csv=True,
    )
    received = parse(bytes(message))
    assert parts(received) == [
        "multipart/mixed",
        "multipart/alternative",
        "text/plain",
        "text/html",
        "text/html",
        "text/csv",
    ]
    assert received["To"] == "team@example.org, Lead <lead@example.org>"
    assert received["Cc"] == "audit@example.org"
    assert received["From"] == "Auditor <auditor@example.org>"
    assert received["Subject"] == "[cluster-auditor] run 3: 4 new, 3 resolved, 6 open findings"
    assert received["X-Auditor-Run"] == "3"
    assert received["Message-ID"].endswith("@example.org>")
    attachments = {part.get_filename(): part.get_content() for part in received.iter_attachments()}
    assert set(attachments) == {"auditor-report-run3.html", "auditor-findings-run3.csv"}
    # byte for byte what auditor report writes: the CSV's CRLF rows were rewritten as LF
    raw = {part.get_filename(): part.get_payload(decode=True) for part in received.iter_attachments()}
    assert raw["auditor-report-run3.html"] == bundle.html.encode("utf-8")
    assert raw["auditor-findings-run3.csv"] == bundle.findings_csv().encode("utf-8")
    assert raw["auditor-findings-run3.csv"].count(b"\r\n") == 8 + 3 + 1
    assert {part.get_content_charset() for part in received.iter_attachments()} == {"utf-8"}
    assert attachments["auditor-report-run3.html"] == bundle.html
    rows = list(csv.DictReader(io.StringIO(attachments["auditor-findings-run3.csv"])))
    assert len(rows) == 8 + 3
    text = received.get_body(("plain",)).get_content()
    assert "New findings (4)" in text and "Resolved findings (3)" in text
    assert "Attached: auditor-report-run3.html, auditor-findings-run3.csv." in text


def test_html_body_is_built_for_mail_clients(sample) -> None:
    message = build_message(bundle_from_input(sample.data), to=["team@example.org"])
    received = parse(bytes(message))
    assert parts(received) == ["multipart/alternative", "text/plain", "text/html"]
    soup = BeautifulSoup(received.get_body(("html",)).get_content(), "html.parser")
    assert not soup.find_all(["script", "style", "img", "link", "iframe", "object", "form"])
    assert not [tag for tag in soup.find_all(True) if any(a.startswith("on") for a in tag.attrs)]
    assert not [tag for tag in soup.find_all(True) if "class" in tag.attrs and tag.name not in ("p",)]
    assert soup.find("table", attrs={"role": "presentation"}) is not None
    cells = [td for td in soup.find_all("td") if td.get("style")]
    assert len(cells) > 10  # inline styles, not a stylesheet
    assert "The full report: auditor report --run 3." in soup.get_text(" ")
    # every count the text part gives beside the severities, "Waivers expired" included (it was
    # left out of the HTML part)
    shown = {
        td["data-card"]: td.get_text(" ", strip=True) for td in soup.find_all("td", attrs={"data-card": True})
    }
    assert list(shown) == ["open", "new", "resolved", "waived", "expiring", "expired"]
    text = received.get_body(("plain",)).get_content()
    for card in bundle_from_input(sample.data).context.cards:
        if card.key in shown:
            assert shown[card.key] == f"{card.value:,} {card.label}"
            assert f"{card.label + ':':<18} {card.value:,}" in text


def test_hostile_values_are_escaped_in_the_email(tmp_path: Path) -> None:
    message = build_message(bundle_from_input(hostile_input(tmp_path)), to=["team@example.org"])
    received = parse(bytes(message))
    html = received.get_body(("html",)).get_content()
    soup = BeautifulSoup(html, "html.parser")
    assert not soup.find_all(["script", "img", "iframe", "svg"])
    assert html.count("<script") == 0
    assert HOSTILE[0] in soup.get_text()
    # the text part is plain text: shown as is, but for characters that would forge a line
    plain = received.get_body(("plain",)).get_content()
    assert HOSTILE[0] in plain
    assert "crm.forged\\x0a- [critical] forged-rule: a line that is not a finding\\x09Open" in plain
    assert not [line for line in plain.splitlines() if line.startswith("- [critical] forged-rule")]
    # a finding's explanation too (a probe saw the line break there pass for a space, in both parts)
    assert "because: crm.forged\\x0a- [critical] forged-rule" in plain
    assert "Because: crm.forged\\x0a- [critical] forged-rule" in soup.get_text()


def test_size_budget_cuts_rows_with_an_explicit_note(tmp_path: Path) -> None:
    bundle = bundle_from_input(scale_input(tmp_path, changes=1_000, findings_count=3_000))
    message = build_message(bundle, to=["team@example.org"], attach_report=True, size_budget=40_000)
    received = parse(bytes(message))
    html = received.get_body(("html",)).get_content()
    assert len(html.encode("utf-8")) <= 40_000
    soup = BeautifulSoup(html, "html.parser")
    notes = [" ".join(p.get_text(" ").split()) for p in soup.select("p.more")]
    assert len(notes) == 2  # new and resolved
    shown = len(soup.select('table[data-section="new"] tr[data-row]'))
    assert shown > 10
    assert notes[0] == f"{3_000 - shown:,} more, see the attached report."
    text = received.get_body(("plain",)).get_content()
    assert f"{3_000 - shown:,} more, see the attached report." in text
    # a bigger budget shows more rows; without the attachment the note says how to get the report
    roomy = parse(bytes(build_message(bundle, to=["a@example.org"], size_budget=80_000)))
    roomy_soup = BeautifulSoup(roomy.get_body(("html",)).get_content(), "html.parser")
    assert len(roomy_soup.select('table[data-section="new"] tr[data-row]')) > shown
    assert roomy_soup.select("p.more")[0].get_text().endswith("see the full report (auditor report --run 3).")


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"to": []}, "--to: at least one recipient is required"),
        ({"to": ["not-an-address"]}, "--to: 'not-an-address' is not an email address"),
        (
            {"to": ["a@example.org\r\nBcc: evil@example.org"]},
            "--to: an address must not contain line breaks or control characters",
        ),
        (
            {"to": ["a@example.org"], "subject": "x\r\nBcc: evil@example.org"},
            "--subject: must be one line, without control characters",
        ),
        ({"to": ["a@example.org"], "sender": "a@x.org, b@y.org"}, "--from: give exactly one sender address"),
        # vertical tab, U+2028, NEL: internal errors from the email package before
        (
            {"to": ["a@example.org"], "subject": "x\x0bBcc: e@x.org"},
            "--subject: must be one line, without control characters",
        ),
        (
            {"to": ["a@example.org"], "subject": "x\u2028y"},
            "--subject: must be one line, without control characters",
        ),
        (
            {"to": ["Name\x85Bcc: e@x.org <a@example.org>"]},
            "--to: an address must not contain line breaks or control characters",
        ),
        # one value, two addresses: the message went to both
        (
            {"to": ['"a@example.org" <b@evil.example>']},
            "--to: '\"a@example.org\" <b@evil.example>': a display name must not hold an address",
        ),
        (
            {"to": ["a@example.org <b@evil.example>"]},
            "--to: 'a@example.org <b@evil.example>' holds more than one address",
        ),
        # Found by a probe: RFC 2047 encoded words pass the literal check, and the email package
        # decodes them when the header is set: the subject added a Bcc header to the message sent,
        # the display name failed with an internal error after the whole snapshot.
        (
            {"to": ["a@example.org"], "subject": "=?utf-8?q?weekly=0D=0ABcc:_evil@x.example?="},
            "--subject: an encoded word (=?charset?…?=) in it decodes to a line break or a control character",
        ),
        (
            {"to": ["=?utf-8?q?x=0D=0ABcc=3A_y?= <a@example.org>"]},
            "--to: '=?utf-8?q?x=0D=0ABcc=3A_y?= <a@example.org>': the display name decodes (RFC 2047) to a "
            "line break or a control character",
        ),
        (
            {"to": ["jörg@example.org"]},
            "--to: 'jörg@example.org': the part before the @ holds characters outside ASCII, which mail "
            "servers only take with SMTPUTF8",
        ),
        (
            {"to": ["x@ex..ample"]},
            "--to: 'x@ex..ample': 'ex..ample' is not a valid domain name (an empty label: two dots in a row, "
            "or a dot first)",
        ),
        # found by a probe: ASCII domains were not checked as the IDNA ones were
        (
            {"to": ["a@-bad-.org"]},
            "--to: 'a@-bad-.org': '-bad-.org' is not a valid domain name (label '-bad-': letters, digits "
            "and inner hyphens, up to 63)",
        ),
        (
            {"to": ["a@xn--zz.org"]},
            "--to: 'a@xn--zz.org': 'xn--zz.org' is not a valid domain name (Invalid A-label)",
        ),
        # a probe: each label was checked alone, and a 1,223-character domain written in a To line
        # longer than RFC 5322's 998
        (
            {"to": ["x@" + ".".join(["a" * 60] * 20) + ".org"]},
            f"--to: {('x@' + 'a' * 60 + '.' + 'a' * 17)!r}…: the domain is 1,223 characters long, more than "
            "the 253 a domain name holds",
        ),
    ],
)
def test_bad_addresses_are_usage_errors(sample, kwargs: dict[str, Any], error: str) -> None:
    with pytest.raises(ConfigError) as raised:
        build_message(bundle_from_input(sample.data), **kwargs)
    assert raised.value.message == error


def test_each_mailbox_is_sent_the_message_once(sample) -> None:
    # found by a probe: `--to ops@x --cc ops@x --to OPS@X` was three RCPT commands, three copies
    message = build_message(
        bundle_from_input(sample.data),
        to=["ops@example.org", "OPS@Example.org", "dev@example.org", "user@[192.0.2.1]"],
        cc=["Ops <ops@example.org>", "lead@example.org"],
    )
    assert message["To"] == "ops@example.org, dev@example.org, user@[192.0.2.1]"
    assert message["Cc"] == "lead@example.org"


def test_a_domain_outside_ascii_is_written_in_its_ascii_form(sample, tmp_path: Path) -> None:
    # Found by a probe: --from gov@exämple.org failed with an internal UnicodeEncodeError writing the
    # .eml (after the whole snapshot), and went out over SMTP as raw UTF-8 without SMTPUTF8.
    target = tmp_path / "idn.eml"
    deliver_email(
        bundle_from_input(sample.data),
        to=["Zoë <zoe@bücher.example>"],
        sender="gov@exämple.org",
        subject="Café report",
        eml_path=target,
    )
    received = parse(target.read_bytes())
    assert received["From"] == "gov@xn--exmple-cua.org"
    assert received["To"] == "Zoë <zoe@xn--bcher-kva.example>"
    assert received["Subject"] == "Café report"
    assert received["Message-ID"].endswith("@xn--exmple-cua.org>")
    assert target.read_bytes().isascii()
    # IDNA 2008, not the standard library's 2003 codec, which gave strasse.de: another domain
    assert parse_addresses(["gov@straße.de", "a@ελληνικός.gr"], "--to") == [
        "gov@xn--strae-oqa.de",
        "a@xn--qxaegecap6byf.gr",
    ]


def test_eml_file_is_a_parseable_message(sample, tmp_path: Path) -> None:
    target = tmp_path / "report.eml"
    message = deliver_email(
        bundle_from_input(sample.data), to=["team@example.org"], eml_path=target, attach_report=True
    )
    received = parse(target.read_bytes())
    assert received["Message-ID"] == message["Message-ID"]
    assert parts(received) == [
        "multipart/mixed",
        "multipart/alternative",
        "text/plain",
        "text/html",
        "text/html",
    ]
    with pytest.raises(DeliveryError, match="cannot write"):
        write_eml(message, tmp_path / "missing" / "x.eml")
    protected = tmp_path / "kept.eml"  # a write-protected file is not replaced
    protected.write_text("previous")
    protected.chmod(0o444)
    with pytest.raises(DeliveryError, match="write-protected"):
        write_eml(message, protected)
    assert protected.read_text() == "previous"
    assert not list(tmp_path.glob(".*.tmp"))


def test_a_message_is_never_written_over_a_database_or_a_folder(sample, tmp_path: Path) -> None:
    """Found by a library probe: from Python (no CLI guard), eml_path='history.db' replaced the
    snapshot history with the message."""
    import sqlite3

    history = tmp_path / "history.db"
    with sqlite3.connect(history) as connection:
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute("CREATE TABLE runs (id INTEGER)")
        kept = sqlite3.connect(history)  # held open: its -wal and -shm stay beside it
        kept.execute("INSERT INTO runs VALUES (1)")
        kept.commit()
    before = history.read_bytes()
    bundle = bundle_from_input(sample.data)
    for target in (history, tmp_path / "history.db-wal", tmp_path / "history.db-shm"):
        assert target.exists()
        with pytest.raises(DeliveryError, match=f"cannot write {target}: it is a SQLite database"):
            deliver_email(bundle, to=["team@example.org"], eml_path=target)
    with pytest.raises(DeliveryError, match=f"cannot write {tmp_path}: Is a directory"):
        deliver_email(bundle, to=["team@example.org"], eml_path=tmp_path)
    kept.close()
    assert history.read_bytes()[:16] == before[:16] == b"SQLite format 3\x00"
    assert sqlite3.connect(history).execute("SELECT id FROM runs").fetchall() == [(1,)]
    assert not list(tmp_path.glob(".*.tmp"))


def test_send_over_plain_smtp(sample, smtp_server) -> None:
    host, port, received = smtp_server()
    message = build_message(
        bundle_from_input(sample.data),
        to=["team@example.org"],
        cc=["audit@example.org"],
        sender="auditor@example.org",
        subject="Weekly audit",
        attach_report=True,
        attach_csv=True,
    )
    send(message, f"smtp://{host}:{port}", environ={})
    assert received.event.wait(5)
    (envelope,) = received.envelopes
    assert envelope.mail_from == "auditor@example.org"
    assert sorted(envelope.rcpt_tos) == ["audit@example.org", "team@example.org"]
    got = parse(envelope.original_content)
    assert got["Subject"] == "Weekly audit"
    assert parts(got) == [
        "multipart/mixed",
        "multipart/alternative",
        "text/plain",
        "text/html",
        "text/html",
        "text/csv",
    ]
    names = sorted(part.get_filename() for part in got.iter_attachments())
    assert names == ["auditor-findings-run3.csv", "auditor-report-run3.html"]


def test_send_with_starttls_and_login_never_logs_the_password(
    sample, smtp_server, tls_files, caplog, capsys
) -> None:
    host, port, received = smtp_server(tls="starttls", cert=tls_files, credentials=("mailer", PASSWORD))
    message = build_message(bundle_from_input(sample.data), to=["team@example.org"])
    caplog.set_level(logging.DEBUG)
    secrets.install_log_filter()
    environ = {"AUDITOR_SMTP_USER": "mailer", "AUDITOR_SMTP_PASSWORD": PASSWORD}
    send(message, f"smtp+starttls://{host}:{port}", cafile=tls_files[0], environ=environ)
    assert received.event.wait(5)
    assert received.logins == [("mailer", PASSWORD)]
    assert parse(received.envelopes[0].original_content)["To"] == "team@example.org"
    # a wrong password: one clear line, no secret in it
    wrong = "wrong-Passw0rd-123"
    with pytest.raises(DeliveryError) as raised:
        send(
            message,
            f"smtp://{host}:{port}",
            cafile=tls_files[0],
            environ={**environ, "AUDITOR_SMTP_PASSWORD": wrong},
        )
    assert raised.value.message == (
        f"smtp://{host}:{port}: the server refused the login of mailer (535 5.7.8 Authentication credentials "
        "invalid)"
    )
    # one failed login per attempt (SMTP.login tried PLAIN, then LOGIN: two against a lockout policy)
    assert received.logins == [("mailer", PASSWORD), ("mailer", wrong)]
    captured = capsys.readouterr()
    everything = caplog.text + captured.out + captured.err + raised.value.message + str(raised.value.hint)
    assert PASSWORD not in everything and wrong not in everything
    assert secrets.scrub(f"x {PASSWORD} y") == "x *** y"  # registered


def test_credentials_for_a_server_that_offers_no_login_say_so(sample, smtp_server, tls_files) -> None:
    # Found by a probe: smtplib's own "SMTP AUTH extension not supported by server." with no hint
    host, port, _ = smtp_server(tls="starttls", cert=tls_files, offer_login=False)
    message = build_message(bundle_from_input(sample.data), to=["team@example.org"])
    environ = {"AUDITOR_SMTP_USER": "mailer", "AUDITOR_SMTP_PASSWORD": PASSWORD}
    with pytest.raises(DeliveryError) as raised:
        send(message, f"smtp+starttls://{host}:{port}", cafile=tls_files[0], environ=environ)
    assert (raised.value.message, raised.value.hint) == (
        f"smtp+starttls://{host}:{port}: the server offers no login (no AUTH), but credentials were given",
        "send without them: unset AUDITOR_SMTP_USER and AUDITOR_SMTP_PASSWORD (and the user name in the "
        "SMTP URL)",
    )


def test_send_over_implicit_tls(sample, smtp_server, tls_files) -> None:
    host, port, received = smtp_server(tls="implicit", cert=tls_files)
    message = build_message(bundle_from_input(sample.data), to=["team@example.org"])
    send(message, f"smtps://{host}:{port}", cafile=tls_files[0], environ={})
    assert received.event.wait(5)
    assert parse(received.envelopes[0].original_content).get_content_type() == "multipart/alternative"


def test_tls_errors_and_refusals_are_delivery_errors(sample, smtp_server, tls_files) -> None:
    message = build_message(bundle_from_input(sample.data), to=["team@example.org"])
    host, port, _received = smtp_server(tls="starttls", cert=tls_files)
    # the self-signed certificate is not trusted without --smtp-ca-bundle
    with pytest.raises(DeliveryError) as raised:
        send(message, f"smtp://{host}:{port}", environ={})
    assert raised.value.message == (
        f"smtp://{host}:{port}: TLS failed: the certificate could not be verified (self-signed certificate)"
    )
    assert raised.value.hint == "if the server uses a private CA, pass it with --smtp-ca-bundle FILE"
    plain_host, plain_port, _ = smtp_server()
    with pytest.raises(DeliveryError) as raised:
        send(message, f"smtp+starttls://{plain_host}:{plain_port}", environ={})
    assert (
        raised.value.message
        == f"smtp+starttls://{plain_host}:{plain_port}: the server does not offer STARTTLS"
    )
    with pytest.raises(DeliveryError) as raised:
        send(
            message,
            f"smtp://{plain_host}:{plain_port}",
            environ={"AUDITOR_SMTP_USER": "u", "AUDITOR_SMTP_PASSWORD": PASSWORD},
        )
    assert raised.value.message == (
        f"smtp://{plain_host}:{plain_port}: refusing to send the SMTP password over an unencrypted connection"
    )
    from .conftest import free_port

    closed = free_port()
    with pytest.raises(DeliveryError) as raised:
        send(message, f"smtp://127.0.0.1:{closed}", environ={}, timeout=5)
    assert raised.value.message == f"smtp://127.0.0.1:{closed}: cannot connect: Connection refused"
    # implicit TLS to a plain server: not a certificate problem, and no private-CA hint
    with pytest.raises(DeliveryError) as raised:
        send(message, f"smtps://{plain_host}:{plain_port}", environ={}, timeout=5)
    assert raised.value.message == f"smtps://{plain_host}:{plain_port}: the server did not answer in TLS"
    assert raised.value.hint.startswith("smtps:// is for implicit TLS (port 465)")


def _scripted_smtp(script: Callable[[socket.socket], None]) -> tuple[str, int]:
    """A one-connection SMTP server on loopback that plays ``script`` on the accepted socket."""
    listener = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        connection, _ = listener.accept()
        with connection, listener, contextlib.suppress(OSError):
            script(connection)

    threading.Thread(target=serve, daemon=True).start()
    return listener.getsockname()


def _dialogue(
    replies: dict[bytes, bytes], greeting: bytes = b"220 hi\r\n"
) -> Callable[[socket.socket], None]:
    """Answer each command by its first word (b"EHLO", b"RCPT:b@x.org", ...); DATA takes the message
    and answers b"END" (b"250 queued" by default; empty: the connection is closed instead)."""

    def play(connection: socket.socket) -> None:
        connection.sendall(greeting)
        reader = connection.makefile("rb")
        while line := reader.readline():
            word = line.split()[0].upper() if line.split() else b""
            key = word + b":" + line.split(b"<")[1].split(b">")[0] if word == b"RCPT" else word
            usual = {b"DATA": b"354 go on\r\n", b"QUIT": b"221 bye\r\n"}.get(word, b"250 ok\r\n")
            answer = replies.get(key, replies.get(word, usual))
            connection.sendall(answer)
            if word == b"DATA" and answer.startswith(b"354"):
                while reader.readline() not in (b".\r\n", b""):
                    pass
                end = replies.get(b"END", b"250 queued\r\n")
                if not end:
                    return
                connection.sendall(end)
            if word == b"QUIT" or answer.startswith(b"421"):
                return

    return play


def test_a_greeting_that_refuses_the_session_is_reported_in_the_servers_words(sample) -> None:
    # Found by a probe: "421 busy" at connect, then the server hung up, was reported as
    # "Connection unexpectedly closed": neither the server's words nor that it is temporary.
    message = build_message(bundle_from_input(sample.data), to=["team@example.org"])
    host, port = _scripted_smtp(lambda connection: connection.sendall(b"421 4.3.2 too busy, try later\r\n"))
    with pytest.raises(DeliveryError) as raised:
        send(message, f"smtp://{host}:{port}", environ={}, timeout=5)
    assert (raised.value.message, raised.value.hint) == (
        f"smtp://{host}:{port}: the server answered 421 4.3.2 too busy, try later (a temporary failure)",
        "a 4xx answer is temporary: send it again later (nothing was delivered)",
    )
    host, port = _scripted_smtp(_dialogue({}, greeting=b"554 5.7.1 no service for you\r\n"))
    with pytest.raises(DeliveryError) as raised:
        send(message, f"smtp://{host}:{port}", environ={}, timeout=5)
    assert raised.value.message == f"smtp://{host}:{port}: the server answered 554 5.7.1 no service for you"


def test_a_server_pacing_its_answers_is_cut_off_at_the_session_deadline(sample) -> None:
    """A greeting continued a line at a time, each within the timeout, held the job for ever."""
    message = build_message(bundle_from_input(sample.data), to=["team@example.org"])

    def slow_greeting(connection: socket.socket) -> None:
        while True:
            connection.sendall(b"220-still here\r\n")
            time.sleep(0.2)

    host, port = _scripted_smtp(slow_greeting)
    started = time.monotonic()
    with pytest.raises(DeliveryError) as raised:
        send(message, f"smtp://{host}:{port}", environ={}, timeout=1, deadline=1.5)
    assert time.monotonic() - started < 5
    assert raised.value.message == (
        f"smtp://{host}:{port}: the server did not finish within 1.5 s (it answers too slowly)"
    )


def test_partial_acceptance_and_refusals_say_who_got_the_message(sample) -> None:
    message = build_message(
        bundle_from_input(sample.data), to=["ok@example.org", "bad@example.org"], cc=["cc@example.org"]
    )
    host, port = _scripted_smtp(_dialogue({b"RCPT:bad@example.org": b"550 5.1.1 no such user\r\n"}))
    with pytest.raises(DeliveryError) as raised:
        send(message, f"smtp://{host}:{port}", environ={}, timeout=5)
    assert raised.value.message == (
        f"smtp://{host}:{port}: some recipients were refused: bad@example.org (550 5.1.1 no such user); "
        "the message was delivered to ok@example.org, cc@example.org"
    )
    assert raised.value.hint == (
        "send it again to the refused ones only: the same command with --to bad@example.org in place of --to "
        "and --cc"
    )
    assert raised.value.refused == ("bad@example.org",)
    # a 4xx for one of them (greylisting, a full mailbox): for now, and so said (found by a probe)
    host, port = _scripted_smtp(_dialogue({b"RCPT:bad@example.org": b"450 4.2.1 try later\r\n"}))
    with pytest.raises(DeliveryError) as raised:
        send(message, f"smtp://{host}:{port}", environ={}, timeout=5)
    assert (raised.value.message, raised.value.hint) == (
        f"smtp://{host}:{port}: some recipients were refused for now (a temporary failure): bad@example.org "
        "(450 4.2.1 try later); the message was delivered to ok@example.org, cc@example.org",
        "send it again later to the refused ones only: the same command with --to bad@example.org in place "
        "of --to and --cc",
    )
    # a 421 while taking the recipients ends the session: nothing was delivered
    host, port = _scripted_smtp(_dialogue({b"RCPT:bad@example.org": b"421 4.3.2 shutting down\r\n"}))
    with pytest.raises(DeliveryError) as raised:
        send(message, f"smtp://{host}:{port}", environ={}, timeout=5)
    assert raised.value.message == (
        f"smtp://{host}:{port}: the server closed the session while taking the recipients "
        "(bad@example.org (421 4.3.2 shutting down)); nothing was delivered"
    )
    assert raised.value.hint == "a 4xx answer is temporary: send it again later (nothing was delivered)"
    # found by a probe: an HTTP server on the mail port was "the server answered -1 /1.1 400 Bad Request"
    for greeting, quoted in (
        (b"HTTP/1.1 400 Bad Request\r\n\r\n", ": …'/1.1 400 Bad Request'"),
        (b"ok\r\n", ""),
    ):
        host, port = _scripted_smtp(_dialogue({}, greeting=greeting))
        with pytest.raises(DeliveryError) as raised:
            send(message, f"smtp://{host}:{port}", environ={}, timeout=5)
        assert (raised.value.message, raised.value.hint) == (
            f"smtp://{host}:{port}: the server's answer is not SMTP (no reply code{quoted})",
            "check the host and port: is a mail server listening there?",
        )
    # too large: the server's words, and what to do
    host, port = _scripted_smtp(_dialogue({b"MAIL": b"552 5.3.4 message size exceeds 50000\r\n"}))
    with pytest.raises(DeliveryError) as raised:
        send(message, f"smtp://{host}:{port}", environ={}, timeout=5)
    size = f"{round(len(bytes(message)) / 1000)} KB"  # (a small message: "0.0 MB" said nothing)
    assert raised.value.message == (
        f"smtp://{host}:{port}: the message ({size}) is larger than the server accepts (552 5.3.4 message "
        "size exceeds 50000)"
    )
    assert (
        raised.value.hint
        == "raise the server's message size limit (the message has no attachment to leave out)"
    )
    assert raised.value.too_large
    # a server that announces no SIZE refuses at the end of DATA: the same error, the same resend
    for answer in (b"552 5.3.4 Message size exceeds fixed limit\r\n", b"554 5.3.4 Message too big\r\n"):
        host, port = _scripted_smtp(_dialogue({b"END": answer}))
        with pytest.raises(DeliveryError) as raised:
            send(message, f"smtp://{host}:{port}", environ={}, timeout=5)
        said = answer.decode().strip()
        assert raised.value.message == (
            f"smtp://{host}:{port}: the message ({size}) is larger than the server accepts ({said})"
        )
        assert raised.value.too_large
    # 552 is also "exceeded storage allocation": a full mailbox is not a message too large
    host, port = _scripted_smtp(_dialogue({b"END": b"552 5.2.2 Mailbox full\r\n"}))
    with pytest.raises(DeliveryError) as raised:
        send(message, f"smtp://{host}:{port}", environ={}, timeout=5)
    assert raised.value.message == f"smtp://{host}:{port}: the server answered 552 5.2.2 Mailbox full"
    assert not getattr(raised.value, "too_large", False)


LATER = "a 4xx answer is temporary: send it again later (nothing was delivered)"


@pytest.mark.parametrize(
    ("replies", "said", "hint"),
    [
        (
            {b"RCPT": b"451 4.7.1 greylisted, come back later\r\n"},
            "every recipient was refused for now (a temporary failure): a@example.org (451 4.7.1 greylisted, "
            "come back later)",
            LATER,
        ),
        (
            {b"END": b"451 4.3.0 try again later\r\n"},
            "the server answered 451 4.3.0 try again later (a temporary failure)",
            LATER,
        ),
        (
            {b"END": b""},
            "the connection ended (Connection unexpectedly closed) while the message was sent or just after "
            "(DATA); the server may have delivered it",
            "check with a recipient before sending it again, or it may arrive twice",
        ),
    ],
    ids=["greylisted", "451-after-data", "lost-after-data"],
)
def test_temporary_failures_and_a_connection_lost_after_data_say_what_to_do(
    sample, replies, said, hint
) -> None:
    # Found by a probe: a 451 read as final, with no hint; a connection dropped once the message was
    # sent said only "Connection unexpectedly closed", and the resend hint then made a duplicate.
    message = build_message(bundle_from_input(sample.data), to=["a@example.org"])
    host, port = _scripted_smtp(_dialogue(replies))
    with pytest.raises(DeliveryError) as raised:
        send(message, f"smtp://{host}:{port}", environ={}, timeout=5)
    assert (raised.value.message, raised.value.hint) == (f"smtp://{host}:{port}: {said}", hint)


def test_a_server_that_only_speaks_helo_still_gets_the_message(sample) -> None:
    message = build_message(bundle_from_input(sample.data), to=["team@example.org"])
    host, port = _scripted_smtp(_dialogue({b"EHLO": b"502 5.5.1 command not recognized\r\n"}))
    send(message, f"smtp://{host}:{port}", environ={}, timeout=5)
    # delivered is delivered, however the server answers QUIT afterwards
    host, port = _scripted_smtp(_dialogue({b"QUIT": b"250 whatever\r\n"}))
    send(message, f"smtp://{host}:{port}", environ={}, timeout=5)


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("smtp://mail.example.org", ("smtp", "mail.example.org", 25, None)),
        ("smtp+starttls://mail.example.org", ("smtp+starttls", "mail.example.org", 587, None)),
        ("smtps://mailer%40corp@mail.example.org:2465", ("smtps", "mail.example.org", 2465, "mailer@corp")),
    ],
)
def test_parse_smtp_url(url: str, expected: tuple[Any, ...]) -> None:
    target = parse_smtp_url(url)
    assert (target.scheme, target.host, target.port, target.username) == expected


@pytest.mark.parametrize(
    ("url", "error"),
    [
        ("http://mail.example.org", "--smtp: unsupported scheme 'http'"),
        ("smtp://user:pw@mail.example.org", "--smtp: the URL must not contain a password"),
        ("smtp://", "--smtp: smtp:// needs a host name"),
        (
            "smtp://mail.example.org/path",
            "--smtp: 'smtp://mail.example.org/path' takes no path, query or fragment",
        ),
        (
            "smtp://mail.example.org:99999",
            "--smtp: 'smtp://mail.example.org:99999' is not a valid URL (check the host and the port)",
        ),
        # A password holding '#', '/' or '?' ended the authority early: it was printed whole (as a
        # port that is not a number), or half of it was taken for the host and port.
        ("smtps://mailer:Hunter#2secret@localhost:2529", "--smtp: the URL must not contain a password"),
        ("smtp://mailer:1234#Tr0ub4dor@mail.example.org:587", "--smtp: the URL must not contain a password"),
        ("smtp://mailer:a/b?c@mail.example.org", "--smtp: the URL must not contain a password"),
        ("smtp://mail.example.org:0", "--smtp: 'smtp://mail.example.org:0': the port must be 1-65535"),
        (
            "smtp://mail.example.org:2525#x",
            "--smtp: 'smtp://mail.example.org:2525#x' takes no path, query or fragment",
        ),
        ("smtp://a..b:25", "--smtp: 'a..b' is not a valid host name"),
        ("smtp://h/p@x", "--smtp: the URL takes no path, query or fragment"),
        ("mail.example.org:25", "--smtp: not a URL (no scheme://)"),
    ],
)
def test_bad_smtp_urls(url: str, error: str) -> None:
    with pytest.raises(ConfigError) as raised:
        parse_smtp_url(url)
    assert raised.value.message == error


def test_the_auth_plain_blob_is_masked_like_the_password() -> None:
    # Found by a probe: a server echoing AUTH PLAIN's base64("\0user\0password") in its 535 answer
    # showed a spelling of the password that decodes at once.
    import base64

    from auditor.render.email import _credentials, parse_smtp_url

    blob = base64.b64encode(b"\0mailer\0smtp-PW-55e2").decode()
    try:
        _credentials(
            parse_smtp_url("smtp://mailer@mail.example.org"),
            None,
            None,
            {"AUDITOR_SMTP_PASSWORD": "smtp-PW-55e2"},
        )
        said = secrets.scrub(f"535 5.7.8 rejected b64={blob}")
    finally:
        secrets.forget_all()
    assert blob not in said and said.startswith("535 5.7.8 rejected b64=")


def test_a_long_subject_reads_back_as_written_and_the_eml_has_crlf_line_ends(sample, tmp_path: Path) -> None:
    # Found by a probe: a subject a little over 70 characters went whole to a continuation line,
    # which readers (Python's parser too) took with a leading space; the .eml had LF line ends.
    subject = "[cluster-auditor] run 2: 1,245 new, 1,588 resolved, 12,345 open findings on tenant A"
    target = tmp_path / "m.eml"
    deliver_email(
        bundle_from_input(sample.data),
        to=["team@example.org"],
        subject=subject,
        eml_path=target,
        attach_csv=True,
    )
    raw = target.read_bytes()
    assert f"\r\nSubject: {subject}\r\n".encode() in raw or raw.startswith(f"Subject: {subject}\r\n".encode())
    assert parse(raw)["Subject"] == subject
    assert b"\n" not in raw.replace(b"\r\n", b"")  # every line ends with CRLF
    lines = raw.split(b"\r\n")
    _, _, body = raw.partition(b"\r\n\r\n")
    payload = [line for line in body.split(b"\r\n") if not line.startswith(b"Content-")]
    assert max(len(line) for line in payload) <= 78  # parts still encoded in short lines
    assert max(len(line) for line in lines) <= 998
    # a probe's 300 named recipients: folded at 998, two To lines had 999 characters
    crowd = [f"User Number {i} <user{i}@example.org>" for i in range(1, 301)]
    folded = bytes(build_message(bundle_from_input(sample.data), to=crowd)).split(b"\n")
    assert max(len(line) for line in folded) <= 998
    assert len(getaddresses([parse(b"\r\n".join(folded))["To"]])) == 300
    # non-ASCII: folded as before, in encoded words of at most 75 characters
    message = build_message(bundle_from_input(sample.data), to=["a@example.org"], subject="Café " * 20)
    assert all(len(line) <= 78 for line in bytes(message).split(b"\n") if line.startswith((b"Subject", b" ")))


def test_the_subject_of_a_run_that_is_not_complete_says_so(sample) -> None:
    import dataclasses

    data = dataclasses.replace(
        sample.data,
        run=dataclasses.replace(
            sample.data.run, status="failed", error="2 of 8 clusters could not be fetched"
        ),
    )
    message = build_message(bundle_from_input(data), to=["a@example.org"])
    assert message["Subject"].startswith("[cluster-auditor] run 3 (failed, not complete): ")
    assert (
        "run 3 is failed, not complete (2 of 8 clusters could not be fetched)"
        in message.get_body(("plain",)).get_content()
    )


def test_a_message_larger_than_many_servers_take_is_warned_about(
    sample, tmp_path: Path, caplog, monkeypatch
) -> None:
    # Found by a probe: a 17.8 MB message (the CSV of 50,000 columns attached) went out with no word
    from auditor.render import email as mail

    bundle = bundle_from_input(sample.data)
    monkeypatch.setattr(mail, "LARGE_MESSAGE", 1_000)  # the sample's attachments pass it
    with caplog.at_level(logging.WARNING, logger="auditor.render.email"):
        deliver_email(bundle, to=["a@example.org"], eml_path=tmp_path / "a.eml", attach_report=True)
        deliver_email(bundle, to=["a@example.org"], eml_path=tmp_path / "b.eml")  # none to leave out
    (said,) = [r.getMessage() for r in caplog.records]
    assert said.startswith("the message is ") and "many mail servers refuse more than 10 MB" in said
    assert (tmp_path / "a.eml").is_file()  # written all the same


def test_a_custom_text_template_with_short_non_ascii_lines_goes_out_in_seven_bits(
    sample, tmp_path: Path
) -> None:
    # Found by a probe: such a template went out as 8-bit bytes (Content-Transfer-Encoding: 8bit),
    # also to a server that did not offer 8BITMIME
    folder = tmp_path / "templates"
    folder.mkdir()
    (folder / "email.txt").write_text("Résumé des constats\nÀ revoir : {{ 1 + 1 }}\n", encoding="utf-8")
    message = build_message(bundle_from_input(sample.data), to=["a@example.org"], templates_dir=folder)
    raw = bytes(message)
    assert raw.isascii()
    encodings = {part.get_content_type(): part["Content-Transfer-Encoding"] for part in message.walk()}
    assert encodings["text/plain"] == encodings["text/html"] == "quoted-printable"
    assert parse(raw).get_body(("plain",)).get_content().startswith("Résumé des constats\nÀ revoir : ")


def test_names_with_edge_spaces_show_them_in_both_parts(sample) -> None:
    # Found by a probe: `cc_num ` went into the email bare, where HTML hides a trailing space and a
    # relay may strip it; the report marks it ␠
    for found in sample.data.findings:
        if found["fingerprint"].endswith("00000001"):
            found["cluster_id"], found["column"] = " c1", "db.t.cc_num "
    for found in (sample.data.diff or {}).get("findings", {}).get("new", []):
        if found["fingerprint"].endswith("00000001"):
            found["cluster_id"], found["column"] = " c1", "db.t.cc_num "
    received = parse(bytes(build_message(bundle_from_input(sample.data), to=["a@example.org"])))
    plain = received.get_body(("plain",)).get_content()
    assert "cluster \u2420c1, column db.t.cc_num\u2420" in plain
    html = BeautifulSoup(received.get_body(("html",)).get_content(), "html.parser")
    cell = next(td for td in html.select('table[data-section="new"] td') if "cc_num" in td.get_text())
    assert cell.get_text() == "\u2420c1db.t.cc_num\u2420"
    assert [span["title"] for span in cell.select("span.sp")] == ["a space", "a space"]


def test_the_subject_counts_with_thousands_separators_and_the_message_is_dated(tmp_path):
    from email.utils import parsedate_to_datetime

    bundle = bundle_from_input(scale_input(tmp_path, changes=8, findings_count=1200))
    message = build_message(bundle, to=["team@example.org"])
    assert message["Subject"].endswith("1,200 open findings")
    assert parsedate_to_datetime(message["Date"]).tzinfo is not None


def test_an_smtp_password_without_a_user_is_a_usage_error():
    from auditor.render.email import check_email_settings

    with pytest.raises(ConfigError) as raised:
        check_email_settings(
            to=["a@example.org"], smtp_url="smtp://mail.example.org", environ={"AUDITOR_SMTP_PASSWORD": "pw"}
        )
    assert raised.value.message == "AUDITOR_SMTP_PASSWORD is set but no SMTP user name"


def test_an_email_template_error_names_the_file_and_line(sample, tmp_path: Path) -> None:
    # Found by a new-user probe: "email template error: UndefinedError: ..." named neither.
    folder = tmp_path / "templates"
    folder.mkdir()
    (folder / "email.txt").write_text("Findings\n\n{{ report.nope }}\n", encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        build_message(bundle_from_input(sample.data), to=["a@example.org"], templates_dir=folder)
    assert caught.value.exit_code == 2
    assert caught.value.message.startswith(
        f"email template error in {folder / 'email.txt'}:3: UndefinedError: "
    )
    # a new user's walkthrough: "against those in reports/", a folder a pip install does not have
    from auditor.paths import reports_dir

    assert caught.value.hint == (
        f"check the templates in the --templates folder against the bundled ones in {reports_dir()}"
    )
    assert (reports_dir() / "email.txt").is_file()


@pytest.mark.parametrize(
    ("stop_at", "said"),
    [
        (
            b"DATA",
            "stopped while the message was sent to {} (DATA): the server may have delivered it; check with a "
            "recipient before sending it again",
        ),
        (b"MAIL", "stopped before the message was sent to {}: nothing was delivered"),
    ],
)
def test_a_stop_during_the_smtp_session_says_what_became_of_the_message(
    sample, caplog, stop_at, said
) -> None:
    """Found by a probe: Ctrl-C or SIGTERM while the message went out said only "terminated", not
    whether it may have been delivered (as a connection lost at the same point does)."""
    import os
    import signal

    message = build_message(bundle_from_input(sample.data), to=["a@example.org"])
    reached = threading.Event()

    def play(connection: socket.socket) -> None:
        connection.sendall(b"220 hi\r\n")
        reader = connection.makefile("rb")
        while line := reader.readline():
            word = line.split()[0].upper() if line.split() else b""
            if word == stop_at and stop_at == b"MAIL":
                reached.set()  # and never answer
                time.sleep(10)
                return
            connection.sendall(b"354 go on\r\n" if word == b"DATA" else b"250 ok\r\n")
            if word == b"DATA":
                while reader.readline() not in (b".\r\n", b""):
                    pass
                reached.set()  # the message is in: the answer never comes
                time.sleep(10)
                return

    host, port = _scripted_smtp(play)
    threading.Thread(
        target=lambda: reached.wait(10) and os.kill(os.getpid(), signal.SIGINT), daemon=True
    ).start()
    with caplog.at_level(logging.WARNING, logger="auditor.render.email"), pytest.raises(KeyboardInterrupt):
        send(message, f"smtp://{host}:{port}", environ={}, timeout=20)
    (warned,) = [r.getMessage() for r in caplog.records if r.name == "auditor.render.email"]
    assert warned == said.format(f"smtp://{host}:{port}")
