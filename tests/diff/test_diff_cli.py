"""``auditor diff``: formats, output file, exit codes, with stdout and stderr checked separately."""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser

import pytest
from click.testing import CliRunner

from auditor.cli.diff import DiffFormat
from auditor.cli.main import cli

from .conftest import DIFF_KEYS


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


@pytest.fixture
def two_runs(engine, write, base, kit):
    """Run 1 and run 2 of one database: c1 loses Confidential, a column with markup in its name arrives."""
    after = base()
    after[0][0]["labels"] = ["PII"]
    after[1][1].append(kit.column("dwh.sales.<script>alert(1)</script>", tags={"sensitivity": "high"}))
    first, second = write(engine, base()), write(engine, after)
    return str(engine.url.database), first, second


def invoke(runner, *args):
    return runner.invoke(cli, ["diff", *args], catch_exceptions=False)


def test_text_by_default_compares_the_two_latest_complete_runs(runner, two_runs):
    db, first, second = two_runs
    result = invoke(runner, "--db", db)
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == f"Diff of run {first} -> run {second} (confidence threshold 0.05)"
    assert lines[1] == "Clusters: 0 added, 0 removed, 1 changed"
    assert lines[2] == "Columns:  1 added, 0 removed, 0 changed, 0 moved"
    assert "      label 'Confidential' removed from cluster 'cluster c1'" in lines
    assert "      because: label 'Confidential' removed from cluster 'cluster c1'" in lines
    assert result.stderr.startswith(f"run {first} -> run {second}: 1 cluster changes, 1 column changes, ")


def test_text_escapes_control_characters_from_the_catalog(runner, engine, write, base, kit):
    # A column named with ESC sequences drove the reader's terminal, and one with a newline
    # printed a line of its own (here a forged headline).
    after = base()
    after[1][1].append(kit.column("dwh.x\x1b]0;pwned\x07", tags={"sensitivity": "high"}))
    after[1][1].append(kit.column("dwh.y\nFindings: 0 new", tags={"sensitivity": "high"}))
    write(engine, base())
    write(engine, after)
    result = invoke(runner, "--db", str(engine.url.database))
    assert result.exit_code == 0, result.stderr
    assert "\x1b" not in result.stdout and "\x07" not in result.stdout
    assert "Findings: 0 new" not in result.stdout.splitlines()
    assert any(
        line.endswith("dwh.x\\x1b]0;pwned\\x07  dataType varchar  tags sensitivity=high")
        for line in result.stdout.splitlines()
    )
    assert any("dwh.y\\x0aFindings: 0 new" in line for line in result.stdout.splitlines())


def test_runs_taken_with_other_filters_are_named_before_the_changes(runner, engine, write, base):
    # Run 1 holds one cluster of the tenant: against the whole tenant in run 2, the other
    # cluster reads as added, which is the filter, not a change in the catalog.
    write(engine, base()[:1], cluster_filter="size=2")
    write(engine, base())
    db = str(engine.url.database)
    note = (
        "run 1 was taken with the cluster filter 'size=2' and run 2 with no cluster filter: what only "
        "one of them covers reads as new or resolved, added or removed"
    )
    text = invoke(runner, "--db", db)
    assert text.exit_code == 0, text.stderr
    assert text.stdout.splitlines()[4] == note  # after the headline, before the changes
    markdown = invoke(runner, "--db", db, "--format", "markdown")
    assert f"\n**Note:** {note}\n" in markdown.stdout
    assert json.loads(invoke(runner, "--db", db, "--format", "json").stdout)["scope_note"] == note


