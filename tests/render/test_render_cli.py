"""``auditor report`` and ``auditor email`` end to end: real runs in a SQLite file, the real rules engine."""

from __future__ import annotations

import copy
import csv
import email
import email.policy
import hashlib
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from bs4 import BeautifulSoup
from click.testing import CliRunner

from auditor import secrets
from auditor.bigid.models import parse_cluster, parse_column
from auditor.cli.main import cli
from auditor.paths import rules_dir
from auditor.store.db import open_database
from auditor.store.writer import ClusterStats, RunTotals, SnapshotWriter

HOSTILE_NAME = '<script>window.__pwned=1</script>"><img src=x onerror=alert(1)>'
PASSWORD = "cli-Sm7p-passw0rd"


def _column(fqn: str, *, sensitivity: str | None = None) -> dict[str, Any]:
    source, _, rest = fqn.partition(".")
    return {
        "fullyQualifiedName": fqn,
        "columnName": fqn.rsplit(".", 1)[-1],
        "tableName": rest.rsplit(".", 1)[0],
        "source": source,
        "isPrimary": False,
        "dataType": "varchar",
        "tags": [{"tagId": "t1", "valueId": "v1", "tagName": "sensitivity", "tagValue": sensitivity}]
        if sensitivity
        else [],
        "attributes": [],
    }


CATALOG = [
    (
        {
            "id": "c1",
            "name": "HR",
            "size": 2,
            "labels": ["PII", "Confidential"],
            "severity": "High",
            "status": "Active",
        },
        [_column("hr.payroll.salary.ssn", sensitivity="high"), _column("hr.payroll.salary.id")],
    ),
    (
        {
            "id": "c2",
            "name": "Sales",
            "size": 1,
            "labels": ["Analytics"],
            "severity": "Low",
            "status": "Active",
        },
        [_column("dwh.sales.orders.total", sensitivity="low")],
    ),
]


def _write(engine: Any, catalog: list[tuple[dict[str, Any], list[dict[str, Any]]]]) -> int:
    writer = SnapshotWriter(engine, source_url="https://bigid.example.net/api/v1", cluster_filter=None)
    for position, (raw_cluster, columns) in enumerate(catalog):
        writer.add_cluster(parse_cluster(raw_cluster), raw_cluster, position)
        writer.add_columns(raw_cluster["id"], [(parse_column(raw), raw) for raw in columns])
        writer.finish_cluster(
            raw_cluster["id"],
            ClusterStats(total_announced=len(columns), columns_fetched=len(columns), pages=1),
        )
    writer.complete(RunTotals(clusters_announced=len(catalog), requests=len(catalog) + 1))
    return writer.run_id


@pytest.fixture
def database(tmp_path: Path) -> str:
    """Run 1 (clean), run 2 (c1 lost its Confidential label; a hostile column appeared)."""
    path = tmp_path / "auditor.db"
    engine = open_database(path)
    _write(engine, CATALOG)
    second = copy.deepcopy(CATALOG)
    second[0][0]["labels"] = ["PII"]
    second[1][1].append(_column(f"dwh.sales.orders.{HOSTILE_NAME}", sensitivity="high"))
    second[1][0]["labels"] = ["Analytics"]
    _write(engine, second)
    engine.dispose()
    return str(path)


@pytest.fixture(autouse=True)
def _forget_secrets():
    yield
    secrets.forget_all()


def invoke(*args: str, env: dict[str, str] | None = None) -> Any:
    return CliRunner().invoke(cli, list(args), env=env, catch_exceptions=False)


