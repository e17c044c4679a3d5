"""The typed context the report and email templates render, built from JSON-able stage outputs.

:class:`ReportInput` holds exactly what the earlier stages produce, in their JSON shapes (the run,
``CheckResult.to_json()["findings"]``, ``DiffResult.to_json()``, the rules with their plain-sentence
explanations, findings counts of past runs), so the whole rendering path can be driven by hand-made
dicts in tests. :func:`build_context` turns it into a :class:`ReportContext`: summary cards, chart
geometry, and capped, grouped sections with their totals, so that no template ever loops over more
than ``max_rows`` rows per section however large the catalog change is.
"""

from __future__ import annotations

import hashlib
import heapq
import json
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from typing import Any

from auditor.store.runs import cluster_list_note, listing_notes, mismatch_count, skipped_note

SEVERITIES: tuple[str, ...] = ("critical", "high", "medium", "low", "info")
SEVERITY_RANK = {name: rank for rank, name in enumerate(SEVERITIES)}
DEFAULT_MAX_ROWS = 500
EXPIRING_WITHIN_DAYS = 14
MAX_COLUMNS_LISTED = 12  # a group finding may involve thousands of columns: list a few, count the rest
MAX_CELL_CHARS = 600  # a hostile 1 MB catalog value must not blow up the report


def severity_rank(severity: str | None) -> int:
    return SEVERITY_RANK.get(str(severity or "").lower(), len(SEVERITIES))


# --------------------------------------------------------------------------------------------------
# Inputs (what other stages hand over)
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RunView:
    """The facts about one run that the report shows as evidence."""

    id: int
    status: str
    started_at: str | None
    finished_at: str | None
    source_url: str | None
    tool_version: str | None
    clusters_announced: int | None = None
    clusters_stored: int | None = None
    columns_announced: int | None = None
    columns_stored: int | None = None
    requests: int | None = None
    retries: int | None = None
    error: str | None = None
    cluster_filter: str | None = None
    auth_scheme: str | None = None
    fetch_notes: tuple[str, ...] = ()  # paging facts from ``runs.details`` worth an auditor's eye

    @property
    def complete(self) -> bool:
        return self.status == "complete"

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> RunView:
        """From ``RunInfo.to_json()`` (or any dict with those keys)."""
        return cls(
            id=int(data["id"]),
            status=str(data.get("status") or "unknown"),
            started_at=_iso(data.get("started_at")),
            finished_at=_iso(data.get("finished_at")),
            source_url=data.get("source_url"),
            tool_version=data.get("tool_version"),
            clusters_announced=data.get("clusters_announced"),
            clusters_stored=data.get("clusters_stored"),
            columns_announced=data.get("columns_announced"),
            columns_stored=data.get("columns_stored"),
            requests=data.get("requests"),
            retries=data.get("retries"),
            error=data.get("error"),
            cluster_filter=data.get("cluster_filter"),
            auth_scheme=data.get("auth_scheme"),
            fetch_notes=fetch_notes(data.get("details") or {}),
        )

    @classmethod
    def from_info(cls, run: Any) -> RunView:
        """From an :class:`auditor.store.runs.RunInfo`."""
        return cls.from_json(run.to_json())

    def to_json(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__dataclass_fields__}


def fetch_notes(details: Mapping[str, Any]) -> tuple[str, ...]:
    """Plain sentences about how completely the API delivered, from a run's ``details``."""
    notes: list[str] = []

    def count(key: str) -> int:
        value = details.get(key)
        if isinstance(value, list):
            return len(value)
        try:
            return int(value or 0)
        except (TypeError, ValueError):
            return 0

    if failed := count("failed_cluster_count"):  # first: a partial run must not read as a full one
        notes.append(
            "1 cluster could not be fetched (none of its columns is in this run)"
            if failed == 1
            else f"{failed:,} clusters could not be fetched (none of their columns is in this run)"
        )
    if left_out := skipped_note(details):  # as early: the run does not hold those clusters
        notes.append(left_out)
    notes += listing_notes(details)  # as early: clusters recorded short are not whole
    if short := count("total_shortfall_count"):  # as early: those columns were not checked
        notes.append(
            f"{short:,} cluster{' that' if short == 1 else 's that'} served fewer columns than announced "
            "(recorded short: the columns not served were not checked, and a diff does not compare "
            f"{'it' if short == 1 else 'them'})"
        )
    if details.get("pages"):
        notes.append(f"{count('pages'):,} pages of columns fetched")
    if listing := cluster_list_note(details):
        notes.append(listing)
    for key, sentence in (
        ("cluster_duplicates", "duplicate cluster rows received (the first record of each id kept)"),
        ("duplicate_rows", "duplicate column rows received (stored once)"),
        ("empty_pages_reasked", "empty pages before what a cluster announced, asked for once more"),
    ):
        if count(key):
            notes.append(f"{count(key):,} {sentence}")
    if shrunk := count("pages_shrunk"):
        smallest = details.get("page_size_shrunk_to")
        down = f", down to {smallest:,} columns per page" if isinstance(smallest, int) else ""
        notes.append(f"{shrunk:,} pages that timed out asked for again with half as many columns{down}")
    for kind, what in (("size", "size"), ("total", "totalCount")):
        if mismatched := mismatch_count(details, kind):
            notes.append(f"{mismatched:,} clusters whose {what} differs from the columns fetched")
    return tuple(notes)