def test_json_is_the_contract(runner, two_runs):
    db, first, second = two_runs
    result = invoke(runner, "--db", db, "--format", "json", "--from", str(first), "--to", str(second))
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    assert list(data) == DIFF_KEYS
    assert data["scope_note"] is None  # both runs were taken alike
    assert (data["from_run"], data["to_run"]) == (first, second)
    assert data["clusters"]["changed"] == [
        {
            "cluster_id": "c1",
            "changes": {
                "labels": {
                    "before": ["Confidential", "PII"],
                    "after": ["PII"],
                    "added": [],
                    "removed": ["Confidential"],
                }
            },
        }
    ]
    assert [c["column"] for c in data["columns"]["added"]] == ["dwh.sales.<script>alert(1)</script>"]
    new_rules = sorted({f["rule"] for f in data["findings"]["new"]})
    assert "high-sensitivity-without-confidential" in new_rules


def test_markdown_escapes_catalog_values(runner, two_runs):
    db, _first, _second = two_runs
    result = invoke(runner, "--db", db, "--format", "markdown")
    assert result.exit_code == 0, result.stderr
    assert "| Clusters | 0 | 0 | 1 | — |" in result.stdout
    assert "<script>" not in result.stdout
    assert r"dwh.sales.\<script\>alert(1)\</script\>" in result.stdout
    assert "| Severity | Rule | Cluster | Column | Message | Explained by |" in result.stdout


def test_text_and_markdown_show_control_characters_as_escapes(runner, engine, write, base, kit):
    after = base()
    after[0][0]["name"] = "cluster\u202e c1"
    after[1][1].append(kit.column("dwh.sales.x\x1b[2J\n  + forged line", tags={"sensitivity": "high"}))
    write(engine, base())
    write(engine, after)
    db = str(engine.url.database)
    text = invoke(runner, "--db", db).stdout
    assert not [ch for ch in text if (ord(ch) < 32 and ch != "\n") or ch == "\u202e"]
    assert "  + forged line" not in text.splitlines()
    assert "dwh.sales.x\\x1b[2J\\x0a  + forged line" in text
    assert "'cluster\\u202e c1'" in text
    markdown = invoke(runner, "--db", db, "--format", "markdown").stdout
    assert not [ch for ch in markdown if (ord(ch) < 32 and ch != "\n") or ch == "\u202e"]
    # as in the text: the line break shows as an escape, not as a space (which a name may hold)
    assert "dwh.sales.x\\\\x1b\\[2J\\\\x0a  + forged line" in markdown


def test_markdown_cuts_long_values_and_stays_within_a_comment(runner, engine, write, base, kit):
    """Found by a report probe: a 100,000-character cluster name made a 6 MB summary, past what a
    pull-request comment (65,536) or a step summary (1 MiB) takes."""
    from auditor.formats.markdown_format import BUDGET, MAX_CELL

    after = base()
    after[0][0]["name"] = "L" * 100_000
    long = [f"dwh.sales.{'c' * 1_500}{i:02}" for i in range(90)]
    after[1][1].extend(kit.column(fqn, tags={"sensitivity": "high"}) for fqn in long)
    write(engine, base())
    write(engine, after)
    db = str(engine.url.database)
    markdown = invoke(runner, "--db", db, "--format", "markdown").stdout
    assert len(markdown) <= BUDGET
    assert f"{'L' * MAX_CELL}… (100,000 characters)" in markdown
    assert "L" * (MAX_CELL + 1) not in markdown
    assert "c" * 1_500 not in markdown
    # the new findings take the budget first: some shown, the rest counted; the column changes
    # after them say how many rows the JSON holds
    # (each long column raises two findings: high-sensitivity and no business attribute)
    sections = markdown.split("\n### ")
    assert [s.splitlines()[0] for s in sections[1:]] == [
        "New findings (180)",
        "Cluster changes (1)",
        "Column changes (90)",
    ]
    shown = sum(1 for line in sections[1].splitlines()[4:] if line.startswith("| "))
    assert 0 < shown < 100
    assert f"… and {180 - shown} more (the JSON format lists everything)." in sections[1]
    assert "… and 90 more (the JSON format lists everything)." in markdown
    full = invoke(runner, "--db", db, "--format", "json").stdout
    assert all(fqn in full for fqn in long)  # the JSON keeps every value whole


