"""Experiment: the whole built-in pack, compiled by the real rule compiler, in SQLite and in DuckDB.

Evidence for the design decision ``bench/columnar.py`` started (bench/RESULTS.md): that script
timed five hand-written statements; this one runs the product's own evaluation, rule by rule
(:func:`auditor.engine.evaluate.evaluate_rule`: the compiled SQL, then the findings built in Python,
messages and fingerprints included), over the same run held in both engines, and checks that both
give the same findings. It answers: would the pack meet its 5-second target at 1,000,000 columns
with a columnar engine as the rule store, findings built, on the same two cores?

The run is copied from the SQLite snapshot into a DuckDB file once (through Arrow tables; timed,
not counted: a columnar store would be written at snapshot time). On DuckDB the compiler's
PostgreSQL spellings are used (``lower()`` folding, ``strpos``, ``string_agg``, correlated
``EXISTS``), and regular expressions go to ``regexp_matches`` (RE2: the built-in pack's patterns
mean the same there; a product would have to check every pattern's meaning, see the RESULTS
entry). DuckDB runs each statement on all its threads; the rules are timed one after another and then two
at once (two connections in two threads, as the product evaluates PostgreSQL; the seconds per rule
printed are those of the second pass). SQLite runs as the product does (two worker processes at 1M
columns).

DuckDB, its SQLAlchemy dialect and pyarrow are not dependencies of the project:

    pip install duckdb duckdb-engine pyarrow
    python bench/rules.py --db /tmp/rules1m.db --pack-only   # builds the run
    python bench/columnar_pack.py --db /tmp/rules1m.db
"""

from __future__ import annotations

import argparse
import os
import platform
import sqlite3
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from sandbox_throughput import cpu_model  # bench/ is the script's folder, first on sys.path
from sqlalchemy import Boolean, Float, Integer, create_engine
from sqlalchemy.ext.compiler import compiles

from auditor.engine import evaluate_each, load_ruleset, sqlfuncs
from auditor.engine.evaluate import evaluate_rule, rule_weight
from auditor.engine.sqlfuncs import (
    CaseFolded,
    GroupFolded,
    GroupLowered,
    JoinedText,
    RegexSearch,
    TextContains,
    UnicodeLower,
)
from auditor.store import schema
from auditor.store.db import database_url, open_database

# This run's rows of each table the rules read ({run} is the run's id); JSON columns are left out.
COPY = {
    "runs": "id = {run}",
    "run_clusters": "run_id = {run}",
    "run_columns": "run_id = {run}",
    "cluster_versions": "hash IN (SELECT cluster_hash FROM run_clusters WHERE run_id = {run})",
    "cluster_labels": "cluster_hash IN (SELECT cluster_hash FROM run_clusters WHERE run_id = {run})",
    "column_versions": "id IN (SELECT column_id FROM run_columns WHERE run_id = {run})",
    "column_tags": "column_id IN (SELECT column_id FROM run_columns WHERE run_id = {run})",
    "column_attributes": "column_id IN (SELECT column_id FROM run_columns WHERE run_id = {run})",
}
SKIPPED = {"raw", "details", "started_at", "finished_at"}


def duckdb_spellings() -> None:
    """Compile the rule functions for the ``duckdb`` dialect (PostgreSQL's forms, RE2 searches)."""

    def lowered(element: Any, compiler: Any, **kw: Any) -> str:
        value = next(iter(element.clauses))  # GroupFolded and GroupLowered also hold the raw column
        return f"lower({compiler.process(value, **kw)})"

    for cls in (CaseFolded, UnicodeLower, GroupFolded, GroupLowered):
        compiles(cls, "duckdb")(lowered)

    # PostgreSQL's own spellings where DuckDB reads them alike (strpos, string_agg)
    compiles(TextContains, "duckdb")(sqlfuncs._contains_pg)
    compiles(JoinedText, "duckdb")(sqlfuncs._joined_pg)

    @compiles(RegexSearch, "duckdb")
    def _regex(element: Any, compiler: Any, **kw: Any) -> str:
        value, pattern = list(element.clauses)
        flags = ", 'i'" if element.ignore_case else ""
        return f"regexp_matches({compiler.process(value, **kw)}, {compiler.process(pattern, **kw)}{flags})"


def arrow_type(column: Any) -> Any:
    import pyarrow as pa

    kind = column.type
    if isinstance(kind, Boolean):
        return pa.bool_()
    if isinstance(kind, Float):
        return pa.float64()
    if isinstance(kind, Integer):
        return pa.int64()
    return pa.string()


