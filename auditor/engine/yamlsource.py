"""Safe YAML loading that remembers where every value came from.

Rule files, waiver files and rule fixtures are reviewed like code, so every problem must point at a
``file:line:column``. :func:`load_yaml` parses with a safe loader (no object construction; libyaml's
``CSafeLoader`` when PyYAML has it, several times faster on large files) that builds
:class:`LocDict` / :class:`LocList` containers carrying the position of each key and value, and
that *records* duplicate keys as problems instead of silently keeping the last one.
:class:`Problems` collects messages so that validation can report everything at once.

Before anything is built, the parsed node graph is measured: a document nested deeper than
:data:`MAX_DEPTH` levels, or whose aliases would expand it by more than :data:`MAX_ALIAS_EXPANSION`
values (a "billion laughs" file), is a problem instead of a crash or a hang in whatever walks the
values afterwards.
"""

from __future__ import annotations

import re
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, SequenceNode

MAX_DEPTH = 64
"""Deepest nesting of mappings and lists accepted in a rule, waiver or fixture file."""

MAX_ALIAS_EXPANSION = 100_000
"""Most values that aliases (``*name``) may add to a document once expanded."""


@dataclass(frozen=True)
class Mark:
    """A 1-based position in a source file."""

    line: int
    column: int

    @classmethod
    def of(cls, node: Node) -> Mark:
        return cls(node.start_mark.line + 1, node.start_mark.column + 1)


class LocDict(dict[Any, Any]):
    """A mapping that knows where it, each of its keys and each of its values start."""

    mark: Mark
    key_marks: dict[Any, Mark]
    value_marks: dict[Any, Mark]


class LocList(list[Any]):
    """A sequence that knows where it and each of its items start."""

    mark: Mark
    marks: list[Mark]


@dataclass
class Problems:
    """Every problem found in a set of files, each formatted ``file:line:column: message``."""

    # (file, line, column, the formatted problem), in the order found, each once: a YAML anchor's
    # node reached through each of its aliases (a merge key, *cond used twice) was the same problem
    # at the same place five times in "6 problems" (a probe)
    _found: dict[tuple[str, int, int, str], None] = field(default_factory=dict, repr=False)

    def add(self, source: str, mark: Mark | None, message: str) -> None:
        line, column = (mark.line, mark.column) if mark else (1, 1)
        self._found[(source, line, column, f"{source}:{line}:{column}: {message}")] = None

    @property
    def items(self) -> list[str]:
        """The problems in the order they were found."""
        return [text for _source, _line, _column, text in self._found]

    def in_order(self) -> list[str]:
        """The problems file by file (in the order the files were read), each file's top to bottom:
        checks run rule part by rule part, so they are found out of order."""
        files: dict[str, int] = {}
        for source, _line, _column, _text in self._found:
            files.setdefault(source, len(files))
        ordered = sorted(self._found, key=lambda found: (files[found[0]], found[1], found[2]))
        return [text for _source, _line, _column, text in ordered]

    def __bool__(self) -> bool:
        return bool(self._found)

    def __len__(self) -> int:
        return len(self._found)


_Base = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml's parser, when PyYAML has it


class _Loader(_Base):  # type: ignore[misc,valid-type]
    """SafeLoader building Loc containers and noting duplicate keys."""

    def __init__(self, stream: str, source: str, problems: Problems) -> None:
        super().__init__(stream)
        self.source = source
        self.problems = problems


_MERGE_TAG = "tag:yaml.org,2002:merge"


