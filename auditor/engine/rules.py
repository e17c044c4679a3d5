"""Rule files: the pydantic models, the loader, the validator and the rule set.

A rule file is YAML with a top-level ``rules:`` list. Loading a set of files validates *everything*
before anything runs and raises one :class:`~auditor.errors.RuleError` whose ``problems`` list every
issue as ``file:line:column: message``: YAML syntax, duplicate keys, unknown keys, wrong value
types, unknown fields and operators (listing the valid ones), invalid or unsafe regular expressions,
ids that are not kebab-case, unknown severities, message placeholders that do not exist, and ids
defined twice across files. :func:`load_ruleset` with no paths loads the built-in pack (``rules/``).
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictStr
from pydantic import ValidationError as PydanticValidationError

from auditor.engine import fields as F
from auditor.engine.conditions import (
    CONDITIONS,
    NOT_BLANK,
    Condition,
    Having,
    HavingSpec,
    ParseContext,
    check_misspelt_parts,
    condition_schema,
    parse_condition,
    parse_counting,
    report_pydantic,
    type_name,
)
from auditor.engine.fields import Level
from auditor.engine.yamlsource import LocDict, LocList, Mark, Problems, mark_at, read_yaml
from auditor.errors import RuleError
from auditor.paths import rules_dir

ENGINE_VERSION = "7"  # part of every rules digest: bump when evaluation semantics change
# 2: cluster findings list the columns their columns quantifier matched (stored ones had none)
# 3: counting quantifiers skip elements without a group key; case: exact also makes distinct
#    counts exact; booleans group on PostgreSQL; in/not_in bind each value with its own type
# 4: case: exact on a counting quantifier also makes its distinct count exact, as on aggregates;
#    SQLite lower-cases non-ASCII text one letter at a time, as PostgreSQL does (İ, final sigma)
# 5: a boolean group key reads true/false in {group.key} and in the group's fingerprint, as
#    {group.value} and {column.isPrimary} read (it read True/False)
KEBAB = re.compile(r"^[a-z0-9]+(?:-[a-z0-9]+)*$")
RULE_SUFFIXES = (".yaml", ".yml")
FIXTURE_SUFFIXES = (".test.yaml", ".test.yml")


class Severity(StrEnum):
    INFO = "info"
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"
    CRITICAL = "critical"

    @property
    def rank(self) -> int:
        return SEVERITY_ORDER.index(self.value)


SEVERITY_ORDER = ("info", "low", "medium", "high", "critical")


def severity_rank(value: str) -> int:
    return SEVERITY_ORDER.index(value)


class Scope(StrEnum):
    COLUMN = "column"
    CLUSTER = "cluster"
    AGGREGATE = "aggregate"


class AggregateSpec(BaseModel):
    """``aggregate:`` of an aggregate rule: group columns and keep groups passing a threshold."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    per: Literal["cluster", "snapshot"] = Field(
        default="cluster", description="group the columns of each cluster, or of the whole snapshot"
    )
    where: Any = Field(default=None, description="only count columns matching this condition")
    # Validated by parse_group_by (one report per problem); the JSON Schema says it is text.
    group_by: Any = Field(
        default=None, description="a column field, e.g. columnName", json_schema_extra={"type": "string"}
    )
    case: Literal["insensitive", "exact"] = Field(
        default="insensitive", description="group and count text ignoring case unless 'exact'"
    )
    # Validated by Having.parse (one report per problem); the JSON Schema shows HavingSpec.
    having: Any = Field(description="the threshold a group must pass, e.g. {distinct: source, gte: 2}")


