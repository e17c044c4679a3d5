"""Experiment: five of the pack's heaviest rules in SQLite against a columnar engine (DuckDB).

Evidence for a design decision, not part of the product: the built-in pack misses its 5-second
target at 1,000,000 columns on SQLite (bench/RESULTS.md), because each rule probes every column of
the run against sets built from 1.7M tags (b-tree seeks, ~0.25 s per set at 1M) or sorts 1M rows.
This script copies one run of a snapshot database (such as the one ``bench/rules.py`` builds) into
an in-memory DuckDB database, then runs the same five rules, written as the SQL the compiler emits
for SQLite (membership in sets, ``NOCASE``) and as the same statements for DuckDB (``lower()``),
and prints each one's seconds in both engines, the ratio, and whether both found the same rows.
The copy (through CSV files in a temporary folder) is timed but not counted: a columnar engine
would be fed at snapshot time.

DuckDB is not a dependency of the project; install it to run this:

    pip install duckdb
    python bench/rules.py --columns 1000000 --db /tmp/rules1m.db --pack-only   # builds the run
    python bench/columnar.py --db /tmp/rules1m.db
"""

from __future__ import annotations

import argparse
import csv
import os
import platform
import sqlite3
import tempfile
import time
from pathlib import Path

from sandbox_throughput import cpu_model  # bench/ is the script's folder, first on sys.path

# (table, SELECT of this run's rows). Versions, tags and attributes are those the run refers to.
COPY = {
    "run_columns": "SELECT run_id, cluster_id, fqn, column_id FROM run_columns WHERE run_id = :run",
    "run_clusters": "SELECT run_id, cluster_id, cluster_hash FROM run_clusters WHERE run_id = :run",
    "column_versions": "SELECT id, column_name, source FROM column_versions"
    " WHERE id IN (SELECT column_id FROM run_columns WHERE run_id = :run)",
    "column_tags": "SELECT column_id, tag_name, tag_value, is_mutually_exclusive FROM column_tags"
    " WHERE column_id IN (SELECT column_id FROM run_columns WHERE run_id = :run)",
    "column_attributes": "SELECT column_id, rank FROM column_attributes"
    " WHERE column_id IN (SELECT column_id FROM run_columns WHERE run_id = :run)",
    "cluster_labels": "SELECT cluster_hash, label FROM cluster_labels"
    " WHERE cluster_hash IN (SELECT cluster_hash FROM run_clusters WHERE run_id = :run)",
}

# Each rule once, with {eq} standing for a case-insensitive equality and {lo} for a folded value:
# SQLite compares with the NOCASE collation (as the compiler does), DuckDB lowers both sides.
RULES = {
    "high-sensitivity-without-confidential": """
SELECT rc.cluster_id, rc.fqn FROM run_columns rc WHERE rc.run_id = :run
  AND rc.column_id IN (SELECT column_id FROM column_tags
                       WHERE {lo(tag_name)} = 'sensitivity' AND {lo(tag_value)} = 'high')
  AND rc.cluster_id IN (SELECT rcl.cluster_id FROM run_clusters rcl WHERE rcl.run_id = :run
                        AND NOT EXISTS (SELECT 1 FROM cluster_labels l WHERE l.cluster_hash = rcl.cluster_hash
                                        AND {lo(l.label)} = 'confidential'))""",
    "duplicate-columns-across-sources": """
SELECT rc.cluster_id, {lo(trim(cv.column_name))} AS name, count(DISTINCT {lo(cv.source)})
FROM run_columns rc JOIN column_versions cv ON cv.id = rc.column_id
WHERE rc.run_id = :run AND cv.column_name IS NOT NULL
GROUP BY rc.cluster_id, name HAVING count(DISTINCT {lo(cv.source)}) >= 2""",
    "column-in-several-clusters": """
SELECT fqn, count(DISTINCT cluster_id) FROM run_columns WHERE run_id = :run
GROUP BY fqn HAVING count(DISTINCT cluster_id) >= 2""",
    "rank-sensitivity-mismatch": """
SELECT rc.cluster_id, rc.fqn FROM run_columns rc WHERE rc.run_id = :run AND (
  (rc.column_id IN (SELECT column_id FROM column_attributes WHERE {lo(rank)} = 'high')
   AND rc.column_id IN (SELECT column_id FROM column_tags
                        WHERE {lo(tag_name)} = 'sensitivity' AND {lo(tag_value)} IN ('low', 'public')))
  OR (rc.column_id IN (SELECT column_id FROM column_tags
                       WHERE {lo(tag_name)} = 'sensitivity' AND {lo(tag_value)} = 'high')
      AND rc.column_id IN (SELECT column_id FROM column_attributes WHERE rank IS NOT NULL)
      AND rc.column_id NOT IN (SELECT column_id FROM column_attributes
                               WHERE NOT (rank IS NOT NULL AND {lo(rank)} = 'low'))))""",
    "conflicting-exclusive-tag-values": """
SELECT rc.cluster_id, rc.fqn FROM run_columns rc WHERE rc.run_id = :run
  AND rc.column_id IN (SELECT column_id FROM column_tags WHERE is_mutually_exclusive AND tag_name IS NOT NULL
                       GROUP BY column_id, {lo(tag_name)} HAVING count(DISTINCT {lo(tag_value)}) >= 2)""",
}


