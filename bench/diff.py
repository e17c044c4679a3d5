"""Benchmark: diff two large runs with about 1% drift, then render the HTML report of the diff.

Builds two runs through the real :class:`auditor.store.writer.SnapshotWriter` in a SQLite file:
epoch 0 and epoch 1 of the sandbox ``Dataset`` when ``--source sandbox`` (the default when the
sandbox is installed), or of a synthetic catalog with the same drift mix otherwise. Then times
``compute_diff`` (catalog only, and with findings from the built-in rule pack when the engine is
there) and the report rendering, and prints seconds, peak memory and the report size.

    python bench/diff.py                     # 1,000,000 columns per run
    python bench/diff.py --columns 100000    # smaller
    python bench/diff.py --db /tmp/diff.db --reuse   # keep and reuse the built database

Targets on the 2-core machine: diff < 5 s, report < 5 s and < 10 MB, peak memory < 1 GB.
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import resource
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from auditor.bigid.models import parse_cluster, parse_column
from auditor.store.db import open_database
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
    """(cluster, columns) records of the sandbox ``Dataset`` at ``epoch``."""
    from auditor.sandbox import Dataset, SandboxConfig  # type: ignore[attr-defined]

    dataset = Dataset(SandboxConfig(columns=columns, epoch=epoch))
    for raw_cluster in dataset.clusters():
        yield raw_cluster, list(dataset.columns(raw_cluster["id"]))


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
    tracemalloc.start()
    start = time.perf_counter()
    result = func(*args, **kwargs)
    seconds = time.perf_counter() - start
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    print(f"{label:<34} {seconds:8.2f} s   python peak {peak / 2**20:8.1f} MiB", flush=True)
    return result, seconds, peak


def render(diff, engine, out: Path) -> int | None:
    """Render the HTML report for the diff's newer run; None when the renderer is not installed."""
    try:
        from auditor.render.report import render_diff_report
    except ImportError:
        return None
    html = render_diff_report(engine, diff)
    out.write_text(html, encoding="utf-8")
    return out.stat().st_size


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--columns", type=int, default=1_000_000)
    parser.add_argument("--source", choices=("auto", "sandbox", "synthetic"), default="auto")
    parser.add_argument("--db", help="database file (default: a temporary one)")
    parser.add_argument("--reuse", action="store_true", help="reuse the two newest runs of --db")
    parser.add_argument("--no-findings", action="store_true", help="time the catalog diff only")
    args = parser.parse_args(argv)

    cpuinfo = Path("/proc/cpuinfo").read_text().splitlines()
    cpu = next((line.split(":", 1)[1].strip() for line in cpuinfo if "model name" in line), "?")

    print(f"machine: {os.cpu_count()} cores, {cpu}, Python {platform.python_version()}")
    workdir = Path(tempfile.mkdtemp(prefix="bench-diff-"))
    db = Path(args.db) if args.db else workdir / "bench.db"
    engine = open_database(db)

    source = args.source
    if source == "auto":
        try:
            import auditor.sandbox as sandbox

            source = "sandbox" if hasattr(sandbox, "Dataset") else "synthetic"
        except ImportError:
            source = "synthetic"
    if args.reuse and len(list_runs(engine)) >= 2:
        runs = list_runs(engine)
        before, after = runs[-2].id, runs[-1].id
        print(f"reusing runs {before} and {after} of {db}")
    else:
        make = sandbox_catalog if source == "sandbox" else synthetic
        print(f"building two runs of {args.columns:,} columns from the {source} catalog in {db}")
        start = time.perf_counter()
        before, n0 = write_run(engine, make(args.columns, 0))
        after, n1 = write_run(engine, make(args.columns, 1))
        print(f"  built in {time.perf_counter() - start:.1f} s ({n0:,} and {n1:,} columns)")

    from auditor.diff import compute_diff

    diff, catalog_s, _ = timed("diff, catalog only", compute_diff, engine, before, after, findings=False)
    summary = diff.summary()
    print(f"  changes: clusters {summary['clusters']}, columns {summary['columns']}")
    figures = {"diff_s": catalog_s}
    if not args.no_findings:
        import importlib

        try:
            rules_engine = importlib.import_module("auditor.engine")
        except ImportError:
            rules_engine = None
        if not hasattr(rules_engine, "findings_for_run"):
            print("  (rules engine not installed: findings skipped)")
        else:
            diff, full_s, _ = timed("diff with findings (built-in pack)", compute_diff, engine, before, after)
            again, cached_s, _ = timed(
                "diff with findings, evaluated before", compute_diff, engine, before, after
            )
            print(f"  findings: {again.summary()['findings']}")
            figures.update(findings_first_s=full_s, findings_cached_s=cached_s)
    report = workdir / "report.html"
    rendered = timed("report rendering", render, diff, engine, report)
    size = rendered[0]
    if size is None:
        print("  (report renderer not installed: rendering skipped)")
    else:
        print(f"  report: {size / 1e6:.2f} MB at {report}")
    print(f"peak RSS of the process: {peak_rss_mib():.0f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
