"""Evaluating a rule set against one run: one SQL statement per rule, run inside the database.

Column and cluster rules become a single ``SELECT`` over the run's membership rows with the rule's
compiled condition in ``WHERE``; aggregate rules become a ``GROUP BY … HAVING`` query plus a join
back to list each group's columns. Python only sees the matching rows (the findings), never the
whole snapshot. Message placeholders that need cluster fields are filled from one extra query over
the clusters that actually have findings.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import io
import os
import pickle
import signal
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Executor, Future, ThreadPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from sqlalchemy import Connection, Engine, and_, func, literal, select, true
from sqlalchemy.exc import SQLAlchemyError

from auditor import secrets
from auditor.engine import fields as F
from auditor.engine.conditions import (
    AllOf,
    Columns,
    Compare,
    Not,
    Quantifier,
    cluster_from,
    column_from,
    group_key,
    group_value,
)
from auditor.engine.fields import Level, Row
from auditor.engine.findings import (
    KIND_CLUSTER,
    KIND_COLUMN,
    KIND_GROUP,
    Finding,
    fingerprint_prefix,
    fingerprint_with,
    subject_payload,
)
from auditor.engine.rules import GROUP_VALUES, Rule, RuleSet, Scope, bind_message, render_message, show_value
from auditor.engine.sqlfuncs import SEPARATOR, JoinedText, register_sqlite_functions, search_watch
from auditor.errors import AuditorError
from auditor.gcpause import collector_paused
from auditor.stopping import removed_on_hard_stop
from auditor.store.db import (
    SQLITE_MMAP_BYTES,
    keys_in,
    one_connection_only,
    rules_sqlite_module,
    store_errors,
)
from auditor.store.runs import can_be_run_id, missing_run
from auditor.store.schema import cluster_labels, cluster_versions, run_clusters, runs
from auditor.workers import main_unimportable, remove_if_orphaned, start_pool

log = secrets.scrubbed_logger(__name__)

CHUNK = 5_000  # cluster ids per placeholder-values query (SQLite allows 32,766 parameters)
MAX_WORKERS = 2  # rules evaluated at once (see default_workers)
PROCESS_MIN_COLUMNS = 200_000  # SQLite runs this large are evaluated by worker processes
INVOLVED_CHUNK = 5_000  # cluster ids per "which of their columns" query (SQLite allows 32,766)
MAX_LISTED = 20  # columns named in a group message before "… and N more"
SEEKED_GROUPS = 5_000  # passing whole-snapshot groups listed by key (SQLite allows 32,766 parameters)


RULE_TABLES = (
    "run_columns",
    "run_clusters",
    "column_versions",
    "cluster_versions",
    "column_tags",
    "column_attributes",
    "cluster_labels",
)


def prepare_connection(connection: Connection) -> None:
    """Make the functions and planner settings the compiled SQL relies on available here.

    On SQLite the connection also reads the file through a memory map from now on
    (:data:`~auditor.store.db.SQLITE_MMAP_BYTES`); :func:`evaluation_connection` takes it back.
    """
    if connection.dialect.name == "sqlite":
        register_sqlite_functions(connection.connection.driver_connection)
        connection.exec_driver_sql(f"PRAGMA mmap_size={SQLITE_MMAP_BYTES}")
    elif connection.dialect.name == "postgresql":
        # Rules scan whole runs: hash joins are right, and the planner cannot estimate predicates
        # such as lower(tag_name) = 'x' (no statistics on expressions), so a nested loop it
        # believes cheap can run for minutes. SET LOCAL ends with the evaluation's transaction.
        connection.exec_driver_sql("SET LOCAL enable_nestloop = off")
        connection.exec_driver_sql("SET LOCAL work_mem = '64MB'")


@contextlib.contextmanager
def evaluation_connection(engine: Engine, *, keep_map: bool = False) -> Iterator[Connection]:
    """A connection of ``engine`` prepared for evaluating rules (:func:`prepare_connection`), given
    back to the pool without its memory map: the next reader of a pooled connection (a report,
    a diff) would otherwise go on mapping every page it reads into this process. ``keep_map``: a
    worker process that only evaluates keeps it, so that its next rule finds the pages mapped."""
    with engine.connect() as connection:
        prepare_connection(connection)
        try:
            yield connection
        finally:
            if connection.dialect.name == "sqlite" and not keep_map:
                with contextlib.suppress(SQLAlchemyError):  # (a connection an error left unusable)
                    connection.exec_driver_sql("PRAGMA mmap_size=0")


def refresh_statistics(engine: Engine) -> None:
    """PostgreSQL: ANALYZE the rule tables that were never analyzed or changed a lot since.

    A snapshot bulk-loads millions of rows; until autovacuum gets to them the planner works from
    empty statistics. Sampling is cheap (a few hundred ms per million rows) and is committed so
    later evaluations reuse it.
    """
    if engine.dialect.name != "postgresql":
        return
    with engine.begin() as connection:
        rows = connection.exec_driver_sql(
            "SELECT relname FROM pg_stat_user_tables WHERE relname = ANY(%(names)s) AND n_live_tup > 1000 "
            "AND (COALESCE(last_analyze, last_autoanalyze) IS NULL OR n_mod_since_analyze > n_live_tup / 5)",
            {"names": list(RULE_TABLES)},
        ).fetchall()
        for (name,) in rows:
            if name in RULE_TABLES:  # names come from the catalog query above, checked anyway
                connection.exec_driver_sql(f'ANALYZE "{name}"')


def require_run(engine: Engine, run_id: int) -> None:
    """Raise :class:`RunNotUsableError` when run ``run_id`` does not exist: evaluated, it would
    give no findings, which reads as a clean catalog."""
    if not can_be_run_id(run_id):
        raise missing_run(run_id)
    with engine.connect() as connection:
        if connection.execute(select(runs.c.id).where(runs.c.id == run_id)).first() is None:
            raise missing_run(run_id)


def evaluate(engine: Engine, run_id: int, ruleset: RuleSet, *, workers: int | None = None) -> list[Finding]:
    """Evaluate every enabled rule of ``ruleset`` on run ``run_id``; findings sorted by rule and subject.

    The rows the run holds are evaluated whatever its status (nothing is stored); a run that does
    not exist raises :class:`RunNotUsableError`. :func:`findings_for_run` and :func:`check_run`
    refuse runs that are not complete unless asked."""
    found: list[Finding] = []
    for _rule, items, _seconds in evaluate_each(engine, run_id, ruleset, workers=workers):
        found.extend(items)
    return found


def default_workers(engine: Engine) -> int:
    """Rules evaluated at once: one per CPU, at most :data:`MAX_WORKERS`; 1 for in-memory SQLite.

    An in-memory SQLite database exists only on its own connection, so it is evaluated serially.
    """
    if one_connection_only(engine):
        return 1
    return max(1, min(MAX_WORKERS, os.cpu_count() or 1))


def parallel_mode(engine: Engine, run_id: int, workers: int) -> str:
    """How ``workers`` rules run at once on this database: ``serial``, ``threads`` or ``processes``.

    PostgreSQL runs each statement in its own server process, so threads (one connection each)
    use several cores. SQLite runs statements in the calling process, and two threads do not
    help there: rules are sorts and set builds that allocate constantly, and SQLite's allocator
    takes one process-wide lock (two threads measured slower than one). So a large SQLite run
    (:data:`PROCESS_MIN_COLUMNS` or more) is evaluated by worker processes, each with its own
    connection; smaller ones, where starting processes would cost more than it saves, serially.
    """
    if workers <= 1:
        return "serial"
    if engine.url.get_backend_name() != "sqlite":
        return "threads"
    if default_workers(engine) == 1:
        return "serial"
    with engine.connect() as connection:
        stored = connection.execute(select(runs.c.columns_stored).where(runs.c.id == run_id)).scalar()
    if (stored or 0) < PROCESS_MIN_COLUMNS:
        return "serial"
    if why := main_unimportable():
        log.warning("rules are evaluated one at a time in this process: %s", why)
        return "serial"
    return "processes"


def check_evaluation_settings(engine: Engine) -> None:
    """Raise the :class:`~auditor.errors.ConfigError` (exit 2) a wrong ``AUDITOR_RULES_SQLITE``
    meets on a SQLite database, whatever the run's size (it was said only where worker processes
    start, at 200,000 columns, so a small run passed with it), and before a job's snapshot."""
    if engine.dialect.name == "sqlite":
        rules_sqlite_module()


