"""A run's findings as ``auditor check`` marks them, read from the stored evaluation in SQL.

The report shows counts and the first rows of capped sections, so it need not hold every finding of
a large run (at 1,000,000 columns there are hundreds of thousands). :class:`StoredFindings` gives
each finding of the run the status a check would (``new``/``existing`` against the baseline run's
evaluation, by fingerprint, with the same first-seen run) and applies the waivers, in SQL where it
can: findings of rules that no waiver names are counted with ``GROUP BY`` and their first rows come
from ``ORDER BY … LIMIT``; only findings of rules that a waiver names are read (without their
message) and matched in Python by the engine's own :func:`~auditor.engine.apply_waivers`. The rows
the page shows are then read in full. The result, a :class:`~auditor.render.context.FindingsDigest`,
is the one the full list of findings would give (``tests/render/test_render_stored.py`` proves it).

The exports (every finding, ``findings.csv``/``findings.json``, and the diff with its still-open
findings, ``diff.json``) stream from the database in the order the check and the diff use, chunk by
chunk, with the same bytes the in-memory path writes.
"""

from __future__ import annotations

import heapq
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import date
from functools import cached_property
from operator import itemgetter
from typing import Any, TextIO

from sqlalchemy import (
    ColumnElement,
    Connection,
    Engine,
    and_,
    case,
    func,
    literal,
    select,
    true,
)

from auditor import jsonstream
from auditor.engine.findings import Finding, evaluation_bounds, evaluation_rows
from auditor.render.context import (
    SEVERITY_RANK,
    FindingsDigest,
    SectionDigest,
    finding_sort_key,
    severity_rank,
)
from auditor.store.db import keys_in
from auditor.store.runs import RunInfo, scope_note, shortfall_note

STREAM_CHUNK = 5_000
IN_CHUNK = 500


