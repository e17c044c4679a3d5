"""The ``markdown`` format: a pull-request comment or CI step summary.

A heading with the summary line, a counts table, the open findings (capped at
:data:`MAX_ROWS` rows so the comment stays under the 65,536-character limit of PR comments), the
waived findings in a collapsed section, and waivers that are stale or expire soon.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from auditor.textsafe import one_line

if TYPE_CHECKING:
    from auditor.engine.check import CheckResult
    from auditor.engine.findings import Finding

_SPECIAL = re.compile(r"([\\`*_\[\]<>|~!&])")
MAX_ROWS = 200
ICONS = {"critical": "🟥", "high": "🟧", "medium": "🟨", "low": "🟦", "info": "⬜"}


def cell(text: object, *, prose: bool = False) -> str:
    """Text safe inside a Markdown table cell (the one escaper of every Markdown output): control
    and invisible characters, line breaks and tabs included, as visible escapes (``a\\x0ab``, so
    that a name with a line break is not taken for one with a space), inline Markdown (emphasis,
    code, links, HTML, entities, cell separators) escaped. ``prose`` (text the team wrote, such as a
    waiver's reason, folded over lines in YAML): whitespace runs become one space first."""
    value = "" if text is None else str(text)
    if prose:
        value = " ".join(value.split())
    return _INERT.sub(_break, _SPECIAL.sub(r"\\\1", one_line(value)))


# What GitHub (and GitLab) turn into links or notifications in text, markup escaped or not: bare
# URLs (``http://``, ``www.``), mentions and e-mail addresses (``@team``), issue references
# (``#123``). A zero-width space (as the entity ``&#8203;``, the way dependency bots quote names)
# breaks each, and the text reads the same. Catalog text's own invisible characters are escaped
# before this (``\u200b``), so the entity is never mistaken for one of them.
_INERT = re.compile(r"://|(?i:www)\.|@|#(?=\d)")


def _break(match: re.Match[str]) -> str:
    found = match.group()
    if found == "://":
        return "&#8203;://"
    if found.endswith("."):
        return found[:-1] + "&#8203;."
    return found + "&#8203;"


def _table(findings: list[Finding], limit: int) -> list[str]:
    lines = ["| Severity | Status | Rule | Subject | Message |", "|---|---|---|---|---|"]
    for f in findings[:limit]:
        status = "waiver expired" if f.waiver_expired else f.status
        lines.append(
            f"| {ICONS.get(f.severity, '')} {f.severity} | {status} | `{f.rule}` "
            f"| {cell(f.subject)} | {cell(f.message)} |"
        )
    if len(findings) > limit:
        lines.append("")
        lines.append(f"_… and {len(findings) - limit} more; see the JSON or SARIF output for all of them._")
    return lines


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
    order = {name: i for i, name in enumerate(("critical", "high", "medium", "low", "info"))}
    open_findings = sorted(result.open_findings(), key=lambda f: (order[f.severity], f.rule, f.subject))
    if open_findings:
        lines += ["### Open findings", "", *_table(open_findings, MAX_ROWS), ""]
    else:
        lines += ["No open findings. ✅", ""]
    waived = [f for f in result.findings if f.waived]
    if waived:
        lines += ["<details><summary>Waived findings (" + str(len(waived)) + ")</summary>", ""]
        lines += ["| Rule | Subject | Reason | Owner | Expires |", "|---|---|---|---|---|"]
        for f in waived[:MAX_ROWS]:
            w = f.waiver or {}
            lines.append(
                f"| `{f.rule}` | {cell(f.subject)} | {cell(w.get('reason'), prose=True)} "
                f"| {cell(w.get('owner'))} | {w.get('expires')} |"
            )
        lines += ["", "</details>", ""]
    report = result.waiver_report
    if report.expiring:
        lines += ["### Waivers expiring within 14 days", ""]
        lines += [
            f"- {w.expires.isoformat()}: {cell(w.describe())} (owner {cell(w.owner)})"
            for w in report.expiring
        ]
        lines.append("")
    if report.stale:
        lines += ["### Stale waivers (match nothing)", ""]
        lines += [
            f"- {cell(w.describe())} (owner {cell(w.owner)}, `{w.where}`){cell(report.unknown_note(w))}"
            for w in report.stale
        ]
        lines.append("")
    return "\n".join(lines).rstrip("\n") + "\n"