def test_report_writes_the_file_and_prints_its_path(database: str, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    result = invoke("report", "--db", database)
    assert result.exit_code == 0, result.stderr
    assert result.stdout == "auditor-report-run2.html\n"
    assert "run 2: " in result.stderr and "catalog changes" in result.stderr
    # the path as given: './-r.html' printed as '-r.html' reads as an option to the next command
    assert invoke("report", "--db", database, "-o", "./-r.html").stdout == "./-r.html\n"
    soup = BeautifulSoup((tmp_path / "auditor-report-run2.html").read_text(encoding="utf-8"), "html.parser")
    fields = {dd["data-field"]: " ".join(dd.get_text(" ").split()) for dd in soup.select("dl#evidence dd")}
    assert fields["run"].startswith("2 : started ")
    assert fields["against"].startswith("run 1 : started ")
    assert fields["source"] == "https://bigid.example.net/api/v1"
    assert fields["completeness"].startswith("complete : 2 of 2 clusters, 4 of ")
    builtin = sorted(
        p for p in rules_dir().glob("*.yaml") if not p.name.endswith(".test.yaml")
    )  # the files the loader reads
    for path in builtin:
        assert f"rules/{path.name} sha256:{hashlib.sha256(path.read_bytes()).hexdigest()}" in fields["rules"]
    assert fields["rules"].startswith("built-in pack: ")
    assert fields["waivers"] == "none"
    new = soup.select_one("section#new")
    rule = new.select_one('article.group[data-rule="high-sensitivity-without-confidential"]')
    assert rule is not None
    assert rule.select_one(".explain").get_text(" ").startswith("Condition: ")
    columns = sorted(td.get_text() for td in rule.select("tbody tr td:nth-of-type(3)"))
    assert columns == [f"dwh.sales.orders.{HOSTILE_NAME}", "hr.payroll.salary.ssn"]
    because = {
        row.select_one("td:nth-of-type(3)").get_text(): " ".join(
            row.select_one(".because").get_text(" ").split()
        )
        for row in rule.select("tbody tr")
    }
    # each new finding is explained by the diff's own sentence for the change behind it
    from auditor.diff import compute_diff

    engine = open_database(database)
    try:
        explained = {
            f["column"]: "; ".join(e["text"] for e in f["explanation"])
            for f in compute_diff(engine, 1, 2).to_json()["findings"]["new"]
            if f["rule"] == "high-sensitivity-without-confidential"
        }
    finally:
        engine.dispose()
    assert "Confidential" in explained["hr.payroll.salary.ssn"]
    assert because == {column: f"Because: {text}" for column, text in explained.items()}
    assert soup.select_one("section#changes-clusters")["data-total"] == "1"
    assert soup.select_one("section#changes-columns")["data-total"] == "1"
    trend = [t.get_text() for t in soup.select("#trend-chart text")]
    assert "#1" in trend and "#2" in trend
    assert len(soup.find_all("script")) == 1


def test_report_with_exports_waivers_and_rules(database: str, tmp_path: Path) -> None:
    waivers = tmp_path / "waivers.yml"
    waivers.write_text(
        "waivers:\n"
        "  - rule: high-sensitivity-without-confidential\n"
        "    cluster: c1\n"
        "    reason: moving to the confidential warehouse\n"
        "    owner: governance@example.org\n"
        "    expires: 2099-01-31\n",
        encoding="utf-8",
    )
    out = tmp_path / "r.html"
    result = invoke(
        "report", "--db", database, "--run", "2", "--against", "1", "--rules", str(rules_dir()),
        "--waivers", str(waivers), "--output", str(out), "--export-dir", str(tmp_path / "export"),
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    assert result.stdout == f"{out}\n"
    soup = BeautifulSoup(out.read_text(encoding="utf-8"), "html.parser")
    sha = hashlib.sha256(waivers.read_bytes()).hexdigest()
    assert (
        " ".join(soup.select_one('dd[data-field="waivers"]').get_text(" ").split()).replace(" ,", ",")
        == f"{waivers} sha256:{sha}, judged as of {datetime.now(UTC).date()} (UTC)"
    )
    assert soup.select_one('[data-card="waived"] .value').get_text() == "1"
    waived = soup.select_one("section#waived")
    assert "waived by governance@example.org through 2099-01-31" in waived.get_text(" ")
    with (tmp_path / "export" / "findings.csv").open(encoding="utf-8", newline="") as stream:
        rows = list(csv.DictReader(stream))
    assert sorted(r["status"] for r in rows if r["rule"] == "high-sensitivity-without-confidential") == [
        "new",
        "waived",
    ]
    diff = json.loads((tmp_path / "export" / "diff.json").read_text(encoding="utf-8"))
    assert (diff["from_run"], diff["to_run"]) == (1, 2)
    findings = json.loads((tmp_path / "export" / "findings.json").read_text(encoding="utf-8"))
    assert findings["run"] == 2 and len(findings["findings"]) == len(rows)


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (("--run", "99"), 3, "error: run 99 does not exist"),
        (("--against", "2"), 2, "error: --against 2 is the run being reported"),
        (
            ("--templates", "/nonexistent/templates"),
            2,
            "error: --templates: /nonexistent/templates is not a folder",
        ),
    ],
)
def test_report_errors_exit_with_their_code(
    database: str, tmp_path: Path, args, code: int, message: str
) -> None:
    result = invoke("report", "--db", database, "--output", str(tmp_path / "x.html"), *args)
    assert result.exit_code == code
    assert result.stderr.splitlines()[0] == message
    assert result.stdout == ""
    assert not (tmp_path / "x.html").exists()


def test_a_bad_address_from_the_config_or_environment_is_named_there(
    database: str, tmp_path: Path, monkeypatch
) -> None:
    # email_to = "not an address" in auditor.toml was reported as "--to: ...", a flag never given
    monkeypatch.chdir(tmp_path)
    config = tmp_path / "auditor.toml"
    config.write_text('[auditor]\nemail_to = ["ok@example.org", "not an address"]\n')
    args = ("email", "--db", database, "--eml", "m.eml")
    refused = invoke(*args)
    assert (refused.exit_code, refused.stderr.splitlines()[0]) == (
        2,
        f"error: {config}: email_to: 'not an address' is not an email address",
    )
    config.write_text('[auditor]\nemail_to = "ok@example.org"\nemail_from = "x y"\n')
    assert (
        invoke(*args).stderr.splitlines()[0] == f"error: {config}: email_from: 'x y' is not an email address"
    )
    monkeypatch.setenv("AUDITOR_EMAIL_FROM", "nobody")
    assert (
        invoke(*args).stderr.splitlines()[0] == "error: AUDITOR_EMAIL_FROM: 'nobody' is not an email address"
    )
    assert invoke(*args, "--from", "me@example.org", "--to", "zz").stderr.splitlines()[0] == (
        "error: --to: 'zz' is not an email address"
    )
    assert not (tmp_path / "m.eml").exists()
    # found by a probe: the server, the sender count and the CA file were named by flags never given
    monkeypatch.delenv("AUDITOR_EMAIL_FROM")
    smtp = ("email", "--db", database)
    said = {}
    for line in (
        'smtp = "smtp://127.0.0.1:99999"',
        'smtp = "http://mail.example.org"',
        'smtp = ""',
        'smtp = "smtp://127.0.0.1:2525"\nsmtp_ca_bundle = "nope.pem"',
        'smtp = "smtp://127.0.0.1:2525"\nemail_from = "a@example.org, b@example.org"',
    ):
        config.write_text(f'[auditor]\nemail_to = "ok@example.org"\n{line}\n')
        result = invoke(*smtp)
        said[line.split("\n")[-1]] = (result.exit_code, result.stderr.splitlines()[0])
    assert said == {
        'smtp = "smtp://127.0.0.1:99999"': (
            2,
            f"error: {config}: smtp: 'smtp://127.0.0.1:99999' is not a valid URL (check the host and "
            "the port)",
        ),
        'smtp = "http://mail.example.org"': (2, f"error: {config}: smtp: unsupported scheme 'http'"),
        'smtp = ""': (
            2,
            f"error: no SMTP server ({config}: smtp is empty): pass --smtp URL (or set AUDITOR_SMTP), or "
            "--eml FILE to write the message",
        ),
        'smtp_ca_bundle = "nope.pem"': (
            2,
            f"error: {config}: smtp_ca_bundle: cannot load nope.pem ([Errno 2] No such file or directory)",
        ),
        'email_from = "a@example.org, b@example.org"': (
            2,
            f"error: {config}: email_from: give exactly one sender address",
        ),
    }
    # and auditor run names its own flag
    ran = invoke("run", "--db", database, "--email-from", "a@example.org, b@example.org", "--eml", "m.eml")
    assert (ran.exit_code, ran.stderr.splitlines()[0]) == (
        2,
        "error: --email-from: give exactly one sender address",
    )