def evaluate_each(
    engine: Engine, run_id: int, ruleset: RuleSet, *, workers: int | None = None
) -> Iterable[tuple[Rule, list[Finding], float]]:
    """Evaluate rule by rule, yielding (rule, findings, seconds) in the rule set's order.

    Up to ``workers`` rules run at once (default :func:`default_workers`), as
    :func:`parallel_mode` decides; ``seconds`` is the time one rule took where it ran.
    """
    if not isinstance(ruleset, RuleSet):  # (check_run and compute_diff take paths and None too)
        raise TypeError(
            "ruleset: expected a RuleSet (what auditor.engine.load_ruleset returns), "
            f"not {type(ruleset).__name__}"
        )
    check_evaluation_settings(engine)
    rules = list(ruleset.rules)
    workers = default_workers(engine) if workers is None else max(1, workers)
    with store_errors(f"could not evaluate run {run_id}"):
        require_run(engine, run_id)
        refresh_statistics(engine)
        mode = parallel_mode(engine, run_id, workers) if len(rules) > 1 else "serial"
        if mode == "serial":
            with evaluation_connection(engine) as connection:
                for rule in rules:
                    started = time.perf_counter()
                    items = evaluate_rule(connection, run_id, rule)
                    yield rule, items, time.perf_counter() - started
            return
        # Submitted heaviest first (the pools start tasks in submission order), so that the last
        # rules to start are short ones and the workers finish together; yielded in rule order.
        heaviest_first = sorted(range(len(rules)), key=lambda i: -rule_weight(rules[i]))
        submitted: dict[int, Future[Any]] = {}
        spool: tempfile.TemporaryDirectory[str] | None = None
        if mode == "threads":
            pool: Executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="auditor-rules")
            for i in heaviest_first:
                submitted[i] = pool.submit(_evaluate_alone, engine, run_id, rules[i])
        else:
            url = engine.url.render_as_string(hide_password=False)  # SQLite: a file path, no secret
            # decided here, where AUDITOR_RULES_SQLITE is read (and a wrong one said once)
            driver = rules_sqlite_module().__name__
            spool = tempfile.TemporaryDirectory(
                prefix="auditor-findings-", dir=_spool_parent(), ignore_cleanup_errors=True
            )
            folder = spool.name
            try:
                pool = start_pool(
                    "auditor.engine.evaluate",
                    workers,
                    _init_worker,
                    lambda processes: submitted.update(
                        {
                            i: processes.submit(_evaluate_in_process, url, run_id, rules[i], folder, driver)
                            for i in heaviest_first
                        }
                    ),
                )
            except BaseException:
                spool.cleanup()
                raise
        tasks = [submitted[i] for i in range(len(rules))]
        # The pool is shut down (its workers joined) before the spool folder is removed.
        with (
            spool if spool is not None else contextlib.nullcontext(),
            removed_on_hard_stop(spool.name) if spool is not None else contextlib.nullcontext(),
            pool,
        ):
            try:
                yield from _in_rule_order(rules, tasks, spooled=mode == "processes")
            except BrokenProcessPool:
                raise AuditorError(
                    "a rule-evaluating process died unexpectedly "
                    "(out of memory, killed, or it could not start)",
                    hint="re-run; a Python script that evaluates large runs must guard its entry point with "
                    "if __name__ == '__main__':",
                ) from None
            finally:
                for task in tasks:  # an error or an abandoned generator: do not start the rest
                    task.cancel()