def _construct_mapping(loader: _Loader, node: MappingNode) -> LocDict:
    """A mapping with the position of each key and value; a key written twice is a problem.

    Merge keys (``<<: *defaults``, ``<<: [*a, *b]``) follow the YAML spec: a key written in the
    mapping itself overrides a merged one (it is no duplicate), and among merged mappings the
    first listed wins. (PyYAML's own merging let the merged value win over a key written beside
    it, and the last of a list over the first.)
    """
    result = LocDict()
    result.mark = Mark.of(node)
    result.key_marks = {}
    result.value_marks = {}
    merges: list[tuple[Node, Node]] = []
    for key_node, value_node in node.value:
        if key_node.tag == _MERGE_TAG:
            if merges:  # two merge keys in one mapping: a duplicate key like any other
                loader.problems.add(
                    loader.source,
                    Mark.of(key_node),
                    f"duplicate key '<<' (first defined at line {Mark.of(merges[0][0]).line}); "
                    "merge several mappings with one key and a list: <<: [*a, *b]",
                )
                continue
            merges.append((key_node, value_node))
            continue
        if key_node.tag == "tag:yaml.org,2002:value":  # '=' as a key: plain text, as PyYAML reads it
            key_node.tag = "tag:yaml.org,2002:str"
        key = loader.construct_object(key_node, deep=True)
        if not isinstance(key, Hashable):
            loader.problems.add(loader.source, Mark.of(key_node), "a mapping key must be a plain value")
            continue
        if key in result:
            first = result.key_marks[key]
            loader.problems.add(
                loader.source,
                Mark.of(key_node),
                f"duplicate key {key!r} (first defined at line {first.line}); each key may appear once",
            )
            continue
        result[key] = loader.construct_object(value_node, deep=True)
        result.key_marks[key] = Mark.of(key_node)
        result.value_marks[key] = Mark.of(value_node)
    for merge_key, merge in merges:
        reported = False
        for source in merge.value if isinstance(merge, SequenceNode) else [merge]:
            # a tagged mapping (!!set, !!omap) is no mapping to merge either
            merged = loader.construct_object(source, deep=True) if isinstance(source, MappingNode) else None
            if not isinstance(merged, LocDict):
                if not reported:  # once per merge key, not once per item of a merged list
                    reported = True
                    _bad_merge(loader, merge_key, merge)
                continue
            for key, value in merged.items():
                if key not in result:
                    result[key] = value
                    result.key_marks[key] = merged.key_marks[key]
                    result.value_marks[key] = merged.value_marks[key]
    return result


def _bad_merge(loader: _Loader, merge_key: Node, merge: Node) -> None:
    """Report a merge of something other than mappings at its ``<<`` key.

    Not at the value: an alias's node carries the position of its anchor, which may be far from
    (or in another rule than) the mapping that merges it.
    """
    key, value = Mark.of(merge_key), Mark.of(merge)
    where = "" if value.line == key.line else f" (the value merged is at line {value.line})"
    loader.problems.add(loader.source, key, f"a merge key (<<) takes a mapping or a list of mappings{where}")


def _construct_sequence(loader: _Loader, node: SequenceNode) -> LocList:
    result = LocList(loader.construct_object(child, deep=True) for child in node.value)
    result.mark = Mark.of(node)
    result.marks = [Mark.of(child) for child in node.value]
    return result


def _construct_timestamp(loader: _Loader, node: Node) -> Any:
    """A date or datetime; an impossible one (``2027-02-30``) stays text, for validation to report.

    PyYAML raises a bare ``ValueError`` (no position) for a well-formed but impossible date.
    """
    try:
        return yaml.SafeLoader.construct_yaml_timestamp(loader, node)
    except ValueError:
        return loader.construct_scalar(node)


# YAML 1.1 integers that do not read as what they look like: 0123 is octal (83), 1:30 base 60 (90).
# A rule or fixture value written so means the text ('0123', a column name of zip codes) or the
# decimal number, never those: kept as text, so that a text field compares it as written and a
# number field names it as text, where 83 in an error did not read as anything the author wrote.
_SURPRISING_INT = re.compile(r"[-+]?(0[0-7_]+|[1-9][0-9_]*(:[0-5]?[0-9])+)")