def test_email_to_eml_file(database: str, tmp_path: Path) -> None:
    target = tmp_path / "m.eml"
    result = invoke(
        "email", "--db", database, "--to", "team@example.org", "--cc", "lead@example.org",
        "--eml", str(target), "--attach-report", "--attach-csv",
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    assert result.stdout == f"{target}\n"
    message = email.message_from_bytes(target.read_bytes(), policy=email.policy.default)
    assert message["To"] == "team@example.org" and message["Cc"] == "lead@example.org"
    assert message["From"] == "cluster-auditor <cluster-auditor@localhost>"
    assert message["Subject"] == "[cluster-auditor] run 2: 3 new, 0 resolved, 4 open findings"
    names = sorted(part.get_filename() for part in message.iter_attachments())
    assert names == ["auditor-findings-run2.csv", "auditor-report-run2.html"]


def test_email_over_smtp_with_starttls_login(database: str, smtp_server, tls_files) -> None:
    host, port, received = smtp_server(tls="starttls", cert=tls_files, credentials=("mailer", PASSWORD))
    env = {"AUDITOR_SMTP_USER": "mailer", "AUDITOR_SMTP_PASSWORD": PASSWORD}
    result = invoke(
        "--verbose", "email", "--db", database, "--to", "team@example.org", "--from", "audit@example.org",
        "--subject", "Weekly", "--smtp", f"smtp+starttls://{host}:{port}",
        "--smtp-ca-bundle", str(tls_files[0]), env=env,
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    assert received.event.wait(5)
    assert received.logins == [("mailer", PASSWORD)]
    message = email.message_from_bytes(received.envelopes[0].original_content, policy=email.policy.default)
    assert (message["Subject"], message["From"], message["To"]) == (
        "Weekly",
        "audit@example.org",
        "team@example.org",
    )
    assert message.get_content_type() == "multipart/alternative"
    assert f"report sent to team@example.org via smtp+starttls://{host}:{port}" in result.stderr
    assert PASSWORD not in result.stdout + result.stderr


def test_the_resend_command_runs_as_printed_from_another_folder_with_the_config_file(
    tmp_path: Path, smtp_server, monkeypatch
) -> None:
    """A scheduled job with `--config etc/auditor.toml` (database and mail server set there): the
    printed `auditor email --run …` read no settings when run as printed ("no database at
    auditor.db", "no SMTP server"). Hints now carry the --config the command was given."""
    import shlex

    etc, job = tmp_path / "my etc", tmp_path / "job"  # a space in the path: quoted in the command
    etc.mkdir()
    job.mkdir()
    config = etc / "auditor.toml"
    settings = '[auditor]\ndb = "history.db"\nemail_to = ["team@example.org"]\nsmtp = "{}"\n'
    sandbox = "[auditor.sandbox]\nclusters = 4\ncolumns = 120\n"
    config.write_text(settings.format("smtp://127.0.0.1:9") + sandbox)  # nothing listens there
    monkeypatch.chdir(job)
    subject = "Weekly auditor report"  # a hint's command inside an argument is left as it is
    failed = invoke("--config", str(config), "run", "--report", "r.html", "--subject", subject)
    assert failed.exit_code == 3
    hint = next(line for line in failed.stderr.splitlines() if line.startswith("hint: "))
    printed = hint.split("send the email again with: ", 1)[1]
    assert printed == (
        f"auditor --config '{config}' email --run 1 --to team@example.org --subject '{subject}' "
        "--attach-report --attach-csv"
    )
    host, port, received = smtp_server()  # the mail server is back (here: at another address)
    config.write_text(settings.format(f"smtp://{host}:{port}") + sandbox)
    again = invoke(*shlex.split(printed)[1:])
    assert again.exit_code == 0, again.stderr
    assert received.event.wait(5) and received.envelopes[0].rcpt_tos == ["team@example.org"]
    sent = email.message_from_bytes(received.envelopes[0].original_content, policy=email.policy.default)
    assert sent["Subject"] == subject
    missing = invoke("--config", str(config), "check", "--run", "99")
    assert missing.exit_code == 3
    assert f"hint: list runs with: auditor --config '{config}' runs" in missing.stderr


def test_auditor_run_trusts_a_private_ca_for_smtp(
    tmp_path: Path, smtp_server, tls_files, monkeypatch
) -> None:
    """auditor run had no --smtp-ca-bundle, while its TLS error's hint named that very option."""
    monkeypatch.chdir(tmp_path)
    small = "[auditor.sandbox]\nclusters = 4\ncolumns = 60\n"  # the job is not what is tested: 3 s, not 16
    (tmp_path / "auditor.toml").write_text(small)
    host, port, received = smtp_server(tls="implicit", cert=tls_files)
    args = ("run", "--db", "a.db", "--email-to", "team@example.org", "--smtp", f"smtps://{host}:{port}")
    refused = invoke(*args)
    assert refused.exit_code == 3
    assert "hint: if the server uses a private CA, pass it with --smtp-ca-bundle FILE" in refused.stderr
    result = invoke(*args, "--smtp-ca-bundle", str(tls_files[0]))
    assert result.exit_code == 0, result.stderr
    assert received.event.wait(5)
    assert "emailed the report to team@example.org" in result.stderr
    # or from the config (beside the sandbox's size)
    (tmp_path / "auditor.toml").write_text(f'[auditor]\nsmtp_ca_bundle = "{tls_files[0]}"\n{small}')
    assert invoke(*args).exit_code == 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((), "error: no recipient: pass --to ADDR (or set email_to in auditor.toml)"),
        (
            ("--to", "a@example.org"),
            "error: no SMTP server: pass --smtp URL (or set AUDITOR_SMTP), "
            "or --eml FILE to write the message",
        ),
        (
            ("--to", "a@example.org", "--smtp", "smtp://x", "--eml", "x.eml"),
            "error: give either --smtp URL or --eml FILE, not both",
        ),
        (
            ("--to", "a@example.org", "--smtp", "smtp://u:p@x"),
            "error: --smtp: the URL must not contain a password",
        ),
    ],
)
def test_email_usage_errors(database: str, args: tuple[str, ...], message: str) -> None:
    result = invoke("email", "--db", database, *args, env={"AUDITOR_SMTP": ""})
    assert result.exit_code == 2
    assert result.stderr.splitlines()[0] == message