class RuleSpec(BaseModel):
    """One rule as written in YAML."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    id: StrictStr = Field(description="unique, kebab-case", json_schema_extra={"pattern": KEBAB.pattern})
    # NOT_BLANK: text of spaces only was taken, as empty text is not (findings with a blank message)
    title: StrictStr = Field(min_length=1, pattern=NOT_BLANK)
    description: StrictStr = Field(min_length=1, pattern=NOT_BLANK)
    severity: Literal["info", "low", "medium", "high", "critical"]
    scope: Literal["column", "cluster", "aggregate"]
    condition: Any = Field(default=None, description="for column and cluster rules")
    aggregate: AggregateSpec | None = Field(default=None, description="for aggregate rules")
    message: StrictStr = Field(
        min_length=1,
        pattern=NOT_BLANK,
        description="plain placeholders such as {column.columnName} or {cluster.name}",
    )
    remediation: StrictStr = Field(min_length=1, pattern=NOT_BLANK)
    references: list[StrictStr] = Field(default_factory=list, description="e.g. GDPR Art. 32, PCI DSS 3.4")
    tags: list[StrictStr] = Field(default_factory=list)
    enabled: StrictBool = True


class RuleFileSpec(BaseModel):
    """A rule file: a ``rules:`` list."""

    model_config = ConfigDict(extra="forbid")
    rules: list[RuleSpec]


# -- message templates ---------------------------------------------------------------------------

_PLACEHOLDER = re.compile(r"\{\{|\}\}|\{([^{}]*)\}|[{}]")

COLUMN_PLACEHOLDERS = {f"column.{name}": name for name in F.COLUMN_FIELDS}
CLUSTER_PLACEHOLDERS = {
    "cluster.id",
    "cluster.name",
    "cluster.labels",
    "cluster.severity",
    "cluster.status",
    "cluster.size",
}
# In the order evaluation passes a group finding's values to its message.
GROUP_VALUES = (
    "group.key",
    "group.value",
    "group.count",
    "group.distinct",
    "group.columns",
    "group.clusters",
)
GROUP_PLACEHOLDERS = set(GROUP_VALUES)
RULE_PLACEHOLDERS = {"rule.id", "rule.title", "rule.severity"}


def allowed_placeholders(scope: str, per: str = "cluster") -> list[str]:
    names = set(RULE_PLACEHOLDERS)
    if scope == Scope.COLUMN:
        names |= set(COLUMN_PLACEHOLDERS) | CLUSTER_PLACEHOLDERS
    elif scope == Scope.CLUSTER:
        names |= CLUSTER_PLACEHOLDERS
    else:
        names |= GROUP_PLACEHOLDERS
        if per == "cluster":
            names |= CLUSTER_PLACEHOLDERS
    return sorted(names)


def template_problems(template: str, allowed: Iterable[str]) -> list[str]:
    allowed = set(allowed)
    problems = []
    for match in _PLACEHOLDER.finditer(template):
        token = match.group(0)
        if token in ("{{", "}}"):
            continue
        name = match.group(1)
        if name is None:
            problems.append(f"unbalanced {token!r} in message; write {token * 2} for a literal brace")
        elif name not in allowed:
            problems.append(f"unknown placeholder {{{name}}} in message; valid: {', '.join(sorted(allowed))}")
    return problems


def _show(value: Any) -> str:
    if value is None:
        return "(none)"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, list | tuple):
        return ", ".join(str(v) for v in value) or "(none)"
    return str(value)


@functools.lru_cache(maxsize=512)
def compile_message(template: str) -> tuple[tuple[str, str | None], ...]:
    """Split a template into (literal text, placeholder name or None) pieces, once per template."""
    pieces: list[tuple[str, str | None]] = []
    last = 0
    for match in _PLACEHOLDER.finditer(template):
        literal = template[last : match.start()]
        token = match.group(0)
        if token in ("{{", "}}"):
            pieces.append((literal + token[0], None))
        else:
            pieces.append((literal, match.group(1)))
        last = match.end()
    pieces.append((template[last:], None))
    return tuple(pieces)


def show_value(value: Any) -> str:
    """How a placeholder value reads in a message (text as is; None as "(none)"; lists joined)."""
    return value if value.__class__ is str else _show(value)


def _escape_braces(text: str) -> str:
    return text.replace("{", "{{").replace("}", "}}")


@dataclass(frozen=True)
class BoundMessage:
    """A message template prepared for many renderings (see :func:`bind_message`).

    ``pieces`` are (literal text, already brace-escaped, and the source of the placeholder that
    follows it: ``("row", i)``, ``("cluster", name)`` or None); ``row_positions`` are the row
    indexes the placeholders read, in order.
    """

    pieces: tuple[tuple[str, tuple[str, Any] | None], ...]
    row_positions: tuple[int, ...]

    def format_for(self, cluster: dict[str, Any]) -> str:
        """A ``str.format`` string for one cluster's rows: its values filled in, ``{N}`` per row value."""
        out = []
        position = 0
        for literal, source in self.pieces:
            out.append(literal)
            if source is None:
                continue
            if source[0] == "cluster":
                out.append(_escape_braces(show_value(cluster.get(source[1]))))
            else:
                out.append(f"{{{position}}}")
                position += 1
        return "".join(out)

    def render(self, cluster: dict[str, Any], row: Sequence[Any]) -> str:
        """One message (slow path; hot loops cache :meth:`format_for` per cluster)."""
        return self.format_for(cluster).format(*[show_value(row[i]) for i in self.row_positions])


