"""Waivers: reviewed, expiring exceptions to rules, kept in one YAML file.

Each entry names a rule id and narrows it to a cluster id and/or a column pattern (``column``: a
glob such as ``hr.*.ssn``; ``column_regex``: a regular expression matched against the whole fully
qualified name, ``.`` matching a line break too; both ignore case, and so does the cluster id).
``reason``, ``owner`` and ``expires`` (a date) are required, ``ticket`` is optional. A waived
finding is still reported, with status ``waived``; after ``expires`` the waiver no longer applies
and the finding is labelled "waiver expired". Waivers that match nothing are reported as stale, and
those expiring within :data:`EXPIRING_DAYS` are listed.

Example::

    waivers:
      - rule: high-sensitivity-without-confidential
        cluster: c-hr-001
        column: "hr.payroll.*"
        reason: Payroll is moving to the confidential warehouse in Q1
        owner: data-governance@example.com
        expires: 2027-03-31
        ticket: GOV-1234
"""

from __future__ import annotations

import fnmatch
import functools
import hashlib
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict, Field, StrictStr, field_validator
from pydantic import ValidationError as PydanticValidationError

from auditor.engine.conditions import ParseContext, close_match, report_pydantic, type_name
from auditor.engine.findings import STATUS_WAIVED, Finding
from auditor.engine.rules import RuleSet, load_ruleset, ruleset_to_evaluate
from auditor.engine.sqlfuncs import check_pattern
from auditor.engine.yamlsource import LocDict, LocList, Mark, Problems, mark_at, read_yaml
from auditor.errors import RuleError

EXPIRING_DAYS = 14
NARROWING = ("cluster", "column", "column_regex")

_ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


def calendar_date(text: str) -> date | None:
    """``text`` as a date when it is written YYYY-MM-DD and exists (``None`` otherwise): the one
    spelling ``expires`` and ``--today`` take (not ``2027-1-5``, ``20270105`` or ``2027-W01-1``,
    which ``date.fromisoformat`` reads)."""
    text = text.strip()
    if not _ISO_DATE.fullmatch(text):
        return None
    try:
        return date.fromisoformat(text)
    except ValueError:
        return None


