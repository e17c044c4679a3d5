"""``auditor db upgrade``, ``auditor db prune`` and ``auditor runs``."""

from __future__ import annotations

import json

import click

from auditor.cli.common import (
    PathOption,
    Settings,
    db_option,
    pass_settings,
    table_or_json_option,
    write_output,
)
from auditor.errors import DeliveryError, StoreError
from auditor.textsafe import one_line


@click.group("db")
def db_group() -> None:
    """Manage the snapshot database."""


@db_group.command("upgrade")
@db_option
@pass_settings
def db_upgrade(settings: Settings, db: str | None) -> None:
    """Create the database, or upgrade it to the newest schema."""
    from auditor.store.db import create_db_engine, database_url, display_url, require_tables, upgrade

    url = database_url(settings.db_target(db))
    engine = create_db_engine(url)
    before, after = upgrade(engine)
    require_tables(engine)
    if before == after:
        click.echo(f"{display_url(url)}: already at schema revision {after}")
    elif before is None:  # a database without the store's tables: they were created
        click.echo(f"{display_url(url)}: created at schema revision {after}")
    else:
        click.echo(f"{display_url(url)}: upgraded from revision {before} to {after}")


@db_group.command("prune")
@click.option(
    "--keep",
    type=int,
    default=None,
    metavar="N",
    help="Keep the N newest complete runs (N >= 1).",
)
@click.option(
    "--older-than",
    "older_than",
    type=float,
    default=None,
    metavar="DAYS",
    help="Only runs that started more than DAYS days ago may be deleted.",
)
@click.option(
    "--abandoned-after",
    "abandoned_after",
    type=float,
    default=None,
    metavar="HOURS",
    help="Also count as abandoned a running run that started more than HOURS hours ago and whose "
    "writer cannot be checked from here (another host, or an older auditor). Without it, only runs "
    "whose writer is provably gone from this host are marked failed.",
)
@click.option("--dry-run", is_flag=True, help="Report what would be deleted or marked; change nothing.")
@click.option(
    "--vacuum",
    is_flag=True,
    help="Reclaim the freed space afterwards (SQLite VACUUM; PostgreSQL VACUUM ANALYZE).",
)
@table_or_json_option
@click.option("--output", "-o", type=PathOption(dir_okay=False), help="Write to a file instead of stdout.")
@db_option
@pass_settings
def db_prune(
    settings: Settings,
    keep: int | None,
    older_than: float | None,
    abandoned_after: float | None,
    dry_run: bool,
    vacuum: bool,
    fmt: str,
    output: str | None,
    db: str | None,
) -> None:
    """Delete old runs and the stored versions no remaining run refers to.

    Always kept: the newest complete run, every running run that may be in progress (reported as
    skipped), and every run newer than the oldest complete run kept. With both --keep and
    --older-than, a run is deleted only when both allow it. A running run whose writing process is
    gone (killed, or the host restarted) is abandoned: it is first marked failed, then treated as
    any failed run. One transaction: a failure or Ctrl-C changes nothing (--vacuum comes after the
    commit; if it fails or is interrupted, what was removed is printed first).
    """
    from auditor.stopping import signals_held
    from auditor.store.retention import check_policy, committed_prune, plan_prune, prune
    from auditor.store.runs import UNKNOWN

    check_policy(keep, older_than, abandoned_after)  # before opening (or creating) the database
    settings.guard_outputs(db, {"--output": output}, {})
    engine = settings.engine(db, create=False)
    plan = plan_prune(engine, keep=keep, older_than=older_than, abandoned_after=abandoned_after)
    result = None
    shown = False
    try:
        result = prune(engine, plan, dry_run=dry_run, vacuum=vacuum)
        with signals_held():  # what went is printed whole, even with a Ctrl-C on the way
            _show_prune(result, fmt, output)
            shown = True
    except DeliveryError as exc:  # the outcome could not be written (a full disk, stdout closed)
        if result is None or result.dry_run:
            raise
        # the deletion is committed: what went is said where it can be, and the error says so
        click.echo(_prune_table(result), err=True, nl=False)
        exc.message = f"the prune was committed (above), but its outcome could not be written: {exc.message}"
        exc.hint = None
        raise
    except (StoreError, KeyboardInterrupt) as exc:
        committed = result if result is not None else committed_prune(exc)
        if committed is None or committed.dry_run:
            raise
        if not shown:  # what went is said before the error: a Ctrl-C after the commit, or VACUUM's
            _show_prune(committed, fmt, output)
        if isinstance(exc, KeyboardInterrupt):
            if vacuum and not committed.vacuumed:
                settings.info("the prune was committed; VACUUM was interrupted (run --vacuum again later)")
            else:
                settings.info("the prune was committed before the interrupt")
        raise
    for run_id in result.marked_failed:
        verb = "would be marked failed" if result.dry_run else "marked failed"
        reason = result.reasons.get(run_id, "its writer is gone")
        settings.info(f"run {run_id} is abandoned: {reason}; {verb}")
    for run_id in result.skipped_running:
        why = result.reasons.get(run_id, "it may be in progress")
        hint = (
            "; if it is not, --abandoned-after HOURS lets a prune mark it failed by its age"
            if abandoned_after is None and result.states.get(run_id) == UNKNOWN
            else ""
        )
        settings.info(f"run {run_id} is old enough to go but still running: skipped ({why}){hint}")