def test_json_streams_the_open_findings_as_the_whole_document_prints_them(
    runner, engine, write, base, kit, monkeypatch
):
    """`diff --format json` built the whole document (every open finding a dict, then one string):
    3.2 GB at 1M columns. It now streams the open findings (the document is never built with them);
    the bytes are those of the document dumped whole (non-ASCII kept, two-space indents, a final
    newline), with and without open findings."""
    from auditor.diff import compute_diff
    from auditor.diff.model import DiffResult
    from auditor.engine import load_ruleset

    db = str(engine.url.database)
    before, after = base(), base()
    for catalog in (before, after):  # open in both runs: more than one open finding to stream
        catalog[1][1].append(kit.column("dwh.sales.nom ✓", tags={"sensitivity": "high"}))
    after[1][1].append(kit.column("dwh.sales.prénom ✓", tags={"sensitivity": "high"}))
    first, second = write(engine, before), write(engine, after)
    result = compute_diff(engine, first, second, ruleset=load_ruleset())
    assert len(result.findings["open"]) > 1 and result.findings["new"]
    expected = json.dumps(result.to_json(), indent=2, ensure_ascii=False) + "\n"
    whole = DiffResult.to_json

    def without_open(self, *, open_findings=True):
        assert not open_findings, "the document was built with every open finding in it"
        return whole(self, open_findings=open_findings)

    monkeypatch.setattr(DiffResult, "to_json", without_open)
    streamed = invoke(runner, "--db", db, "--format", "json")
    assert streamed.exit_code == 0, streamed.stderr
    assert streamed.stdout == expected
    assert "prénom ✓" in streamed.stdout
    bare = invoke(runner, "--db", db, "--format", "json", "--no-findings")
    catalog_only = compute_diff(engine, first, second, findings=False)
    assert catalog_only.findings.get("open", []) == []
    assert bare.stdout == json.dumps(whole(catalog_only), indent=2, ensure_ascii=False) + "\n"


class _Collect(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.text: list[str] = []
        self.scripts: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag, attrs):
        self._in_script = tag == "script"

    def handle_endtag(self, tag):
        self._in_script = False

    def handle_data(self, data):
        (self.scripts if self._in_script else self.text).append(data)


def test_html_is_the_report_with_this_diff_and_escapes_the_catalog(runner, two_runs, tmp_path):
    db, first, second = two_runs
    out = tmp_path / "diff.html"
    result = invoke(runner, "--db", db, "--format", "html", "--output", str(out))
    assert result.exit_code == 0, result.stderr
    assert result.stdout == ""
    page = out.read_text(encoding="utf-8")
    parsed = _Collect()
    parsed.feed(page)
    text = " ".join(parsed.text)
    assert "dwh.sales.<script>alert(1)</script>" in text  # shown as text ...
    assert not any("alert(1)" in script for script in parsed.scripts)  # ... never as a script
    assert f"run {first}" in text and f"run {second}" in text


def test_html_without_findings_renders_the_catalog_changes(runner, two_runs, tmp_path):
    db, _first, _second = two_runs
    result = invoke(runner, "--db", db, "--format", "html", "--no-findings")
    assert result.exit_code == 0, result.stderr
    parsed = _Collect()
    parsed.feed(result.stdout)
    text = re.sub(r"\s+", " ", " ".join(parsed.text))
    assert "dwh.sales.<script>alert(1)</script>" in text
    # No finding card, chart or section: their zeros read as "nothing found" in a printed copy.
    assert "Findings not compared: this diff was taken without findings ( --no-findings )" in text
    for absent in ('data-card="', 'id="severity-chart"', 'id="new"', 'id="resolved"', 'id="open"'):
        assert absent not in result.stdout, absent
    assert "No open findings" not in text
    assert "(findings not compared)" in text  # the sign-off says what was reviewed


