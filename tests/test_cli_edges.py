"""Edges of the CLI layer a user sees: defaults, exact messages, exit codes, files written or not.

Written from a mutation probe of ``auditor/cli``: each test pins a behaviour no other test held.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from auditor.store.db import open_database
from tests.engine.conftest import CATALOG, write_snapshot

MISSING_HINT = "hint: take a snapshot first: auditor snapshot (or auditor demo); or check --db / AUDITOR_DB"


def snapshots(path: Path, count: int) -> None:
    """``count`` complete runs of the engine tests' catalog in the SQLite file ``path``."""
    engine = open_database(path)
    try:
        for _ in range(count):
            write_snapshot(engine, CATALOG)
    finally:
        engine.dispose()


@pytest.fixture
def db(tmp_path) -> str:
    path = tmp_path / "history.db"
    snapshots(path, 1)
    return str(path)


def test_the_default_database_is_auditor_db_in_the_working_folder(run_cli, tmp_path):
    snapshots(tmp_path / "auditor.db", 1)
    result = run_cli("check", "--format", "json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["run"] == 1


def test_a_missing_database_is_refused_with_a_hint_and_not_created(run_cli, tmp_path):
    result = run_cli("check", "--db", "nope.db")
    assert result.exit_code == 3
    assert result.stdout == ""
    assert result.stderr == f"error: there is no database at nope.db yet\n{MISSING_HINT}\n"
    assert not (tmp_path / "nope.db").exists()


def test_a_missing_sqlite_url_is_named_as_a_database_not_a_store(run_cli, tmp_path):
    url = f"sqlite:///{tmp_path}/nope.db"
    result = run_cli("diff", "--db", url)
    assert result.exit_code == 3
    assert result.stderr == f"error: there is no database at {url} yet\n{MISSING_HINT}\n"
    assert not (tmp_path / "nope.db").exists()


def test_fail_on_none_switches_off_the_config_files_gate(run_cli, db, tmp_path):
    (tmp_path / "auditor.toml").write_text('fail_on = "low"\n', encoding="utf-8")
    assert run_cli("check", "--db", db, "--format", "json").exit_code == 1
    assert run_cli("check", "--db", db, "--format", "json", "--fail-on", "none").exit_code == 0
    (tmp_path / "auditor.toml").write_text('fail_on = "none"\n', encoding="utf-8")
    assert run_cli("check", "--db", db, "--format", "json").exit_code == 0


def test_quiet_silences_the_summary_but_not_the_exit_code(run_cli, db):
    result = run_cli("--quiet", "check", "--db", db, "--format", "json", "--fail-on", "high")
    assert result.exit_code == 1
    assert result.stderr == ""
    assert json.loads(result.stdout)["run"] == 1


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("-o", "  "), "Invalid value for '--output' / '-o': the path is empty (a variable left unset?)"),
        (("--db", " "), "Invalid value for '--db': the value is empty (a variable left unset?)"),
    ],
)
def test_a_blank_path_or_database_is_refused(run_cli, tmp_path, args, message):
    result = run_cli("check", *args)
    assert result.exit_code == 2
    assert result.stderr.splitlines()[-1] == f"Error: {message}"
    assert list(tmp_path.iterdir()) == []


def test_output_dash_is_standard_output(run_cli, db, tmp_path):
    result = run_cli("check", "--db", db, "--format", "json", "-o", "-")
    assert result.exit_code == 0
    assert json.loads(result.stdout)["run"] == 1
    assert not (tmp_path / "-").exists()
    assert result.stderr.startswith("run 1: 7 findings (2 high, 3 medium, 2 low)")


def test_runs_in_an_empty_folder_lists_none_and_creates_no_database(run_cli, tmp_path):
    result = run_cli("runs")
    assert result.exit_code == 0
    assert result.stdout == (
        "   ID  STATUS    STARTED (UTC)         CLUSTERS    COLUMNS  SOURCE\n"
        "(no runs yet: take one with `auditor snapshot` or try `auditor demo`)\n"
    )
    assert not (tmp_path / "auditor.db").exists()