def bind_message(template: str, row_names: Sequence[str], constants: dict[str, Any]) -> BoundMessage:
    """Prepare ``template`` for rendering many rows of ``row_names`` values, as :func:`render_message` would.

    Placeholders found in ``constants`` are filled in now; ``cluster.*`` ones come from the row's
    cluster, the others named in ``row_names`` from the row; unknown ones read "(none)".
    """
    pieces: list[tuple[str, tuple[str, Any] | None]] = []
    positions: list[int] = []
    index = {name: i for i, name in enumerate(row_names)}
    pending = ""
    for literal, name in compile_message(template):
        pending += _escape_braces(literal)
        if name is None:
            continue
        if name in index:
            pieces.append((pending, ("row", index[name])))
            positions.append(index[name])
        elif name.startswith("cluster."):
            pieces.append((pending, ("cluster", name)))
        else:
            pieces.append((pending + _escape_braces(_show(constants.get(name))), None))
        pending = ""
    pieces.append((pending, None))
    return BoundMessage(tuple(pieces), tuple(positions))


def render_message(template: str, values: dict[str, Any], *more: dict[str, Any]) -> str:
    """Fill ``{name}`` placeholders from ``values`` (then ``more``): plain lookups, no code runs."""
    out = []
    for literal, name in compile_message(template):
        out.append(literal)
        if name is not None:
            value = values.get(name)
            for extra in more:
                if value is not None:
                    break
                value = extra.get(name)
            out.append(_show(value))
    return "".join(out)


# -- the rule objects ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Aggregate:
    per: str
    where: Condition | None
    group_by: F.Field | None
    exact: bool
    having: Having

    def explain(self) -> str:
        where = f" matching: {self.where.explain()}" if self.where is not None else ""
        if self.group_by is not None:
            how = "ignoring case and surrounding spaces" if not self.exact else "exactly, trimming spaces"
            kind = self.group_by.kind
            by = (
                f"whether {self.group_by.label}"
                if kind is F.Kind.BOOLEAN
                else self.group_by.label.removeprefix("the ")
            )
            group = (
                f"grouped by {by}{f' ({how})' if kind is F.Kind.TEXT else ''}"  # a flag or a number: no case
            )
        else:
            group = "taken together"
        whose = "of each cluster" if self.per == "cluster" else "of the whole snapshot"
        return f"the columns {whose}{where}, {group}, form a group with {self.having.explain('column')}"


@dataclass(frozen=True)
class Rule:
    """A validated rule, ready to compile. ``definition`` is its canonical YAML content."""

    id: str
    title: str
    description: str
    severity: str
    scope: str
    message: str
    remediation: str
    references: tuple[str, ...]
    tags: tuple[str, ...]
    enabled: bool
    condition: Condition | None
    aggregate: Aggregate | None
    definition: dict[str, Any]
    source: str
    line: int
    column: int = 1

    def explain(self) -> str:
        """A plain sentence saying what the rule flags."""
        if self.scope == Scope.COLUMN:
            assert self.condition is not None
            return f"Flags each column where {self.condition.explain()}."
        if self.scope == Scope.CLUSTER:
            assert self.condition is not None
            return f"Flags each cluster where {self.condition.explain()}."
        assert self.aggregate is not None
        return f"Flags each group where {self.aggregate.explain()}."

    @property
    def severity_rank(self) -> int:
        return severity_rank(self.severity)


@dataclass(frozen=True)
class RuleSet:
    """The rules to evaluate (enabled ones in ``rules``) and a digest of their content."""

    rules: tuple[Rule, ...]
    disabled: tuple[Rule, ...] = ()
    sources: tuple[str, ...] = ()
    digest: str = field(default="")

    def get(self, rule_id: str) -> Rule | None:
        return next((rule for rule in (*self.rules, *self.disabled) if rule.id == rule_id), None)

    def only(self, rule_ids: Iterable[str]) -> RuleSet:
        """The subset with these ids (used by rule tests)."""
        wanted = set(rule_ids)
        return make_ruleset([r for r in self.rules if r.id in wanted], [], self.sources)

    def __len__(self) -> int:
        return len(self.rules)


def make_ruleset(rules: Sequence[Rule], disabled: Sequence[Rule], sources: Sequence[str]) -> RuleSet:
    ordered = tuple(sorted(rules, key=lambda r: r.id))
    payload = {"engine": ENGINE_VERSION, "rules": [r.definition for r in ordered]}
    digest = hashlib.sha256(
        json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str).encode()
    ).hexdigest()
    return RuleSet(ordered, tuple(sorted(disabled, key=lambda r: r.id)), tuple(sources), digest)


