"""``auditor snapshot``, ``auditor clusters`` and ``auditor columns`` through click, against the
sandbox: stdout is data, stderr is for people, and 400/401/403/404 each give the documented message
and exit code 3; missing configuration is exit 2."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from auditor import snapshot as snapshot_module
from auditor.render.context import fetch_notes
from auditor.store.db import open_database
from auditor.store.runs import list_runs
from tests.bigid.conftest import Reply, Request

SMALL = {"clusters": 4, "columns": 120, "seed": 3}
SIMILAR = "/api/v1/data-catalog/column/cluster/similar"


def env_for(server) -> dict[str, str]:
    return {"BIGID_URL": server.url, "BIGID_TOKEN": server.key}


def test_snapshot_prints_the_run_id_and_stats(sandbox, run_cli, tmp_db):
    server = sandbox(**SMALL, auth="raw")
    result = run_cli("snapshot", "--db", tmp_db, "--workers", "2", "--page-size", "50", env=env_for(server))
    assert result.exit_code == 0, result.stderr
    assert result.stdout == "1\n"
    assert result.stderr.startswith("run 1 complete: 4 clusters, 120 columns in ")
    assert "auth scheme raw" in result.stderr
    (run,) = list_runs(open_database(tmp_db))
    assert run.status == "complete" and run.columns_stored == 120
    assert run.details["page_size"] == 50 and run.details["workers"] == 2
    assert run.details["processes"] == 0  # 120 columns: not worth starting decoding processes
    quiet = run_cli("--quiet", "snapshot", "--processes", "2", "--db", tmp_db, env=env_for(server))
    assert (quiet.exit_code, quiet.stdout, quiet.stderr) == (0, "2\n", "")
    assert list_runs(open_database(tmp_db))[-1].details["processes"] == 2


def test_mismatches_are_counted_in_full_and_noted_as_a_count(sandbox, run_cli, tmp_db, monkeypatch):
    """The per-run counts of mismatches were overwritten by their (capped) lists, which the summary
    then printed whole ("note: [{'cluster_id': ...}, ...] cluster(s) whose ...")."""
    monkeypatch.setattr(snapshot_module, "MAX_LISTED_MISMATCHES", 1)
    server = sandbox(**SMALL, auth="raw", wrong_totals=1.0)
    result = run_cli("snapshot", "--db", tmp_db, "--page-size", "50", env=env_for(server))
    assert result.exit_code == 0, result.stderr
    assert result.stderr.splitlines()[1:] == [
        "note: 4 cluster(s) whose totalCount differs from the columns fetched"
    ]
    (run,) = list_runs(open_database(tmp_db))
    assert run.details["total_mismatch_count"] == 4 and len(run.details["total_mismatches"]) == 1
    assert run.details["size_mismatch_count"] == 0 and run.details["size_mismatches"] == []
    assert "4 clusters whose totalCount differs from the columns fetched" in fetch_notes(run.details)


def test_snapshot_without_a_url_is_a_usage_error(run_cli, tmp_db):
    result = run_cli("snapshot", "--db", tmp_db, env={"BIGID_TOKEN": "SAMPLE"})
    assert result.exit_code == 2
    assert result.stdout == ""
    assert result.stderr.splitlines() == [
        "error: no BigID URL configured",
        "hint: pass --url https://your-tenant.example.net, set BIGID_URL, or set url in auditor.toml "
        "(to try the tool without a tenant: auditor run, which uses the built-in sandbox)",
    ]


def test_snapshot_without_a_key_is_a_usage_error(run_cli, tmp_db):
    result = run_cli("snapshot", "--db", tmp_db, "--url", "http://127.0.0.1:9")
    assert result.exit_code == 2
    assert result.stderr.splitlines()[0] == "error: no BigID API key: BIGID_TOKEN is not set"


@pytest.mark.parametrize("command", [["snapshot"], ["clusters"], ["columns", "c1"]])
@pytest.mark.parametrize("url", ["http://127.0.0.1:99999", "https://u:s3cret@host:port", "http://[::1"])
def test_an_unparsable_url_is_a_usage_error(run_cli, tmp_db, command, url):
    """These were 'internal error: ValueError: Port out of range' / 'Invalid IPv6 URL' (exit 3)."""
    db = ["--db", tmp_db] if command == ["snapshot"] else []
    result = run_cli(*command, *db, env={"BIGID_URL": url, "BIGID_TOKEN": "SAMPLE"})
    assert result.exit_code == 2
    assert result.stderr.splitlines() == [
        "error: the BigID URL is not a valid URL (check the host and the port, 1-65535)",
        "hint: pass --url https://your-tenant.example.net (or set BIGID_URL)",
    ]
    assert "s3cret" not in result.output


@pytest.mark.parametrize("cluster_id", ["", "  "])
def test_an_empty_cluster_id_is_a_usage_error(sandbox, run_cli, cluster_id):
    """It was sent as ``clusterId=`` (and the sandbox, like a lenient tenant, answered)."""
    server = sandbox(**SMALL, auth="raw")
    result = run_cli("columns", cluster_id, env=env_for(server))
    assert result.exit_code == 2
    assert result.stderr.splitlines() == [
        "error: the cluster id is empty",
        "hint: list the valid cluster ids with: auditor clusters",
    ]
    assert server.stats.total == 0


def test_the_key_is_never_a_command_line_value(run_cli):
    result = run_cli("snapshot", "--token", "SAMPLE")
    # click 8.4 quotes the option; 8.2 and 8.3 said "No such option: --token"
    assert result.exit_code == 2 and re.search(r"No such option:? '?--token'?", result.stderr)


def test_token_file_and_url_flag(sandbox, run_cli, tmp_db, tmp_path):
    server = sandbox(**SMALL)
    key_file = tmp_path / "key.txt"
    key_file.write_text(server.key + "\n")
    result = run_cli("snapshot", "--url", server.url, "--token-file", str(key_file), "--db", tmp_db)
    assert result.exit_code == 0, result.stderr
    assert result.stdout == "1\n"


def test_the_token_file_flag_wins_over_the_environment(sandbox, run_cli, tmp_db, tmp_path):
    # BIGID_TOKEN silently won over an explicit --token-file, against the documented order (flags,
    # then the environment, then the config file); a missing file was not even read.
    server = sandbox(**SMALL)
    wrong, right = tmp_path / "wrong.txt", tmp_path / "right.txt"
    wrong.write_text("WRONGKEY\n")
    right.write_text(server.key + "\n")
    env = {"BIGID_URL": server.url}
    assert (
        run_cli("clusters", "--token-file", str(wrong), env={**env, "BIGID_TOKEN": server.key}).exit_code == 3
    )
    assert run_cli("clusters", "--token-file", str(right), env={**env, "BIGID_TOKEN": "WRONG"}).exit_code == 0
    missing = run_cli(
        "clusters", "--token-file", str(tmp_path / "nofile"), env={**env, "BIGID_TOKEN": server.key}
    )
    assert missing.exit_code == 2
    assert missing.stderr.startswith(f"error: --token-file / token_file: cannot read {tmp_path / 'nofile'}")


def test_the_config_files_token_file_is_read_when_nothing_else_gives_a_key(sandbox, run_cli, tmp_path):
    """The README's scheduled set-up: no BIGID_TOKEN, `token_file` in the config file (relative to
    the file's folder). It failed every command with an internal TypeError."""
    server = sandbox(**SMALL)
    etc = tmp_path / "etc"
    etc.mkdir()
    (etc / "token").write_text(server.key + "\n")
    (etc / "auditor.toml").write_text(
        f'[auditor]\nurl = "{server.url}"\ndb = "history.db"\ntoken_file = "token"\n', encoding="utf-8"
    )
    result = run_cli("--config", str(etc / "auditor.toml"), "snapshot")
    assert result.exit_code == 0, result.stderr
    assert result.stdout == "1\n" and (etc / "history.db").exists()
    listed = run_cli("--config", str(etc / "auditor.toml"), "clusters", "--format", "json")
    assert listed.exit_code == 0, listed.stderr
    (etc / "token").write_text("")
    empty = run_cli("--config", str(etc / "auditor.toml"), "clusters")
    assert (empty.exit_code, empty.stderr.splitlines()[0]) == (
        2,
        f"error: --token-file / token_file: {etc / 'token'} is empty",
    )