def test_email_delivery_failure_exits_3(database: str) -> None:
    from .conftest import free_port

    port = free_port()
    result = invoke("email", "--db", database, "--to", "a@example.org", "--smtp", f"smtp://127.0.0.1:{port}")
    assert result.exit_code == 3
    assert (
        result.stderr.splitlines()[0] == f"error: smtp://127.0.0.1:{port}: cannot connect: Connection refused"
    )


def test_first_run_report_has_no_diff(tmp_path: Path) -> None:
    path = tmp_path / "one.db"
    engine = open_database(path)
    _write(engine, CATALOG)
    engine.dispose()
    out = tmp_path / "first.html"
    result = invoke("report", "--db", str(path), "--output", str(out), "--export-dir", str(tmp_path / "x"))
    assert result.exit_code == 0, result.stderr
    # diff.json keeps the contract's keys (it held only from_run and to_run: a consumer broke)
    from tests.diff.conftest import DIFF_KEYS

    diff = json.loads((tmp_path / "x" / "diff.json").read_text())
    assert list(diff) == DIFF_KEYS
    assert (diff["from_run"], diff["to_run"], diff["findings_compared"]) == (None, 1, False)
    assert diff["scope_note"] == "there is no earlier complete run to compare run 1 with"
    assert diff["summary"]["clusters"] == {"added": 0, "removed": 0, "changed": 0}
    assert diff["columns"] == {"added": [], "removed": [], "changed": [], "moved": []}
    soup = BeautifulSoup(out.read_text(encoding="utf-8"), "html.parser")
    assert (
        " ".join(soup.select_one('dd[data-field="against"]').get_text(" ").split())
        == "no earlier complete run"
    )
    assert soup.select_one("#changes-none") is not None
    new = soup.select_one("section#new")
    assert new["data-total"] == soup.select_one('[data-card="open"] .value').get_text()