def _in_rule_order(
    rules: list[Rule], tasks: list[Future[Any]], *, spooled: bool
) -> Iterator[tuple[Rule, list[Finding], float]]:
    """Each task's (rule, findings, seconds), taken as the tasks finish, yielded in rule order.

    Taken in rule order, the findings of the heavy rules (submitted first) waited behind the first
    rule of the list and were mostly turned into objects after the workers had finished: a serial
    tail. ``spooled``: a task's result is the file a worker process wrote (:func:`_read_spooled`).
    A task that failed raises when it is taken.
    """
    done: dict[int, tuple[list[Finding], float]] = {}
    index = {id(task): i for i, task in enumerate(tasks)}
    following = 0
    for task in as_completed(tasks):
        i = index[id(task)]
        items, seconds = task.result()
        done[i] = (_read_spooled(rules[i], items) if spooled else items, seconds)
        while following in done:
            items, seconds = done.pop(following)
            yield rules[following], items, seconds
            following += 1


def rule_weight(rule: Rule) -> float:
    """A rough, static estimate of the work ``rule`` does on a whole run (only its order matters).

    Each scope starts from what every rule of it reads (the run's column membership, or its few
    clusters); aggregates sort the run's columns; each quantifier builds a set or groups its
    elements, a counting one more so; regular expressions call back into Python per element.
    Measured at 1M columns, aggregates and counting quantifiers take 2-6 s, a set 0.5-1.5 s, and
    cluster rules with no quantifier under 0.2 s.
    """
    base = {Scope.COLUMN: 1.0, Scope.CLUSTER: 0.1}.get(rule.scope, 8.0)
    return (
        base
        + _condition_weight(rule.condition)
        + _condition_weight(rule.aggregate.where if rule.aggregate is not None else None)
    )


