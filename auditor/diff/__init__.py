"""The diff between two runs: what changed in the catalog, and which findings appeared or went away.

:func:`compute_diff` is the stage's one entry point. The catalog half is computed in SQL from the
stored content hashes (:mod:`auditor.diff.catalog`), so memory grows with the number of changes and
never with the catalog; the findings half (:mod:`auditor.diff.findings`) compares the two runs'
findings by fingerprint and links each to the catalog change that explains it. The result is a
:class:`DiffResult` whose ``to_json()`` is the contract other tools read (see ``docs/diff.md``);
:mod:`auditor.diff.text` renders it for people (text and markdown).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, select

from auditor.diff.catalog import diff_catalog, not_compared
from auditor.diff.findings import ChangeIndex, FindingsSource, diff_findings
from auditor.diff.model import (
    FINDING_CATEGORIES,
    CatalogDiff,
    ClusterChange,
    ClusterEntry,
    ColumnChange,
    ColumnEntry,
    ColumnMove,
    DiffResult,
    Explanation,
    FindingDiff,
    NotCompared,
)
from auditor.diff.sources import OpenFindings, stored_findings_diff
from auditor.errors import ConfigError, RunNotUsableError
from auditor.store.db import store_errors
from auditor.store.runs import (
    RunInfo,
    check_not_deleted,
    previous_complete_run,
    resolve_run,
    scope_note,
    skipped_ids,
)
from auditor.store.schema import run_clusters

DEFAULT_CONFIDENCE_THRESHOLD = 0.05

__all__ = [
    "DEFAULT_CONFIDENCE_THRESHOLD",
    "FINDING_CATEGORIES",
    "CatalogDiff",
    "ClusterChange",
    "ClusterEntry",
    "ColumnChange",
    "ColumnEntry",
    "ColumnMove",
    "DiffResult",
    "Explanation",
    "FindingDiff",
    "FindingsSource",
    "NotCompared",
    "OpenFindings",
    "compute_diff",
    "resolve_pair",
]

RunRef = int | str | RunInfo | None


def resolve_pair(
    engine: Engine, from_run: RunRef = None, to_run: RunRef = None, *, allow_incomplete: bool = False
) -> tuple[RunInfo, RunInfo]:
    """The two runs to compare: by default the newest complete run and the complete run before it.

    ``to_run`` defaults to the newest complete run; ``from_run`` to the newest complete run older
    than ``to_run``. Both must be complete unless ``allow_incomplete``. Raises
    :class:`RunNotUsableError` (exit 3) when a run is missing, not complete, or there is none to
    compare with.
    """
    after = _resolve(engine, to_run, allow_incomplete, "--to")
    if from_run is None:
        before = previous_complete_run(engine, after.id)
        if before is None:
            raise RunNotUsableError(
                f"there is no complete run before run {after.id} to compare it with",
                hint="take another snapshot first, or name the runs with --from RUN --to RUN",
            )
    else:
        before = _resolve(engine, from_run, allow_incomplete, "--from")
    return before, after


def _resolve(engine: Engine, ref: RunRef, allow_incomplete: bool, option: str) -> RunInfo:
    if isinstance(ref, RunInfo):
        ref = ref.id
    return resolve_run(
        engine, "latest" if ref is None else ref, allow_incomplete=allow_incomplete, option=option
    )


def compute_diff(
    engine: Engine,
    from_run: RunRef = None,
    to_run: RunRef = None,
    *,
    ruleset: Any = None,
    waivers: Any = None,
    confidence_threshold: float = DEFAULT_CONFIDENCE_THRESHOLD,
    today: date | None = None,
    allow_incomplete: bool = False,
    findings: bool = True,
    findings_source: FindingsSource | None = None,
) -> DiffResult:
    """Diff two runs (default: the two newest complete runs).

    ``ruleset``/``waivers`` are what :func:`auditor.engine.load_ruleset` and
    :func:`auditor.engine.load_waivers` return (``ruleset=None``: the built-in pack; either may
    also be a path; a rule set whose every rule is disabled is a RuleError). Findings of a run that
    was never checked with these rules are evaluated on demand and stored. ``findings_source``
    replaces the rules engine (a callable returning a run's findings as dicts); ``findings=False``
    skips findings altogether. ``today`` is the date waiver
    expiry is judged against (default: the current UTC date).

    A cluster that either run holds without all its columns (``fetch_status`` ``failed`` or
    ``fetching``, possible only with ``allow_incomplete``; or ``short``, fewer columns served than
    announced, in a complete run too), or that one run was asked to leave
    out (``--skip-cluster``) while the other holds it, is *not compared*: its catalog changes and
    the findings of it that only one run has are left out, and ``DiffResult.not_compared`` names
    it, rather than reading its columns as removed and its findings as resolved.
    """
    if not 0 <= confidence_threshold <= 1:
        raise ConfigError(
            f"--threshold {confidence_threshold} is outside 0..1",
            hint="confidence levels are between 0 and 1; the default is 0.05",
        )
    if findings and findings_source is None:
        from auditor.engine.rules import ruleset_to_evaluate

        ruleset = ruleset_to_evaluate(ruleset)  # paths loaded; every rule disabled: a RuleError
    before, after = resolve_pair(engine, from_run, to_run, allow_incomplete=allow_incomplete)
    for run in (before, after):
        refuse_unlisted(engine, run)
    # PostgreSQL: a run just bulk-loaded (or still being written) has no statistics until autovacuum
    # gets to it, and the membership anti-joins planned from empty ones ran for minutes, spilling
    # to disk (found by an operations probe); analyzed first, as an evaluation does
    from auditor.engine.evaluate import refresh_statistics

    with store_errors("could not refresh the database's statistics"):
        refresh_statistics(engine)
    try:
        result = _diff_pair(
            engine, before, after, ruleset, waivers, confidence_threshold, today, findings, findings_source
        )
    except Exception:
        _still_there(engine, before, after)  # a run deleted meanwhile is the error to report
        raise
    _still_there(engine, before, after)  # ... and it would have made the result wrong
    return result


def refuse_unlisted(engine: Engine, run: RunInfo) -> None:
    """Raise :class:`RunNotUsableError` (exit 3) for a run that failed before its cluster listing
    was stored: it holds no catalog, so every cluster of the other run would read as removed (or
    added) and every finding as resolved (or new), with nothing to say why. A run that does not
    record it (:attr:`RunInfo.listing_stored` ``None``) counts as unlisted when it holds no cluster
    and never learnt how many were announced."""
    stored = run.listing_stored
    if stored is None and run.clusters_announced is None:
        with store_errors(f"could not read run {run.id}"), engine.connect() as connection:
            held = connection.execute(
                select(run_clusters.c.cluster_id).where(run_clusters.c.run_id == run.id).limit(1)
            ).first()
        stored = held is not None
    if stored is False:
        raise RunNotUsableError(
            f"run {run.id} failed before its cluster listing was stored ({run.error or run.status}): "
            "it holds no catalog to compare",
            hint="compare two runs that listed their clusters (see: auditor runs)",
        )


def _still_there(engine: Engine, *pair: RunInfo) -> None:
    check_not_deleted(
        engine,
        [run.id for run in pair],
        "while the diff read it",
        "run the diff again; schedule prunes apart from diffs and reports",
    )


def _diff_pair(
    engine: Engine,
    before: RunInfo,
    after: RunInfo,
    ruleset: Any,
    waivers: Any,
    confidence_threshold: float,
    today: date | None,
    findings: bool,
    findings_source: FindingsSource | None,
) -> DiffResult:
    with (
        store_errors(f"could not diff run {before.id} against run {after.id}"),
        engine.connect() as connection,
    ):
        left_out = not_compared(connection, before.id, after.id, (skipped_ids(before), skipped_ids(after)))
        skip = frozenset(entry.cluster_id for entry in left_out)
        catalog = diff_catalog(
            connection, before.id, after.id, confidence_threshold=confidence_threshold, skip=skip
        )
    categories: dict[str, Sequence[FindingDiff]] = {name: [] for name in FINDING_CATEGORIES}
    if findings:
        index = ChangeIndex(catalog)
        if findings_source is not None:
            older, newer = findings_source(before, after)
            categories = dict(diff_findings(older, newer, index, skip))
        else:
            from auditor import engine as rules_engine

            if isinstance(waivers, (str, Path)):
                waivers = rules_engine.load_waivers(waivers)
            categories = stored_findings_diff(
                engine,
                before,
                after,
                index,
                ruleset=ruleset,
                waivers=waivers,
                today=today or datetime.now(UTC).date(),
                skip=skip,
            )
    return DiffResult(
        from_run=before.id,
        to_run=after.id,
        catalog=catalog,
        findings=categories,
        confidence_threshold=confidence_threshold,
        from_started_at=_iso(before.started_at),
        to_started_at=_iso(after.started_at),
        not_compared=left_out,
        scope_note=scope_note(before, after, skips=False),  # left-out clusters are not compared
        findings_compared=findings,
    )


def _iso(value: datetime | None) -> str | None:
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")
