"""``auditor check`` (the CI gate) and ``auditor rules validate|schema|test|list``.

Thin wiring: parse options, call :mod:`auditor.engine`, render with :mod:`auditor.formats`, and
turn the gate into the exit code (0 clean, 1 gate failed, 2 rule/usage error, 3 run missing or not
complete). The chosen format goes to stdout or ``--output``; the summary goes to stderr.
"""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from typing import TYPE_CHECKING

import click

from auditor.cli.common import (
    PathOption,
    Settings,
    db_option,
    pass_settings,
    rules_option,
    table_or_json_option,
    today_option,
    waivers_option,
    write_output,
)
from auditor.config import SEVERITIES as cfg_severities
from auditor.formats import Format

if TYPE_CHECKING:
    from auditor.engine.check import CheckResult

SEVERITIES = list(cfg_severities)


WAIVERS_SAID = 20  # of each list on stderr; every one is in the outputs (table, JSON, SARIF...)


def say_waivers_to_review(settings: Settings, result: CheckResult) -> None:
    """On stderr: the waivers expiring within 14 days and the stale ones (``check`` and ``run``), the
    first :data:`WAIVERS_SAID` of each (a scale probe: 10,000 waivers wrote 18,853 lines there)."""
    report = result.waiver_report
    for waiver in report.expiring[:WAIVERS_SAID]:
        settings.info(
            f"waiver expiring soon (valid through {waiver.expires.isoformat()}): {waiver.describe()} "
            f"({waiver.where})"
        )
    _say_more(settings, len(report.expiring), "waivers expiring soon")
    for waiver in report.stale[:WAIVERS_SAID]:
        note = report.unknown_note(waiver)
        settings.info(f"stale waiver (matches nothing): {waiver.describe()} ({waiver.where}){note}")
    _say_more(settings, len(report.stale), "stale waivers")


def _say_more(settings: Settings, count: int, what: str) -> None:
    if count > WAIVERS_SAID:
        settings.info(
            f"... and {count - WAIVERS_SAID:,} more {what} ({count:,} in all: every one is listed by "
            "--format table and json)"
        )


@click.command("check")
@db_option
@click.option(
    "--run", "run_ref", default="latest", show_default=True, metavar="ID|latest", help="Run to check."
)
@rules_option
@waivers_option
@click.option(
    "--baseline",
    default="previous",
    show_default=True,
    metavar="previous|ID|none",
    help="Complete run that decides which findings are new.",
)
@click.option(
    "--fail-on",
    type=click.Choice([*SEVERITIES, "none"]),
    default=None,
    help="Exit 1 when an unwaived finding at or above this severity remains (default: never fail; "
    "none: never, whatever auditor.toml's fail_on says).",
)
@click.option(
    "--new-only",
    is_flag=True,
    help="With --fail-on: count only findings new since the baseline (and those whose waiver expired).",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice([f.value for f in Format]),
    default=Format.TABLE.value,
    show_default=True,
    help="Output format.",
)
@click.option("--output", "-o", type=PathOption(dir_okay=False), help="Write to a file instead of stdout.")
@click.option(
    "--allow-incomplete", is_flag=True, help="Check a run that is not complete (never as a baseline)."
)
@today_option(
    "Judge waiver expiry as of this date (default: today, UTC); another day is a what-if, not "
    "recorded for diff and report."
)
@pass_settings
def check_command(
    settings: Settings,
    db: str | None,
    run_ref: str,
    rules: tuple[str, ...],
    waivers: str | None,
    baseline: str,
    fail_on: str | None,
    new_only: bool,
    fmt: str,
    output: str | None,
    allow_incomplete: bool,
    today: object,
) -> None:
    """Evaluate rules against a snapshot and gate CI on the findings.

    Exit codes: 0 nothing at or above --fail-on remains, 1 the gate failed, 2 a rule, waiver or
    usage error, 3 the run is missing or not complete (or the database failed).
    """
    from auditor.engine import check_run, load_rules_and_waivers
    from auditor.formats import render_chunks

    fail_on = settings.fail_on(fail_on)
    settings.note_new_only(new_only, fail_on)
    rule_paths, waivers_path = settings.rules_paths(rules), settings.waivers_path(waivers)
    settings.guard_outputs(db, {"--output": output}, {"--rules": rule_paths, "--waivers": waivers_path})
    ruleset, waiver_set = load_rules_and_waivers(rule_paths, waivers_path, to_evaluate=True)
    engine = settings.engine(db, create=False)
    day: date | None = today  # type: ignore[assignment]
    # Another day is a what-if (a probe): recorded, its statuses became the run's history, and a
    # later diff or report showed waivers that had expired as still open, or the other way round.
    what_if = day is not None and day != datetime.now(UTC).date()
    result = check_run(
        engine,
        run_ref,
        ruleset,
        waivers=waiver_set,
        baseline=baseline,
        today=day,
        allow_incomplete=allow_incomplete,
        record=not what_if,
    )
    if what_if and day is not None:
        settings.info(
            f"note: waivers judged as of {day.isoformat()} (--today), not today: a what-if, not "
            f"recorded as run {result.run.id}'s check for diff and report"
        )
    # The table on stdout ends with these notes and the summary line: stderr carries them otherwise.
    table_shown = fmt == Format.TABLE.value and not output
    note = result.incomplete_note()
    if note and not table_shown:
        settings.info(f"warning: {note}")
    for extra in (result.shortfall_note(), result.baseline_note()):
        if extra and not table_shown:
            settings.info(f"note: {extra}")
    write_output(render_chunks(fmt, result), output)
    if fmt == Format.SARIF.value:
        from auditor.formats.sarif_format import size_note

        if too_many := size_note(result):
            settings.info(f"note: {too_many}")
    if not table_shown:
        settings.info(result.summary_line())
    say_waivers_to_review(settings, result)
    if verdict := result.gate_note(fail_on, new_only):  # (what fails the gate, counted)
        settings.info(verdict)
        click.get_current_context().exit(result.gate(fail_on, new_only))


