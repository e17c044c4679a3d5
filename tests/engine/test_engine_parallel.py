"""Rules evaluated two at a time give exactly what one at a time gives, in the rule set's order."""

from __future__ import annotations

import importlib
import os

import pytest
from sqlalchemy import create_engine

from auditor.bigid.models import parse_cluster, parse_column
from auditor.engine import evaluate_each, load_ruleset
from auditor.engine.evaluate import default_workers, parallel_mode
from auditor.sandbox.config import SandboxConfig
from auditor.sandbox.data import Dataset
from auditor.store.db import SQLITE_MODULE_VARIABLE, open_database
from auditor.store.writer import ClusterStats, RunTotals, SnapshotWriter

# the module (auditor.engine re-exports a function of the same name)
evaluate_module = importlib.import_module("auditor.engine.evaluate")


def _sandbox_run(engine) -> int:
    writer = SnapshotWriter(engine, source_url="test://parallel")
    dataset = Dataset(SandboxConfig(seed=11, clusters=60, columns=3000))
    for position, raw in enumerate(dataset.clusters()):
        cluster = parse_cluster(raw)
        writer.add_cluster(cluster, raw, position)
        rows = [(parse_column(c), c) for c in dataset.columns(cluster.id)]
        writer.add_columns(cluster.id, rows)
        writer.finish_cluster(cluster.id, ClusterStats(columns_fetched=len(rows), pages=1))
    writer.complete(RunTotals(clusters_announced=60))
    return writer.run_id


@pytest.mark.parametrize("module", [None, "sqlite3"])  # the workers' SQLite: pysqlite3's where installed
def test_worker_processes_find_exactly_what_one_connection_finds_in_rule_order(tmp_path, monkeypatch, module):
    engine = open_database(tmp_path / "p.db")
    run_id = _sandbox_run(engine)
    ruleset = load_ruleset()
    serial = [
        (rule.id, [f.to_json() for f in items])
        for rule, items, _ in evaluate_each(engine, run_id, ruleset, workers=1)
    ]
    assert (
        parallel_mode(engine, run_id, 2) == "serial"
    )  # a small run: processes would cost more than they save
    monkeypatch.setattr(evaluate_module, "PROCESS_MIN_COLUMNS", 3000)
    if module is not None:
        monkeypatch.setenv(SQLITE_MODULE_VARIABLE, module)
    assert parallel_mode(engine, run_id, 2) == "processes"
    parallel = [
        (rule.id, [f.to_json() for f in items])
        for rule, items, _ in evaluate_each(engine, run_id, ruleset, workers=2)
    ]
    assert [rule_id for rule_id, _ in parallel] == [rule.id for rule in ruleset.rules]
    assert parallel == serial
    assert sum(1 for _, found in serial if found) >= 8  # most rules find something in the sandbox
    assert default_workers(engine) == max(1, min(2, os.cpu_count() or 1))  # one per CPU, at most two


def test_postgresql_evaluates_on_threads_and_in_memory_sqlite_serially():
    assert parallel_mode(create_engine("postgresql+psycopg://u@127.0.0.1:1/x"), 1, 2) == "threads"
    assert parallel_mode(create_engine("sqlite://"), 1, 2) == "serial"
    assert default_workers(create_engine("sqlite://")) == 1
    assert default_workers(create_engine("sqlite:///:memory:")) == 1


def test_heaviest_rules_start_first_and_light_ones_fill_the_end():
    """Pools start tasks in submission order: aggregates and counting forms go first."""
    weights = {rule.id: evaluate_module.rule_weight(rule) for rule in load_ruleset().rules}
    by_weight = sorted(weights, key=lambda rule_id: -weights[rule_id])
    assert set(by_weight[:2]) == {"duplicate-columns-across-sources", "column-in-several-clusters"}
    assert weights["rank-sensitivity-mismatch"] > weights["high-sensitivity-without-confidential"]
    assert weights["conflicting-exclusive-tag-values"] > weights["hidden-sensitivity-tag"]
    assert weights["archived-cluster-with-high-sensitivity"] > weights["pii-cluster-low-severity"]
    # regular expressions call back into Python per attribute
    assert weights["primary-key-holds-pii"] > weights["hidden-sensitivity-tag"]
    assert set(by_weight[-3:]) == {
        "pii-cluster-low-severity",
        "high-severity-cluster-without-labels",
        "cluster-missing-severity",
    }


