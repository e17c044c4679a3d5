"""An answer larger than ``--max-answer-mib`` (decoded) is refused, not held: a compressed body that
expands to a gigabyte (a gzip bomb) is stopped a piece past the limit, with a clear error, without
retrying, and the rest of the snapshot goes on (a cluster's columns fail that cluster only)."""

from __future__ import annotations

import gzip
import json
import tracemalloc
import zlib
from functools import cache
from pathlib import Path

import pytest

from auditor.bigid.client import CLUSTERS_PATH, COLUMNS_PATH
from auditor.errors import ApiError, NetworkError, PartialSnapshotError, PayloadError
from auditor.snapshot import take_snapshot
from auditor.store.db import open_database
from auditor.store.runs import list_runs

from .conftest import Loopback, Reply, Request
from .test_bigid_leaks import run_auditor

MIB = 2**20
BOMB_MIB = 1024  # what the bomb expands to
LIMIT_MIB = 16  # the limit the bomb test sets (at 512 the test fails: it then holds 512 MiB)


@cache
def gzip_bomb() -> bytes:
    """A JSON clusters page whose padding decodes to :data:`BOMB_MIB` MiB (about 1 MB on the wire)."""
    packer = zlib.compressobj(9, zlib.DEFLATED, 31)  # gzip framing
    head = b'{"results": [{"id": "c-1", "name": "one", "size": 1}], "padding": "'
    parts = [packer.compress(head)]
    spaces = b" " * MIB
    parts.extend(packer.compress(spaces) for _ in range(BOMB_MIB))
    parts.append(packer.compress(b'"}'))
    parts.append(packer.flush())
    return b"".join(parts)


def test_a_gzip_bomb_is_cut_at_the_limit_and_not_retried(loopback: Loopback, make_client):
    bomb = gzip_bomb()
    assert len(bomb) < 2 * MIB
    loopback.reset(lambda request: Reply(200, bomb, headers={"Content-Encoding": "gzip"}))
    client = make_client(loopback.url, max_answer_bytes=LIMIT_MIB * MIB)
    # the peak of Python allocations while reading (the decoded pieces are bytes objects): the
    # process's peak RSS would say nothing once an earlier test had raised it
    tracemalloc.start()
    try:
        with pytest.raises(ApiError) as caught:
            client.list_clusters()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert str(caught.value) == (
        f"GET {CLUSTERS_PATH}: the answer is larger than {LIMIT_MIB} MiB (decoded); it was not read further"
    )
    assert caught.value.hint == (
        "lower --page-size (now 1000), or raise --max-answer-mib if the tenant's pages really are that large"
    )
    assert len(loopback.seen) == 1 == client.requests  # not retried: the same page would be as large again
    assert peak < 3 * 16 * MIB, f"held {peak / MIB:.0f} MiB for a {LIMIT_MIB} MiB limit"


def test_a_declared_length_over_the_limit_is_refused_before_reading(loopback: Loopback, make_client):
    body = json.dumps({"results": [{"id": "c-1", "name": "x" * (2 * MIB), "size": 1}]}).encode()
    loopback.reset(lambda request: Reply(200, body))
    with pytest.raises(ApiError, match=r"larger than 1 MiB \(decoded\)"):
        make_client(loopback.url, max_answer_bytes=MIB).list_clusters()
    # at the default limit (256 MiB) the same page is an ordinary page
    ((cluster, raw),) = make_client(loopback.url).list_clusters()
    assert cluster.name == raw["name"] == "x" * (2 * MIB)


