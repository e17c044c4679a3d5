"""The findings half of the diff from the rules engine's stored evaluations, in SQL.

Both runs are evaluated with the same rule set if they were not yet (:func:`findings_for_run` stores
the evaluation, so a later diff or check reuses it). The two stored evaluations are then compared
by fingerprint in SQL, like the catalog: only the findings that appeared or went away, and those
whose waiver state may have changed (rules that a waiver names, findings the older run had waived),
are read into Python. The findings open in both runs, typically the vast majority, stay in the
database: :class:`OpenFindings` counts them and streams them, sorted, only when someone iterates
(the JSON format does; text, markdown and the report only count them).

Waiver states: the newer run gets the waivers as of ``today``, with status ``new``/``existing``
relative to the older run. The older run keeps the states its own last check recorded under the same
rules (what reviewers saw then); when it was never checked, the waivers are applied as of the day it
was taken. So a waiver added since the older check shows as *newly waived*, and one that lapsed
between the runs as *waiver expired*.
"""

from __future__ import annotations

import heapq
from collections.abc import Collection, Iterator, Sequence
from datetime import date
from operator import itemgetter
from typing import Any

from sqlalchemy import ColumnElement, Connection, Engine, and_, case, func, literal, or_, select

from auditor.diff.catalog import outside
from auditor.diff.findings import ChangeIndex, actively_waived, waiver_expired, waiver_explanation
from auditor.diff.model import FINDING_CATEGORIES, SEVERITY_ORDER, FindingDiff
from auditor.store.db import store_errors
from auditor.store.runs import RunInfo
from auditor.store.schema import findings as findings_table

STREAM_CHUNK = 5_000


def stored_findings_diff(
    engine: Engine,
    before: RunInfo,
    after: RunInfo,
    index: ChangeIndex,
    *,
    ruleset: Any,
    waivers: Any,
    today: date,
    skip: Collection[str] = (),
) -> dict[str, Sequence[FindingDiff]]:
    """The five categories for ``before`` → ``after`` under ``ruleset`` (see the module docstring).

    Findings of the clusters in ``skip`` that only one run has are left out (in the SQL): the
    cluster was not fetched in full, so their absence from the other run says nothing.
    """
    from auditor import engine as rules_engine
    from auditor.engine.check import stored_evaluation

    older_eval = stored_evaluation(engine, before.id, ruleset)
    newer_eval = stored_evaluation(engine, after.id, ruleset)
    waiver_rules = waivers.rules if waivers is not None else []
    out: dict[str, list[FindingDiff]] = {name: [] for name in FINDING_CATEGORIES}
    a, b = findings_table.alias("a"), findings_table.alias("b")
    with (
        store_errors(f"could not compare the findings of runs {before.id} and {after.id}"),
        engine.connect() as connection,
    ):
        recorded = _recorded(connection, older_eval)

        # Went away: in the older evaluation only.
        gone = []
        for row in connection.execute(_only_in(a, older_eval, b, newer_eval, skip)):
            finding = _finding(rules_engine, row, before.id)
            if recorded:
                finding.waiver = row.waiver or None
            gone.append(finding)
        _older_states(rules_engine, gone, recorded, waivers, before)
        for finding in gone:
            data = finding.to_json()
            out["resolved"].append(FindingDiff("resolved", data, index.explain(data)))

        # Appeared: in the newer evaluation only.
        fresh = [
            _finding(rules_engine, row, after.id, status="new")
            for row in connection.execute(_only_in(b, newer_eval, a, older_eval, skip))
        ]
        # In both: the newer evaluation's rows less those that appeared (fingerprints are unique
        # per evaluation), counted from its key index rather than by joining the two.
        common = connection.execute(
            select(func.count()).select_from(b).where(b.c.evaluation_id == newer_eval)
        ).scalar_one()
        if skip:  # less every one that appeared, those left out included (they are neither new nor open)
            appeared = _only_in(b, newer_eval, a, older_eval)
            common -= connection.execute(select(func.count()).select_from(appeared.subquery())).scalar_one()
        else:
            common -= len(fresh)
        rules_engine.apply_waivers(fresh, waivers, today)
        for finding in fresh:
            data = finding.to_json()
            if actively_waived(data):
                explained = [*index.explain(data), waiver_explanation(data, "waiver_added")]
                out["newly_waived"].append(FindingDiff("newly_waived", data, explained))
            else:
                out["new"].append(FindingDiff("new", data, index.explain(data)))

        # In both, with a waiver state that may differ: read and judged in Python.
        maybe: list[ColumnElement[bool]] = [b.c.rule_id.in_(waiver_rules)] if waiver_rules else []
        if recorded:  # a check marks findings under an active waiver "waived"
            maybe.append(a.c.status == "waived")
        elif waiver_rules:
            maybe.append(a.c.rule_id.in_(waiver_rules))
        eager: set[str] = set()
        if maybe:
            rows = list(connection.execute(_in_both(a, older_eval, b, newer_eval).where(or_(*maybe))))
            _judge_waivers(rules_engine, rows, recorded, waivers, before, after, today, out, eager)
    for items in out.values():
        items.sort(key=FindingDiff.sort_key)
    result: dict[str, Sequence[FindingDiff]] = dict(out)
    result["open"] = OpenFindings(
        engine, rules_engine, older_eval, newer_eval, after.id, out["open"], eager, int(common) - len(eager)
    )
    return result