def _condition_weight(condition: Any) -> float:
    if condition is None:
        return 0.0
    if isinstance(condition, AllOf):  # and AnyOf
        return sum(_condition_weight(part) for part in condition.parts)
    if isinstance(condition, Not):
        return _condition_weight(condition.inner)
    if isinstance(condition, Quantifier):
        own = 3.0 if condition.mode == "count" or isinstance(condition, Columns) else 1.0
        return own + _condition_weight(condition.inner)
    if isinstance(condition, Compare):
        return 0.5 if condition.op == "matches" else 0.0
    return 0.0


def _evaluate_alone(
    engine: Engine,
    run_id: int,
    rule: Rule,
    produce: Callable[[Connection, int, Rule], Any] | None = None,
    *,
    keep_map: bool = False,
) -> tuple[Any, float]:
    """One rule on a connection of its own (a worker's unit of work): what ``produce`` returns
    (:func:`evaluate_rule`'s findings by default), and the seconds it took."""
    with evaluation_connection(engine, keep_map=keep_map) as connection:
        started = time.perf_counter()
        items = (produce or evaluate_rule)(connection, run_id, rule)
        return items, time.perf_counter() - started


# -- worker processes (large SQLite runs) ----------------------------------------------------------

_WORKER_ENGINES: dict[tuple[str, str], Engine] = {}


def _init_worker() -> None:
    """Ctrl-C is the parent's to handle."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


SPOOL_CHUNK = 10_000  # findings per pickled chunk of a spool file


SHM_MIN_FREE = 1 << 30  # /dev/shm is used only with this much free (containers often give it 64 MB)


def _spool_parent() -> str | None:
    """Where worker processes leave their findings: ``$TMPDIR`` when it is set, else ``/dev/shm``
    (memory) where it exists, is writable and has :data:`SHM_MIN_FREE` bytes free (one rule's
    findings take ~60 MB at 1M columns), else the system's temporary folder."""
    if os.environ.get("TMPDIR"):
        return None  # tempfile's own choice, which honours it
    shm = "/dev/shm"  # noqa: S108 - a private folder (mode 0700) is made inside it
    try:
        usable = os.access(shm, os.W_OK | os.X_OK)
        stats = os.statvfs(shm)
    except OSError:  # no /dev/shm (not Linux)
        return None
    return shm if usable and stats.f_bavail * stats.f_frsize >= SHM_MIN_FREE else None


