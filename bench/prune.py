"""Benchmark: `auditor db prune` of one of two large runs that share most of their versions.

Builds two runs of N columns (default 200,000) through the real ``SnapshotWriter`` (no HTTP):
epoch 0 and epoch 1 of the sandbox ``Dataset`` (~2.8% of the columns drift; with ``--unshared``
the second run comes from another seed and shares nothing), checks the first with the built-in
rule pack (so it has findings), then times the dry run and the prune of the first run
(``--keep 1``) and prints rates. Before pruning it measures the trap the prune avoids: deleting a
sample of unreferenced column versions with foreign-key checks on (SQLite) or without the index of
migration 0004 (PostgreSQL), inside a transaction that is rolled back, extrapolated to every version
the prune removes.

    python bench/prune.py                                     # SQLite file in a temporary folder
    python bench/prune.py --db postgresql://postgres@127.0.0.1:5432/bench_prune   # an empty database
    python bench/prune.py --columns 50000 --no-findings
"""

from __future__ import annotations

import argparse
import os
import platform
import sqlite3
import tempfile
import time

from sqlalchemy import text

from auditor.engine import check_run, load_ruleset
from auditor.sandbox.config import SandboxConfig
from auditor.sandbox.data import Dataset
from auditor.store import retention
from auditor.store.db import display_url, open_database
from rules import build  # bench/rules.py: this script runs as python bench/prune.py

TABLES = (
    "runs",
    "run_clusters",
    "run_columns",
    "cluster_versions",
    "cluster_labels",
    "column_versions",
    "column_tags",
    "column_attributes",
    "evaluations",
    "findings",
)


def counts(engine) -> dict[str, int]:
    with engine.connect() as connection:
        return {t: int(connection.execute(text(f"SELECT count(*) FROM {t}")).scalar_one()) for t in TABLES}


def trap(engine, run_id: int, sample: int, removed: int) -> None:
    """Time deleting ``sample`` versions the way the prune must not, then roll back."""
    sqlite = engine.dialect.name == "sqlite"
    with engine.connect() as connection, connection.begin() as transaction:
        if not sqlite:
            connection.exec_driver_sql("DROP INDEX ix_run_columns_column_id")  # rolled back below
        connection.exec_driver_sql(f"DELETE FROM run_columns WHERE run_id = {run_id}")
        ids = [
            row[0]
            for row in connection.exec_driver_sql(
                "SELECT id FROM column_versions WHERE id NOT IN (SELECT column_id FROM run_columns) "
                f"LIMIT {sample}"
            )
        ]
        marks = ", ".join(str(i) for i in ids)
        connection.exec_driver_sql(f"DELETE FROM column_tags WHERE column_id IN ({marks})")
        connection.exec_driver_sql(f"DELETE FROM column_attributes WHERE column_id IN ({marks})")
        started = time.perf_counter()
        connection.exec_driver_sql(f"DELETE FROM column_versions WHERE id IN ({marks})")
        seconds = time.perf_counter() - started
        transaction.rollback()
    what = "foreign-key checks on" if sqlite else "without the index on run_columns.column_id"
    per_row = seconds / max(1, len(ids))
    print(
        f"trap ({what}): {len(ids)} versions deleted in {seconds:.2f} s = {per_row * 1000:.1f} ms each; "
        f"the {removed:,} versions of this prune would take ~{per_row * removed / 60:.0f} min"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--columns", type=int, default=200_000)
    parser.add_argument("--clusters", type=int, default=None, help="default: columns / 50")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--db", help="an empty PostgreSQL database URL, or a SQLite file (default: a temporary one)"
    )
    parser.add_argument("--no-findings", action="store_true", help="do not check the first run")
    parser.add_argument("--trap-sample", type=int, default=200, help="versions in the trap sample (0: skip)")
    parser.add_argument("--vacuum", action="store_true")
    parser.add_argument(
        "--unshared",
        action="store_true",
        help="build the second run from another seed: it shares nothing, so every version of the first goes",
    )
    args = parser.parse_args()
    db = args.db or os.path.join(tempfile.mkdtemp(prefix="bench-prune-"), "prune.db")
    clusters = args.clusters or max(1, args.columns // 50)
    print(
        f"machine: {os.cpu_count()} CPUs, {platform.python_implementation()} {platform.python_version()}, "
        f"SQLite {sqlite3.sqlite_version}, load {os.getloadavg()[0]:.1f}"
    )
    engine = open_database(db)
    print(f"database: {display_url(str(engine.url))}")
    first = build(
        engine,
        Dataset(SandboxConfig(seed=args.seed, clusters=clusters, columns=args.columns, epoch=0)),
        "bench://prune",
    )
    second_seed, epoch = (args.seed + 1, 0) if args.unshared else (args.seed, 1)
    build(
        engine,
        Dataset(SandboxConfig(seed=second_seed, clusters=clusters, columns=args.columns, epoch=epoch)),
        "bench://prune",
    )
    if not args.no_findings:
        started = time.perf_counter()
        result = check_run(engine, first, load_ruleset(None), baseline="none")
        print(
            f"checked run {first}: {len(result.findings):,} findings in {time.perf_counter() - started:.1f} s"
        )
    before = counts(engine)
    print("rows:", ", ".join(f"{t} {n:,}" for t, n in before.items()))
    plan = retention.plan_prune(engine, keep=1)
    started = time.perf_counter()
    dry = retention.prune(engine, plan, dry_run=True)
    dry_seconds = time.perf_counter() - started
    print(
        f"dry run: {dry_seconds:.2f} s; would delete runs {list(dry.deleted_runs)}, "
        f"{dry.column_versions_removed:,} column versions, {dry.findings_removed:,} findings"
    )
    if args.trap_sample:
        trap(engine, first, args.trap_sample, dry.column_versions_removed)
    started = time.perf_counter()
    result = retention.prune(engine, plan)  # the commit included
    seconds = time.perf_counter() - started
    after = counts(engine)
    assert result.to_json() | {"dry_run": True} == dry.to_json(), "the dry run and the prune disagree"
    members, versions = result.run_columns_removed, result.column_versions_removed
    print(
        f"prune: {seconds:.2f} s for {len(result.deleted_runs)} run: "
        f"{members:,} membership rows ({members / seconds:,.0f}/s), "
        f"{versions:,} column versions ({versions / seconds:,.0f}/s), "
        f"{result.cluster_versions_removed:,} cluster versions, {result.findings_removed:,} findings"
    )
    print("  steps:", ", ".join(f"{name} {s:.2f} s" for name, s in result.timings.items()))
    if args.vacuum:
        size_before = retention.database_size(engine)
        started = time.perf_counter()
        retention.vacuum_database(engine)
        print(
            f"vacuum: {time.perf_counter() - started:.1f} s, "
            f"{size_before:,} -> {retention.database_size(engine):,} bytes"
        )
    print("rows after:", ", ".join(f"{t} {n:,}" for t, n in after.items()))


if __name__ == "__main__":
    main()
