"""Writing a large JSON document with one list streamed into it, never holding the whole.

The document is dumped with ``[MARK]`` standing for the list; each item is then dumped alone and
indented as deep as the list sits, so the pieces joined are the bytes of dumping the document with
the list in it (``json.dumps(..., indent=N)``, or orjson's two-space indent). Used by
``auditor check --format json`` and the report's exports (``findings.json``, ``diff.json``).
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


def pieces(dumps: Callable[[Any], str], document: Any, items: Iterable[Any]) -> Iterator[str]:
    """The text of ``dumps(document)``, the list ``[MARK]`` in it replaced by ``items``, in pieces.

    ``dumps`` ends its text as it likes (a newline or not); the pieces end the same way.
    """
    text = dumps(document)
    marker = json.dumps(MARK)
    head, found, tail = text.partition(marker)
    if not found or marker in tail:
        raise ValueError("the document must hold exactly one [MARK] list")
    rest = iter(items)
    first = next(rest, MARK)
    if first == MARK:  # an empty list dumps as []
        yield head.rstrip(" \n").removesuffix("[") + "[]" + tail.lstrip(" \n").removeprefix("]")
        return
    indent = head[head.rfind("\n") + 1 :]
    yield head + dumps(first).rstrip("\n").replace("\n", "\n" + indent)
    separator = ",\n" + indent
    for item in rest:
        yield separator + dumps(item).rstrip("\n").replace("\n", "\n" + indent)
    yield tail


def batches(dumps: Callable[[Any], str], document: Any, items: Iterable[Any], size: int) -> Iterator[str]:
    """:func:`pieces` joined ``size`` at a time (fewer, larger writes)."""
    batch: list[str] = []
    with closed_after(items):  # (when this generator is closed too)
        for piece in pieces(dumps, document, items):
            batch.append(piece)
            if len(batch) >= size:
                yield "".join(batch)
                batch.clear()
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
