"""Benchmark: diff two large runs with about 1% drift, then render the HTML report of the diff.

Builds two runs through the real :class:`auditor.store.writer.SnapshotWriter` in a SQLite file:
epoch 0 and epoch 1 of the sandbox ``Dataset`` (its own drift, about 2.8%), or with
``--source synthetic`` of a synthetic catalog drifting by 1.0%. Then times ``compute_diff`` (catalog
only, then with the findings of the built-in rule pack) and the HTML report of the diff: gathered
and rendered as ``auditor diff --format html`` does, as ``auditor report`` does (and with
``--export-dir``, which streams every finding to the export files), and the rendering alone; and
prints seconds, peak memory and the report size.

    python bench/diff.py                             # 1,000,000 columns per run, sandbox data
    python bench/diff.py --columns 100000 --source synthetic
    python bench/diff.py --db /tmp/diff.db --reuse   # measure again on a database built before
    python bench/diff.py --db /tmp/diff.db --reuse --reevaluate   # include the rule evaluation
    python bench/diff.py --db postgresql+psycopg://postgres@127.0.0.1:5432/bench   # any SQLAlchemy URL

Building the runs takes two to eight minutes per million columns on a busy machine; the measurements
then run in a fresh process (evaluating the rules once), so that the peak memory printed is that
of the diff and the report alone.

Targets on the 2-core machine: diff < 5 s, report < 5 s and < 10 MB, peak memory < 1 GB.
"""

from __future__ import annotations

import argparse
import importlib.util
import itertools
import os
import platform
import random
import resource
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from auditor.bigid.models import parse_cluster, parse_column
from auditor.store.db import database_url, display_url, open_database
from auditor.store.runs import list_runs
from auditor.store.writer import ClusterStats, RunTotals, SnapshotWriter

COLUMNS_PER_CLUSTER = 50
SENSITIVITY = ("low", "medium", "high")
ATTRIBUTES = ("Email", "SSN", "Phone", "Name", "IBAN", "Address")


# -- synthetic catalog -------------------------------------------------------------------------


