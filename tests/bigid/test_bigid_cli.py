"""``auditor snapshot``, ``auditor clusters`` and ``auditor columns`` through click, against the
sandbox: stdout is data, stderr is for people, and 400/401/403/404 each give the documented message
and exit code 3; missing configuration is exit 2."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from auditor.cli.main import cli
from auditor.store.db import open_database
from auditor.store.runs import list_runs

SMALL = {"clusters": 4, "columns": 120, "seed": 3}
SIMILAR = "/api/v1/data-catalog/column/cluster/similar"


@pytest.fixture
def run_cli(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)  # no stray auditor.toml
    for name in ("BIGID_URL", "BIGID_TOKEN", "AUDITOR_DB"):
        monkeypatch.delenv(name, raising=False)

    def invoke(*args: str, env: dict[str, str] | None = None):
        return CliRunner().invoke(cli, list(args), env=env, catch_exceptions=False)

    return invoke


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


def test_the_key_is_never_a_command_line_value(run_cli):
    result = run_cli("snapshot", "--token", "SAMPLE")
    assert result.exit_code == 2 and "No such option '--token'" in result.stderr


def test_token_file_and_url_flag(sandbox, run_cli, tmp_db, tmp_path):
    server = sandbox(**SMALL)
    key_file = tmp_path / "key.txt"
    key_file.write_text(server.key + "\n")
    result = run_cli("snapshot", "--url", server.url, "--token-file", str(key_file), "--db", tmp_db)
    assert result.exit_code == 0, result.stderr
    assert result.stdout == "1\n"


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


def test_tables_of_live_catalog_text_escape_control_characters():
    # `auditor clusters` / `columns` printed names raw: an ESC sequence drove the terminal and a
    # newline started a row of its own.
    from auditor.cli.fetch import _table

    text = _table(("ID", "NAME"), [("c1", "evil\x1b]0;x\x07\nrow")])
    assert text.splitlines() == ["ID  NAME", "c1  evil\\x1b]0;x\\x07\\x0arow"]


def test_tables_align_wide_characters():
    # Names in Japanese or Chinese take two terminal columns per character: padded by len(), the
    # columns after them were pushed right, row by row.
    from auditor.cli.fetch import _table

    text = _table(("ID", "NAME", "SIZE"), [("c1", "顧客メール", "85"), ("c2", "Emails", "7")])
    assert text.splitlines() == ["ID  NAME        SIZE", "c1  顧客メール  85", "c2  Emails      7"]
    cut = _table(("NAME",), [("顧" * 40,)]).splitlines()[1]
    assert cut == "顧" * 29 + "…"  # 58 columns and the ellipsis: within the 60-column cap