def test_rules_are_submitted_heaviest_first_and_yielded_in_rule_order():
    engine = create_engine("postgresql+psycopg://u@127.0.0.1:1/x")  # never connected: threads mode
    ruleset = load_ruleset()
    started: list[str] = []

    def fake_alone(_engine, _run_id, rule):
        started.append(rule.id)
        return [], 0.0

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(evaluate_module, "require_run", lambda engine, run_id: None)
        patch.setattr(evaluate_module, "refresh_statistics", lambda engine: None)
        patch.setattr(evaluate_module, "parallel_mode", lambda *a: "threads")
        patch.setattr(evaluate_module, "_evaluate_alone", fake_alone)
        yielded = [rule.id for rule, _, _ in evaluate_each(engine, 1, ruleset, workers=1)]
    assert yielded == [rule.id for rule in ruleset.rules]
    weights = [evaluate_module.rule_weight(ruleset.get(rule_id)) for rule_id in started]
    assert weights == sorted(weights, reverse=True)


def test_worker_processes_hand_findings_over_in_files_that_never_outlive_the_evaluation(
    tmp_path, monkeypatch
):
    """Worker processes leave each rule's findings in a private spool folder ($TMPDIR here), which
    is gone once the evaluation ends: when it completes, and when the caller stops reading early."""
    from multiprocessing import util

    # multiprocessing's own folder (the fork server's socket) is made in $TMPDIR the first time a
    # process needs it: made now, before TMPDIR points at the spool parent, it is not counted there
    # (the test failed when it was the first of its process to start workers)
    util.get_temp_dir()
    engine = open_database(tmp_path / "p.db")
    run_id = _sandbox_run(engine)
    ruleset = load_ruleset()
    spool_parent = tmp_path / "tmp"
    spool_parent.mkdir()
    monkeypatch.setenv("TMPDIR", str(spool_parent))
    monkeypatch.setattr(evaluate_module.tempfile, "tempdir", None)  # read TMPDIR again
    monkeypatch.setattr(evaluate_module, "PROCESS_MIN_COLUMNS", 3000)
    assert evaluate_module._spool_parent() is None  # TMPDIR wins over /dev/shm

    seen: list[list[str]] = []
    for _rule, items, _seconds in evaluate_each(engine, run_id, ruleset, workers=2):
        seen.append([path.name for path in spool_parent.iterdir()])
        assert isinstance(items, list)
    assert all(names and names[0].startswith("auditor-findings-") for names in seen)
    assert list(spool_parent.iterdir()) == []

    abandoned = evaluate_each(engine, run_id, ruleset, workers=2)
    next(abandoned)
    (folder,) = spool_parent.iterdir()
    assert folder.stat().st_mode & 0o777 == 0o700  # only this user can read the findings
    abandoned.close()  # the caller stops early: the workers are joined, the folder removed
    assert list(spool_parent.iterdir()) == []


def serial_findings(tmp_path, rule_id: str = "high-sensitivity-without-confidential"):
    """A sandbox run's database, its id, one built-in rule, that rule's findings (as JSON) from one
    connection in this process, and the URL a worker process is handed."""
    engine = open_database(tmp_path / "p.db")
    run_id = _sandbox_run(engine)
    rule = load_ruleset().get(rule_id)
    with engine.connect() as connection:
        evaluate_module.prepare_connection(connection)
        serial = [f.to_json() for f in evaluate_module.evaluate_rule(connection, run_id, rule)]
    return engine, run_id, rule, serial, engine.url.render_as_string(hide_password=False)


def test_findings_go_through_the_pipe_when_the_spool_cannot_take_them(tmp_path, monkeypatch):
    """A full (or vanished) spool folder costs speed, never findings: the worker function hands its
    chunks over directly, and they read back as the serial evaluation's findings."""
    _engine, run_id, rule, serial, url = serial_findings(tmp_path)
    handed, _seconds = evaluate_module._evaluate_in_process(url, run_id, rule, str(tmp_path / "gone"))
    assert isinstance(handed, list) and handed  # pickled chunks, not a path
    assert [f.to_json() for f in evaluate_module._read_spooled(rule, handed)] == serial
    assert len(serial) > 100

    # /dev/shm is used only with room to spare (containers often give it 64 MB)
    monkeypatch.delenv("TMPDIR", raising=False)
    monkeypatch.setattr(evaluate_module, "SHM_MIN_FREE", 1 << 62)
    assert evaluate_module._spool_parent() is None
