"""Checking a run: findings with baseline status, waivers applied, a summary and the CI gate.

:func:`findings_for_run` returns a run's findings under a rule set, reusing a stored evaluation
with the same rules digest or evaluating (and storing) on demand. :func:`check_run` resolves the run
(refusing runs that are not complete unless asked), evaluates the *same* rule set on the baseline
run (a complete run: the previous one, a given id, or none), marks each finding ``new`` or
``existing``, applies waivers, and returns a :class:`CheckResult` whose :meth:`~CheckResult.gate`
implements the exit-code contract: 0 when nothing at or above ``--fail-on`` remains (only new
findings with ``new_only``, and those whose waiver expired; never waived ones), 1 otherwise; without
``fail_on`` findings never fail.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy import Engine, select

from auditor.engine.evaluate import check_evaluation_settings, evaluate
from auditor.engine.findings import (
    STATUS_EXISTING,
    STATUS_NEW,
    STATUS_WAIVED,
    Finding,
    earliest_sightings,
    evaluation_rows,
    latest_evaluation,
    load_findings,
    record_check,
    store_evaluation,
    while_running,
)
from auditor.engine.rules import SEVERITY_ORDER, Rule, RulePaths, RuleSet, ruleset_to_evaluate, severity_rank
from auditor.engine.waivers import WaiverReport, Waivers, apply_waivers, load_waivers
from auditor.errors import EXIT_GATE, EXIT_OK, ConfigError, RunNotUsableError
from auditor.gcpause import collector_paused
from auditor.store.db import store_errors
from auditor.store.runs import (
    RunInfo,
    can_be_run_id,
    check_not_deleted,
    details_count,
    get_run,
    missing_run,
    previous_complete_run,
    resolve_run,
    scope_note,
    shortfall_note,
)
from auditor.store.schema import RUN_COMPLETE, RUN_RUNNING, runs
from auditor.store.schema import findings as findings_table


def findings_for_run(
    engine: Engine,
    run_ref: int | str | RunInfo | None,
    ruleset: RuleSet,
    *,
    store: bool = True,
    allow_incomplete: bool = False,
) -> list[Finding]:
    """The findings of a run (an id, ``latest`` or a :class:`RunInfo`) under ``ruleset`` (stored
    evaluation reused when the digest matches). Raises :class:`RunNotUsableError` for a run that
    does not exist or, unless ``allow_incomplete``, is not complete, as :func:`check_run` does."""
    with store_errors("could not read the runs"):
        run = resolve_run(engine, run_ref, allow_incomplete=allow_incomplete)
    return _findings_with_evaluation(engine, run.id, ruleset, store=store)[0]


def _findings_with_evaluation(
    engine: Engine, run_id: int, ruleset: RuleSet, *, store: bool, load: bool = True
) -> tuple[list[Finding], int | None, str]:
    """(findings, stored evaluation id or None, the digest they are stored under).

    The run's status is read before anything is evaluated: a run still being written is evaluated
    afresh each time and stored under :func:`while_running`'s digest, never reused for the run.
    ``load=False``: an evaluation already stored is not read (no findings are returned for it), for
    callers that need its id only.
    """
    if not can_be_run_id(run_id):
        raise missing_run(run_id)
    with engine.connect() as connection:
        status = connection.execute(select(runs.c.status).where(runs.c.id == run_id)).scalar()
        if status is None:  # deleted since it was resolved (a prune), or never was
            raise missing_run(run_id)
        digest = ruleset.digest if status != RUN_RUNNING else while_running(ruleset.digest)
        if status != RUN_RUNNING:
            evaluation_id = latest_evaluation(connection, run_id, digest)
            if evaluation_id is not None:
                return (load_findings(connection, evaluation_id) if load else []), evaluation_id, digest
    items = evaluate(engine, run_id, ruleset)
    with engine.connect() as connection:
        earliest = earliest_sightings(connection, run_id, [f.fingerprint for f in items])
    for finding in items:
        finding.first_seen_run = min(earliest.get(finding.fingerprint, run_id), run_id)
    evaluation_id = None
    if store:
        evaluation_id = store_evaluation(engine, run_id, digest, [r.id for r in ruleset.rules], items)
    return items, evaluation_id, digest


def stored_evaluation(engine: Engine, run_id: int, ruleset: RuleSet) -> int:
    """The id of the stored evaluation of ``run_id`` under ``ruleset``, evaluating (and storing) it if
    there is none: for readers that then work on the stored findings in SQL (the report).

    A stored evaluation is not read: at 1M columns that is ~390k findings turned into objects, and
    the report asks for two evaluations twice (4.4 -> 18.6 s when it did, bench/RESULTS.md)."""
    evaluation_id = _findings_with_evaluation(engine, run_id, ruleset, store=True, load=False)[1]
    assert evaluation_id is not None  # store=True always stores one
    return int(evaluation_id)


def _sightings(engine: Engine, run_id: int, ruleset: RuleSet, *, store: bool) -> dict[str, int | None]:
    """fingerprint → first-seen run of every finding of ``run_id`` (a baseline) under ``ruleset``.

    A stored evaluation is read as two columns in SQL rather than as whole findings (a baseline of
    a 1M-column catalog holds hundreds of thousands); otherwise the run is evaluated (and stored).
    """
    with engine.connect() as connection:
        evaluation_id = latest_evaluation(connection, run_id, ruleset.digest)
        if evaluation_id is not None:
            rows = connection.execute(
                select(findings_table.c.fingerprint, findings_table.c.first_seen_run).where(
                    evaluation_rows(connection, findings_table, evaluation_id)
                )
            )
            # pairs by position (a row's fields read by name cost ~0.5 us each)
            return dict(rows.all())
    found = _findings_with_evaluation(engine, run_id, ruleset, store=store)[0]
    return {f.fingerprint: f.first_seen_run for f in found}


@dataclass
class CheckResult:
    """The outcome of checking one run: findings with status, waivers, baseline and summary."""

    run: RunInfo
    baseline: RunInfo | None
    ruleset: RuleSet
    findings: list[Finding]
    waivers: Waivers | None = None
    waiver_report: WaiverReport = field(default_factory=WaiverReport)
    today: date = field(default_factory=lambda: datetime.now(UTC).date())

    @property
    def rules(self) -> tuple[Rule, ...]:
        return self.ruleset.rules

    def open_findings(self) -> list[Finding]:
        """Findings that count (not waived)."""
        return [f for f in self.findings if f.status != STATUS_WAIVED]

    @property
    def summary(self) -> dict[str, Any]:
        by_severity = severity_counts()
        for finding in self.open_findings():
            by_severity[finding.severity] += 1
        statuses = Counter(f.status for f in self.findings)
        expired = sum(1 for f in self.findings if f.waiver_expired)
        return summary_of(self, statuses, by_severity, expired)

    def failing(self, fail_on: str | None, new_only: bool = False) -> list[Finding]:
        """The findings that fail the gate at ``fail_on`` (a severity; ``None`` or ``"none"``: no
        gate), never waived ones. Another value raises :class:`ConfigError` naming the valid ones."""
        if not check_fail_on(fail_on):
            return []
        threshold = severity_rank(fail_on)
        return [
            f
            for f in self.open_findings()
            # An expired waiver's finding counts again with new_only too: otherwise the expiry of a
            # finding waived before the baseline never failed the gate most CI jobs run.
            if severity_rank(f.severity) >= threshold
            and (not new_only or f.status == STATUS_NEW or f.waiver_expired)
        ]

    def gate(self, fail_on: str | None, new_only: bool = False) -> int:
        """0 when nothing at or above ``fail_on`` remains, else 1 (the exit-code contract)."""
        return EXIT_GATE if self.failing(fail_on, new_only) else EXIT_OK

    def gate_note(self, fail_on: str | None, new_only: bool = False) -> str | None:
        """What a failed gate says (``gate failed: 3 finding(s) at or above high``), as ``check``
        and ``run`` print it; ``None`` when the gate passes."""
        failing = self.failing(fail_on, new_only)
        if not failing:
            return None
        if new_only:
            expired = sum(1 for f in failing if f.status != STATUS_NEW)  # counted for their expired waiver
            also = f" and {expired} whose waiver expired" if expired else ""
            return f"gate failed: {len(failing) - expired} new finding(s){also} at or above {fail_on}"
        return f"gate failed: {len(failing)} finding(s) at or above {fail_on}"

    def to_json(self, *, findings: bool = True) -> dict[str, Any]:
        """The ``auditor check --format json`` document (``findings=False``: an empty findings list)."""
        return {
            "run": self.run.id,
            "run_status": self.run.status,
            "baseline": self.baseline.id if self.baseline else None,
            "baseline_note": self.baseline_note(),
            "shortfall_note": self.shortfall_note(),
            "today": self.today.isoformat(),
            "findings": [f.to_json() for f in self.findings] if findings else [],
            "summary": self.summary,
        }

    def shortfall_note(self) -> str | None:
        """What checking the run may miss: see :func:`auditor.store.runs.shortfall_note`."""
        return shortfall_note(self.run)

    def baseline_note(self) -> str | None:
        """For a baseline taken from another source or with another cluster filter than the run:
        why findings may read as new or resolved without the catalog having changed (see
        :func:`auditor.store.runs.scope_note`), and for a baseline newer than the run (``--run 4
        --baseline 8``): what "new" then means. ``None`` without a baseline or when both agree."""
        if self.baseline is None:
            return None
        notes = [scope_note(self.baseline, self.run)]
        if self.baseline.id > self.run.id:
            notes.append(
                f"the baseline, run {self.baseline.id}, is newer than run {self.run.id}: 'new' are the "
                f"findings run {self.run.id} has and run {self.baseline.id} no longer has"
            )
        if short := details_count(self.baseline, "total_shortfall_count"):
            clusters = "1 cluster" if short == 1 else f"{short:,} clusters"
            notes.append(
                f"the baseline, run {self.baseline.id}, served fewer columns than announced in {clusters}: "
                "findings about the columns it did not serve count as new here (auditor diff leaves "
                f"{'that cluster' if short == 1 else 'those clusters'} out)"
            )
        return "; ".join(note for note in notes if note) or None

    def incomplete_note(self) -> str | None:
        """For a run checked with ``allow_incomplete`` that is not complete: what its findings miss.

        ``None`` for a complete run. People-facing outputs print it before the summary, so that a
        partial catalog never reads as a clean result (the JSON carries ``run_status``).
        """
        if self.run.status == RUN_COMPLETE:
            return None
        count = details_count(self.run, "failed_cluster_count")
        why = ""
        announced, stored = self.run.clusters_announced, self.run.clusters_stored or 0
        if not announced and count:  # the listing itself was not complete: no count to compare with
            why = f" ({count} cluster{' was' if count == 1 else 's were'} not fetched)"
        elif announced:  # a snapshot stopped early: "3 were not fetched" hid the 147 never reached
            rest = max(announced - stored - count, 0)
            parts = [f"{count:,} could not be fetched"] if count else []
            if rest:
                parts.append(
                    f"{'the other ' if count else ''}{rest:,} {'was' if rest == 1 else 'were'} not fetched"
                )
            said = f": {', '.join(parts)}" if parts else ""
            stored_were = "was" if stored == 1 else "were"
            why = f" ({stored:,} of {announced:,} clusters {stored_were} stored in full{said})"
        return (
            f"run {self.run.id} is {self.run.status}, not complete{why}: these findings cover only the "
            "clusters and columns it holds; what it lacks was not checked"
        )

    def summary_line(self) -> str:
        """One line for people: counts by severity, new, waived and expired waivers."""
        s = self.summary
        severities = ", ".join(f"{n} {name}" for name, n in s["by_severity"].items() if n) or "none open"
        baseline = f"baseline run {s['baseline_run']}" if s["baseline_run"] else "no baseline"
        return (
            f"run {self.run.id}: {s['total']} finding{'s' if s['total'] != 1 else ''} "
            f"({severities}); {s['new']} new, {s['existing']} existing, {s['waived']} waived, "
            f"{s['waiver_expired']} waiver expired; "
            f"{s['rules']} rule{'s' if s['rules'] != 1 else ''}, {baseline}"
        )


def asks_no_baseline(baseline: str | int | None) -> bool:
    """Whether ``--baseline`` says ``none`` (any case, spaces around)."""
    return baseline is not None and str(baseline).strip().lower() == "none"


def check_fail_on(fail_on: str | None) -> bool:
    """Whether ``fail_on`` gates (a severity) or not (``None`` or ``"none"``); another value raises
    :class:`ConfigError` naming the valid ones."""
    if fail_on is None or fail_on == "none":
        return False
    if fail_on not in SEVERITY_ORDER:
        raise ConfigError(
            f"fail_on {fail_on!r} is not a severity: use one of {', '.join(SEVERITY_ORDER)}, or none"
        )
    return True


def parse_baseline(baseline: str | int | None) -> str | int:
    """``"previous"`` (also for None), ``"none"``, or a run id; anything else raises
    :class:`ConfigError` (before any work: ``run_job`` checks it before taking its snapshot)."""
    ref = "previous" if baseline is None else str(baseline).strip().lower()
    if asks_no_baseline(ref):
        return "none"
    if ref == "previous":
        return ref
    try:
        run_id = int(ref)
    except ValueError:
        run_id = 0
    if run_id < 1:  # ids start at 1: '0' or '-1' is no run reference
        raise ConfigError(
            f"--baseline {baseline!r} is not 'previous', 'none' or a run id",
            hint="list runs with: auditor runs",
        ) from None
    return run_id


def baseline_run(engine: Engine, run_id: int) -> RunInfo:
    """Run ``run_id`` as a baseline: it exists and is complete, or :class:`RunNotUsableError`."""
    found = get_run(engine, run_id)
    if found is None:
        raise RunNotUsableError(f"baseline run {run_id} does not exist", hint="list runs with: auditor runs")
    if not found.complete:
        raise RunNotUsableError(
            f"baseline run {run_id} is {found.status}, not complete; an incomplete run is never a baseline",
            hint="pick a complete run (auditor runs) or use --baseline previous",
        )
    return found


def resolve_baseline(engine: Engine, run: RunInfo, baseline: str | int | None) -> RunInfo | None:
    """``previous`` (default), ``none``, or a run id; the baseline is always a complete run."""
    ref = parse_baseline(baseline)
    if ref == "none":
        return None
    if ref == "previous":
        return previous_complete_run(engine, run.id)
    assert isinstance(ref, int)
    if ref == run.id:
        # Every finding would be "existing": a --new-only gate that can never fail.
        raise ConfigError(
            f"--baseline {ref} is the run being checked",
            hint="pick an earlier run (auditor runs), or use --baseline previous",
        )
    return baseline_run(engine, ref)


def mark_against_baseline(
    finding: Finding,
    run_id: int,
    baseline: RunInfo | None,
    in_baseline: bool,
    baseline_first_seen: int | None,
) -> None:
    """Set ``finding``'s status (new or existing) and first-seen run against ``baseline``.

    An existing finding was first seen no later than the baseline's own first sighting of it (the
    baseline itself when it has none).
    """
    if not in_baseline:
        finding.status = STATUS_NEW
        return
    assert baseline is not None
    finding.status = STATUS_EXISTING
    earlier = baseline_first_seen if baseline_first_seen is not None else baseline.id
    current = finding.first_seen_run if finding.first_seen_run is not None else run_id
    finding.first_seen_run = min(earlier, current)


def summary_of(
    result: Any, statuses: Mapping[str, int], by_severity: dict[str, int], waiver_expired: int
) -> dict[str, Any]:
    """The ``summary`` of a check's JSON, from counts made in Python or in SQL.

    ``result`` is a :class:`CheckResult`, or what reads like one (``ruleset``, ``baseline``,
    ``today``, ``waiver_report``): the report's SQL-side findings.
    ``statuses`` counts new, existing and waived findings; ``by_severity`` the open ones (seeded
    with every severity, most severe first, by :func:`severity_counts`).
    """
    stale, expiring = waiver_lists(result.waiver_report, result.today)
    return {
        "total": statuses["new"] + statuses["existing"] + statuses["waived"],
        "open": statuses["new"] + statuses["existing"],
        "by_severity": by_severity,
        "new": statuses["new"],
        "existing": statuses["existing"],
        "waived": statuses["waived"],
        "waiver_expired": waiver_expired,
        "rules": len(result.ruleset.rules),
        "rules_digest": result.ruleset.digest,
        "baseline_run": result.baseline.id if result.baseline else None,
        "stale_waivers": stale,
        "expiring_waivers": expiring,
    }


def waiver_lists(
    report: WaiverReport | None, today: date
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The stale waivers and those expiring within 14 days, as the check's JSON lists them."""
    if not report:
        return [], []
    stale = [
        {
            **w.to_json(today),
            "unknown_rule": w.rule in report.unknown_rules,
            "note": report.unknown_note(w).removeprefix(": ") or None,
        }
        for w in report.stale
    ]
    return stale, [w.to_json(today) for w in report.expiring]