def _construct_int(loader: _Loader, node: Node) -> Any:
    if isinstance(node.value, str) and _SURPRISING_INT.fullmatch(node.value):
        return node.value
    try:
        return yaml.constructor.SafeConstructor.construct_yaml_int(loader, node)
    except ValueError:  # more digits than Python converts (4,300): "internal error" before
        raise yaml.constructor.ConstructorError(
            None, None, "an integer with more digits than any count or threshold can hold", node.start_mark
        ) from None


_Loader.add_constructor("tag:yaml.org,2002:int", _construct_int)
_Loader.add_constructor("tag:yaml.org,2002:timestamp", _construct_timestamp)
_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)
_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_SEQUENCE_TAG, _construct_sequence)


def load_yaml(text: str, source: str, problems: Problems) -> Any:
    """Parse ``text``; syntax errors, duplicate keys and oversized documents go to ``problems``.

    Returns the document (``None`` for an empty one, a syntax error or a document refused by
    :func:`_measure`).
    """
    loader = _Loader(text, source, problems)
    try:
        node = loader.get_single_node()
        if node is None or not _measure(node, source, problems):
            return None
        return loader.construct_document(node)
    except yaml.MarkedYAMLError as exc:
        problems.add(source, *_yaml_error(exc, text))
        return None
    except yaml.reader.ReaderError as exc:  # a character YAML does not allow: where it is, in our words
        before = text[: exc.position]
        where = Mark(before.count("\n") + 1, exc.position - (before.rfind("\n") + 1) + 1)
        character = exc.character if isinstance(exc.character, int) else ord(exc.character)
        problems.add(source, where, f"invalid YAML: character U+{character:04X}: {exc.reason}")
    except yaml.YAMLError as exc:
        problems.add(source, None, f"invalid YAML: {exc}")
        return None
    except RecursionError:
        problems.add(source, None, f"the YAML is nested too deeply (at most {MAX_DEPTH} levels)")
        return None
    finally:
        loader.dispose()


def _children(node: Node) -> list[Node]:
    if isinstance(node, SequenceNode):
        return list(node.value)
    if isinstance(node, MappingNode):
        return [part for pair in node.value for part in pair]
    return []


def _yaml_error(exc: yaml.MarkedYAMLError, text: str) -> tuple[Mark | None, str]:
    """Where a syntax error is, and what it is, with what the parser was reading when it failed.

    An unclosed quote or bracket is found at the end of the file (``found unexpected end of
    stream``): the position given is then where the quote or bracket opened (the parser's context),
    which is where the fix is; otherwise the position of the problem, with the context's position
    in the message (``while parsing a flow sequence that starts at 1:4``).
    """
    problem, context = exc.problem_mark, exc.context_mark
    message = exc.problem or exc.context or "not YAML"
    both = problem is not None and context is not None and bool(exc.context)
    if both and "end of stream" in message:
        opened = re.sub(r"^while (scanning|parsing) ", "", exc.context).replace("scalar", "string")
        message = f"{opened} that starts here is not closed before the end of the file"
        problem = None  # reported where it opens
    elif both and (context.line, context.column) != (problem.line, problem.column):
        message += f", {exc.context} that starts at {context.line + 1}:{context.column + 1}"
    mark = problem if problem is not None else context
    position = Mark(mark.line + 1, mark.column + 1) if mark is not None else None
    return position, f"invalid YAML: {message}{_tab_note(text, mark)}"


def _tab_note(text: str, mark: Any) -> str:
    """A hint when the character the parser stopped at is a tab (libyaml does not name it)."""
    if mark is None:
        return ""
    lines = text.splitlines()
    line = lines[mark.line] if 0 <= mark.line < len(lines) else ""
    if mark.column < len(line) and line[mark.column] == "\t":
        return " (a tab: YAML indents with spaces only)"
    return ""


