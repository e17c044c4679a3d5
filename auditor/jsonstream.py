"""Writing a large JSON document with one list streamed into it, never holding the whole.

The document is dumped with ``[MARK]`` standing for the list; each item is then dumped alone and
indented as deep as the list sits, so the pieces joined are the bytes of dumping the document with
the list in it (``json.dumps(..., indent=N)``, or orjson's two-space indent). Used by
``auditor check --format json``, ``auditor diff --format json`` (whose document is also encoded a
piece at a time, :data:`INDENTED`) and the report's exports (``findings.json``, ``diff.json``, the
rest of whose document orjson encodes whole, in C).
"""

from __future__ import annotations

import contextlib
import json
import secrets
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TextIO

# Random, so that no catalog value (names and tags are written into the same documents) can be
# mistaken for it.
MARK = f"\x00streamed-{secrets.token_hex(16)}\x00"


class Indented:
    """``json.dumps(value, indent=2, ensure_ascii=False)`` as a callable, whose :meth:`chunks` give
    the same text in pieces: dumped whole, a document of a few hundred MB (a diff adding 120,000
    columns) was first held as the encoder's list of tens of millions of small strings (7.2 GB
    for ``auditor diff --format json``, a scale probe), then joined."""

    def __init__(self) -> None:
        self.encoder = json.JSONEncoder(indent=2, ensure_ascii=False)

    def __call__(self, value: Any) -> str:
        return self.encoder.encode(value)

    def chunks(self, value: Any) -> Iterator[str]:
        return self.encoder.iterencode(value)


INDENTED = Indented()
FLUSH = 1 << 16  # characters gathered before a piece is given out
HELD = 4096  # characters held back at the end of a piece: a marker cut in two, its '[' and indentation


def pieces(dumps: Callable[[Any], str], document: Any, items: Iterable[Any]) -> Iterator[str]:
    """The text of ``dumps(document)``, the list ``[MARK]`` in it replaced by ``items``, in pieces.

    ``dumps`` ends its text as it likes (a newline or not); the pieces end the same way. A ``dumps``
    with a ``chunks`` method (:data:`INDENTED`) is read a piece at a time, so that the document's
    whole text is never held.
    """
    marker = json.dumps(MARK)
    produce = getattr(dumps, "chunks", None)
    source = iter(produce(document) if produce is not None else (dumps(document),))
    buffer = ""
    for chunk in source:
        buffer += chunk
        # only where this chunk could complete a marker: the whole buffer, searched after each of
        # the encoder's small chunks, made the head of a large document quadratic (a review)
        if marker in buffer[-(len(chunk) + len(marker)) :]:
            break
        if len(buffer) > FLUSH:
            yield buffer[:-HELD]
            buffer = buffer[-HELD:]
    head, found, tail = buffer.partition(marker)
    if not found:
        raise ValueError("the document must hold exactly one [MARK] list")
    while not tail.strip(" \n"):  # up to the list's closing bracket
        chunk = next(source, None)
        if chunk is None:
            raise ValueError("the document ends inside its [MARK] list")
        tail += chunk
    rest = iter(items)
    first = next(rest, MARK)
    if first == MARK:  # an empty list dumps as []
        yield head.rstrip(" \n").removesuffix("[") + "[]"
        tail = tail.lstrip(" \n").removeprefix("]")
    else:
        indent = head[head.rfind("\n") + 1 :]
        yield head + dumps(first).rstrip("\n").replace("\n", "\n" + indent)
        separator = ",\n" + indent
        for item in rest:
            yield separator + dumps(item).rstrip("\n").replace("\n", "\n" + indent)
    overlap = ""  # the end of what was given out: a second marker may straddle two pieces
    for chunk in source:
        tail += chunk  # (searched once per piece given out, below)
        if len(tail) > FLUSH:
            if marker in overlap + tail:
                raise ValueError("the document must hold exactly one [MARK] list")
            yield tail
            overlap, tail = tail[-len(marker) :], ""
    if marker in overlap + tail:
        raise ValueError("the document must hold exactly one [MARK] list")
    yield tail


BATCH_CHARACTERS = 1 << 20  # a batch is given out at this many characters, however few its pieces


def batches(dumps: Callable[[Any], str], document: Any, items: Iterable[Any], size: int) -> Iterator[str]:
    """:func:`pieces` joined ``size`` at a time, or fewer once they hold :data:`BATCH_CHARACTERS`
    (fewer, larger writes; a document's own pieces are 64 KB each, and 1,000 of them held 64 MB)."""
    batch: list[str] = []
    held = 0
    with closed_after(items):  # (when this generator is closed too)
        for piece in pieces(dumps, document, items):
            batch.append(piece)
            held += len(piece)
            if len(batch) >= size or held >= BATCH_CHARACTERS:
                yield "".join(batch)
                batch.clear()
                held = 0
    if batch:
        yield "".join(batch)


def write(stream: TextIO, dumps: Callable[[Any], str], document: Any, items: Iterable[Any]) -> None:
    """:func:`pieces` written to ``stream``; ``items`` closed (a generator) when done or stopped."""
    with closed_after(items):
        for piece in pieces(dumps, document, items):
            stream.write(piece)


@contextlib.contextmanager
def closed_after(items: Iterable[Any]) -> Iterator[None]:
    """Close ``items`` after the block, however it ends, when it can be closed (a generator).

    A stream of rows read from the database holds a connection while it is suspended. Stopped
    midway (Ctrl-C, SIGTERM), it stayed suspended for as long as the stop's traceback was kept (to
    the interpreter's exit, where closing it failed with "Exception ignored ... TypeError"); closed
    here, it lets go of its connection at once."""
    try:
        yield
    finally:
        close = getattr(items, "close", None)
        if callable(close):
            close()