@pytest.mark.parametrize("fmt", [f.value for f in DiffFormat])
def test_every_format_writes_the_output_file_and_nothing_to_stdout(runner, two_runs, tmp_path, fmt):
    db, _first, _second = two_runs
    out = tmp_path / f"diff.{fmt}"
    result = invoke(runner, "--db", db, "--format", fmt, "--output", str(out), "--no-findings")
    assert result.exit_code == 0, result.stderr
    assert result.stdout == ""
    assert out.stat().st_size > 0


def test_no_findings_compares_metadata_only(runner, two_runs):
    db, first, second = two_runs
    result = invoke(runner, "--db", db, "--format", "json", "--no-findings")
    data = json.loads(result.stdout)
    assert data["summary"]["findings"] == {
        "new": 0,
        "resolved": 0,
        "open": 0,
        "newly_waived": 0,
        "waiver_expired": 0,
    }
    assert data["findings_compared"] is False
    # In the text and markdown headlines the zeros read as a clean result: they say so instead.
    for fmt in ("text", "markdown"):
        shown = invoke(runner, "--db", db, "--format", fmt, "--no-findings").stdout
        assert "Findings: not compared (--no-findings: catalog metadata only)" in shown
        assert "still open" not in shown
    assert data["summary"]["clusters"]["changed"] == 1
    # nor does the stderr summary line read "0 new and 0 resolved findings"
    assert result.stderr.splitlines()[0] == (
        f"run {first} -> run {second}: 1 cluster changes, 1 column changes, "
        "findings not compared (--no-findings)"
    )


def test_rules_and_threshold_options(runner, two_runs, tmp_path):
    db, _first, _second = two_runs
    rules = tmp_path / "rules.yaml"
    rules.write_text(
        "rules:\n"
        "  - id: no-confidential\n"
        "    title: Cluster without Confidential\n"
        "    description: The cluster is not labelled Confidential.\n"
        "    severity: low\n"
        "    scope: cluster\n"
        "    condition: {field: cluster.labels, not_contains: Confidential}\n"
        "    message: 'cluster {cluster.name} is not Confidential'\n"
        "    remediation: Label it.\n",
        encoding="utf-8",
    )
    result = invoke(runner, "--db", db, "--format", "json", "--rules", str(rules), "--threshold", "0.2")
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    assert [(f["rule"], f["cluster_id"]) for f in data["findings"]["new"]] == [("no-confidential", "c1")]
    assert [(f["rule"], f["cluster_id"]) for f in data["findings"]["open"]] == [("no-confidential", "c2")]


def test_a_reversed_diff_is_computed_and_says_it_reads_backwards(runner, two_runs):
    db, first, second = two_runs
    result = invoke(runner, "--db", db, "--from", str(second), "--to", str(first))
    assert result.exit_code == 0, result.stderr
    assert result.stdout.splitlines()[2] == "Columns:  0 added, 1 removed, 0 changed, 0 moved"
    assert result.stderr.splitlines()[-1] == (
        f"note: --from run {second} is newer than --to run {first}: the diff reads backwards "
        "('added' is what the older run has and the newer one lost)"
    )
    forward = invoke(runner, "--db", db)
    assert "reads backwards" not in forward.stderr and "compared with itself" not in forward.stderr
    # found by a probe: --from the latest run alone compared it with itself without a word
    itself = invoke(runner, "--db", db, "--from", str(second))
    assert itself.exit_code == 0, itself.stderr
    assert itself.stderr.splitlines()[-1] == (
        f"note: run {second} is compared with itself (--to is the latest complete run): nothing can "
        "differ; give --to another run"
    )


def test_a_missing_run_exits_3(runner, two_runs):
    db, _first, second = two_runs
    result = invoke(runner, "--db", db, "--from", "99", "--to", str(second))
    assert result.exit_code == 3
    assert result.stdout == ""
    assert result.stderr.splitlines() == [
        "error: run 99 does not exist",
        "hint: list runs with: auditor runs",
    ]


