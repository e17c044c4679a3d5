"""``auditor rules test``: run the small fixture snapshots kept beside rule files.

A fixture file ``NAME.test.yaml`` sits beside the rule file ``NAME.yaml``. Each case describes a
tiny snapshot (clusters with their columns, in BigID's wire format) and the exact findings expected
from the rules it names (default: every rule of the sibling rule file)::

    cases:
      - name: a high column in a cluster without the label is flagged
        rules: [high-sensitivity-without-confidential]
        clusters:
          - id: c1
            name: HR
            labels: [PII]
            columns:
              - fullyQualifiedName: hr.emp.ssn
                tags: [{tagName: sensitivity, tagValue: High}]
        expect:
          - {rule: high-sensitivity-without-confidential, cluster: c1, column: hr.emp.ssn}

Expected entries name a column finding (``column``), a group finding (``columns``: every column
involved, in any order) or a cluster finding (neither), and may give the finding's exact
``message``. A case passes when the findings of its rules are exactly the expected ones, with the
messages given. Every case is written through the real :class:`SnapshotWriter`
into a temporary SQLite database (one run per case) and evaluated by the real compiler.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import AliasChoices, BaseModel
from pydantic import ValidationError as PydanticValidationError

from auditor.bigid.models import (
    MAX_CLUSTER_ID_BYTES,
    MAX_FQN_BYTES,
    Attribute,
    Cluster,
    Column,
    RecordKeyTooLong,
    Tag,
    TagProperties,
    check_key,
    parse_cluster,
    parse_column,
)
from auditor.engine.conditions import ParseContext, describe_type_error, type_name
from auditor.engine.evaluate import evaluate
from auditor.engine.findings import KIND_COLUMN, KIND_GROUP, Finding
from auditor.engine.rules import (
    FIXTURE_SUFFIXES,
    RULE_SUFFIXES,
    RuleSet,
    folder_entries,
    load_ruleset,
    named_as,
)
from auditor.engine.yamlsource import LocDict, LocList, Problems, mark_at, read_yaml
from auditor.errors import RuleError
from auditor.stopping import removed_on_hard_stop
from auditor.store.db import create_db_engine
from auditor.store.schema import metadata
from auditor.store.writer import ClusterStats, RunTotals, SnapshotWriter
from auditor.textsafe import one_line

Identity = tuple[str, str | None, str | None, tuple[str, ...] | None]


@dataclass
class Case:
    source: str
    line: int
    name: str
    rules: list[str]
    clusters: list[tuple[dict[str, Any], list[dict[str, Any]]]]
    expect: set[Identity]
    # the exact message expected of a finding, where its entry gives one (`message:`)
    messages: dict[Identity, str] = field(default_factory=dict)


@dataclass
class CaseResult:
    case: Case
    missing: list[Identity] = field(default_factory=list)
    unexpected: list[Identity] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    # (finding, message expected, message given) for each expected message that differs
    wrong_messages: list[tuple[Identity, str, str]] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.missing and not self.unexpected and not self.wrong_messages


@dataclass
class FixtureReport:
    results: list[CaseResult]
    ruleset: RuleSet
    files: list[str]

    @property
    def passed(self) -> bool:
        return all(r.passed for r in self.results)

    def lines(self) -> list[str]:
        out = []
        for result in self.results:
            case = result.case
            status = "PASS" if result.passed else "FAIL"
            out.append(f"{status} {one_line(case.source)}:{case.line}: {one_line(case.name)}")
            for identity in result.missing:
                out.append(f"     missing:    {describe(identity)}")
            for identity, expected, given in result.wrong_messages:
                out.append(f"     message of: {describe(identity)}")
                out.append(f"                 expected: {one_line(expected)}")
                out.append(f"                 given:    {one_line(given)}")
            messages = {identity_of(f): f.message for f in result.findings}
            for identity in result.unexpected:
                out.append(f"     unexpected: {describe(identity)}")
                out.append(f"                 message: {one_line(messages.get(identity, ''))}")
        failed = sum(1 for r in self.results if not r.passed)
        out.append(
            f"{len(self.results)} case{'s' if len(self.results) != 1 else ''} in {len(self.files)} "
            f"file{'s' if len(self.files) != 1 else ''}: {len(self.results) - failed} passed, {failed} failed"
        )
        return out


def describe(identity: Identity) -> str:
    rule, cluster, column, columns = identity
    shown = one_line(cluster) if cluster is not None else None
    if column is not None:
        return f"{rule} on column {one_line(column)}" + (f" (cluster {shown})" if shown else " (any cluster)")
    if columns is not None:
        where = f"cluster {shown}" if shown else "the snapshot"
        return f"{rule} on group [{', '.join(one_line(c) for c in columns)}] ({where})"
    return f"{rule} on cluster {shown}" if shown else f"{rule} on no cluster"


def identity_of(finding: Finding) -> Identity:
    if finding.kind == KIND_COLUMN:
        return (finding.rule, finding.cluster_id, finding.column, None)
    if finding.kind == KIND_GROUP:
        return (finding.rule, finding.cluster_id, None, tuple(sorted(finding.columns)))
    return (finding.rule, finding.cluster_id, None, None)


def fixture_files(paths: Sequence[Path]) -> tuple[list[Path], list[Path]]:
    """(rule files, fixture files) named by ``paths`` (folders searched recursively)."""
    rules: list[Path] = []
    fixtures: list[Path] = []
    for path in paths:
        if path.is_dir():
            for item in folder_entries(path):
                if named_as(item.name, FIXTURE_SUFFIXES):
                    fixtures.append(item)
                elif named_as(item.name, RULE_SUFFIXES):
                    rules.append(item)
        elif named_as(path.name, FIXTURE_SUFFIXES):
            fixtures.append(path)
            sibling = _sibling_rule_file(path)
            if sibling is not None:
                rules.append(sibling)
        else:
            rules.append(path)
            base, dot, own = path.name.rpartition(".")
            if not dot:  # (no suffix: "myrules" would look for ".test.yaml")
                base = own
            for suffix in dict.fromkeys([*FIXTURE_SUFFIXES, f".test.{own}", f".TEST.{own}"]):
                candidate = path.with_name(base + suffix)
                if candidate.is_file():
                    fixtures.append(candidate)
    # one file named twice (a folder and a path inside it, relative and absolute) is read once
    return _once(rules), _once(fixtures)


def _once(paths: list[Path]) -> list[Path]:
    seen: set[Path] = set()
    kept = []
    for path in paths:
        key = path.resolve()
        if key not in seen:
            seen.add(key)
            kept.append(path)
    return kept


def _sibling_rule_file(fixture: Path) -> Path | None:
    stem = _stem(fixture)
    own = fixture.name[len(stem) + len(".test") :]  # the rule file's suffix as the fixture writes it
    for suffix in dict.fromkeys([*RULE_SUFFIXES, own]):
        candidate = fixture.with_name(stem + suffix)
        if candidate.is_file():
            return candidate
    return None


def load_cases(path: Path, ruleset: RuleSet, problems: Problems) -> list[Case]:
    source = str(path)
    document = read_yaml(path, problems)
    ctx = ParseContext(source, document, problems)
    if not isinstance(document, LocDict) or not isinstance(document.get("cases"), LocList):
        if document is not None or not problems:
            ctx.problem([], "a rule fixture is a mapping with a 'cases:' list")
        return []
    for key in document:
        if key != "cases":
            ctx.problem([key], f"unknown key {key!r}; a fixture file holds only 'cases'", key=True)
    if not document["cases"]:  # beside other files, it passed without testing anything
        ctx.problem(["cases"], "'cases' is empty; a fixture file holds at least one case")
    sibling = _sibling_rule_file(path)
    default_rules = sorted(
        r.id for r in ruleset.rules if sibling is not None and Path(r.source).resolve() == sibling.resolve()
    )
    if sibling is not None and not default_rules:
        # Said where a case relies on the default, instead of "'rules' must be a non-empty list"
        # about a key the case does not have.
        off = any(Path(r.source).resolve() == sibling.resolve() for r in ruleset.disabled)
        no_default = (
            f"every rule of {sibling.name} is disabled (enabled: false), so the case would test nothing: "
            "enable the rules it tests"
            if off
            else f"{sibling.name} holds no rule the case could test: name the rules it tests with 'rules:'"
        )
    else:
        no_default = None
    cases = []
    named: dict[str, int] = {}
    no_sibling = None if sibling is not None else _stem(path)
    for index, node in enumerate(document["cases"]):
        name = node.get("name") if isinstance(node, LocDict) else None
        if isinstance(name, str) and name.strip():
            if name in named:
                first = mark_at(ctx.document, ["cases", named[name]])
                ctx.problem(
                    ["cases", index, "name"],
                    f"case name {name!r} is used twice (also at line {first.line if first else '?'}); "
                    "a report names its cases, so each needs its own",
                )
            named.setdefault(name, index)
        case = _parse_case(node, ctx, ["cases", index], ruleset, default_rules, no_sibling, no_default)
        if case is not None:
            cases.append(case)
    return cases


def _parse_case(
    node: Any,
    ctx: ParseContext,
    path: list[Any],
    ruleset: RuleSet,
    default_rules: list[str],
    no_sibling: str | None = None,
    no_default: str | None = None,
) -> Case | None:
    if not isinstance(node, LocDict):
        ctx.problem(path, "a case is a mapping with name, clusters and expect")
        return None
    before = len(ctx.problems)
    for key in node:
        if key not in ("name", "rules", "clusters", "expect"):
            valid = "name, rules, clusters, expect"
            ctx.problem([*path, key], f"unknown key {key!r} in a case; valid: {valid}", key=True)
    name = node.get("name")
    if not isinstance(name, str) or not name.strip():
        ctx.problem([*path, "name"] if "name" in node else path, "a case needs a 'name' (text)")
    rules = node.get("rules", default_rules)
    known = {r.id for r in ruleset.rules}
    disabled = {r.id for r in ruleset.disabled}
    if "rules" not in node and no_sibling is not None:
        ctx.problem(
            path,
            f"no rule file beside this fixture ({no_sibling}.yaml): "
            "name the rules the case tests with 'rules:'",
        )
        rules = []
    elif "rules" not in node and no_default is not None:
        ctx.problem(path, no_default)
        rules = []
    elif not isinstance(rules, list) or not all(isinstance(r, str) for r in rules) or not rules:
        where = [*path, "rules"] if "rules" in node else path
        ctx.problem(where, "'rules' must be a non-empty list of rule ids")
        rules = []
    for index, rule_id in enumerate(rules):
        if rule_id in disabled:
            ctx.problem([*path, "rules", index], f"rule {rule_id!r} is disabled (enabled: false)")
        elif rule_id not in known:
            ctx.problem([*path, "rules", index], f"unknown rule {rule_id!r}")
        elif rules.index(rule_id) != index:
            ctx.problem([*path, "rules", index], f"rule {rule_id!r} is named twice")
    clusters = _parse_clusters(node.get("clusters"), ctx, [*path, "clusters"])
    if "expect" not in node:  # read as "no findings", a case that forgot its expectations passed
        ctx.problem(path, "a case needs 'expect': the findings expected ([] for none)")
        expect: set[Identity] = set()
        messages: dict[Identity, str] = {}
    else:
        expect, messages = _parse_expect(node.get("expect"), ctx, [*path, "expect"], set(rules))
    if len(ctx.problems) > before:
        return None
    mark = mark_at(ctx.document, path)
    return Case(ctx.source, mark.line if mark else 1, str(name), list(rules), clusters, expect, messages)


def _parse_clusters(
    node: Any, ctx: ParseContext, path: list[Any]
) -> list[tuple[dict[str, Any], list[dict[str, Any]]]]:
    if not isinstance(node, LocList):
        ctx.problem(path, "'clusters' must be a list of clusters (each with id and columns)")
        return []
    out = []
    seen_clusters: set[str] = set()
    for index, raw in enumerate(node):
        here = [*path, index]
        if not isinstance(raw, LocDict):
            ctx.problem(here, "a cluster is a mapping (id, name, labels, severity, status, columns)")
            continue
        from auditor.engine.rules import plain

        data = plain(raw)
        columns = data.pop("columns", [])
        _unknown_keys(raw, _CLUSTER_KEYS | {"columns"}, "a cluster", ctx, here)
        cluster_id = None
        try:
            cluster_id = parse_cluster(data).id
            check_key(cluster_id, MAX_CLUSTER_ID_BYTES)
            _lost_cluster_values(raw, ctx, here)
        except PydanticValidationError as exc:  # its columns are checked all the same
            _record_problems(exc, "cluster", ctx, here)
        except RecordKeyTooLong:
            size = len(str(cluster_id).encode())
            ctx.problem(
                [*here, "id"] if "id" in raw else here,
                f"invalid cluster: the id is {size:,} bytes long, more than the {MAX_CLUSTER_ID_BYTES:,} "
                "the store takes",
            )
            cluster_id = None
        if not isinstance(columns, list):
            ctx.problem([*here, "columns"], "'columns' must be a list")
            continue
        if cluster_id is not None and cluster_id in seen_clusters:
            ctx.problem(here, f"cluster {cluster_id!r} appears twice in this case")
        if cluster_id is not None:
            seen_clusters.add(cluster_id)
        good = []
        seen_columns: set[str] = set()
        for position, column in enumerate(columns):
            at = [*here, "columns", position]
            node = raw["columns"][position] if isinstance(raw.get("columns"), LocList) else None
            if isinstance(node, LocDict):
                _check_column_keys(node, ctx, at)
                _lost_confidences(node, ctx, at)
            try:
                parsed = parse_column(column)
                check_key(parsed.fullyQualifiedName, MAX_FQN_BYTES)
            except PydanticValidationError as exc:
                _record_problems(exc, "column", ctx, at)
                fqn = column.get("fullyQualifiedName") if isinstance(column, dict) else None
                if isinstance(fqn, str) and fqn in seen_columns:
                    ctx.problem(at, f"column {fqn!r} appears twice in cluster {cluster_id!r}")
                if isinstance(fqn, str):
                    seen_columns.add(fqn)
                continue
            except RecordKeyTooLong:
                size = len(parsed.fullyQualifiedName.encode())
                ctx.problem(
                    at,
                    f"invalid column: the fullyQualifiedName is {size:,} bytes long, more than the "
                    f"{MAX_FQN_BYTES:,} the store takes",
                )
                continue
            if parsed.fullyQualifiedName in seen_columns:
                ctx.problem(
                    at, f"column {parsed.fullyQualifiedName!r} appears twice in cluster {cluster_id!r}"
                )
                continue
            seen_columns.add(parsed.fullyQualifiedName)
            good.append(column)
        if cluster_id is not None:
            out.append((data, good))
    return out


def _model_keys(model: type[BaseModel]) -> frozenset[str]:
    """Every key a wire model reads: its field names and their aliases."""
    keys: set[str] = set()
    for name, spec in model.model_fields.items():
        keys.add(name)
        if isinstance(spec.validation_alias, AliasChoices):
            keys.update(str(choice) for choice in spec.validation_alias.choices)
        elif isinstance(spec.validation_alias, str):
            keys.add(spec.validation_alias)
    return frozenset(keys)


_CLUSTER_KEYS = _model_keys(Cluster)
_COLUMN_KEYS = _model_keys(Column)
_TAG_KEYS = _model_keys(Tag)
_TAG_PROPERTY_KEYS = _model_keys(TagProperties)
_ATTRIBUTE_KEYS = _model_keys(Attribute)


def _check_column_keys(node: LocDict, ctx: ParseContext, at: list[Any]) -> None:
    _unknown_keys(node, _COLUMN_KEYS, "a column", ctx, at)
    for key, known, what in (("tags", _TAG_KEYS, "a tag"), ("attributes", _ATTRIBUTE_KEYS, "an attribute")):
        items = node.get(key)
        for index, item in enumerate(items if isinstance(items, LocList) else []):
            if not isinstance(item, LocDict):
                continue
            _unknown_keys(item, known, what, ctx, [*at, key, index])
            properties = item.get("properties") if key == "tags" else None
            if isinstance(properties, LocDict):
                _unknown_keys(
                    properties, _TAG_PROPERTY_KEYS, "a tag's properties", ctx, [*at, key, index, "properties"]
                )


def _unknown_keys(
    node: LocDict, known: frozenset[str], what: str, ctx: ParseContext, path: list[Any]
) -> None:
    """A misspelt key in a fixture (``colums``) would be ignored as BigID's extra fields are, and
    the case would pass without testing what its author meant: name it."""
    import difflib

    for key in node:
        if str(key) in known:
            continue
        close = difflib.get_close_matches(str(key), sorted(known), n=1)
        if what == "a tag" and str(key) in _TAG_PROPERTY_KEYS:
            hint = f" (it goes under properties: {{{key}: …}})"
        else:
            hint = f" (did you mean {close[0]!r}?)" if close else ""
        ctx.problem([*path, key], f"unknown key {key!r} in {what}{hint}", key=True)


def _record_problems(exc: PydanticValidationError, what: str, ctx: ParseContext, at: list[Any]) -> None:
    """Every problem pydantic found in a cluster or column, each where its field is written
    (``tags.0.properties.hidden: expected true or false, got text 'sometimes'``)."""
    said = set()
    for error in exc.errors():
        loc = list(error["loc"])
        if what == "column" and loc and isinstance(loc[0], int):  # (parse_column validates a list of one)
            loc = loc[1:]
        field = ".".join(str(step) for step in loc)
        message = f"invalid {what}: " + (f"{field}: " if field else "") + describe_type_error(error)
        if message not in said:
            said.add(message)
            ctx.problem([*at, *loc], message)


# A BigID server's value that means nothing (a size of 'lots', a confidence of 'high') is read as
# unknown, so that one odd record does not refuse a tenant's listing. In a fixture it would quietly
# test less than its author wrote: refused (the two functions below).
def _lost_cluster_values(raw: LocDict, ctx: ParseContext, at: list[Any]) -> None:
    from auditor.bigid.models import coerce_count

    size = raw.get("size")
    hint = _yaml_number_form(size)
    if size is not None and (coerce_count(size) is None or hint):
        ctx.problem(
            [*at, "size"],
            f"invalid cluster: size: expected a whole number from 0, got {type_name(size)}{hint}",
        )


def _lost_confidences(column: LocDict, ctx: ParseContext, at: list[Any]) -> None:
    from auditor.bigid.models import Attribute, Column, field_spellings
    from auditor.store.writer import confidence

    for key in field_spellings(Column, "attributes"):
        items = column.get(key)
        if not isinstance(items, LocList):
            continue
        for position, item in enumerate(items):
            if not isinstance(item, LocDict):
                continue
            for name in field_spellings(Attribute, "calc_confidence_level"):
                value = item.get(name)
                hint = _yaml_number_form(value)
                if value is not None and (confidence(value) is None or hint):
                    ctx.problem(
                        [*at, key, position, name],
                        f"invalid column: {key}.{position}.{name}: expected a number (0.9) or a percentage "
                        f"('90%'), got {type_name(value)}{hint}",
                    )


def _yaml_number_form(value: Any) -> str:
    """The hint for a number written in a form YAML 1.1 keeps as text (``01000``, ``1e3``), which
    the client then reads as a number (a BigID server may send numbers as text): the fixture
    stored 1000 without a word, where rule files refuse the same forms (docs/rules.md)."""
    from auditor.engine.conditions import number_as_text

    hint = number_as_text(value)  # ("" for no number; a plain number quoted is text the client reads)
    return "" if hint.startswith(" (written as text") else hint


def _stem(fixture: Path) -> str:
    name = fixture.name
    for suffix in FIXTURE_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def _parse_expect(
    node: Any, ctx: ParseContext, path: list[Any], rules: set[str]
) -> tuple[set[Identity], dict[Identity, str]]:
    if not isinstance(node, LocList):  # a blank 'expect:' too: it read as "no findings"
        ctx.problem(path, "'expect' must be a list of findings ([] for none)")
        return set(), {}
    out: set[Identity] = set()
    messages: dict[Identity, str] = {}
    first: dict[Identity, int] = {}
    for index, item in enumerate(node):
        here = [*path, index]
        if not isinstance(item, LocDict):
            ctx.problem(here, "an expected finding is a mapping: {rule, cluster, column|columns, message}")
            continue
        for key in item:
            if key not in ("rule", "cluster", "column", "columns", "message"):
                valid = "rule, cluster, column, columns, message"
                ctx.problem([*here, key], f"unknown key {key!r}; valid: {valid}", key=True)
        rule = item.get("rule")
        if not isinstance(rule, str) or rule not in rules:
            where = [*here, "rule"] if "rule" in item else here
            if rules:
                ctx.problem(where, f"'rule' must be one of the case's rules: {', '.join(sorted(rules))}")
            continue
        cluster = item.get("cluster")
        if cluster is not None and not isinstance(cluster, str):
            ctx.problem([*here, "cluster"], "'cluster' must be text (quote numeric ids)")
            continue
        message = item.get("message")
        if "message" in item and (not isinstance(message, str) or not message.strip()):
            # a blank 'message:' would read as "any message": the check the author asked for lost
            ctx.problem([*here, "message"], "'message' must be the finding's exact message text")
            continue
        columns = item.get("columns")
        if columns is not None and item.get("column") is not None:
            ctx.problem(
                here,
                "an expected finding names 'column' (a column finding) or 'columns' (a group finding), "
                "not both",
            )
            continue
        if columns is not None:
            if not isinstance(columns, list) or not all(isinstance(c, str) for c in columns) or not columns:
                ctx.problem([*here, "columns"], "'columns' must be a non-empty list of fully qualified names")
                continue
            if len(set(columns)) != len(columns):
                ctx.problem([*here, "columns"], "'columns' names a column twice")
                continue
            identity: Identity = (rule, cluster, None, tuple(sorted(columns)))
        else:
            column = item.get("column")
            if "column" in item and not isinstance(column, str):
                # a list here read as a cluster finding: the case passed testing something else
                ctx.problem(
                    [*here, "column"],
                    "'column' must be text (a fully qualified name); a group finding lists 'columns'",
                )
                continue
            identity = (rule, cluster, column, None)
        if identity in first:
            ctx.problem(here, f"this finding is expected twice (also at expect[{first[identity]}])")
            continue
        first[identity] = index
        out.add(identity)
        if isinstance(message, str):
            messages[identity] = message
    return out, messages


def run_fixtures(paths: Sequence[Path]) -> FixtureReport:
    """Validate and run every fixture named by ``paths``; RuleError (exit 2) if any is invalid."""
    missing = Problems()
    for path in paths:
        if not Path(path).exists():  # said as rules validate and check --rules say it
            missing.add(str(path), None, "no such file or folder")
    if missing:
        raise RuleError(
            f"{len(missing)} problem{'s' if len(missing) != 1 else ''} in the rule files",
            hint="fix them and check with: auditor rules validate PATH",
            problems=missing.in_order(),
        )
    rule_paths, fixture_paths = fixture_files([Path(p) for p in paths])
    if not fixture_paths:
        raise RuleError(
            f"no rule fixtures (*.test.yaml) found in {', '.join(str(p) for p in paths)}",
            hint="keep NAME.test.yaml beside NAME.yaml (see docs/rules.md)",
        )
    ruleset = load_ruleset(rule_paths) if rule_paths else load_ruleset(None)
    problems = Problems()
    cases: list[Case] = []
    for path in fixture_paths:
        cases.extend(load_cases(path, ruleset, problems))
    if problems:
        raise RuleError(
            f"{len(problems)} problem{'s' if len(problems) != 1 else ''} in the rule fixtures",
            problems=problems.in_order(),
        )
    if not cases:  # a CI step that "passed" without testing anything would hide a broken fixture file
        raise RuleError(
            f"no test cases in {', '.join(str(p) for p in fixture_paths)}",
            hint="give each fixture file a non-empty 'cases:' list (see docs/rules.md)",
        )
    results = []
    with tempfile.TemporaryDirectory(prefix="auditor-rules-test-") as folder, removed_on_hard_stop(folder):
        engine = create_db_engine(f"sqlite:///{Path(folder) / 'fixtures.db'}")
        try:
            metadata.create_all(engine)
            for case in cases:
                results.append(_run_case(engine, case, ruleset))
        finally:
            engine.dispose()
    return FixtureReport(results, ruleset, [str(p) for p in fixture_paths])


def _run_case(engine: Any, case: Case, ruleset: RuleSet) -> CaseResult:
    writer = SnapshotWriter(engine, source_url="fixture", details={"fixture": f"{case.source}:{case.line}"})
    for position, (cluster, columns) in enumerate(case.clusters):
        parsed = parse_cluster(cluster)
        writer.add_cluster(parsed, cluster, position)
        writer.add_columns(parsed.id, [(parse_column(c), c) for c in columns])
        writer.finish_cluster(parsed.id, ClusterStats(columns_fetched=len(columns), pages=1))
    writer.complete(RunTotals(clusters_announced=len(case.clusters)))
    found = evaluate(engine, writer.run_id, ruleset.only(case.rules))
    given = {identity_of(f): f.message for f in found}
    actual = set(given)
    return CaseResult(
        case,
        missing=sorted(case.expect - actual, key=str),
        unexpected=sorted(actual - case.expect, key=str),
        findings=found,
        wrong_messages=sorted(
            (
                (identity, expected, given[identity])
                for identity, expected in case.messages.items()
                if identity in given and given[identity] != expected
            ),
            key=str,
        ),
    )
