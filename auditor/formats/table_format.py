"""The ``table`` format: aligned text for people, ending with the summary line.

One row per finding (severity, status, rule, subject, message), then waivers that expired, that
expire within 14 days or that matched nothing, then the summary line with counts by severity, new,
waived and expired.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from auditor.engine.check import CheckResult
    from auditor.engine.findings import Finding

WIDTH_SUBJECT = 48


def _cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def _status(finding: Finding) -> str:
    if finding.waiver_expired:
        return "waiver expired"
    return str(finding.status)


def format(result: CheckResult) -> str:
    lines: list[str] = []
    if result.findings:
        rule_width = max(len(f.rule) for f in result.findings)
        header = f"{'SEVERITY':<9} {'STATUS':<15} {'RULE':<{rule_width}} {'SUBJECT':<{WIDTH_SUBJECT}} MESSAGE"
        lines.append(header)
        order = {name: i for i, name in enumerate(("critical", "high", "medium", "low", "info"))}
        for f in sorted(result.findings, key=lambda f: (order[f.severity], f.rule, f.subject)):
            lines.append(
                f"{f.severity:<9} {_status(f):<15} {f.rule:<{rule_width}} "
                f"{_cut(f.subject, WIDTH_SUBJECT):<{WIDTH_SUBJECT}} {f.message}"
            )
            if f.waiver and not f.waiver_expired:
                lines.append(
                    f"{'':<26}waived by {f.waiver['owner']} until {f.waiver['expires']}: {f.waiver['reason']}"
                )
    else:
        lines.append("No findings.")
    report = result.waiver_report
    if report.expiring:
        lines.append("")
        lines.append("Waivers expiring within 14 days:")
        for w in report.expiring:
            lines.append(f"  {w.expires.isoformat()}  {w.describe()} (owner {w.owner}, {w.where})")
    if report.stale:
        lines.append("")
        lines.append("Stale waivers (they match no finding):")
        for w in report.stale:
            lines.append(f"  {w.describe()} (owner {w.owner}, {w.where})")
    lines.append("")
    lines.append(result.summary_line())
    return "\n".join(lines) + "\n"