def dialect(sql: str, engine: str) -> str:
    """``sql`` with its ``{lo(x)}`` markers written for ``engine`` (sqlite or duckdb)."""
    out, rest = [], sql
    while "{lo(" in rest:
        before, _, after = rest.partition("{lo(")
        depth, end = 1, 0
        for end, char in enumerate(after):  # noqa: B007 - the index is used after the loop
            depth += {"(": 1, ")": -1}.get(char, 0)
            if depth == 0:
                break
        inner = after[:end]
        assert after[end + 1] == "}", sql
        out.append(before + (f"{inner} COLLATE NOCASE" if engine == "sqlite" else f"lower({inner})"))
        rest = after[end + 2 :]
    return "".join(out) + rest


def copy_run(source: sqlite3.Connection, duck, run_id: int, folder: Path) -> float:
    """This run's rows of every table of :data:`COPY`, from SQLite into DuckDB; seconds taken."""
    started = time.perf_counter()
    for table, query in COPY.items():
        path = folder / f"{table}.csv"
        cursor = source.execute(query, {"run": run_id})
        with path.open("w", newline="", encoding="utf-8") as out:
            writer = csv.writer(out)
            writer.writerow([d[0] for d in cursor.description])
            writer.writerows(cursor)
        duck.execute(f"CREATE TABLE {table} AS SELECT * FROM read_csv(?, header = true)", [str(path)])
        path.unlink()
    return time.perf_counter() - started


def folded(rows: list) -> list:
    """``rows`` comparable across the engines: a group's key is its first spelling in SQLite
    (``NOCASE``) and its lowered spelling in DuckDB, so text is compared case-folded."""
    return sorted(tuple(v.casefold() if isinstance(v, str) else v for v in row) for row in rows)


def timed(run, query: str, params) -> tuple[float, list]:
    started = time.perf_counter()
    rows = run(query, params)
    return time.perf_counter() - started, rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", required=True, help="a SQLite snapshot file (bench/rules.py --db)")
    parser.add_argument("--run", type=int, default=None, help="default: the latest complete run")
    parser.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1), help="DuckDB's threads")
    parser.add_argument("--repeat", type=int, default=3, help="best of this many (default 3)")
    args = parser.parse_args()
    import duckdb  # not a dependency of the project (see the docstring)

    print(f"python {platform.python_version()}, {os.cpu_count()} CPUs, {cpu_model()}")
    print(f"sqlite {sqlite3.sqlite_version}, duckdb {duckdb.__version__} ({args.threads} threads)")
    source = sqlite3.connect(f"file:{args.db}?mode=ro", uri=True)
    source.execute("PRAGMA cache_size = -1000000")  # as the product's connections (1 GB)
    run_id = args.run or source.execute("SELECT max(id) FROM runs WHERE status = 'complete'").fetchone()[0]
    duck = duckdb.connect()
    duck.execute(f"SET threads = {args.threads}")
    with tempfile.TemporaryDirectory() as folder:
        seconds = copy_run(source, duck, run_id, Path(folder))
    columns = duck.execute("SELECT count(*) FROM run_columns").fetchone()[0]
    print(f"run {run_id}: {columns:,} columns copied into DuckDB in {seconds:.1f} s (not counted)\n")

    def in_sqlite(query, params):
        return source.execute(query, params).fetchall()

    def in_duckdb(query, params):
        return duck.execute(query.replace(":run", "$run"), params).fetchall()

    print(f"{'rule':40s} {'rows':>8s} {'SQLite s':>9s} {'DuckDB s':>9s} {'ratio':>6s}  same rows")
    totals = [0.0, 0.0]
    for rule, sql in RULES.items():
        best = []
        for engine, run in (("sqlite", in_sqlite), ("duckdb", in_duckdb)):
            query = dialect(sql, engine)
            runs = [timed(run, query, {"run": run_id}) for _ in range(args.repeat)]
            best.append((min(s for s, _ in runs), runs[0][1]))
        (lite, lite_rows), (duck_s, duck_rows) = best
        same = folded(lite_rows) == folded(duck_rows)
        totals[0] += lite
        totals[1] += duck_s
        ratio = lite / duck_s
        verdict = "yes" if same else "NO"
        print(f"{rule:40s} {len(lite_rows):8,d} {lite:9.3f} {duck_s:9.3f} {ratio:5.1f}x  {verdict}")
    print(f"{'five rules':40s} {'':8s} {totals[0]:9.3f} {totals[1]:9.3f} {totals[0] / totals[1]:5.1f}x")


if __name__ == "__main__":
    main()
