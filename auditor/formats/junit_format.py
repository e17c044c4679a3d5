"""The ``junit`` format: one test case per (rule, subject), for CI test-report views.

One ``<testsuite>`` per rule. Case names are the rule id plus the subject key (cluster id,
cluster/fqn or cluster/group:key), never the message, so they are stable across runs and unique
(CI servers collapse duplicate names). Open findings are ``<failure>`` with the message; waived
ones are ``<skipped>`` with the waiver's reason; a rule without findings contributes one passing
case named after the rule, so the report also shows what was checked.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from auditor.engine.check import CheckResult
    from auditor.engine.findings import Finding


def format(result: CheckResult) -> str:
    by_rule: dict[str, list[Finding]] = {rule.id: [] for rule in result.rules}
    for finding in result.findings:
        by_rule.setdefault(finding.rule, []).append(finding)
    root = ET.Element("testsuites", name=f"cluster-auditor run {result.run.id}")
    totals = {"tests": 0, "failures": 0, "skipped": 0}
    for rule_id, items in by_rule.items():
        suite = ET.SubElement(root, "testsuite", name=rule_id)
        tests = failures = skipped = 0
        if not items:
            ET.SubElement(suite, "testcase", classname=rule_id, name=rule_id, time="0")
            tests = 1
        for f in sorted(items, key=lambda f: f.subject):
            tests += 1
            case = ET.SubElement(
                suite, "testcase", classname=rule_id, name=f"{rule_id} {f.subject}", time="0"
            )
            if f.waived:
                skipped += 1
                waiver = f.waiver or {}
                ET.SubElement(
                    case,
                    "skipped",
                    message=(
                        f"waived until {waiver.get('expires')} by {waiver.get('owner')}: "
                        f"{waiver.get('reason')}"
                    ),
                )
            else:
                failures += 1
                label = f" (waiver expired {f.waiver['expires']})" if f.waiver and f.waiver_expired else ""
                failure = ET.SubElement(case, "failure", message=f.message + label, type=f.severity)
                failure.text = (
                    f"{f.message}{label}\nrule: {rule_id}\nseverity: {f.severity}\nstatus: {f.status}\n"
                    f"cluster: {f.cluster_id}\ncolumns: {', '.join(f.columns)}\nfingerprint: {f.fingerprint}"
                )
        suite.set("tests", str(tests))
        suite.set("failures", str(failures))
        suite.set("errors", "0")
        suite.set("skipped", str(skipped))
        totals["tests"] += tests
        totals["failures"] += failures
        totals["skipped"] += skipped
    root.set("tests", str(totals["tests"]))
    root.set("failures", str(totals["failures"]))
    root.set("errors", "0")
    root.set("skipped", str(totals["skipped"]))
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"
