"""The ``markdown`` format: a pull-request comment or CI step summary.

A heading with the summary line, a counts table, the open findings, the waived findings in a
collapsed section, and waivers that are stale or expire soon. The whole text stays within
:data:`BUDGET` characters, under the 65,536 a GitHub pull-request comment takes (a step summary
takes 1 MiB): the tables take at most :data:`MAX_ROWS` rows each and stop earlier when the budget is
spent (the open findings first), each saying how many more there are; a message longer than
:data:`MAX_CELL` characters is cut, saying its length.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from auditor.textsafe import one_line
from auditor.textsafe import prose as folded

if TYPE_CHECKING:
    from auditor.engine.check import CheckResult
    from auditor.engine.findings import Finding

_SPECIAL = re.compile(r"([\\`*_\[\]<>|~!&$])")  # ($: GitHub renders $…$ and $$…$$ as math)
MAX_ROWS = 200
BUDGET = 60_000  # characters of the whole text (a bot's own words around it fit in the rest)
MAX_CELL = 400  # characters of one message shown in a table
MAX_WAIVERS_LISTED = 50  # expiring or stale waivers listed, each
WAIVERS_BUDGET = BUDGET // 3  # characters the two waiver lists take at most, together
ICONS = {"critical": "🟥", "high": "🟧", "medium": "🟨", "low": "🟦", "info": "⬜"}


def cell(text: object, *, prose: bool = False) -> str:
    """Text safe inside a Markdown table cell (the one escaper of every Markdown output): control
    and invisible characters, line breaks and tabs included, as visible escapes (``a\\x0ab``, so
    that a name with a line break is not taken for one with a space), inline Markdown (emphasis,
    code, links, HTML, entities, cell separators) escaped. ``prose`` (text the team wrote, such as a
    waiver's reason, folded over lines in YAML): whitespace runs become one space first."""
    value = "" if text is None else str(text)
    return _INERT.sub(_break, _SPECIAL.sub(r"\\\1", folded(value) if prose else one_line(value)))


# What GitHub (and GitLab) turn into links or notifications in text, markup escaped or not: bare
# URLs (``http://``, ``www.``), mentions and e-mail addresses (``@team``), issue references
# (``#123``, GitHub's ``GH-123``; GitLab's ``!123`` merge requests, ``%123`` milestones, ``$123``
# snippets, ``&123`` epics). A zero-width space (as the entity ``&#8203;``, the way dependency bots
# quote names) breaks each, and the text reads the same. Catalog text's own invisible characters are
# escaped before this (``\u200b``), so the entity is never mistaken for one of them. Commit hashes
# are left alone: GitHub links one only when that commit exists in the repository, and catalog ids
# are often hexadecimal (``63b4f05c23602cc5d30008df``), which a break would spoil for copying.
_INERT = re.compile(r"://|(?i:www)\.|@|(?:[#!%$&]|(?i:gh)-)(?=\d)")


def _break(match: re.Match[str]) -> str:
    found = match.group()
    if found == "://":
        return "&#8203;://"
    if found.endswith("."):
        return found[:-1] + "&#8203;."
    return found + "&#8203;"


def clipped(text: object) -> str:
    """``text`` cut after :data:`MAX_CELL` characters, saying its length (before escaping)."""
    value = "" if text is None else str(text)
    if len(value) <= MAX_CELL:
        return value
    return f"{value[:MAX_CELL]}… ({len(value):,} characters)"


def _rows(header: list[str], rows: list[str], total: int, budget: int) -> tuple[list[str], int]:
    """``header`` and as many of ``rows`` (the first :data:`MAX_ROWS` of ``total``) as fit in
    ``budget`` characters, then a line saying how many more there are; and the characters left."""
    lines = list(header)
    spent = sum(len(line) + 1 for line in header)
    shown = 0
    for row in rows[:MAX_ROWS]:
        if spent + len(row) + 1 > budget - 200:  # room for the line saying how many more
            break
        lines.append(row)
        spent += len(row) + 1
        shown += 1
    if shown < total:
        more = f"_… and {total - shown:,} more; see the JSON or SARIF output for all of them._"
        lines += ["", more]
        spent += len(more) + 2
    return lines, budget - spent


def _open_row(f: Finding) -> str:
    status = "waiver expired" if f.waiver_expired else f.status
    return (
        f"| {ICONS.get(f.severity, '')} {f.severity} | {status} | `{f.rule}` "
        f"| {cell(f.subject)} | {cell(clipped(f.message))} |"
    )


def _waived_row(f: Finding) -> str:
    w = f.waiver or {}
    return (
        f"| `{f.rule}` | {cell(f.subject)} | {cell(clipped(w.get('reason')), prose=True)} "
        f"| {cell(w.get('owner'))} | {w.get('expires')} |"
    )


def _waiver_list(title: str, items: list[str], room: int) -> list[str]:
    """A titled list of waivers (none: nothing), at most :data:`MAX_WAIVERS_LISTED` of them and
    as many as fit in ``room`` characters, then a line saying how many more there are. (Each item
    is clipped, but 100 of them ran the output to 111,000 characters, past its budget: a probe.)"""
    if not items:
        return []
    spent = len(title) + 100  # the title, blank lines and the line saying how many more
    shown = []
    for item in items[:MAX_WAIVERS_LISTED]:
        if spent + len(item) + 1 > room:
            break
        shown.append(item)
        spent += len(item) + 1
    more = len(items) - len(shown)
    return [
        title,
        "",
        *shown,
        *([f"- … and {more:,} more (the JSON output lists them all)"] if more else []),
        "",
    ]


def format(result: CheckResult) -> str:
    s = result.summary
    lines = [f"## cluster-auditor check: run {result.run.id}", ""]
    note = result.incomplete_note()
    if note:
        lines += [f"> **Warning:** {cell(note)}", ""]
    # columns not served were not checked; "N new" against a baseline of another scope misleads
    for extra in (result.shortfall_note(), result.baseline_note()):
        if extra:
            lines += [f"> **Note:** {cell(extra)}", ""]
    lines += [cell(result.summary_line()), ""]
    lines += ["| Critical | High | Medium | Low | Info | New | Existing | Waived | Waiver expired |"]
    lines += ["|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    sev = s["by_severity"]
    lines += [
        f"| {sev['critical']} | {sev['high']} | {sev['medium']} | {sev['low']} | {sev['info']} "
        f"| {s['new']} | {s['existing']} | {s['waived']} | {s['waiver_expired']} |",
        "",
    ]
    # the waiver lists first: the findings' tables take what is left of the budget
    report = result.waiver_report
    expiring = _waiver_list(
        "### Waivers expiring within 14 days",
        [
            f"- valid through {w.expires.isoformat()}: {cell(clipped(w.describe()))} "
            f"(owner {cell(clipped(w.owner))}, `{one_line(clipped(w.where))}`)"
            for w in report.expiring
        ],
        WAIVERS_BUDGET,
    )
    stale = _waiver_list(
        "### Stale waivers (match nothing)",
        [
            f"- {cell(clipped(w.describe()))} (owner {cell(clipped(w.owner))}, "
            f"`{one_line(clipped(w.where))}`){cell(clipped(report.unknown_note(w)))}"
            for w in report.stale
        ],
        WAIVERS_BUDGET - sum(len(line) + 1 for line in expiring),
    )
    tail = expiring + stale
    budget = BUDGET - sum(len(line) + 1 for line in (*lines, *tail))
    order = {name: i for i, name in enumerate(("critical", "high", "medium", "low", "info"))}
    open_findings = sorted(result.open_findings(), key=lambda f: (order[f.severity], f.rule, f.subject))
    if open_findings:
        header = [
            "### Open findings",
            "",
            "| Severity | Status | Rule | Subject | Message |",
            "|---|---|---|---|---|",
        ]
        rows = [_open_row(f) for f in open_findings[:MAX_ROWS]]
        table, budget = _rows(header, rows, len(open_findings), budget)
        lines += [*table, ""]
    else:
        lines += ["No open findings. ✅", ""]
    waived = [f for f in result.findings if f.waived]
    if waived:
        header = [f"<details><summary>Waived findings ({len(waived)})</summary>", ""]
        header += ["| Rule | Subject | Reason | Owner | Expires |", "|---|---|---|---|---|"]
        table, budget = _rows(header, [_waived_row(f) for f in waived[:MAX_ROWS]], len(waived), budget - 20)
        lines += [*table, "", "</details>", ""]
    lines += tail
    return "\n".join(lines).rstrip("\n") + "\n"