def test_a_report_against_a_newer_run_says_it_reads_backwards(database: str, tmp_path: Path) -> None:
    # auditor diff said so; the report and its email showed "New (44) since run 3" without a word.
    import email
    from email import policy

    note = (
        "run 2, compared with, is newer than run 1: the report reads backwards ('new' are the findings "
        "run 1 has and run 2 no longer has, 'added' what run 2 lost)"
    )
    out, eml = tmp_path / "back.html", tmp_path / "back.eml"
    result = invoke("report", "--db", database, "--run", "1", "--against", "2", "--output", str(out))
    assert result.exit_code == 0, result.stderr
    assert f"note: {note}" in result.stderr.splitlines()
    soup = BeautifulSoup(out.read_text(encoding="utf-8"), "html.parser")
    shown = " ".join(soup.select_one('p[data-field="backwards"]').get_text(" ").split())
    assert shown == f"Reads backwards: {note}."
    # the sections' intros name the runs rather than "the earlier run" (a probe read them wrong)
    intros = {
        key: soup.select_one(f"section#{key} p.intro").get_text() for key in ("new", "resolved", "open")
    }
    assert intros == {
        "new": "Findings that were not present in run 2.",
        "resolved": "Findings of run 2 that run 1 does not have: the catalog change that explains each is "
        "shown where there is one.",
        "open": "Findings run 1 shares with run 2, not waived.",
    }
    sent = invoke(
        "email", "--db", database, "--run", "1", "--against", "2", "--to", "a@example.com", "--eml", str(eml)
    )
    assert sent.exit_code == 0, sent.stderr
    message = email.message_from_bytes(eml.read_bytes(), policy=policy.default)
    assert f"Reads backwards: {note}." in message.get_body(("plain",)).get_content().splitlines()
    assert 'data-field="backwards"' in message.get_body(("html",)).get_content()
    forward = invoke("report", "--db", database, "--run", "2", "--output", str(tmp_path / "fwd.html"))
    assert "reads backwards" not in forward.stderr
    assert 'data-field="backwards"' not in (tmp_path / "fwd.html").read_text(encoding="utf-8")


def test_render_diff_report_for_a_computed_diff(database: str) -> None:
    from auditor.diff import compute_diff
    from auditor.render.report import render_diff_report

    engine = open_database(database)
    try:
        html = render_diff_report(engine, compute_diff(engine, 1, 2))
    finally:
        engine.dispose()
    soup = BeautifulSoup(html, "html.parser")
    assert soup.select_one("section#new")["data-total"] == "3"
    assert soup.select_one("section#changes-columns")["data-total"] == "1"


def test_bundle_reuses_a_given_diff_and_check_and_refuses_mismatches(database: str) -> None:
    from auditor.diff import compute_diff
    from auditor.engine import check_run, load_ruleset
    from auditor.errors import ConfigError
    from auditor.render.report import build_report_bundle

    engine = open_database(database)
    try:
        ruleset = load_ruleset(None)
        diff = compute_diff(engine, 1, 2, ruleset=ruleset)
        check = check_run(engine, 2, ruleset, baseline=1)
        bundle = build_report_bundle(engine, 2, ruleset=ruleset, diff=diff, check=check)
        assert bundle.data.against is not None and bundle.data.against.id == 1  # taken from the diff
        assert bundle.data.diff == diff.to_json()
        with pytest.raises(ConfigError, match="the diff given is of run 2, not of run 1"):
            build_report_bundle(engine, 1, ruleset=ruleset, diff=diff)
        with pytest.raises(ConfigError, match="the check result given is of run 2, not of run 1"):
            build_report_bundle(engine, 1, ruleset=ruleset, check=check)
    finally:
        engine.dispose()


def test_the_evidence_names_the_rules_behind_a_given_check_or_ruleset(database: str, tmp_path: Path) -> None:
    """From Python: a check made with a one-rule custom set, passed as ``check=``, was reported as
    made by the built-in pack (its 16 rules and digest), and ``ruleset=custom`` read "built-in pack"."""
    from auditor.engine import check_run, load_ruleset
    from auditor.errors import ConfigError
    from auditor.paths import rules_dir
    from auditor.render.report import build_report_bundle

    custom_file = tmp_path / "custom.yaml"
    custom_file.write_text((rules_dir() / "duplicates.yaml").read_text(encoding="utf-8"), encoding="utf-8")
    custom = load_ruleset(custom_file)
    engine = open_database(database)
    try:
        check = check_run(engine, 2, custom, baseline=1, record=False)
        for bundle in (
            build_report_bundle(engine, 2, check=check),
            build_report_bundle(engine, 2, ruleset=custom),
        ):
            evidence = bundle.data.evidence
            assert (evidence.rules_source, evidence.rule_count) == (str(custom_file), 2)
            assert evidence.rules_digest == custom.digest
            assert [f.path for f in evidence.rule_files] == [str(custom_file)]
        whole = build_report_bundle(engine, 2, ruleset=load_ruleset(None)).data.evidence
        assert (whole.rules_source, whole.rule_count) == ("built-in pack", 16)
        with pytest.raises(ConfigError, match="the check result given was made with other rules"):
            build_report_bundle(engine, 2, ruleset=load_ruleset(None), check=check)
    finally:
        engine.dispose()


def test_incomplete_run_is_refused(database: str, tmp_path: Path) -> None:
    engine = open_database(database)
    writer = SnapshotWriter(engine, source_url="https://bigid.example.net/api/v1", cluster_filter=None)
    writer.fail("HTTP 500 from /clusters")
    engine.dispose()
    result = invoke(
        "report", "--db", database, "--run", str(writer.run_id), "--output", str(tmp_path / "x.html")
    )
    assert result.exit_code == 3
    assert (
        result.stderr.splitlines()[0]
        == f"error: run {writer.run_id} is failed, not complete: HTTP 500 from /clusters"
    )
    assert not (tmp_path / "x.html").exists()