def copy_run(source: sqlite3.Connection, duck: Any, run_id: int) -> tuple[float, dict[str, int]]:
    """This run's rows of every table of :data:`COPY`, from SQLite into DuckDB; seconds, row counts."""
    import pyarrow as pa

    started = time.perf_counter()
    counts = {}
    for name, where in COPY.items():
        table = schema.metadata.tables[name]
        columns = [c for c in table.columns if c.name not in SKIPPED]
        names = ", ".join(f'"{c.name}"' for c in columns)
        rows = source.execute(f"SELECT {names} FROM {name} WHERE {where.format(run=int(run_id))}").fetchall()
        arrays = []
        for i, column in enumerate(columns):
            values = [row[i] for row in rows]
            if isinstance(column.type, Boolean):
                values = [None if v is None else bool(v) for v in values]
            arrays.append(pa.array(values, type=arrow_type(column)))
        frame = pa.Table.from_arrays(arrays, names=[c.name for c in columns])  # noqa: F841 - read by DuckDB
        duck.execute(f"CREATE TABLE {name} AS SELECT * FROM frame")
        counts[name] = len(rows)
    return time.perf_counter() - started, counts


def comparable(findings: list[Any]) -> list[tuple]:
    """What a finding says, in an order independent of how it was found."""
    return sorted(
        (f.rule, f.fingerprint, f.cluster_id or "", f.column or "", f.message, tuple(sorted(f.columns)))
        for f in findings
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", required=True, help="a SQLite snapshot file (bench/rules.py --db)")
    parser.add_argument("--duck", default=None, help="the DuckDB copy (default: the --db path + .duckdb)")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="DuckDB's threads")
    parser.add_argument("--skip-sqlite", action="store_true", help="time DuckDB only (no comparison)")
    args = parser.parse_args()
    import duckdb  # not a dependency of the project (see the docstring)

    duckdb_spellings()
    print(f"python {platform.python_version()}, {os.cpu_count()} CPUs, {cpu_model()}")
    print(f"sqlite {sqlite3.sqlite_version}, duckdb {duckdb.__version__} ({args.threads} threads)")
    source = sqlite3.connect(f"file:{args.db}?mode=ro", uri=True)
    run_id = source.execute("SELECT max(id) FROM runs WHERE status = 'complete'").fetchone()[0]
    duck_path = Path(args.duck or f"{args.db}.duckdb")
    if not duck_path.exists():
        duck = duckdb.connect(str(duck_path))
        seconds, counts = copy_run(source, duck, run_id)
        duck.close()
        print(f"run {run_id} copied into {duck_path} in {seconds:.1f} s (not counted): {counts}")
    ruleset = load_ruleset(None)  # the built-in pack
    rules = [rule for rule in ruleset.rules if rule.enabled]

    engine = create_engine(
        f"duckdb:///{duck_path}", connect_args={"read_only": True, "config": {"threads": args.threads}}
    )
    seconds: dict[str, float] = {}

    def one(rule: Any) -> list[Any]:
        with engine.connect() as connection:
            began = time.perf_counter()
            found = evaluate_rule(connection, run_id, rule)
            seconds[rule.id] = time.perf_counter() - began
            return found

    walls = {}
    for workers in (1, 2):  # rules one after another, then two at once (one connection each)
        started = time.perf_counter()
        with ThreadPoolExecutor(max_workers=workers) as pool:
            heaviest_first = sorted(rules, key=lambda rule: -rule_weight(rule))
            duck_found = [f for found in pool.map(one, heaviest_first) for f in found]
        walls[workers] = time.perf_counter() - started
    duck_total = walls[2]

    lite_found: list[Any] = []
    lite_seconds: dict[str, float] = {}
    lite_total = 0.0
    if not args.skip_sqlite:
        lite = open_database(database_url(args.db))
        started = time.perf_counter()
        for rule, items, rule_seconds in evaluate_each(lite, run_id, ruleset):
            lite_found.extend(items)
            lite_seconds[rule.id] = rule_seconds
        lite_total = time.perf_counter() - started
        lite.dispose()

    print(f"\n{'rule':44s} {'findings':>9s} {'SQLite s':>9s} {'DuckDB s':>9s}")
    by_rule: dict[str, int] = {}
    for finding in duck_found:
        by_rule[finding.rule] = by_rule.get(finding.rule, 0) + 1
    for rule in rules:
        lite_s = f"{lite_seconds[rule.id]:9.3f}" if rule.id in lite_seconds else f"{'-':>9s}"
        print(f"{rule.id:44s} {by_rule.get(rule.id, 0):9,d} {lite_s} {seconds[rule.id]:9.3f}")
    print(f"{'whole pack (wall), rules one at a time':44s} {len(duck_found):9,d} {'':9s} {walls[1]:9.3f}")
    print(f"{'whole pack (wall), two at once':44s} {len(duck_found):9,d} {lite_total:9.3f} {duck_total:9.3f}")
    if lite_found:
        same = comparable(lite_found) == comparable(duck_found)
        print(f"same findings, messages, fingerprints and columns in both: {'yes' if same else 'NO'}")
        print(f"SQLite / DuckDB wall: {lite_total / duck_total:.2f}x")


if __name__ == "__main__":
    main()