def test_db_upgrade_creates_the_default_database_then_says_it_is_current(run_cli, tmp_path):
    url = f"sqlite:///{tmp_path / 'auditor.db'}"
    first = run_cli("db", "upgrade")
    assert first.exit_code == 0
    assert first.stdout.startswith(f"{url}: created at schema revision ")  # not "from revision empty"
    revision = first.stdout.strip().rsplit(" ", 1)[1]
    again = run_cli("db", "upgrade")
    assert (again.exit_code, again.stdout) == (0, f"{url}: already at schema revision {revision}\n")


def test_verbose_db_upgrade_shows_the_migrations_not_alembic_s_set_up(tmp_path):
    """A new user's walkthrough: -v printed "Context impl SQLiteImpl." and "Will assume
    non-transactional DDL." at every database opened."""
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-m", "auditor.cli.main", "-v", "db", "upgrade", "--db", str(tmp_path / "v.db")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stderr.splitlines()
    assert "INFO alembic.runtime.migration: Running upgrade  -> 0001, snapshot tables" in lines
    assert not [line for line in lines if "Context impl" in line or "Will assume" in line]


def test_prune_lists_runs_as_spans_and_pairs(run_cli, tmp_path):
    path = tmp_path / "history.db"
    snapshots(path, 5)
    pair = run_cli("db", "prune", "--db", str(path), "--keep", "3", "--dry-run")
    assert pair.exit_code == 0, pair.output
    assert pair.stdout.splitlines()[:3] == [
        "dry run, nothing was changed: a prune would remove",
        "  runs deleted      1, 2",
        "  runs kept         3-5",
    ]
    done = run_cli("db", "prune", "--db", str(path), "--keep", "1")
    assert done.exit_code == 0, done.output
    assert done.stdout.splitlines()[:5] == [
        "pruned: removed",
        "  runs deleted      1-4",
        "  runs kept         5",
        "  running, skipped  none",
        "  marked failed     none",
    ]
    assert "database size" not in done.stdout
    again = run_cli("db", "prune", "--db", str(path), "--keep", "1", "--vacuum")
    assert again.exit_code == 0, again.output
    assert again.stdout.splitlines()[:2] == [
        "nothing to prune (vacuumed): no run matched",
        "  runs deleted      none",
    ]


def test_check_help_shows_the_run_and_baseline_defaults(run_cli):
    help_text = " ".join(run_cli("check", "--help").stdout.split())
    assert "Run to check. [default: latest]" in help_text
    assert "Complete run that decides which findings are new. [default: previous]" in help_text


def test_report_writes_the_default_file_says_each_export_and_prints_the_path(run_cli, tmp_path):
    snapshots(tmp_path / "history.db", 2)
    result = run_cli("report", "--db", "history.db", "--export-dir", "ex")
    assert result.exit_code == 0, result.output
    assert result.stdout == "auditor-report-run2.html\n"
    size = (tmp_path / "auditor-report-run2.html").stat().st_size
    assert result.stderr.splitlines() == [
        "exported ex/findings.csv",
        "exported ex/findings.json",
        "exported ex/diff.json",
        f"run 2: 7 findings (0 new), 0 catalog changes, {size:,} bytes",
    ]


def test_report_max_rows_defaults_to_500_and_refuses_0(run_cli, tmp_path):
    help_text = " ".join(run_cli("report", "--help").stdout.split())
    assert "[default: 500; x>=1]" in help_text
    result = run_cli("report", "--max-rows", "0")
    assert result.exit_code == 2
    assert (
        result.stderr.splitlines()[-1] == "Error: Invalid value for '--max-rows': 0 is not in the range x>=1."
    )
    assert list(tmp_path.iterdir()) == []


def test_diff_threshold_defaults_to_0_05_and_must_be_a_fraction(run_cli, db):
    help_text = " ".join(run_cli("diff", "--help").stdout.split())
    assert "Report attribute confidence changes only beyond this. [default: 0.05; 0<=x<=1]" in help_text
    result = run_cli("diff", "--db", db, "--threshold", "1.5")
    assert result.exit_code == 2
    assert result.stderr.splitlines()[-1] == (
        "Error: Invalid value for '--threshold': 1.5 is not in the range 0<=x<=1."
    )


def test_a_run_diffed_with_itself_is_not_said_to_read_backwards(run_cli, db):
    result = run_cli("diff", "--db", db, "--from", "1", "--to", "1")
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("Diff of run 1 -> run 1 (confidence threshold 0.05)\n")
    assert result.stderr == (
        "run 1 -> run 1: 0 cluster changes, 0 column changes, 0 new and 0 resolved findings\n"
    )


