"""``auditor sandbox serve``: prints what to use, serves, stops cleanly on Ctrl-C and SIGTERM."""

from __future__ import annotations

import signal
import subprocess
import sys

import pytest
import requests
from click.testing import CliRunner

from auditor.cli.main import cli


def serve(*args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "auditor.cli.main", "sandbox", "serve", "--port", "0", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM])
def test_serve_prints_url_and_key_and_stops_cleanly(stop):
    process = serve("--clusters", "5", "--columns", "100", "--auth", "raw", "--seed", "3")
    try:
        url_line = process.stdout.readline().strip()
        key_line = process.stdout.readline().strip()
        assert url_line.startswith("export BIGID_URL=http://127.0.0.1:")
        assert key_line == "export BIGID_TOKEN=SAMPLE"
        url = url_line.split("=", 1)[1]
        response = requests.get(f"{url}/api/v1/clusters", headers={"Authorization": "SAMPLE"}, timeout=10)
        assert response.status_code == 200 and len(response.json()) == 5
        process.send_signal(stop)
        out, err = process.communicate(timeout=15)
    finally:
        process.kill()
        process.wait()
    assert process.returncode == 0
    assert "Traceback" not in err
    assert "BigID sandbox on http://127.0.0.1:" in err
    assert "seed 3, epoch 0, 5 clusters, 100 columns, auth raw" in err
    assert err.rstrip().endswith("stopped after 1 requests")
    assert out == ""


def test_refresh_mode_prints_the_user_token():
    process = serve("--auth", "refresh")
    try:
        process.stdout.readline()
        key = process.stdout.readline().strip().split("=", 1)[1]
        process.send_signal(signal.SIGINT)
        _out, err = process.communicate(timeout=15)
    finally:
        process.kill()
        process.wait()
    from auditor.sandbox import user_token_for

    assert key == user_token_for(1)
    assert "exchange it at GET /api/v1/refresh-access-token" in err


def test_bad_knobs_exit_2_with_one_line():
    result = CliRunner().invoke(cli, ["sandbox", "serve", "--clusters", "10", "--columns", "5"])
    assert result.exit_code == 2
    assert result.stderr.splitlines()[0] == (
        "error: sandbox: columns (5) must be at least clusters (10): every cluster holds at least one column"
    )
    result = CliRunner().invoke(cli, ["sandbox", "serve", "--fail-rate", "1"])
    assert result.exit_code == 2
    assert "--fail-rate" in result.stderr


def test_a_busy_port_is_a_config_error():
    from auditor.sandbox import SandboxServer

    with SandboxServer() as busy:
        port = busy.port
        result = CliRunner().invoke(cli, ["sandbox", "serve", "--port", str(port)])
    assert result.exit_code == 2
    assert result.stderr.startswith(f"error: sandbox: cannot listen on 127.0.0.1:{port}")
    assert "hint: choose another --port" in result.stderr


PYTHON_ONLY = {"max_fault_streak", "content_type", "sort_limit"}
OPTION_NAMES = {"fail_statuses": "--fail-status"}


def test_help_lists_every_knob():
    from auditor.sandbox import SandboxConfig

    result = CliRunner().invoke(cli, ["sandbox", "serve", "--help"])
    assert result.exit_code == 0
    knobs = set(SandboxConfig.knob_names())
    assert knobs >= PYTHON_ONLY
    for knob in sorted(knobs - PYTHON_ONLY):
        option = OPTION_NAMES.get(knob, "--" + knob.replace("_", "-"))
        assert option in result.output, knob


def test_docs_describe_every_knob():
    from pathlib import Path

    from auditor.sandbox import SandboxConfig

    docs = (Path(__file__).resolve().parents[2] / "docs" / "sandbox.md").read_text(encoding="utf-8")
    for knob in SandboxConfig.knob_names():
        assert f"| `{knob}`" in docs, knob