def test_library_write_and_render_report(database: str, tmp_path: Path) -> None:
    from auditor.render.report import render_report, write_report

    engine = open_database(database)
    try:
        bundle = write_report(engine, 2, output=tmp_path / "r.html", export_dir=tmp_path / "data", max_rows=1)
        html = render_report(engine, 2, against=1, max_rows=1)
    finally:
        engine.dispose()
    assert [p.name for p in bundle.written] == ["findings.csv", "findings.json", "diff.json", "r.html"]
    soup = BeautifulSoup((tmp_path / "r.html").read_text(encoding="utf-8"), "html.parser")
    more = " ".join(soup.select_one("section#new .more").get_text(" ").split())
    assert (
        more
        == "Showing the first 1 of 3: 2 more in the JSON/CSV export (findings.csv, findings.json, diff.json)."
    )
    rendered = BeautifulSoup(html, "html.parser")
    assert " ".join(rendered.select_one("section#new .more").get_text().split()) == (
        "Showing the first 1 of 3: 2 more in the JSON/CSV export "
        f"(write it with auditor report --run 2 --db {database} --export-dir DIR)."
    )


def test_trend_counts_in_sql_agree_with_the_engine(database: str, tmp_path: Path) -> None:
    from auditor.engine import apply_waivers, findings_for_run, load_ruleset, load_waivers
    from auditor.render.report import count_open_findings, stored_open_counts
    from auditor.store.runs import get_run

    waivers_file = tmp_path / "w.yml"
    waivers_file.write_text(
        "waivers:\n"
        "  - rule: high-sensitivity-without-confidential\n"
        "    column: 'hr.*'\n"
        "    reason: r\n    owner: o@example.org\n    expires: 2099-01-01\n"
        "  - rule: sensitive-column-without-business-attribute\n"
        "    cluster: c2\n"
        "    reason: r\n    owner: o@example.org\n    expires: 2000-01-01\n",  # expired long ago
        encoding="utf-8",
    )
    engine = open_database(database)
    try:
        ruleset = load_ruleset(None)
        waivers = load_waivers(waivers_file)
        run = get_run(engine, 2)
        assert run is not None
        assert stored_open_counts(engine, run, ruleset, None) is None  # never evaluated yet
        for chosen in (None, waivers):
            reference = findings_for_run(engine, 2, ruleset)
            if chosen is not None:
                apply_waivers(reference, chosen, run.started_at.date())
            expected = count_open_findings(reference)
            assert stored_open_counts(engine, run, ruleset, chosen) == expected
        waived_count = sum(count_open_findings(findings_for_run(engine, 2, ruleset)).values()) - sum(
            stored_open_counts(engine, run, ruleset, waivers).values()
        )
        assert waived_count == 1  # hr.payroll.salary.ssn; the expired waiver covers nothing
    finally:
        engine.dispose()


def test_a_database_error_while_reading_findings_is_a_one_line_store_error(
    database: str, tmp_path: Path, monkeypatch
) -> None:
    """A locked or damaged database reads as what went wrong (exit 3), not as an internal error."""
    from sqlalchemy.exc import OperationalError

    from auditor.render.stored import StoredFindings

    def locked(*_args: Any, **_kwargs: Any) -> Any:
        raise OperationalError("SELECT …", {}, Exception("database is locked"))

    monkeypatch.setattr(StoredFindings, "digest", locked)
    monkeypatch.chdir(tmp_path)
    result = invoke("report", "--db", database)
    assert result.exit_code == 3
    assert "could not read the runs and findings for the report: database is locked" in result.stderr
    assert "Traceback" not in result.stderr and "internal error" not in result.stderr
    assert not list(tmp_path.glob("auditor-report-*"))  # no report file left behind


def test_exports_read_the_stored_findings_once_and_equal_the_in_memory_checks(
    database: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from auditor.engine import check_run, load_ruleset
    from auditor.render import stored
    from auditor.render.report import build_report_bundle

    reads: list[int] = []
    original = stored.StoredFindings.stream

    def counted(self: Any) -> Any:
        reads.append(1)
        yield from original(self)

    monkeypatch.setattr(stored.StoredFindings, "stream", counted)
    engine = open_database(database)
    try:
        from_database = build_report_bundle(engine, 2, against=1, with_exports=True)
        from_database.write(tmp_path / "a.html", tmp_path / "a")
        assert reads == [1]  # findings.csv and findings.json from one read
        check = check_run(engine, 2, load_ruleset(), baseline=1, record=False)
        in_memory = build_report_bundle(engine, 2, against=1, check=check, with_exports=True)
        in_memory.write(tmp_path / "b.html", tmp_path / "b")
    finally:
        engine.dispose()
    assert (tmp_path / "a" / "findings.csv").read_bytes() == (tmp_path / "b" / "findings.csv").read_bytes()
    exported = json.loads((tmp_path / "a" / "findings.json").read_text(encoding="utf-8"))
    assert exported == json.loads((tmp_path / "b" / "findings.json").read_text(encoding="utf-8"))
    assert len(exported["findings"]) >= 3
    assert not list((tmp_path / "a").glob(".*.tmp"))  # no temporary file left behind


def test_report_refuses_to_replace_a_write_protected_file(database: str, tmp_path: Path) -> None:
    out = tmp_path / "r.html"
    out.write_text("signed copy", encoding="utf-8")
    out.chmod(0o444)
    result = invoke("report", "--db", database, "--run", "2", "--output", str(out))
    assert result.exit_code == 3
    assert result.stderr == (
        f"error: cannot write {out}: Permission denied (the file is write-protected)\n"
        "hint: nothing was done yet: give --output a file you can write\n"
    )
    assert out.read_text(encoding="utf-8") == "signed copy"


def test_an_abandoned_report_does_not_wait_for_its_counting_at_exit(database: str, tmp_path: Path) -> None:
    """The findings are counted in a thread while the diff is computed. Ctrl-C during the diff
    used to leave the process waiting at exit for that thread's counting (seconds at 1M columns):
    here the counting would take a minute, and the process must end at once."""
    import subprocess
    import sys
    import textwrap
    import time

    script = textwrap.dedent(
        """
        import sys, time
        import auditor.diff
        from auditor.render import stored
        from auditor.render.report import gather_input
        from auditor.store.db import open_database

        def slow_counting(*args, **kwargs):
            time.sleep(60)

        def interrupted(*args, **kwargs):
            raise KeyboardInterrupt

        stored.StoredFindings.digest = slow_counting
        auditor.diff.compute_diff = interrupted
        gather_input(open_database(sys.argv[1]), 2)
        """
    )
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-c", script, database], capture_output=True, text=True, timeout=30, cwd=tmp_path
    )
    assert time.monotonic() - started < 20  # not the minute of counting
    assert done.returncode == -2 and done.stderr.rstrip().endswith("KeyboardInterrupt")  # by SIGINT