INCOMPLETE = (
    "run 2 is running, not complete: these findings cover only the clusters and columns it holds; "
    "what it lacks was not checked"
)
SUMMARY_2 = (
    "run 2: 4 findings (1 high, 3 medium); 0 new, 4 existing, 0 waived, 0 waiver expired; "
    "16 rules, baseline run 1"
)


def test_a_table_written_to_a_file_leaves_its_notes_and_summary_on_stderr(run_cli, tmp_path):
    engine = open_database(tmp_path / "history.db")
    write_snapshot(engine, CATALOG)
    write_snapshot(engine, CATALOG[:1], status="running")
    engine.dispose()
    args = ("check", "--db", "history.db", "--allow-incomplete")
    shown = run_cli(*args)
    assert shown.exit_code == 0
    assert shown.stdout.splitlines()[-2:] == [f"warning: {INCOMPLETE}", SUMMARY_2]
    assert shown.stderr == ""
    written = run_cli(*args, "-o", "out.txt")
    assert (written.exit_code, written.stdout) == (0, "")
    assert written.stderr == f"warning: {INCOMPLETE}\n{SUMMARY_2}\n"
    assert (tmp_path / "out.txt").read_text(encoding="utf-8").splitlines()[-1] == SUMMARY_2


@pytest.fixture
def one_disabled(tmp_path) -> Path:
    """A rule folder: the built-in clusters.yaml with pii-cluster-low-severity disabled."""
    from auditor.paths import rules_dir

    text = (rules_dir() / "clusters.yaml").read_text(encoding="utf-8")
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "clusters.yaml").write_text(
        text.replace(
            "    severity: medium\n    scope: cluster\n",
            "    enabled: false\n    severity: medium\n    scope: cluster\n",
            1,
        ),
        encoding="utf-8",
    )
    return folder


def test_validate_warns_of_a_waiver_for_a_disabled_rule(run_cli, one_disabled, tmp_path):
    (tmp_path / "w.yaml").write_text(
        "waivers:\n  - {rule: pii-cluster-low-severity, cluster: c-x, reason: r, owner: o,\n"
        "     expires: 2099-01-01}\n",
        encoding="utf-8",
    )
    result = run_cli("rules", "validate", "mine", "--waivers", "w.yaml")
    assert result.exit_code == 0
    assert result.stdout == "5 rules valid in 1 file (1 of them disabled)\n1 waiver valid in w.yaml\n"
    assert result.stderr == (
        "warning: w.yaml:2: rule 'pii-cluster-low-severity' is disabled (enabled: false): "
        "the waiver has nothing to waive\n"
    )


def test_rules_list_shows_disabled_rules_last(run_cli, one_disabled):
    text = run_cli("rules", "list", "mine")
    assert text.exit_code == 0
    assert (
        text.stdout.splitlines()[-1]
        == "pii-cluster-low-severity  [disabled]  Cluster labelled PII has Low severity"
    )
    assert text.stdout.count("pii-cluster-low-severity") == 1
    listed = json.loads(run_cli("rules", "list", "mine", "--format", "json").stdout)["rules"]
    assert len(listed) == 5
    assert (listed[-1]["id"], listed[-1]["enabled"]) == ("pii-cluster-low-severity", False)


def test_rules_test_exits_1_when_a_case_fails(run_cli, tmp_path):
    from auditor.paths import rules_dir

    folder = tmp_path / "t"
    folder.mkdir()
    (folder / "clusters.yaml").write_text((rules_dir() / "clusters.yaml").read_text(encoding="utf-8"))
    (folder / "clusters.test.yaml").write_text(
        "cases:\n  - name: wrong\n    rules: [pii-cluster-low-severity]\n    clusters:\n"
        "      - {id: c1, name: Metrics, labels: [Analytics], severity: Low}\n"
        "    expect:\n      - {rule: pii-cluster-low-severity, cluster: c1}\n",
        encoding="utf-8",
    )
    result = run_cli("rules", "test", "t")
    assert result.exit_code == 1
    assert result.stdout == (
        "FAIL t/clusters.test.yaml:2: wrong\n"
        "     missing:    pii-cluster-low-severity on cluster c1\n"
        "1 case in 1 file: 0 passed, 1 failed\n"
    )