@pytest.mark.parametrize(
    ("key", "said"),
    [
        ("SAMPLE-SECRET-xyz\nfoo", "a line break at character 18"),
        ("SAMPLE-SECRET-xyz\tfoo", "a control character (U+0009) at character 18"),
        ("SAMPLE-SECRET-xyz\u20ac", "a character outside ASCII (U+20AC) at character 18"),
    ],
)
def test_a_key_an_http_header_cannot_carry_is_refused_without_showing_it(sandbox, run_cli, tmp_db, key, said):
    # A key with a line break (BIGID_TOKEN=$(cat two-line-file)) was quoted, escaped, in an internal
    # error and stored in runs.error; one with a non-Latin-1 character was an internal error.
    server = sandbox(**SMALL)
    result = run_cli("snapshot", "--db", tmp_db, env={"BIGID_URL": server.url, "BIGID_TOKEN": key})
    assert result.exit_code == 2
    assert result.stderr.splitlines()[0] == (
        f"error: BIGID_TOKEN: the API key holds {said}, which an HTTP header cannot carry"
    )
    assert "SECRET" not in result.output and "SECRET" not in result.stderr
    assert not Path(tmp_db).exists()  # refused before anything was written


@pytest.mark.parametrize("spacing", [" ", "/ ", "\t/"])
def test_a_url_pasted_with_surrounding_spaces_still_reaches_the_tenant(sandbox, run_cli, spacing):
    # 'host:8080 ' was no valid port; 'host:8080/ ' asked for /%20/api/v1/clusters and got a 404.
    server = sandbox(**SMALL)
    result = run_cli("clusters", env={**env_for(server), "BIGID_URL": f" {server.url}{spacing}"})
    assert result.exit_code == 0, result.stderr
    assert result.stderr == "4 cluster(s)\n"


