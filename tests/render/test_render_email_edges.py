"""Edges of the SMTP session that a scripted server on loopback can pin down exactly: which login
mechanism goes first, whose credentials are sent, how a refusal at MAIL or RCPT is worded, and a
delivery that stays a delivery whatever QUIT does.

Each test here was checked to fail under a hand mutation of ``auditor/render/email.py`` that the
rest of the suite let pass (the twentieth session's mutation probe).
"""

from __future__ import annotations

import base64
import contextlib
import socket
import ssl
import threading
import time
from email.message import EmailMessage
from pathlib import Path

import pytest

from auditor import secrets
from auditor.errors import DeliveryError
from auditor.render.email import build_message, send
from auditor.render.report import bundle_from_input

LATER = "a 4xx answer is temporary: send it again later (nothing was delivered)"
PASSWORD = "s3cr3t-smtp-Passw0rd"


@pytest.fixture(autouse=True)
def _forget_secrets():
    yield
    secrets.forget_all()


class Scripted:
    """A one-connection SMTP server on loopback answering each command by its first word.

    ``replies`` maps a command's first word (``b"MAIL"``, ``b"RCPT:a@x.org"`` for one recipient,
    ``b"AUTH:PLAIN"`` for one mechanism) to the answer; ``b"CHALLENGE"`` answers the line sent after
    a ``334`` challenge; ``b"END"`` answers the message's final dot (empty: hang up instead). With
    ``tls`` (a certificate and its key) the session is implicit TLS. ``sip`` (seconds): the message
    is read 16 KB at a time with that pause between reads, through a small receive buffer, as over a
    slow link. Every command line heard is kept in ``heard``.
    """

    def __init__(
        self, replies: dict[bytes, bytes], tls: tuple[Path, Path] | None = None, sip: float | None = None
    ) -> None:
        self.replies = replies
        self.heard: list[bytes] = []
        self.done = threading.Event()
        self.sip = sip
        listener = socket.socket()
        if sip is not None:  # (inherited by the accepted connection)
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 * 1024)
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        context = None
        if tls is not None:
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(str(tls[0]), str(tls[1]))

        def serve() -> None:
            try:
                connection, _ = listener.accept()
                with listener, contextlib.suppress(OSError):
                    if context is not None:
                        connection = context.wrap_socket(connection, server_side=True)
                    with connection:
                        self.play(connection)
            finally:
                self.done.set()

        threading.Thread(target=serve, daemon=True).start()
        self.host, self.port = listener.getsockname()

    def play(self, connection: socket.socket) -> None:
        connection.sendall(b"220 hi\r\n")
        reader = connection.makefile("rb")
        answer = b""
        while line := reader.readline():
            self.heard.append(line.rstrip(b"\r\n"))
            words = line.split()
            word = words[0].upper() if words else b""
            if answer.startswith(b"334"):
                word = key = b"CHALLENGE"
            elif word == b"RCPT":
                key = word + b":" + line.split(b"<")[1].split(b">")[0]
            elif word == b"AUTH":
                key = word + b":" + words[1].upper()
            else:
                key = word
            usual = {b"DATA": b"354 go on\r\n", b"QUIT": b"221 bye\r\n"}.get(word, b"250 ok\r\n")
            answer = self.replies.get(key, self.replies.get(word, usual))
            connection.sendall(answer)
            if word == b"DATA" and answer.startswith(b"354"):
                if self.sip is None:
                    while reader.readline() not in (b".\r\n", b""):
                        pass
                else:
                    tail = b""
                    while not tail.endswith(b"\r\n.\r\n") and (piece := reader.read1(16 * 1024)):
                        tail = (tail + piece)[-5:]
                        time.sleep(self.sip)
                end = self.replies.get(b"END", b"250 queued\r\n")
                if not end:
                    return
                connection.sendall(end)
            if word == b"QUIT":
                return

    def url(self, scheme: str = "smtp", user: str | None = None) -> str:
        return f"{scheme}://{user + '@' if user else ''}{self.host}:{self.port}"

    @property
    def where(self) -> str:
        return f"smtp://{self.host}:{self.port}"

    def commands(self, word: bytes) -> list[bytes]:
        return [line for line in self.heard if line.upper().startswith(word)]


OFFERS_LOGIN = b"250-hi\r\n250-AUTH CRAM-MD5 LOGIN PLAIN\r\n250 8BITMIME\r\n"


@pytest.fixture
def message(sample):
    return build_message(bundle_from_input(sample.data), to=["ok@example.org", "bad@example.org"])


def _refused(server: Scripted, message, **kwargs) -> DeliveryError:
    with pytest.raises(DeliveryError) as raised:
        send(message, server.url(), environ={}, timeout=5, **kwargs)
    return raised.value