def test_the_rollback_journal_beside_the_database_is_not_an_output(run_cli, db):
    result = run_cli("check", "--db", db, "-o", f"{db}-journal")
    assert result.exit_code == 2
    assert result.stdout == ""
    assert result.stderr == (
        f"error: --output {db}-journal is a file SQLite keeps beside the database (--db): writing it "
        "would lose the output, or damage it\nhint: give --output another file\n"
    )
    assert not Path(f"{db}-journal").exists()


def test_an_output_in_a_missing_folder_is_refused_before_the_check(run_cli, db, tmp_path):
    result = run_cli("check", "--db", db, "-o", "nodir/x.json")
    assert result.exit_code == 3
    assert result.stdout == ""
    assert result.stderr == (
        f"error: cannot write nodir/x.json: the folder {tmp_path / 'nodir'} does not exist\n"
        "hint: nothing was done yet: give --output a file you can write\n"
    )
    # a file where a folder should be: named (both said "No such file or directory")
    (tmp_path / "afile").write_text("")
    for given in ("afile/x.json", "afile/deeper/x.json"):
        result = run_cli("check", "--db", db, "-o", given)
        assert (result.exit_code, result.stderr.splitlines()[0]) == (
            3,
            f"error: cannot write {given}: {tmp_path / 'afile'} is a file, not a folder",
        )


def test_a_new_only_gate_says_nothing_about_new_only_having_no_effect(run_cli, db):
    result = run_cli(
        "check", "--db", db, "--fail-on", "low", "--new-only", "--baseline", "none", "--format", "json"
    )
    assert result.exit_code == 1
    assert result.stderr.splitlines() == [
        "run 1: 7 findings (2 high, 3 medium, 2 low); 7 new, 0 existing, 0 waived, 0 waiver expired; "
        "16 rules, no baseline",
        "gate failed: 7 new finding(s) at or above low",
    ]


def test_a_yml_rule_file_inside_a_rules_folder_is_not_an_output(run_cli, db, tmp_path):
    from auditor.paths import rules_dir

    folder = tmp_path / "mine"
    folder.mkdir()
    text = (rules_dir() / "clusters.yaml").read_text(encoding="utf-8")
    (folder / "clusters.yml").write_text(text, encoding="utf-8")
    result = run_cli("check", "--db", db, "--rules", "mine", "-o", "mine/clusters.yml")
    assert result.exit_code == 2
    assert result.stderr == (
        "error: --output mine/clusters.yml is a file inside the folder this command reads as --rules: "
        "writing it would destroy it\nhint: give --output another file\n"
    )
    assert (folder / "clusters.yml").read_text(encoding="utf-8") == text


def assert_output_refused(run_cli, db, folder: Path, args: list[str], why: str) -> None:
    """``args`` (the output option and its file last) exits 2 saying ``why``, and changes no file
    in ``folder``."""
    before = {p: p.read_bytes() for p in folder.rglob("*") if p.is_file() and p.suffix != ".db"}
    option, written = args[-2:]
    result = run_cli(*args[:-2], "--db", db, option, written)
    assert result.exit_code == 2, result.output
    shown = "--output" if option == "-o" else option
    assert result.stderr == f"error: {shown} {written} {why}\nhint: give {shown} another file\n"
    assert {p: p.read_bytes() for p in folder.rglob("*") if p.is_file() and p.suffix != ".db"} == before


