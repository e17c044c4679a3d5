"""The ``table`` format: aligned text for people, ending with the summary line.

One row per finding (severity, status, rule, subject, message; a finding whose waiver expired says
"waiver expired" as its status), a waived one followed by its waiver ("waived by OWNER through DATE:
REASON", an expired one "was waived by …": a waiver applies through its date), then waivers that
expire within 14 days or that matched nothing,
then the summary line with counts by severity, new,
waived and expired. Catalog and waiver text is shown through :func:`auditor.textsafe.one_line`: a
control character or a newline in a column name cannot act on the terminal or forge a row.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from auditor.textsafe import fit, one_line, prose

if TYPE_CHECKING:
    from auditor.engine.check import CheckResult
    from auditor.engine.findings import Finding

WIDTH_SUBJECT = 48


def _status(finding: Finding) -> str:
    if finding.waiver_expired:
        return "waiver expired"
    return str(finding.status)


BATCH = 1_000  # findings per piece


def format(result: CheckResult) -> str:
    return "".join(chunks(result))


def chunks(result: CheckResult) -> Iterator[str]:
    """The table piece by piece, a batch of findings at a time (never held whole at 1M columns)."""
    if result.findings:
        rule_width = max(len(f.rule) for f in result.findings)
        yield f"{'SEVERITY':<9} {'STATUS':<15} {'RULE':<{rule_width}} {'SUBJECT':<{WIDTH_SUBJECT}} MESSAGE\n"
        order = {name: i for i, name in enumerate(("critical", "high", "medium", "low", "info"))}
        lines: list[str] = []
        for f in sorted(result.findings, key=lambda f: (order[f.severity], f.rule, f.subject)):
            lines.append(
                f"{f.severity:<9} {_status(f):<15} {f.rule:<{rule_width}} "
                f"{fit(one_line(f.subject), WIDTH_SUBJECT)} {one_line(f.message)}\n"
            )
            if f.waiver:  # an expired one too: whose it was and when it lapsed (a probe)
                waiver = f.waiver
                said = "was waived" if f.waiver_expired else "waived"
                lines.append(
                    f"{'':<26}{said} by {prose(str(waiver['owner']))} through {waiver['expires']}: "
                    f"{prose(str(waiver['reason']))}\n"
                )
            if len(lines) >= BATCH:
                yield "".join(lines)
                lines.clear()
        yield "".join(lines)
    else:
        yield "No findings.\n"
    lines = []
    report = result.waiver_report
    if report.expiring:
        lines.append("")
        lines.append("Waivers expiring within 14 days:")
        for w in report.expiring:
            lines.append(one_line(f"  {w.expires.isoformat()}  {w.describe()} (owner {w.owner}, {w.where})"))
    if report.stale:
        lines.append("")
        lines.append("Stale waivers (they match no finding):")
        for w in report.stale:
            lines.append(one_line(f"  {w.describe()} (owner {w.owner}, {w.where}){report.unknown_note(w)}"))
    lines.append("")
    note = result.incomplete_note()
    if note:
        lines.append(f"warning: {one_line(note)}")
    for extra in (result.shortfall_note(), result.baseline_note()):
        if extra:
            lines.append(f"note: {one_line(extra)}")
    lines.append(result.summary_line())
    yield "\n".join(lines) + "\n"