class WaiverSpec(BaseModel):
    """One waiver entry as written in YAML."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    rule: StrictStr = Field(min_length=1, description="the rule id this waiver applies to")
    cluster: StrictStr | None = Field(default=None, description="a cluster id")
    column: StrictStr | None = Field(
        default=None, description="a glob over fullyQualifiedName, e.g. hr.*.ssn"
    )
    column_regex: StrictStr | None = Field(
        default=None, description="a regex over the whole fullyQualifiedName"
    )
    reason: StrictStr = Field(min_length=1)
    owner: StrictStr = Field(min_length=1)
    expires: date
    ticket: StrictStr | None = None

    @field_validator("expires", mode="before")
    @classmethod
    def _a_calendar_date(cls, value: Any) -> Any:
        """YYYY-MM-DD only: pydantic's lax reading took 1798675200 (a Unix time) and 0 for dates,
        and a date-time with an offset for its date part, silently waiving findings."""
        if isinstance(value, datetime):
            raise ValueError("must be a date (YYYY-MM-DD) without a time")
        if isinstance(value, date):
            return value
        if isinstance(value, str) and _ISO_DATE.fullmatch(value.strip()):
            return value.strip()
        # as the rule files' errors name a value (a probe: "number True", "[datetime.date(…)]")
        raise ValueError(f"expected a date written YYYY-MM-DD (such as 2027-03-31), got {type_name(value)}")

    @field_validator("reason", "owner", "cluster", "column", "column_regex")
    @classmethod
    def _not_blank(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            raise ValueError("must not be blank")
        return value


class WaiverFileSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    waivers: list[WaiverSpec]


class Subject(Protocol):
    """What a waiver is matched on: a :class:`Finding`, or a stand-in read from stored rows."""

    rule: str
    cluster_id: str | None
    column: str | None
    columns: list[str]


def rule_typo(rule: str, known: Iterable[str], *, loaded: str = "loaded") -> str:
    """Why a waiver's rule id is not in the rule set, as said after it: the id it most likely
    misspells, if any (``loaded``: how the rule files came, 'loaded' or 'given')."""
    meant = close_match(rule, known)
    if meant:
        return f"did you mean {meant!r}? or its rule file was not {loaded}"
    return f"a typo, or its rule file was not {loaded}"


@dataclass(frozen=True)
class Waiver:
    rule: str
    cluster: str | None
    column: str | None
    column_regex: str | None
    reason: str
    owner: str
    expires: date
    ticket: str | None
    source: str
    line: int

    @property
    def where(self) -> str:
        return f"{self.source}:{self.line}"

    def expired(self, today: date) -> bool:
        return today > self.expires

    def matches(self, finding: Subject) -> bool:
        if finding.rule != self.rule:
            return False
        # Cluster ids are hexadecimal ObjectIds, copied from BigID's UI in either case.
        if self.cluster is not None and (finding.cluster_id or "").lower() != self.cluster.lower():
            return False
        return self.matches_columns(column_names(finding))

    def matches_columns(self, names: Sequence[str]) -> bool:
        """Whether every one of a finding's column names (:func:`column_names`) is covered."""
        if self.column is None and self.column_regex is None:
            return True
        glob, regex = self._patterns
        return all(
            (glob is None or glob(name.lower()) is not None) and (regex is None or regex(name) is not None)
            for name in names
        )

    @functools.cached_property
    def _patterns(self) -> tuple[Callable[[str], Any] | None, Callable[[str], Any] | None]:
        """The glob (over the lowered name) and the regular expression, compiled once: matched per
        waiver and finding, they cost a cache lookup and a lowering of the pattern each time."""
        glob = re.compile(fnmatch.translate(self.column.lower())).match if self.column is not None else None
        regex = (
            re.compile(self.column_regex, re.IGNORECASE | re.DOTALL).fullmatch
            if self.column_regex is not None
            else None
        )
        return glob, regex

    @property
    def regex_only(self) -> Callable[[str], Any]:
        """The compiled ``column_regex``'s ``fullmatch``, for a waiver that has no glob beside it."""
        _, regex = self._patterns
        assert regex is not None and self.column is None
        return regex

    @property
    def literal_prefix(self) -> str | None:
        """What every name its glob matches starts with (lowered), ``None`` when it has no glob."""
        if self.column is None:
            return None
        return re.split(r"[*?\[]", self.column.lower(), maxsplit=1)[0]

    def describe(self) -> str:
        return describe_waiver(self.to_json(date.min))

    def state(self, today: date) -> dict[str, Any]:
        """The ``waiver`` object attached to a finding."""
        data: dict[str, Any] = {
            "reason": self.reason,
            "owner": self.owner,
            "expires": self.expires.isoformat(),
            "expired": self.expired(today),
            "where": self.where,
        }
        if self.ticket:
            data["ticket"] = self.ticket
        return data

    def to_json(self, today: date) -> dict[str, Any]:
        return {
            "rule": self.rule,
            "cluster": self.cluster,
            "column": self.column,
            "column_regex": self.column_regex,
            "reason": self.reason,
            "owner": self.owner,
            "expires": self.expires.isoformat(),
            "ticket": self.ticket,
            "where": self.where,
            "days_left": (self.expires - today).days,
        }


def describe_waiver(entry: Mapping[str, Any]) -> str:
    """What a waiver names (``rule r, cluster c, column ~ /x/``), from its JSON form (``to_json``)."""
    parts = [f"rule {entry.get('rule')}"]
    for key in ("cluster", "column"):
        if entry.get(key):
            parts.append(f"{key} {entry.get(key)}")
    if entry.get("column_regex"):
        parts.append(f"column ~ /{entry.get('column_regex')}/")
    return ", ".join(parts)


