"""A JSON document with one list streamed into it reads, byte for byte, as the document dumped whole.

``auditor diff --format json`` and the report's exports write documents of hundreds of MB this way:
the list (the still-open findings) is streamed from the database, and for the diff, with
:data:`INDENTED`, the rest of the document is encoded a piece at a time too (dumped whole, a diff
adding 120,000 columns took 7.2 GB, a scale probe). These properties hold the pieces to
``json.dumps`` of the whole document, with pieces cut small so that every boundary (a marker cut in
two, the list's bracket) is crossed.
"""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from auditor import jsonstream

SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(allow_nan=False), st.text(max_size=30)
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=25,
)


def whole(document: dict, path: tuple[str, ...], items: list) -> str:
    """The document dumped whole, the list at ``path`` holding ``items``."""
    target = document
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = items
    return json.dumps(document, indent=2, ensure_ascii=False)


class ByCharacter:
    """A dumps whose chunks are single characters: every cut a chunked encoder could make."""

    def __call__(self, value):
        return json.dumps(value, indent=2, ensure_ascii=False)

    def chunks(self, value):
        return iter(self(value))


DUMPS = (jsonstream.INDENTED, ByCharacter(), lambda value: json.dumps(value, indent=2, ensure_ascii=False))


@pytest.fixture
def small_pieces(monkeypatch):  # (the same for every example: not reset between them, and no need)
    monkeypatch.setattr(jsonstream, "FLUSH", 96)
    # the marker (55 characters) with its '[' and indentation, and less than the document
    monkeypatch.setattr(jsonstream, "HELD", 72)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    before=st.dictionaries(st.text(max_size=8), VALUES, max_size=4),
    after=st.dictionaries(st.text(max_size=8), VALUES, max_size=4),
    items=st.lists(VALUES, max_size=6),
    nested=st.booleans(),
)
def test_the_pieces_are_the_document_dumped_whole(small_pieces, before, after, items, nested):
    # the streamed list in the middle of the document, at the top or one level down
    inner = {"x": 1, "list": [jsonstream.MARK], "y": after} if nested else [jsonstream.MARK]
    document = {f"a{k}": v for k, v in before.items()}
    document |= {"streamed": inner, **{f"z{k}": v for k, v in after.items()}}
    path = ("streamed", "list") if nested else ("streamed",)
    for dumps in DUMPS:
        streamed = "".join(jsonstream.pieces(dumps, json.loads(json.dumps(document)), iter(items)))
        assert streamed == whole(json.loads(json.dumps(document)), path, items)


def test_a_large_document_is_given_out_in_pieces_not_whole():
    document = {"columns": [{"n": i, "name": "x" * 50} for i in range(20_000)], "open": [jsonstream.MARK]}
    sizes = [len(piece) for piece in jsonstream.pieces(jsonstream.INDENTED, document, iter([{"f": 1}]))]
    assert sum(sizes) == len(whole(document, ("open",), [{"f": 1}]))
    assert max(sizes) < 2 * jsonstream.FLUSH + 4096 and len(sizes) > 20


@pytest.mark.parametrize("dumps", DUMPS[:2])
@pytest.mark.parametrize("marks", [0, 2])
def test_a_document_without_exactly_one_mark_is_refused(small_pieces, marks, dumps):
    for filler in range(0, 200, 3):  # the second mark anywhere, cut between two pieces too
        document = {"a": [jsonstream.MARK] if marks else [], "b": "x" * filler}
        document["c"] = [jsonstream.MARK] if marks else []
        with pytest.raises(ValueError, match=r"exactly one \[MARK\] list"):
            "".join(jsonstream.pieces(dumps, document, iter([1])))


def test_the_pieces_cost_about_what_dumping_the_document_whole_costs():
    """A review: the marker was searched for in the whole 64 KB buffer after each of the encoder's
    small chunks, so a document whose bulk comes before the list (a diff's clusters and columns)
    took 8x as long as dumping it whole. Both are timed alike here, so a loaded machine slows both."""
    import time

    document = {"columns": [{"n": i, "name": "x" * 20, "tags": [1, 2]} for i in range(30_000)]}
    document["open"] = [jsonstream.MARK]

    def timed(work) -> float:
        best = float("inf")
        for _ in range(3):
            started = time.perf_counter()
            work()
            best = min(best, time.perf_counter() - started)
        return best

    streamed = timed(lambda: "".join(jsonstream.pieces(jsonstream.INDENTED, document, iter([1]))))
    whole_text = timed(lambda: json.dumps(document, indent=2, ensure_ascii=False))
    assert streamed < 5 * whole_text, (streamed, whole_text)  # ~1.3-1.8x; the search in full was 8-13x


def test_batches_hold_a_bounded_number_of_characters():
    document = {"columns": ["x" * 100] * 50_000, "open": [jsonstream.MARK]}
    sizes = [len(batch) for batch in jsonstream.batches(jsonstream.INDENTED, document, iter([1]), 1000)]
    assert max(sizes) < jsonstream.BATCH_CHARACTERS + 2 * jsonstream.FLUSH
    assert len(sizes) >= 5