def test_an_incomplete_run_exits_3_unless_allowed(runner, engine, write, base, two_runs):
    db, _first, second = two_runs
    failed = write(engine, base(), complete=False)
    result = invoke(runner, "--db", db, "--from", str(second), "--to", str(failed), "--no-findings")
    assert result.exit_code == 3
    assert (
        result.stderr.splitlines()[0] == f"error: run {failed} is failed, not complete: the test stopped it"
    )
    allowed = invoke(
        runner, "--db", db, "--from", str(second), "--to", str(failed), "--no-findings", "--allow-incomplete"
    )
    assert allowed.exit_code == 0, allowed.stderr


def test_a_single_run_has_nothing_to_compare_with_exit_3(runner, engine, write, base):
    write(engine, base())
    result = invoke(runner, "--db", str(engine.url.database))
    assert result.exit_code == 3
    assert result.stderr.splitlines()[0] == "error: there is no complete run before run 1 to compare it with"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--threshold", "2"], "Invalid value for '--threshold'"),
        (["--format", "pdf"], "Invalid value for '--format'"),
        (["--rules", "/nonexistent/rules.yaml"], "Invalid value for '--rules'"),
    ],
)
def test_usage_errors_exit_2(runner, two_runs, args, message):
    db, _first, _second = two_runs
    result = runner.invoke(cli, ["diff", "--db", db, *args])
    assert result.exit_code == 2
    assert message in result.stderr


def test_an_invalid_rule_file_exits_2(runner, two_runs, tmp_path):
    db, _first, _second = two_runs
    bad = tmp_path / "bad.yaml"
    bad.write_text("rules:\n  - id: Not Kebab\n", encoding="utf-8")
    result = invoke(runner, "--db", db, "--rules", str(bad))
    assert result.exit_code == 2
    assert result.stderr.startswith("error: ")
    assert result.stdout == ""


def test_diff_report_and_email_judge_waivers_as_of_the_day_given(runner, two_runs, tmp_path):
    """A time-zone probe: diff, report and email judged waivers as of the day they ran, so a signed
    report could not be made again once a waiver had lapsed; only check took --today."""
    from datetime import UTC, datetime, timedelta

    from bs4 import BeautifulSoup

    db, _first, _second = two_runs
    through = datetime.now(UTC).date() + timedelta(days=3)
    waivers = tmp_path / "w.yaml"
    waivers.write_text(
        "waivers:\n  - {rule: high-sensitivity-without-confidential, column: '*', reason: r, owner: o,\n"
        f"     expires: {through}}}\n",
        encoding="utf-8",
    )
    lapsed = through + timedelta(days=1)
    counted = {}
    for day in (through, lapsed):
        result = invoke(
            runner, "--db", db, "--waivers", str(waivers), "--format", "json", "--today", str(day)
        )
        assert result.exit_code == 0, result.stderr
        counts = json.loads(result.stdout)["summary"]["findings"]
        counted[day] = (counts["new"], counts["newly_waived"])
    assert counted == {through: (1, 2), lapsed: (3, 0)}  # the two new findings waived, then not
    waived = {}
    for day in (through, lapsed):
        out = tmp_path / f"r-{day}.html"
        args = ["report", "--db", db, "--waivers", str(waivers), "--today", str(day), "-o", str(out)]
        assert runner.invoke(cli, args, catch_exceptions=False).exit_code == 0
        soup = BeautifulSoup(out.read_text(encoding="utf-8"), "html.parser")
        waived[day] = int(soup.select_one('[data-card="waived"] .value').get_text())
        assert f"judged as of {day} (UTC)" in soup.select_one('dd[data-field="waivers"]').get_text()
    assert waived[through] > 0 and waived[lapsed] == 0
    args = ["email", "--db", db, "--waivers", str(waivers), "--to", "a@example.org", "--eml", "-"]
    messages = [
        runner.invoke(cli, [*args, "--today", str(day)], catch_exceptions=False) for day in (through, lapsed)
    ]
    assert [m.exit_code for m in messages] == [0, 0] and messages[0].stdout != messages[1].stdout
