"""Rules evaluated two at a time give exactly what one at a time gives, in the rule set's order."""

from __future__ import annotations

import os

from sqlalchemy import create_engine

from auditor.bigid.models import parse_cluster, parse_column
from auditor.engine import evaluate_each, load_ruleset
from auditor.engine.evaluate import default_workers
from auditor.sandbox.config import SandboxConfig
from auditor.sandbox.data import Dataset
from auditor.store.db import open_database
from auditor.store.writer import ClusterStats, RunTotals, SnapshotWriter


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


def test_two_workers_find_exactly_what_one_finds_in_rule_order(tmp_path):
    engine = open_database(tmp_path / "p.db")
    run_id = _sandbox_run(engine)
    ruleset = load_ruleset()
    serial = [
        (rule.id, [f.to_json() for f in items])
        for rule, items, _ in evaluate_each(engine, run_id, ruleset, workers=1)
    ]
    parallel = [
        (rule.id, [f.to_json() for f in items])
        for rule, items, _ in evaluate_each(engine, run_id, ruleset, workers=2)
    ]
    assert [rule_id for rule_id, _ in parallel] == [rule.id for rule in ruleset.rules]
    assert parallel == serial
    assert sum(1 for _, found in serial if found) >= 8  # most rules find something in the sandbox
    assert default_workers(engine) == max(1, min(2, os.cpu_count() or 1))  # one per CPU, at most two


def test_an_in_memory_database_is_evaluated_on_its_one_connection():
    assert default_workers(create_engine("sqlite://")) == 1
    assert default_workers(create_engine("sqlite:///:memory:")) == 1