# -- loading -------------------------------------------------------------------------------------


def named_as(name: str, suffixes: tuple[str, ...]) -> bool:
    """Whether a file ``name`` ends in one of ``suffixes``, in any case: ``PII.YAML`` in a rules
    folder was skipped without a word, and with it every rule it held (a probe)."""
    return name.lower().endswith(suffixes)


def is_rule_file(path: Path) -> bool:
    """Whether ``path`` is a rule file (``*.yaml``, ``*.yml`` in any case; fixtures ``*.test.yaml``
    are not)."""
    return path.is_file() and named_as(path.name, RULE_SUFFIXES) and not named_as(path.name, FIXTURE_SUFFIXES)


def folder_entries(folder: Path) -> list[Path]:
    """Everything under ``folder``, sorted: files and folders, named through ``folder`` as given.

    Links to folders are followed, as "searched recursively" promises (a shared pack linked into
    a repository's rules folder is part of it; ``Path.rglob`` skipped it in silence). Each real
    folder is listed once, and a link to ``folder`` itself or to a folder holding it is not
    followed: it would loop, or read every YAML file around the rules folder (a review:
    ``rules/up -> ..`` read the repository's docker-compose.yml as a rule file). A folder that cannot
    be listed raises ``OSError`` naming it.
    """
    found: list[Path] = []
    root = folder.resolve()
    listed: set[Path] = {*root.parents}  # (a link up to one of them is listed, not followed)

    def visit(directory: Path) -> None:
        real = directory.resolve()
        if real in listed:
            return
        listed.add(real)
        with os.scandir(directory) as entries:
            inside = sorted(Path(entry.path) for entry in entries)  # the same walk every time
        for entry in inside:
            found.append(entry)
            if entry.is_dir():
                visit(entry)

    visit(folder)
    return sorted(found)


def rule_files(paths: Sequence[Path], problems: Problems) -> list[Path]:
    """Expand files and folders into rule files (fixtures ``*.test.yaml`` are not rules).

    A file named twice (``rules rules/x.yaml``, ``a.yaml ./a.yaml``) is read once: read twice, each
    of its rules was a duplicate of itself.
    """
    found: list[Path] = []
    seen: set[Path] = set()

    def add(file: Path) -> None:
        key = file.resolve()
        if key not in seen:
            seen.add(key)
            found.append(file)

    for path in paths:
        if path.is_dir():
            try:
                found_here = folder_entries(path)
            except OSError as exc:  # a folder inside that cannot be listed
                problems.add(str(exc.filename or path), None, f"cannot read this folder ({exc.strerror})")
                continue
            inside = [p for p in found_here if is_rule_file(p)]
            for link in found_here:  # a rule file's name on a link to nothing: it dropped out silently
                if (
                    named_as(link.name, RULE_SUFFIXES)
                    and not named_as(link.name, FIXTURE_SUFFIXES)
                    and link.is_symlink()
                    and not link.exists()
                ):
                    problems.add(
                        str(link), None, "a link to nothing (or a loop of links): no rule file to read"
                    )
            if not inside:
                problems.add(str(path), None, "no rule files (*.yaml, *.yml) in this folder")
            for file in inside:
                add(file)
        elif path.is_file() and named_as(path.name, FIXTURE_SUFFIXES):
            # (read as rules: "unknown key 'cases' at the top of a rule file", and no hint: a probe)
            problems.add(
                str(path), None, "a fixture file (NAME.test.yaml), not rules: run it with auditor rules test"
            )
        elif path.is_file():
            add(path)
        elif path.exists():  # /dev/null, a pipe: nothing a rule file can be read from twice
            problems.add(str(path), None, "not a file or a folder (a rule file is a regular file)")
        else:
            problems.add(str(path), None, "no such file or folder")
    return found


def plain(value: Any) -> Any:
    """Loc containers → plain dicts and lists (for digests and JSON)."""
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return value