# --------------------------------------------------------------------------------------------------
# Recipients refused: temporary only when every refusal is


def test_a_mix_of_temporary_and_final_refusals_is_not_called_temporary(message) -> None:
    # one recipient greylisted (450), one unknown (550), a third accepted: resending "later" would
    # not help the unknown one, so neither the message nor the hint says "for now"/"later"
    message.replace_header("To", "ok@example.org, bad@example.org, grey@example.org")
    server = Scripted(
        {
            b"RCPT:bad@example.org": b"550 5.1.1 no such user\r\n",
            b"RCPT:grey@example.org": b"450 4.2.1 try later\r\n",
        }
    )
    error = _refused(server, message)
    assert (error.message, error.hint) == (
        f"{server.where}: some recipients were refused: bad@example.org (550 5.1.1 no such user), "
        "grey@example.org (450 4.2.1 try later); the message was delivered to ok@example.org",
        "send it again to the refused ones only: the same command with --to bad@example.org "
        "--to grey@example.org in place of --to and --cc",
    )
    assert error.refused == ("bad@example.org", "grey@example.org")


def test_every_recipient_refused_with_a_mix_of_answers_is_a_final_refusal(message) -> None:
    server = Scripted(
        {
            b"RCPT:ok@example.org": b"451 4.7.1 greylisted\r\n",
            b"RCPT:bad@example.org": b"550 5.1.1 no such user\r\n",
        }
    )
    error = _refused(server, message)
    assert (error.message, error.hint) == (
        f"{server.where}: every recipient was refused: bad@example.org (550 5.1.1 no such user), "
        "ok@example.org (451 4.7.1 greylisted)",
        None,
    )
    assert server.commands(b"DATA") == []  # nothing was sent


@pytest.mark.parametrize("code", [b"400", b"499"])
def test_the_edges_of_the_temporary_range_for_every_recipient(message, code) -> None:
    server = Scripted({b"RCPT": code + b" 4.0.0 not now\r\n"})
    error = _refused(server, message)
    said = code.decode()
    assert (error.message, error.hint) == (
        f"{server.where}: every recipient was refused for now (a temporary failure): bad@example.org "
        f"({said} 4.0.0 not now), ok@example.org ({said} 4.0.0 not now)",
        LATER,
    )


# --------------------------------------------------------------------------------------------------
# The sender refused (MAIL FROM)


@pytest.mark.parametrize(
    ("answer", "said", "hint"),
    [
        (
            b"530 5.7.0 Authentication required\r\n",
            "the server wants a login first (530 5.7.0 Authentication required)",
            # (a probe: "set AUDITOR_SMTP_USER and AUDITOR_SMTP_PASSWORD" led to another refusal,
            # "refusing to send the SMTP password over an unencrypted connection")
            "it offers no STARTTLS here, and a password is never sent unencrypted: use smtps:// (port 465) "
            "or smtp+starttls:// on its submission port (587), with AUDITOR_SMTP_USER and "
            "AUDITOR_SMTP_PASSWORD set",
        ),
        (
            b"451 4.3.0 queue full\r\n",
            "the sender auditor@example.org was refused for now (451 4.3.0 queue full)",
            LATER,
        ),
        (
            b"400 4.0.0 not now\r\n",
            "the sender auditor@example.org was refused for now (400 4.0.0 not now)",
            LATER,
        ),
        (
            b"499 4.0.0 not now\r\n",
            "the sender auditor@example.org was refused for now (499 4.0.0 not now)",
            LATER,
        ),
        (
            b"553 5.7.1 sender not allowed\r\n",
            "the sender auditor@example.org was refused (553 5.7.1 sender not allowed)",
            None,
        ),
    ],
    ids=["530-login-first", "451", "400", "499", "553"],
)
def test_a_refused_sender_is_worded_by_its_answer(sample, answer, said, hint) -> None:
    message = build_message(
        bundle_from_input(sample.data), to=["a@example.org"], sender="auditor@example.org"
    )
    server = Scripted({b"MAIL": answer})
    error = _refused(server, message)
    assert (error.message, error.hint) == (
        f"{server.where}: {said}",
        hint,
    )
    assert server.commands(b"RCPT") == []


def test_a_login_asked_for_on_an_encrypted_session_says_which_settings(sample, tls_files) -> None:
    message = build_message(bundle_from_input(sample.data), to=["a@example.org"])
    server = Scripted({b"MAIL": b"530 5.7.0 Authentication required\r\n"}, tls=tls_files)
    with pytest.raises(DeliveryError) as raised:
        send(message, server.url("smtps"), cafile=tls_files[0], environ={}, timeout=5)
    assert raised.value.hint == "set AUDITOR_SMTP_USER and AUDITOR_SMTP_PASSWORD"