@pytest.mark.parametrize(
    ("settings", "args", "why"),
    [
        (
            None,
            ["report", "--templates", "t", "-o", "t/report.html.j2"],
            "is a template in the folder this command reads as --templates",
        ),
        # a new file named like a template would be read as one by the next report
        (
            None,
            ["diff", "--format", "html", "--templates", "t", "-o", "t/report.css"],
            "is a template in the folder this command reads as --templates",
        ),
        (
            'templates = "t"',
            ["email", "--to", "a@example.com", "--eml", "t/_macros.html.j2"],
            "is a template in the folder this command reads as templates (auditor.toml)",
        ),
        (
            "",
            ["check", "--format", "json", "-o", "auditor.toml"],
            "is the file this command reads as the settings file: writing it would destroy it",
        ),
        (
            'token_file = "key.txt"',
            ["check", "-o", "key.txt"],
            "is the file this command reads as token_file (auditor.toml): writing it would destroy it",
        ),
        (
            None,
            ["run", "--token-file", "key.txt", "--report", "key.txt"],
            "is the file this command reads as --token-file: writing it would destroy it",
        ),
        (
            None,
            ["email", "--to", "a@example.com", "--smtp-ca-bundle", "ca.pem", "--eml", "ca.pem"],
            "is the file this command reads as --smtp-ca-bundle: writing it would destroy it",
        ),
    ],
)
def test_outputs_over_the_settings_templates_or_key_file_are_refused(
    run_cli, db, tmp_path, settings, args, why
):
    """Found by a probe: -o auditor.toml, --report over the API key's file, and -o over a template
    replaced them (exit 0)."""
    (tmp_path / "t").mkdir()
    (tmp_path / "t" / "report.html.j2").write_text("{% extends 'report.html.j2' %}", encoding="utf-8")
    (tmp_path / "key.txt").write_text("SAMPLE-KEY\n", encoding="utf-8")
    (tmp_path / "ca.pem").write_text("not a certificate\n", encoding="utf-8")
    if settings is not None:
        (tmp_path / "auditor.toml").write_text(f"[auditor]\n{settings}\n", encoding="utf-8")
    assert_output_refused(run_cli, db, tmp_path, args, why)


@pytest.mark.parametrize(
    ("settings", "args", "why"),
    [
        (
            None,
            ["clusters", "--url", "http://127.0.0.1:9", "--token-file", "key.txt", "-o", "key.txt"],
            "is the file this command reads as --token-file: writing it would destroy it",
        ),
        (
            'token_file = "key.txt"',
            ["columns", "c1", "--url", "http://127.0.0.1:9", "--format", "json", "-o", "key.txt"],
            "is the file this command reads as token_file (auditor.toml): writing it would destroy it",
        ),
        (
            None,
            ["clusters", "--url", "http://127.0.0.1:9", "--ca-bundle", "ca.pem", "-o", "ca.pem"],
            "is the file this command reads as --ca-bundle: writing it would destroy it",
        ),
        (
            "",
            ["clusters", "--url", "http://127.0.0.1:9", "--token-file", "key.txt", "-o", "auditor.toml"],
            "is the file this command reads as the settings file: writing it would destroy it",
        ),
        (
            "",
            ["rules", "schema", "-o", "auditor.toml"],
            "is the file this command reads as the settings file: writing it would destroy it",
        ),
        (
            None,
            ["clusters", "--url", "http://127.0.0.1:9", "--token-file", "key.txt", "-o", "auditor.db"],
            "is the database (--db, AUDITOR_DB or the settings file's db): writing it would destroy the runs "
            "it holds",
        ),
    ],
)
def test_commands_without_a_database_keep_off_their_inputs_too(run_cli, tmp_path, settings, args, why):
    """Found by a README walkthrough: ``clusters --token-file key -o key`` replaced the API key with
    the cluster table (exit 0), as did ``columns`` and ``--ca-bundle``, and ``rules schema -o`` the
    settings file. Refused before the key is read or the tenant (here, nothing listens) is asked."""
    (tmp_path / "key.txt").write_text("SAMPLE-KEY\n", encoding="utf-8")
    (tmp_path / "ca.pem").write_text("not a certificate\n", encoding="utf-8")
    (tmp_path / "auditor.db").write_bytes(b"SQLite format 3\0")
    if settings is not None:
        (tmp_path / "auditor.toml").write_text(f"[auditor]\n{settings}\n", encoding="utf-8")
    before = {p: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()}
    result = run_cli(*args)
    assert result.exit_code == 2, result.output
    assert result.stderr == f"error: --output {args[-1]} {why}\nhint: give --output another file\n"
    assert {p: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()} == before


def test_a_command_without_a_database_is_not_stopped_by_a_bad_database_url(run_cli, tmp_path):
    result = run_cli("rules", "schema", "-o", "s.json", env={"AUDITOR_DB": "postgresql://u@h:port/d"})
    assert (result.exit_code, result.stderr) == (0, "")
    assert json.loads((tmp_path / "s.json").read_text(encoding="utf-8"))["type"] == "object"


