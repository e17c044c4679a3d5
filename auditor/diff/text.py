"""The diff for people: plain text (terminal) and markdown (pull-request comments, CI summaries).

Both read a :class:`auditor.diff.model.DiffResult` and describe every change with the same sentences
that findings' explanations use. Text lists everything; markdown caps each section at ``max_rows``
rows (GitHub refuses comments over 65,536 characters) and says how many more the JSON holds. Catalog
values are escaped for markdown, so a column named ``<script>`` or ``a|b`` shows as text and never
breaks the table; in both, control and invisible characters show as escapes
(:mod:`auditor.textsafe`), so a name cannot act on a terminal or forge a line.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

from auditor.diff.model import (
    FINDING_CATEGORIES,
    ClusterEntry,
    ColumnEntry,
    DiffResult,
    FindingDiff,
)
from auditor.formats.markdown_format import BUDGET, cell, clipped
from auditor.textsafe import one_line

CATEGORY_TITLES = {
    "new": "New findings",
    "resolved": "Resolved findings",
    "newly_waived": "Newly waived findings",
    "waiver_expired": "Findings whose waiver expired",
    "open": "Still open",
}
DEFAULT_MARKDOWN_ROWS = 100
NOT_COMPARED = "Findings: not compared (--no-findings: catalog metadata only)"


def headline(diff: DiffResult) -> list[str]:
    s = diff.summary()
    c, k, f = s["clusters"], s["columns"], s["findings"]
    return [
        f"Clusters: {c['added']} added, {c['removed']} removed, {c['changed']} changed",
        f"Columns:  {k['added']} added, {k['removed']} removed, {k['changed']} changed, {k['moved']} moved",
        f"Findings: {f['new']} new, {f['resolved']} resolved, {f['open']} still open, "
        f"{f['newly_waived']} newly waived, {f['waiver_expired']} waiver expired"
        if diff.findings_compared
        else NOT_COMPARED,
    ]


def _cluster_line(entry: ClusterEntry) -> str:
    labels = ", ".join(entry.labels) or "none"
    return (
        f"{entry.cluster_id}  {_name(entry.name)}  severity {entry.severity}, status {entry.status}, "
        f"size {entry.size}, labels {labels}"
    )


def _column_line(entry: ColumnEntry) -> str:
    tags = ", ".join(f"{t['tagName']}={t['tagValue']}" for t in entry.tags)
    attributes = ", ".join(f"{a['name']} ({a['rank']}, {a['confidence']})" for a in entry.attributes)
    parts = [f"{entry.cluster_id}  {entry.column}", f"dataType {entry.fields.get('dataType')}"]
    if tags:
        parts.append(f"tags {tags}")
    if attributes:
        parts.append(f"attributes {attributes}")
    return "  ".join(parts)


def _name(name: str | None) -> str:
    return f"'{name}'" if name is not None else "(no name)"


def format_text(diff: DiffResult, *, include_open: bool = False) -> str:
    """Everything that changed, one line per record and one indented line per atomic change."""
    lines = [
        f"Diff of run {diff.from_run} -> run {diff.to_run} (confidence threshold {diff.confidence_threshold})"
    ]
    lines.extend(headline(diff))
    for note in (diff.scope_note, diff.not_compared_note()):
        if note:  # before anything else: what is listed below is not the whole picture
            lines.append(note)
    if diff.empty:
        lines.append("")
        lines.append(_no_changes(diff))
        return "\n".join(one_line(line) for line in lines) + "\n"
    c = diff.catalog

    def section(title: str, items: Sequence[Any], render: Callable[[Any], list[str]]) -> None:
        if not items:
            return
        lines.append("")
        lines.append(f"{title} ({len(items)})")
        for item in items:
            lines.extend(render(item))

    section("Clusters added", c.clusters_added, lambda e: [f"  + {_cluster_line(e)}"])
    section("Clusters removed", c.clusters_removed, lambda e: [f"  - {_cluster_line(e)}"])
    section(
        "Clusters changed",
        c.clusters_changed,
        lambda e: [f"  ~ {e.cluster_id}  {_name(e.name)}", *(f"      {x.text}" for x in e.explanations())],
    )
    section("Columns added", c.columns_added, lambda e: [f"  + {_column_line(e)}"])
    section("Columns removed", c.columns_removed, lambda e: [f"  - {_column_line(e)}"])
    section(
        "Columns changed",
        c.columns_changed,
        lambda e: [f"  ~ {e.cluster_id}  {e.column}", *(f"      {x.text}" for x in e.explanations())],
    )
    section(
        "Columns moved",
        c.columns_moved,
        lambda m: [f"  > {m.column}  from {m.from_cluster} to {m.to_cluster}"],
    )
    for category in FINDING_CATEGORIES:
        if category == "open" and not include_open:
            continue
        section(CATEGORY_TITLES[category], diff.findings.get(category, []), _finding_lines)
    # One element per line: catalog text must not drive the terminal or start lines of its own.
    return "\n".join(one_line(line) for line in lines) + "\n"


def _no_changes(diff: DiffResult) -> str:
    within = " in the clusters compared" if diff.not_compared else ""
    return f"No changes between run {diff.from_run} and run {diff.to_run}{within}."


def _finding_lines(item: FindingDiff) -> list[str]:
    f = item.finding
    where = f.get("column") or f.get("cluster_id") or ""
    out = [f"  [{str(f.get('severity', '')).upper()}] {f.get('rule')}  {where}", f"      {f.get('message')}"]
    out.extend(f"      because: {x.text}" for x in item.explanation)
    return out


# -- markdown -----------------------------------------------------------------------------------


def md(value: Any) -> str:
    """A catalog value as inert markdown table-cell text (``—`` when missing), cut after
    :data:`~auditor.formats.markdown_format.MAX_CELL` characters, saying its length."""
    return "—" if value is None else cell(clipped(value))


def format_markdown(diff: DiffResult, *, max_rows: int = DEFAULT_MARKDOWN_ROWS) -> str:
    """A markdown summary table and capped sections, for pull-request comments and CI summaries:
    at most ``max_rows`` rows a section, and at most :data:`~auditor.formats.markdown_format.BUDGET`
    characters in all (a GitHub comment takes 65,536), each section taking what the ones before it
    left; a section cut short says how many more rows the JSON holds."""
    s = diff.summary()
    out = [
        f"## Catalog diff: run {diff.from_run} → run {diff.to_run}",
        "",
        "| | added | removed | changed | moved |",
        "|---|---:|---:|---:|---:|",
        f"| Clusters | {s['clusters']['added']} | {s['clusters']['removed']} "
        f"| {s['clusters']['changed']} | — |",
        f"| Columns | {s['columns']['added']} | {s['columns']['removed']} | {s['columns']['changed']} "
        f"| {s['columns']['moved']} |",
        "",
    ]
    if diff.findings_compared:
        out += [
            "| new | resolved | still open | newly waived | waiver expired |",
            "|---:|---:|---:|---:|---:|",
            "| " + " | ".join(str(s["findings"][name]) for name in FINDING_CATEGORIES) + " |",
        ]
    else:
        out.append(NOT_COMPARED)
    for note in (diff.scope_note, diff.not_compared_note()):
        if note:
            out += ["", f"**Note:** {md(note)}"]
    if diff.empty:
        out += ["", _no_changes(diff)]
        return "\n".join(out) + "\n"
    budget = BUDGET - sum(len(line) + 1 for line in out)
    for category in ("new", "resolved", "newly_waived", "waiver_expired"):
        items = diff.findings.get(category, [])
        if not items:
            continue
        rows = [
            (
                md(str(i.finding.get("severity", "")).upper()),
                md(i.finding.get("rule")),
                md(i.finding.get("cluster_id")),
                md(i.finding.get("column")),
                md(i.finding.get("message")),
                "; ".join(md(x.text) for x in i.explanation) or "—",
            )
            for i in items
        ]
        table, budget = _md_table(
            f"{CATEGORY_TITLES[category]} ({len(items)})",
            ("Severity", "Rule", "Cluster", "Column", "Message", "Explained by"),
            rows,
            max_rows,
            budget,
        )
        out += table
    c = diff.catalog
    cluster_rows = [
        *(("added", md(e.cluster_id), md(e.name), "—") for e in c.clusters_added),
        *(("removed", md(e.cluster_id), md(e.name), "—") for e in c.clusters_removed),
        *(
            ("changed", md(e.cluster_id), md(e.name), "; ".join(md(x.text) for x in e.explanations()))
            for e in c.clusters_changed
        ),
    ]
    if cluster_rows:
        table, budget = _md_table(
            f"Cluster changes ({len(cluster_rows)})",
            ("Change", "Cluster", "Name", "Details"),
            cluster_rows,
            max_rows,
            budget,
        )
        out += table
    column_rows = [
        *(("added", md(e.cluster_id), md(e.column), "—") for e in c.columns_added),
        *(("removed", md(e.cluster_id), md(e.column), "—") for e in c.columns_removed),
        *(
            ("changed", md(e.cluster_id), md(e.column), "; ".join(md(x.text) for x in e.explanations()))
            for e in c.columns_changed
        ),
        *(
            ("moved", md(m.to_cluster), md(m.column), f"from cluster {md(m.from_cluster)}")
            for m in c.columns_moved
        ),
    ]
    if column_rows:
        table, budget = _md_table(
            f"Column changes ({len(column_rows)})",
            ("Change", "Cluster", "Column", "Details"),
            column_rows,
            max_rows,
            budget,
        )
        out += table
    return "\n".join(out) + "\n"


def _md_table(
    title: str, header: tuple[str, ...], rows: Iterable[tuple[str, ...]], max_rows: int, budget: int
) -> tuple[list[str], int]:
    """The section's lines, with as many of the first ``max_rows`` rows as fit in ``budget``
    characters (room kept for the line saying how many more); and the characters left."""
    rows = list(rows)
    out = ["", f"### {title}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    spent = sum(len(line) + 1 for line in out)
    shown = 0
    for row in rows[:max_rows]:
        line = "| " + " | ".join(row) + " |"
        if spent + len(line) + 1 > budget - 200:
            break
        out.append(line)
        spent += len(line) + 1
        shown += 1
    if shown < len(rows):
        more = f"… and {len(rows) - shown} more (the JSON format lists everything)."
        out += ["", more]
        spent += len(more) + 2
    return out, budget - spent