def _evaluate_in_process(
    url: str, run_id: int, rule: Rule, spool: str, driver: str = "sqlite3"
) -> tuple[str | list[bytes], float]:
    """``rule`` in a worker process; its findings, as plain tuples, written to a file in ``spool``.

    ``driver``: the SQLite DB-API module the worker opens the file with (pysqlite3's current SQLite
    where installed: see ``auditor.store.db.SQLITE_MODULES``), by its module name.

    Returned through the pool's pipe, hundreds of thousands of findings (60 MB at 1M columns)
    kept the worker blocked until the parent had read them all, and the parent, unpickling a
    previous rule's findings in one long call that holds the GIL, could not hand the workers their
    next rules meanwhile: they sat idle for 0.2-0.4 s at a time. A file decouples the two; its
    findings are pickled in chunks of :data:`SPOOL_CHUNK`, so the parent's loading yields the GIL
    between them. The pack at 1M columns, five interleaved pairs: 9.24-9.90 s -> 8.92-9.15 s, a
    median wall ratio of 0.947 (bench/RESULTS.md). When the file cannot be written (the folder is
    full or gone), the pickled chunks go through the pipe after all: slower, never wrong.
    """
    from auditor.store.db import create_db_engine

    remove_if_orphaned(spool)
    engine = _WORKER_ENGINES.get((url, driver))
    if engine is None:
        module = importlib.import_module(driver)
        engine = _WORKER_ENGINES[url, driver] = create_db_engine(url, sqlite_module=module)
    with collector_paused():
        rows, seconds = _evaluate_alone(engine, run_id, rule, finding_rows, keep_map=True)
        chunks = [
            pickle.dumps(rows[start : start + SPOOL_CHUNK], protocol=pickle.HIGHEST_PROTOCOL)
            for start in range(0, len(rows), SPOOL_CHUNK)
        ]
        path = None
        try:
            fd, path = tempfile.mkstemp(prefix="rule-", dir=spool)
            with os.fdopen(fd, "wb") as out:
                for chunk in chunks:
                    out.write(chunk)
        except OSError:  # the folder is full (or gone): through the pipe, slower but sure
            if path is not None:
                with contextlib.suppress(OSError):
                    os.unlink(path)
            return chunks, seconds
    return path, seconds


def _read_spooled(rule: Rule, handed: str | list[bytes]) -> list[Finding]:
    """The findings a worker process handed over, as Finding objects: the file it wrote (removed
    once read), or the pickled chunks themselves when it could not write one.

    Unpickled with the cyclic collector paused (hundreds of thousands of tuples would trigger it
    over and over); the file is our own worker's, in a folder only this process's user can enter.
    """
    items: list[Finding] = []
    with collector_paused():
        if isinstance(handed, list):  # the worker could not write its file
            for chunk in handed:
                items.extend(_finding(rule, values) for values in pickle.loads(chunk))  # noqa: S301
            return items
        with open(handed, "rb") as spooled:
            data = spooled.read()
        os.unlink(handed)
        stream = io.BytesIO(data)
        while stream.tell() < len(data):
            items.extend(_finding(rule, values) for values in pickle.load(stream))  # noqa: S301
    return items


def _finding(rule: Rule, values: FindingRow) -> Finding:
    # positional: a FindingRow holds Finding's fields after rule and severity, in their order
    return Finding(rule.id, rule.severity, *values)


def evaluate_rule(connection: Connection, run_id: int, rule: Rule) -> list[Finding]:
    """``rule``'s findings on run ``run_id``, sorted by subject."""
    with collector_paused():  # up to hundreds of thousands of findings, no reference cycles
        return [_finding(rule, values) for values in finding_rows(connection, run_id, rule)]


# A finding as the rule functions build it: (kind, cluster id, column, columns, message, key,
# fingerprint), Finding's fields after rule and severity, in order. Worker processes send these
# plain tuples; Finding objects are built once, where they are used.
FindingRow = tuple[str, str | None, str | None, list[str], str, str | None, str]


def finding_rows(connection: Connection, run_id: int, rule: Rule) -> list[FindingRow]:
    """``rule``'s findings as :data:`FindingRow` tuples, sorted by subject (cluster id, then key)."""
    with collector_paused(), search_watch(rule):
        if rule.scope == Scope.COLUMN:
            rows = _column_rule(connection, run_id, rule)
        elif rule.scope == Scope.CLUSTER:
            rows = _cluster_rule(connection, run_id, rule)
        else:
            rows = _aggregate_rule(connection, run_id, rule)
        rows.sort(key=_subject_order)
    return rows


def _subject_order(row: FindingRow) -> tuple[str, str]:
    return (row[1] or "", row[5] or "")  # sort_key of the findings of one rule


def _placeholders(rule: Rule) -> set[str]:
    import re

    return set(re.findall(r"\{([A-Za-z_.]+)\}", rule.message.replace("{{", "").replace("}}", "")))


def _rule_values(rule: Rule) -> dict[str, Any]:
    return {"rule.id": rule.id, "rule.title": rule.title, "rule.severity": rule.severity}