def parse_rule_file(
    path: Path,
    problems: Problems,
    *,
    source: str | None = None,
    seen_ids: dict[str, str] | None = None,
) -> list[Rule]:
    """Validate one rule file; returns the rules that are valid (problems collected).

    ``seen_ids`` maps the ids met so far (in earlier files too) to where they were defined; an id
    met again is a problem, whether or not either rule has other problems, so that every problem
    shows at once.
    """
    name = source or str(path)
    seen_ids = {} if seen_ids is None else seen_ids
    document = read_yaml(path, problems, source=name)
    ctx = ParseContext(name, document, problems)
    if document is None:
        if not problems.items or not problems.items[-1].startswith(name):
            problems.add(name, None, "the file is empty; expected a 'rules:' list")
        return []
    if not isinstance(document, LocDict):
        ctx.problem([], "a rule file is a mapping with a 'rules:' list")
        return []
    for key in document:
        if key != "rules":
            waivers = " (a waiver file? give it with --waivers)" if key == "waivers" else ""
            message = f"unknown key {key!r} at the top of a rule file; expected only 'rules'{waivers}"
            ctx.problem([key], message, key=True)
    items = document.get("rules")
    if not isinstance(items, LocList):
        if "rules" in document:
            ctx.problem(["rules"], f"'rules' must be a list of rules, got {type_name(items)}")
        else:
            ctx.problem([], "the file has no 'rules:' list (a rule file is 'rules:' followed by its rules)")
        return []
    if not items:  # a gate given an empty pack would pass everything
        ctx.problem(
            ["rules"], "'rules' is empty; a rule file holds at least one rule (enabled: false keeps one off)"
        )
        return []
    rules = []
    for index, node in enumerate(items):
        duplicate = _note_rule_id(node, ctx, ["rules", index], seen_ids)
        rule = parse_rule(node, ctx, ["rules", index])
        if rule is not None and not duplicate:
            rules.append(rule)
    return rules


def _note_rule_id(node: Any, ctx: ParseContext, path: list[Any], seen_ids: dict[str, str]) -> bool:
    """Record the id of a rule node; report it (and return True) when an earlier rule has it."""
    rule_id = node.get("id") if isinstance(node, LocDict) else None
    if not isinstance(rule_id, str):
        return False
    mark = mark_at(ctx.document, path) or Mark(1, 1)
    first = seen_ids.get(rule_id)
    if first is None:
        seen_ids[rule_id] = f"{ctx.source}:{mark.line}"
        return False
    ctx.problem(
        path,
        f"duplicate rule id {rule_id!r} (also defined at {first}); rule ids must be unique across files",
    )
    return True


def parse_rule(node: Any, ctx: ParseContext, path: list[Any]) -> Rule | None:
    if not isinstance(node, LocDict):
        ctx.problem(path, "a rule is a mapping with id, title, severity, scope, condition, message...")
        return None
    before = len(ctx.problems)
    spec: RuleSpec | None = None
    try:
        # 'aggregate' is validated by parse_aggregate, so each of its problems is reported once.
        spec = RuleSpec.model_validate({k: v for k, v in node.items() if k != "aggregate"})
    except PydanticValidationError as exc:
        rule_id = node.get("id")
        report_pydantic(
            ctx, path, exc, f"rule {rule_id!r}" if isinstance(rule_id, str) else "a rule", RuleSpec
        )
    rule_id = node.get("id")
    if isinstance(rule_id, str) and not KEBAB.fullmatch(rule_id):
        ctx.problem(
            [*path, "id"],
            f"rule id {rule_id!r} is not kebab-case (lowercase letters and digits joined by single "
            "hyphens, e.g. 'pii-without-sensitivity-tag')",
        )
    scope = node.get("scope")
    condition: Condition | None = None
    aggregate: Aggregate | None = None
    if scope not in ("column", "cluster", "aggregate"):
        # The scope's own problem is reported above; what the rule holds is still checked, so that
        # fixing the scope does not reveal a second round of problems.
        if "condition" in node:
            _check_condition_any_level(node["condition"], ctx, [*path, "condition"])
        if "aggregate" in node:
            parse_aggregate(node["aggregate"], ctx, [*path, "aggregate"])
        if "condition" not in node and "aggregate" not in node:
            ctx.problem(
                path,
                "a rule needs a 'condition' (scope column or cluster) or 'aggregate: {group_by: ..., "
                "having: ...}' (scope aggregate)",
            )
    elif scope in ("column", "cluster"):
        if "aggregate" in node:
            ctx.problem([*path, "aggregate"], f"'aggregate' is for scope aggregate, not {scope}", key=True)
        if "condition" not in node:
            ctx.problem(path, f"a {scope} rule needs a 'condition'")
        else:
            level = Level.COLUMN if scope == "column" else Level.CLUSTER
            condition = parse_condition(node["condition"], level, ctx, [*path, "condition"])
    elif scope == "aggregate":
        if "condition" in node:
            ctx.problem(
                [*path, "condition"],
                "an aggregate rule filters columns with 'aggregate: {where: ...}', not 'condition'",
                key=True,
            )
        if "aggregate" not in node:
            ctx.problem(path, "an aggregate rule needs 'aggregate: {group_by: ..., having: ...}'")
        else:
            aggregate = parse_aggregate(node["aggregate"], ctx, [*path, "aggregate"])
    message = node.get("message")
    if isinstance(message, str):
        per = (
            node.get("aggregate", {}).get("per", "cluster") if isinstance(node.get("aggregate"), dict) else ""
        )
        if scope in ("column", "cluster", "aggregate"):
            allowed = allowed_placeholders(scope, per)
        else:  # an unknown scope: what no scope allows is wrong whichever it becomes
            allowed = sorted({name for each in Scope for name in allowed_placeholders(each, "cluster")})
        for problem in template_problems(message, allowed):
            ctx.problem([*path, "message"], problem)
    if spec is None or len(ctx.problems) > before:
        return None
    mark = mark_at(ctx.document, path) or Mark(1, 1)
    return Rule(
        id=spec.id,
        title=spec.title,
        description=spec.description,
        severity=spec.severity,
        scope=spec.scope,
        message=spec.message,
        remediation=spec.remediation,
        references=tuple(spec.references),
        tags=tuple(spec.tags),
        enabled=spec.enabled,
        condition=condition,
        aggregate=aggregate,
        definition=plain(node),
        source=ctx.source,
        line=mark.line,
        column=mark.column,
    )


