"""Where the diff's findings come from: the rules engine, one run streamed and one run in memory.

:func:`engine_findings_source` returns a :data:`~auditor.diff.findings.FindingsSource` over the rules
engine. Both runs are evaluated with the same rule set if they were not yet (the evaluation is stored,
so a later diff or check reuses it). The newer run's findings are loaded (they are the diff's output:
new, open, waived); the older run's are streamed from the stored evaluation in chunks, since only its
resolved findings and its waiver states are kept.

Waiver states: the newer run gets the waivers as of ``today``, with status ``new``/``existing``
relative to the older run. The older run keeps the states its own last check recorded under the same
rules (what reviewers saw then); when it was never checked, the waivers are applied as of the day it
was taken. So a waiver added since the older check shows as *newly waived*, and one that lapsed
between the runs as *waiver expired*.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, select
from sqlalchemy.exc import SQLAlchemyError

from auditor.diff.findings import FindingsSource
from auditor.errors import StoreError
from auditor.store.runs import RunInfo
from auditor.store.schema import findings as findings_table

STREAM_CHUNK = 5_000


def engine_findings_source(
    engine: Engine, *, ruleset: Any = None, waivers: Any = None, today: date | None = None
) -> FindingsSource:
    """Findings of both runs from the rules engine (``ruleset=None``: the built-in pack).

    ``waivers`` is a loaded waiver set, a path to a waivers file, or ``None``.
    """
    from auditor import engine as rules_engine

    rules = ruleset if ruleset is not None else rules_engine.load_ruleset(None)
    if isinstance(waivers, (str, Path)):
        waivers = rules_engine.load_waivers(waivers)
    day = today or datetime.now(UTC).date()

    def source(before: RunInfo, after: RunInfo) -> tuple[Iterator[dict[str, Any]], list[dict[str, Any]]]:
        older_evaluation = _evaluation(engine, rules_engine, before.id, rules)
        older_fingerprints = _fingerprints(engine, older_evaluation)
        newer = rules_engine.findings_for_run(engine, after.id, rules, store=True)
        for finding in newer:
            finding.waiver = None
            finding.status = "existing" if finding.fingerprint in older_fingerprints else "new"
        del older_fingerprints
        rules_engine.apply_waivers(newer, waivers, day)
        newer_json = [finding.to_json() for finding in newer]
        del newer
        older = _stream_older(engine, rules_engine, older_evaluation, before, waivers)
        return older, newer_json

    return source


def _evaluation(engine: Engine, rules_engine: Any, run_id: int, rules: Any) -> int:
    """The id of the stored evaluation of ``run_id`` under ``rules``, evaluating it if there is none."""
    from auditor.engine.findings import latest_evaluation

    with engine.connect() as connection:
        found = latest_evaluation(connection, run_id, rules.digest)
    if found is None:
        rules_engine.findings_for_run(engine, run_id, rules, store=True)
        with engine.connect() as connection:
            found = latest_evaluation(connection, run_id, rules.digest)
    if found is None:  # pragma: no cover - findings_for_run(store=True) always stores one
        raise StoreError(f"the findings of run {run_id} could not be stored")
    return int(found)


def _fingerprints(engine: Engine, evaluation_id: int) -> set[str]:
    with engine.connect() as connection:
        return set(
            connection.execute(
                select(findings_table.c.fingerprint).where(findings_table.c.evaluation_id == evaluation_id)
            ).scalars()
        )


def _stream_older(
    engine: Engine, rules_engine: Any, evaluation_id: int, run: RunInfo, waivers: Any
) -> Iterator[dict[str, Any]]:
    """The older run's findings, chunk by chunk, with the waiver states it had."""
    from auditor.engine.findings import Finding

    table = findings_table
    try:
        with engine.connect() as connection:
            recorded = (
                connection.execute(
                    select(table.c.fingerprint)
                    .where(table.c.evaluation_id == evaluation_id, table.c.status.is_not(None))
                    .limit(1)
                ).first()
                is not None
            )
            result = connection.execution_options(yield_per=STREAM_CHUNK).execute(
                select(table).where(table.c.evaluation_id == evaluation_id).order_by(table.c.fingerprint)
            )
            for rows in result.partitions():
                chunk = [
                    Finding(
                        rule=row.rule_id,
                        severity=row.severity,
                        kind=row.kind,
                        cluster_id=row.cluster_id,
                        column=row.column_fqn,
                        columns=list(row.columns or []),
                        message=row.message,
                        key=row.subject,
                        fingerprint=row.fingerprint,
                        first_seen_run=row.first_seen_run,
                        status=row.status or _age(row.first_seen_run, run.id),
                        waiver=row.waiver if recorded else None,
                    )
                    for row in rows
                ]
                if not recorded:
                    rules_engine.apply_waivers(chunk, waivers, run.started_at.date())
                yield from (finding.to_json() for finding in chunk)
    except SQLAlchemyError as exc:
        detail = str(getattr(exc, "orig", exc)).splitlines()[0][:200]
        raise StoreError(f"could not read the findings of run {run.id}: {detail}") from None


def _age(first_seen_run: int | None, run_id: int) -> str:
    return "new" if first_seen_run is None or first_seen_run >= run_id else "existing"
