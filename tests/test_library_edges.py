"""The library called from Python, without the CLI's own checks in front of it.

Written from a probe that followed the docs' "From Python" sections: each test pins an argument the
library took as it was (and failed on later, or not at all), or an error that said too little.
"""

from __future__ import annotations

import pytest

from auditor.bigid.client import BigIDClient, ClientOptions
from auditor.engine import check_run, load_ruleset
from auditor.errors import ConfigError, RuleError, RunNotUsableError
from auditor.pipeline import run_job
from auditor.snapshot import take_snapshot
from auditor.store.db import open_database
from auditor.store.runs import list_runs


@pytest.fixture
def engine(tmp_db):
    engine = open_database(tmp_db)
    yield engine
    engine.dispose()


def client_for(server, **options) -> BigIDClient:
    return BigIDClient(ClientOptions(url=server.url, token=server.key, **options))


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"connect_timeout": -1}, "ClientOptions.connect_timeout must be more than 0, got -1"),
        ({"read_timeout": 0}, "ClientOptions.read_timeout must be more than 0, got 0"),
        ({"read_timeout": float("nan")}, "ClientOptions.read_timeout must be more than 0, got nan"),
        ({"answer_timeout": 0}, "ClientOptions.answer_timeout must be more than 0, got 0"),
        ({"workers": 0}, "ClientOptions.workers must be at least 1, got 0"),
        ({"max_retries": -1}, "ClientOptions.max_retries must be at least 0, got -1"),
        ({"max_pages": 0}, "ClientOptions.max_pages must be at least 1, got 0"),
        ({"max_answer_bytes": 0}, "ClientOptions.max_answer_bytes must be at least 1, got 0"),
        ({"backoff_cap": -0.5}, "ClientOptions.backoff_cap must be at least 0, got -0.5"),
    ],
)
def test_client_options_out_of_range_are_refused_before_any_request(sandbox, options, message):
    # A negative timeout started a snapshot that failed with requests' "Invalid timeout", leaving a
    # failed run; a negative retry or worker count was taken as it was.
    server = sandbox(clusters=2, columns=10)
    with pytest.raises(ConfigError) as caught:
        client_for(server, **options)
    assert caught.value.message == message
    assert server.stats.total == 0


def test_the_smallest_client_options_allowed_still_fetch(sandbox, engine):
    server = sandbox(clusters=2, columns=10)
    with client_for(server, max_retries=0, workers=1, backoff_base=0, max_retry_time=0) as client:
        run = take_snapshot(engine, client, processes=0)
    assert (run.status, run.columns_stored) == ("complete", 10)


def test_skip_clusters_given_one_string_is_refused_not_read_as_its_characters(sandbox, engine):
    server = sandbox(clusters=2, columns=10)
    with client_for(server) as client, pytest.raises(TypeError) as caught:
        take_snapshot(engine, client, skip_clusters="abc")
    assert str(caught.value) == "skip_clusters takes a collection of cluster ids, not one string"
    assert list_runs(engine) == []


@pytest.mark.parametrize(
    ("arguments", "error", "message"),
    [
        ({"fail_on": "severe"}, ConfigError, "fail_on 'severe' is not a severity"),
        ({"baseline": "prev"}, ConfigError, "--baseline 'prev' is not 'previous', 'none' or a run id"),
        ({"baseline": 9}, RunNotUsableError, "baseline run 9 does not exist"),
    ],
)
def test_run_job_checks_its_gate_and_baseline_before_the_snapshot(
    sandbox, engine, tmp_path, arguments, error, message
):
    # The snapshot (an hour on a large tenant) was taken, stored and reported before these failed.
    server = sandbox(clusters=2, columns=10)
    with client_for(server) as client, pytest.raises(error) as caught:
        run_job(
            engine,
            client,
            ruleset=load_ruleset(None),
            processes=0,
            report_path=tmp_path / "r.html",
            **arguments,
        )
    assert caught.value.message.startswith(message)
    assert list_runs(engine) == [] and server.stats.total == 0
    assert not (tmp_path / "r.html").exists()