@dataclass(frozen=True)
class Waivers:
    entries: tuple[Waiver, ...]
    source: str
    digest: str

    def __len__(self) -> int:
        return len(self.entries)

    @property
    def rules(self) -> list[str]:
        """The rule ids the waivers name, sorted: only these rules' findings can be waived."""
        return sorted({str(w.rule) for w in self.entries})


def load_waivers(path: Path | str) -> Waivers:
    """Load and validate a waiver file; raises RuleError (exit 2) listing every problem."""
    path = Path(path)
    problems = Problems()
    source = str(path)
    if path.is_dir():
        raise RuleError(f"waiver file {path} is a folder, not a file", hint="check the --waivers path")
    if path.exists() and not path.is_file():
        raise RuleError(f"waiver file {path} is not a regular file", hint="check the --waivers path")
    if not path.is_file():
        raise RuleError(f"waiver file {path} does not exist", hint="check the --waivers path")
    document = read_yaml(path, problems)
    ctx = ParseContext(source, document, problems)
    entries: list[Waiver] = []
    if document is None and not problems:
        problems.add(source, None, "the file is empty; expected a 'waivers:' list")
    elif document is not None:
        if not isinstance(document, LocDict) or not isinstance(document.get("waivers"), LocList):
            ctx.problem([], "a waiver file is a mapping with a 'waivers:' list")
        else:
            for key in document:
                if key != "waivers":
                    ctx.problem([key], f"unknown key {key!r}; a waiver file holds only 'waivers'", key=True)
            first: dict[tuple[Any, ...], Waiver] = {}
            for index, node in enumerate(document["waivers"]):
                waiver = _parse_waiver(node, ctx, ["waivers", index])
                if waiver is None:
                    continue
                # A copy of an entry (a merge gone wrong): it is never stale, as the first covers
                # the same findings, so nothing else would point it out. Entries that differ in
                # reason, owner or expiry may overlap (the one expiring last applies). Cluster ids
                # and column globs match ignoring case (regular expressions too, but lower-casing
                # one can change what it means: \\S is not \\s).
                same = (
                    waiver.rule,
                    (waiver.cluster or "").lower() or None,
                    waiver.column.lower() if waiver.column is not None else None,
                    waiver.column_regex,
                    waiver.reason,
                    waiver.owner,
                    waiver.expires,
                    waiver.ticket,
                )
                if (earlier := first.setdefault(same, waiver)) is not waiver:
                    ctx.problem(
                        ["waivers", index],
                        f"this waiver repeats the waiver at line {earlier.line} (same rule, cluster, column, "
                        "reason, owner and expiry); keep one",
                    )
                entries.append(waiver)
    if problems:
        count = len(problems)
        raise RuleError(
            f"{count} problem{'s' if count != 1 else ''} in the waiver file {path}",
            hint="every waiver needs rule, reason, owner, expires (YYYY-MM-DD) and a cluster or column",
            problems=problems.in_order(),
        )
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    return Waivers(tuple(entries), source, digest)


def load_rules_and_waivers(
    rule_paths: Sequence[Path] | None, waivers_path: Path | str | None, *, to_evaluate: bool = False
) -> tuple[RuleSet, Waivers | None]:
    """:func:`~auditor.engine.rules.load_ruleset` and :func:`load_waivers` together: when both files
    have problems, one RuleError (exit 2) lists them all, rule files first. ``to_evaluate``: a rule
    set whose every rule is disabled is a RuleError too (a gate given it would pass everything; the
    commands that evaluate rules ask for this)."""
    errors: list[RuleError] = []
    ruleset: RuleSet | None = None
    waivers: Waivers | None = None
    try:
        ruleset = load_ruleset(rule_paths)
    except RuleError as exc:
        errors.append(exc)
    if waivers_path is not None:
        try:
            waivers = load_waivers(waivers_path)
        except RuleError as exc:
            errors.append(exc)
    if len(errors) == 1:
        raise errors[0]
    if errors:
        rules_error, waivers_error = errors
        raise RuleError(
            f"{rules_error.message}; {waivers_error.message}",
            hint=f"{rules_error.hint}; {waivers_error.hint}",
            problems=rules_error.problems + (waivers_error.problems or [waivers_error.message]),
        )
    assert ruleset is not None
    if to_evaluate:
        ruleset = ruleset_to_evaluate(ruleset)  # a set whose every rule is off is refused
    return ruleset, waivers


