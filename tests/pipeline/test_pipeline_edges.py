"""Edges of the job (``run_job``, ``builtin_sandbox``, the resend command) and of the snapshot it takes
(limits, the words of a partial run's error): the sandbox over real HTTP, real SQLite files."""

from __future__ import annotations

import shlex

import pytest

from auditor.bigid.client import BigIDClient, ClientOptions
from auditor.engine import load_ruleset
from auditor.errors import ApiError, PartialSnapshotError
from auditor.pipeline import EmailOptions, builtin_sandbox, complete_run_count, run_job, url_holds_password
from auditor.snapshot import FORBIDDEN_HINT, take_snapshot
from auditor.store.db import open_database
from auditor.store.runs import list_runs
from auditor.store.writer import SnapshotWriter

# seed 2: of 4 clusters, 3 answer their first columns request with a 500 (the listing does not)
FLAKY = {"seed": 2, "clusters": 4, "columns": 40, "fail_rate": 0.4}


@pytest.fixture
def engine(tmp_db):
    engine = open_database(tmp_db)
    yield engine
    engine.dispose()


@pytest.fixture
def connect():
    clients: list[BigIDClient] = []

    def make(server, **options) -> BigIDClient:
        client = BigIDClient(ClientOptions(url=server.url, token=server.key, **options))
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


@pytest.fixture
def job(engine, connect, tmp_path):
    """``job(server, report="r.html", retries=None, **options)``: ``run_job`` with the built-in pack,
    no decoding processes, its report in ``tmp_path``."""

    def run(server, report: str = "r.html", retries: int | None = None, **options):
        client = connect(server) if retries is None else connect(server, max_retries=retries)
        return run_job(
            engine, client, ruleset=load_ruleset(None), processes=0, report_path=tmp_path / report, **options
        )

    return run


@pytest.mark.parametrize(
    ("limits", "message"),
    [
        ({"max_seconds": 0}, "max_seconds must be more than 0"),
        ({"workers": 0}, "workers must be at least 1"),
        ({"processes": -1}, "processes must be 0 or more"),
        ({"max_failed_clusters": -1}, "max_failed_clusters must be 0 or more"),
    ],
)
def test_limits_out_of_range_are_refused_before_any_run_is_started(sandbox, connect, engine, limits, message):
    client = connect(sandbox(clusters=2, columns=20))
    with pytest.raises(ValueError) as caught:
        take_snapshot(engine, client, **limits)
    assert str(caught.value) == message
    assert list_runs(engine) == []
    assert client.requests == 0


def test_the_smallest_limits_allowed_give_a_complete_run(sandbox, connect, engine):
    client = connect(sandbox(clusters=3, columns=30))
    run = take_snapshot(engine, client, workers=1, processes=0, max_failed_clusters=0, max_seconds=60)
    assert (run.status, run.clusters_stored, run.columns_stored) == ("complete", 3, 30)
    assert run.details["deadline_seconds"] == 60 and run.details["processes"] == 0


def test_a_partial_job_says_the_other_one_was_stored(sandbox, job, engine, tmp_path):
    server = sandbox(**FLAKY)
    with pytest.raises(PartialSnapshotError) as caught:
        job(server, retries=0, workers=1)
    assert caught.value.message == (
        "run 1 is not complete: 3 of 4 clusters could not be fetched (the other one was stored)"
    )
    assert not caught.value.tripped and len(caught.value.problems) == 3
    (run,) = list_runs(engine)
    assert (run.status, run.clusters_stored, run.details["failed_cluster_count"]) == ("failed", 1, 3)
    assert run.error.startswith("3 of 4 clusters could not be fetched: ")
    assert run.listing_stored is True  # every listed cluster has its row: a diff can trust the listing
    assert "… and" not in run.error
    assert not (tmp_path / "r.html").exists()


def test_the_job_passes_max_failed_clusters_to_the_snapshot(sandbox, job, engine):
    server = sandbox(**FLAKY)
    with pytest.raises(ApiError) as caught:
        job(server, retries=0, workers=1, max_failed_clusters=0)
    assert type(caught.value) is ApiError  # raised as it is, not a PartialSnapshotError
    (run,) = list_runs(engine)
    assert run.status == "failed" and run.details["failed_cluster_count"] == 1

    with pytest.raises(PartialSnapshotError) as tripped:
        job(server, retries=0, workers=1, max_failed_clusters=1)
    assert tripped.value.tripped
    assert tripped.value.message.startswith(
        "run 2 is not complete: the snapshot stopped after 2 clusters failed (more than 1 allowed); "
    )