def test_email_to_an_eml_file_prints_its_path(run_cli, db, tmp_path):
    result = run_cli("email", "--db", db, "--to", "a@example.com", "--eml", "out.eml")
    assert result.exit_code == 0, result.output
    assert result.stdout == "out.eml\n"
    assert result.stderr == "run 1: message for a@example.com written\n"
    assert "a@example.com" in (tmp_path / "out.eml").read_text(encoding="utf-8")


def test_diff_json_keeps_non_ascii_catalog_text_as_is(run_cli, tmp_path):
    engine = open_database(tmp_path / "history.db")
    write_snapshot(engine, CATALOG)
    renamed = [dict(c) for c in CATALOG]
    renamed[0] = {**renamed[0], "name": "Paie Café"}
    write_snapshot(engine, renamed)
    engine.dispose()
    result = run_cli("diff", "--db", "history.db", "--format", "json", "--no-findings")
    assert result.exit_code == 0, result.output
    assert "Paie Café" in result.stdout
    assert "\\u00e9" not in result.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ("--to", "a@example.com", "--eml", "x.eml", "--smtp", "smtp://127.0.0.1"),
            "error: give either --smtp URL or --eml FILE, not both\n",
        ),
        (("--eml", "x.eml"), "error: no recipient: pass --to ADDR (or set email_to in auditor.toml)\n"),
    ],
)
def test_email_route_errors_exit_2_before_any_work(run_cli, db, tmp_path, args, message):
    result = run_cli("email", "--db", db, *args)
    assert (result.exit_code, result.stdout, result.stderr) == (2, "", message)
    assert not (tmp_path / "x.eml").exists()


# -- "-" is standard output for the files report and email write (a file named "-" was written) ---------


def test_report_output_dash_writes_the_html_to_standard_output(run_cli, tmp_path):
    snapshots(tmp_path / "history.db", 2)
    result = run_cli("report", "--db", "history.db", "-o", "-", "--export-dir", "ex")
    assert result.exit_code == 0, result.output
    html = result.stdout_bytes  # the file's bytes, as -o FILE writes them
    assert html.startswith(b"<!DOCTYPE html>") and html.endswith(b"</html>\n")
    assert result.stderr.splitlines() == [
        "exported ex/findings.csv",
        "exported ex/findings.json",
        "exported ex/diff.json",
        f"run 2: 7 findings (0 new), 0 catalog changes, {len(html):,} bytes",
    ]
    assert sorted(path.name for path in tmp_path.iterdir()) == ["ex", "history.db"]  # no "-", no default


def test_email_eml_dash_writes_the_message_to_standard_output(run_cli, db, tmp_path):
    import email
    import email.policy

    result = run_cli("email", "--db", db, "--to", "a@example.com", "--eml", "-")
    assert result.exit_code == 0, result.output
    message = email.message_from_bytes(result.stdout_bytes, policy=email.policy.default)
    assert message["To"] == "a@example.com"
    assert message.get_content_type() == "multipart/alternative"  # (no attachment asked for)
    lines = result.stdout_bytes.split(b"\r\n")
    assert len(lines) > 20 and not [line for line in lines if b"\n" in line]  # every line ends CRLF
    assert result.stderr == "run 1: message for a@example.com written\n"
    assert not (tmp_path / "-").exists()


@pytest.mark.parametrize("option", ["--report", "--eml"])
def test_run_refuses_dash_for_its_report_and_email(run_cli, tmp_path, option):
    result = run_cli("run", option, "-", "--email-to", "a@example.com")
    assert result.exit_code == 2
    assert result.stderr.splitlines() == [
        f"error: {option} -: auditor run prints its results on standard output",
        f"hint: give {option} a file name (auditor report -o - and auditor email --eml - write to standard "
        "output)",
    ]
    assert list(tmp_path.iterdir()) == []  # refused before any work