# --------------------------------------------------------------------------------------------------
# Delivered is delivered


def test_a_connection_dropped_at_quit_still_counts_as_sent(sample) -> None:
    message = build_message(bundle_from_input(sample.data), to=["a@example.org"])
    server = Scripted({b"QUIT": b""})  # no answer: the server hangs up
    send(message, server.url(), environ={}, timeout=5)  # no error
    assert server.done.wait(5)
    assert [line.split()[0].upper() for line in server.heard] == [b"EHLO", b"MAIL", b"RCPT", b"DATA", b"QUIT"]


# --------------------------------------------------------------------------------------------------
# Logging in: which mechanism, whose credentials


def _plain_credentials(server: Scripted) -> tuple[str, str]:
    """The user name and password an ``AUTH PLAIN <blob>`` carried."""
    (command,) = server.commands(b"AUTH PLAIN")
    _, user, password = base64.b64decode(command.split()[2]).decode().split("\0")
    return user, password


def _auth_mechanisms(server: Scripted) -> list[str]:
    return [line.split()[1].decode().upper() for line in server.commands(b"AUTH")]


def test_plain_goes_first_whatever_order_the_server_offers(sample, tls_files) -> None:
    message = build_message(bundle_from_input(sample.data), to=["a@example.org"])
    server = Scripted({b"EHLO": OFFERS_LOGIN, b"AUTH": b"235 2.7.0 ok\r\n"}, tls=tls_files)
    environ = {"AUDITOR_SMTP_USER": "mailer", "AUDITOR_SMTP_PASSWORD": PASSWORD}
    send(message, server.url("smtps"), cafile=tls_files[0], environ=environ, timeout=5)
    assert _auth_mechanisms(server) == ["PLAIN"]
    assert _plain_credentials(server) == ("mailer", PASSWORD)


def test_a_mechanism_the_server_does_not_take_gives_way_to_the_next(sample, tls_files) -> None:
    message = build_message(bundle_from_input(sample.data), to=["a@example.org"])
    not_this = b"504 5.5.4 mechanism not available\r\n"
    server = Scripted(
        {
            b"EHLO": OFFERS_LOGIN,
            b"AUTH:PLAIN": not_this,
            b"AUTH:LOGIN": not_this,
            b"AUTH": b"334 PDEyMz4=\r\n",  # CRAM-MD5's challenge
            b"CHALLENGE": b"235 2.7.0 ok\r\n",
        },
        tls=tls_files,
    )
    environ = {"AUDITOR_SMTP_USER": "mailer", "AUDITOR_SMTP_PASSWORD": PASSWORD}
    send(message, server.url("smtps"), cafile=tls_files[0], environ=environ, timeout=5)
    assert _auth_mechanisms(server) == ["PLAIN", "LOGIN", "CRAM-MD5"]
    # every mechanism refused in that way: the last refusal is the error, after all three
    server = Scripted(
        {b"EHLO": OFFERS_LOGIN, b"AUTH:PLAIN": not_this, b"AUTH:LOGIN": not_this, b"AUTH:CRAM-MD5": not_this},
        tls=tls_files,
    )
    with pytest.raises(DeliveryError) as raised:
        send(message, server.url("smtps"), cafile=tls_files[0], environ=environ, timeout=5)
    assert raised.value.message == (
        f"smtps://{server.host}:{server.port}: the server refused the login of mailer (504 5.5.4 mechanism "
        "not available)"
    )
    assert _auth_mechanisms(server) == ["PLAIN", "LOGIN", "CRAM-MD5"]


def test_refused_credentials_are_tried_once(sample, tls_files) -> None:
    # 535 is about the credentials: another mechanism would be one more failed login against the
    # account's lockout policy
    message = build_message(bundle_from_input(sample.data), to=["a@example.org"])
    server = Scripted(
        {b"EHLO": OFFERS_LOGIN, b"AUTH": b"535 5.7.8 Authentication credentials invalid\r\n"}, tls=tls_files
    )
    environ = {"AUDITOR_SMTP_USER": "mailer", "AUDITOR_SMTP_PASSWORD": PASSWORD}
    with pytest.raises(DeliveryError):
        send(message, server.url("smtps"), cafile=tls_files[0], environ=environ, timeout=5)
    assert _auth_mechanisms(server) == ["PLAIN"]


