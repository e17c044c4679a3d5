"""A server that reflects the key it is sent inside its DATA (a cluster name, a label, a column name, a
tag value) cannot get it stored: the client masks every registered secret in a data answer's bytes
before anything decodes them, counts it in ``runs.details.secrets_redacted`` and warns once. Every
byte of the database, the report, the exports, the email and the output is searched for the key."""

from __future__ import annotations

import json
import logging
import secrets as std_secrets
from pathlib import Path

import pytest
from sqlalchemy import select

from auditor.bigid.auth import REFRESH_PATH
from auditor.bigid.client import CLUSTERS_PATH
from auditor.snapshot import take_snapshot
from auditor.store.db import open_database
from auditor.store.schema import cluster_labels, cluster_versions, column_tags, column_versions

from .conftest import Loopback, Reply, Request
from .test_bigid_leaks import database_bytes, run_auditor

WARNING = b"answered with the API key (or its session token) inside its data"
ESCAPED = "@ESCAPED@"  # stands for the token as Gson-like encoders write it: / as \/, = as \u003d
# occurrences served per snapshot: the clusters page (a name, a label escaped), then each of the two
# clusters' column page (a column name, a tag value escaped)
SERVED = 2 + 2 * 2


# -- a server reflecting the key ---------------------------------------------------------------


def reflected_token() -> str:
    return f"sk-REFLECT/{std_secrets.token_hex(8)}/{std_secrets.token_hex(8)}=="


def escaped(token: str) -> str:
    """``token`` with every / written \\/ and every = written \\u003d (json.dumps writes neither)."""
    return token.replace("/", "\\/").replace("=", "\\u003d")


def _body(value: object, token: str) -> bytes:
    return json.dumps(value).replace(ESCAPED, escaped(token)).encode()


def reflecting_handler(request: Request) -> Reply:
    """Tutorial-shaped answers that carry the token the client sent, as sent and with \\/ escapes."""
    assert request.path != REFRESH_PATH
    token = (request.authorization or "").removeprefix("Bearer ")
    if request.path == CLUSTERS_PATH:
        if request.query["skip"] != "0":
            return Reply(200, [])
        clusters = [
            {"id": "abc123def456", "name": f"HR {token}", "size": 1, "labels": ["PII", ESCAPED]},
            {"id": "ghi789jkl012", "name": "Marketing Metrics", "size": 1, "labels": ["Analytics"]},
        ]
        return Reply(200, _body(clusters, token))
    cluster = request.query["clusterId"]
    if request.query["skip"] != "0":
        return Reply(200, {"results": [], "totalCount": 1})
    column = {
        "fullyQualifiedName": f"{cluster}.hr.people.ssn",
        "columnName": f"ssn {token}",
        "tableName": "people",
        "source": "hr",
        "dataType": "string",
        "attributes": [{"attribute_name": "SSN", "attribute_original_name": "SSN", "rank": "High"}],
        "tags": [{"tagName": "sensitivity", "tagValue": ESCAPED}],
    }
    return Reply(200, _body({"results": [column], "totalCount": 1}, token))


def assert_masked_in_store(engine) -> None:
    with engine.connect() as connection:
        names = sorted(connection.execute(select(cluster_versions.c.name)).scalars())
        assert names == ["HR ***", "Marketing Metrics"]
        raws = [
            r for r in connection.execute(select(cluster_versions.c.raw)).scalars() if r["name"] == "HR ***"
        ]
        assert raws[0]["labels"] == ["PII", "***"]
        assert "***" in connection.execute(select(cluster_labels.c.label)).scalars().all()
        assert set(connection.execute(select(column_versions.c.column_name)).scalars()) == {"ssn ***"}
        for raw in connection.execute(select(column_versions.c.raw)).scalars():
            assert raw["columnName"] == "ssn ***" and raw["tags"][0]["tagValue"] == "***"
        assert set(connection.execute(select(column_tags.c.tag_value)).scalars()) == {"***"}


def needles(token: str) -> list[bytes]:
    return [
        token.encode(),
        token.replace("/", "\\/").encode(),
        escaped(token).encode(),
        token.encode("utf-16-le"),
    ]