@pytest.mark.parametrize("failure", [KeyboardInterrupt, OSError])
def test_an_export_cut_short_replaces_none_of_the_files_there(
    database: str, tmp_path: Path, monkeypatch, failure
) -> None:
    # Ctrl-C midway left findings.json and findings.csv of run 2 beside the diff.json and the
    # report of run 1: a folder that looked whole and mixed two runs.
    import auditor.render.report as report_module
    from auditor.errors import DeliveryError
    from auditor.render.report import build_report_bundle

    folder, html = tmp_path / "out", tmp_path / "out" / "r.html"
    engine = open_database(database)
    try:
        build_report_bundle(engine, 1, with_exports=True).write(html, folder)
        before = {p.name: p.read_bytes() for p in folder.iterdir()}
        assert sorted(before) == ["diff.json", "findings.csv", "findings.json", "r.html"]
        write = report_module._write_atomic

        def cut(path, text):
            if path.name in ("diff.json", "r.html"):  # after both findings files were written
                raise failure()
            return write(path, text)

        monkeypatch.setattr(report_module, "_write_atomic", cut)
        monkeypatch.setattr(report_module, "_write_streamed", lambda path, _write: cut(path, ""))
        with pytest.raises((KeyboardInterrupt, DeliveryError)):  # an OSError, said as a delivery error
            build_report_bundle(engine, 2, with_exports=True).write(html, folder)
    finally:
        engine.dispose()
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before  # no new file, none replaced


