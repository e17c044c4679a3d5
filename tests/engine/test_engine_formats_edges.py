"""Each output format, whole, for a run with an active and an expired waiver.

The per-format tests check what their consumers parse; these pin every field, count, label and order
a person or a tool reads (changing a format by hand, a count swapped, a label dropped, an expired
waiver suppressed in SARIF, went unnoticed before). The expected text and CSV are files under
``golden/``: a deliberate change to a format rewrites them, and the diff shows what readers will see.
"""

from __future__ import annotations

import csv
import io
import json
import xml.etree.ElementTree as ET
from datetime import date
from pathlib import Path

import pytest

from auditor.engine import check_run, load_ruleset, load_waivers
from auditor.formats import Format, render, sarif_format
from auditor.formats.csv_format import neutralise
from auditor.formats.markdown_format import cell
from auditor.formats.sarif_format import catalog_uri, size_note
from tests.engine.conftest import CATALOG

GOLDEN = Path(__file__).parent / "golden"
WAIVERS = """\
waivers:
  - {rule: high-sensitivity-without-confidential, cluster: c-hr, reason: R1, owner: o@x, expires: 2026-12-31}
  - {rule: duplicate-columns-across-sources, cluster: c-hr, reason: R2, owner: o@x, expires: 2026-11-01}
"""


@pytest.fixture
def result(engine, snapshot, write):
    snapshot(engine, CATALOG)
    waivers = load_waivers(write("w.yaml", WAIVERS))
    return check_run(engine, "latest", load_ruleset(), waivers=waivers, today=date(2026, 11, 28))


@pytest.mark.parametrize(
    ("fmt", "name"), [(Format.CSV, "check.csv"), (Format.MARKDOWN, "check.md"), (Format.TABLE, "check.txt")]
)
def test_the_format_reads_exactly_as_written(result, fmt, name):
    assert render(fmt, result) == (GOLDEN / name).read_bytes().decode()


def test_csv_fields_sit_under_their_headers(result):
    rows = {row["rule"]: row for row in csv.DictReader(io.StringIO(render(Format.CSV, result)))}
    expired, waived = rows["duplicate-columns-across-sources"], rows["high-sensitivity-without-confidential"]
    assert (expired["waiver_expires"], expired["waiver_expired"], expired["columns"]) == (
        "2026-11-01",
        "true",
        "crm.contact.ssn;hr.emp.ssn",
    )
    assert (waived["waiver_expires"], waived["waiver_expired"]) == ("2026-12-31", "false")
    unwaived = rows["primary-key-holds-pii"]
    assert (unwaived["waiver_expired"], len(unwaived["fingerprint"]), unwaived["first_seen_run"]) == (
        "",
        32,
        "1",
    )


def test_csv_neutralises_a_cell_starting_with_a_line_feed():
    assert neutralise("\nx") == "'\nx"


def test_junit_counts_waived_findings_as_skipped_and_passing_rules_as_one_test(result):
    root = ET.fromstring(render(Format.JUNIT, result))
    assert root.attrib == {"name": "cluster-auditor run 1", "tests": "16", "failures": "6", "errors": "0"}
    suites = {suite.get("name"): suite for suite in root}
    assert suites["high-sensitivity-without-confidential"].attrib == {
        "name": "high-sensitivity-without-confidential",
        "tests": "1",
        "failures": "0",
        "errors": "0",
        "skipped": "1",
    }
    assert suites["card-data-outside-pci-cluster"].get("tests") == "1"
    skipped = suites["high-sensitivity-without-confidential"].find("testcase/skipped")
    assert skipped.get("message") == "waived through 2026-12-31 by o@x: R1"
    failure = suites["duplicate-columns-across-sources"].find("testcase/failure")
    assert (failure.get("type"), failure.get("message")) == (
        "medium",
        "column SSN appears in 2 sources in cluster HR People: crm.contact.ssn, hr.emp.ssn "
        "(waiver expired: valid through 2026-11-01)",
    )
    (finding,) = [f for f in result.findings if f.rule == "duplicate-columns-across-sources"]
    assert failure.text.splitlines()[-1] == f"fingerprint: {finding.fingerprint}"


def test_sarif_levels_locations_and_suppressions(result):
    run = json.loads(render(Format.SARIF, result))["runs"][0]
    descriptors = {d["id"]: d for d in run["tool"]["driver"]["rules"]}
    # every rule of a severity alike (a set: one rule differing from the others shows as an extra entry)
    by_severity = {
        (
            rule.severity,
            descriptors[rule.id]["defaultConfiguration"]["level"],
            descriptors[rule.id]["properties"]["security-severity"],
        )
        for rule in result.rules
    }
    assert by_severity == {
        ("critical", "error", "9.5"),
        ("high", "error", "8.0"),
        ("medium", "warning", "5.5"),
        ("low", "note", "3.0"),
    }
    results = {r["ruleId"]: r for r in run["results"]}
    assert {rule: r["level"] for rule, r in results.items()} == {
        "archived-cluster-with-high-sensitivity": "error",
        "cluster-missing-severity": "note",
        "duplicate-columns-across-sources": "warning",
        "hidden-sensitivity-tag": "warning",
        "high-sensitivity-without-confidential": "error",
        "primary-key-holds-pii": "warning",
        "sensitive-column-without-business-attribute": "note",
    }
    # only the finding whose waiver holds is suppressed: an expired waiver must fail again
    assert [rule for rule, r in results.items() if "suppressions" in r] == [
        "high-sensitivity-without-confidential"
    ]
    group = results["duplicate-columns-across-sources"]["locations"][0]
    assert group["logicalLocations"][0] == {
        "name": "ssn",
        "fullyQualifiedName": "bigid://clusters/c-hr/groups/ssn",
        "kind": "object",
    }
    column = results["primary-key-holds-pii"]["locations"][0]["logicalLocations"][0]
    assert column["name"] == "hr.emp.ssn"
    for rule_id, item in results.items():
        line = item["locations"][0]["physicalLocation"]["region"]["startLine"]
        assert line == result.ruleset.get(rule_id).line
        assert item["properties"]["first_seen_run"] == 1
    assert catalog_uri("c1", "a/b", None) == "bigid://clusters/c1/columns/a%2Fb"


def test_sarif_warns_only_past_the_number_of_results_github_takes(result, monkeypatch):
    monkeypatch.setattr(sarif_format, "GITHUB_MAX_RESULTS", len(result.findings))
    assert size_note(result) is None
    monkeypatch.setattr(sarif_format, "GITHUB_MAX_RESULTS", len(result.findings) - 1)
    assert size_note(result).startswith(f"the SARIF log holds {len(result.findings)} results")


def test_markdown_escapes_strikethrough():
    assert cell("~~x~~") == "\\~\\~x\\~\\~"


def test_markdown_escapes_math():
    # Found by a probe: GitHub renders $$…$$ and $…$ in catalog text as math
    assert cell("$$x^2$$ costs $5") == "\\$\\$x^2\\$\\$ costs \\$&#8203;5"


def test_the_summary_line_counts_one_rule_in_the_singular(engine, snapshot, write):
    snapshot(engine, CATALOG)
    one = load_ruleset(
        [
            write(
                "one.yaml",
                "rules:\n  - {id: one, title: t, description: d, severity: low, scope: column,\n"
                "     remediation: r, message: m, condition: {field: columnName, eq: nothing-is-named-so}}\n",
            )
        ]
    )
    assert check_run(engine, "latest", one).summary_line().endswith("; 1 rule, no baseline")