def _check_condition_any_level(node: Any, ctx: ParseContext, path: list[Any]) -> None:
    """Report a condition's problems when the rule's scope is unknown: at the cluster level when it
    quantifies over ``columns`` (only cluster conditions can), else at the column level, whose fields
    include the cluster's."""
    level = Level.CLUSTER if _mentions_key(node, "columns") else Level.COLUMN
    parse_condition(node, level, ctx, path)


def _mentions_key(node: Any, key: str) -> bool:
    if isinstance(node, dict):
        return key in node or any(_mentions_key(v, key) for v in node.values())
    if isinstance(node, list):
        return any(_mentions_key(v, key) for v in node)
    return False


def parse_aggregate(node: Any, ctx: ParseContext, path: list[Any]) -> Aggregate | None:
    if not isinstance(node, LocDict):
        ctx.problem(path, "'aggregate' takes a mapping with per, where, group_by and having")
        return None
    spec: AggregateSpec | None = None
    try:
        spec = AggregateSpec.model_validate(node)
    except PydanticValidationError as exc:
        report_pydantic(ctx, path, exc, "'aggregate'", AggregateSpec)
    exact = node.get("case") == "exact"
    counting = parse_counting(node, Level.COLUMN, ctx, path, exact=exact)  # checked even if spec is not
    check_misspelt_parts(node, AggregateSpec.model_fields, Level.COLUMN, ctx)
    if spec is None or counting is None:
        return None
    return Aggregate(spec.per, counting.where, counting.group_by, exact, counting.having)


RulePaths = str | os.PathLike[str] | Sequence[str | os.PathLike[str]] | None


def validate_rule_files(paths: RulePaths) -> tuple[list[Rule], Problems, list[str]]:
    """Validate every file; return (valid rules, problems, sources). Duplicate ids are problems.

    ``paths``: rule files and folders (a single one may be given alone), or ``None`` for the
    built-in pack."""
    problems = Problems()
    if isinstance(paths, str | os.PathLike):
        paths = [paths]  # one path, not a sequence of one-character ones
    if paths is not None and not paths:
        # an empty list loaded no rule, and a gate given no rule passes everything, silently
        raise RuleError(
            "no rule files given (an empty list of paths)",
            hint="give rule files or folders, or None for the built-in pack",
        )
    if paths is not None and any(not str(p).strip() for p in paths):
        # Path("") is the current folder: its every YAML file was loaded as rules
        raise RuleError(
            "an empty rule path", hint="give rule files or folders, or None for the built-in pack"
        )
    base = [rules_dir()] if paths is None else [Path(p) for p in paths]
    files = rule_files(base, problems)
    rules: list[Rule] = []
    seen_ids: dict[str, str] = {}
    for path in files:
        rules.extend(parse_rule_file(path, problems, seen_ids=seen_ids))
    return rules, problems, [str(p) for p in files]


