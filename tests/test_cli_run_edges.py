"""Edges of ``auditor run``, ``demo``, ``snapshot``/``clusters``, the group and ``check``'s notes.

Written from a mutation probe of ``auditor/cli/run.py``, ``fetch.py``, ``main.py`` and ``check.py``:
each test pins a message, an exit code or a default that no other test held exactly.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from auditor.cli.fetch import _table
from auditor.cli.main import with_config
from auditor.store.db import open_database
from tests.engine.conftest import CATALOG, write_snapshot
from tests.render.conftest import smtp_server  # noqa: F401 (the loopback SMTP server fixture)

SMALL = "[auditor.sandbox]\nclusters = 6\ncolumns = 120\n"
SANDBOX_LINE = (
    "no BigID URL configured (--url, BIGID_URL or auditor.toml): using the built-in sandbox, epoch {}"
)


@pytest.fixture
def small(tmp_path) -> Path:
    (tmp_path / "auditor.toml").write_text(SMALL, encoding="utf-8")
    return tmp_path


def two_runs(path: Path) -> str:
    engine = open_database(path)
    try:
        for _ in range(2):
            write_snapshot(engine, CATALOG)
    finally:
        engine.dispose()
    return str(path)


def test_run_to_a_file_says_each_step_and_the_gate_on_stderr(run_cli, small):
    result = run_cli("run", "--format", "json", "-o", "out.json", "--fail-on", "high")
    assert result.exit_code == 1
    assert result.stdout == ""
    assert result.stderr.splitlines() == [
        SANDBOX_LINE.format(0),
        "run 1 complete: 6 clusters, 120 columns; no earlier complete run",
        "run 1: 44 findings (23 high, 20 medium, 1 low); 44 new, 0 existing, 0 waived, 0 waiver expired; "
        "16 rules, no baseline",
        "wrote auditor-report-run1.html",
        "gate failed: 23 finding(s) at or above high",  # the words and count of check's
    ]
    assert (small / "out.json").is_file() and (small / "auditor-report-run1.html").is_file()


def test_run_with_baseline_none_says_so_and_lists_every_export(run_cli, small):
    assert run_cli("run", "-q").exit_code == 0
    result = run_cli(
        "run", "--baseline", "none", "--format", "json", "--export-dir", "ex", "--report", "r.html"
    )
    assert result.exit_code == 0
    assert result.stderr.splitlines() == [
        SANDBOX_LINE.format(1),
        "run 2 complete: 6 clusters, 140 columns; not compared with an earlier run (--baseline none)",
        "run 2: 77 findings (1 critical, 50 high, 25 medium, 1 low); 77 new, 0 existing, 0 waived, "
        "0 waiver expired; 16 rules, no baseline",
        "wrote ex/findings.csv",
        "wrote ex/findings.json",
        "wrote ex/diff.json",
        "wrote r.html",
    ]


def test_run_json_on_stdout_still_says_the_summary_on_stderr(run_cli, small):
    result = run_cli("run", "--format", "json", "--report", "r.html")
    assert result.exit_code == 0
    assert (
        "run 1: 44 findings (23 high, 20 medium, 1 low); 44 new, 0 existing, 0 waived, 0 waiver expired; "
        "16 rules, no baseline"
    ) in result.stderr.splitlines()


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
def test_a_report_that_cannot_be_written_leaves_the_results_out_and_says_how_to_write_it(run_cli, small):
    # Found by a probe: run printed its results only after the report was written, so a report
    # that failed (a full disk, exit 3) took the check's output and notes along with it.
    import json
    import shlex

    result = run_cli("run", "--format", "json", "--report", "/dev/full", "--export-dir", "ex")
    assert result.exit_code == 3
    payload = json.loads(result.stdout)
    assert payload["run"] == 1 and len(payload["findings"]) == 44
    lines = result.stderr.splitlines()
    assert lines[1:4] == [
        "run 1 complete: 6 clusters, 120 columns; no earlier complete run",
        "run 1: 44 findings (23 high, 20 medium, 1 low); 44 new, 0 existing, 0 waived, 0 waiver expired; "
        "16 rules, no baseline",
        "error: cannot write /dev/full: No space left on device",
    ]
    again = f"auditor report --run 1 --output /dev/full --export-dir {small / 'ex'}"
    assert lines[4] == (
        f"hint: run 1 is stored and checked, and its results are out; write the report again with: {again}"
    )
    # the command works as printed, once given somewhere to write
    words = shlex.split(again)[1:]
    words[words.index("/dev/full")] = "again.html"
    assert run_cli(*words).exit_code == 0
    assert (small / "again.html").is_file()
    assert len(json.loads((small / "ex" / "findings.json").read_text(encoding="utf-8"))["findings"]) == 44


def test_run_names_the_clusters_it_left_out(run_cli, small, sandbox):
    server = sandbox(clusters=6, columns=120, token="sk-edge")
    skipped = sorted(server.dataset.cluster_ids())[0]
    result = run_cli(
        "run",
        "--url",
        server.url,
        "--skip-cluster",
        skipped,
        "--report",
        "r.html",
        "-o",
        "out.txt",
        env={"BIGID_TOKEN": "sk-edge"},
    )
    assert result.exit_code == 0, result.output
    lines = result.stderr.splitlines()
    assert lines[0] == "run 1 complete: 5 clusters, " + lines[0].split(", ", 1)[1]
    assert lines[1] == f"note: 1 cluster(s) left out of the run (--skip-cluster): '{skipped}'"


def test_run_notes_a_baseline_taken_with_another_filter(run_cli, small, sandbox):
    server = sandbox(clusters=6, columns=120, token="sk-edge")
    env = {"BIGID_TOKEN": "sk-edge"}
    assert run_cli("run", "--url", server.url, "--filter", "size=20", "-q", env=env).exit_code == 0
    result = run_cli("run", "--url", server.url, "--format", "json", "--report", "r.html", env=env)
    assert result.exit_code == 0, result.output
    notes = [line for line in result.stderr.splitlines() if line.startswith("note: ")]
    assert notes == [
        "note: run 1 was taken with the cluster filter 'size=20' and run 2 with no cluster filter: what only "
        "one of them covers reads as new or resolved, added or removed"
    ]


def test_run_with_an_eml_file_says_where_the_email_went(run_cli, small):
    result = run_cli("run", "--email-to", "team@example.org", "--eml", "m.eml", "--report", "r.html", "-q")
    assert result.exit_code == 0, result.output
    assert (small / "m.eml").is_file()
    result = run_cli(
        "run", "--email-to", "team@example.org", "--eml", "m2.eml", "--report", "r.html", "-o", "x"
    )
    assert result.stderr.splitlines()[-2:] == ["wrote r.html", "wrote the email to m2.eml"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--smtp-ca-bundle", "ca.pem"], "error: --smtp-ca-bundle given, but no recipient"),
        (["--smtp", "smtp://h", "--email-cc", "b@example.org"], "error: --smtp given, but no recipient"),
    ],
)
def test_run_names_the_first_mail_option_given_without_a_recipient(run_cli, tmp_path, args, message):
    (tmp_path / "ca.pem").write_text("x", encoding="utf-8")
    result = run_cli("run", *args)
    assert result.exit_code == 2
    assert result.stderr == f"{message}\nhint: add --email-to ADDR (or email_to in auditor.toml)\n"
    assert not (tmp_path / "auditor.db").exists()


def test_run_says_that_a_settings_file_set_up_to_email_names_no_recipient(run_cli, small):
    # Found by a probe: smtp and an empty email_to in auditor.toml: exit 0, and not a word
    (small / "auditor.toml").write_text('[auditor]\nsmtp = "smtp://127.0.0.1:2525"\nemail_to = ""\n' + SMALL)
    result = run_cli("run", "--report", "r.html", "-o", "out.txt")
    assert result.exit_code == 0, result.output
    assert result.stderr.splitlines()[0] == (
        f"note: {small / 'auditor.toml'} names no recipient (email_to): no email is sent"
    )


def test_demo_refuses_a_single_cluster_and_shows_its_defaults(run_cli):
    refused = run_cli("demo", "--clusters", "1")
    assert refused.exit_code == 2
    assert "Invalid value for '--clusters': 1 is not in the range 2<=x<=100000." in refused.stderr
    shown = run_cli("demo", "--help").stdout
    assert "[default: 150;" in shown and "2<=x<=100000]" in shown  # (folded by the help text)


def test_demo_lists_each_export_once_and_the_next_steps(run_cli, tmp_path):
    result = run_cli("demo", "--clusters", "6", "--columns", "120", "--folder", "d")
    assert result.exit_code == 0, result.output
    folder = (tmp_path / "d").resolve()
    lines = result.stdout.splitlines()
    assert lines[3:] == [
        f"  report    {folder / 'report.html'}",
        f"  export    {folder / 'export' / 'findings.csv'}",
        f"  export    {folder / 'export' / 'findings.json'}",
        f"  export    {folder / 'export' / 'diff.json'}",
        "",
        "next steps:",
        "  auditor check --db d/auditor.db --format json",
        "  auditor diff --db d/auditor.db --format text",
        "  auditor runs --db d/auditor.db",
    ]


def test_clusters_counts_them_on_stderr(run_cli, sandbox):
    server = sandbox(clusters=6, columns=120, token="sk-edge")
    result = run_cli("clusters", "--url", server.url, env={"BIGID_TOKEN": "sk-edge"})
    assert result.exit_code == 0, result.output
    assert result.stderr == "6 cluster(s)\n"


def test_columns_shows_ranks_and_primary_keys(run_cli, sandbox):
    server = sandbox(clusters=6, columns=120, token="sk-edge")
    result = run_cli(
        "columns", "66584477c5cad56716000005", "--url", server.url, env={"BIGID_TOKEN": "sk-edge"}
    )
    assert result.exit_code == 0, result.output
    assert (
        "mongodb-app.app.sessions.tracking_id                          tracking_id"
        "                           sessions                       mongodb-app         String   yes  "
        "Device ID(Low)                                       sensitivity=High, Access Type=Restricted, "
        "system.risk.riskS…"
    ) in result.stdout.splitlines()
    assert result.stderr == "27 column(s) returned; totalCount 27\n"


def test_table_cuts_cells_at_60_columns_and_ends_lines_without_padding():
    table = _table(("A", "B"), [("x" * 70, ""), ("y", "z")])
    assert table.splitlines() == ["A" + " " * 61 + "B", "x" * 59 + "…", "y" + " " * 61 + "z"]


def test_snapshot_max_minutes_counts_minutes(run_cli, sandbox):
    server = sandbox(clusters=3, columns=30, token="sk-edge", latency=0.1)
    result = run_cli(
        "snapshot",
        "--url",
        server.url,
        "--max-minutes",
        "0.05",
        "--db",
        "h.db",
        env={"BIGID_TOKEN": "sk-edge"},
    )
    assert result.exit_code == 0, result.output
    assert result.stdout == "1\n"


def test_help_after_a_double_dash_is_an_argument_not_a_request_for_help(run_cli, tmp_path):
    (tmp_path / "auditor.toml").write_text("nonsense =\n", encoding="utf-8")
    result = run_cli("columns", "--", "--help")
    assert result.exit_code == 2
    assert result.stderr == (
        f"error: {tmp_path / 'auditor.toml'}: invalid TOML: Invalid value (at line 1, column 11)\n"
    )


def test_config_without_a_value_is_refused_as_such(run_cli):
    # (found by a probe: it said "No such option '--config'", as if check had none)
    for args in (("check", "--config"), ("--config",)):
        result = run_cli(*args)
        assert result.exit_code == 2
        assert result.stderr.splitlines()[-1] == "Error: Option '--config' requires an argument."


def test_a_global_flag_given_as_an_option_s_value_stays_its_value(run_cli):
    """Found by a probe: `--filter -v` moved the -v before the command as --verbose, and click then
    said --filter requires an argument."""
    from auditor.cli.main import hoisted

    assert hoisted(["clusters", "--filter", "-v", "-q"], frozenset({"--filter"})) == [
        "-q",
        "clusters",
        "--filter",
        "-v",
    ]
    assert hoisted(["check", "--new-only", "-v"]) == ["-v", "check", "--new-only"]
    result = run_cli("clusters", "--url", "http://127.0.0.1:9", "--filter", "-v")
    assert result.exit_code == 2
    assert result.stderr.splitlines()[0] == "error: no BigID API key: BIGID_TOKEN is not set"
    # the options of a nested group's command are known too (db prune --format)
    result = run_cli("db", "prune", "--db", "missing.db", "--keep", "1", "--format", "-q")
    assert result.exit_code == 2
    assert "'-q' is not one of 'table', 'json'" in result.stderr


def test_a_hinted_command_inside_a_quoted_argument_gets_no_config():
    hint = "run: auditor email --subject 'see; auditor check'; auditor check"
    assert with_config(hint, "/etc/a.toml") == (
        "run: auditor --config /etc/a.toml email --subject 'see; auditor check'; "
        "auditor --config /etc/a.toml check"
    )


@pytest.fixture
def runs(tmp_path) -> str:
    return two_runs(tmp_path / "h.db")


def test_check_table_keeps_the_baseline_note_off_stderr(run_cli, runs):
    table = run_cli("check", "--db", runs, "--run", "1", "--baseline", "2")
    assert table.exit_code == 0
    assert table.stderr == ""
    to_file = run_cli("check", "--db", runs, "--run", "1", "--baseline", "2", "-o", "t.txt")
    assert to_file.stderr.splitlines() == [
        "note: the baseline, run 2, is newer than run 1: 'new' are the findings run 1 has and run 2 no "
        "longer has",
        "run 1: 7 findings (2 high, 3 medium, 2 low); 0 new, 7 existing, 0 waived, 0 waiver expired; "
        "16 rules, baseline run 2",
    ]


def test_a_new_only_gate_without_expired_waivers_counts_new_findings_only(run_cli, tmp_path):
    db = str(tmp_path / "one.db")
    engine = open_database(db)
    write_snapshot(engine, CATALOG)
    engine.dispose()
    result = run_cli("check", "--db", db, "--format", "json", "--fail-on", "high", "--new-only")
    assert result.exit_code == 1
    assert result.stderr.splitlines()[-1] == "gate failed: 2 new finding(s) at or above high"


def test_check_sarif_has_no_size_note_for_a_small_run(run_cli, runs):
    result = run_cli("check", "--db", runs, "--format", "sarif", "-o", "o.sarif")
    assert result.exit_code == 0
    assert result.stderr == (
        "run 2: 7 findings (2 high, 3 medium, 2 low); 0 new, 7 existing, 0 waived, 0 waiver expired; "
        "16 rules, baseline run 1\n"
    )


def test_snapshot_says_which_count_disagreed(run_cli, sandbox):
    server = sandbox(clusters=6, columns=120, token="sk-edge", wrong_totals=1.0)
    result = run_cli("snapshot", "--url", server.url, "--db", "h.db", env={"BIGID_TOKEN": "sk-edge"})
    assert result.exit_code == 0, result.output
    lines = result.stderr.splitlines()
    assert lines[0].startswith("run 1 complete: 6 clusters, 120 columns in ")
    assert lines[1:] == ["note: 6 cluster(s) whose totalCount differs from the columns fetched"]


def test_check_table_of_an_incomplete_run_keeps_its_warning_off_stderr(run_cli, tmp_path):
    engine = open_database(tmp_path / "h.db")
    write_snapshot(engine, CATALOG, status="failed")
    engine.dispose()
    table = run_cli("check", "--db", "h.db", "--run", "1", "--allow-incomplete")
    assert table.exit_code == 0, table.output
    assert table.stderr == ""
    assert table.stdout.splitlines()[-2].startswith("warning: run 1 is failed, not complete")


def test_run_names_every_recipient_it_emailed(run_cli, small, smtp_server):  # noqa: F811
    host, port, received = smtp_server()
    result = run_cli(
        "run",
        "-o",
        "out.txt",
        "--report",
        "r.html",
        "--smtp",
        f"smtp://{host}:{port}",
        "--email-to",
        "a@example.org",
        "--email-to",
        "b@example.org",
    )
    assert result.exit_code == 0, result.output
    assert received.event.wait(5)
    assert result.stderr.splitlines()[-2:] == [
        "wrote r.html",
        "emailed the report to a@example.org, b@example.org",
    ]


def refusing_smtp(verb: bytes, code: bytes, only: bytes = b"") -> tuple[str, int]:
    """A loopback SMTP server answering ``verb`` (in a line holding ``only``) with ``code`` and the rest
    with 250 (one connection)."""
    import socket
    import threading

    listener = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        connection, _ = listener.accept()
        with connection, listener:
            connection.sendall(b"220 hi\r\n")
            in_data = False
            for line in connection.makefile("rb"):
                if in_data:  # the message itself, up to its lone dot
                    in_data = line != b".\r\n"
                    if not in_data:
                        connection.sendall(b"250 ok\r\n")
                    continue
                word = line.split()[0].upper() if line.split() else b""
                in_data = word == b"DATA"
                refused = word == verb and only in line
                connection.sendall(code if refused else b"354 go on\r\n" if in_data else b"250 ok\r\n")
                if word == b"QUIT":
                    return

    threading.Thread(target=serve, daemon=True).start()
    host, port = listener.getsockname()
    return host, port


def test_a_message_too_large_without_attachments_does_not_suggest_leaving_them_out(run_cli, small):
    host, port = refusing_smtp(b"MAIL", b"552 5.3.4 message size exceeds 1000\r\n")
    result = run_cli(
        "run",
        "-q",
        "--report",
        "r.html",
        "--email-to",
        "team@example.com",
        "--smtp",
        f"smtp://{host}:{port}",
        "--no-email-attachments",
    )
    assert result.exit_code == 3
    assert result.stderr.splitlines()[1:] == [
        "hint: raise the server's message size limit (the message has no attachment to leave out); "
        "the results and the report are written"
    ]


def test_a_refused_recipient_leaves_only_the_command_to_send_again(run_cli, small):
    host, port = refusing_smtp(b"RCPT", b"550 5.1.1 no such user\r\n")
    result = run_cli(
        "run", "-q", "--report", "r.html", "--email-to", "team@example.com", "--smtp", f"smtp://{host}:{port}"
    )
    assert result.exit_code == 3
    assert result.stderr.splitlines() == [
        f"error: smtp://{host}:{port}: every recipient was refused: team@example.com "
        "(550 5.1.1 no such user)",
        "hint: the results and the report are written; send the email again with: auditor email --run 1 "
        f"--to team@example.com --attach-report --attach-csv --smtp smtp://{host}:{port}",
    ]


def test_a_partly_refused_email_gives_only_the_command_for_the_refused_recipient(run_cli, small):
    host, port = refusing_smtp(b"RCPT", b"550 5.1.1 no such user\r\n", only=b"b@example.org")
    result = run_cli(
        *("run", "-q", "--report", "r.html", "--smtp", f"smtp://{host}:{port}"),
        *("--email-to", "a@example.org", "--email-to", "b@example.org"),
    )
    assert result.exit_code == 3
    assert result.stderr.splitlines() == [
        f"error: smtp://{host}:{port}: some recipients were refused: b@example.org (550 5.1.1 no such user); "
        "the message was delivered to a@example.org",
        "hint: the results and the report are written; send the email again with: auditor email --run 1 "
        f"--to b@example.org --attach-report --attach-csv --smtp smtp://{host}:{port}",
    ]


def test_columns_says_when_the_server_gives_no_total(run_cli, sandbox):
    server = sandbox(clusters=6, columns=120, token="sk-edge", envelope="data")
    result = run_cli(
        "columns", "66584477c5cad56716000005", "--url", server.url, env={"BIGID_TOKEN": "sk-edge"}
    )
    assert result.exit_code == 0, result.output
    assert result.stderr == "27 column(s) returned; totalCount not given\n"


def test_a_hint_gives_the_config_file_the_failed_command_was_given(run_cli, tmp_path):
    (tmp_path / "cfg.toml").write_text("", encoding="utf-8")
    result = run_cli("--config", "cfg.toml", "check", "--db", "nope.db")
    assert result.exit_code == 3
    assert result.stderr.splitlines() == [
        "error: there is no database at nope.db yet",
        f"hint: take a snapshot first: auditor --config {tmp_path / 'cfg.toml'} snapshot (or auditor demo); "
        "or check --db / AUDITOR_DB",
    ]


def test_help_is_shown_in_a_folder_whose_settings_file_is_broken(run_cli, tmp_path):
    (tmp_path / "auditor.toml").write_text("nonsense =\n", encoding="utf-8")
    result = run_cli("check", "--help")
    assert result.exit_code == 0
    assert result.stdout.startswith("Usage: cli check [OPTIONS]\n")  # (CliRunner names the group cli)
    assert result.stderr == ""


def test_a_check_that_fails_after_the_snapshot_says_the_run_is_stored(run_cli, small):
    # Found by a fault probe: the findings did not fit the disk, and nothing said that the run just
    # taken was stored and complete; re-running the job took yet another snapshot.
    import sqlite3

    assert run_cli("run", "-q", "--report", "r1.html").exit_code == 0
    with sqlite3.connect(small / "auditor.db") as connection:  # the findings' store fails as a full disk does
        connection.execute(
            "CREATE TRIGGER full BEFORE INSERT ON evaluations "
            "BEGIN SELECT RAISE(ABORT, 'database or disk is full'); END"
        )
    result = run_cli("run", "--report", "r2.html")
    assert result.exit_code == 3
    lines = result.stderr.splitlines()
    assert lines[-2] == "error: could not store the findings of run 2: database or disk is full"
    assert lines[-1].startswith("hint: check that the disk holding the database is not full")
    assert lines[-1].endswith(
        "; run 2 is stored and complete: once that is fixed, check it with 'auditor check --run 2' and "
        "report it with 'auditor report --run 2' (with the options given here) rather than taking another "
        "snapshot"
    )
    assert not (small / "r2.html").exists()