def _show_prune(result, fmt: str, output: str | None) -> None:
    if fmt == "json":
        write_output(json.dumps(result.to_json(), indent=2) + "\n", output)
    else:
        write_output(_prune_table(result), output)


def _prune_table(result) -> str:
    """The prune's outcome for people: what went (or would go), what stayed, what was skipped."""

    def listed(ids) -> str:  # a year of daily runs stays one line: "1-300, 302"
        spans: list[list[int]] = []
        for run_id in ids:
            if spans and run_id == spans[-1][-1] + 1:
                spans[-1].append(run_id)
            else:
                spans.append([run_id])
        parts = [f"{s[0]}-{s[-1]}" if len(s) > 2 else ", ".join(map(str, s)) for s in spans]
        return ", ".join(parts) or "none"

    rows = [
        ("runs deleted", listed(result.deleted_runs)),
        ("runs kept", listed(result.kept_runs)),
        ("running, skipped", listed(result.skipped_running)),
        ("marked failed", listed(result.marked_failed)),
        ("membership rows", f"{result.run_columns_removed:,}"),
        ("evaluations", f"{result.evaluations_removed:,}"),
        ("findings", f"{result.findings_removed:,}"),
        ("column versions", f"{result.column_versions_removed:,}"),
        ("cluster versions", f"{result.cluster_versions_removed:,}"),
    ]
    if result.vacuumed and result.size_before is not None and result.size_after is not None:
        rows.append(("database size", f"{result.size_before:,} -> {result.size_after:,} bytes"))
    if result.dry_run:
        head = "dry run, nothing was changed: a prune would remove"
    elif not result.deleted_runs and not result.marked_failed:
        head = "nothing to prune" + (" (vacuumed)" if result.vacuumed else "") + ": no run matched"
    else:
        head = "pruned" + (", then vacuumed" if result.vacuumed else "") + ": removed"
    width = max(len(label) for label, _ in rows)
    return "\n".join([head, *(f"  {label:<{width}}  {value}" for label, value in rows)]) + "\n"


@click.command("runs")
@db_option
@table_or_json_option
@click.option("--output", "-o", type=PathOption(dir_okay=False), help="Write to a file instead of stdout.")
@pass_settings
def runs_command(settings: Settings, db: str | None, fmt: str, output: str | None) -> None:
    """List the snapshot runs, oldest first.

    A running run is shown as running (active) when its writing process is alive on this host,
    running (abandoned) when that process is gone (auditor db prune marks it failed), and
    running (unknown) when it cannot be checked from here (another host, or an older auditor).
    """
    from auditor.store.runs import in_utc, list_runs, name_ids, run_liveness, skipped_ids, stored_so_far
    from auditor.store.schema import RUN_RUNNING

    settings.guard_outputs(db, {"--output": output}, {})
    # No database yet: no runs, and no empty file created where a mistyped --db points.
    runs = list_runs(settings.engine(db)) if settings.database_exists(db) else []
    if fmt == "json":
        shapes = [run.to_json() for run in runs]
        write_output(json.dumps({"runs": shapes}, indent=2) + "\n", output)
        return
    liveness = {run.id: run_liveness(run.status, run.started_at, run.details) for run in runs}
    # a run's counters are written when it ends: a running one shows what it has stored so far
    running = [run.id for run in runs if run.status == RUN_RUNNING]
    so_far = stored_so_far(settings.engine(db), running) if running else {}  # no database made
    width = max([9, *(len(f"running ({found.state})") for found in liveness.values() if found)])
    header = f"{'ID':>5}  {'STATUS':<{width}} {'STARTED (UTC)':<20} {'CLUSTERS':>9} {'COLUMNS':>10}  SOURCE"
    lines = [header]
    for run in runs:
        started = in_utc(run.started_at).strftime("%Y-%m-%d %H:%M:%S") if run.started_at else "?"
        found = liveness[run.id]
        status = f"{run.status} ({found.state})" if found else run.status
        # the filter beside the source: runs of one tenant taken with other filters do not compare
        source = run.source_url or ""
        if run.cluster_filter:
            source = f"{source}  filter {one_line(repr(run.cluster_filter))}".lstrip()
        if skipped := skipped_ids(run):
            source = f"{source}  skipping {one_line(name_ids(skipped))}".lstrip()
        if run.damaged:
            source = f"{source}  RECORD DAMAGED: {one_line(run.damaged)}".lstrip()
        clusters, columns = so_far.get(run.id, (run.clusters_stored or 0, run.columns_stored or 0))
        lines.append(f"{run.id:>5}  {status:<{width}} {started:<20} {clusters:>9} {columns:>10}  {source}")
    if not runs:
        demo = settings.demo_database(settings.db_target(db))
        lines.append(
            f"(no runs yet here: the demo's runs are in {demo}, listed by `auditor runs --db {demo}`)"
            if demo
            else "(no runs yet: take one with `auditor snapshot` or try `auditor demo`)"
        )
    write_output("\n".join(lines) + "\n", output)


def register(cli: click.Group) -> None:
    cli.add_command(db_group)
    cli.add_command(runs_command)
