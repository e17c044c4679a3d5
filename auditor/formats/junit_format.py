"""The ``junit`` format: one test case per (rule, subject), for CI test-report views.

One ``<testsuite>`` per rule. Case names are the rule id plus the subject key (cluster id,
cluster/fqn or cluster/group:key), never the message, so they are stable across runs and unique
(CI servers collapse duplicate names). Open findings are ``<failure>`` with the message; waived
ones are ``<skipped>`` with the waiver's reason; a rule without findings contributes one passing
case named after the rule, so the report also shows what was checked. Catalog text shows control
and invisible characters as escapes (:mod:`auditor.textsafe`; a name stays on one line): one such
character in a column name would otherwise make the whole file unreadable to the CI server.

What the other formats print beside the findings goes into a ``<properties>`` block on every
``<testsuite>``, so that a CI server's view of the suite says what its cases do not cover or why
they may read as new: ``run_status`` and ``incomplete_run`` for a run checked with
``--allow-incomplete`` that is not complete, ``total_shortfall`` for a complete run some of whose
clusters served fewer columns than announced, ``baseline_scope`` for a baseline taken from another
source or with another cluster filter.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from auditor.textsafe import one_line, prose, unambiguous, xml_text

if TYPE_CHECKING:
    from auditor.engine.check import CheckResult
    from auditor.engine.findings import Finding


BATCH = 1_000  # test cases per piece
DECLARATION = '<?xml version="1.0" encoding="UTF-8"?>\n'


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
    # No 'skipped' on the root: the JUnit schema Jenkins' xunit plugin validates against allows it
    # on <testsuite> only (each suite carries its own)
    for name in ("tests", "failures"):
        total = sum(c[name] for c in counts.values())
        root.set(name, str(total))
        if name == "failures":
            root.set("errors", "0")
    if not by_rule:
        ET.indent(root)
        yield DECLARATION + ET.tostring(root, encoding="unicode") + "\n"
        return
    yield DECLARATION + _start_tag(root) + "\n"
    notes = _notes(result)
    for rule_id, items in by_rule.items():
        lead = [_properties(notes)] if notes else []
        suite = ET.Element("testsuite", name=rule_id)
        for name in ("tests", "failures", "errors", "skipped"):
            suite.set(name, str(counts[rule_id].get(name, 0)))
        head = "  " + _start_tag(suite) + "\n"
        if not items:
            yield head + _cases_text(
                [*lead, ET.Element("testcase", classname=rule_id, name=rule_id, time="0")]
            )
        else:
            ordered = sorted(items, key=lambda f: f.subject)
            seen = Counter(_case_name(rule_id, f) for f in ordered)
            for start in range(0, len(ordered), BATCH):
                yield head + _cases_text(
                    [*lead, *(_case(rule_id, f, seen) for f in ordered[start : start + BATCH])]
                )
                head, lead = "", []
        yield "  </testsuite>\n"
    yield "</testsuites>\n"


def _notes(result: CheckResult) -> list[tuple[str, str]]:
    """The (name, value) properties every suite carries; none for a complete run and its baseline."""
    notes: list[tuple[str, str]] = []
    if incomplete := result.incomplete_note():
        notes += [("run_status", result.run.status), ("incomplete_run", incomplete)]
    if shortfall := result.shortfall_note():
        notes.append(("total_shortfall", shortfall))
    if scope := result.baseline_note():
        notes.append(("baseline_scope", scope))
    return notes


def _properties(notes: list[tuple[str, str]]) -> ET.Element:
    """The ``<properties>`` block of every suite (see :func:`_notes`)."""
    properties = ET.Element("properties")
    for name, value in notes:
        ET.SubElement(properties, "property", name=name, value=_shown(value))
    return properties


def _counts(items: list[Finding]) -> dict[str, int]:
    skipped = sum(1 for f in items if f.waived)
    return {"tests": max(1, len(items)), "failures": len(items) - skipped, "skipped": skipped}


def _case_name(rule_id: str, f: Finding) -> str:
    # unambiguous: names escaped alike would collapse into one case on the CI server
    return _shown(f"{rule_id} {f.subject}", unambiguous)


def _case(rule_id: str, f: Finding, seen: Counter[str]) -> ET.Element:
    name = _case_name(rule_id, f)
    if seen[name] > 1:
        # Two subjects that read alike: cluster 'x/y' with column 'z', and cluster 'x' with column
        # 'y/z'. Both cases get the start of their fingerprint (unique within a rule): only names
        # that clash change, and never with the order the findings come in.
        name = f"{name} [{f.fingerprint[:16]}]"
    case = ET.Element("testcase", classname=rule_id, name=name, time="0")
    if f.waived:
        waiver = f.waiver or {}
        reason = f"waived through {waiver.get('expires')} by {waiver.get('owner')}: {waiver.get('reason')}"
        ET.SubElement(case, "skipped", message=_shown(reason, prose))
    else:
        lapsed = f.waiver and f.waiver_expired
        label = f" (waiver expired: valid through {f.waiver['expires']})" if lapsed else ""
        failure = ET.SubElement(case, "failure", message=_shown(f.message + label), type=f.severity)
        # one line per field, each field on its line: a line break in a name cannot add a field
        lines = (
            f.message + label,
            f"rule: {rule_id}",
            f"severity: {f.severity}",
            f"status: {f.status}",
            f"cluster: {f.cluster_id}",
            f"columns: {', '.join(f.columns)}",
            f"fingerprint: {f.fingerprint}",
        )
        failure.text = "\n".join(_shown(line) for line in lines)
    return case


def _shown(text: str, show: Callable[[str], str] = one_line) -> str:
    return xml_text(show(text))  # after one_line, only U+FFFE and U+FFFF are left to escape


def _cases_text(cases: list[ET.Element]) -> str:
    """Consecutive children of a suite (its properties, its cases), indented as ``ET.indent`` lays
    them out in the whole tree."""
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
