"""Benchmark: the built-in rule pack in SQL vs a plain Python evaluation of the two design rules.

Builds (or reuses) a SQLite snapshot of N columns (default 1,000,000) from the sandbox's
``Dataset`` through the real ``SnapshotWriter`` (no HTTP), evaluates every rule of the built-in pack
and prints seconds per rule and in total; then evaluates ``high-sensitivity-without-confidential``
and ``duplicate-columns-across-sources`` the way a per-record engine would (load the rows into
Python, then loop), loading included, and prints the ratio.

    python bench/rules.py                 # 1,000,000 columns
    python bench/rules.py --columns 100000 --clusters 2000
    python bench/rules.py --db /tmp/rules1m.db --pack-only   # the pack alone, for A/B pairs
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
from auditor.engine.evaluate import default_workers, evaluate_rule, prepare_connection
from auditor.engine.findings import Finding
from auditor.engine.rules import render_message
from auditor.sandbox.config import SandboxConfig
from auditor.sandbox.data import Dataset
from auditor.store.db import database_url, display_url, open_database
from auditor.store.runs import clusters_view, columns_view, latest_complete_runs
from auditor.store.schema import cluster_labels, column_attributes, column_tags, run_columns
from auditor.store.writer import ClusterStats, RunTotals, SnapshotWriter

DESIGN_RULES = ("high-sensitivity-without-confidential", "duplicate-columns-across-sources")


def build(engine, dataset: Dataset, source_url: str = "bench://rules") -> int:
    """Store ``dataset`` as one complete run through the real writer (no HTTP); its run id."""
    writer = SnapshotWriter(engine, source_url=source_url, batch_rows=50_000)
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


def python_design_rules(engine, run_id: int, ruleset) -> list[Finding]:
    """Both design rules as a per-record engine runs them: load every record, loop, build findings.

    Records are loaded the way such an engine needs them (each column with its fields, tags and
    attributes, each cluster with its fields and labels), then each rule is a Python loop, and
    findings are built with the same messages and fingerprints as the SQL path.
    """
    with engine.connect() as connection:
        clusters: dict[str, dict] = {}
        by_hash: dict[str, dict] = {}
        for row in connection.execute(clusters_view(run_id)):
            record = {**row._mapping, "labels": []}
            clusters[row.cluster_id] = by_hash[row.cluster_hash] = record
        for cluster_hash, label in connection.execute(
            select(cluster_labels.c.cluster_hash, cluster_labels.c.label).order_by(
                cluster_labels.c.cluster_hash, cluster_labels.c.position
            )
        ):
            if cluster_hash in by_hash:
                by_hash[cluster_hash]["labels"].append(label)
        columns = [
            {**row._mapping, "tags": [], "attributes": []} for row in connection.execute(columns_view(run_id))
        ]
        by_column: dict[str, list[dict]] = defaultdict(list)
        for record in columns:
            by_column[record["column_id"]].append(record)
        mine = select(run_columns.c.column_id).where(run_columns.c.run_id == run_id)
        for row in connection.execute(select(column_tags).where(column_tags.c.column_id.in_(mine))):
            for record in by_column.get(row.column_id, ()):
                record["tags"].append(dict(row._mapping))
        for row in connection.execute(
            select(column_attributes).where(column_attributes.c.column_id.in_(mine))
        ):
            for record in by_column.get(row.column_id, ()):
                record["attributes"].append(dict(row._mapping))
    high_rule = ruleset.get(DESIGN_RULES[0])
    findings = []
    for record in columns:
        cluster = clusters[record["cluster_id"]]
        is_high = any(
            (t["tag_name"] or "").lower() == "sensitivity" and (t["tag_value"] or "").lower() == "high"
            for t in record["tags"]
        )
        if is_high and not any(label.lower() == "confidential" for label in cluster["labels"]):
            values = {
                "column.fullyQualifiedName": record["fqn"],
                "cluster.name": cluster["name"],
                "cluster.id": cluster["cluster_id"],
            }
            findings.append(
                Finding(
                    rule=high_rule.id,
                    severity=high_rule.severity,
                    kind="column",
                    cluster_id=record["cluster_id"],
                    column=record["fqn"],
                    columns=[record["fqn"]],
                    message=render_message(high_rule.message, values),
                    key=record["fqn"],
                )
            )
    duplicate_rule = ruleset.get(DESIGN_RULES[1])
    groups: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for record in columns:
        name = (record["column_name"] or "").strip().lower()
        if name:
            groups[(record["cluster_id"], name)].append(record)
    for (cluster_id, key), members in groups.items():
        sources = {(m["source"] or "").strip().lower() for m in members if m["source"] is not None}
        if len(sources) >= 2:
            names = sorted({m["fqn"] for m in members})
            values = {
                "group.value": min((m["column_name"] or "").strip() for m in members),
                "group.distinct": len(sources),
                "group.columns": ", ".join(names[:20])
                + (f" … and {len(names) - 20} more" if len(names) > 20 else ""),
                "cluster.name": clusters[cluster_id]["name"],
            }
            findings.append(
                Finding(
                    rule=duplicate_rule.id,
                    severity=duplicate_rule.severity,
                    kind="group",
                    cluster_id=cluster_id,
                    column=None,
                    columns=names,
                    message=render_message(duplicate_rule.message, values),
                    key=key,
                )
            )
    return findings


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
    parser.add_argument(
        "--workers", type=int, default=None, help="rules at once (default: one per CPU, max 2)"
    )
    parser.add_argument(
        "--pack-only", action="store_true", help="time the pack only, not the SQL-vs-Python comparison"
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
    workers = args.workers if args.workers is not None else default_workers(engine)
    busy = 0.0
    print(f"\n{'rule':<46} {'findings':>9} {'seconds':>8}   ({workers} rule(s) at once)")
    started = time.perf_counter()
    for rule, items, seconds in evaluate_each(engine, run_id, ruleset, workers=workers):
        busy += seconds
        print(f"{rule.id:<46} {len(items):>9,} {seconds:>8.3f}")
    total = time.perf_counter() - started
    label = f"whole pack ({len(ruleset.rules)} rules), wall clock"
    print(f"{label:<46} {'':>9} {total:>8.3f}   (sum of the rules' own times {busy:.3f} s)")
    if args.pack_only:
        return

    started = time.perf_counter()
    with engine.connect() as connection:
        prepare_connection(connection)
        sql_found = [f for rid in DESIGN_RULES for f in evaluate_rule(connection, run_id, ruleset.get(rid))]
    sql_seconds = time.perf_counter() - started
    started = time.perf_counter()
    py_found = python_design_rules(engine, run_id, ruleset)
    py_seconds = time.perf_counter() - started
    counts = {rid: sum(1 for f in sql_found if f.rule == rid) for rid in DESIGN_RULES}
    found = f"{counts[DESIGN_RULES[0]]:,} + {counts[DESIGN_RULES[1]]:,} findings"
    print(f"\ndesign rules in SQL:    {sql_seconds:.3f} s  ({found})")
    print(f"design rules in Python: {py_seconds:.3f} s  (loading included, {len(py_found):,} findings)")
    same = {(f.fingerprint, f.message, tuple(f.columns)) for f in sql_found} == {
        (f.fingerprint, f.message, tuple(f.columns)) for f in py_found
    }
    print(f"same findings, messages and fingerprints: {'yes' if same else 'NO'}")
    print(f"SQL is {py_seconds / sql_seconds:.1f}x faster; whole pack {total:.2f} s (target < 5 s)")


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