def test_a_report_against_none_compares_with_no_run(database: str, tmp_path: Path) -> None:
    out = tmp_path / "alone.html"
    result = invoke(
        "report", "--db", database, "--run", "2", "--against", "None", "--output", str(out),
        "--export-dir", str(tmp_path / "x"),
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    diff = json.loads((tmp_path / "x" / "diff.json").read_text())
    assert (diff["from_run"], diff["scope_note"]) == (
        None,
        "run 2 was not compared with an earlier run (none was asked for)",
    )
    soup = BeautifulSoup(out.read_text(encoding="utf-8"), "html.parser")
    # run 1 is there: the page must not say there is no earlier run, but that none was compared
    against = soup.select_one('dd[data-field="against"]').get_text()
    assert against == "not compared with an earlier run (none was asked for)"
    assert soup.select_one("#changes-none p").get_text() == (
        "This run was not compared with an earlier one (none was asked for)."
    )
    assert "every finding is new" in soup.select_one("#new").get_text()
    # the path that checks the run in memory (full=True) marks the same findings new (a review saw
    # it compare with the previous run all the same)
    from auditor.render.report import gather_input
    from auditor.store.db import open_database

    engine = open_database(database)
    try:
        counts = []
        for full in (False, True):
            data, _ = gather_input(engine, 2, against="none", full=full)
            digest = data.digest
            counts.append(
                digest.new.total if digest is not None else sum(f["status"] == "new" for f in data.findings)
            )
    finally:
        engine.dispose()
    assert counts[0] == counts[1] > 0


@pytest.mark.parametrize("run", [1, 2])
def test_a_report_whose_runs_a_prune_deleted_meanwhile_writes_and_sends_nothing(
    database: str, tmp_path: Path, run: int
) -> None:
    """Found by an operations probe: `auditor report --export-dir` with `auditor db prune --keep 1`
    committing meanwhile exited 0 with findings.json holding no finding (its summary said 14,282)
    and a diff.json with no still-open finding. The run (1) or the one it is compared with (for
    run 2, run 1) was deleted while the report read it: exit 3, and no file is written."""
    from auditor.errors import RunNotUsableError
    from auditor.render.email import deliver_email
    from auditor.render.report import build_report_bundle
    from auditor.store.retention import plan_prune, prune

    engine = open_database(database)
    try:
        bundle = build_report_bundle(engine, run, with_exports=True)
        prune(engine, plan_prune(engine, keep=1))  # deletes run 1
        with pytest.raises(RunNotUsableError) as caught:
            bundle.write(tmp_path / "r.html", tmp_path / "out")
        assert caught.value.exit_code == 3
        assert caught.value.message == "run 1 was deleted while the report read it (by auditor db prune?)"
        with pytest.raises(RunNotUsableError):
            deliver_email(bundle, to=["team@example.org"], eml_path=tmp_path / "r.eml")
    finally:
        engine.dispose()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["auditor.db"]


@pytest.mark.parametrize("full", [False, True], ids=["stored", "in-memory"])
def test_the_report_lists_the_waivers_to_review(database: str, tmp_path: Path, full: bool) -> None:
    """Found by a reviewer's probe: a stale waiver (one matching nothing) was listed by the check's
    table and JSON, never by the report the reviewer signs; nor were the waivers about to expire."""
    from datetime import UTC, datetime, timedelta

    from bs4 import BeautifulSoup

    from auditor.render.report import bundle_from_input, gather_input

    soon = (datetime.now(UTC).date() + timedelta(days=5)).isoformat()
    waivers = tmp_path / "waivers.yaml"
    waivers.write_text(
        "waivers:\n"
        "  - rule: high-sensitivity-without-confidential\n"
        "    cluster: c1\n"
        "    reason: label being restored\n"
        "    owner: hr-data\n"
        f"    expires: {soon}\n"
        "    ticket: GOV-7\n"
        "  - rule: high-sensitivity-without-confidential\n"
        "    cluster: nope\n"
        "    reason: an old one\n"
        "    owner: <b>gone</b>\n"
        "    expires: 2099-01-01\n"
    )
    engine = open_database(database)
    try:
        data, _ = gather_input(engine, 2, waivers_path=waivers, full=full)
        html = bundle_from_input(data).html
    finally:
        engine.dispose()
    section = BeautifulSoup(html, "html.parser").select_one("section#waivers-to-review")
    cells = [tr.select("td") for tr in section.select("tbody tr")]
    rows = [[" ".join(td.get_text(" ").split()) for td in row] for row in cells]
    assert rows == [
        [
            "matches nothing (stale)",
            "rule high-sensitivity-without-confidential, cluster nope",
            "<b>gone</b>",
            "2099-01-01",
            "—",
            f"{waivers}:8",
        ],
        [
            "expires in 5 days",
            "rule high-sensitivity-without-confidential, cluster c1",
            "hr-data",
            soon,
            "GOV-7",
            f"{waivers}:2",
        ],
    ]


def test_a_report_of_a_check_given_says_the_day_that_check_judged_waivers_on(database: str, tmp_path: Path):
    """Reading the change again: a check made as of another day, handed to the report from Python
    (as ``auditor run`` hands its own), was shown with today's date in the evidence."""
    from datetime import date

    from auditor.engine import check_run, load_ruleset
    from auditor.render.report import build_report_bundle

    waivers = tmp_path / "w.yaml"
    waivers.write_text(
        "waivers:\n  - {rule: high-sensitivity-without-confidential, cluster: c1, reason: r, owner: o,\n"
        "     expires: 2099-01-31}\n",
        encoding="utf-8",
    )
    engine = open_database(database)
    check = check_run(engine, "latest", load_ruleset(), waivers=waivers, today=date(2030, 1, 1), record=False)
    bundle = build_report_bundle(engine, check=check, waivers_path=waivers)
    soup = BeautifulSoup(bundle.html, "html.parser")
    assert "judged as of 2030-01-01 (UTC)" in soup.select_one('dd[data-field="waivers"]').get_text()


def test_the_email_s_full_report_command_names_the_database_and_the_rules(
    database: str, tmp_path: Path, monkeypatch
) -> None:
    """The message said "The full report: auditor report --run 2.", which reads ./auditor.db and the
    built-in pack wherever its reader stands: not the job's database, nor its rules."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    rules = rules_dir() / "sensitivity.yaml"
    out = tmp_path / "m.eml"
    result = invoke(
        "email", "--db", database, "--rules", str(rules), "--to", "a@example.org", "--eml", str(out)
    )
    assert result.exit_code == 0, result.output
    message = email.message_from_bytes(out.read_bytes(), policy=email.policy.default)
    text = " ".join(
        BeautifulSoup(message.get_body(("html",)).get_content(), "html.parser").get_text(" ").split()
    )
    said = f"The full report: auditor report --run 2 --db {Path(database).absolute()} --rules {rules}"
    assert f"{said}." in text
    assert said in message.get_body(("plain",)).get_content()  # the text part says it too


def test_follow_up_options_name_what_reads_the_run_again_and_never_a_password(tmp_path: Path) -> None:
    from sqlalchemy import create_engine

    from auditor.render.report import follow_up_options

    spaced = tmp_path / "my db.db"
    engine = create_engine(f"sqlite:///{spaced}")
    assert follow_up_options(engine, [tmp_path / "r"], tmp_path / "w.yaml") == (
        f" --db '{spaced}' --rules {tmp_path / 'r'} --waivers {tmp_path / 'w.yaml'}"
    )
    assert follow_up_options(create_engine("sqlite://")) == ""  # in memory: nothing to name
    # a URL with options keeps them, its file made absolute (a review: --db was left out)
    relative = create_engine("sqlite:///rel.db?timeout=30")
    assert follow_up_options(relative) == f" --db 'sqlite:///{Path('rel.db').absolute()}?timeout=30'"
    uri = "sqlite:///file:/srv/a.db?mode=ro&uri=true"
    assert follow_up_options(create_engine(uri)) == f" --db '{uri}'"
    url = "postgresql+psycopg://auditor:s3cret@db.example.net/audit"
    assert follow_up_options(create_engine(url)) == ""
    keyless = "postgresql+psycopg://auditor@db.example.net/audit"
    assert follow_up_options(create_engine(keyless)) == f" --db {keyless}"