def load_ruleset(paths: RulePaths = None) -> RuleSet:
    """Load and validate rule files and folders (one path, a sequence of them, or ``None``: the
    built-in pack). Raises RuleError listing every problem (an empty sequence is one)."""
    rules, problems, sources = validate_rule_files(paths)
    if problems:
        count = len(problems)
        raise RuleError(
            f"{count} problem{'s' if count != 1 else ''} in the rule files",
            hint="fix them and check with: auditor rules validate PATH",
            problems=problems.in_order(),
        )
    enabled = [r for r in rules if r.enabled]
    disabled = [r for r in rules if not r.enabled]
    return make_ruleset(enabled, disabled, sources)


def ruleset_to_evaluate(ruleset: RuleSet | RulePaths) -> RuleSet:
    """The rule set a library entry point that evaluates rules was given: a :class:`RuleSet`, or
    what :func:`load_ruleset` takes (``None``: the built-in pack; rule files or folders), loaded.
    A set whose every rule is disabled is a :class:`RuleError` (a gate given it would pass
    everything, silently); anything else a ``TypeError`` saying what is expected."""
    paths = ruleset if isinstance(ruleset, list | tuple) else [ruleset]
    if ruleset is None or all(isinstance(p, str | os.PathLike) for p in paths):
        ruleset = load_ruleset(ruleset)
    elif not isinstance(ruleset, RuleSet):
        raise TypeError(
            "ruleset: expected a RuleSet (what auditor.engine.load_ruleset returns), rule files or "
            f"folders, or None for the built-in pack, not {type(ruleset).__name__}"
        )
    if not ruleset.rules:
        # As for an empty 'rules:' list: a gate given no rule would pass everything, silently.
        off = len(ruleset.disabled)
        raise RuleError(
            f"every rule in the given files is disabled "
            f"({off} rule{'s' if off != 1 else ''} with enabled: false)",
            hint="enable at least one rule, or leave --rules out for the built-in pack",
        )
    return ruleset


def rules_json_schema() -> dict[str, Any]:
    """JSON Schema of a rule file, for editor completion (generated from the models)."""
    schema = RuleFileSpec.model_json_schema(ref_template="#/$defs/{model}")
    defs = schema.setdefault("$defs", {})
    defs.update(condition_schema())
    rule = defs["RuleSpec"]
    rule["properties"]["condition"] = {
        "$ref": "#/$defs/Condition",
        "description": "for column and cluster rules",
    }
    aggregate = defs["AggregateSpec"]
    aggregate["properties"]["where"] = {"$ref": "#/$defs/Condition"}
    aggregate["properties"]["having"] = {"$ref": "#/$defs/HavingSpec"}
    defs["HavingSpec"] = HavingSpec.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "cluster-auditor rule file"
    _structure(schema)
    _by_level(schema)
    return schema


def _without_null(prop: dict[str, Any]) -> None:
    """An optional key's schema as written in a file: pydantic allows ``null`` for "not given"."""
    if "anyOf" in prop:
        prop["anyOf"] = [option for option in prop["anyOf"] if option != {"type": "null"}]
        if len(prop["anyOf"]) == 1:
            prop.update(prop.pop("anyOf")[0])
    prop.pop("default", None)


def _exactly_one(keys: Iterable[str]) -> list[dict[str, Any]]:
    return [{"required": [key]} for key in keys]


def _structure(schema: dict[str, Any]) -> None:
    """What validation requires of a file's structure, in the schema too, so that an editor flags
    it: at least one rule; exactly one operator per comparison and one threshold per ``having``;
    one form per quantifier; ``condition`` for column and cluster rules, ``aggregate`` for
    aggregate ones; no ``null`` where a value is expected. (What depends on a field's kind, such
    as ``gt`` on text, only ``auditor rules validate`` checks.)"""
    defs = schema["$defs"]
    schema["properties"]["rules"]["minItems"] = 1
    schema["required"] = sorted({*schema.get("required", []), "rules"})
    compare = defs["Condition_field"]
    operators = [key for key in compare["properties"] if key not in ("field", "case")]
    for key in operators:
        _without_null(compare["properties"][key])
    compare["oneOf"] = _exactly_one(operators)
    having = defs["HavingSpec"]
    thresholds = [key for key in having["properties"] if key not in ("distinct", "case")]
    for key in (*thresholds, "distinct"):
        _without_null(having["properties"][key])
    having["oneOf"] = _exactly_one(thresholds)
    for name in ("Condition_tags", "Condition_attributes", "Condition_columns"):
        quantifier = next(iter(defs[name]["properties"].values()))
        for key in ("group_by", "having"):
            if key in quantifier["properties"]:
                _without_null(quantifier["properties"][key])
        quantifier["oneOf"] = _exactly_one(("any", "all", "none", "having"))
        quantifier["dependentRequired"] = {"where": ["having"], "group_by": ["having"]}
    rule = defs["RuleSpec"]
    rule["allOf"] = [
        {
            "if": {"properties": {"scope": {"const": "aggregate"}}, "required": ["scope"]},
            "then": {"required": ["aggregate"], "not": {"required": ["condition"]}},
            "else": {"required": ["condition"], "not": {"required": ["aggregate"]}},
        }
    ]