def test_an_oversized_column_page_fails_its_cluster_only(loopback: Loopback, make_client, tmp_path: Path):
    def handler(request: Request) -> Reply:
        if request.path == CLUSTERS_PATH:
            if request.query["skip"] != "0":
                return Reply(200, [])
            return Reply(
                200, [{"id": "big", "name": "Big", "size": 1}, {"id": "ok", "name": "Ok", "size": 1}]
            )
        cluster = request.query["clusterId"]
        if request.query["skip"] != "0":
            return Reply(200, {"results": [], "totalCount": 1})
        name = "c" * (2 * MIB) if cluster == "big" else "c"
        column = {
            "fullyQualifiedName": f"{cluster}.s.t.c",
            "columnName": name,
            "source": "s",
            "tableName": "t",
        }
        return Reply(200, {"results": [column], "totalCount": 1})

    loopback.reset(handler)
    engine = open_database(tmp_path / "big.db")
    with pytest.raises(PartialSnapshotError) as caught:
        take_snapshot(engine, make_client(loopback.url, max_answer_bytes=MIB), workers=1, processes=0)
    reason = f"GET {COLUMNS_PATH}: the answer is larger than 1 MiB (decoded); it was not read further"
    assert caught.value.problems == [f"big: ApiError: cluster big: {reason}"]
    (run,) = list_runs(engine)
    assert run.status == "failed"
    assert run.details["failed_clusters"] == [
        {"cluster_id": "big", "error": f"ApiError: cluster big: {reason}"}
    ]
    assert (run.clusters_stored, run.columns_stored) == (1, 1)
    engine.dispose()


def test_the_cli_takes_max_answer_mib_from_flag_and_config(loopback: Loopback, tmp_path: Path):
    body = json.dumps([{"id": "c-1", "name": "x" * (2 * MIB), "size": 1}]).encode()
    loopback.reset(lambda request: Reply(200, body))
    env = {"BIGID_URL": loopback.url, "BIGID_TOKEN": "SAMPLE-KEY-123"}
    small = run_auditor("clusters", "--max-answer-mib", "1", env=env, cwd=tmp_path)
    stderr = small.stderr.decode()
    assert small.returncode == 3, stderr
    assert stderr.splitlines()[:2] == [
        f"error: GET {CLUSTERS_PATH}: the answer is larger than 1 MiB (decoded); it was not read further",
        "hint: lower --page-size (now 1000), or raise --max-answer-mib if the tenant's pages really are that "
        "large",
    ]
    (tmp_path / "auditor.toml").write_text("max_answer_mib = 0.5\n")
    configured = run_auditor("clusters", env=env, cwd=tmp_path)
    assert configured.returncode == 3 and "larger than 0.5 MiB" in configured.stderr.decode()
    (tmp_path / "auditor.toml").write_text("max_answer_mib = 8\n")
    assert run_auditor("clusters", env=env, cwd=tmp_path).returncode == 0


def test_a_body_that_does_not_decompress_is_said_so(loopback: Loopback, make_client):
    """Garbage under Content-Encoding: gzip read as 'the connection broke while reading the answer'."""
    loopback.reset(lambda r: Reply(200, b"not gzip at all" * 20, headers={"Content-Encoding": "gzip"}))
    with pytest.raises(ApiError) as caught:
        make_client(loopback.url, max_retries=1).list_clusters()
    assert caught.value.message.startswith(
        f"GET {CLUSTERS_PATH} failed: the answer could not be decoded as its Content-Encoding (gzip) says "
        "(2 attempts in "
    )