def _parse_waiver(node: Any, ctx: ParseContext, path: list[Any]) -> Waiver | None:
    if not isinstance(node, LocDict):
        ctx.problem(path, "a waiver is a mapping with rule, reason, owner, expires and cluster/column")
        return None
    before = len(ctx.problems)
    spec = None
    try:
        spec = WaiverSpec.model_validate(node)
    except PydanticValidationError as exc:
        report_pydantic(ctx, path, exc, "a waiver", WaiverSpec)
    # A narrowing key set to null would waive the rule everywhere, unnoticed (a '*' glob is explicit).
    for key in NARROWING:
        if key in node and node[key] is None:
            ctx.problem([*path, key], f"{key} is null, which narrows nothing; give a value or remove the key")
    if not any(node.get(key) is not None for key in NARROWING):
        ctx.problem(
            path,
            "a waiver must narrow its rule with 'cluster', 'column' or 'column_regex' "
            "(to switch a rule off everywhere, set enabled: false on the rule)",
        )
    pattern = node.get("column_regex")
    if isinstance(pattern, str):
        why = check_pattern(pattern, whole=True)  # (it matches the whole name)
        if why:
            ctx.problem([*path, "column_regex"], f"column_regex: {why}")
    if spec is None or len(ctx.problems) > before:
        return None
    mark = mark_at(ctx.document, path) or Mark(1, 1)
    return Waiver(
        rule=spec.rule,
        cluster=spec.cluster,
        column=spec.column,
        column_regex=spec.column_regex,
        reason=spec.reason.strip(),
        owner=spec.owner.strip(),
        expires=spec.expires,
        ticket=spec.ticket,
        source=ctx.source,
        line=mark.line,
    )


@dataclass
class WaiverReport:
    """How the waivers fared against one run's findings."""

    applied: int = 0
    expired_matches: int = 0
    stale: list[Waiver] = field(default_factory=list)
    expiring: list[Waiver] = field(default_factory=list)
    expired: list[Waiver] = field(default_factory=list)
    # rule ids that waivers name but the rule set checked does not have (set by check_run)
    unknown_rules: frozenset[str] = frozenset()
    rule_ids: frozenset[str] = frozenset()  # the rule set's (set by check_run), for "did you mean"
    # rule ids of waivers whose rule is in the rule set with enabled: false (set by check_run)
    disabled_rules: frozenset[str] = frozenset()
    # the run checked is not complete (set by check_run): a waiver may match nothing in it only
    # because what it waives was not fetched
    partial_run: int | None = None

    def unknown_note(self, waiver: Waiver) -> str:
        """Why a stale waiver can never match, when it is because its rule is not in the rule set;
        or why it may not be stale at all, when the run checked is not complete."""
        if waiver.rule in self.unknown_rules:
            return f": no rule '{waiver.rule}' in the rule set ({rule_typo(waiver.rule, self.rule_ids)})"
        if waiver.rule in self.disabled_rules:
            return f": rule '{waiver.rule}' is disabled (enabled: false), so it has no findings to waive"
        if self.partial_run is not None:
            return (
                f": run {self.partial_run} is not complete, so it may waive what the run lacks (check a "
                "complete run before removing it)"
            )
        return ""


def column_names(finding: Subject) -> list[str]:
    """The names a waiver's column patterns must all cover: the column, else every column involved;
    a cluster finding that involves no column is the empty name, matched by `*` and `.*` (which
    waive the rule's findings everywhere) and by any pattern matching an empty name."""
    return [finding.column] if finding.column else list(finding.columns) or [""]