@dataclass
class StoredFindings:
    """The findings of ``run`` under ``ruleset``, marked against ``baseline`` and ``waivers``."""

    engine: Engine
    run: RunInfo
    baseline: RunInfo | None
    ruleset: Any
    waivers: Any
    today: date
    evaluation_id: int
    baseline_evaluation_id: int | None
    # Findings of the rules a waiver names, statuses and waivers applied (messages not read).
    waivable: dict[str, Any] = field(default_factory=dict)
    waiver_report: Any = None
    _count_cache: dict[tuple[str, str], list[int]] | None = field(default=None, repr=False)
    _bounds: Any = field(default=..., repr=False)  # evaluation_bounds, once looked up

    @classmethod
    def load(
        cls, engine: Engine, run: RunInfo, baseline: RunInfo | None, ruleset: Any, waivers: Any, today: date
    ) -> StoredFindings:
        """Evaluate (and store) the run and then the baseline if needed, as ``check_run`` does."""
        from auditor.engine import apply_waivers
        from auditor.engine.check import stored_evaluation

        evaluation_id = stored_evaluation(engine, run.id, ruleset)
        baseline_id = stored_evaluation(engine, baseline.id, ruleset) if baseline is not None else None
        found = cls(engine, run, baseline, ruleset, waivers, today, evaluation_id, baseline_id)
        items = []
        rules = found.waiver_rules
        if rules:
            b, joined, existing, first_seen = found._join
            query = (
                select(
                    b.c.fingerprint,
                    b.c.rule_id,
                    b.c.severity,
                    b.c.kind,
                    b.c.cluster_id,
                    b.c.column_fqn,
                    b.c.subject,
                    b.c.columns,
                    b.c.first_seen_run,
                    literal("").label("message"),  # not needed to judge waivers: not read
                    first_seen,
                    existing.label("existing"),
                )
                .select_from(joined)
                .where(b.c.rule_id.in_(rules))
            )
            with engine.connect() as connection:
                query = query.where(found._rows(connection, b))
                result = connection.execute(query)
                finding = found._reader(result.keys())
                items = [finding(row) for row in result]  # every finding of the rules waivers name
        found.waiver_report = apply_waivers(items, waivers, today)
        found.waivable = {item.fingerprint: item for item in items}
        return found

    # -- queries ---------------------------------------------------------------------------------

    @property
    def waiver_rules(self) -> list[str]:
        return self.waivers.rules if self.waivers is not None else []

    @cached_property
    def _join(self) -> tuple[Any, Any, ColumnElement[Any], Any]:
        """The run's findings ``b`` left-joined to the baseline's ``a``: (b, join, in baseline, its first
        seen)."""
        from auditor.store.schema import findings

        b, a = findings.alias("b"), findings.alias("a")
        if self.baseline_evaluation_id is None:
            return b, b, literal(0), literal(None).label("baseline_first_seen")
        joined = b.outerjoin(
            a, and_(a.c.evaluation_id == self.baseline_evaluation_id, a.c.fingerprint == b.c.fingerprint)
        )
        existing = case((a.c.fingerprint.is_(None), 0), else_=1)
        return b, joined, existing, a.c.first_seen_run.label("baseline_first_seen")

    def _not_waivable(self, b: Any) -> ColumnElement[bool]:
        rules = self.waiver_rules
        return b.c.rule_id.not_in(rules) if rules else true()

    def _text(self, column: Any, connection: Any) -> Any:
        value = func.coalesce(column, "")
        return value.collate("C") if connection.dialect.name == "postgresql" else value

    def _reader(self, keys: Iterable[str]) -> Callable[[Any], Finding]:
        """Findings from the (joined) rows of one result, with the status and first-seen run
        ``check_run`` gives them, read by position (by name costs ~0.5 us a field: these reads
        run to hundreds of thousands of rows)."""
        from auditor.engine.check import mark_against_baseline

        names = list(keys)
        read = Finding.reader(names)
        joined = itemgetter(names.index("existing"), names.index("baseline_first_seen"))
        run_id, baseline, waivable = self.run.id, self.baseline, self.waivable

        def finding(row: Any) -> Finding:
            found = read(row)
            existing, first_seen = joined(row)
            mark_against_baseline(found, run_id, baseline, bool(existing), first_seen)
            judged = waivable.get(found.fingerprint)
            if judged is not None:
                found.status, found.waiver = judged.status, judged.waiver
            return found

        return finding

    def _full_rows(self, fingerprints: list[str]) -> dict[str, Any]:
        """The findings with these fingerprints, read in full."""
        b, joined, existing, first_seen = self._join
        out: dict[str, Any] = {}
        with self.engine.connect() as connection:
            for start in range(0, len(fingerprints), IN_CHUNK):
                chunk = fingerprints[start : start + IN_CHUNK]
                query = (
                    select(b, first_seen, existing.label("existing"))
                    .select_from(joined)
                    .where(
                        b.c.evaluation_id == self.evaluation_id, keys_in(connection, b.c.fingerprint, chunk)
                    )
                )
                result = connection.execute(query)
                finding = self._reader(result.keys())
                for row in result:
                    item = finding(row)
                    out[item.fingerprint] = item.to_json()
        return out

    # -- the page --------------------------------------------------------------------------------

    def _rows(self, connection: Connection, table: Any) -> ColumnElement[bool]:
        """``evaluation_rows`` of the run's evaluation, its rowid range looked up once."""
        if self._bounds is ...:
            self._bounds = evaluation_bounds(connection, self.evaluation_id)
        return evaluation_rows(connection, table, self.evaluation_id, self._bounds)

    def _counted(self) -> dict[tuple[str, str], list[int]]:
        """:meth:`_counts`, computed once (the digest and the summary both need them)."""
        if self._count_cache is None:
            with self.engine.connect() as connection:
                self._count_cache = self._counts(connection)
        return self._count_cache

    def _counts(self, connection: Connection) -> dict[tuple[str, str], list[int]]:
        """(rule, severity) -> [new, existing] of the findings of rules no waiver names.

        Totals come from one scan of the run's rows; the new ones (not in the baseline) from an
        anti-join driven by both primary keys in fingerprint order, which reads the table rows of the
        few new findings only. Joining every row instead costs a random index probe per finding.
        """
        b, _joined, _existing, _first_seen = self._join
        waivable = set(self.waiver_rules)
        counts: dict[tuple[str, str], list[int]] = {}
        totals = (
            select(b.c.rule_id, b.c.severity, func.count())
            .where(self._rows(connection, b), self._not_waivable(b))
            .group_by(b.c.rule_id, b.c.severity)
        )
        baseline = self.baseline_evaluation_id is not None
        for rule_id, severity, count in connection.execute(totals):
            counts[(rule_id, severity)] = [0, int(count)] if baseline else [int(count), 0]
        if not baseline:
            return counts
        for rule_id, severity, count in connection.execute(
            self._new_rows(select(b.c.rule_id, b.c.severity, func.count())).group_by(
                b.c.rule_id, b.c.severity
            )
        ):
            if rule_id not in waivable:  # rules a waiver names are judged in Python
                pair = counts[(rule_id, severity)]
                pair[0], pair[1] = int(count), pair[1] - int(count)
        return counts

    def _new_rows(self, query: Any) -> Any:
        """``query`` over the run's findings that the baseline does not have (any rule)."""
        b, joined, _existing, _first_seen = self._join
        a = joined.right
        return query.select_from(joined).where(
            b.c.evaluation_id == self.evaluation_id, a.c.fingerprint.is_(None)
        )

    def digest(self, limit: int, *, with_new: bool = False) -> FindingsDigest:
        """Counts and the first ``limit`` rows of each section.

        ``with_new`` lists the first new rows too: only for a run with no baseline (the report's
        first run), where every finding is new; against a baseline the diff lists the new ones.
        """
        if with_new and self.baseline_evaluation_id is not None:
            raise ValueError("new rows are listed here only for a run without a baseline")
        b, joined, existing, _first_seen = self._join
        per_status: dict[str, Counter[str]] = {"new": Counter(), "existing": Counter(), "waived": Counter()}
        by_rank: dict[str, Counter[tuple[int, str]]] = {"new": Counter(), "existing": Counter()}
        open_by_severity: Counter[str] = Counter()
        total = 0
        firsts: dict[str, list[tuple[tuple[Any, ...], str]]] = {"new": [], "existing": [], "waived": []}
        with self.engine.connect() as connection:
            for (rule_id, severity), counted in self._counted().items():
                for status, count in zip(("new", "existing"), counted, strict=True):
                    if count:
                        per_status[status][str(rule_id)] += count
                        by_rank[status][(severity_rank(severity), str(rule_id))] += count
                        open_by_severity[str(severity).lower()] += count
                        total += count
            rank = case(
                *(
                    (func.lower(b.c.severity) == name, literal(value))
                    for name, value in SEVERITY_RANK.items()
                ),
                else_=literal(len(SEVERITY_RANK)),
            )
            order = [
                rank,
                self._text(b.c.rule_id, connection),
                self._text(b.c.cluster_id, connection),
                self._text(b.c.column_fqn, connection),
                self._text(b.c.fingerprint, connection),
            ]
            columns = (b.c.fingerprint, b.c.severity, b.c.rule_id, b.c.cluster_id, b.c.column_fqn)
            waivable = set(self.waiver_rules)
            queries = []
            if per_status["existing"]:
                # Only the rules that the first rows can come from, so that the baseline is probed
                # for their rows only (rows rank by severity and rule first).
                rules = _leading_rules(by_rank["existing"], limit)
                queries.append(
                    (
                        "existing",
                        select(*columns)
                        .select_from(joined)
                        .where(
                            self._rows(connection, b),
                            self._not_waivable(b),
                            b.c.rule_id.in_(rules),
                            existing == 1,
                        )
                        .limit(limit),
                    )
                )
            if with_new and per_status["new"]:
                query = select(*columns).where(
                    self._rows(connection, b),
                    self._not_waivable(b),
                    b.c.rule_id.in_(_leading_rules(by_rank["new"], limit)),
                )
                queries.append(("new", query.limit(limit)))
            for status, query in queries:
                for row in connection.execute(query.order_by(*order)):
                    if row.rule_id in waivable:
                        continue
                    firsts[status].append(
                        (
                            _key(row.severity, row.rule_id, row.cluster_id, row.column_fqn, row.fingerprint),
                            row.fingerprint,
                        )
                    )
        expired = 0
        expiries: Counter[tuple[str, bool]] = Counter()
        for item in self.waivable.values():
            total += 1
            per_status[item.status][item.rule] += 1
            firsts[item.status].append(
                (
                    _key(item.severity, item.rule, item.cluster_id, item.column, item.fingerprint),
                    item.fingerprint,
                )
            )
            waiver = item.waiver
            if waiver and waiver.get("expired"):
                expired += 1
            if item.status == "waived":
                if isinstance(waiver, dict):
                    expiries[(str(waiver.get("expires") or ""), bool(waiver.get("expired")))] += 1
            else:
                open_by_severity[str(item.severity).lower()] += 1
        chosen = {status: heapq.nsmallest(limit, pairs) for status, pairs in firsts.items()}
        full = self._full_rows([fp for pairs in chosen.values() for _key_, fp in pairs])

        def section(status: str) -> SectionDigest:
            counts = per_status[status]
            return SectionDigest(
                total=sum(counts.values()),
                per_rule=counts,
                first=tuple(full[fp] for _key_, fp in chosen[status]),
            )

        return FindingsDigest(
            limit=limit,
            total=total,
            open_by_severity=dict(open_by_severity),
            expired=expired,
            waived_expiries=dict(expiries),
            new=section("new") if with_new else SectionDigest(0, {}, ()),
            still_open=section("existing"),
            waived=section("waived"),
        )

    # -- the exports -----------------------------------------------------------------------------

    def stream(self) -> Iterator[Any]:
        """Every finding, in the order of ``check_run`` (rule, cluster, subject), chunk by chunk."""
        b, joined, existing, first_seen = self._join
        with self.engine.connect() as connection:
            text = self._text
            query = (
                select(b, first_seen, existing.label("existing"))
                .select_from(joined)
                .where(self._rows(connection, b))
                .order_by(
                    text(b.c.rule_id, connection),
                    text(b.c.cluster_id, connection),
                    text(b.c.subject, connection),
                    b.c.rule_id,  # ties: in the order load_findings reads them
                    b.c.cluster_id,
                    b.c.subject,
                )
            )
            result = connection.execution_options(yield_per=STREAM_CHUNK).execute(query)
            finding = self._reader(result.keys())
            for row in result:
                yield finding(row)

    def summary(self) -> dict[str, Any]:
        """``CheckResult.summary`` of these findings, counted in SQL."""
        from auditor.engine.check import severity_counts, summary_of

        by_severity = severity_counts()
        statuses: Counter[str] = Counter()
        for (_rule_id, severity), (new, existing) in self._counted().items():
            statuses["new"] += new
            statuses["existing"] += existing
            by_severity[severity] = by_severity.get(severity, 0) + new + existing
        expired = 0
        for item in self.waivable.values():
            statuses[item.status] += 1
            if item.status != "waived":
                by_severity[item.severity] = by_severity.get(item.severity, 0) + 1
            if item.waiver and item.waiver.get("expired"):
                expired += 1
        return summary_of(self, statuses, by_severity, expired)

    def write_check_json(self, stream: TextIO, dumps: Any, items: Iterable[Any] | None = None) -> None:
        """``CheckResult.to_json()`` as ``dumps`` writes it, with the findings streamed.

        ``items`` are the findings' JSON shapes when the caller already reads them (default: read here).
        """
        head = {
            "run": self.run.id,
            "run_status": self.run.status,
            "baseline": self.baseline.id if self.baseline else None,
            "baseline_note": scope_note(self.baseline, self.run) if self.baseline else None,
            "shortfall_note": shortfall_note(self.run),
            "today": self.today.isoformat(),
            "findings": [jsonstream.MARK],
            "summary": self.summary(),
        }
        if items is None:
            items = (f.to_json() for f in self.stream())
        jsonstream.write(stream, dumps, head, items)