def _column_rule(connection: Connection, run_id: int, rule: Rule) -> list[FindingRow]:
    assert rule.condition is not None
    row = Row(run_id, Level.COLUMN)
    predicate = rule.condition.compile(row)
    rc = row.table("rc")
    wanted = _placeholders(rule)
    extra = {
        name: F.COLUMN_FIELDS[name.removeprefix("column.")].getter(row).label(f"f{i}")
        for i, name in enumerate(sorted(wanted))
        if name.startswith("column.")
    }
    query = (
        select(rc.c.cluster_id, rc.c.fqn, *extra.values())
        .select_from(column_from(row))
        .where(rc.c.run_id == run_id, predicate)
    )
    rows = connection.execute(query).fetchall()
    clusters = _cluster_values(connection, run_id, {r[0] for r in rows}, wanted)
    # Hot loop (one pass per finding, up to hundreds of thousands): the message template and the
    # fingerprint's fixed part are prepared once; each message is one str.format call.
    names = ["column.fullyQualifiedName", *extra]
    bound = bind_message(rule.message, names, _rule_values(rule))
    positions = bound.row_positions
    prefix = fingerprint_prefix(rule.id, KIND_COLUMN)
    formats: dict[str, str] = {}
    empty: dict[str, Any] = {}
    out: list[FindingRow] = []
    append = out.append
    if extra:
        for cluster_id, fqn, *fields in rows:
            fmt = formats.get(cluster_id)
            if fmt is None:
                fmt = formats[cluster_id] = bound.format_for(clusters.get(cluster_id, empty))
            values = (fqn, *fields)
            message = fmt.format(*[show_value(values[i]) for i in positions])
            append(
                (KIND_COLUMN, cluster_id, fqn, [fqn], message, fqn, fingerprint_with(prefix, cluster_id, fqn))
            )
        return out
    # The message reads no column field but the fqn (text, never null: shown as is), as in most
    # rules: the same loop without the per-row lists (1.5 instead of 2.1-2.8 us per finding).
    shown = len(positions)
    blake2b = hashlib.blake2b
    for cluster_id, fqn in rows:
        fmt = formats.get(cluster_id)
        if fmt is None:
            fmt = formats[cluster_id] = bound.format_for(clusters.get(cluster_id, empty))
        message = fmt.format(*((fqn,) * shown))
        # fingerprint_with(prefix, cluster_id, fqn), inlined (neither can be null here)
        fingerprint = blake2b(prefix + subject_payload(cluster_id, fqn).encode(), digest_size=16).hexdigest()
        append((KIND_COLUMN, cluster_id, fqn, [fqn], message, fqn, fingerprint))
    return out


def _cluster_rule(connection: Connection, run_id: int, rule: Rule) -> list[FindingRow]:
    assert rule.condition is not None
    row = Row(run_id, Level.CLUSTER)
    predicate = rule.condition.compile(row)
    rcl = row.table("rcl")
    query = select(rcl.c.cluster_id).select_from(cluster_from(row)).where(rcl.c.run_id == run_id, predicate)
    ids = [r.cluster_id for r in connection.execute(query)]
    clusters = _cluster_values(connection, run_id, set(ids), _placeholders(rule))
    involved = _involved_columns(connection, run_id, rule.condition, ids)
    base = _rule_values(rule)
    prefix = fingerprint_prefix(rule.id, KIND_CLUSTER)
    return [
        (
            KIND_CLUSTER,
            cluster_id,
            None,
            involved.get(cluster_id, []),
            render_message(rule.message, {**base, **clusters.get(cluster_id, {})}),
            None,
            fingerprint_with(prefix, cluster_id, None),
        )
        for cluster_id in ids
    ]


def _positive_column_quantifiers(condition: Any) -> list[Columns]:
    """The ``columns: {any: …}`` parts of a cluster condition that must hold (not under a ``not``)."""
    if isinstance(condition, AllOf):  # and AnyOf
        return [q for part in condition.parts for q in _positive_column_quantifiers(part)]
    if isinstance(condition, Columns) and condition.mode == "any" and condition.inner is not None:
        return [condition]
    return []