def severity_counts() -> dict[str, int]:
    """Every severity at 0, most severe first (the order of ``summary.by_severity``)."""
    return dict.fromkeys(reversed(SEVERITY_ORDER), 0)


def check_run(
    engine: Engine,
    run_ref: str | int | RunInfo | None,
    ruleset: RuleSet | RulePaths,
    *,
    waivers: Waivers | str | os.PathLike[str] | None = None,
    baseline: str | int | None = "previous",
    today: date | None = None,
    allow_incomplete: bool = False,
    store: bool = True,
    record: bool = True,
) -> CheckResult:
    """Check one run (``latest``, an id or a :class:`RunInfo`) against ``ruleset`` (``None``: the
    built-in pack; rule files or folders are loaded; a set whose every rule is disabled is a
    :class:`RuleError`) and return findings with status, waivers (what :func:`load_waivers` returns, or
    the path of a waiver file) and summary.

    ``store`` keeps a new evaluation for reuse; ``record`` (with ``store``) also records each
    finding's status and waiver against it, as ``auditor check`` and ``auditor run`` do.
    """
    ruleset = ruleset_to_evaluate(ruleset)  # (paths loaded; every rule disabled: a RuleError)
    check_evaluation_settings(engine)  # said whether or not a stored evaluation is reused
    if isinstance(waivers, str | os.PathLike):
        waivers = load_waivers(waivers)
    with store_errors("could not read the runs"):
        run = resolve_run(
            engine, run_ref if run_ref is not None else "latest", allow_incomplete=allow_incomplete
        )
    # (a database error reading a stored evaluation or a baseline was an internal error)
    with collector_paused(), store_errors(f"could not check run {run.id}"):  # 100,000s of findings at 1M
        base = resolve_baseline(engine, run, baseline)
        # A new evaluation that will be recorded is stored below, statuses included (one write).
        items, evaluation_id, digest = _findings_with_evaluation(
            engine, run.id, ruleset, store=store and not record
        )
        previous: dict[str, int | None] = {}
        if base is not None:
            previous = _sightings(engine, base.id, ruleset, store=store)
            # its evaluation and its findings are two reads: a prune between them would leave no
            # finding to compare with, and every finding would read as new without a word
            check_not_deleted(
                engine,
                [base.id],
                "while it was read as the baseline",
                "check against a baseline that is kept; schedule prunes apart from checks",
            )
        for finding in items:
            finding.waiver = None
            in_baseline = finding.fingerprint in previous
            mark_against_baseline(finding, run.id, base, in_baseline, previous.get(finding.fingerprint))
        day = today or datetime.now(UTC).date()
        report = apply_waivers(items, waivers, day)
        if waivers is not None:
            named = frozenset(w.rule for w in waivers.entries)
            report.disabled_rules = named & {r.id for r in ruleset.disabled}
            report.unknown_rules = named - {r.id for r in ruleset.rules} - report.disabled_rules
            report.rule_ids = frozenset(r.id for r in (*ruleset.rules, *ruleset.disabled))
            report.partial_run = None if run.status == RUN_COMPLETE else run.id
        # Remember each finding's status and waiver (the diff reads them later). Read-only views
        # such as the report pass record=False: at 1M columns a check touches ~400k rows.
        waivers_digest = waivers.digest if waivers else None
        if store and record and evaluation_id is None:
            rule_ids = [r.id for r in ruleset.rules]
            store_evaluation(
                engine, run.id, digest, rule_ids, items, record=True, waivers_digest=waivers_digest
            )
        elif store and record:
            record_check(engine, run.id, evaluation_id, waivers_digest, items)
    return CheckResult(run, base, ruleset, items, waivers, report, day)