def test_run_job_checks_the_rules_sqlite_module_before_the_snapshot(sandbox, engine, tmp_path, monkeypatch):
    # A wrong AUDITOR_RULES_SQLITE was said where worker processes start: after the snapshot.
    monkeypatch.setenv("AUDITOR_RULES_SQLITE", "apsw")
    server = sandbox(clusters=2, columns=10)
    with client_for(server) as client, pytest.raises(ConfigError) as caught:
        run_job(engine, client, ruleset=load_ruleset(None), processes=0, report_path=tmp_path / "r.html")
    assert caught.value.message == (
        "AUDITOR_RULES_SQLITE='apsw' is not a SQLite module this tool can evaluate rules with"
    )
    assert list_runs(engine) == [] and server.stats.total == 0


def test_the_cli_run_refuses_a_misspelt_baseline_before_fetching(run_cli, tmp_path):
    (tmp_path / "auditor.toml").write_text(
        "[auditor.sandbox]\nclusters = 3\ncolumns = 30\n", encoding="utf-8"
    )
    result = run_cli("run", "--baseline", "prev", "-q")
    assert result.exit_code == 2
    assert result.stderr.splitlines()[0] == "error: --baseline 'prev' is not 'previous', 'none' or a run id"
    assert not (tmp_path / "auditor.db").exists() or list_runs(open_database(tmp_path / "auditor.db")) == []


def test_check_run_takes_none_for_the_builtin_pack(sandbox, engine):
    server = sandbox(clusters=3, columns=30)
    with client_for(server) as client:
        take_snapshot(engine, client, processes=0)
    by_none = check_run(engine, "latest", None, store=False)
    by_pack = check_run(engine, "latest", load_ruleset(None), store=False)
    assert by_none.findings and [f.fingerprint for f in by_none.findings] == [
        f.fingerprint for f in by_pack.findings
    ]
    assert len(by_none.rules) == 16


def test_a_rule_error_shows_its_problems_as_text(tmp_path):
    # str() said "1 problem in the rule files" and no more: a traceback from Python hid the cause.
    with pytest.raises(RuleError) as caught:
        load_ruleset(tmp_path / "missing.yaml")
    assert caught.value.message == "1 problem in the rule files"
    assert (
        str(caught.value)
        == f"1 problem in the rule files\n  {tmp_path / 'missing.yaml'}:1:1: no such file or folder"
    )


@pytest.mark.parametrize("paths", ["", "  ", ["rules", ""]])
def test_an_empty_rule_path_is_refused_not_read_as_the_current_folder(tmp_path, monkeypatch, paths):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "unrelated.yaml").write_text("name: not a rule file\n", encoding="utf-8")
    with pytest.raises(RuleError) as caught:
        load_ruleset(paths)
    assert caught.value.message == "an empty rule path"


@pytest.mark.parametrize("target", ["", "   "])
def test_an_empty_database_target_is_refused_not_opened_as_the_default(tmp_path, monkeypatch, target):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as caught:
        open_database(target)
    assert caught.value.message == "--db: the database path or URL is empty"
    assert not (tmp_path / "auditor.db").exists()


