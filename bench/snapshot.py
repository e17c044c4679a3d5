"""Benchmark: a full snapshot of a sandbox tenant, end to end over loopback HTTP.

The sandbox runs in a separate process (``python -m auditor.cli.main sandbox serve``) so that it does
not share this process's GIL, as a real tenant would not. This process runs the real fetch stage
(``auditor.snapshot.take_snapshot``: worker threads, one writer, a SQLite file) and prints:

* columns/second end to end, requests made, requests/second;
* CPU per column: this process, its page-decoding processes (``--processes``), the sandbox;
* peak memory of this process (``ru_maxrss``) and the database size;
* with ``--latency`` (seconds added by the sandbox per request): requests/second against the
  ceiling ``workers / latency``.

Usage::

    python bench/snapshot.py                      # 200,000 columns
    python bench/snapshot.py --columns 1000000    # 1,000,000 columns
    python bench/snapshot.py --latency 0.2        # far-away tenant: is the pool kept busy?
    python bench/snapshot.py --processes 0        # decode pages in the fetch threads (no pool)
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from auditor.bigid.client import BigIDClient, ClientOptions
from auditor.snapshot import take_snapshot
from auditor.store.db import open_database


def start_sandbox(args: argparse.Namespace) -> tuple[subprocess.Popen[str], str, str]:
    command = [
        sys.executable,
        "-m",
        "auditor.cli.main",
        "--quiet",
        "sandbox",
        "serve",
        "--port",
        "0",
        "--clusters",
        str(args.clusters),
        "--columns",
        str(args.columns),
        "--seed",
        str(args.seed),
    ]
    if args.latency:
        command += ["--latency", str(args.latency)]
    if args.max_page:
        command += ["--max-page", str(args.max_page)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    url = token = ""
    while not (url and token):
        line = process.stdout.readline()
        if not line:
            raise SystemExit("the sandbox did not start")
        if line.startswith("export BIGID_URL="):
            url = line.strip().split("=", 1)[1]
        elif line.startswith("export BIGID_TOKEN="):
            token = line.strip().split("=", 1)[1]
    return process, url, token


def _cpu(who: int) -> float:
    usage = resource.getrusage(who)
    return usage.ru_utime + usage.ru_stime


class DescendantCpu:
    """CPU seconds of this process's descendants outside ``exclude`` (the decoding processes, which
    are children of the multiprocessing forkserver, not ours: ``RUSAGE_CHILDREN`` never sees them).
    Sampled from /proc every 0.1 s, so up to 0.1 s of each process's last work can be missed."""

    def __init__(self, exclude: int) -> None:
        self.exclude = exclude
        self.seen: dict[int, float] = {}
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.tick = os.sysconf("SC_CLK_TCK")

    def __enter__(self) -> DescendantCpu:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join()
        self._sample()

    @property
    def seconds(self) -> float:
        return sum(self.seen.values())

    def _run(self) -> None:
        while not self.stop.wait(0.1):
            self._sample()

    def _sample(self) -> None:
        """Walk the process tree from this process through ``/proc/PID/task/TID/children`` (a few
        small files per sample: a scan of all of ``/proc`` every 0.1 s cost this process ~4% of its
        CPU); fall back to that scan where the kernel does not offer the children files."""
        me = os.getpid()
        if not Path(f"/proc/{me}/task/{me}/children").exists():
            self._scan_all()
            return
        stack = [me]
        while stack:
            pid = stack.pop()
            try:
                tasks = list(Path(f"/proc/{pid}/task").iterdir())
            except OSError:
                continue
            for task in tasks:
                try:
                    children = (task / "children").read_text().split()
                except OSError:
                    continue
                for child in map(int, children):
                    if child == self.exclude:
                        continue
                    stack.append(child)
                    seconds = self._cpu_of(child)
                    if seconds is not None:
                        self.seen[child] = max(self.seen.get(child, 0.0), seconds)

    def _cpu_of(self, pid: int) -> float | None:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return None
        return (int(fields[11]) + int(fields[12])) / self.tick

    def _scan_all(self) -> None:
        parents: dict[int, int] = {}
        cpu: dict[int, float] = {}
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            pid = int(entry.name)
            parents[pid] = int(fields[1])
            cpu[pid] = (int(fields[11]) + int(fields[12])) / self.tick
        me = os.getpid()
        for pid in cpu:
            ancestor = parents.get(pid)
            while ancestor not in (None, 0, 1, me, self.exclude):
                ancestor = parents.get(ancestor)
            if ancestor == me and pid != self.exclude:
                self.seen[pid] = max(self.seen.get(pid, 0.0), cpu[pid])


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--columns", type=int, default=None, help="columns in the tenant [200,000; 20,000 with --latency]"
    )
    parser.add_argument("--clusters", type=int, default=None, help="clusters [columns / 200]")
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument(
        "--processes",
        type=int,
        default=None,
        help="page-decoding processes, 0: decode in the fetch threads [2 on 2+ CPUs]",
    )
    parser.add_argument("--page-size", type=int, default=1000)
    parser.add_argument("--latency", type=float, default=0.0, help="seconds the sandbox adds per request")
    parser.add_argument("--max-page", type=int, default=None, help="sandbox page cap")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--db", default=None, help="database file [a temporary file]")
    args = parser.parse_args()
    if args.columns is None:
        args.columns = 20_000 if args.latency else 200_000
    if args.clusters is None:
        args.clusters = max(1, args.columns // 200)

    process, url, token = start_sandbox(args)
    tmp = tempfile.TemporaryDirectory(prefix="auditor-bench-")
    db = Path(args.db) if args.db else Path(tmp.name) / "bench.db"
    try:
        engine = open_database(db)
        rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        cpu_before = _cpu(resource.RUSAGE_SELF)
        client = BigIDClient(
            ClientOptions(url=url, token=token, workers=args.workers, page_size=args.page_size)
        )
        started = time.perf_counter()
        with client, DescendantCpu(exclude=process.pid) as decoders:
            run = take_snapshot(engine, client, workers=args.workers, processes=args.processes)
        elapsed = time.perf_counter() - started
        cpu = _cpu(resource.RUSAGE_SELF) - cpu_before
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        engine.dispose()
        size = sum(p.stat().st_size for p in db.parent.glob(db.name + "*"))
    finally:
        process.terminate()
        process.wait(timeout=10)
    sandbox_cpu = _cpu(resource.RUSAGE_CHILDREN)

    columns = run.columns_stored or 0
    requests = run.requests or 0
    print(f"machine: {os.cpu_count()} CPUs, {cpu_model()}, Python {platform.python_version()}")
    print(
        f"tenant: {run.clusters_stored} clusters, {columns:,} columns; workers {args.workers}, "
        f"page size {args.page_size}, latency {args.latency:g} s"
    )
    print(f"run {run.id}: {run.status} in {elapsed:.2f} s")
    print(f"columns/s: {columns / elapsed:,.0f}")
    print(f"requests: {requests:,} ({run.retries or 0} retries), requests/s: {requests / elapsed:,.1f}")
    per = 1e6 / max(columns, 1)
    decoding = decoders.seconds
    print(
        f"CPU: this process {cpu:.1f} s = {cpu * per:.0f} us/column "
        f"(its threads share one core: ceiling {columns / cpu if cpu else 0:,.0f} columns/s); "
        f"decoding processes {decoding:.1f} s = {decoding * per:.0f} us/column; "
        f"sandbox {sandbox_cpu:.1f} s = {sandbox_cpu * per:.0f} us/column; "
        f"load average {os.getloadavg()[0]:.1f}"
    )
    print(
        f"CPU per column, client side: {(cpu + decoding) * per:.0f} us; with the sandbox: "
        f"{(cpu + decoding + sandbox_cpu) * per:.0f} us (decoding processes: {run.details.get('processes')})"
    )
    print(f"peak memory (ru_maxrss): {peak / 1024:,.0f} MiB (before the run: {rss_before / 1024:,.0f} MiB)")
    print(f"database: {size / 2**20:,.1f} MiB ({size / max(columns, 1):,.0f} bytes/column)")
    if args.latency:
        ceiling = args.workers / args.latency
        print(
            f"requests/s vs workers/latency: {requests / elapsed:,.2f} / {ceiling:,.2f} "
            f"= {requests / elapsed / ceiling:.0%}"
        )
    tmp.cleanup()


if __name__ == "__main__":
    main()