class WaiverIndex:
    """The waivers of one file by rule, cluster and the literal start of their column glob.

    Trying every waiver of a rule on every finding cost findings x waivers pattern matches: a scale
    probe's 10,000 waivers took 204 s over 18,600 findings. A finding now looks up its rule and
    cluster (and the any-cluster waivers), then only the globs whose literal start its first name
    begins with; waivers with a regular expression alone are still tried one by one.
    """

    def __init__(self, entries: Sequence[Waiver]) -> None:
        # (rule, cluster lowered or None) -> (every finding's, by literal glob start, regex only)
        self.buckets: dict[
            tuple[str, str | None],
            tuple[
                list[tuple[int, Waiver]],
                dict[str, list[tuple[int, Waiver]]],
                list[tuple[int, Waiver, Callable[[str], Any]]],
            ],
        ] = {}
        for index, waiver in enumerate(entries):
            cluster = waiver.cluster.lower() if waiver.cluster is not None else None
            everything, by_prefix, regexes = self.buckets.setdefault((waiver.rule, cluster), ([], {}, []))
            prefix = waiver.literal_prefix
            if prefix is not None:
                by_prefix.setdefault(prefix, []).append((index, waiver))
            elif waiver.column_regex is not None:
                regexes.append((index, waiver, waiver.regex_only))
            else:
                everything.append((index, waiver))
        self.prefix_lengths = {
            key: sorted({len(prefix) for prefix in bucket[1]}) for key, bucket in self.buckets.items()
        }

    def candidates(self, finding: Subject) -> list[tuple[int, Waiver]]:
        """The (file position, waiver) pairs that match ``finding``, in file order."""
        names = column_names(finding)
        first = names[0].lower()
        found: list[tuple[int, Waiver]] = []
        cluster = (finding.cluster_id or "").lower()
        for key in ((finding.rule, cluster), (finding.rule, None)):
            bucket = self.buckets.get(key)
            if bucket is None:
                continue
            everything, by_prefix, regexes = bucket
            found += everything
            for length in self.prefix_lengths[key]:
                if length > len(first):
                    break
                for item in by_prefix.get(first[:length], ()):
                    if item[1].matches_columns(names):
                        found.append(item)
            if len(names) == 1:  # most findings: one name, each pattern called straight (~10x fewer calls)
                name = names[0]
                found += [(i, w) for i, w, fullmatch in regexes if fullmatch(name) is not None]
            else:
                found += [(i, w) for i, w, _ in regexes if w.matches_columns(names)]
        found.sort(key=lambda item: item[0])
        return found


def apply_waivers(findings: Sequence[Finding], waivers: Waivers | None, today: date) -> WaiverReport:
    """Mark findings waived (active waiver) or labelled "waiver expired"; report stale/expiring ones."""
    report = WaiverReport()
    if waivers is None:
        return report
    used: set[int] = set()
    index = WaiverIndex(waivers.entries)
    for finding in findings:
        candidates = index.candidates(finding)
        if not candidates:
            continue
        used.update(i for i, _ in candidates)
        active = [w for _, w in candidates if not w.expired(today)]
        if active:
            chosen = max(active, key=lambda w: w.expires)
            finding.status = STATUS_WAIVED
            finding.waiver = chosen.state(today)
            report.applied += 1
        else:
            chosen = max((w for _, w in candidates), key=lambda w: w.expires)
            finding.waiver = chosen.state(today)
            report.expired_matches += 1
    # (the last days of the calendar: every waiver that has not expired is within the horizon)
    horizon = (
        today + timedelta(days=EXPIRING_DAYS)
        if today < date.max - timedelta(days=EXPIRING_DAYS)
        else date.max
    )
    for index, waiver in enumerate(waivers.entries):
        if index not in used:
            report.stale.append(waiver)
        if waiver.expired(today):
            report.expired.append(waiver)
        elif waiver.expires <= horizon:
            report.expiring.append(waiver)
    report.expiring.sort(key=lambda w: w.expires)
    return report
