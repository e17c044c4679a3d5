"""Benchmark: render the HTML report (and the email) for very large diffs.

Builds the report input as the diff and check stages hand it over (JSON-shaped dicts, no database),
with N column changes spread over 500 clusters and N/5 new and N/5 resolved findings, then times
``build_context`` (grouping, counting, capping), the Jinja render, and the email message. Prints
seconds, the report size and the Python peak memory. Targets on the 2-core machine: at 100,000
changes the report renders in under 5 s and stays under 10 MB.

    /work/venv/bin/python bench/report.py [--changes 100000 1000000] [--max-rows 500]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
import tracemalloc
from pathlib import Path

from auditor.render.context import Evidence, ReportInput, RuleView, RunView, build_context
from auditor.render.email import build_message
from auditor.render.env import make_environment
from auditor.render.report import ReportBundle, render_html

RULE = RuleView(
    id="high-sensitivity-without-confidential",
    title="High-sensitivity column in a cluster not labelled Confidential",
    severity="high",
    explanation="the column has a tag sensitivity that is high and the cluster lacks the label Confidential",
    remediation="Label the cluster Confidential.",
)


def make_input(changes: int) -> ReportInput:
    findings = [
        {
            "rule": RULE.id,
            "severity": ("high", "medium", "low")[i % 3],
            "cluster_id": f"cluster-{i % 500}",
            "column": f"src.schema.table{i}.ssn",
            "columns": [f"src.schema.table{i}.ssn"],
            "message": f"column src.schema.table{i}.ssn holds high-sensitivity data",
            "fingerprint": f"{i:032x}",
            "status": "new",
            "first_seen_run": 2,
            "explanation": [{"kind": "column_added", "text": f"column src.schema.table{i}.ssn added"}],
        }
        for i in range(changes // 5)
    ]
    quarter = changes // 4
    diff = {
        "from_run": 1,
        "to_run": 2,
        "clusters": {"added": [], "removed": [], "changed": []},
        "columns": {
            "added": [{"cluster_id": f"cluster-{i % 500}", "column": f"s.t.c{i}.a"} for i in range(quarter)],
            "removed": [
                {"cluster_id": f"cluster-{i % 500}", "column": f"s.t.c{i}.r"} for i in range(quarter)
            ],
            "changed": [
                {
                    "cluster_id": f"cluster-{i % 500}",
                    "column": f"s.t.c{i}.c",
                    "changes": {
                        "tags": {"before": [], "after": [{"tagName": "sensitivity", "tagValue": "high"}]}
                    },
                }
                for i in range(quarter)
            ],
            "moved": [
                {
                    "column": f"s.t.c{i}.m",
                    "from_cluster": f"cluster-{i % 500}",
                    "to_cluster": f"cluster-{(i + 1) % 500}",
                }
                for i in range(changes - 3 * quarter)
            ],
        },
        "findings": {
            "new": findings,
            "resolved": findings,
            "open": [],
            "newly_waived": [],
            "waiver_expired": [],
        },
    }
    run = RunView(
        2, "complete", "2026-11-28T10:00:00Z", "2026-11-28T10:10:00Z", "https://bigid.example.net", "0.1.0"
    )
    before = RunView(
        1, "complete", "2026-11-21T10:00:00Z", "2026-11-21T10:10:00Z", "https://bigid.example.net", "0.1.0"
    )
    evidence = Evidence("2026-11-28T12:00:00Z", "0.1.0", "built-in pack", "0" * 64, 1)
    return ReportInput(
        run=run, against=before, findings=findings, rules={RULE.id: RULE}, evidence=evidence, diff=diff
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--changes", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--max-rows", type=int, default=500)
    args = parser.parse_args(argv)
    cpuinfo = Path("/proc/cpuinfo").read_text().splitlines()
    cpu = next((line.split(":", 1)[1].strip() for line in cpuinfo if "model name" in line), "?")
    print(f"machine: {os.cpu_count()} cores, {cpu}, Python {platform.python_version()}")
    env = make_environment()
    for changes in args.changes:
        data = make_input(changes)
        start = time.perf_counter()
        context = build_context(data, max_rows=args.max_rows)
        built = time.perf_counter()
        html = render_html(context, env)
        rendered = time.perf_counter()
        message = build_message(
            ReportBundle(data, context, html), to=["team@example.org"], attach_report=True
        )
        mailed = time.perf_counter()
        tracemalloc.start()  # a second pass for memory: tracing slows Python down several times
        render_html(build_context(data, max_rows=args.max_rows), env)
        _current, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        size = len(html.encode("utf-8"))
        print(
            f"{changes:>9,} changes + {2 * (changes // 5):,} findings: context {built - start:5.2f} s, "
            f"render {rendered - built:5.2f} s, total {rendered - start:5.2f} s, "
            f"report {size / 1e6:5.2f} MB ({size / max(changes, 1):.1f} bytes/change), "
            f"email {mailed - rendered:5.2f} s ({len(bytes(message)) / 1e6:.2f} MB, report attached), "
            f"python peak {peak / 2**20:6.1f} MiB over the input",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
