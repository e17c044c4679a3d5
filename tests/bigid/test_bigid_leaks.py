"""The API key (and the session tokens exchanged for it) never reach the database file, the logs of a
``--verbose`` run, stdout/stderr, or an exception text: every byte is searched."""

from __future__ import annotations

import os
import secrets as std_secrets
import subprocess
import sys
from pathlib import Path

import pytest

from auditor.errors import AuditorError
from auditor.sandbox.config import make_jwt
from auditor.snapshot import take_snapshot
from auditor.store.db import open_database

SMALL = {"clusters": 4, "columns": 150, "seed": 11}


def leak_token() -> str:
    return f"sk-LEAKCHECK-{std_secrets.token_hex(12)}"


def run_auditor(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[bytes]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith(("BIGID_", "AUDITOR_"))}
    full_env.update(env)
    return subprocess.run(
        [sys.executable, "-m", "auditor.cli.main", *args],
        env=full_env,
        cwd=cwd,
        capture_output=True,
        timeout=60,
    )


def database_bytes(db: Path) -> bytes:
    return b"".join(p.read_bytes() for p in db.parent.glob(db.name + "*"))


@pytest.mark.slow
def test_the_key_never_leaks(sandbox, tmp_path):
    token = leak_token()
    needles = [token.encode(), token.encode("utf-16-le"), token[::-1].encode()]
    db = tmp_path / "leak.db"

    # 1. a successful --verbose run against a tenant that wants the bare key (Bearer is tried first)
    good = sandbox(**SMALL, auth="raw", token=token, fail_rate=0.2, throttle=0.1, retry_after=0)
    ok = run_auditor(
        "--verbose",
        "snapshot",
        "--processes",  # pages decoded in other processes: they get bytes, never the key
        "2",
        "--db",
        str(db),
        env={"BIGID_URL": good.url, "BIGID_TOKEN": token},
        cwd=tmp_path,
    )
    assert ok.returncode == 0, ok.stderr.decode()
    assert b"GET /api/v1/data-catalog/column/cluster/similar?clusterId=" in ok.stderr  # the trace is there

    # 2. a failing --verbose --debug run: the key is refused, the run is recorded as failed
    wrong = sandbox(**SMALL, auth="raw")
    bad = run_auditor(
        "--verbose",
        "--debug",
        "snapshot",
        "--db",
        str(db),
        env={"BIGID_URL": wrong.url, "BIGID_TOKEN": token},
        cwd=tmp_path,
    )
    assert bad.returncode == 3
    assert b"the API key is missing or invalid" in bad.stderr

    # 3. the token exchange: a user token whose session tokens must not leak either. Sessions last
    # two requests here, so one worker: with more requests in flight than a session serves, a
    # fresh session could be refused before any of its requests is seen to succeed, which the
    # client rightly takes for a revoked key (tests/bigid/test_bigid_auth.py).
    refresh = sandbox(**SMALL, auth="refresh", token=token, session_max_requests=2)
    ex = run_auditor(
        "--verbose",
        "snapshot",
        "--db",
        str(db),
        "--workers",
        "1",
        "--processes",
        "2",
        env={"BIGID_URL": refresh.url, "BIGID_TOKEN": token},
        cwd=tmp_path,
    )
    assert ex.returncode == 0, ex.stderr.decode()
    assert refresh.stats.sessions_issued >= 2

    # 4. --token-file, and the columns/clusters commands
    key_file = tmp_path / "key"
    key_file.write_text(token)
    cols = run_auditor(
        "--verbose",
        "clusters",
        "--format",
        "json",
        "--url",
        good.url,
        "--token-file",
        str(key_file),
        env={},
        cwd=tmp_path,
    )
    assert cols.returncode == 0

    blobs = {
        "database": database_bytes(db),
        **{
            f"{name}.{stream}": getattr(proc, stream)
            for name, proc in (("ok", ok), ("bad", bad), ("exchange", ex), ("clusters", cols))
            for stream in ("stdout", "stderr")
        },
    }
    assert blobs["database"], "the database was written"
    for name, blob in blobs.items():
        for needle in needles:
            assert needle not in blob, f"the key leaked into {name}"
    # session tokens are JWTs: no token of the sandbox's form (its fixed header segment) may appear
    # either (a bare "eyJ" would also match three random bytes of the binary database file)
    jwt_header = make_jwt({}, b"any").split(".")[0].encode() + b"."
    assert jwt_header not in blobs["database"] and jwt_header not in blobs["exchange.stderr"]


def test_exception_texts_never_carry_the_key(sandbox, tmp_db, make_client):
    token = leak_token()
    server = sandbox(**SMALL, auth="raw")
    engine = open_database(tmp_db)
    client = make_client(server.url, token=token)
    with pytest.raises(AuditorError) as caught:
        take_snapshot(engine, client, workers=2)
    exc = caught.value
    import traceback

    text = "".join(traceback.format_exception(exc)) + repr(exc) + str(exc) + (exc.hint or "")
    text += repr(client) + repr(client.options)
    assert token not in text


def test_a_key_pasted_into_the_url_stays_out_of_the_verbose_trace(loopback, tmp_path):
    """Found by a probe with its own server: with BIGID_URL=https://tenant/<key>/, urllib3's own
    DEBUG lines ("GET /<key>/api/v1/clusters?…") reached stderr unscrubbed: the filter sat on the
    'urllib3' logger, which does not filter the records of its child 'urllib3.connectionpool'."""
    from .conftest import Request
    from .test_bigid_snapshot_unit import make_tenant

    token = leak_token()
    handler, _, _ = make_tenant({"k1": 3, "k2": 2})
    loopback.reset(lambda r: handler(Request(r.method, r.path.replace(f"/{token}", ""), r.query, None)))
    done = run_auditor(
        "--verbose",
        "snapshot",
        "--db",
        str(tmp_path / "url.db"),
        env={"BIGID_URL": f"{loopback.url}/{token}/", "BIGID_TOKEN": token},
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr.decode()
    assert b'"GET /***/api/v1/clusters?' in done.stderr  # urllib3's trace is there, masked
    assert token.encode() not in done.stderr + done.stdout
    assert token.encode() not in database_bytes(tmp_path / "url.db")
