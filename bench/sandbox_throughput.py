"""How fast the sandbox serves columns to a simple paging client.

Starts an in-process sandbox and pulls every column of every cluster with N client threads (one
``requests.Session`` each, pages of ``--page`` rows, ``skip`` advancing by the rows received), then
prints columns/second, requests/second and the server's peak memory growth. Usage::

    python bench/sandbox_throughput.py [--columns 200000] [--clusters 2000] [--threads 4] [--page 1000]
"""

from __future__ import annotations

import argparse
import os
import platform
import queue
import resource
import threading
import time

import requests

from auditor.sandbox import SandboxConfig, SandboxServer
from auditor.sandbox.server import SIMILAR_PATH


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--columns", type=int, default=200_000)
    parser.add_argument("--clusters", type=int, default=2_000)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--page", type=int, default=1_000)
    parser.add_argument("--latency", type=float, default=0.0)
    parser.add_argument(
        "--subprocess",
        action="store_true",
        help="Run the server as `auditor sandbox serve` in its own process.",
    )
    args = parser.parse_args()
    if args.subprocess:
        run_external(args)
        return

    config = SandboxConfig(clusters=args.clusters, columns=args.columns, latency=args.latency)
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with SandboxServer(config) as server:
        ids: queue.Queue[str] = queue.Queue()
        for cid in server.dataset.cluster_ids():
            ids.put(cid)
        counts = [0] * args.threads

        def worker(n: int) -> None:
            session = requests.Session()
            session.headers["Authorization"] = f"Bearer {config.key}"
            while True:
                try:
                    cid = ids.get_nowait()
                except queue.Empty:
                    return
                skip = 0
                while True:
                    body = session.get(
                        server.url + SIMILAR_PATH, params={"clusterId": cid, "limit": args.page, "skip": skip}
                    ).json()
                    rows = len(body["results"])
                    counts[n] += rows
                    skip += rows
                    if not rows or skip >= body["totalCount"]:
                        break

        started = time.perf_counter()
        threads = [threading.Thread(target=worker, args=(n,)) for n in range(args.threads)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        elapsed = time.perf_counter() - started
        requests_made = server.stats.count(SIMILAR_PATH)
    total = sum(counts)
    assert total == args.columns, (total, args.columns)
    rss_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(f"machine: {os.cpu_count()} CPUs, {cpu_model()}, Python {platform.python_version()}")
    print(
        f"sandbox: {args.clusters} clusters, {total} columns, page {args.page}, {args.threads} client threads"
    )
    print(
        f"served {total} columns in {elapsed:.2f} s: {total / elapsed:,.0f} columns/s, "
        f"{requests_made / elapsed:,.0f} requests/s ({requests_made} requests)"
    )
    print(f"peak RSS growth (client and server in one process): {(rss_after - rss_before) / 1024:.0f} MiB")


def run_external(args: argparse.Namespace) -> None:
    """The server in its own process (its own GIL), the client threads here."""
    import subprocess
    import sys

    from auditor.sandbox import Dataset

    command = [
        sys.executable,
        "-m",
        "auditor.cli.main",
        "sandbox",
        "serve",
        "--port",
        "0",
        "--clusters",
        str(args.clusters),
        "--columns",
        str(args.columns),
        "--latency",
        str(args.latency),
    ]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        url = process.stdout.readline().strip().split("=", 1)[1]
        key = process.stdout.readline().strip().split("=", 1)[1]
        ids: queue.Queue[str] = queue.Queue()
        for cid in Dataset(SandboxConfig(clusters=args.clusters, columns=args.columns)).cluster_ids():
            ids.put(cid)
        counts = [0] * args.threads
        made = [0] * args.threads

        def worker(n: int) -> None:
            session = requests.Session()
            session.headers["Authorization"] = f"Bearer {key}"
            while True:
                try:
                    cid = ids.get_nowait()
                except queue.Empty:
                    return
                skip = 0
                while True:
                    body = session.get(
                        url + SIMILAR_PATH, params={"clusterId": cid, "limit": args.page, "skip": skip}
                    ).json()
                    made[n] += 1
                    rows = len(body["results"])
                    counts[n] += rows
                    skip += rows
                    if not rows or skip >= body["totalCount"]:
                        break

        started = time.perf_counter()
        threads = [threading.Thread(target=worker, args=(n,)) for n in range(args.threads)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        elapsed = time.perf_counter() - started
    finally:
        process.terminate()
        process.wait(timeout=10)
    total = sum(counts)
    assert total == args.columns, (total, args.columns)
    print(f"machine: {os.cpu_count()} CPUs, {cpu_model()}, Python {platform.python_version()}")
    print(
        f"sandbox (own process): {args.clusters} clusters, {total} columns, page {args.page}, "
        f"{args.threads} client threads"
    )
    print(
        f"served {total} columns in {elapsed:.2f} s: {total / elapsed:,.0f} columns/s, "
        f"{sum(made) / elapsed:,.0f} requests/s ({sum(made)} requests)"
    )


if __name__ == "__main__":
    main()