def test_a_settings_error_shows_its_problems_as_text_too(tmp_path):
    from auditor.config import load_config

    path = tmp_path / "auditor.toml"
    path.write_text("[auditor]\nworkres = 4\nfail_onn = 'high'\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path, explicit=True)
    assert str(caught.value) == (
        f"{path}: 2 problems in the settings\n  {path}:2: unknown setting workres (did you mean workers?)\n"
        f"  {path}:3: unknown setting fail_onn (did you mean fail_on?)"
    )


DISABLED_RULE = """\
rules:
  - id: off-rule
    title: A rule switched off
    description: A rule switched off.
    severity: high
    scope: column
    enabled: false
    condition: {field: columnName, eq: x}
    message: "{column.fullyQualifiedName}"
    remediation: none
"""


@pytest.fixture
def checked_run(sandbox, engine):
    server = sandbox(clusters=3, columns=30)
    with client_for(server) as client:
        take_snapshot(engine, client, processes=0)
        take_snapshot(engine, client, processes=0)
    return engine


def test_every_library_entry_point_refuses_a_rule_set_whose_every_rule_is_disabled(checked_run, tmp_path):
    # Found by a probe: only the CLI refused it; check_run(...).gate("low") passed with 0 findings.
    from auditor.diff import compute_diff
    from auditor.render.report import build_report_bundle

    (tmp_path / "off.yaml").write_text(DISABLED_RULE, encoding="utf-8")
    off = load_ruleset(tmp_path / "off.yaml")
    assert (off.rules, [r.id for r in off.disabled]) == ((), ["off-rule"])
    calls = {
        "check_run": lambda rs: check_run(checked_run, "latest", rs, store=False),
        "compute_diff": lambda rs: compute_diff(checked_run, ruleset=rs),
        "build_report_bundle": lambda rs: build_report_bundle(checked_run, "latest", ruleset=rs),
    }
    for name, call in calls.items():
        for given in (off, tmp_path / "off.yaml", [str(tmp_path / "off.yaml")]):
            with pytest.raises(RuleError) as caught:
                call(given)
            assert caught.value.message == (
                "every rule in the given files is disabled (1 rule with enabled: false)"
            ), name


def test_check_run_and_compute_diff_load_rule_paths_as_load_ruleset_does(checked_run):
    from auditor.diff import compute_diff
    from auditor.paths import rules_dir

    by_path = check_run(checked_run, "latest", rules_dir(), store=False)
    by_set = check_run(checked_run, "latest", load_ruleset(None), store=False)
    assert by_path.findings and [f.fingerprint for f in by_path.findings] == [
        f.fingerprint for f in by_set.findings
    ]
    assert compute_diff(checked_run, ruleset=str(rules_dir())).to_json()["from_run"] == 1


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (
            lambda e: check_run(e, "latest", 42, store=False),
            "ruleset: expected a RuleSet (what auditor.engine.load_ruleset returns), rule files or "
            "folders, or None for the built-in pack, not int",
        ),
        (
            lambda e: __import__("auditor.engine", fromlist=["evaluate"]).evaluate(e, 2, None),
            "ruleset: expected a RuleSet (what auditor.engine.load_ruleset returns), not NoneType",
        ),
        (
            lambda e: __import__("auditor.render.report", fromlist=["x"]).build_report_bundle(e, 2, diff="x"),
            "diff: expected a DiffResult or its JSON, not str",
        ),
        (
            lambda e: __import__("auditor.render.report", fromlist=["x"]).build_report_bundle(e, 2, check=7),
            "check: expected a CheckResult (what auditor.engine.check_run returns) or its JSON, not int",
        ),
    ],
)
def test_a_wrong_kind_of_argument_is_a_type_error_naming_what_is_expected(checked_run, call, message):
    # They were AttributeErrors from deep inside ('str' object has no attribute 'digest').
    with pytest.raises(TypeError) as caught:
        call(checked_run)
    assert str(caught.value) == message


def test_a_check_given_to_the_report_must_be_a_check(checked_run):
    # {'a': 1} was taken for a check without findings: the report said the run had none.
    from auditor.render.report import build_report_bundle

    with pytest.raises(ConfigError) as caught:
        build_report_bundle(checked_run, 2, check={"a": 1})
    assert (
        caught.value.message == "the check result given holds no list of findings: it is not a check's JSON"
    )


