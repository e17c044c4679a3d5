"""Settings in auditor.toml reach every command the same way (run, check, diff, report)."""

from __future__ import annotations

import json
import os
import shlex
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
    # a report-only step of the same repository switches the configured gate off (a probe found
    # no way to: --fail-on none was refused)
    assert invoke(["check", "--fail-on", "none"]).exit_code == 0
    # and the config file takes the value the flag takes (a probe saw 'none' refused there)
    Path("auditor.toml").write_text(
        '[auditor]\nrules = ["mine.yaml"]\nfail_on = "none"\n'
        "[auditor.sandbox]\nclusters = 12\ncolumns = 600\n"
    )
    assert invoke(["check"]).exit_code == 0
    assert invoke(["check", "--fail-on", "low"]).exit_code == 1
    Path("auditor.toml").write_text(
        '[auditor]\nrules = ["mine.yaml"]\nfail_on = "low"\n[auditor.sandbox]\nclusters = 12\ncolumns = 600\n'
    )
    from_check = json.loads(checked.stdout)
    assert sorted(f["fingerprint"] for f in from_check["findings"]) == sorted(
        f["fingerprint"] for f in from_run["findings"]
    )

    invoke(["run", "--report", "r2.html"])
    diffed = invoke(["diff", "--format", "json"])
    assert diffed.exit_code == 0
    rules_seen = {f["rule"] for kind in json.loads(diffed.stdout)["findings"].values() for f in kind}
    assert rules_seen == {"every-column-in-a-pii-cluster"}


