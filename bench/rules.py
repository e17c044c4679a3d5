"""Benchmark: the built-in rule pack in SQL vs a plain Python evaluation of the two design rules.

Builds (or reuses) a SQLite snapshot of N columns (default 1,000,000) from the sandbox's
``Dataset`` through the real ``SnapshotWriter`` (no HTTP), evaluates every rule of the built-in pack
and prints seconds per rule and in total; then evaluates ``high-sensitivity-without-confidential``
and ``duplicate-columns-across-sources`` the way a per-record engine would (load the rows into
Python, then loop), loading included, and prints the ratio.

    python bench/rules.py                 # 1,000,000 columns
    python bench/rules.py --columns 100000 --clusters 2000
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from collections import defaultdict
from pathlib import Path

from sqlalchemy import select

from auditor.bigid.models import parse_cluster, parse_column
from auditor.engine import evaluate_each, load_ruleset
from auditor.engine.evaluate import evaluate_rule, prepare_connection
from auditor.sandbox.config import SandboxConfig
from auditor.sandbox.data import Dataset
from auditor.store.db import database_url, display_url, open_database
from auditor.store.runs import latest_complete_runs
from auditor.store.schema import cluster_labels, column_tags, column_versions, run_clusters, run_columns
from auditor.store.writer import ClusterStats, RunTotals, SnapshotWriter

DESIGN_RULES = ("high-sensitivity-without-confidential", "duplicate-columns-across-sources")


def build(engine, dataset: Dataset) -> int:
    writer = SnapshotWriter(engine, source_url="bench://rules", batch_rows=50_000)
    started = time.perf_counter()
    count = 0
    for position, raw in enumerate(dataset.clusters()):
        cluster = parse_cluster(raw)
        writer.add_cluster(cluster, raw, position)
        rows = [(parse_column(c), c) for c in dataset.columns(cluster.id)]
        writer.add_columns(cluster.id, rows)
        writer.finish_cluster(cluster.id, ClusterStats(columns_fetched=len(rows), pages=1))
        count += len(rows)
    writer.complete(RunTotals(clusters_announced=position + 1))
    print(f"built run {writer.run_id}: {count:,} columns in {time.perf_counter() - started:.1f} s")
    return writer.run_id


def python_design_rules(engine, run_id: int) -> tuple[int, int]:
    """Both design rules as a per-record engine would run them: load every row, then loop."""
    with engine.connect() as connection:
        labels: dict[str, list[str]] = defaultdict(list)
        cluster_of_hash = {}
        for cluster_id, cluster_hash in connection.execute(
            select(run_clusters.c.cluster_id, run_clusters.c.cluster_hash).where(
                run_clusters.c.run_id == run_id
            )
        ):
            cluster_of_hash[cluster_hash] = cluster_id
        for cluster_hash, label in connection.execute(
            select(cluster_labels.c.cluster_hash, cluster_labels.c.label)
        ):
            if cluster_hash in cluster_of_hash:
                labels[cluster_of_hash[cluster_hash]].append(label)
        columns = connection.execute(
            select(
                run_columns.c.cluster_id,
                run_columns.c.fqn,
                run_columns.c.column_hash,
                column_versions.c.column_name,
                column_versions.c.source,
            )
            .join(column_versions, column_versions.c.hash == run_columns.c.column_hash)
            .where(run_columns.c.run_id == run_id)
        ).all()
        tags: dict[str, list[tuple[str, str]]] = defaultdict(list)
        for column_hash, name, value in connection.execute(
            select(column_tags.c.column_hash, column_tags.c.tag_name, column_tags.c.tag_value)
            .join(run_columns, run_columns.c.column_hash == column_tags.c.column_hash)
            .where(run_columns.c.run_id == run_id)
        ):
            tags[column_hash].append((name, value))
    high = 0
    for cluster_id, _fqn, column_hash, _name, _source in columns:
        is_high = any(
            (n or "").lower() == "sensitivity" and (v or "").lower() == "high"
            for n, v in tags.get(column_hash, ())
        )
        if is_high and not any(label.lower() == "confidential" for label in labels.get(cluster_id, ())):
            high += 1
    groups: dict[tuple[str, str], set[str]] = defaultdict(set)
    for cluster_id, _fqn, _hash, name, source in columns:
        if name is not None and name.strip():
            groups[(cluster_id, name.strip().lower())].add((source or "").strip().lower())
    duplicates = sum(1 for sources in groups.values() if len(sources) >= 2)
    return high, duplicates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--columns", type=int, default=1_000_000)
    parser.add_argument("--clusters", type=int, default=None, help="default: columns / 50")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--db",
        default=None,
        help="SQLite file or database URL, e.g. postgresql+psycopg://postgres@127.0.0.1/bench "
        "(reused when it already holds a complete run)",
    )
    args = parser.parse_args()
    clusters = args.clusters or max(1, args.columns // 50)
    db = args.db or str(Path(f"/tmp/auditor-bench-rules-{args.seed}-{clusters}-{args.columns}.db"))
    print(f"python {platform.python_version()}, {os.cpu_count()} CPUs, {_cpu()}")
    engine = open_database(db)
    print(f"database: {engine.dialect.name} {display_url(str(engine.url))}")
    existing = latest_complete_runs(engine, 1)
    if existing:
        run_id = existing[0].id
        where = display_url(database_url(db))
        print(f"reusing run {run_id} of {where} ({existing[0].columns_stored:,} columns)")
    else:
        run_id = build(
            engine, Dataset(SandboxConfig(seed=args.seed, clusters=clusters, columns=args.columns))
        )
    ruleset = load_ruleset()
    total = 0.0
    per_rule: dict[str, float] = {}
    print(f"\n{'rule':<46} {'findings':>9} {'seconds':>8}")
    for rule, items, seconds in evaluate_each(engine, run_id, ruleset):
        per_rule[rule.id] = seconds
        total += seconds
        print(f"{rule.id:<46} {len(items):>9,} {seconds:>8.3f}")
    print(f"{'whole pack (' + str(len(ruleset.rules)) + ' rules)':<46} {'':>9} {total:>8.3f}")

    started = time.perf_counter()
    with engine.connect() as connection:
        prepare_connection(connection)
        sql_counts = [len(evaluate_rule(connection, run_id, ruleset.get(rid))) for rid in DESIGN_RULES]
    sql_seconds = time.perf_counter() - started
    started = time.perf_counter()
    py_counts = python_design_rules(engine, run_id)
    py_seconds = time.perf_counter() - started
    print(f"\ndesign rules in SQL:    {sql_seconds:.3f} s  (findings {sql_counts[0]:,} / {sql_counts[1]:,})")
    print(
        f"design rules in Python: {py_seconds:.3f} s  "
        f"(findings {py_counts[0]:,} / {py_counts[1]:,}, loading included)"
    )
    print(f"SQL is {py_seconds / sql_seconds:.1f}x faster; whole pack {total:.2f} s (target < 5 s)")
    if tuple(sql_counts) != py_counts:
        print("WARNING: SQL and Python disagree on the number of findings")


def _cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


if __name__ == "__main__":
    main()