def test_the_job_passes_its_scope_and_baseline_on(sandbox, job):
    server = sandbox(clusters=4, columns=40)
    skipped = next(iter(server.dataset.cluster_ids()))
    first = job(server, "1.html", skip_clusters=[skipped])
    assert first.run.details["skip_clusters"] == [skipped]
    assert first.run.details["skipped_clusters"] == [skipped]
    assert "skip_clusters_not_listed" not in first.run.details
    assert (first.run.clusters_stored, first.run.clusters_announced) == (3, 3)
    second = job(server, "2.html", skip_clusters=[skipped], baseline="none")
    assert second.baseline is None and second.check.baseline is None
    third = job(server, "3.html", skip_clusters=[skipped])
    assert third.baseline is not None and third.baseline.id == 2


def test_the_sandbox_epoch_counts_complete_runs_only_unless_given(engine):
    writer = SnapshotWriter(engine, source_url="https://tenant.example")
    writer.fail("ApiError: the tenant was down")
    assert complete_run_count(engine) == 0
    with builtin_sandbox(engine, clusters=2, columns=20) as (client, epoch):
        assert epoch == 0
        run = take_snapshot(engine, client, processes=0)
    assert run.source_url == "sandbox://built-in"
    assert complete_run_count(engine) == 1
    with builtin_sandbox(engine, clusters=2, columns=20, epoch=5) as (_client, epoch):
        assert epoch == 5


def test_the_resend_command_names_the_config_file_by_its_absolute_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    email = EmailOptions(to=["a@example.org"], eml_path="m.eml", attach_report=False, attach_csv=False)
    command = email.resend_command(3, None, config="auditor.toml", db="h.db")
    assert shlex.split(command) == [
        "auditor",
        "--config",
        f"{tmp_path}/auditor.toml",
        "email",
        "--run",
        "3",
        "--db",
        f"{tmp_path}/h.db",
        "--to",
        "a@example.org",
        "--eml",
        f"{tmp_path}/m.eml",
    ]


@pytest.mark.parametrize(
    "given",
    [
        "sqlite:///file:h.db?mode=ro&uri=true",
        "sqlite:///:memory:",
        "sqlite:////data/h.db",
        # (SQLAlchemy renders these two otherwise: parameters sorted, the ':' of "file:" escaped;
        # compared with the masked form, they were taken for URLs holding a password)
        "postgresql://auditor@db/audit?sslmode=require&application_name=x",
        "postgresql+psycopg://auditor@db:5432/audit",
    ],
)
def test_the_resend_command_repeats_a_database_url_without_a_password_as_given(tmp_path, monkeypatch, given):
    monkeypatch.chdir(tmp_path)
    assert not url_holds_password(given)
    email = EmailOptions(to=["a@example.org"], eml_path="/tmp/m.eml", attach_report=False, attach_csv=False)
    command = shlex.split(email.resend_command(3, None, db=given))
    assert command[command.index("--db") + 1] == given


@pytest.mark.parametrize(
    "given",
    [
        "postgresql://auditor:s3cret@db/audit",
        "postgresql://auditor@db/audit?password=s3cret",
        "postgresql://auditor@db/audit?sslpassword=s3cret&sslmode=require",
    ],
)
def test_a_database_url_holding_a_password_is_left_out_of_the_resend_command(given):
    assert url_holds_password(given)
    email = EmailOptions(to=["a@example.org"], eml_path="/tmp/m.eml", attach_report=False, attach_csv=False)
    command = email.resend_command(3, None, db=given)
    assert "--db" not in shlex.split(command) and "s3cret" not in command


def test_a_file_path_in_a_sqlite_url_is_made_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    email = EmailOptions(to=["a@example.org"], eml_path="/tmp/m.eml", attach_report=False, attach_csv=False)
    command = shlex.split(email.resend_command(3, None, db="sqlite+pysqlite:///h.db"))
    assert command[command.index("--db") + 1] == f"sqlite+pysqlite:///{tmp_path}/h.db"