def _iso(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value.astimezone(UTC).isoformat().replace("+00:00", "Z")
    return str(value)


@dataclass(frozen=True)
class RuleView:
    """A rule as the report explains it: what it checks in a plain sentence and how to fix it."""

    id: str
    title: str
    severity: str
    description: str = ""
    explanation: str = ""
    remediation: str = ""
    references: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()

    @classmethod
    def from_rule(cls, rule: Any) -> RuleView:
        """From an engine rule (``id, title, description, severity, remediation, references, explain()``)."""
        explain = getattr(rule, "explain", None)
        return cls(
            id=str(rule.id),
            title=str(getattr(rule, "title", "") or rule.id),
            severity=str(getattr(rule, "severity", "info")).lower().rsplit(".", 1)[-1],
            description=str(getattr(rule, "description", "") or ""),
            explanation=str(explain() if callable(explain) else ""),
            remediation=str(getattr(rule, "remediation", "") or ""),
            references=tuple(str(ref) for ref in (getattr(rule, "references", None) or ())),
            tags=tuple(str(tag) for tag in (getattr(rule, "tags", None) or ())),
        )

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> RuleView:
        return cls(
            id=str(data["id"]),
            title=str(data.get("title") or data["id"]),
            severity=str(data.get("severity") or "info").lower(),
            description=str(data.get("description") or ""),
            explanation=str(data.get("explanation") or ""),
            remediation=str(data.get("remediation") or ""),
            references=tuple(str(ref) for ref in data.get("references") or ()),
            tags=tuple(str(tag) for tag in data.get("tags") or ()),
        )

    @classmethod
    def unknown(cls, rule_id: str, severity: str) -> RuleView:
        """A rule a finding names but the current rule set no longer has (e.g. a resolved finding)."""
        return cls(id=rule_id, title=rule_id, severity=severity, explanation="", remediation="")


@dataclass(frozen=True)
class FileEvidence:
    """A file the result depends on, with its SHA-256, so a reviewer can prove which one was used."""

    label: str
    path: str
    sha256: str


@dataclass(frozen=True)
class Evidence:
    """The header of the report: what was checked, against what, with which rules and waivers."""

    generated_at: str
    tool_version: str
    rules_source: str  # "built-in pack" or the paths given
    rules_digest: str | None
    rule_count: int
    rule_files: tuple[FileEvidence, ...] = ()
    waiver_file: FileEvidence | None = None
    baseline: str = "previous complete run"
    # the date the waivers were judged as of (YYYY-MM-DD, UTC): `report --today` makes it again
    waivers_judged_on: str | None = None
    # the files of a --templates folder that replaced bundled ones (none: the bundled templates)
    templates: tuple[FileEvidence, ...] = ()


@dataclass(frozen=True)
class TrendPoint:
    """Findings counts (not waived) by severity of one past complete run."""

    run_id: int
    started_at: str | None
    counts: Mapping[str, int]
    status: str = "complete"  # the reported run's own, when it is drawn though not complete

    @property
    def total(self) -> int:
        return sum(self.counts.values())


# What the report says in place of the run compared with, when there is none.
NO_EARLIER_RUN = "no earlier complete run"
NOT_COMPARED = "not compared with an earlier run (none was asked for)"


@dataclass
class ReportInput:
    """Everything the report is made from, in the JSON shapes of the earlier stages."""

    run: RunView
    findings: list[dict[str, Any]]
    rules: dict[str, RuleView]
    evidence: Evidence
    against: RunView | None = None
    diff: dict[str, Any] | None = None
    trend: list[TrendPoint] = field(default_factory=list)
    today: date | None = None  # for "waiver expires within 14 days"; defaults to the date of rendering
    # What the page shows of ``findings`` when they were summarised elsewhere (in SQL, see
    # ``auditor.render.stored``); ``findings`` is then empty and the exports stream from the store.
    digest: FindingsDigest | None = None
    source: Any = None  # then: an ``auditor.render.stored.ReportSource`` streaming every finding
    # True when no comparison was asked for (``--against none``, a job's ``--baseline none``): the
    # page then says so, rather than that there is no earlier complete run
    compared_with_none: bool = False
    # the waivers to review, as the check's JSON lists them (summary.stale_waivers, .expiring_waivers)
    stale_waivers: list[dict[str, Any]] = field(default_factory=list)
    expiring_waivers: list[dict[str, Any]] = field(default_factory=list)
    # the options a command reading this run again needs (" --db /srv/a.db --rules /srv/rules"),
    # for the page's and the email's "auditor report --run N…" hints; "" for the defaults
    follow_up: str = ""


@dataclass(frozen=True)
class SectionDigest:
    """One findings section as the page shows it: its total, the count per rule, the first rows."""

    total: int
    per_rule: Mapping[str, int]
    first: tuple[Mapping[str, Any], ...]  # the first ``limit`` findings in page order

    @classmethod
    def of(cls, findings: Sequence[Mapping[str, Any]], limit: int) -> SectionDigest:
        return cls(
            total=len(findings),
            per_rule=Counter(str(f.get("rule", "")) for f in findings),
            first=tuple(heapq.nsmallest(limit, findings, key=finding_sort_key)),  # no full sort
        )

    def without(self, listed: Sequence[Mapping[str, Any]]) -> SectionDigest:
        """This section less ``listed``, findings it holds that another section lists instead (only
        its first rows are known here: a count never drops below the rows still shown)."""
        if not listed:
            return self
        gone = {f.get("fingerprint") for f in listed}
        first = tuple(f for f in self.first if f.get("fingerprint") not in gone)
        removed = Counter(str(f.get("rule", "")) for f in listed)
        shown = Counter(str(f.get("rule", "")) for f in first)
        per_rule = {rule: max(count - removed[rule], shown[rule]) for rule, count in self.per_rule.items()}
        per_rule = {rule: count for rule, count in per_rule.items() if count > 0}
        return SectionDigest(total=sum(per_rule.values()), per_rule=per_rule, first=first)


@dataclass(frozen=True)
class FindingsDigest:
    """What the report shows of a run's findings (``CheckResult.to_json()["findings"]``).

    Counts and the first ``limit`` rows of each section only, so that the findings of a large run
    need not be held: :func:`digest_findings` makes one from the findings, the report's database
    path makes the same from the stored evaluation in SQL.
    """

    limit: int
    total: int
    open_by_severity: Mapping[str, int]  # lower-cased severity -> findings not waived
    expired: int  # findings whose matching waiver has expired
    waived_expiries: Mapping[tuple[str, bool], int]  # (waiver "expires", its "expired") of waived ones
    new: SectionDigest  # status "new" (the page lists them from here when there is no diff)
    still_open: SectionDigest  # not waived and not new
    waived: SectionDigest


def digest_findings(findings: Sequence[Mapping[str, Any]], limit: int) -> FindingsDigest:
    """The :class:`FindingsDigest` of a list of findings in the ``auditor check`` JSON shape."""
    active = [f for f in findings if f.get("status") != "waived"]
    waived = [f for f in findings if f.get("status") == "waived"]
    expiries: Counter[tuple[str, bool]] = Counter()
    for f in waived:
        waiver = f.get("waiver")
        if isinstance(waiver, Mapping):
            expiries[(str(waiver.get("expires") or ""), bool(waiver.get("expired")))] += 1
    return FindingsDigest(
        limit=limit,
        total=len(findings),
        open_by_severity=dict(Counter(str(f.get("severity", "info")).lower() for f in active)),
        expired=sum(1 for f in findings if (f.get("waiver") or {}).get("expired")),
        waived_expiries=dict(expiries),
        new=SectionDigest.of([f for f in findings if f.get("status") == "new"], limit),
        still_open=SectionDigest.of([f for f in active if f.get("status") != "new"], limit),
        waived=SectionDigest.of(waived, limit),
    )


# --------------------------------------------------------------------------------------------------
# The context (what templates see)
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Card:
    key: str
    label: str
    value: int
    tone: str  # a CSS class suffix: critical, high, ..., good, neutral
    note: str = ""


@dataclass(frozen=True)
class WaiverView:
    reason: str
    owner: str
    expires: str
    expired: bool
    expiring: bool
    ticket: str | None = None  # the change or approval ticket the waiver cites, if any


@dataclass(frozen=True)
class WaiverReviewRow:
    """A waiver the reviewer should look at: one that matches nothing, or that expires soon."""

    state: str  # "matches nothing" | "expires in N days"
    what: str  # rule, cluster, column it names
    owner: str
    expires: str
    ticket: str | None
    where: str  # file:line of the entry
    note: str | None


def waiver_review_rows(data: ReportInput) -> tuple[WaiverReviewRow, ...]:
    """The stale waivers, then those expiring within 14 days (soonest first)."""

    from auditor.engine.waivers import describe_waiver

    def row(w: Mapping[str, Any], state: str) -> WaiverReviewRow:
        return WaiverReviewRow(
            state,
            _clip(describe_waiver(w)),
            _clip(w.get("owner")),
            str(w.get("expires") or ""),
            _clip(w.get("ticket")) if w.get("ticket") else None,
            _clip(w.get("where")),
            _clip(w.get("note")) if w.get("note") else None,
        )

    def expiring_state(w: Mapping[str, Any]) -> str:
        days = w.get("days_left")
        if days == 0:
            return "expires today"
        return f"expires in {days} day{'' if days == 1 else 's'}" if isinstance(days, int) else "expires soon"

    expiring = sorted(data.expiring_waivers, key=lambda w: str(w.get("expires") or ""))
    return (
        *(row(w, "matches nothing (stale)") for w in data.stale_waivers),
        *(row(w, expiring_state(w)) for w in expiring),
    )


@dataclass(frozen=True)
class FindingRow:
    rule: str
    severity: str
    status: str
    cluster_id: str
    column: str | None
    columns: tuple[str, ...]
    columns_more: int
    message: str
    fingerprint: str
    first_seen_run: int | None
    waiver: WaiverView | None
    explanation: str


@dataclass(frozen=True)
class FindingGroup:
    rule: RuleView
    total: int  # findings of this rule in the section, shown or not
    rows: tuple[FindingRow, ...]


@dataclass(frozen=True)
class FindingSection:
    key: str
    title: str
    intro: str
    total: int
    groups: tuple[FindingGroup, ...]

    @property
    def shown(self) -> int:
        return sum(len(group.rows) for group in self.groups)

    @property
    def more(self) -> int:
        return self.total - self.shown

    def capped(self, limit: int) -> FindingSection:
        """The same section with at most ``limit`` rows (the email body uses this)."""
        groups: list[FindingGroup] = []
        left = limit
        for group in self.groups:
            if left <= 0:
                break
            groups.append(replace(group, rows=group.rows[:left]))
            left -= len(groups[-1].rows)
        return replace(self, groups=tuple(groups))


@dataclass(frozen=True)
class ChangeDetail:
    field: str
    before: str
    after: str
    note: str = ""  # for sets (labels, tags, attributes): what was added and removed


@dataclass(frozen=True)
class ChangeRow:
    kind: str  # added | removed | changed | moved
    cluster_id: str
    column: str | None
    summary: str
    details: tuple[ChangeDetail, ...]


@dataclass(frozen=True)
class ChangeGroup:
    cluster_id: str
    total: int
    rows: tuple[ChangeRow, ...]


@dataclass(frozen=True)
class ChangeSection:
    key: str
    title: str
    total: int
    counts: tuple[tuple[str, int], ...]  # (kind, count) for every kind, shown or not
    groups: tuple[ChangeGroup, ...]

    @property
    def shown(self) -> int:
        return sum(len(group.rows) for group in self.groups)

    @property
    def more(self) -> int:
        return self.total - self.shown


@dataclass(frozen=True)
class Bar:
    x: float
    y: float
    width: float
    height: float
    tone: str
    title: str


@dataclass(frozen=True)
class AxisLabel:
    x: float
    y: float
    text: str
    anchor: str = "middle"


@dataclass(frozen=True)
class Chart:
    title: str
    width: int
    height: int
    bars: tuple[Bar, ...]
    labels: tuple[AxisLabel, ...]
    empty_text: str = ""
    # the severities its bars stack, most severe first: the printed chart names its colours
    legend: tuple[str, ...] = ()
    note: str = ""  # what a reader must know to read it (printed under it)


@dataclass
class ReportContext:
    """The one object ``report.html.j2`` (and the email templates) render."""

    title: str
    run: RunView
    against: RunView | None
    evidence: Evidence
    cards: tuple[Card, ...]
    severity_counts: tuple[tuple[str, int], ...]
    severity_chart: Chart
    trend_chart: Chart
    finding_sections: tuple[FindingSection, ...]  # new, resolved, then the rest of the diff's findings
    change_sections: tuple[ChangeSection, ...]  # clusters, columns
    other_sections: tuple[FindingSection, ...]  # still open, waived
    max_rows: int
    has_diff: bool
    total_findings: int
    changes_total: int
    # "N clusters were not compared: …" when the diff left out clusters a run holds only in part
    diff_note: str | None = None
    # how many open findings of those clusters the "Open findings" card counts while no section
    # lists them (the diff leaves them out of "New", and they are not "Still open"), and where to
    # find them
    unlisted_note: str | None = None
    # "run 3 was taken from … and run 4 from …" when the compared runs differ in source or filter
    scope_note: str | None = None
    # when the run compared with is newer than the run reported: the changes read backwards
    direction_note: str | None = None
    export_files: tuple[str, ...] = ()
    # False for a diff taken with --no-findings: no finding card, chart or section is shown, rather
    # than counts of zero that would read as "nothing found"
    findings_compared: bool = True
    # what the page says in place of the run compared with, when there is none
    no_against: str = NO_EARLIER_RUN
    # stale waivers and those expiring within 14 days: what a reviewer should follow up
    waivers_to_review: tuple[WaiverReviewRow, ...] = ()
    follow_up: str = ""  # as ReportInput's
    assets: Any = None  # set by the renderer: the inline CSS/JS and the CSP that allows only them

    @property
    def report_command(self) -> str:
        """The command that writes this report again, from anywhere (the email's "full report")."""
        return f"auditor report --run {self.run.id}{self.follow_up}"

    @property
    def export_command(self) -> str:
        """The command that writes this report's exports (every row of a capped section)."""
        return f"{self.report_command} --export-dir DIR"

    @property
    def capped(self) -> bool:
        sections: Iterable[FindingSection | ChangeSection] = (
            *self.finding_sections,
            *self.change_sections,
            *self.other_sections,
        )
        return any(section.more for section in sections)


# --------------------------------------------------------------------------------------------------
# Building
# --------------------------------------------------------------------------------------------------


def build_context(data: ReportInput, *, max_rows: int = DEFAULT_MAX_ROWS) -> ReportContext:
    """Summarise ``data`` into a :class:`ReportContext` with every section capped at ``max_rows``."""
    if max_rows < 1:
        raise ValueError("max_rows must be at least 1")
    today = data.today or datetime.now(UTC).date()
    digest = data.digest or digest_findings(data.findings, max_rows)
    if digest.limit < max_rows:
        raise ValueError(f"the findings were summarised for {digest.limit} rows per section, not {max_rows}")
    diff_findings: Mapping[str, list[dict[str, Any]]] = (data.diff or {}).get("findings") or {}

    by_severity = digest.open_by_severity
    severity_counts = tuple((name, by_severity.get(name, 0)) for name in SEVERITIES)
    open_total = sum(by_severity.values())

    still_open = digest.still_open
    if data.diff is not None:
        new = SectionDigest.of(list(diff_findings.get("new") or []), max_rows)
        resolved = SectionDigest.of(list(diff_findings.get("resolved") or []), max_rows)
        # listed under "Waivers expired" instead: each finding in one section, as the diff counts
        # them (found by a probe: "Still open" counted and listed them too, one more than the JSON)
        still_open = still_open.without(list(diff_findings.get("waiver_expired") or []))
    else:
        new = digest.new
        resolved = SectionDigest.of([], max_rows)
    expiring = 0
    for (expires, expired), count in digest.waived_expiries.items():
        view = _waiver({"expires": expires, "expired": expired}, today)
        if view is not None and view.expiring:
            expiring += count
    expired_count = digest.expired

    cards = (
        Card("open", "Open findings", open_total, "neutral", "not waived"),
        *(Card(f"sev-{name}", name.capitalize(), count, name) for name, count in severity_counts),
        Card("new", "New", new.total, "high" if new.total else "good", _against_note(data)),
        Card("resolved", "Resolved", resolved.total, "good", _against_note(data)),
        Card("waived", "Waived", digest.waived.total, "neutral", "reported, not counted"),
        Card(
            "expiring",
            # findings, not waivers: one waiver may cover many (findings.json lists the waivers)
            "Waived, expiring",
            expiring,
            "medium" if expiring else "neutral",
            f"findings whose waiver ends within {EXPIRING_WITHIN_DAYS} days",
        ),
        Card(
            "expired",
            "Waiver expired",
            expired_count,
            "high" if expired_count else "neutral",
            "findings counting again",
        ),
    )

    finding_sections = [
        _finding_section(
            "new",
            "New findings",
            _new_intro(data),
            new,
            data.rules,
            max_rows,
            today,
        ),
        _finding_section(
            "resolved",
            "Resolved findings",
            _resolved_intro(data),
            resolved,
            data.rules,
            max_rows,
            today,
        ),
    ]
    for key, title, intro in (
        ("waiver_expired", "Waivers expired", "Waived before, counting again since the waiver expired."),
        ("newly_waived", "Newly waived", "Findings a waiver covers since this run."),
    ):
        rows = list(diff_findings.get(key) or [])
        if rows:
            finding_sections.append(
                _finding_section(
                    key, title, intro, SectionDigest.of(rows, max_rows), data.rules, max_rows, today
                )
            )

    change_sections = _change_sections(data.diff, max_rows) if data.diff is not None else ()
    other_sections = (
        _finding_section(
            "open",
            "Still open",
            _open_intro(data),
            still_open,
            data.rules,
            max_rows,
            today,
        ),
        _finding_section(
            "waived",
            "Waived findings",
            "Waived findings are reported, never hidden; each waiver shows its reason, owner and expiry.",
            digest.waived,
            data.rules,
            max_rows,
            today,
        ),
    )
    findings_compared = (data.diff or {}).get("findings_compared") is not False
    if not findings_compared:
        cards, finding_sections, other_sections = (), [], ()
    return ReportContext(
        title=f"Cluster audit report: run {data.run.id}",
        run=data.run,
        against=data.against,
        evidence=data.evidence,
        cards=cards,
        severity_counts=severity_counts,
        severity_chart=severity_chart(severity_counts),
        trend_chart=trend_chart(data.trend),
        finding_sections=tuple(finding_sections),
        change_sections=tuple(change_sections),
        other_sections=other_sections,
        max_rows=max_rows,
        has_diff=data.diff is not None,
        total_findings=digest.total,
        changes_total=sum(section.total for section in change_sections),
        diff_note=_diff_note(data.diff),
        unlisted_note=(
            unlisted_note(data.run.id, open_total - new.total - digest.still_open.total, data.follow_up)
            if data.diff is not None and data.diff.get("not_compared") and findings_compared
            else None
        ),
        scope_note=(data.diff or {}).get("scope_note") or None,
        direction_note=direction_note(data.run, data.against),
        findings_compared=findings_compared,
        no_against=NOT_COMPARED if data.compared_with_none else NO_EARLIER_RUN,
        waivers_to_review=waiver_review_rows(data),
        follow_up=data.follow_up,
    )


def unlisted_note(run_id: int, count: int, follow_up: str = "") -> str | None:
    """What the "Not compared" note adds about the ``count`` open findings of those clusters that
    no section of the report lists (``None`` for none); ``follow_up``: see ReportInput."""
    if count <= 0:
        return None
    many = count != 1
    return (
        f"{count:,} open finding{'s' if many else ''} of these clusters {'count' if many else 'counts'} "
        f"in Open findings but {'are' if many else 'is'} listed in no section: "
        f"auditor check --run {run_id}{follow_up} --format csv lists every finding"
    )


def direction_note(run: RunView, against: RunView | None) -> str | None:
    """The sentence saying that a report reads backwards (its run is older than the one compared)."""
    if against is None or not against.id > run.id:
        return None
    return (
        f"run {against.id}, compared with, is newer than run {run.id}: the report reads backwards "
        f"('new' are the findings run {run.id} has and run {against.id} no longer has, 'added' what "
        f"run {against.id} lost)"
    )


def _diff_note(diff: Mapping[str, Any] | None) -> str | None:
    """The diff's sentence about the clusters it did not compare (see ``docs/diff.md``)."""
    if not diff or not diff.get("not_compared"):
        return None
    from auditor.diff.model import not_compared_note

    return not_compared_note(list(diff["not_compared"]), diff.get("from_run"), diff.get("to_run"))


def _against_note(data: ReportInput) -> str:
    if data.against:
        return f"since run {data.against.id}"
    return "not compared" if data.compared_with_none else "no earlier run"


def _new_intro(data: ReportInput) -> str:
    if data.against is None or data.diff is None:
        if data.compared_with_none:
            return "This run was not compared with an earlier one (none was asked for): every finding is new."
        return "There is no earlier complete run to compare with: every finding of this run is new."
    return f"Findings that were not present in run {data.against.id}."


def _resolved_intro(data: ReportInput) -> str:
    """Named by run ids, so that it reads right when the run compared with is the newer one."""
    explained = "the catalog change that explains each is shown where there is one."
    if data.against is None:
        return f"Findings of the run compared with that no longer appear: {explained}"
    return f"Findings of run {data.against.id} that run {data.run.id} does not have: {explained}"


def _open_intro(data: ReportInput) -> str:
    if data.against is None:
        return "Findings already present before this run and not waived."
    return f"Findings run {data.run.id} shares with run {data.against.id}, not waived."


def _clip(value: Any, limit: int = MAX_CELL_CHARS) -> str:
    """``value`` as text of at most about ``limit`` characters. A longer one keeps its start and its
    end around a marker giving its length and a digest, so that two long names differing anywhere
    never show alike (``LLL…[1,402 characters, sha256:1a2b3c4d5e]…LL_A``)."""
    text = "" if value is None else str(value)
    if len(text) <= limit:
        return text
    digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:10]
    tail = min(40, limit // 4)
    marker = f"…[{len(text):,} characters, sha256:{digest}]…"
    return text[: max(1, limit - tail - len(marker))] + marker + text[-tail:]


def display_value(value: Any) -> str:
    """A catalog value as short text: lists and mappings as compact JSON, nothing as an em dash."""
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, str):
        return _clip(value)
    if isinstance(value, (int, float)):
        return str(value)
    try:
        return _clip(json.dumps(value, ensure_ascii=False, sort_keys=True, default=str))
    except (TypeError, ValueError):
        return _clip(repr(value))