def test_clusters_json_is_the_api_data(sandbox, run_cli):
    server = sandbox(**SMALL)
    result = run_cli("clusters", "--format", "json", env=env_for(server))
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout) == {"clusters": list(server.dataset.clusters())}
    table = run_cli("clusters", env=env_for(server))
    lines = table.stdout.splitlines()
    assert lines[0].split() == ["ID", "NAME", "SIZE", "SEVERITY", "STATUS", "LABELS"]
    assert len(lines) == 1 + SMALL["clusters"]
    assert table.stderr == "4 cluster(s)\n"


def test_columns_json_and_table(sandbox, run_cli):
    server = sandbox(**SMALL)
    cluster_id = next(server.dataset.cluster_ids())
    result = run_cli(
        "columns", cluster_id, "--limit", "5", "--skip", "2", "--format", "json", env=env_for(server)
    )
    assert result.exit_code == 0, result.stderr
    document = json.loads(result.stdout)
    assert document["cluster_id"] == cluster_id
    assert document["columns"] == list(server.dataset.columns(cluster_id, 2, 7))
    assert document["totalCount"] == server.dataset.cluster_size(server.dataset.slot_of(cluster_id))
    table = run_cli("columns", cluster_id, "--limit", "3", env=env_for(server))
    assert table.stdout.splitlines()[0].split() == [
        "FQN",
        "COLUMN",
        "TABLE",
        "SOURCE",
        "TYPE",
        "PK",
        "ATTRIBUTES",
        "TAGS",
    ]
    assert len(table.stdout.splitlines()) == 4
    assert table.stderr.startswith("3 column(s) returned; totalCount ")
    # one request with the user's --limit: a --page-size would do nothing, so there is none
    assert "--page-size" not in run_cli("columns", "--help").stdout
    paged = run_cli("columns", cluster_id, "--page-size", "5", env=env_for(server))
    assert paged.exit_code == 2
    assert re.search(r"No such option:? '?--page-size'?", paged.stderr)


def test_400_malformed_cluster_id(sandbox, run_cli):
    server = sandbox(**SMALL)
    result = run_cli("columns", "not-a-cluster", env=env_for(server))
    assert result.exit_code == 3
    assert result.stdout == ""
    assert result.stderr.splitlines() == [
        f"error: the API says cluster id 'not-a-cluster' is malformed (HTTP 400 from GET {SIMILAR}): "
        "Cluster ID is invalid",
        "hint: check the cluster id; list the valid ids with: auditor clusters",
    ]