def _failed(count: int, kind: str = "NotFoundError") -> list[tuple[str, str]]:
    return [(f"k{i:02}", f"{kind}: cluster k{i:02} was not found") for i in range(count)]


def test_the_run_error_names_five_clusters_and_says_how_many_more(engine):
    from auditor.snapshot import _partial_reason

    assert _partial_reason(_failed(5), 9, None) == "5 of 9 clusters could not be fetched: " + "; ".join(
        f"k{i:02}: NotFoundError: cluster k{i:02} was not found" for i in range(5)
    )
    assert _partial_reason(_failed(6), 9, None).endswith(
        "; k04: NotFoundError: cluster k04 was not found; … and 1 more"
    )


def test_twenty_failed_clusters_are_all_listed_with_no_more_line(engine):
    from auditor.snapshot import _partial_error

    writer = SnapshotWriter(engine, source_url="https://tenant.example")
    error = _partial_error(writer, _failed(20), 25, None)
    assert len(error.problems) == 20 and error.problems[-1] == "k19: NotFoundError: cluster k19 was not found"
    error = _partial_error(writer, _failed(21), 25, None)
    assert len(error.problems) == 21 and error.problems[-1] == "… and 1 more"


def test_the_hint_of_a_tripped_snapshot_with_mixed_failures_asks_whether_the_tenant_is_down(engine):
    from auditor.snapshot import _partial_error

    writer = SnapshotWriter(engine, source_url="https://tenant.example")
    for kind in ("PayloadError", "AuthError"):
        failures = [("k00", f"{kind}: cluster k00: odd"), ("k01", "ServerError: cluster k01: HTTP 503")]
        error = _partial_error(writer, failures, 5, 1)
        assert error.tripped
        assert error.hint.startswith("is the tenant down? auditor check --run 1 --allow-incomplete"), kind
    failures = [("k00", "AuthError: cluster k00: HTTP 403"), ("k01", "ServerError: cluster k01: HTTP 503")]
    error = _partial_error(writer, failures, 5, None)
    assert not error.tripped
    assert error.hint.startswith(f"{FORBIDDEN_HINT} the data sources of the clusters refused (HTTP 403); ")


@pytest.mark.parametrize(
    ("seconds", "stored", "total", "reason"),
    [
        (
            60,
            2,
            5,
            "did not finish within 1 min (--max-minutes): 2 of 5 clusters were stored, "
            "the others were not fetched in full",
        ),
        (90, 0, None, "did not finish within 1.5 min (--max-minutes): the clusters were still being listed"),
        (59.5, 0, None, "did not finish within 59.5 s (--max-minutes): the clusters were still being listed"),
    ],
)
def test_the_deadline_reason_says_the_limit_in_minutes_from_one_minute(seconds, stored, total, reason):
    from auditor.snapshot import _deadline_reason

    assert _deadline_reason(seconds, stored, total) == reason


def test_every_cluster_s_duplicates_and_totals_below_what_came_are_counted(sandbox, connect, engine):
    under = sandbox(seed=1, clusters=3, columns=60, wrong_totals=1.0, totals_direction="under")
    run = take_snapshot(engine, connect(under, page_size=10), workers=1, processes=0)
    assert run.status == "complete" and run.columns_stored == 60
    assert run.details["total_mismatch_count"] == 3
    assert sorted(run.details["total_mismatches"], key=lambda m: m["cluster_id"]) == [
        {"cluster_id": "63b921ce2cde4790c5000001", "total_count": 23, "fetched": 26},
        {"cluster_id": "643a490f575122cd5b000000", "total_count": 27, "fetched": 31},
        {"cluster_id": "68150ea0d98d42373d000002", "total_count": 2, "fetched": 3},
    ]
    repeating = sandbox(seed=1, clusters=3, columns=60, repeat_rate=0.1)
    run = take_snapshot(engine, connect(repeating, page_size=10), workers=1, processes=0)
    assert (run.status, run.columns_stored, run.details["duplicate_rows"]) == ("complete", 60, 7)