@pytest.mark.parametrize("processes", [0, 2])
def test_a_snapshot_masks_the_key_a_server_reflects(
    loopback: Loopback, make_client, tmp_path: Path, caplog, processes: int
):
    loopback.reset(reflecting_handler)
    token = reflected_token()
    db = tmp_path / "reflect.db"
    engine = open_database(db)
    client = make_client(loopback.url, token=token)
    with caplog.at_level(logging.DEBUG):
        run = take_snapshot(engine, client, workers=2, processes=processes)
    assert run.status == "complete" and run.clusters_stored == 2 and run.columns_stored == 2
    assert run.details["processes"] == processes
    assert client.secrets_redacted == SERVED == run.details["secrets_redacted"]
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING and "API key" in r.getMessage()]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]
    assert "GET /api/v1/" in warnings[0].getMessage() and "***" in warnings[0].getMessage()
    assert_masked_in_store(engine)
    engine.dispose()
    logs = "\n".join(r.getMessage() for r in caplog.records).encode()
    for name, blob in (("database", database_bytes(db)), ("logs", logs)):
        assert blob
        for needle in needles(token):
            assert needle not in blob, f"the key reached the {name}"


def test_a_clean_snapshot_records_zero(loopback: Loopback, make_client, tmp_path: Path):
    """``secrets_redacted`` is always recorded: 0 says the data was checked and held no key."""

    def clean(request: Request) -> Reply:
        return reflecting_handler(Request(request.method, request.path, request.query, "Bearer x"))

    loopback.reset(clean)
    engine = open_database(tmp_path / "clean.db")
    client = make_client(loopback.url, token=reflected_token())
    run = take_snapshot(engine, client, workers=1, processes=0)
    assert run.status == "complete" and run.details["secrets_redacted"] == 0 == client.secrets_redacted
    engine.dispose()


@pytest.mark.slow
def test_the_cli_masks_and_warns_once(loopback: Loopback, tmp_path: Path):
    """``auditor run`` (report, exports, email, check results) and ``auditor --verbose snapshot
    --processes 2`` against the reflecting server: the key is in no file and no output, the user is
    told once per command on stderr."""
    loopback.reset(reflecting_handler)
    token = reflected_token()
    env = {"BIGID_URL": loopback.url, "BIGID_TOKEN": token}
    db = tmp_path / "cli.db"
    out = tmp_path / "out"
    run = run_auditor(
        "run",
        "--db",
        str(db),
        "--format",
        "json",
        "--report",
        str(out / "report.html"),
        "--export-dir",
        str(out / "exports"),
        "--email-to",
        "audit@example.com",
        "--eml",
        str(out / "report.eml"),
        env=env,
        cwd=tmp_path,
    )
    assert run.returncode == 0, run.stderr.decode()
    snap = run_auditor("--verbose", "snapshot", "--processes", "2", "--db", str(db), env=env, cwd=tmp_path)
    assert snap.returncode == 0, snap.stderr.decode()
    for proc in (run, snap):
        assert proc.stderr.count(WARNING) == 1, proc.stderr.decode()
    assert b"***" in run.stdout  # the check results name the masked column
    engine = open_database(db)
    with engine.connect() as connection:
        from auditor.store.schema import runs

        details = list(connection.execute(select(runs.c.status, runs.c.details).order_by(runs.c.id)))
    engine.dispose()
    assert [(status, d["secrets_redacted"]) for status, d in details] == [("complete", SERVED)] * 2
    assert details[1][1]["processes"] == 2
    files = sorted(p for p in tmp_path.rglob("*") if p.is_file())
    assert {"report.html", "report.eml", "cli.db"} <= {p.name for p in files}
    assert any(p.suffix == ".csv" for p in files)
    blobs = {str(p.relative_to(tmp_path)): p.read_bytes() for p in files}
    blobs.update(
        {
            f"{n}.{s}": getattr(p, s)
            for n, p in (("run", run), ("snapshot", snap))
            for s in ("stdout", "stderr")
        }
    )
    for name, blob in blobs.items():
        for needle in needles(token):
            assert needle not in blob, f"the key reached {name}"


@pytest.mark.parametrize(
    ("cut", "processes"), [("body", 0), ("body", 2), ("escaped", 0), ("escaped", 2), ("message", 0)]
)
def test_an_answer_cut_inside_the_key_shows_none_of_it(
    loopback: Loopback, make_client, tmp_path: Path, cut, processes
):
    """A server that reflects the key and then stops mid-key (a 200 body cut short, the key as sent
    or JSON-escaped, decoded in the fetching thread or by a decoding process, which holds no
    secret), or whose error message is cut there: the error quotes the server's text, but never
    the start of the key."""
    token = reflected_token()

    def handler(request: Request) -> Reply:
        if request.path == CLUSTERS_PATH:
            return Reply(200, [{"id": "c1", "size": 1}] if request.query["skip"] == "0" else [])
        if cut == "message":
            return Reply(404, {"message": ("x" * 170) + " " + token})  # cut at 200 characters, mid-key
        shown = escaped(token) if cut == "escaped" else token
        body = json.dumps({"results": [{"fullyQualifiedName": "a.b.c", "columnName": "echo @"}]})
        body = body.replace("@", shown)
        return Reply(200, body.encode()[: body.index(shown) + len(shown) - 3])

    loopback.reset(handler)
    engine = open_database(tmp_path / "cut.db")
    with pytest.raises(Exception) as caught:
        take_snapshot(engine, make_client(loopback.url, token=token), workers=1, processes=processes)
    engine.dispose()
    text = str(caught.value) + " ".join(getattr(caught.value, "problems", []))
    assert "***" in text
    stored = database_bytes(tmp_path / "cut.db")
    for needle in (token[:12], token[-12:], escaped(token)[:16], escaped(token)[-16:]):
        assert needle not in text
        assert needle.encode() not in stored


