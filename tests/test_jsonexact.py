"""``auditor.jsonexact``: JSON read with every number as written, fast for the usual text."""

from __future__ import annotations

import json

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from auditor.jsonexact import loads

values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=4),
    max_leaves=20,
)


@given(values)
def test_every_value_reads_back_as_the_standard_library_reads_it(value):
    # integers of any size included: orjson alone read those past 64 bits as floats
    text = json.dumps(value)
    assert loads(text.encode()) == json.loads(text)
    assert loads(text) == json.loads(text)


def test_numbers_too_large_for_a_double_stay_text_and_non_json_is_refused():
    assert loads(b'{"size": 1e400, "id": 98765432109876543210}') == {
        "size": "1e400",
        "id": 98765432109876543210,
    }
    assert loads('["12345678901234567890123", 1]') == ["12345678901234567890123", 1]  # in a string
    for text in (b"[NaN]", b"[1, Infinity]", b"[NaN, 12345678901234567890123]", b"{"):
        with pytest.raises(orjson.JSONDecodeError):
            loads(text)


@pytest.mark.parametrize(
    "text",
    [
        b'{"fqn": "a.b.\\ud800c", "size": 1e400}',  # escaped, beside a number orjson refuses
        b'{"fqn": "a.b.\\udc00c", "id": 98765432109876543210}',  # a low one, beside a long integer
        b'{"fqn": "a.b.\xed\xa0\x80c", "size": 1e400}',  # its UTF-8-like bytes
        '{"fqn": "a.b.\\ud800c", "size": 1e400}',
    ],
)
def test_a_lone_surrogate_is_not_json_whichever_decoder_reads_the_text(text):
    # Found by a probe: the exact decoder took what orjson refuses, and the page's surrogate then
    # failed the write that marks the run failed (an internal error, the run left running).
    with pytest.raises(orjson.JSONDecodeError, match="surrogate"):
        loads(text)
    assert loads(b'{"ok": "\\ud83d\\ude00", "size": 1e400}') == {"ok": "\U0001f600", "size": "1e400"}


def test_lone_surrogate_escapes_read_as_the_replacement_character_however_deep():
    from auditor.jsonexact import MAX_SURROGATE_DEPTH, loads_replacing_lone_surrogates

    assert loads_replacing_lone_surrogates(b'{"a": ["x\\ud83d", {"\\udc00k": 98765432109876543210}]}') == {
        "a": ["x\ufffd", {"\ufffdk": 98765432109876543210}]
    }
    # as deep as orjson can write it back, read; deeper, refused as JSON in orjson's words (not a
    # RecursionError escaping as an internal error), whatever the interpreter's recursion limit
    arrays = MAX_SURROGATE_DEPTH - 1  # and an object inside the last
    kept = b"[" * arrays + b'{"k": "\\ud83d"}' + b"]" * arrays
    value = loads_replacing_lone_surrogates(kept)
    assert orjson.loads(orjson.dumps(value)) == value
    for depth in (MAX_SURROGATE_DEPTH + 1, 950, 5000):
        deep = b"[" * depth + b'"\\ud83d"' + b"]" * depth
        with pytest.raises(orjson.JSONDecodeError):
            loads_replacing_lone_surrogates(deep)