def _involved_columns(
    connection: Connection, run_id: int, condition: Any, cluster_ids: list[str]
) -> dict[str, list[str]]:
    """cluster id → the fqns of its columns that satisfy the rule's ``columns: {any: …}`` parts.

    These are the columns a cluster finding is about (e.g. the high-sensitivity columns an archived
    cluster still holds). Rules without such a part, or whose columns quantifier counts or is
    negated, list none.
    """
    quantifiers = _positive_column_quantifiers(condition)
    found: dict[str, set[str]] = {}
    for quantifier in quantifiers:
        inner = Row(run_id, Level.COLUMN)
        predicate = quantifier.inner.compile(inner)
        rc = inner.table("rc")
        for start in range(0, len(cluster_ids), INVOLVED_CHUNK):
            chunk = cluster_ids[start : start + INVOLVED_CHUNK]
            rows = connection.execute(
                select(rc.c.cluster_id, rc.c.fqn)
                .select_from(column_from(inner))
                .where(rc.c.run_id == run_id, keys_in(connection, rc.c.cluster_id, chunk), predicate)
            )
            for cluster_id, fqn in rows:
                found.setdefault(cluster_id, set()).add(fqn)
    return {cluster_id: sorted(fqns) for cluster_id, fqns in found.items()}


def _aggregate_parts(row: Row, rule: Rule, dialect: str) -> tuple[Any, Any, Any, list[Any]]:
    """(where, group key, representative value, grouping keys) of an aggregate rule over ``row``."""
    agg = rule.aggregate
    assert agg is not None
    rc = row.table("rc")
    where = agg.where.compile(row) if agg.where is not None else true()
    if agg.group_by is not None:
        key = group_value(agg.group_by, row, exact=agg.exact)
        grouping = group_key(agg.group_by, row, exact=agg.exact)  # equal exactly when the keys are
        raw = agg.group_by.getter(row)
        # Other kinds are grouped by the value itself (PostgreSQL has no min() of booleans).
        # The representative spelling is the smallest by code point on both databases: by the
        # database's collation, an ICU one on PostgreSQL put 'firstname' before 'FirstName'.
        trimmed = func.trim(raw)
        value = (
            func.min(trimmed.collate("C") if dialect == "postgresql" else trimmed)
            if agg.group_by.kind is F.Kind.TEXT
            else key
        )
        key_present = raw.is_not(None)
    else:
        key = None
        value = None
        key_present = true()
    keys = ([rc.c.cluster_id] if agg.per == "cluster" else []) + ([grouping] if key is not None else [])
    return and_(where, key_present), key, value, keys


def _aggregate_rule(connection: Connection, run_id: int, rule: Rule) -> list[FindingRow]:
    agg = rule.aggregate
    assert agg is not None
    per_cluster = agg.per == "cluster"
    row = Row(run_id, Level.COLUMN)
    where, key, value, keys = _aggregate_parts(row, rule, connection.dialect.name)
    having = agg.having.compile(row)
    distinct = (
        func.count(func.distinct(group_key(agg.having.distinct, row, exact=agg.having.exact)))
        if agg.having.distinct is not None
        else func.count()
    )
    rc = row.table("rc")
    # One pass: each passing group comes back with its columns (and, for a group of the whole
    # snapshot, its clusters) joined in one string. A cluster's group lists only that cluster.
    query = (
        select(
            (rc.c.cluster_id if per_cluster else literal("")).label("gcluster"),
            (key if key is not None else literal("")).label("gkey"),
            func.count().label("n"),
            distinct.label("d"),
            (value if value is not None else literal("")).label("gvalue"),
            JoinedText(rc.c.fqn).label("fqns"),
            (literal("") if per_cluster else JoinedText(rc.c.cluster_id)).label("clusters"),
        )
        .select_from(column_from(row))
        .where(rc.c.run_id == run_id, where)
        .having(having)
    )
    if keys:
        query = query.group_by(*keys)
    if per_cluster or key is None:
        groups = connection.execute(query).fetchall()
    else:
        groups = _snapshot_groups(
            connection, query, keys[-1], column_from(row), rc.c.run_id == run_id, where, having
        )
    wanted = _placeholders(rule)
    clusters = (
        _cluster_values(connection, run_id, {g.gcluster for g in groups if g.gcluster}, wanted)
        if per_cluster
        else {}
    )
    # Hot loop (one pass per group, tens of thousands): the message is bound once, and each
    # cluster's values are filled into its format string once (as for column rules).
    bound = bind_message(rule.message, GROUP_VALUES, _rule_values(rule))
    positions = bound.row_positions
    prefix = fingerprint_prefix(rule.id, KIND_GROUP)
    formats: dict[str | None, str] = {}
    empty: dict[str, Any] = {}
    out = []
    for gcluster, gkey, count, distinct_count, gvalue, fqns, group_clusters in groups:
        if not fqns:  # an empty snapshot still yields one (empty) whole-snapshot group
            continue
        # A cluster's columns are unique within it; a snapshot group may see a column twice.
        columns = sorted(fqns.split(SEPARATOR) if per_cluster else set(fqns.split(SEPARATOR)))
        listed = ", ".join(columns[:MAX_LISTED])
        if len(columns) > MAX_LISTED:
            listed += f" … and {len(columns) - MAX_LISTED} more"
        # as {group.value} and {column.isPrimary} show it: a boolean key read "True" in messages
        gkey = "" if gkey is None else show_value(gkey) if gkey.__class__ is bool else str(gkey)
        cluster_id = gcluster if per_cluster else None
        fmt = formats.get(cluster_id)
        if fmt is None:
            own = clusters.get(cluster_id, empty) if cluster_id else empty
            fmt = formats[cluster_id] = bound.format_for(own)
        values = (
            gkey,
            gkey if gvalue is None else gvalue,
            int(count),
            int(distinct_count),
            listed,
            [cluster_id] if per_cluster else sorted(set(group_clusters.split(SEPARATOR))),
        )
        message = fmt.format(*[show_value(values[i]) for i in positions])
        out.append(
            (KIND_GROUP, cluster_id, None, columns, message, gkey, fingerprint_with(prefix, cluster_id, gkey))
        )
    return out