def test_only_the_clients_own_key_is_masked_in_data(loopback: Loopback, make_client, tmp_path: Path):
    """Other secrets of the process (a database or SMTP password, an earlier client's key) are
    masked in messages but never in data: a password "Marketing" must not rewrite the catalog's
    "Marketing Metrics" cluster, nor be blamed on the BigID key."""
    from auditor import secrets

    def clean(request: Request) -> Reply:
        return reflecting_handler(Request(request.method, request.path, request.query, "Bearer people"))

    loopback.reset(clean)
    secrets.register("Marketing")  # e.g. open_database("postgresql://auditor:Marketing@…")
    make_client(loopback.url, token="sk-an-earlier-clients-key")
    secrets.register("ssn people")  # the key of that earlier client, say
    engine = open_database(tmp_path / "own.db")
    client = make_client(loopback.url, token=reflected_token())
    run = take_snapshot(engine, client, workers=1, processes=0)
    assert run.status == "complete" and run.details["secrets_redacted"] == 0 == client.secrets_redacted
    with engine.connect() as connection:
        names = sorted(connection.execute(select(cluster_versions.c.name)).scalars())
        columns = set(connection.execute(select(column_versions.c.column_name)).scalars())
    engine.dispose()
    assert names == ["HR people", "Marketing Metrics"] and columns == {"ssn people"}
    assert secrets.scrub("Marketing Metrics") == "*** Metrics"  # still kept out of messages


@pytest.mark.parametrize(
    ("token", "what"),
    [
        ("sk-TOP\nSECRET-tail", "a line break at character 7"),
        ("sk-TOP\rSECRET-tail", "a line break at character 7"),
        ("sk-TOP\x07SECRET-tail", "a control character (U+0007) at character 7"),
        ("sk-TOP\U0001f600SECRET", "a character outside ASCII (U+1F600) at character 7"),
    ],
)
def test_a_client_refuses_a_key_no_header_can_carry(loopback: Loopback, make_client, token: str, what: str):
    """From Python as from the CLI: refused before any request (no retries), the key never quoted."""
    from auditor.errors import ConfigError

    loopback.reset(reflecting_handler)
    with pytest.raises(ConfigError) as caught:
        make_client(loopback.url, token=token)
    assert str(caught.value) == (
        f"the BigID API key: the API key holds {what}, which an HTTP header cannot carry"
    )
    assert "SECRET" not in f"{caught.value} {caught.value.hint}" and loopback.seen == []


def test_a_short_key_is_not_searched_in_data(loopback: Loopback, make_client, tmp_path: Path):
    """The tutorial's key SAMPLE in a catalog holding SAMPLE_DATA: the data is stored as served and
    the tenant is not blamed. Being the tutorial's published example, it is not masked in messages
    either (a path holding the word was shown as ***); another short key is."""
    from auditor import secrets

    def clean(request: Request) -> Reply:
        return reflecting_handler(Request(request.method, request.path, request.query, "Bearer SAMPLE"))

    loopback.reset(clean)
    engine = open_database(tmp_path / "short.db")
    client = make_client(loopback.url, token="SAMPLE")
    run = take_snapshot(engine, client, workers=1, processes=0)
    assert run.status == "complete" and run.details["secrets_redacted"] == 0
    with engine.connect() as connection:
        names = sorted(connection.execute(select(cluster_versions.c.name)).scalars())
    engine.dispose()
    assert names == ["HR SAMPLE", "Marketing Metrics"]
    assert secrets.scrub("a message with SAMPLE") == "a message with SAMPLE"
    make_client(loopback.url, token="K3y9x").close()
    assert secrets.scrub("a message with K3y9x") == "a message with ***"