def explanation_text(value: Any, limit: int = MAX_CELL_CHARS) -> str:
    """The diff's ``explanation`` of a finding (a sentence, or a change record) as one sentence of
    at most about ``limit`` characters."""
    if not value:
        return ""
    if isinstance(value, str):
        return _clip(value, limit)
    if isinstance(value, Mapping):
        if value.get("text") or value.get("summary"):
            return _clip(value.get("text") or value.get("summary"), limit)
        return _clip("; ".join(f"{key}: {display_value(item)}" for key, item in value.items()), limit)
    if isinstance(value, Sequence):
        # Whole entries up to the cell's budget, each clipped on its own: clipping the joined text
        # again cut an entry in two and wrapped one clip marker in another, over a text that
        # exists nowhere else.
        parts = [explanation_text(item, limit // 3) for item in value]
        kept = parts[:1]
        used = len(kept[0]) if kept else 0
        for part in parts[1:]:
            if used + 2 + len(part) > limit:
                break
            kept.append(part)
            used += 2 + len(part)
        left = len(parts) - len(kept)
        # (diff.json exists only with --export-dir: auditor diff lists them whatever was written)
        return "; ".join(kept) + (
            f"; {left:,} more (auditor diff --format json lists them all)" if left else ""
        )
    return _clip(value, limit)


def _waiver(raw: Any, today: date) -> WaiverView | None:
    if not isinstance(raw, Mapping):
        return None
    expires = str(raw.get("expires") or "")
    expiring = False
    try:
        expiry = date.fromisoformat(expires[:10])
    except ValueError:
        expiry = None
    expired = bool(raw.get("expired")) or (expiry is not None and expiry < today)
    if expiry is not None and not expired:
        expiring = expiry <= today + timedelta(days=EXPIRING_WITHIN_DAYS)
    return WaiverView(
        reason=_clip(raw.get("reason")),
        owner=_clip(raw.get("owner")),
        expires=expires,
        expired=expired,
        expiring=expiring,
        ticket=_clip(raw.get("ticket")) if raw.get("ticket") else None,
    )


def finding_sort_key(finding: Mapping[str, Any]) -> tuple[Any, ...]:
    """The page order of findings: most severe first, then rule, cluster, column, fingerprint."""
    return (
        severity_rank(finding.get("severity")),
        str(finding.get("rule", "")),
        str(finding.get("cluster_id") or ""),
        str(finding.get("column") or ""),
        str(finding.get("fingerprint") or ""),
    )


def _finding_row(finding: Mapping[str, Any], today: date) -> FindingRow:
    columns = [str(c) for c in finding.get("columns") or ()]
    return FindingRow(
        rule=str(finding.get("rule", "")),
        severity=str(finding.get("severity", "info")).lower(),
        status=str(finding.get("status") or ""),
        cluster_id=_clip(finding.get("cluster_id")),
        column=_clip(finding["column"]) if finding.get("column") else None,
        columns=tuple(_clip(c, 300) for c in columns[:MAX_COLUMNS_LISTED]),
        columns_more=max(0, len(columns) - MAX_COLUMNS_LISTED),
        message=_clip(finding.get("message")),
        fingerprint=str(finding.get("fingerprint") or ""),
        first_seen_run=finding.get("first_seen_run"),
        waiver=_waiver(finding.get("waiver"), today),
        explanation=explanation_text(finding.get("explanation")),
    )


def _finding_section(
    key: str,
    title: str,
    intro: str,
    findings: SectionDigest,
    rules: Mapping[str, RuleView],
    max_rows: int,
    today: date,
) -> FindingSection:
    """Group the first ``max_rows`` findings by rule (most severe first), with the totals.

    Every rule with findings in the section gets its group, with its total, even when the first
    ``max_rows`` rows all went to more severe rules: a capped section used to leave such rules
    out, and a printed report named none of them.
    """
    groups: dict[str, list[FindingRow]] = {}
    for finding in findings.first[:max_rows]:
        groups.setdefault(str(finding.get("rule", "")), []).append(_finding_row(finding, today))
    unshown = sorted(
        (rule_id for rule_id, count in findings.per_rule.items() if count and rule_id not in groups),
        key=lambda rule_id: (severity_rank(rules[rule_id].severity) if rule_id in rules else 99, rule_id),
    )
    for rule_id in unshown:
        groups[rule_id] = []
    return FindingSection(
        key=key,
        title=title,
        intro=intro,
        total=findings.total,
        groups=tuple(
            FindingGroup(
                rule=rules.get(rule_id) or RuleView.unknown(rule_id, rows[0].severity if rows else "unknown"),
                total=findings.per_rule[rule_id],
                rows=tuple(rows),
            )
            for rule_id, rows in groups.items()
        ),
    )


_CLUSTER_KINDS = ("added", "removed", "changed")
_COLUMN_KINDS = ("added", "removed", "changed", "moved")


def _change_rows(diff: Mapping[str, Any], part: str, kinds: tuple[str, ...]) -> list[tuple[str, dict]]:
    block = diff.get(part) or {}
    return [(kind, item) for kind in kinds for item in block.get(kind) or ()]


def _change_cluster(kind: str, item: Mapping[str, Any]) -> str:
    if kind == "moved":
        return str(item.get("to_cluster") or "")
    return str(item.get("cluster_id") or "")


_SKIP_FIELDS = {"cluster_id", "column", "changes", "from_cluster", "to_cluster"}


def _change_row(part: str, kind: str, item: Mapping[str, Any]) -> ChangeRow:
    details: list[ChangeDetail] = []
    if kind == "changed":
        for name, change in sorted((item.get("changes") or {}).items()):
            if isinstance(change, Mapping):
                parts = [
                    f"{verb} {display_value(change[verb])}"
                    for verb in ("added", "removed", "changed")
                    if change.get(verb)
                ]
                details.append(
                    ChangeDetail(
                        str(name),
                        display_value(change.get("before")),
                        display_value(change.get("after")),
                        _clip("; ".join(parts)),
                    )
                )
            else:
                details.append(ChangeDetail(str(name), "", display_value(change)))
        summary = ", ".join(detail.field for detail in details) or "changed"
    elif kind == "moved":
        summary = f"moved from cluster {_clip(item.get('from_cluster'), 200)}"
        details.append(
            ChangeDetail(
                "cluster", display_value(item.get("from_cluster")), display_value(item.get("to_cluster"))
            )
        )
    else:
        extra = {k: v for k, v in item.items() if k not in _SKIP_FIELDS and v not in (None, "", [], {})}
        summary = "; ".join(f"{k}: {display_value(v)}" for k, v in list(extra.items())[:6])
    column = item.get("column") if part == "columns" else None
    return ChangeRow(
        kind=kind,
        cluster_id=_clip(_change_cluster(kind, item)),
        column=_clip(column) if column else None,
        summary=_clip(summary),
        details=tuple(details),
    )


def _change_sections(diff: Mapping[str, Any], max_rows: int) -> tuple[ChangeSection, ...]:
    sections = []
    for part, title, kinds in (
        ("clusters", "Cluster changes", _CLUSTER_KINDS),
        ("columns", "Column changes", _COLUMN_KINDS),
    ):
        rows = _change_rows(diff, part, kinds)
        per_cluster = Counter(_change_cluster(kind, item) for kind, item in rows)
        per_kind = Counter(kind for kind, _item in rows)
        kind_order = {kind: index for index, kind in enumerate(kinds)}
        shown = heapq.nsmallest(
            max_rows,
            rows,
            key=lambda pair: (
                _change_cluster(pair[0], pair[1]),
                kind_order[pair[0]],
                str(pair[1].get("column") or ""),
            ),
        )
        groups: dict[str, list[ChangeRow]] = {}
        for kind, item in shown:
            groups.setdefault(_change_cluster(kind, item), []).append(_change_row(part, kind, item))
        sections.append(
            ChangeSection(
                key=part,
                title=title,
                total=len(rows),
                counts=tuple((kind, per_kind.get(kind, 0)) for kind in kinds),
                groups=tuple(
                    ChangeGroup(cluster_id=_clip(cluster), total=per_cluster[cluster], rows=tuple(group))
                    for cluster, group in groups.items()
                ),
            )
        )
    return tuple(sections)


# --------------------------------------------------------------------------------------------------
# Charts (geometry only; the SVG markup is in the templates, so every text in it is autoescaped)
# --------------------------------------------------------------------------------------------------


def severity_chart(counts: Sequence[tuple[str, int]]) -> Chart:
    """Horizontal bars, one per severity, scaled to the largest count."""
    width, row, label_width, value_width = 420, 26, 80, 60
    top = max((count for _name, count in counts), default=0)
    span = width - label_width - value_width
    bars: list[Bar] = []
    labels: list[AxisLabel] = []
    for index, (name, count) in enumerate(counts):
        y = index * row + 4
        length = span * count / top if top else 0.0
        bars.append(
            Bar(
                label_width,
                y,
                round(max(length, 1.5 if count else 0.0), 1),
                row - 8,
                name,
                f"{name}: {count}",
            )
        )
        labels.append(AxisLabel(label_width - 8, y + row / 2, name.capitalize(), "end"))
        labels.append(AxisLabel(label_width + length + 6, y + row / 2, f"{count:,}", "start"))
    return Chart(
        title="Open findings by severity",
        width=width,
        height=row * len(counts) + 8,
        bars=tuple(bars),
        labels=tuple(labels),
        empty_text="" if top else "No open findings.",
    )


def trend_chart(points: Sequence[TrendPoint]) -> Chart:
    """Stacked bars of open findings by severity, one per past complete run, oldest on the left."""
    width, height, left, bottom, top_pad = 420, 200, 44, 34, 26
    plot_h = height - bottom - top_pad
    if not points:
        return Chart("Findings over the last runs", width, height, (), (), "No earlier runs to compare with.")
    top = max((point.total for point in points), default=0) or 1
    slot = (width - left - 8) / len(points)
    bar_w = max(4.0, min(36.0, slot * 0.6))
    bars: list[Bar] = []
    labels: list[AxisLabel] = [
        AxisLabel(left - 6, top_pad + 4, f"{top:,}", "end"),
        AxisLabel(left - 6, top_pad + plot_h, "0", "end"),
    ]
    for index, point in enumerate(points):
        x = left + slot * index + (slot - bar_w) / 2
        y = top_pad + plot_h
        for name in reversed(SEVERITIES):  # least severe at the bottom
            count = int(point.counts.get(name, 0))
            if not count:
                continue
            h = plot_h * count / top
            y -= h
            bars.append(
                Bar(
                    round(x, 1),
                    round(y, 1),
                    round(bar_w, 1),
                    round(h, 1),
                    name,
                    f"run {point.run_id}: {count:,} {name}",
                )
            )
        # a bar of a run that is not complete counts only what it stored: said under the bar
        mark = "" if point.status == "complete" else f" {point.status}"
        labels.append(AxisLabel(round(x + bar_w / 2, 1), height - bottom + 16, f"#{point.run_id}{mark}"))
        labels.append(AxisLabel(round(x + bar_w / 2, 1), round(y - 9, 1), f"{point.total:,}"))
    shown = {bar.tone for bar in bars}
    legend = tuple(name for name in SEVERITIES if name in shown)
    note = (
        "Open findings of the last complete runs, each with the waivers as they stood on the day it "
        "ran (so an earlier run's count may differ from its own report's)."
    )
    if any(point.status != "complete" for point in points):
        note += (
            " A bar marked failed or running is of a run that is not complete: it counts only what it stored."
        )
    return Chart(
        "Findings over the last runs", width, height, tuple(bars), tuple(labels), legend=legend, note=note
    )