@pytest.mark.parametrize("processes", ["0", "2"])
def test_401_invalid_key(sandbox, run_cli, tmp_db, processes):
    server = sandbox(**SMALL, auth="raw")
    env = {"BIGID_URL": server.url, "BIGID_TOKEN": "wrong-key-0000"}
    for args in (("clusters",), ("snapshot", "--processes", processes, "--db", tmp_db)):
        result = run_cli(*args, env=env)
        assert result.exit_code == 3
        assert result.stdout == ""
        lines = result.stderr.splitlines()
        assert (
            lines[0]
            == "error: the API key is missing or invalid (HTTP 401; auth scheme tried: bearer, raw, refresh)"
        )
        assert lines[1] == (
            "hint: set BIGID_TOKEN (or --token-file FILE) to a valid BigID API key; if the tenant wants "
            "another header form, pass --auth-scheme bearer|raw|refresh"
        )
    (run,) = list_runs(open_database(tmp_db))
    assert run.status == "failed" and "the API key is missing or invalid" in run.error


def test_403_key_lacks_permission(sandbox, run_cli):
    server = sandbox(**SMALL, auth="raw", forbidden_token="READ-NOTHING-KEY")
    result = run_cli("clusters", env={"BIGID_URL": server.url, "BIGID_TOKEN": "READ-NOTHING-KEY"})
    assert result.exit_code == 3
    assert result.stderr.splitlines()[0] == (
        "error: the API key lacks permission for GET /api/v1/clusters (HTTP 403): "
        "Forbidden: this token lacks permission for cluster analysis"
    )


def test_404_unknown_cluster(sandbox, run_cli):
    server = sandbox(**SMALL)
    unknown = next(server.dataset.cluster_ids())[:18] + "fffff0"
    result = run_cli("columns", unknown, env=env_for(server))
    assert result.exit_code == 3
    assert result.stderr.splitlines() == [
        f"error: cluster '{unknown}' was not found (HTTP 404 from GET {SIMILAR}): "
        f"Cluster {unknown} was not found",
        "hint: list the valid cluster ids with: auditor clusters",
    ]


def test_explicit_auth_scheme_flag(sandbox, run_cli):
    server = sandbox(**SMALL, auth="raw")
    result = run_cli("clusters", "--auth-scheme", "bearer", env=env_for(server))
    assert result.exit_code == 3
    assert "(HTTP 401; auth scheme tried: bearer)" in result.stderr
    assert run_cli("clusters", "--auth-scheme", "raw", env=env_for(server)).exit_code == 0


def test_tables_and_errors_show_a_servers_control_characters_as_escapes(loopback, run_cli):
    """Names and error texts come from the server: none may act on the terminal or forge a line."""
    clusters = [
        {"id": "c1\x1b[2J", "name": "HR\x1b]0;pwned\x07\nforged row", "size": 1, "labels": ["\u202eLIP"]}
    ]

    def handler(request: Request) -> Reply:
        if request.path.endswith("/clusters"):
            return Reply(200, clusters)
        return Reply(403, {"message": "denied\x1b[31m for \rcolumns"})

    loopback.reset(handler)
    env = {"BIGID_URL": loopback.url, "BIGID_TOKEN": "sekrit-1234"}
    table = run_cli("clusters", "--auth-scheme", "raw", env=env)
    assert table.exit_code == 0, table.stderr
    lines = table.stdout.splitlines()
    assert len(lines) == 2
    assert lines[1].split() == ["c1\\x1b[2J", "HR\\x1b]0;pwned\\x07\\x0aforged", "row", "1", "\\u202eLIP"]
    failed = run_cli("columns", "c1", "--auth-scheme", "raw", env=env)
    assert failed.exit_code == 3
    assert failed.stderr.splitlines()[0].endswith("(HTTP 403): denied\\x1b[31m for columns")
    for text in (table.stdout, table.stderr, failed.stdout, failed.stderr):
        assert not [ch for ch in text if (ord(ch) < 32 and ch != "\n") or ch == "\u202e"]