def test_relative_paths_in_a_config_file_elsewhere_are_relative_to_it(tmp_path, monkeypatch):
    """Found by a probe: with --config cfg/auditor.toml, waivers = "waivers.yaml" was looked for in
    the working folder ("waiver file waivers.yaml does not exist", exit 2)."""
    from auditor.config import load_config

    config = tmp_path / "cfg"
    (config / "rules").mkdir(parents=True)
    (config / "rules" / "mine.yaml").write_text(ONE_RULE)
    (config / "waivers.yaml").write_text(
        "waivers:\n  - {rule: every-column-in-a-pii-cluster, column: '*', reason: r, owner: o, "
        "expires: 2099-01-01}\n"
    )
    (config / "auditor.toml").write_text(
        '[auditor]\ndb = "history.db"\nrules = ["rules"]\nwaivers = "waivers.yaml"\nfail_on = "low"\n'
        'token_file = "~/token"\nca_bundle = "/etc/ssl/ca.pem"\n'
        "[auditor.sandbox]\nclusters = 12\ncolumns = 600\n"
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    values = load_config("../cfg/auditor.toml", explicit=True).values
    assert (values["db"], values["rules"], values["waivers"]) == (
        "../cfg/history.db",
        ["../cfg/rules"],
        "../cfg/waivers.yaml",
    )
    assert (values["token_file"], values["ca_bundle"]) == (  # the home folder; absolute as written
        os.path.expanduser("~/token"),
        "/etc/ssl/ca.pem",
    )
    ran = invoke(["--config", "../cfg/auditor.toml", "run", "--format", "json"])
    assert ran.exit_code == 0, ran.stderr  # every finding waived: the gate passes
    assert {f["status"] for f in json.loads(ran.stdout)["findings"]} == {"waived"}
    # the database is the config folder's; only the report goes to the working folder
    assert (config / "history.db").exists()
    assert [p.name for p in elsewhere.iterdir()] == ["auditor-report-run1.html"]
    # a config file in the working folder keeps its values as written
    monkeypatch.chdir(config)
    assert load_config(None, explicit=False).values["waivers"] == "waivers.yaml"


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
    failing = [f for f in payload["findings"] if f["status"] != "waived" and f["severity"] != "info"]
    gate = lines.index(f"gate failed: {len(failing)} finding(s) at or above low")
    error = next(i for i, line in enumerate(lines) if line.startswith("error: smtp://127.0.0.1:9"))
    assert gate < error
    # what to do next: the same message again, with 'auditor email' (the URL holds no password)
    resend = (
        "the results and the report are written; send the email again with: auditor email --run 1 "
        "--to team@example.com --attach-report --attach-csv --smtp smtp://127.0.0.1:9"
    )
    assert lines[error + 1].startswith("hint: ") and lines[error + 1].endswith(resend)


def test_a_message_too_large_for_the_server_names_the_jobs_option_to_leave_attachments_out(
    tmp_path, monkeypatch
):
    # Found by a probe: the hint said "send it without the attachments" and gave the one-off
    # command, but the scheduled job itself would meet the same limit next week.
    import socket
    import threading

    listener = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        connection, _ = listener.accept()
        with connection, listener:
            connection.sendall(b"220 hi\r\n")
            for line in connection.makefile("rb"):
                word = line.split()[0].upper() if line.split() else b""
                connection.sendall(
                    {b"MAIL": b"552 5.3.4 message size exceeds 1000\r\n"}.get(word, b"250 ok\r\n")
                )
                if word == b"QUIT":
                    return

    threading.Thread(target=serve, daemon=True).start()
    host, port = listener.getsockname()
    monkeypatch.chdir(tmp_path)
    Path("auditor.toml").write_text("[auditor.sandbox]\nclusters = 6\ncolumns = 200\n")
    result = invoke(
        ["run", "--report", "r.html", "--email-to", "team@example.com", "--smtp", f"smtp://{host}:{port}"]
    )
    assert result.exit_code == 3
    hint = next(line for line in result.stderr.splitlines() if line.startswith("hint: "))
    assert hint.startswith(
        "hint: send it without the attachments, or raise the server's message size limit; for this job's "
        "next runs add --no-email-attachments; the results and the report are written; send the email "
        "again with: auditor email --run 1 --to team@example.com --smtp "
    )
    assert "--attach" not in hint


def test_the_resend_command_carries_every_setting_given_and_adapts_to_the_failure(tmp_path, monkeypatch):
    # Found by a probe: the printed command left out --db, --smtp-ca-bundle, --templates and --eml,
    # printed '--smtp URL' literally, resent to everyone after a partial refusal and kept the
    # attachments after the server refused the message for its size.
    from auditor.errors import DeliveryError
    from auditor.pipeline import EmailOptions

    monkeypatch.chdir(tmp_path)  # files named relative to it are printed by their absolute paths
    email = EmailOptions(
        to=["a@example.org", "bad@example.org"],
        cc=["c@example.org"],
        smtp_url="smtp+starttls://mailer%40corp@mail.example.org:2587",
        cafile="/etc/ca/private.pem",
    )
    command = email.resend_command(
        7, 6, ["my rules"], "w.yaml", db="/data/audit.db", templates="tpl", smtp_given=True
    )
    assert command == (
        "auditor email --run 7 --against 6 --db /data/audit.db --to a@example.org --to bad@example.org "
        f"--cc c@example.org --rules '{tmp_path}/my rules' --waivers {tmp_path}/w.yaml "
        f"--templates {tmp_path}/tpl --attach-report --attach-csv "
        "--smtp smtp+starttls://mailer%40corp@mail.example.org:2587 --smtp-ca-bundle /etc/ca/private.pem"
    )
    refused = DeliveryError("some recipients were refused")
    refused.refused = ("bad@example.org",)
    assert email.resend_command(7, None, error=refused) == (
        "auditor email --run 7 --to bad@example.org --attach-report --attach-csv --smtp-ca-bundle "
        "/etc/ca/private.pem"
    )
    large = DeliveryError("too large")
    large.too_large = True
    # a database URL with a password is left out (the caller says to give it again), never printed
    assert email.resend_command(7, "none", db="postgresql+psycopg://u:pw@db/audit", error=large) == (
        "auditor email --run 7 --against none --to a@example.org --to bad@example.org --cc c@example.org "
        "--smtp-ca-bundle /etc/ca/private.pem"
    )
    ipv6 = EmailOptions(to=["a@example.org"], smtp_url="smtp://user@[::1]:2525", attach_report=False)
    command = ipv6.resend_command(7, None, smtp_given=True, db="postgresql://u@db/audit")
    assert command == (
        "auditor email --run 7 --db postgresql://u@db/audit --to a@example.org --attach-csv "
        "--smtp 'smtp://user@[::1]:2525'"
    )
    from auditor.render.email import parse_smtp_url

    assert parse_smtp_url("smtp://user@[::1]:2525").host == "::1"  # the command's URL reads back
    dashed = EmailOptions(to=["a@example.org"], subject="-q weekly", eml_path="m.eml", attach_report=False)
    words = shlex.split(dashed.resend_command(7, None))  # a subject like an option stays the subject's
    assert "--subject=-q weekly" in words and "--subject" not in words
    bare = EmailOptions(to=["a@example.org"], eml_path="out/m.eml", attach_report=False, attach_csv=False)
    assert (
        bare.resend_command(7, None) == f"auditor email --run 7 --to a@example.org --eml {tmp_path}/out/m.eml"
    )
    for given, printed in (
        ("h.db", f"{tmp_path}/h.db"),
        ("sqlite:///h.db?timeout=3", f"sqlite:///{tmp_path}/h.db?timeout=3"),
        ("sqlite:////data/h.db", "sqlite:////data/h.db"),
        ("postgresql://auditor@db/audit", "postgresql://auditor@db/audit"),
    ):
        words = shlex.split(bare.resend_command(7, None, db=given))
        assert words[words.index("--db") + 1] == printed
    assert bare.resend_command(7, None, error=large) is None  # nothing to leave out: no command helps


def test_outputs_that_cannot_be_written_are_refused_before_the_snapshot(tmp_path, monkeypatch):
    # Found by a probe: `auditor run -o missing/out.json` (or --report there, or the default report
    # in a read-only working folder) fetched and stored the whole snapshot first, then failed with
    # no check output and no verdict, the run stored complete and used as the next baseline.
    monkeypatch.chdir(tmp_path)
    Path("auditor.toml").write_text("[auditor.sandbox]\nclusters = 6\ncolumns = 200\n")
    for option in ("-o", "--report", "--eml"):
        extra = ("--email-to", "a@example.org") if option == "--eml" else ()
        result = invoke(["run", "--db", "h.db", option, "missing/out", *extra])
        assert result.exit_code == 3, result.output
        assert result.stderr.splitlines() == [
            f"error: cannot write missing/out: the folder {tmp_path / 'missing'} does not exist",
            f"hint: nothing was done yet: give {'--output' if option == '-o' else option} a file you can "
            "write",
        ]
    assert not Path("h.db").exists()
    # found by a regression probe: the database run is about to create, named as -o (exit 3 after
    # the work), and an --export-dir under a file (the snapshot taken, then "Not a directory")
    same = invoke(["run", "--db", "h.db", "-o", "h.db"])
    assert (same.exit_code, same.stderr.splitlines()[0]) == (
        2,
        "error: --output h.db is the file this command reads as --db: writing it would destroy it",
    )
    Path("afile").write_text("")
    under = invoke(["run", "--db", "h.db", "--export-dir", "afile/deep/exp"])
    assert under.exit_code == 3
    assert under.stderr.splitlines()[0] == (
        f"error: cannot create the folder afile/deep/exp: Not a directory ({tmp_path / 'afile'})"
    )
    assert not Path("h.db").exists()
    # a report inside the --export-dir the run makes is fine: the folder is made first
    made = invoke(["run", "--db", "h.db", "-q", "--export-dir", "out/x", "--report", "out/x/r.html"])
    assert made.exit_code == 0, made.output
    assert Path("out/x/r.html").is_file()
    Path("h.db").unlink()
    real_access = os.access
    here = os.path.realpath(".")

    def access(path, mode, **kw):  # the tests run as root, for whom every folder is writable
        if os.path.realpath(path) == here and mode & os.W_OK:
            return False
        return real_access(path, mode, **kw)

    monkeypatch.setattr(os, "access", access)
    result = invoke(["run", "--db", str(tmp_path / "elsewhere.db")])
    assert result.exit_code == 3
    assert result.stderr.splitlines()[0] == (
        f"error: cannot write the report into the current folder {here}: Permission denied"
    )
    assert not (tmp_path / "elsewhere.db").exists()
    # an --export-dir that exists but cannot be written was "cannot create the folder" (a probe)
    exports = invoke(
        ["run", "--db", str(tmp_path / "elsewhere.db"), "--report", "/dev/null", "--export-dir", "."]
    )
    assert exports.exit_code == 3
    assert exports.stderr.splitlines() == [
        "error: cannot write into the folder .: Permission denied",
        "hint: nothing was done yet: give --export-dir a folder you can write",
    ]


def test_run_lists_stale_and_expiring_waivers_as_check_does(tmp_path, monkeypatch):
    # Found by a regression probe: `run --format sarif -o F` never said which waivers were stale
    # or about to expire (check did), so a CI job using run never saw them
    from datetime import date, timedelta

    monkeypatch.chdir(tmp_path)
    Path("auditor.toml").write_text("[auditor.sandbox]\nclusters = 6\ncolumns = 200\n")
    soon = (date.today() + timedelta(days=3)).isoformat()
    Path("w.yaml").write_text(
        "waivers:\n  - {rule: pii-cluster-low-severity, cluster: no-such-cluster, reason: r, owner: o,\n"
        f"     expires: {soon}}}\n"
    )
    result = invoke(["run", "--db", "h.db", "--waivers", "w.yaml", "--format", "sarif", "-o", "out.sarif"])
    assert result.exit_code == 0, result.output
    lines = result.stderr.splitlines()
    assert (
        f"waiver expiring soon (valid through {soon}): rule pii-cluster-low-severity, cluster "
        "no-such-cluster (w.yaml:2)" in lines
    )
    assert any(
        line.startswith(
            "stale waiver (matches nothing): rule pii-cluster-low-severity, cluster no-such-cluster"
        )
        for line in lines
    )