@click.group("rules")
def rules_group() -> None:
    """Validate, describe and test rule files."""


@rules_group.command("validate")
@click.argument("paths", nargs=-1, type=PathOption())
@click.option(
    "--waivers",
    type=PathOption(dir_okay=False),
    help="Validate this waiver file too, against these rules (the check's own loading, without a run).",
)
@pass_settings
def rules_validate(settings: Settings, paths: tuple[str, ...], waivers: str | None) -> None:
    """Validate rule files (default: the settings file's rules, else the built-in pack), reporting
    every problem at once (with no path, the settings file's waivers too, as check loads them).

    With --waivers, the waiver file's problems are listed with the rules' (exit 2 if any), and a
    waiver naming a rule these files do not define is pointed out (a warning: such a waiver would be
    reported as stale by auditor check), as is one that has already expired.
    """
    from auditor.engine import load_rules_and_waivers
    from auditor.engine.waivers import rule_typo

    if not paths and waivers is None:
        waivers = settings.waivers_path()
    ruleset, waiver_set = load_rules_and_waivers(settings.rules_paths(paths), waivers)
    from auditor.render.env import plural

    total = len(ruleset.rules) + len(ruleset.disabled)
    disabled = f" ({len(ruleset.disabled):,} of them disabled)" if ruleset.disabled else ""
    click.echo(f"{plural(total, 'rule')} valid in {plural(len(ruleset.sources), 'file')}{disabled}")
    if waiver_set is not None:
        click.echo(f"{plural(len(waiver_set.entries), 'waiver')} valid in {waiver_set.source}")
        today = datetime.now(UTC).date()
        every_id = [rule.id for rule in (*ruleset.rules, *ruleset.disabled)]  # ("did you mean")
        for waiver in waiver_set.entries:
            if waiver.expired(today):  # a reviewer approving the file should see it waives nothing now
                click.echo(
                    f"warning: {waiver.where}: the waiver was valid through {waiver.expires.isoformat()} "
                    f"and has expired (today is {today.isoformat()}, UTC): its findings count again",
                    err=True,
                )
            rule = ruleset.get(waiver.rule)
            if rule is None:
                click.echo(
                    f"warning: {waiver.where}: no rule {waiver.rule!r} in these rule files "
                    f"({rule_typo(waiver.rule, every_id, loaded='given')})",
                    err=True,
                )
            elif not rule.enabled:
                click.echo(
                    f"warning: {waiver.where}: rule {waiver.rule!r} is disabled (enabled: false): "
                    "the waiver has nothing to waive",
                    err=True,
                )


@rules_group.command("schema")
@click.option("--output", "-o", type=PathOption(dir_okay=False), help="Write to a file instead of stdout.")
@pass_settings
def rules_schema(settings: Settings, /, output: str | None) -> None:
    """Print the JSON Schema of rule files (for editor completion)."""
    from auditor.engine import rules_json_schema

    # -o over the settings file, or over a rule file of the built-in pack, destroyed it (a probe)
    settings.guard_outputs(None, {"--output": output}, {}, uses_database=False)

    write_output(json.dumps(rules_json_schema(), indent=2) + "\n", output)


@rules_group.command("test")
@click.argument("paths", nargs=-1, type=PathOption())
@pass_settings
def rules_test(settings: Settings, paths: tuple[str, ...]) -> None:
    """Run the fixture snapshots (NAME.test.yaml) kept beside rule files (default: those of the
    settings file's rules, else the built-in pack's).

    Exit 0 when every case passes, 1 when a case fails, 2 when a rule or fixture file is invalid.
    """
    from auditor.engine.fixtures import run_fixtures
    from auditor.paths import rules_dir

    report = run_fixtures(settings.rules_paths(paths) or [rules_dir()])
    write_output("\n".join(report.lines()) + "\n", None)  # stdout closed: exit 3, not a silent pass
    if not report.passed:
        click.get_current_context().exit(1)


@rules_group.command("list")
@click.argument("paths", nargs=-1, type=PathOption())
@table_or_json_option
@pass_settings
def rules_list(settings: Settings, paths: tuple[str, ...], fmt: str) -> None:
    """List the rules (default: the settings file's rules, else the built-in pack) with severity,
    scope and what each flags."""
    from auditor.engine import load_ruleset

    ruleset = load_ruleset(settings.rules_paths(paths))
    if fmt == "json":
        data = [
            {
                "id": r.id,
                "title": r.title,
                "severity": r.severity,
                "scope": r.scope,
                "explain": r.explain(),
                "references": list(r.references),
                "tags": list(r.tags),
                "enabled": r.enabled,
                "source": f"{r.source}:{r.line}",
            }
            for r in (*ruleset.rules, *ruleset.disabled)
        ]
        write_output(json.dumps({"rules": data, "digest": ruleset.digest}, indent=2) + "\n", None)
        return
    from auditor.textsafe import one_line, prose

    # (a title is the team's text: a line break in it forged a line, an escape reached the terminal)
    lines = [
        f"{r.id}  [{r.severity}, {r.scope}]  {prose(r.title)}\n    {one_line(r.explain())}\n"
        for r in ruleset.rules
    ]
    lines += [f"{r.id}  [disabled]  {prose(r.title)}\n" for r in ruleset.disabled]
    write_output("".join(lines), None)  # stdout closed: exit 3, as for every command's data


def register(cli: click.Group) -> None:
    cli.add_command(check_command)
    cli.add_command(rules_group)
