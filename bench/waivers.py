"""Benchmark: applying a large waivers file to the findings of a check.

Builds N findings (default 20,000) over the built-in pack's rule ids and 500 clusters, and waiver
files of 1,000 and 10,000 entries shaped as a large organisation's are: most name one table by a
glob (``legacy-7.schema.table7.*``), some a source by a glob with a wildcard inside
(``crm.*3*``), some a column by a regular expression only, some a cluster; a tenth match real
findings. Times ``apply_waivers`` (the index by rule, cluster and literal glob start) and, on the
1,000-entry file, the plain way it replaced (every waiver of a rule tried on every finding), checks
that both give the same statuses, waivers and stale lists, and prints rates and the ratio.

    python bench/waivers.py
    python bench/waivers.py --findings 5000 --waivers 1000 3000
"""

from __future__ import annotations

import argparse
import platform
import random
import time
from datetime import date, timedelta

from auditor.engine import load_ruleset
from auditor.engine.findings import Finding
from auditor.engine.waivers import Waiver, WaiverReport, Waivers, apply_waivers

TODAY = date(2026, 12, 7)


def make_findings(count: int, rules: list[str], rng: random.Random) -> list[Finding]:
    found = []
    for i in range(count):
        source = rng.choice(("crm", "hr", "dwh", "pg-sales", "s3-lake"))
        fqn = f"{source}.schema{i % 40}.table{i % 700}.col{i}"
        cluster = f"{i % 500:024x}"
        found.append(Finding(rules[i % len(rules)], "high", "column", cluster, fqn, [fqn], "m", key=fqn))
    return found


def make_waivers(count: int, findings: list[Finding], rules: list[str], rng: random.Random) -> Waivers:
    entries = []
    for i in range(count):
        expires = TODAY + timedelta(days=rng.randint(-30, 400))
        column = regex = cluster = None
        rule = rng.choice(rules)
        if i % 10 == 0:  # one in ten matches real findings
            finding = findings[rng.randrange(len(findings))]
            rule = finding.rule
            if i % 30 == 0:
                regex = ".*" + finding.column.rsplit(".", 1)[1] + "x?"
            elif i % 20 == 0:
                column = finding.column.split(".")[0] + ".*" + str(i % 7) + "*"
            else:
                cluster = finding.cluster_id.upper()  # ids copied from the UI in either case
        elif i % 7 == 0:
            regex = f"legacy-{i}\\..*"
        else:
            column = f"legacy-{i}.schema.table{i}.*"
        entries.append(Waiver(rule, cluster, column, regex, "r", "o", expires, None, "w.yaml", i + 2))
    return Waivers(tuple(entries), "w.yaml", f"bench{count}")


def plain(findings: list[Finding], waivers: Waivers) -> WaiverReport:
    """The plain way: every waiver of the finding's rule tried on it (the definition)."""
    report = WaiverReport()
    used: set[int] = set()
    for finding in findings:
        matching = [(i, w) for i, w in enumerate(waivers.entries) if w.matches(finding)]
        used.update(i for i, _ in matching)
        active = [w for _, w in matching if not w.expired(TODAY)]
        if matching:
            chosen = max(active or [w for _, w in matching], key=lambda w: w.expires)
            finding.waiver = chosen.state(TODAY)
            finding.status = "waived" if active else "new"
    report.stale = [w for i, w in enumerate(waivers.entries) if i not in used]
    return report


def outcome(findings: list[Finding], report: WaiverReport) -> tuple:
    return ([(f.status, f.waiver) for f in findings], [w.line for w in report.stale])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--findings", type=int, default=20_000)
    parser.add_argument("--waivers", type=int, nargs="+", default=[1_000, 10_000])
    args = parser.parse_args()
    print(f"python {platform.python_version()}, {platform.processor() or platform.machine()}")
    rules = [rule.id for rule in load_ruleset().rules]
    rng = random.Random(7)
    base = make_findings(args.findings, rules, rng)
    for count in args.waivers:
        waivers = make_waivers(count, base, rules, rng)
        items = make_findings(args.findings, rules, random.Random(7))
        started = time.perf_counter()
        report = apply_waivers(items, waivers, TODAY)
        seconds = time.perf_counter() - started
        pairs = args.findings * count
        line = (
            f"{count:>6,} waivers x {args.findings:,} findings: {seconds:.2f} s "
            f"({args.findings / seconds:,.0f} findings/s, {pairs / seconds / 1e6:,.1f}M pairs/s covered; "
            f"{report.applied:,} waived, {len(report.stale):,} stale)"
        )
        if count == min(args.waivers):
            again = make_findings(args.findings, rules, random.Random(7))
            started = time.perf_counter()
            reference = plain(again, waivers)
            plain_seconds = time.perf_counter() - started
            same = outcome(items, report) == outcome(again, reference)
            ratio = plain_seconds / seconds
            line += f"\n{'':>8}plain way {plain_seconds:.2f} s: {ratio:.0f}x; same result: {same}"
            assert same
        print(line)


if __name__ == "__main__":
    main()