@pytest.mark.parametrize(
    ("email", "message"),
    [
        ({"to": [], "eml_path": "x.eml"}, "--to: at least one recipient is required"),
        ({"to": ["audit@example.org"]}, "give exactly one of --smtp URL or --eml FILE"),
        (
            {"to": ["audit@example.org"], "eml_path": "x.eml", "smtp_url": "smtp://127.0.0.1:1"},
            "give exactly one of --smtp URL or --eml FILE",
        ),
    ],
)
def test_run_job_checks_its_rules_and_email_before_the_snapshot(sandbox, engine, tmp_path, email, message):
    # The snapshot, the check and the report were done (and stored) before the email settings failed.
    from auditor.pipeline import EmailOptions

    server = sandbox(clusters=2, columns=10)
    (tmp_path / "off.yaml").write_text(DISABLED_RULE, encoding="utf-8")
    with client_for(server) as client:
        for ruleset, options, error, said in (
            (load_ruleset(None), EmailOptions(**email), ConfigError, message),
            (
                tmp_path / "off.yaml",
                None,
                RuleError,
                "every rule in the given files is disabled (1 rule with enabled: false)",
            ),
        ):
            with pytest.raises(error) as caught:
                run_job(
                    engine,
                    client,
                    ruleset=ruleset,
                    email=options,
                    processes=0,
                    report_path=tmp_path / "r.html",
                )
            assert caught.value.message.startswith(said)
    assert list_runs(engine) == [] and server.stats.total == 0
    assert not (tmp_path / "r.html").exists()


@pytest.mark.parametrize(
    ("arguments", "message"),
    [({"limit": -1}, "limit must be at least 0, not -1"), ({"skip": -5}, "skip must be at least 0, not -5")],
)
def test_a_negative_page_of_columns_is_refused_before_any_request(sandbox, arguments, message):
    # The tenant's 400 about the limit was said as "the API says cluster id ... is malformed".
    server = sandbox(clusters=2, columns=10)
    with client_for(server) as client, pytest.raises(ValueError) as caught:
        client.get_columns("any", **arguments)
    assert str(caught.value) == message
    assert server.stats.total == 0


def test_a_closed_client_says_it_was_closed(sandbox, engine):
    # "GET /api/v1/clusters: cancelled" with no hint: nothing had been cancelled
    from auditor.errors import NetworkError

    server = sandbox(clusters=2, columns=10)
    client = client_for(server)
    client.close()
    with pytest.raises(NetworkError) as caught:
        client.list_clusters()
    assert caught.value.message == "GET /api/v1/clusters: this BigIDClient was closed"
    assert caught.value.hint.startswith("make a new one for more requests")
    assert server.stats.total == 0


def test_open_database_refuses_what_is_no_database(tmp_path, monkeypatch):
    from auditor.errors import StoreError

    monkeypatch.chdir(tmp_path)
    with pytest.raises(TypeError) as caught:
        open_database(5)  # made a file named '5'
    assert str(caught.value) == "the database: expected a path or a URL, not int"
    # migrate=False on a missing file: SQLite created an empty one, and the first query failed on
    # a missing table with the hint to check that the database is writable
    with pytest.raises(StoreError) as missing:
        open_database(tmp_path / "missing.db", migrate=False)
    assert missing.value.message == f"there is no database at {tmp_path / 'missing.db'}"
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_run_demo_into_a_file_is_a_configuration_error(tmp_path):
    from auditor.pipeline import run_demo

    (tmp_path / "a-file").write_text("x", encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        run_demo(tmp_path / "a-file", ruleset=load_ruleset(None))
    assert caught.value.message == f"cannot create the demo's folder {tmp_path / 'a-file'}: File exists"


def test_a_report_that_cannot_be_written_leaves_no_export_folders_behind(checked_run, tmp_path):
    # Only the deepest of the export folders it had created was removed again.
    from auditor.errors import DeliveryError
    from auditor.render.report import write_report

    with pytest.raises(DeliveryError):
        write_report(
            checked_run, 2, output=tmp_path / "missing" / "r.html", export_dir=tmp_path / "new" / "a" / "b"
        )
    assert not (tmp_path / "new").exists()


def test_parse_column_names_the_record_s_own_field_not_a_list_of_one():
    # "1 validation error for list[Column] / 0.fullyQualifiedName": a page of one, as validated
    from pydantic import ValidationError

    from auditor.bigid.models import parse_column

    with pytest.raises(ValidationError) as caught:
        parse_column({"columnName": "ssn"})
    assert caught.value.title == "Column"
    assert [error["loc"] for error in caught.value.errors()] == [("fullyQualifiedName",)]
    # the same tolerance as a page's records: an empty string is an absent boolean
    assert parse_column({"fullyQualifiedName": "a.b", "isPrimary": ""}).isPrimary is None
