"""``auditor.secrets.redact_bytes``: the registered secrets masked in a response body's bytes."""

from __future__ import annotations

import json
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
    # the documented limit: \uXXXX spellings are not searched
    unicode_escaped = b'{"a": "\\u0073k/abc/def"}'
    assert json.loads(unicode_escaped)["a"] == key
    assert secrets.redact_bytes(unicode_escaped) == (unicode_escaped, 0)