class OpenFindings(Sequence[FindingDiff]):
    """The findings open in both runs: counted up front, streamed in the diff's order on iteration.

    ``judged`` are the ones already read (their waiver state was examined); the others are read
    from the newer evaluation, chunk by chunk, and merged in. Indexing materialises the list once.
    """

    def __init__(
        self,
        engine: Engine,
        rules_engine: Any,
        older_eval: int,
        newer_eval: int,
        run_id: int,
        judged: list[FindingDiff],
        skip: set[str],
        plain: int,
    ) -> None:
        self._engine = engine
        self._rules_engine = rules_engine
        self._older_eval = older_eval
        self._newer_eval = newer_eval
        self._run_id = run_id
        self._judged = judged
        self._skip = skip
        self._plain = plain
        self._cache: list[FindingDiff] | None = None

    def __len__(self) -> int:
        return len(self._judged) + self._plain

    def __iter__(self) -> Iterator[FindingDiff]:
        if self._cache is not None:
            return iter(self._cache)
        return heapq.merge(self._judged, self._stream(), key=FindingDiff.sort_key)

    def __getitem__(self, item: Any) -> Any:
        if self._cache is None:
            self._cache = list(self)
        return self._cache[item]

    def _stream(self) -> Iterator[FindingDiff]:
        a, b = findings_table.alias("a"), findings_table.alias("b")
        with self._engine.connect() as connection:
            query = _in_both(a, self._older_eval, b, self._newer_eval).order_by(
                *_diff_order(b, connection.dialect.name)
            )
            result = connection.execution_options(yield_per=STREAM_CHUNK).execute(query)
            # By position: ~385k rows at 1M columns, and reading fields by name costs ~0.5 us each.
            keys = list(result.keys())
            read = self._rules_engine.Finding.reader(keys)
            fingerprint = keys.index("fingerprint")
            runs = itemgetter(
                *(keys.index(k) for k in ("run_id", "older_run", "first_seen_run", "older_first_seen"))
            )
            for row in result:
                if row[fingerprint] in self._skip:
                    continue
                finding = read(row)
                finding.status, finding.waiver = "existing", None  # as _finding(..., status="existing")
                finding.first_seen_run = _earliest(*runs(row))
                yield FindingDiff("open", finding.to_json(), [])


# -- queries -------------------------------------------------------------------------------------


def _only_in(this: Any, this_eval: int, other: Any, other_eval: int, skip: Collection[str] = ()) -> Any:
    """Rows of evaluation ``this_eval`` whose fingerprint is not in ``other_eval`` (and, when
    ``skip`` leaves clusters out, whose cluster is one of the others: not one left out, and not
    none, a finding about the whole snapshot whose group may span the clusters left out)."""
    return (
        select(this)
        .select_from(
            this.outerjoin(
                other, and_(other.c.evaluation_id == other_eval, other.c.fingerprint == this.c.fingerprint)
            )
        )
        .where(
            this.c.evaluation_id == this_eval,
            other.c.fingerprint.is_(None),
            *outside(this.c.cluster_id, skip),
            *([this.c.cluster_id.is_not(None)] if skip else []),
        )
    )


def _both_join(a: Any, older_eval: int, b: Any, newer_eval: int) -> Any:
    return b.join(
        a,
        and_(
            a.c.evaluation_id == older_eval,
            a.c.fingerprint == b.c.fingerprint,
            b.c.evaluation_id == newer_eval,
        ),
    )