@dataclass
class ReportSource:
    """Where the exports of a report gathered from the database stream their rows from."""

    findings: StoredFindings
    diff: Any = None  # the DiffResult, whose still-open findings stream to diff.json

    def findings_json(self) -> Iterator[dict[str, Any]]:
        return (finding.to_json() for finding in self.findings.stream())

    def write_check_json(self, stream: TextIO, dumps: Any, items: Iterable[Any] | None = None) -> None:
        self.findings.write_check_json(stream, dumps, items)

    def check_still_there(self) -> None:
        """Raise :class:`~auditor.errors.RunNotUsableError` when a prune in another process deleted
        a run this report read (the run, its baseline, the runs of its diff) meanwhile: its findings
        and diff were then read part before, part after the delete (exports of no finding, a diff
        with no still-open finding), and must not be written as if whole."""
        from auditor.store.runs import check_not_deleted

        ids = [self.findings.run.id]
        if self.findings.baseline is not None:
            ids.append(self.findings.baseline.id)
        if self.diff is not None:
            ids += [run_id for run_id in (self.diff.from_run, self.diff.to_run) if run_id is not None]
        check_not_deleted(
            self.findings.engine,
            list(dict.fromkeys(ids)),
            "while the report read it",
            "nothing was written; run the report again, and schedule prunes apart from reports",
        )

    def write_diff_json(self, stream: TextIO, dumps: Any) -> None:
        """``DiffResult.to_json()`` with the still-open findings streamed."""
        document = self.diff.to_json(open_findings=False)
        document["findings"]["open"] = [jsonstream.MARK]
        jsonstream.write(stream, dumps, document, (item.to_json() for item in self.diff.findings["open"]))


def _leading_rules(counts: Counter[tuple[int, str]], limit: int) -> list[str]:
    """The rules whose rows come first (by severity rank, then rule id) until ``limit`` rows."""
    rules: list[str] = []
    seen = 0
    for (_rank, rule_id), count in sorted(counts.items()):
        rules.append(rule_id)
        seen += count
        if seen >= limit:
            break
    return rules


def _key(severity: Any, rule: Any, cluster_id: Any, column: Any, fingerprint: Any) -> tuple[Any, ...]:
    return finding_sort_key(
        {
            "severity": severity,
            "rule": rule,
            "cluster_id": cluster_id,
            "column": column,
            "fingerprint": fingerprint,
        }
    )