def synthetic(
    columns: int, epoch: int, seed: int = 7
) -> Iterator[tuple[dict[str, Any], list[dict[str, Any]]]]:
    """(cluster, columns) records of a catalog; epoch 1 drifts about 1% of the columns.

    Drift at epoch 1 (per column, decided by a seeded draw): 0.4% a tag value changes, 0.15% an
    attribute's rank/confidence changes, 0.15% the column moves to the next cluster, 0.15% it is
    removed, and as many new columns are added; 1% of clusters change a label or their severity.
    """
    n_clusters = max(1, columns // COLUMNS_PER_CLUSTER)
    moved_in: dict[int, list[dict[str, Any]]] = {}
    rng = random.Random(seed)
    drift = [rng.random() for _ in range(columns)] if epoch else None
    batches: list[tuple[dict[str, Any], list[dict[str, Any]]]] = []
    for c in range(n_clusters):
        cluster_rng = random.Random(seed * 1_000_003 + c)
        labels = ["PII", "Confidential"] if c % 3 == 0 else ["Analytics"]
        severity = ("High", "Medium", "Low")[c % 3]
        if epoch and cluster_rng.random() < 0.01:
            labels = labels[:-1] if len(labels) > 1 else [*labels, "Reviewed"]
            severity = "Low" if severity != "Low" else "High"
        raw_cluster = {
            "id": f"{c:024x}",
            "name": f"cluster {c}",
            "size": COLUMNS_PER_CLUSTER,
            "labels": labels,
            "severity": severity,
            "status": "Active",
            "createdAt": "2025-07-15T14:22:30.000Z",
        }
        records = []
        for i in range(COLUMNS_PER_CLUSTER):
            n = c * COLUMNS_PER_CLUSTER + i
            if n >= columns:
                break
            record = _column(n, c)
            if drift is not None:
                draw = drift[n]
                if draw < 0.004:
                    tag = record["tags"][0]
                    tag["tagValue"] = SENSITIVITY[(SENSITIVITY.index(tag["tagValue"]) + 1) % 3]
                elif draw < 0.0055 and record["attributes"]:
                    record["attributes"][0]["rank"] = "High"
                    record["attributes"][0]["calc_confidence_level"] = 0.99
                elif draw < 0.007:
                    moved_in.setdefault((c + 1) % n_clusters, []).append(record)
                    continue
                elif draw < 0.0085:
                    continue
                elif draw < 0.01:
                    records.append(_column(columns + n, c))
            records.append(record)
        batches.append((raw_cluster, records))
    for c, (raw_cluster, records) in enumerate(batches):
        yield raw_cluster, records + moved_in.get(c, [])


def _column(n: int, c: int) -> dict[str, Any]:
    source = f"src{n % 7}"
    attributes = (
        [
            {
                "attribute_name": ATTRIBUTES[n % 6],
                "rank": "Medium",
                "calc_confidence_level": 0.5 + (n % 40) / 100,
            }
        ]
        if n % 3
        else []
    )
    return {
        "fullyQualifiedName": f"{source}.db.t{c}.col{n}",
        "columnName": f"col{n % 500}",
        "tableName": f"t{c}",
        "source": source,
        "isPrimary": n % 50 == 0,
        "dataType": ("varchar", "int", "date")[n % 3],
        "businessAttribute": None,
        "attributes": attributes,
        "tags": [
            {
                "tagId": "sens",
                "valueId": f"v{n % 3}",
                "tagName": "sensitivity",
                "tagValue": SENSITIVITY[n % 3],
            }
        ],
    }


def sandbox_catalog(columns: int, epoch: int) -> Iterator[tuple[dict[str, Any], list[dict[str, Any]]]]:
    """(cluster, columns) records of the sandbox ``Dataset`` at ``epoch`` (its own drift rates)."""
    from auditor.sandbox import Dataset, SandboxConfig

    dataset = Dataset(SandboxConfig(seed=1, epoch=epoch, clusters=max(1, columns // 50), columns=columns))
    for raw_cluster in dataset.clusters():
        seen: set[str] = set()
        records = []
        for record in dataset.columns(raw_cluster["id"]):
            fqn = record.get("fullyQualifiedName")
            if fqn not in seen:  # the fetcher drops repeated rows; do the same
                seen.add(fqn)
                records.append(record)
        yield raw_cluster, records


def write_run(engine, records) -> tuple[int, int]:
    writer = SnapshotWriter(engine, source_url="http://bench.invalid", batch_rows=50_000)
    count = 0
    for position, (raw_cluster, raw_columns) in enumerate(records):
        writer.add_cluster(parse_cluster(raw_cluster), raw_cluster, position)
        writer.add_columns(raw_cluster["id"], [(parse_column(r), r) for r in raw_columns])
        writer.finish_cluster(
            raw_cluster["id"],
            ClusterStats(total_announced=len(raw_columns), columns_fetched=len(raw_columns)),
        )
        count += len(raw_columns)
    writer.complete(RunTotals(clusters_announced=position + 1))
    return writer.run_id, count


# -- measuring ----------------------------------------------------------------------------------


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def timed(label: str, func, *args, **kwargs):
    start = time.perf_counter()
    result = func(*args, **kwargs)
    seconds = time.perf_counter() - start
    print(f"{label:<44} {seconds:8.2f} s   (peak RSS so far {peak_rss_mib():6.0f} MiB)", flush=True)
    return result, seconds


def python_peak(func, *args, **kwargs) -> float:
    """Peak Python allocation of one call, in MiB (a separate, slower, traced call)."""
    tracemalloc.start()
    func(*args, **kwargs)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return peak / 2**20


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--columns", type=int, default=1_000_000)
    parser.add_argument("--source", choices=("auto", "sandbox", "synthetic"), default="auto")
    parser.add_argument("--db", help="database file or SQLAlchemy URL (default: a temporary file)")
    parser.add_argument("--reuse", action="store_true", help="reuse the two newest runs of --db")
    parser.add_argument("--no-findings", action="store_true", help="time the catalog diff only")
    parser.add_argument(
        "--reevaluate",
        action="store_true",
        help="drop the runs' stored evaluations first (time the rules too)",
    )
    args = parser.parse_args(argv)

    workdir = Path(tempfile.mkdtemp(prefix="bench-diff-"))
    # A URL is kept as it is (a Path would fold its "//"); a file name becomes a Path.
    db: Path | str = (args.db if "://" in args.db else Path(args.db)) if args.db else workdir / "bench.db"
    engine = open_database(db)
    if not (args.reuse and len(list_runs(engine)) >= 2):
        source = args.source
        if source == "auto":
            source = "sandbox" if importlib.util.find_spec("auditor.sandbox") else "synthetic"
        make = sandbox_catalog if source == "sandbox" else synthetic
        where = display_url(database_url(db))
        print(f"building two runs of {args.columns:,} columns from the {source} catalog in {where}")
        start = time.perf_counter()
        _, n0 = write_run(engine, make(args.columns, 0))
        _, n1 = write_run(engine, make(args.columns, 1))
        print(f"  built in {time.perf_counter() - start:.1f} s ({n0:,} and {n1:,} columns)", flush=True)
        engine.dispose()
        # Measure in a fresh process, so that its peak memory is the diff's and the report's only.
        command = [sys.executable, __file__, "--db", str(db), "--reuse", "--reevaluate"]
        if args.no_findings:
            command.append("--no-findings")
        return subprocess.call(command)
    return measure(engine, db, workdir, findings=not args.no_findings, reevaluate=args.reevaluate)


def measure(engine, db: Path | str, workdir: Path, *, findings: bool, reevaluate: bool) -> int:
    from auditor.diff import compute_diff

    cpuinfo = Path("/proc/cpuinfo").read_text().splitlines()
    cpu = next((line.split(":", 1)[1].strip() for line in cpuinfo if "model name" in line), "?")
    python, sqlite = platform.python_version(), sqlite3.sqlite_version
    print(f"machine: {os.cpu_count()} cores, {cpu}, Python {python}, SQLite {sqlite}")
    runs = list_runs(engine)
    before, after = runs[-2], runs[-1]
    sizes = f"{before.columns_stored:,} and {after.columns_stored:,} columns"
    print(f"runs {before.id} and {after.id} of {display_url(database_url(db))}: {sizes}")

    diff, _ = timed("diff, catalog only", compute_diff, engine, before.id, after.id, findings=False)
    s = diff.summary()
    changes = sum(s["clusters"].values()) + sum(s["columns"].values())
    print(f"  {changes:,} changes: clusters {s['clusters']}, columns {s['columns']}")
    print(f"  drift: {changes / max(1, after.columns_stored or 0):.2%} of the columns")
    ruleset = None
    if findings:
        from auditor.engine import load_ruleset

        ruleset = load_ruleset(None)
        if reevaluate:
            from sqlalchemy import delete

            from auditor.store.schema import evaluations

            with engine.begin() as connection:
                connection.execute(delete(evaluations).where(evaluations.c.run_id.in_([before.id, after.id])))
        label = "evaluating both runs" if reevaluate else "evaluations stored before (if any)"
        diff, _ = timed(
            f"diff + findings, {label}", compute_diff, engine, before.id, after.id, ruleset=ruleset
        )
        diff, _ = timed(
            "diff + findings, evaluations reused", compute_diff, engine, before.id, after.id, ruleset=ruleset
        )
        print(f"  findings: {diff.summary()['findings']}")

    from auditor.diff.html import render_diff_html
    from auditor.render.context import ReportInput, RunView, build_context
    from auditor.render.report import render_html

    full, _ = timed(
        "report (gather + render, auditor diff --format html)",
        render_diff_html,
        engine,
        diff,
        ruleset=ruleset,
    )
    from auditor.render.report import build_report_bundle

    cli, _ = timed(
        "report (gather + render, auditor report)",
        build_report_bundle,
        engine,
        after.id,
        against=before.id,
        ruleset=ruleset,
    )
    print(f"  auditor report: {len(cli.html.encode()) / 1e6:.2f} MB", flush=True)
    exports = workdir / "export"
    timed(
        "report + exports (auditor report --export-dir)",
        lambda: build_report_bundle(
            engine, after.id, against=before.id, ruleset=ruleset, with_exports=True
        ).write(workdir / "report-exports.html", exports),
    )
    sizes = ", ".join(f"{p.name} {p.stat().st_size / 1e6:.0f} MB" for p in sorted(exports.iterdir()))
    print(f"  exports: {sizes}", flush=True)
    shutil.rmtree(exports)  # about 800 MB at 1M columns
    # Rendering alone, from data prepared in memory: the findings that changed plus the first 500
    # still-open ones (the page shows at most 500 per section; holding all ~385k open findings as
    # objects would measure this script's memory, not the report's).
    shown = [
        f.finding
        for name in ("new", "open", "newly_waived", "waiver_expired")
        for f in itertools.islice(diff.findings[name], 500 if name == "open" else None)
    ]
    data = ReportInput(
        run=RunView.from_info(after),
        findings=shown,
        rules={},
        evidence=_evidence(),
        against=RunView.from_info(before),
        diff=diff.to_json(open_findings=False),
    )
    html, _ = timed("report rendering only (context + template)", lambda: render_html(build_context(data)))
    report = workdir / "report.html"
    report.write_text(full, encoding="utf-8")
    full_mb, html_mb = len(full.encode()) / 1e6, len(html.encode()) / 1e6
    print(f"  report: {full_mb:.2f} MB (rendering-only variant {html_mb:.2f} MB) at {report}")
    print(f"peak RSS of the measuring process: {peak_rss_mib():.0f} MiB")
    traced = python_peak(compute_diff, engine, before.id, after.id, findings=False)
    print(f"python peak allocation of the catalog diff: {traced:.1f} MiB")
    return 0


def _evidence():
    from datetime import UTC, datetime

    from auditor import __version__
    from auditor.render.context import Evidence

    return Evidence(
        generated_at=datetime.now(UTC).isoformat(timespec="seconds"),
        tool_version=__version__,
        rules_source="built-in pack",
        rules_digest=None,
        rule_count=0,
    )


if __name__ == "__main__":
    sys.exit(main())