def _snapshot_groups(
    connection: Connection, query: Any, grouping: Any, source: Any, in_run: Any, where: Any, having: Any
) -> list[Any]:
    """The passing groups of a whole-snapshot aggregate ``query``, found in two passes.

    A group of the whole snapshot spans clusters (the same column in several clusters, say), so
    passing groups are usually few or none: a first pass finds them carrying only the group key
    (listing every column and cluster of every group makes the sort twice as heavy: 3.0 -> 1.65 s
    at 1M columns), and ``query`` then runs on the columns of those groups alone. When more than
    :data:`SEEKED_GROUPS` pass, ``query`` runs on the whole run as a single pass would, so such a
    catalog pays for the first pass on top (about 1.5x a single pass).
    """
    narrow = select(grouping).select_from(source).where(in_run, where).group_by(grouping).having(having)
    passing = [row[0] for row in connection.execute(narrow)]
    if not passing:
        return []
    if len(passing) > SEEKED_GROUPS:
        return connection.execute(query).fetchall()
    return connection.execute(query.where(grouping.in_(passing))).fetchall()


def _cluster_values(
    connection: Connection, run_id: int, cluster_ids: set[str], wanted: set[str]
) -> dict[str, dict[str, Any]]:
    """Cluster placeholder values for the clusters with findings (only when the message uses them)."""
    needed = {name for name in wanted if name.startswith("cluster.")}
    if not needed or not cluster_ids:
        return {cid: {"cluster.id": cid} for cid in cluster_ids}
    out: dict[str, dict[str, Any]] = {}
    ids = sorted(cluster_ids)
    for start in range(0, len(ids), CHUNK):
        chunk = ids[start : start + CHUNK]
        query = (
            select(
                run_clusters.c.cluster_id,
                run_clusters.c.cluster_hash,
                cluster_versions.c.name,
                cluster_versions.c.severity,
                cluster_versions.c.status,
                cluster_versions.c.size,
            )
            .join(cluster_versions, cluster_versions.c.hash == run_clusters.c.cluster_hash)
            .where(run_clusters.c.run_id == run_id, keys_in(connection, run_clusters.c.cluster_id, chunk))
        )
        hashes: dict[str, str] = {}
        for r in connection.execute(query):
            hashes[r.cluster_hash] = r.cluster_id
            out[r.cluster_id] = {
                "cluster.id": r.cluster_id,
                "cluster.name": r.name,
                "cluster.severity": r.severity,
                "cluster.status": r.status,
                "cluster.size": r.size,
                "cluster.labels": [],
            }
        if "cluster.labels" in needed and hashes:
            labels = connection.execute(
                select(cluster_labels.c.cluster_hash, cluster_labels.c.label)
                .where(keys_in(connection, cluster_labels.c.cluster_hash, list(hashes)))
                .order_by(cluster_labels.c.cluster_hash, cluster_labels.c.position)
            )
            for cluster_hash, label in labels:
                out[hashes[cluster_hash]]["cluster.labels"].append(label)
    return out
