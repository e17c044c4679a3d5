"""Settings in auditor.toml reach every command the same way (run, check, diff, report)."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from auditor.cli.main import cli

ENV_CLEAN = {"BIGID_URL": None, "BIGID_TOKEN": None, "AUDITOR_DB": None, "AUDITOR_SMTP": None}

ONE_RULE = """rules:
  - id: every-column-in-a-pii-cluster
    title: Column in a PII cluster
    description: Lists every column whose cluster is labelled PII.
    severity: low
    scope: column
    condition: {field: cluster.labels, contains: PII}
    message: "{column.fullyQualifiedName} is in a PII cluster"
    remediation: Nothing; this rule exists for the test.
"""


def invoke(args, env=None):
    return CliRunner().invoke(cli, args, env={**ENV_CLEAN, **(env or {})}, catch_exceptions=False)


def test_configured_rules_and_fail_on_drive_check_and_diff_like_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("mine.yaml").write_text(ONE_RULE)
    Path("auditor.toml").write_text(
        '[auditor]\nrules = ["mine.yaml"]\nfail_on = "low"\n[auditor.sandbox]\nclusters = 12\ncolumns = 600\n'
    )
    ran = invoke(["run", "--format", "json", "--report", "r.html"])
    assert ran.exit_code == 1  # fail_on = "low" from the file, and the rule finds something
    from_run = json.loads(ran.stdout)
    assert {f["rule"] for f in from_run["findings"]} == {"every-column-in-a-pii-cluster"}

    checked = invoke(["check", "--format", "json"])
    assert checked.exit_code == 1
    from_check = json.loads(checked.stdout)
    assert sorted(f["fingerprint"] for f in from_check["findings"]) == sorted(
        f["fingerprint"] for f in from_run["findings"]
    )

    invoke(["run", "--report", "r2.html"])
    diffed = invoke(["diff", "--format", "json"])
    assert diffed.exit_code == 0
    rules_seen = {f["rule"] for kind in json.loads(diffed.stdout)["findings"].values() for f in kind}
    assert rules_seen == {"every-column-in-a-pii-cluster"}


def test_a_mistyped_fail_on_in_the_config_file_is_a_usage_error_for_check(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("auditor.toml").write_text('[auditor]\nfail_on = "hgih"\n')
    result = invoke(["check"])
    assert result.exit_code == 2
    assert "fail_on must be one of" in result.stderr


def test_run_reads_the_smtp_server_from_the_environment_like_email(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("auditor.toml").write_text("[auditor.sandbox]\nclusters = 6\ncolumns = 200\n")
    # A closed loopback port: the delivery must be attempted there, and fail as a delivery error.
    result = invoke(
        ["run", "--report", "r.html", "--email-to", "team@example.com"],
        env={"AUDITOR_SMTP": "smtp://127.0.0.1:9"},
    )
    assert result.exit_code == 3
    assert "127.0.0.1:9" in result.stderr


def test_a_mail_server_that_is_down_costs_run_neither_its_results_nor_its_verdict(tmp_path, monkeypatch):
    # The email was sent before the check's output was written: a refused connection left a CI job
    # with no results file and no "gate failed" line, only exit 3.
    monkeypatch.chdir(tmp_path)
    Path("auditor.toml").write_text("[auditor.sandbox]\nclusters = 6\ncolumns = 200\n")
    result = invoke(
        [
            "run",
            "--report",
            "r.html",
            "--fail-on",
            "low",
            "--format",
            "json",
            "-o",
            "results.json",
            "--email-to",
            "team@example.com",
            "--smtp",
            "smtp://127.0.0.1:9",
        ],
    )
    assert result.exit_code == 3
    payload = json.loads(Path("results.json").read_text())
    assert payload["run"] == 1 and payload["findings"]
    assert Path("r.html").is_file()
    lines = result.stderr.splitlines()
    gate = lines.index("gate failed: findings at or above low remain")
    error = next(i for i, line in enumerate(lines) if line.startswith("error: smtp://127.0.0.1:9"))
    assert gate < error
    # what to do next: the same message again, with 'auditor email' (the URL never echoed)
    resend = (
        "the results and the report are written; send the email again with: auditor email --run 1 "
        "--to team@example.com --attach-report --attach-csv --smtp URL"
    )
    assert lines[error + 1].startswith("hint: ") and lines[error + 1].endswith(resend)