def test_tables_align_wide_characters():
    # Names in Japanese or Chinese take two terminal columns per character: padded by len(), the
    # columns after them were pushed right, row by row.
    from auditor.cli.fetch import _table

    text = _table(("ID", "NAME", "SIZE"), [("c1", "顧客メール", "85"), ("c2", "Emails", "7")])
    assert text.splitlines() == ["ID  NAME        SIZE", "c1  顧客メール  85", "c2  Emails      7"]
    cut = _table(("NAME",), [("顧" * 40,)]).splitlines()[1]
    assert cut == "顧" * 29 + "…"  # 58 columns and the ellipsis: within the 60-column cap


def test_processes_from_the_config_file_decide_how_pages_are_decoded(loopback, run_cli, tmp_path):
    """``processes`` in auditor.toml is documented (docs/fetch.md) and read by the command; the
    config loader refused it as an unknown setting."""
    from auditor.store.db import open_database
    from auditor.store.runs import list_runs

    from .test_bigid_snapshot_unit import make_tenant

    handler, _, _ = make_tenant({"k1": 5, "k2": 7})
    loopback.reset(handler)
    env = {"BIGID_URL": loopback.url, "BIGID_TOKEN": "SAMPLE"}
    db = str(tmp_path / "p.db")
    for processes in (2, 0):
        (tmp_path / "auditor.toml").write_text(f"[auditor]\nprocesses = {processes}\n", encoding="utf-8")
        result = run_cli("snapshot", "--db", db, env=env)
        assert result.exit_code == 0, result.stderr
    runs = list_runs(open_database(db))
    assert [(run.status, run.columns_stored, run.details["processes"]) for run in runs] == [
        ("complete", 12, 2),
        ("complete", 12, 0),
    ]


def test_run_takes_processes_as_snapshot_does(loopback, run_cli, tmp_path):
    from auditor.store.db import open_database
    from auditor.store.runs import list_runs

    from .test_bigid_snapshot_unit import make_tenant

    handler, _, _ = make_tenant({"k1": 5, "k2": 7})
    loopback.reset(handler)
    env = {"BIGID_URL": loopback.url, "BIGID_TOKEN": "SAMPLE"}
    db = str(tmp_path / "r.db")
    for processes in ("2", "0"):
        result = run_cli("run", "--db", db, "--processes", processes, "--format", "json", env=env)
        assert result.exit_code == 0, result.stderr
    bad = run_cli("run", "--db", db, "--processes", "-1", env=env)
    assert bad.exit_code == 2 and "--processes" in bad.stderr
    runs = list_runs(open_database(db))
    assert [(run.status, run.details["processes"]) for run in runs] == [("complete", 2), ("complete", 0)]


def test_runs_lists_the_filter_beside_the_source(sandbox, run_cli, tmp_db):
    server = sandbox(**SMALL)
    assert run_cli("--quiet", "snapshot", "--db", tmp_db, env=env_for(server)).exit_code == 0
    filtered = run_cli("--quiet", "snapshot", "--db", tmp_db, "--filter", 'name="x\ny"', env=env_for(server))
    assert filtered.exit_code == 0, filtered.stderr
    lines = run_cli("runs", "--db", tmp_db).stdout.splitlines()
    assert lines[1].endswith(f"  {server.url}")
    assert lines[2].endswith(f"  {server.url}  filter " + repr('name="x\ny"'))  # the newline escaped


def test_a_full_disk_that_refuses_marking_the_run_failed_says_it_stays_running(
    sandbox, run_cli, tmp_db, monkeypatch
):
    # Found by a probe: a database disk that filled up refused the last flush and then the
    # marking of the run failed too; the run stayed `running` and nothing said so.
    from auditor.errors import StoreError
    from auditor.store.writer import SnapshotWriter

    full = "database or disk is full"

    def refuse(self, *args, **kwargs):
        raise StoreError(
            f"could not finish run {self.run_id}: {full}", hint="check that the database is writable"
        )

    monkeypatch.setattr(SnapshotWriter, "complete", refuse)
    monkeypatch.setattr(SnapshotWriter, "fail", refuse)
    result = run_cli("snapshot", "--db", tmp_db, env=env_for(sandbox(**SMALL)))
    assert result.exit_code == 3
    assert result.stderr.splitlines()[-2:] == [
        f"error: could not finish run 1: {full}",
        "hint: check that the database is writable; run 1 is left running (it could not be marked failed); "
        "auditor db prune marks it so",
    ]
    assert [run.status for run in list_runs(open_database(tmp_db))] == ["running"]