def test_a_key_pasted_into_the_urls_path_is_not_recorded_as_the_source(
    loopback: Loopback, make_client, tmp_path
):
    """BIGID_URL=https://tenant/<key>: requests still go where the URL says; the run's source, the
    reports and `auditor runs` show *** in its place."""
    token = reflected_token().replace("/", "-")

    def clean(request: Request) -> Reply:
        return reflecting_handler(
            Request(request.method, request.path.replace(f"/{token}", ""), request.query, "x")
        )

    loopback.reset(clean)
    engine = open_database(tmp_path / "url.db")
    client = make_client(f"{loopback.url}/{token}", token=token)
    run = take_snapshot(engine, client, workers=1, processes=0)
    engine.dispose()
    assert run.status == "complete" and run.source_url == f"{loopback.url}/***"
    assert all(r.path.startswith(f"/{token}/api/v1/") for r in loopback.seen)
    assert token.encode() not in database_bytes(tmp_path / "url.db")


def test_a_key_pasted_into_the_url_percent_encoded_is_masked_in_the_source(make_client):
    """Found by an outside probe: with BIGID_URL=…/x/SECRET%2DKEY-PROBE-123/, the key (its dash
    percent-encoded, as no encoder of ours spells it) was recorded as the run's source unmasked."""
    token = "SECRET-KEY-PROBE-123"
    for path, shown in (
        ("/x/SECRET%2DKEY-PROBE-123/", "/x/***"),
        ("/x/%53ECRET-KEY-PROBE-123", "/x/***"),
        ("/api/pre-SECRET%2dKEY%2DPROBE-123-post/", "/api/pre-***-post"),
        ("/x/SECRET-KEY", "/x/SECRET-KEY"),  # a part of it is not it
    ):
        client = make_client(f"http://127.0.0.1:9{path}", token=token)
        try:
            assert client.source == f"http://127.0.0.1:9{shown}", path
        finally:
            client.close()


def test_other_secrets_of_the_process_are_not_masked_in_the_recorded_source(loopback: Loopback, make_client):
    from auditor import secrets

    secrets.register("127.0")  # a database password that happens to be part of the URL
    client = make_client(loopback.url, token=reflected_token())
    assert client.source == loopback.url


def test_a_key_echoed_percent_encoded_beyond_what_quote_writes_is_masked_in_errors(
    loopback: Loopback, tmp_path: Path
):
    """A hostile-server probe: a 404 whose message quoted the key from a URL with every '-' written
    %2D (quote() leaves '-' as it is, so the registered percent-encoded form did not match) reached
    stderr, the run's error, its details and check's output."""
    token = f"KEY-{std_secrets.token_hex(6)}-SECRET"
    over_encoded = "".join(f"%{ord(c):02X}" if c == "-" else c for c in token)
    lower_hex = over_encoded.replace("%2D", "%2d")

    def echoing(request: Request) -> Reply:
        if request.path == CLUSTERS_PATH:
            if request.query["skip"] != "0":
                return Reply(200, [])
            return Reply(
                200, [{"id": "abc123def456", "name": "HR", "size": 1}, {"id": "x2", "name": "B", "size": 1}]
            )
        if request.query["clusterId"] == "x2":
            return Reply(404, {"message": f"bad clusterId; auth={over_encoded} or {lower_hex}"})
        if request.query["skip"] != "0":
            return Reply(200, {"results": [], "totalCount": 1})
        return Reply(200, {"results": [{"fullyQualifiedName": "a.b.c", "columnName": "c"}], "totalCount": 1})

    loopback.reset(echoing)
    db = tmp_path / "echo.db"
    env = {"BIGID_URL": loopback.url, "BIGID_TOKEN": token}
    snapshot = run_auditor("snapshot", "--db", str(db), env=env, cwd=tmp_path)
    assert snapshot.returncode == 3, snapshot.stderr.decode()
    assert b"bad clusterId; auth=*** or ***" in snapshot.stderr
    runs = run_auditor("runs", "--db", str(db), "--format", "json", env=env, cwd=tmp_path)
    check = run_auditor("check", "--db", str(db), "--allow-incomplete", env=env, cwd=tmp_path)
    assert runs.returncode == 0 and b"auth=*** or ***" in runs.stdout
    for name, blob in (
        ("snapshot", snapshot.stdout + snapshot.stderr),
        ("runs", runs.stdout + runs.stderr),
        ("check", check.stdout + check.stderr),
        ("database", database_bytes(db)),
    ):
        for needle in (token, over_encoded, lower_hex, token.removeprefix("KEY-").removesuffix("-SECRET")):
            assert needle.encode() not in blob, f"the key reached the {name}"