def _measure(root: Node, source: str, problems: Problems) -> bool:
    """Whether the node graph is shallow enough and its aliases expand to a sane size.

    Aliases make the graph a DAG (or a cycle, which the constructor reports): sizes and heights are
    memoised per node, so measuring takes time in the number of distinct nodes, never in the
    expansion. Depth counts expanded aliases too.
    """
    sizes: dict[int, int] = {}
    heights: dict[int, int] = {}  # levels a node's subtree spans, itself included
    uses: dict[int, int] = {}
    nodes: dict[int, Node] = {}
    stack: list[tuple[Node, int, bool]] = [(root, 1, False)]
    while stack:
        node, depth, done = stack.pop()
        key = id(node)
        if done:
            children = _children(node)
            sizes[key] = 1 + sum(sizes.get(id(child), 1) for child in children)
            heights[key] = 1 + max((heights.get(id(child), 1) for child in children), default=0)
            continue
        uses[key] = uses.get(key, 0) + 1
        if key in nodes:
            # An alias (the composer gives back its anchor's node, so the problem is reported at
            # the anchor): measured where its anchor is, but it puts the anchor's whole subtree at
            # this depth (a chain of anchors, each nesting the last a little deeper, multiplies
            # depth the way nested aliases multiply size). Inside its own anchor it is a cycle,
            # which the constructor reports.
            if depth + heights.get(key, 1) - 1 > MAX_DEPTH:
                problems.add(
                    source,
                    Mark.of(node),
                    f"an alias of this anchor nests the YAML more than {MAX_DEPTH} levels deep once "
                    "expanded; write the repeated part out at a shallower level",
                )
                return False
            continue
        nodes[key] = node
        if depth > MAX_DEPTH:
            problems.add(
                source, Mark.of(node), f"the YAML is nested more than {MAX_DEPTH} levels deep; flatten it"
            )
            return False
        stack.append((node, depth, True))
        stack.extend((child, depth + 1, False) for child in reversed(_children(node)))
    added = sizes.get(id(root), 1) - len(nodes)
    if added > MAX_ALIAS_EXPANSION:
        shared = [key for key, count in uses.items() if count > 1]
        worst = max(shared, key=lambda key: sizes.get(key, 1) * (uses[key] - 1))
        problems.add(
            source,
            Mark.of(nodes[worst]),
            f"aliases of this anchor expand the document by more than {MAX_ALIAS_EXPANSION:,} values; "
            "write the repeated part out instead",
        )
        return False
    return True


def read_yaml(path: Path, problems: Problems, *, source: str | None = None) -> Any:
    """Read and parse a YAML file; unreadable files become problems."""
    name = source or str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        data = exc.object
        line = data.count(b"\n", 0, exc.start) + 1
        start = data.rfind(b"\n", 0, exc.start) + 1
        column = len(data[start : exc.start].decode("utf-8", "replace")) + 1  # characters, as editors count
        problems.add(
            name,
            Mark(line, column),
            f"the file is not UTF-8 text (byte 0x{data[exc.start]:02x} here; save it as UTF-8)",
        )
        return None
    except OSError as exc:
        problems.add(name, None, f"cannot read the file: {exc.strerror}")
        return None
    return load_yaml(text, name, problems)


def mark_at(document: Any, path: Sequence[Any], *, key: bool = False) -> Mark | None:
    """The position of the value (or, with ``key``, of the key) found by walking ``path``.

    Falls back to the nearest enclosing container when the path leaves the document (e.g. a
    missing key is reported where its mapping starts).
    """
    node = document
    best: Mark | None = getattr(document, "mark", None)
    for depth, step in enumerate(path):
        last = depth == len(path) - 1
        if isinstance(node, LocDict) and step in node:
            marks = node.key_marks if (last and key) else node.value_marks
            best = marks.get(step, best)
            node = node[step]
        elif isinstance(node, LocList) and isinstance(step, int) and 0 <= step < len(node):
            best = node.marks[step]
            node = node[step]
        else:
            break
        inner = getattr(node, "mark", None)
        if inner is not None and not (last and key):
            best = inner
    return best
