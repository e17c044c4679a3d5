"""``auditor.secrets.redact_bytes``: the registered secrets masked in a response body's bytes."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator

import pytest

from auditor import secrets


@pytest.fixture(autouse=True)
def _no_secrets() -> Iterator[None]:
    secrets.forget_all()
    yield
    secrets.forget_all()


def test_redact_bytes_without_secrets_returns_the_same_object():
    content = b'{"name": "anything at all"}'
    out, count = secrets.redact_bytes(content)
    assert out is content and count == 0
    secrets.register("sk-some-key")
    out, count = secrets.redact_bytes(content)  # nothing matches: the same object too
    assert out is content and count == 0


def test_redact_bytes_masks_the_longest_secret_first():
    secrets.register("abcd1234")
    secrets.register("abcd1234EFGH")  # contains the other: masked whole, not as ***EFGH
    out, count = secrets.redact_bytes(b'["abcd1234EFGH", "x abcd1234 y", "abcd1234"]')
    assert out == b'["***", "x *** y", "***"]' and count == 3


def test_redact_bytes_masks_the_escaped_slash_form():
    key = "sk/abc/def"
    secrets.register(key)
    content = json.dumps({"plain": key, "escaped": "@"}).replace("@", key.replace("/", "\\/")).encode()
    assert json.loads(content)["escaped"] == key  # the form a JSON encoder may write
    out, count = secrets.redact_bytes(content)
    assert count == 2 and json.loads(out) == {"plain": "***", "escaped": "***"}


@pytest.mark.parametrize(
    "spelling",
    [
        "sk\\u002dAB\\/cd\\u003Dx",  # Gson writes = as \u003d; some encoders escape - and /
        "sk-AB\\u002fcd=x",  # a slash as \u002f, the rest literal
        "sk\\u002DAB/cd\\u003dx",  # hex digits in either case
    ],
)
def test_redact_bytes_masks_every_json_spelling(spelling: str):
    key = "sk-AB/cd=x"
    secrets.register(key)
    content = b'{"a": "' + spelling.encode() + b'", "b": "before ' + spelling.encode() + b' after"}'
    assert json.loads(content) == {"a": key, "b": f"before {key} after"}
    out, count = secrets.redact_bytes(content)
    assert count == 2 and json.loads(out) == {"a": "***", "b": "before *** after"}


def test_redact_bytes_masks_non_ascii_secrets_written_ascii_only():
    key = "clé-😀-secret"
    secrets.register(key)
    for content in (json.dumps([key]).encode(), json.dumps([key], ensure_ascii=False).encode()):
        out, count = secrets.redact_bytes(content)
        assert (json.loads(out), count) == (["***"], 1)


def test_redact_bytes_leaves_escaped_letters_alone():
    """The documented limit: no JSON encoder escapes letters or digits, so those spellings are not
    searched, and a body that only looks like the key is left intact."""
    secrets.register("sk/abc/def")
    letters_escaped = b'{"a": "\\u0073k/abc/def", "b": "sk/abc/de"}'
    assert json.loads(letters_escaped)["a"] == "sk/abc/def"
    assert secrets.redact_bytes(letters_escaped) == (letters_escaped, 0)


def test_scrub_cut_masks_a_key_cut_at_either_end_of_an_excerpt():
    secrets.register("sk-PROBE-2-zz9")
    assert secrets.scrub_cut('"columnName": "prefix sk-PROBE-2-') == '"columnName": "prefix ***'
    assert secrets.scrub_cut("BE-2-zz9 end of the window") == "*** end of the window"
    assert secrets.scrub_cut("both sk-PROBE-2-zz9 and sk-PR") == "both *** and ***"
    # fewer characters than the shortest key accepted, or none of a key: left as they are
    assert secrets.scrub_cut("ends with sk-") == "ends with sk-"
    assert secrets.scrub_cut("nothing here") == "nothing here"
    secrets.forget_all()
    assert secrets.scrub_cut("sk-PROBE-2-") == "sk-PROBE-2-"  # no secret registered


def test_scrub_cut_masks_a_cut_key_in_its_json_spellings():
    secrets.register("sk-AB/cd=ef/gh")
    assert secrets.scrub_cut('"echo sk-AB\\/cd\\u003def') == '"echo ***'  # as Gson and PHP write it
    assert secrets.scrub_cut("\\u003def\\/gh tail") == "*** tail"
    assert secrets.scrub_cut("sk-AB\\/c") == "***"
    assert secrets.scrub_cut("sk-AB\\") == "***"  # cut inside the escape of '/'
    assert secrets.scrub_cut("sk-\\") == "sk-\\"  # three characters of a key are not masked
    assert secrets.scrub_cut("echo sk-AB\\/cd\\u0") == "echo ***"  # cut inside an escape
    assert secrets.scrub_cut("03def\\/gh tail") == "*** tail"


def test_scrub_cut_masks_a_run_of_a_key_anywhere_in_a_servers_text():
    # Found by a security probe: a 404 body quoting the key cut short mid-message, or with one
    # character JSON-escaped in a body that is not JSON, was stored in the run's error and shown
    secrets.register("Kf8QzLw2pVx7NmR4tYb1", credential=True)
    secrets.register("my-database-password-2026")  # a password's words are ordinary: not in runs
    assert secrets.scrub_cut("token 'Kf8QzLw2pVx7NmR...' may not read c3") == "token '***...' may not read c3"
    assert secrets.scrub_cut("auth=Kf8QzLw2pV\\u0078x7NmR4tYb1 refused") == "auth=***\\u0078*** refused"
    assert secrets.scrub_cut("as typed: kf8qzlw2pvx7nmr4 (lower case)") == "as typed: *** (lower case)"
    # seven characters of it, or none: left as they are
    assert secrets.scrub_cut("see Kf8QzLw for details") == "see Kf8QzLw for details"
    assert secrets.scrub_cut("cluster c3 is not readable") == "cluster c3 is not readable"
    assert secrets.scrub_cut("the database-password policy") == "the database-password policy"


def test_a_secret_is_masked_in_its_base64_and_percent_encoded_spellings_too():
    """An SMTP server echoing the AUTH LOGIN exchange (the password in base64), or an error quoting
    a URL (percent-encoded), printed the password in a form the plain one did not catch."""
    import base64
    from urllib.parse import quote

    secrets.forget_all()
    password = "pä55:w/rd#1"
    secrets.register(password)
    encoded = base64.b64encode(password.encode()).decode()
    said = f"535 bad credentials {encoded} for {quote(password, safe='')} ({password})"
    assert secrets.scrub(said) == "535 bad credentials *** for *** (***)"
    secrets.forget_all()


def test_a_secret_percent_encoded_more_than_quote_writes_is_masked_and_other_escapes_stay():
    """A server quoting the key from a URL may escape unreserved characters too (%2D for '-'), in
    either case of hex; such a run is shown decoded and masked. Escapes without a secret are kept,
    and a long text with a stray '%' is scanned in one pass."""
    import time

    secrets.forget_all()
    secrets.register("KEY-7f3a9-SECRET", credential=True)
    assert secrets.scrub("auth=KEY%2D7f3a9%2DSECRET, id=K%45Y%2d7f3a9%2dSECRET!") == "auth=***, id=***!"
    assert secrets.scrub("see /a%20b?q=100%25 and 100% done %zz") == "see /a%20b?q=100%25 and 100% done %zz"
    # the whole run between spaces and quotes is shown decoded once it holds the key
    assert secrets.scrub("user=bob%40x&auth=KEY%2D7f3a9%2DSECRET%26more") == "user=bob@x&auth=***&more"
    # a base64 key quoted as quote() does by default ('/' kept), and with every character escaped
    secrets.register("Kf8QzLw2+pVx7/NmRabc", credential=True)
    said = "GET /x?key=Kf8QzLw2%2BpVx7/NmRabc failed; retried as 'q=Kf8QzLw2%2bpVx7%2fNmRabc'"
    assert secrets.scrub(said) == "GET /x?key=*** failed; retried as 'q=***'"
    started = time.perf_counter()
    assert secrets.scrub("a" * 200_000 + "%" + "b" * 200_000) == "a" * 200_000 + "%" + "b" * 200_000
    assert time.perf_counter() - started < 1.0
    secrets.forget_all()


@pytest.mark.parametrize("name", ["auditor.bigid", "auditor.store", "auditor.snapshot", "auditor.pipeline"])
def test_the_packages_own_log_records_are_scrubbed_without_the_cli(name: str, caplog):
    """A program using the library installs its own handlers (here pytest's, on the root logger),
    never :func:`secrets.install_log_filter`: the package's loggers scrub their records themselves."""
    import importlib

    for module in ("auditor.bigid.client", "auditor.store.db", "auditor.snapshot", "auditor.pipeline"):
        importlib.import_module(module)
    secrets.register("sk-LOGGED-key-1")
    with caplog.at_level(logging.DEBUG):
        logging.getLogger(name).debug("sent %s", "Bearer sk-LOGGED-key-1")
    assert [r.getMessage() for r in caplog.records] == ["sent Bearer ***"]


def test_the_tutorial_s_public_sample_key_masks_nothing_in_later_messages():
    """Found by a library probe: after one run on the built-in sandbox (key SAMPLE), the process
    showed 'cannot write /x/SAMPLE-report.html' as 'cannot write /x/***-report.html'."""
    from auditor.bigid.client import BigIDClient, ClientOptions
    from auditor.sandbox.config import DEFAULT_TOKEN

    BigIDClient(ClientOptions(url="http://127.0.0.1:9", token=DEFAULT_TOKEN)).close()
    assert secrets.scrub("cannot write /x/SAMPLE-report.html") == "cannot write /x/SAMPLE-report.html"
    secrets.register("SAMPLE-but-a-real-key")  # a real key is masked as ever
    assert secrets.scrub("key SAMPLE-but-a-real-key here") == "key *** here"