@pytest.mark.parametrize(
    ("args", "why"),
    [
        # Found by a path probe: an output that is a link to a rule file or a template replaced the
        # file the link leads to (exit 0): only the written name was looked at
        (
            ["check", "--rules", "myr", "--format", "csv", "-o", "rl.csv"],
            "is a file inside the folder this command reads as --rules: writing it would destroy it",
        ),
        (
            ["report", "--templates", "tpl", "-o", "tl.html"],
            "is a template in the folder this command reads as --templates",
        ),
        # a template in the folder that is itself a link (here to a template elsewhere)
        (
            ["report", "--templates", "tpl", "-o", "tpl/report.html.j2"],
            "is a template in the folder this command reads as --templates",
        ),
    ],
)
def test_an_output_reaching_a_rule_file_or_a_template_through_a_link_is_refused(
    run_cli, db, tmp_path, args, why
):
    from auditor.paths import reports_dir, rules_dir

    (tmp_path / "myr").mkdir()
    (tmp_path / "myr" / "clusters.yaml").write_text(
        (rules_dir() / "clusters.yaml").read_text(encoding="utf-8")
    )
    (tmp_path / "tpl").mkdir()
    (tmp_path / "tpl" / "report.css").write_text("body {}\n", encoding="utf-8")
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "report.html.j2").write_text(
        (reports_dir() / "report.html.j2").read_text(encoding="utf-8")
    )
    (tmp_path / "tpl" / "report.html.j2").symlink_to(tmp_path / "elsewhere" / "report.html.j2")
    (tmp_path / "rl.csv").symlink_to(tmp_path / "myr" / "clusters.yaml")
    (tmp_path / "tl.html").symlink_to(tmp_path / "tpl" / "report.css")
    assert_output_refused(run_cli, db, tmp_path, args, why)


def test_the_built_in_rules_and_templates_are_inputs_of_every_command(tmp_path, monkeypatch):
    # Found by a path probe: 'report -o …/reports/report.html.j2' (and check -o over a built-in rule
    # file) replaced the installed pack's own file, exit 0; every later report rendered the page.
    # Checked through the guard itself: a failure here must not damage the installed package.
    from auditor.cli.common import Settings
    from auditor.errors import ConfigError
    from auditor.paths import reports_dir, rules_dir

    monkeypatch.chdir(tmp_path)
    settings = Settings.load(None, debug=False, verbose=False, quiet=True)
    for written, why in (
        (
            reports_dir() / "report.html.j2",
            "is a template in the folder this command reads as templates (built in)",
        ),
        (
            rules_dir() / "clusters.yaml",
            "is a file inside the folder this command reads as the built-in rules: writing it would "
            "destroy it",
        ),
    ):
        with pytest.raises(ConfigError) as caught:
            settings.guard_outputs(None, {"--output": str(written)}, {})
        assert caught.value.message == f"--output {written} {why}"


def test_a_loop_of_links_or_an_unknown_home_folder_is_a_usage_error_not_an_internal_one(
    run_cli, db, tmp_path
):
    # Found by a path probe: Path.resolve's "Symlink loop" and expanduser's "Could not determine
    # home directory" were internal errors (exit 3, "report it")
    (tmp_path / "loopA").symlink_to(tmp_path / "loopB")
    (tmp_path / "loopB").symlink_to(tmp_path / "loopA")
    result = run_cli("check", "--db", "loopA")
    assert result.exit_code == 2
    assert result.stderr.endswith("' leads into a loop of symbolic links\nhint: fix or remove the link\n")
    assert result.stderr.startswith(f"error: the path '{tmp_path / 'loop'}")  # (which of the two: Python's)
    result = run_cli("check", "--db", db, "-o", "~no-such-user-here/c.csv")
    assert result.exit_code == 2
    assert result.stderr == (
        "error: a path given starts with ~ or ~user, and that home folder is not known here\n"
        "hint: write the path in full (or set HOME)\n"
    )


def test_a_tilde_in_any_path_option_is_the_home_folder_and_a_trailing_slash_names_a_folder(
    run_cli, db, tmp_path
):
    # Found by a path probe: '--export-dir=~/e' (no shell expands a ~ after '=') made a folder
    # named '~' in the working folder, and '-o newdir/' wrote the file 'newdir', exit 0 both
    home = tmp_path / "home"
    home.mkdir()
    result = run_cli("report", "--db", db, "--export-dir=~/e", "-o", "~/r.html", env={"HOME": str(home)})
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in home.iterdir()) == ["e", "r.html"]
    assert not (tmp_path / "~").exists()
    result = run_cli("report", "--db", db, "-o", "newdir/")
    assert result.exit_code == 2
    assert result.stderr.splitlines()[-1] == (
        "Error: Invalid value for '--output' / '-o': 'newdir/' names a folder (it ends with '/'); give a "
        "file name"
    )
    assert not (tmp_path / "newdir").exists()