def test_a_temporary_login_failure_is_tried_once_and_called_temporary(sample, tls_files) -> None:
    # Found by a probe: a 454 was "the server refused the login" with the hint to check a correct
    # password, after a second login attempt with another mechanism
    message = build_message(bundle_from_input(sample.data), to=["a@example.org"])
    server = Scripted(
        {b"EHLO": OFFERS_LOGIN, b"AUTH": b"454 4.7.0 Temporary authentication failure\r\n"}, tls=tls_files
    )
    environ = {"AUDITOR_SMTP_USER": "mailer", "AUDITOR_SMTP_PASSWORD": PASSWORD}
    with pytest.raises(DeliveryError) as raised:
        send(message, server.url("smtps"), cafile=tls_files[0], environ=environ, timeout=5)
    assert raised.value.message == (
        f"smtps://{server.host}:{server.port}: the login of mailer failed for now, a temporary failure "
        "(454 4.7.0 Temporary authentication failure)"
    )
    assert raised.value.hint == LATER
    assert _auth_mechanisms(server) == ["PLAIN"]


def test_a_small_message_refused_for_its_size_says_its_size_in_kilobytes(message) -> None:
    # "the message (0.0 MB) is larger than the server accepts"
    server = Scripted({b"END": b"552 5.3.4 Message size exceeds fixed maximum message size\r\n"})
    error = _refused(server, message)
    size = len(bytes(message))
    assert size < 100_000
    assert f"the message ({round(size / 1000)} KB) is larger than the server accepts" in error.message


@pytest.mark.parametrize(
    ("argument", "url_user", "environ", "expected"),
    [
        # the argument first, then the URL's user name, then AUDITOR_SMTP_USER
        (("alice", None), "bob", {"AUDITOR_SMTP_USER": "carol", "AUDITOR_SMTP_PASSWORD": PASSWORD}, "alice"),
        ((None, None), "bob", {"AUDITOR_SMTP_USER": "carol", "AUDITOR_SMTP_PASSWORD": PASSWORD}, "bob"),
        ((None, None), None, {"AUDITOR_SMTP_USER": "carol", "AUDITOR_SMTP_PASSWORD": PASSWORD}, "carol"),
        # a password given as an argument wins over the environment's
        (("alice", "arg-Passw0rd"), None, {"AUDITOR_SMTP_PASSWORD": PASSWORD}, "alice"),
    ],
    ids=["argument", "url-user", "environment", "argument-password"],
)
def test_whose_credentials_are_sent(sample, tls_files, argument, url_user, environ, expected) -> None:
    message = build_message(bundle_from_input(sample.data), to=["a@example.org"])
    server = Scripted({b"EHLO": OFFERS_LOGIN, b"AUTH": b"235 2.7.0 ok\r\n"}, tls=tls_files)
    username, password = argument
    send(
        message,
        server.url("smtps", url_user),
        username=username,
        password=password,
        cafile=tls_files[0],
        environ=environ,
        timeout=5,
    )
    assert _plain_credentials(server) == (expected, password or PASSWORD)


def test_a_message_longer_to_send_than_the_timeout_is_sent_while_the_server_reads(sample) -> None:
    """Found by a probe: the timeout meant for each wait bounded the sending of the whole message
    (one sendall), so a 5 MB report over a 120 KB/s link failed after 30 s, called a lost
    connection, while the server read steadily."""
    message = EmailMessage()
    message["From"], message["To"], message["Subject"] = "a@example.org", "b@example.org", "large"
    message.set_content(("y" * 76 + "\n") * 400_000)  # 31 MB
    # read at ~10 MB/s at most: 2-3 s in all, never a pause near the 1 s timeout, and the 4 MB the
    # client's socket may still hold at the end read within it
    server = Scripted({}, sip=0.0015)
    started = time.monotonic()
    send(message, server.url(), environ={}, timeout=2)  # (2 s: no stall of a loaded machine fails it)
    assert time.monotonic() - started > 2
    assert [line.upper() for line in server.commands(b"QUIT")] == [b"QUIT"]  # delivered, then quit


def test_an_eml_to_a_text_only_standard_output_is_written_as_text(sample) -> None:
    """``--eml -`` writes bytes to standard output's buffer; a program that put a text stream in
    its place (``contextlib.redirect_stdout``) gets the same message as text."""
    import contextlib
    import io

    from auditor.render.email import write_eml

    message = build_message(bundle_from_input(sample.data), to=["a@example.org"])
    with contextlib.redirect_stdout(io.StringIO()) as out:
        write_eml(message, "-")
    text = out.getvalue()
    assert text.encode("utf-8", "surrogateescape") == message.as_bytes(
        policy=message.policy.clone(linesep="\r\n")
    )
    assert "To: a@example.org\r\n" in text
