"""The ``junit`` format: one test case per (rule, subject), for CI test-report views.

One ``<testsuite>`` per rule. Case names are the rule id plus the subject key (cluster id,
cluster/fqn or cluster/group:key), never the message, so they are stable across runs and unique
(CI servers collapse duplicate names). Open findings are ``<failure>`` with the message; waived
ones are ``<skipped>`` with the waiver's reason; a rule without findings contributes one passing
case named after the rule, so the report also shows what was checked.

Catalog text may hold characters XML 1.0 cannot carry at all (control characters such as ``\\x01``
or ``ESC``, even as references): they are written as visible ``\\xNN`` escapes, so the report stays
well-formed and names that differ only by them stay distinct.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from auditor.engine.check import CheckResult
    from auditor.engine.findings import Finding


BATCH = 1_000  # test cases per piece
DECLARATION = '<?xml version="1.0" encoding="UTF-8"?>\n'


_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def _xml(text: str) -> str:
    """``text`` with the characters XML 1.0 forbids written as ``\\xNN`` / ``\\uNNNN`` escapes."""
    return _NOT_XML.sub(lambda m: f"\\x{ord(m[0]):02x}" if ord(m[0]) < 0x100 else f"\\u{ord(m[0]):04x}", text)


def format(result: CheckResult) -> str:
    return "".join(chunks(result))


def chunks(result: CheckResult) -> Iterator[str]:
    """The report piece by piece, a batch of test cases at a time (never held whole at 1M columns).

    The bytes are those of the whole tree built at once and indented with ``ET.indent`` (tested):
    the counts each ``<testsuite>`` and the root carry are taken first, then each case is written
    as soon as it is built.
    """
    by_rule: dict[str, list[Finding]] = {rule.id: [] for rule in result.rules}
    for finding in result.findings:
        by_rule.setdefault(finding.rule, []).append(finding)
    root = ET.Element("testsuites", name=f"cluster-auditor run {result.run.id}")
    counts = {rule_id: _counts(items) for rule_id, items in by_rule.items()}
    for name in ("tests", "failures", "skipped"):
        total = sum(c[name] for c in counts.values())
        root.set(name, str(total))
        if name == "failures":
            root.set("errors", "0")
    if not by_rule:
        ET.indent(root)
        yield DECLARATION + ET.tostring(root, encoding="unicode") + "\n"
        return
    yield DECLARATION + _start_tag(root) + "\n"
    for rule_id, items in by_rule.items():
        suite = ET.Element("testsuite", name=rule_id)
        for name in ("tests", "failures", "errors", "skipped"):
            suite.set(name, str(counts[rule_id].get(name, 0)))
        head = "  " + _start_tag(suite) + "\n"
        if not items:
            yield head + _cases_text([ET.Element("testcase", classname=rule_id, name=rule_id, time="0")])
        else:
            ordered = sorted(items, key=lambda f: f.subject)
            for start in range(0, len(ordered), BATCH):
                yield head + _cases_text([_case(rule_id, f) for f in ordered[start : start + BATCH]])
                head = ""
        yield "  </testsuite>\n"
    yield "</testsuites>\n"


def _counts(items: list[Finding]) -> dict[str, int]:
    skipped = sum(1 for f in items if f.waived)
    return {"tests": max(1, len(items)), "failures": len(items) - skipped, "skipped": skipped}


def _case(rule_id: str, f: Finding) -> ET.Element:
    case = ET.Element("testcase", classname=rule_id, name=_xml(f"{rule_id} {f.subject}"), time="0")
    if f.waived:
        waiver = f.waiver or {}
        ET.SubElement(
            case,
            "skipped",
            message=_xml(
                f"waived until {waiver.get('expires')} by {waiver.get('owner')}: {waiver.get('reason')}"
            ),
        )
    else:
        label = f" (waiver expired {f.waiver['expires']})" if f.waiver and f.waiver_expired else ""
        failure = ET.SubElement(case, "failure", message=_xml(f.message + label), type=f.severity)
        failure.text = _xml(
            f"{f.message}{label}\nrule: {rule_id}\nseverity: {f.severity}\nstatus: {f.status}\n"
            f"cluster: {f.cluster_id}\ncolumns: {', '.join(f.columns)}\nfingerprint: {f.fingerprint}"
        )
    return case


def _cases_text(cases: list[ET.Element]) -> str:
    """Consecutive cases of a suite, indented as ``ET.indent`` lays them out in the whole tree."""
    wrapper = ET.Element("cases")
    wrapper.extend(cases)
    ET.indent(wrapper, level=1)
    text = ET.tostring(wrapper, encoding="unicode")
    return text.removeprefix("<cases>\n").removesuffix("\n  </cases>") + "\n"


def _start_tag(element: ET.Element) -> str:
    """``element``'s start tag alone, attributes escaped as ElementTree escapes them."""
    element.text = "|"  # attribute values escape "<", so "|<" is where the end tag starts
    text = ET.tostring(element, encoding="unicode")
    return text[: text.rindex("|</")]