def test_decoding_processes_default_to_two_from_two_cpus_and_twenty_thousand_columns(monkeypatch):
    from types import SimpleNamespace

    import auditor.snapshot as snapshot_module

    monkeypatch.setattr(snapshot_module.os, "cpu_count", lambda: 2)
    assert snapshot_module.default_processes() == 2

    def clusters(*sizes):
        return [(SimpleNamespace(size=size), {}) for size in sizes]

    assert snapshot_module._processes_for(clusters(19_999)) == 0
    assert snapshot_module._processes_for(clusters(10_000, 10_000)) == 2
    assert snapshot_module._processes_for(clusters(10, None)) == 2  # a size not said: maybe a big one
    monkeypatch.setattr(snapshot_module.os, "cpu_count", lambda: 1)
    assert snapshot_module.default_processes() == 0


def test_a_cluster_to_skip_that_the_tenant_did_not_list_is_recorded(sandbox, connect, engine):
    client = connect(sandbox(clusters=2, columns=20))
    run = take_snapshot(engine, client, processes=0, skip_clusters=["no-such-cluster", " ", ""])
    assert run.status == "complete" and run.clusters_stored == 2
    assert run.details["skip_clusters"] == ["no-such-cluster"]
    assert (run.details["skipped_cluster_count"], run.details["skipped_clusters"]) == (0, [])
    assert run.details["skip_clusters_not_listed"] == ["no-such-cluster"]


def test_the_clusters_skipped_are_listed_up_to_the_limit(sandbox, connect, engine, monkeypatch):
    import auditor.snapshot as snapshot_module

    monkeypatch.setattr(snapshot_module, "MAX_LISTED_FAILURES", 1)
    server = sandbox(clusters=3, columns=30)
    first, second, _ = sorted(server.dataset.cluster_ids())
    run = take_snapshot(engine, connect(server), processes=0, skip_clusters=[second, first])
    assert (run.status, run.clusters_stored, run.clusters_announced) == ("complete", 1, 1)
    assert (run.details["skipped_cluster_count"], run.details["skipped_clusters"]) == (2, [first])


def test_the_job_passes_its_cluster_filter_to_the_snapshot(sandbox, job):
    server = sandbox(clusters=3, columns=30)
    wanted = sorted(server.dataset.cluster_ids())[0]
    result = job(server, cluster_filter=f'id="{wanted}"')
    assert result.run.cluster_filter == f'id="{wanted}"'
    assert (result.run.status, result.run.clusters_stored) == ("complete", 1)


def test_the_job_says_it_emailed_the_copies_too(sandbox, connect, engine, tmp_path):
    import socket

    from aiosmtpd.controller import Controller

    envelopes: list[list[str]] = []

    class Handler:
        async def handle_DATA(self, server, session, envelope):
            envelopes.append(list(envelope.rcpt_tos))
            return "250 OK"

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    controller = Controller(Handler(), hostname="127.0.0.1", port=port)
    controller.start()
    try:
        email = EmailOptions(
            to=["a@example.org"], cc=["c@example.org"], smtp_url=f"smtp://127.0.0.1:{port}", attach_csv=False
        )
        result = run_job(
            engine,
            connect(sandbox(clusters=2, columns=20)),
            ruleset=load_ruleset(None),
            processes=0,
            report_path=tmp_path / "r.html",
            email=email,
        )
    finally:
        controller.stop()
    assert result.emailed_to == ["a@example.org", "c@example.org"]
    assert result.eml_path is None
    assert envelopes == [["a@example.org", "c@example.org"]]


def test_the_checked_hook_gets_the_check_and_its_verdict_before_the_report_is_written(sandbox, job, tmp_path):
    from auditor.errors import DeliveryError

    server = sandbox(clusters=3, columns=30)
    seen: list[tuple[int, int, int, bool]] = []

    def checked(check, exit_code):
        seen.append((check.run.id, len(check.findings), exit_code, (tmp_path / "r.html").exists()))

    result = job(server, fail_on="low", checked=checked)
    assert seen == [(1, len(result.check.findings), 1, False)] and result.exit_code == 1
    assert result.check.findings and (tmp_path / "r.html").is_file()
    # a report that cannot be written still leaves the check said (and stored)
    seen.clear()
    with pytest.raises(DeliveryError):
        job(server, report="missing/r.html", checked=checked)
    assert [entry[:3] for entry in seen] == [(2, len(result.check.findings), 0)]