# The prefix of each level's condition definitions in the schema: ColumnCondition, TagHaving, ...
_SCHEMA_LEVELS = {
    Level.COLUMN: "Column",
    Level.CLUSTER: "Cluster",
    Level.TAG: "Tag",
    Level.ATTRIBUTE: "Attribute",
}


def _retarget(node: Any, refs: dict[str, str]) -> Any:
    """``node`` with each ``$ref`` named in ``refs`` replaced by its new target."""
    if isinstance(node, dict):
        return {
            key: refs.get(value, value) if key == "$ref" else _retarget(value, refs)
            for key, value in node.items()
        }
    if isinstance(node, list):
        return [_retarget(item, refs) for item in node]
    return node


def _by_level(schema: dict[str, Any]) -> None:
    """One set of condition definitions per level, each naming the fields valid there, so that an
    editor completes field names and flags what ``rules validate`` refuses as out of place: a
    misspelt field, ``columnName`` inside ``tags``, ``tags`` in a cluster rule or ``columns`` in a
    column rule. A quantifier's parts are conditions of its elements' level, a column rule's and an
    aggregate's ``where`` of the column's, a cluster rule's of the cluster's."""
    defs = schema["$defs"]
    generic = {key: defs.pop(f"Condition_{key}") for key in CONDITIONS}
    defs.pop("Condition")
    having = defs.pop("HavingSpec")

    def countable(level: Level) -> list[str]:
        return [name for name, f in F.FIELDS_BY_LEVEL[level].items() if f.kind is not F.Kind.TEXT_LIST]

    for level, prefix in _SCHEMA_LEVELS.items():
        threshold = _retarget(having, {})
        threshold["properties"]["distinct"]["enum"] = countable(level)
        # Without distinct, a count below one never holds (validation refuses it).
        threshold["if"] = {"not": {"required": ["distinct"]}}
        threshold["then"] = {
            "properties": {"eq": {"minimum": 1}, "lt": {"minimum": 2}, "lte": {"minimum": 1}}
        }
        defs[f"{prefix}Having"] = threshold
        variants = []
        for key, cls in CONDITIONS.items():
            if level not in cls.levels:
                continue
            inner = _SCHEMA_LEVELS[getattr(cls, "inner_level", level)]
            body = _retarget(
                generic[key],
                {
                    "#/$defs/Condition": f"#/$defs/{inner}Condition",
                    "#/$defs/HavingSpec": f"#/$defs/{inner}Having",
                },
            )
            if key == "field":
                body["properties"]["field"]["enum"] = list(F.FIELDS_BY_LEVEL[level])
            elif hasattr(cls, "inner_level"):
                body["properties"][key]["properties"]["group_by"]["enum"] = countable(cls.inner_level)
            defs[f"{prefix}Condition_{key}"] = body
            variants.append({"$ref": f"#/$defs/{prefix}Condition_{key}"})
        defs[f"{prefix}Condition"] = {
            "anyOf": [
                *variants,
                {"type": "array", "items": {"$ref": f"#/$defs/{prefix}Condition"}, "minItems": 1},
            ]
        }
    aggregate = defs["AggregateSpec"]["properties"]
    aggregate["where"] = {"$ref": "#/$defs/ColumnCondition"}
    aggregate["having"] = {"$ref": "#/$defs/ColumnHaving"}
    aggregate["group_by"]["enum"] = countable(Level.COLUMN)
    rule = defs["RuleSpec"]
    rule["properties"]["condition"] = {"description": rule["properties"]["condition"]["description"]}
    for scope, level in (("column", Level.COLUMN), ("cluster", Level.CLUSTER)):
        rule["allOf"].append(
            {
                "if": {"properties": {"scope": {"const": scope}}, "required": ["scope"]},
                "then": {"properties": {"condition": {"$ref": f"#/$defs/{_SCHEMA_LEVELS[level]}Condition"}}},
            }
        )