def _in_both(a: Any, older_eval: int, b: Any, newer_eval: int) -> Any:
    """The newer run's rows with a fingerprint the older run has, beside the older run's state."""
    return select(
        b,
        a.c.status.label("older_status"),
        a.c.waiver.label("older_waiver"),
        a.c.first_seen_run.label("older_first_seen"),
        a.c.run_id.label("older_run"),
    ).select_from(_both_join(a, older_eval, b, newer_eval))


def _diff_order(table: Any, dialect: str) -> list[Any]:
    """ORDER BY matching :meth:`FindingDiff.sort_key` (code-point order for text on every database)."""
    rank = case(
        *((func.lower(table.c.severity) == name, literal(value)) for name, value in SEVERITY_ORDER.items()),
        else_=literal(0),
    )

    def text(column: Any) -> Any:
        value = func.coalesce(column, "")
        return value.collate("C") if dialect == "postgresql" else value

    return [
        rank.desc(),
        text(table.c.rule_id),
        text(table.c.cluster_id),
        text(table.c.column_fqn),
        text(table.c.fingerprint),
    ]


def _recorded(connection: Connection, evaluation_id: int) -> bool:
    """Whether a check recorded statuses and waiver states for this evaluation."""
    from auditor.engine.findings import evaluation_rows

    return (
        connection.execute(
            select(findings_table.c.fingerprint)
            .where(
                evaluation_rows(connection, findings_table, evaluation_id),
                findings_table.c.status.is_not(None),
            )
            .limit(1)
        ).first()
        is not None
    )


# -- findings and their states -------------------------------------------------------------------


def _finding(rules_engine: Any, row: Any, run_id: int, *, status: str | None = None) -> Any:
    """A :class:`auditor.engine.Finding` from a stored row; waiver state cleared unless kept below."""
    return rules_engine.Finding.from_row(
        row, status=status or row.status or _age(row.first_seen_run, run_id), waiver=None
    )


def _older_states(rules_engine: Any, items: list[Any], recorded: bool, waivers: Any, run: RunInfo) -> None:
    """Give the older run's findings the waiver states they had (see the module docstring)."""
    if recorded:
        return  # the caller kept the recorded status and waiver
    for finding in items:
        finding.status = _age(finding.first_seen_run, run.id)
    rules_engine.apply_waivers(items, waivers, run.started_at.date())


def _judge_waivers(
    rules_engine: Any,
    rows: list[Any],
    recorded: bool,
    waivers: Any,
    before: RunInfo,
    after: RunInfo,
    today: date,
    out: dict[str, list[FindingDiff]],
    eager: set[str],
) -> None:
    """Sort findings open in both runs whose waiver state may differ into their categories."""
    newer = [_finding(rules_engine, row, after.id, status="existing") for row in rows]
    for finding, row in zip(newer, rows, strict=True):
        finding.first_seen_run = _earliest(
            row.run_id, row.older_run, row.first_seen_run, row.older_first_seen
        )
    rules_engine.apply_waivers(newer, waivers, today)
    if recorded:
        older_waived = [
            actively_waived({"status": row.older_status, "waiver": row.older_waiver}) for row in rows
        ]
    else:
        older = [_finding(rules_engine, row, before.id) for row in rows]
        for finding in older:
            finding.status = "existing"
        rules_engine.apply_waivers(older, waivers, before.started_at.date())
        older_waived = [actively_waived(f.to_json()) for f in older]
    for finding, was_waived in zip(newer, older_waived, strict=True):
        data = finding.to_json()
        eager.add(finding.fingerprint)
        if actively_waived(data) and not was_waived:
            out["newly_waived"].append(
                FindingDiff("newly_waived", data, [waiver_explanation(data, "waiver_added")])
            )
        elif waiver_expired(data) and was_waived:
            out["waiver_expired"].append(
                FindingDiff("waiver_expired", data, [waiver_explanation(data, "waiver_expired")])
            )
        else:
            out["open"].append(FindingDiff("open", data, []))


def _earliest(run_id: int, older_run: int, first_seen: int | None, older_first_seen: int | None) -> int:
    """The first run known to have a finding present in both runs."""
    candidates = [run_id, older_run]
    candidates += [run for run in (first_seen, older_first_seen) if run is not None]
    return int(min(candidates))


def _age(first_seen_run: int | None, run_id: int) -> str:
    return "new" if first_seen_run is None or first_seen_run >= run_id else "existing"