@pytest.mark.parametrize("encoding", ["gzip", "deflate"])
def test_a_compressed_body_cut_short_is_asked_again_not_taken_for_bad_json(
    loopback: Loopback, make_client, encoding
):
    # Found by a probe: a gzip body whose stream stopped short (all its announced bytes there)
    # decoded to the start of the JSON: "the tenant sent malformed JSON", after one request
    page = json.dumps([{"id": f"c-{i}", "name": "x" * 40, "size": 1} for i in range(200)]).encode()

    def packed(data: bytes, *, whole: bool = True) -> bytes:
        packer = zlib.compressobj(6, zlib.DEFLATED, 31 if encoding == "gzip" else 15)
        # cut at a flush point: every byte decodes, without an error, and the stream never ends
        return packer.compress(data) + packer.flush(zlib.Z_FINISH if whole else zlib.Z_SYNC_FLUSH)

    whole = packed(page)
    cut = packed(page[: len(page) // 2], whole=False)
    answers = iter([cut, whole, packed(b"[]")])
    loopback.reset(lambda request: Reply(200, next(answers), headers={"Content-Encoding": encoding}))
    client = make_client(loopback.url)
    assert len(client.list_clusters()) == 200
    assert client.retries == 1
    loopback.reset(lambda request: Reply(200, cut, headers={"Content-Encoding": encoding}))
    with pytest.raises(ApiError) as caught:
        make_client(loopback.url, max_retries=2).list_clusters()
    assert caught.value.message.startswith(
        f"GET {CLUSTERS_PATH} failed: the compressed answer stopped before its stream's end (cut short) "
        "(3 attempts in "
    )


def test_a_body_cut_where_the_connection_closes_is_asked_again_not_taken_for_bad_json(
    loopback: Loopback, make_client, tmp_path: Path
):
    # Found by a probe: an answer without Content-Length or chunks (it ends where the connection
    # does) closed halfway was "answered 200 with a body that is not JSON (unexpected end of data
    # at character 40)", the tenant's malformed JSON, after one request
    page = json.dumps([{"id": f"c-{i}", "name": "x" * 40, "size": 1} for i in range(200)]).encode()
    cut = page[: len(page) // 2]
    answers = iter([cut, page])
    loopback.reset(lambda request: Reply(200, next(answers, b"[]"), close_delimited=True))
    client = make_client(loopback.url)
    assert len(client.list_clusters()) == 200
    assert client.retries == 1
    loopback.reset(lambda request: Reply(200, cut, close_delimited=True))
    with pytest.raises(NetworkError) as caught:
        make_client(loopback.url, max_retries=2).list_clusters()
    assert caught.value.message.startswith(
        f"GET {CLUSTERS_PATH} failed: the connection closed before the answer's JSON ended (cut short) "
        "(3 attempts in "
    )
    # cut inside a character's bytes, too
    accented = json.dumps([{"id": "c-1", "name": "é" * 40}], ensure_ascii=False).encode()
    answers = iter([accented[:20], accented])
    loopback.reset(lambda request: Reply(200, next(answers, b"[]"), close_delimited=True))
    assert [cluster.name for cluster, _ in make_client(loopback.url).list_clusters()] == ["é" * 40]
    # every byte its Content-Length announced came: what it holds is what the tenant sent
    loopback.reset(lambda request: Reply(200, cut[:40]))
    with pytest.raises(PayloadError) as caught:
        make_client(loopback.url).list_clusters()
    assert caught.value.message == (
        f"GET {CLUSTERS_PATH} answered 200 with a body that is not JSON (unexpected end of data at "
        f"character 40): {cut[:40].decode()!r}"
    )
    assert len(loopback.seen) == 1
    # the command: asked again, and the clusters listed
    answers = iter([cut, page])
    loopback.reset(lambda request: Reply(200, next(answers, b"[]"), close_delimited=True))
    env = {"BIGID_URL": loopback.url, "BIGID_TOKEN": "SAMPLE-KEY-123"}
    listed = run_auditor("clusters", "--format", "json", env=env, cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr.decode()
    assert len(json.loads(listed.stdout)["clusters"]) == 200


def test_a_columns_page_cut_where_the_connection_closes_is_asked_again(
    loopback: Loopback, make_client, tmp_path: Path
):
    page = json.dumps({"results": [{"fullyQualifiedName": f"s.t.c{i}"} for i in range(3)], "totalCount": 3})
    cut = page.encode()[:40]
    columns = iter([cut, page.encode()])

    def handler(request: Request) -> Reply:
        if request.path == CLUSTERS_PATH:
            return Reply(200, [{"id": "k1", "name": "one", "size": 3}])
        return Reply(200, next(columns, cut), close_delimited=True)

    loopback.reset(handler)
    engine = open_database(tmp_path / "cut.db")
    client = make_client(loopback.url)
    run = take_snapshot(engine, client, workers=1, processes=0)
    assert (run.status, run.columns_stored, client.retries) == ("complete", 3, 1)
    with pytest.raises(PartialSnapshotError) as caught:  # cut every time: the cluster fails, said so
        take_snapshot(engine, make_client(loopback.url, max_retries=1), workers=1, processes=0)
    assert caught.value.problems[0].startswith(
        f"k1: NetworkError: cluster k1: GET {COLUMNS_PATH} failed: the connection closed before the "
        "answer's JSON ended (cut short) (2 attempts in "
    )
    engine.dispose()


COMPRESSION_HINT = (
    "this client asks for gzip, deflate; a proxy in front of the tenant may compress answers itself: "
    "check its settings, and if there is none, re-run with --verbose and report it"
)


def test_an_answer_compressed_in_a_way_the_client_cannot_decode_is_said_so(
    loopback: Loopback, make_client, tmp_path: Path
):
    # Found by a probe: "answered 200 with a body that is not JSON (not valid UTF-8 at byte 1):
    # '\x08\x00…'", the binary recorded as the cluster's error too
    page = json.dumps([{"id": "c-1", "name": "one", "size": 1}]).encode()
    loopback.reset(lambda request: Reply(200, gzip.compress(page), headers={"Content-Encoding": "br"}))
    with pytest.raises(PayloadError) as caught:
        make_client(loopback.url).list_clusters()
    assert caught.value.message == (
        f"GET {CLUSTERS_PATH} answered 200 compressed as 'br', which this client cannot decode"
    )
    assert caught.value.hint == COMPRESSION_HINT
    assert len(loopback.seen) == 1  # the same bytes every time: not asked again
    twice = gzip.compress(gzip.compress(page))
    loopback.reset(lambda request: Reply(200, twice, headers={"Content-Encoding": "gzip"}))
    with pytest.raises(PayloadError) as caught:
        make_client(loopback.url).list_clusters()
    assert caught.value.message == (
        f"GET {CLUSTERS_PATH} answered 200 compressed twice (still gzip once decoded as its "
        "Content-Encoding 'gzip' says)"
    )
    loopback.reset(lambda request: Reply(200, gzip.compress(page)))
    with pytest.raises(PayloadError) as caught:
        make_client(loopback.url).list_clusters()
    assert caught.value.message == (
        f"GET {CLUSTERS_PATH} answered 200 compressed as gzip without a Content-Encoding saying so"
    )
    # 'identity' in a list of encodings is no encoding (urllib3 read it as deflate: a probe)
    for listed in ("gzip, identity", "identity, gzip", "GZIP , Identity"):
        loopback.reset(
            lambda request, e=listed: Reply(200, gzip.compress(page), headers={"Content-Encoding": e})
        )
        assert [c.id for c, _ in make_client(loopback.url).list_clusters()] == ["c-1"]
    # JSON as it stands under an encoding no one decodes ('none', 'utf-8'): read as it is (a probe)
    for harmless in ("none", "utf-8"):
        loopback.reset(lambda request, e=harmless: Reply(200, page, headers={"Content-Encoding": e}))
        assert [c.id for c, _ in make_client(loopback.url).list_clusters()] == ["c-1"]
    # the command, and a cluster's columns: the encoding named, no binary recorded
    columns = gzip.compress(json.dumps({"results": [{"fullyQualifiedName": "s.t.c"}]}).encode())

    def handler(request: Request) -> Reply:
        if request.path == CLUSTERS_PATH:
            return Reply(200, page)
        return Reply(200, columns, headers={"Content-Encoding": "br"})

    loopback.reset(handler)
    env = {"BIGID_URL": loopback.url, "BIGID_TOKEN": "SAMPLE-KEY-123"}
    failed = run_auditor("columns", "c-1", env=env, cwd=tmp_path)
    assert failed.returncode == 3
    assert failed.stderr.decode().splitlines() == [
        f"error: cluster c-1: GET {COLUMNS_PATH} answered 200 compressed as 'br', which this client "
        "cannot decode",
        f"hint: {COMPRESSION_HINT}",
    ]
    engine = open_database(tmp_path / "br.db")
    with pytest.raises(PartialSnapshotError):
        take_snapshot(engine, make_client(loopback.url), workers=1, processes=0)
    (run,) = list_runs(engine)
    assert run.details["failed_clusters"] == [
        {
            "cluster_id": "c-1",
            "error": f"PayloadError: cluster c-1: GET {COLUMNS_PATH} answered 200 compressed as 'br', "
            "which this client cannot decode",
        }
    ]
    engine.dispose()
