"""``auditor run`` (the main job) and ``auditor demo`` (the whole job on the sandbox, no setup)."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from auditor.cli.check import SEVERITIES, say_waivers_to_review
from auditor.cli.common import (
    PathOption,
    Settings,
    db_option,
    pass_settings,
    rules_option,
    setting_type,
    smtp_ca_bundle_option,
    waivers_option,
    write_output,
)
from auditor.cli.fetch import (
    _max_failed_clusters,
    _max_seconds,
    _processes,
    _workers,
    api_options,
    client_from_settings,
    max_failed_option,
    max_minutes_option,
    processes_option,
    skip_cluster_option,
)
from auditor.config import DEMO_FOLDER, working_folder
from auditor.errors import AuditorError, ConfigError, DeliveryError
from auditor.store.runs import skipped_note

if TYPE_CHECKING:
    from collections.abc import Callable

    from auditor.engine import CheckResult
    from auditor.store.runs import RunInfo


def _sandbox_size(settings: Settings) -> dict[str, int]:
    """``[auditor.sandbox]`` in auditor.toml: seed, clusters, columns of the fallback sandbox
    (checked when the file was loaded)."""
    return dict(settings.file.get("sandbox") or {})


@click.command("run")
@api_options
@click.option(
    "--filter", "cluster_filter", default=None, metavar="EXPR", help="Clusters filter, e.g. size=20."
)
@click.option("--workers", default=None, type=setting_type("workers"), help="Clusters fetched at once [4].")
@processes_option
@max_failed_option
@max_minutes_option
@skip_cluster_option
@rules_option
@waivers_option
@click.option(
    "--baseline",
    default="previous",
    show_default=True,
    metavar="previous|ID|none",
    help="Run the findings are compared with (new or existing), and the report's diff against.",
)
@click.option(
    "--fail-on",
    type=click.Choice([*SEVERITIES, "none"]),
    default=None,
    help="Gate threshold (default: never fail; none: never, whatever auditor.toml's fail_on says).",
)
@click.option(
    "--new-only",
    is_flag=True,
    help="With --fail-on: count only findings new since the baseline (and those whose waiver expired).",
)
@click.option(
    "--format",
    "fmt",
    default="table",
    show_default=True,
    type=click.Choice(["table", "json", "junit", "sarif", "markdown", "csv"]),
    help="Format of the check results on stdout (or --output).",
)
@click.option("--output", "-o", type=PathOption(dir_okay=False), help="Write the check results to a file.")
@click.option(
    "--report",
    "report_path",
    type=PathOption(dir_okay=False),
    help="HTML report path (default: auditor-report-run<ID>.html).",
)
@click.option(
    "--export-dir", type=PathOption(file_okay=False), help="Also write findings.csv/json and diff.json here."
)
@click.option(
    "--templates", type=PathOption(file_okay=False), help="Folder of templates overriding reports/."
)
@click.option("--email-to", multiple=True, metavar="ADDR", help="Email the report to ADDR (repeatable).")
@click.option("--email-cc", multiple=True, metavar="ADDR", help="Copy recipient (repeatable).")
@click.option("--email-from", metavar="ADDR", help="Sender address.")
@click.option("--subject", metavar="TEXT", help="Email subject.")
@click.option(
    "--smtp",
    "smtp_url",
    metavar="URL",
    help="smtp://host[:25], smtp+starttls://host[:587] or smtps://host[:465] (env AUDITOR_SMTP; "
    "credentials from AUDITOR_SMTP_USER and AUDITOR_SMTP_PASSWORD).",
)
@smtp_ca_bundle_option
@click.option(
    "--eml", "eml_path", type=PathOption(dir_okay=False), help="Write the email to a file, not SMTP."
)
@click.option(
    "--email-attachments/--no-email-attachments",
    default=True,
    show_default=True,
    help="Attach the full HTML report and the findings CSV (large on big catalogs: a mail server's "
    "size limit may refuse them).",
)
@db_option
@pass_settings
def run_command(
    settings: Settings,
    cluster_filter: str | None,
    workers: int | None,
    processes: int | None,
    max_failed_clusters: int | None,
    max_minutes: float | None,
    skip_clusters: tuple[str, ...],
    rules: tuple[str, ...],
    waivers: str | None,
    baseline: str,
    fail_on: str | None,
    new_only: bool,
    fmt: str,
    output: str | None,
    report_path: str | None,
    export_dir: str | None,
    templates: str | None,
    email_to: tuple[str, ...],
    email_cc: tuple[str, ...],
    email_from: str | None,
    subject: str | None,
    smtp_url: str | None,
    smtp_ca_bundle: str | None,
    eml_path: str | None,
    email_attachments: bool,
    db: str | None,
    **api: Any,
) -> None:
    """The main job: snapshot, check, diff against the previous complete run, report, email.

    Exits with the gate's code (0 clean, 1 findings at or above --fail-on). With no BigID URL
    configured it runs against the built-in sandbox, and says so. A snapshot that is not complete
    (clusters that could not be fetched, see auditor snapshot --help) stops the job with exit 3,
    before anything is checked. The check's output is printed before the report is written, and the
    email is sent last: if either fails (exit 3), what came before it is already out.
    """
    from auditor.engine import load_rules_and_waivers
    from auditor.engine.check import asks_no_baseline
    from auditor.formats import render_chunks
    from auditor.pipeline import builtin_sandbox, email_report, report_command, run_job
    from auditor.progress import Progress
    from auditor.render.report import default_report_name

    rules_paths = settings.rules_paths(rules)
    waivers_path = settings.waivers_path(waivers)
    fail_on = settings.fail_on(fail_on)
    settings.note_new_only(new_only, fail_on)
    for option, given in (("--report", report_path), ("--eml", eml_path)):
        if given == "-":  # standard output carries the run's results
            raise ConfigError(
                f"{option} -: auditor run prints its results on standard output",
                hint=f"give {option} a file name (auditor report -o - and auditor email --eml - write to "
                "standard output)",
            )
    settings.guard_outputs(
        db,
        {"--output": output, "--report": report_path, "--eml": eml_path},
        {
            "--rules": rules_paths,
            "--waivers": waivers_path,
            "--templates": templates,
            "--token-file": api.get("token_file"),
            "--ca-bundle": api.get("ca_bundle"),
            "--smtp-ca-bundle": smtp_ca_bundle,
        },
        creates=export_dir,
    )
    if report_path is None and not os.access(working_folder(), os.W_OK | os.X_OK):
        # the report goes to the working folder by default: found out now, not after the snapshot
        # (working_folder: a folder removed under the shell passes os.access(".") all the same)
        raise DeliveryError(
            f"cannot write the report into the current folder {Path.cwd()}: Permission denied",
            hint="nothing was done yet: give --report FILE in a folder you can write",
        )
    # rule and waiver errors (exit 2) before any fetching
    ruleset, waiver_set = load_rules_and_waivers(rules_paths, waivers_path, to_evaluate=True)
    email = None
    if settings.list_value(email_to, "email_to") or eml_path:  # checked now, not after the snapshot
        email = settings.email_route(
            email_to,
            smtp_url,
            eml_path,
            cc=email_cc,
            flags=("--email-to", "--email-cc", "--email-from"),
            sender=email_from,
            subject=subject,
            ca_bundle=smtp_ca_bundle,
            attach=(email_attachments, email_attachments),
        )
    elif smtp_url or email_cc or smtp_ca_bundle:  # a mail option without a recipient sends nothing
        given = "--smtp" if smtp_url else "--email-cc" if email_cc else "--smtp-ca-bundle"
        raise ConfigError(
            f"{given} given, but no recipient",
            hint="add --email-to ADDR (or email_to in auditor.toml)",
        )
    elif settings.file.get("smtp") or "email_to" in settings.file.values:
        # a scheduled job set up to email, with no recipient: said, not silently sent to no one
        settings.info(f"note: {settings.file.path} names no recipient (email_to): no email is sent")
    templates_dir = settings.templates_dir(templates)
    count = _workers(settings, workers)
    limit = _max_failed_clusters(settings, max_failed_clusters)
    max_seconds = _max_seconds(settings, max_minutes)

    said: list[CheckResult] = []
    taken: list[RunInfo] = []

    def say_results(check: CheckResult, _exit_code: int) -> None:
        """The check's output and notes, printed before the report is written: a report that then
        cannot be written (a full disk, exit 3) or a stop during it does not take them along. The
        files written and the gate's verdict follow the report."""
        said.append(check)
        run = check.run
        write_output(render_chunks(fmt, check), output)
        if fmt == "sarif":
            from auditor.formats.sarif_format import size_note

            if too_many := size_note(check):
                settings.info(f"note: {too_many}")
        settings.info(
            f"run {run.id} complete: {run.clusters_stored or 0} clusters, {run.columns_stored or 0} columns"
            + (
                f"; compared with run {check.baseline.id}"
                if check.baseline
                else "; not compared with an earlier run (--baseline none)"
                if asks_no_baseline(baseline)
                else "; no earlier complete run"
            )
        )
        if left_out := skipped_note(run.details or {}):
            settings.info(f"note: {left_out}")
        if fmt != "table" or output:  # the table on stdout ends with the notes and the summary line
            settings.info(check.summary_line())
            for extra in (check.shortfall_note(), check.baseline_note()):
                if extra:
                    settings.info(f"note: {extra}")
        say_waivers_to_review(settings, check)  # as check says them (a probe: run with -o did not)

    with contextlib.ExitStack() as stack:
        client = None
        if settings.bigid_url(api.get("url")):
            # the key (or its prompt) before the database: a job without one leaves no empty file
            client = stack.enter_context(client_from_settings(settings, workers=count, **api))
        engine = settings.engine(db)
        if client is None:
            client, epoch = stack.enter_context(
                builtin_sandbox(engine, workers=count, **_sandbox_size(settings))
            )
            settings.info(
                f"no BigID URL configured (--url, BIGID_URL or auditor.toml): using the built-in sandbox, "
                f"epoch {epoch}"
            )
        try:
            result = run_job(
                engine,
                client,
                ruleset=ruleset,
                waivers=waiver_set,
                rules_paths=rules_paths,
                waivers_path=waivers_path,
                cluster_filter=cluster_filter,
                workers=count,
                max_failed_clusters=limit,
                max_seconds=max_seconds,
                skip_clusters=settings.list_value(skip_clusters, "skip_clusters"),
                processes=_processes(settings, processes),
                progress=Progress(enabled=False if settings.quiet else None),
                baseline=baseline,
                fail_on=fail_on,
                new_only=new_only,
                report_path=report_path,
                export_dir=export_dir,
                templates_dir=templates_dir,
                taken=taken.append,
                checked=say_results,
            )
        except AuditorError as exc:
            if taken:  # the snapshot is stored: say what is left to do, not to take another one
                exc.hint = _what_is_left(
                    exc,
                    taken[0],
                    said[0] if said else None,
                    report_command_for=lambda run, check: report_command(
                        run.id,
                        _compared_with(check, baseline),
                        rules_paths or (),
                        waivers_path,
                        output=report_path or default_report_name(run.id),
                        export_dir=export_dir,
                        db=db,
                        templates=templates,
                        config=click.get_current_context().find_root().params.get("config_path"),
                    ),
                )
            raise
    for path in result.written:
        settings.info(f"wrote {path}")
    if result.exit_code and (verdict := result.check.gate_note(fail_on, new_only)):
        settings.info(verdict)
    if email is not None:  # last: results and verdict are out even when the mail server is not
        try:
            email_report(result, email, templates_dir=templates_dir)
        except DeliveryError as exc:
            again = email.resend_command(
                result.run.id,
                _compared_with(result.check, baseline),
                settings.rules_paths(rules) or (),
                settings.waivers_path(waivers),
                db=db,
                templates=templates,
                smtp_given=bool(smtp_url),
                error=exc,
                config=click.get_current_context().find_root().params.get("config_path"),
            )
            if exc.refused:  # the command below says it all
                exc.hint = None
            if exc.too_large and (email.attach_report or email.attach_csv):
                # the scheduled job would meet the same limit next time
                exc.hint = f"{exc.hint}; for this job's next runs add --no-email-attachments"
            said = f"{exc.hint}; " if exc.hint else ""
            from auditor.store.db import url_holds_password

            with_db = " (and --db as you gave it: its URL holds a password, not printed)"
            exc.hint = f"{said}the results and the report are written" + (
                f"; send the email again with: {again}{with_db if db and url_holds_password(db) else ''}"
                if again
                else ""
            )
            raise
        if result.emailed_to:
            settings.info(f"emailed the report to {', '.join(result.emailed_to)}")
        if result.eml_path:
            settings.info(f"wrote the email to {result.eml_path}")
    if result.exit_code:
        click.get_current_context().exit(result.exit_code)


def _what_is_left(
    exc: AuditorError,
    run: RunInfo,
    check: CheckResult | None,
    *,
    report_command_for: Callable[[RunInfo, CheckResult], str],
) -> str | None:
    """The hint of an error that ended ``auditor run`` after its snapshot ``run`` was stored (and,
    with ``check``, checked and its results printed): what is left to do."""
    said = f"{exc.hint}; " if exc.hint else ""
    if check is not None and isinstance(exc, DeliveryError):  # the report or an export
        again = report_command_for(run, check)
        return (
            f"{said}run {run.id} is stored and checked, and its results are out; "
            f"write the report again with: {again}"
        )
    if check is None:  # the check failed (a full disk)
        return (
            f"{said}run {run.id} is stored and complete: once that is fixed, check it with "
            f"'auditor check --run {run.id}' and report it with 'auditor report --run {run.id}' "
            "(with the options given here) rather than taking another snapshot"
        )
    return exc.hint


def _compared_with(check: CheckResult, baseline: str | int | None) -> int | str | None:
    """What a job's follow-up command compares with: the check's baseline run, ``"none"`` after
    ``--baseline none``, or nothing (no earlier complete run)."""
    from auditor.engine.check import asks_no_baseline

    if check.baseline is not None:
        return check.baseline.id
    return "none" if asks_no_baseline(baseline) else None


@click.command("demo")
@click.option(
    "--folder",
    default=DEMO_FOLDER,
    show_default=True,
    type=PathOption(file_okay=False),
    help="Where the database, the report and the exports go.",
)
@click.option(
    "--clusters",
    default=150,
    show_default=True,
    type=click.IntRange(2, 100_000),
    help="Clusters the sandbox serves.",
)
@click.option(
    "--columns",
    default=15_000,
    show_default=True,
    type=click.IntRange(10, 5_000_000),
    help="Columns the sandbox serves, spread over its clusters.",
)
@click.option("--seed", default=7, show_default=True, type=int, help="Sandbox data seed.")
@pass_settings
def demo_command(settings: Settings, folder: str, clusters: int, columns: int, seed: int) -> None:
    """Try everything with no configuration: sandbox, two snapshots, check, diff, HTML report."""
    from auditor.engine import load_ruleset
    from auditor.pipeline import run_demo
    from auditor.progress import Progress

    result = run_demo(
        folder,
        ruleset=load_ruleset(None),
        seed=seed,
        clusters=clusters,
        columns=columns,
        progress_factory=lambda: Progress(enabled=False if settings.quiet else None),
        info=settings.info,
    )
    summary = result.check.summary_line()
    first, second = result.runs
    lines = [
        f"cluster-auditor demo: two snapshots of the built-in sandbox (runs {first.id} and {second.id})",
        f"  database  {Path(result.database).resolve()}",
        f"  findings  {summary}",
        f"  report    {result.report.resolve()}",
    ]
    lines += [f"  export    {path.resolve()}" for path in result.written if path != result.report]
    me = _invoked_as()
    lines += [
        "",
        "next steps:",
        f"  {me} check --db {result.database} --format json",
        f"  {me} diff --db {result.database} --format text",
        f"  {me} runs --db {result.database}",
    ]
    click.echo("\n".join(lines))


def _invoked_as() -> str:
    """The command as the user typed it (``.venv/bin/auditor`` after the README's install, where
    ``auditor`` is not on the PATH), so that the next steps can be pasted as they are."""
    import shlex
    import shutil
    import sys

    typed = sys.argv[0] if sys.argv else ""
    on_path = shutil.which("auditor")
    if Path(typed).name != "auditor" or (on_path and Path(on_path).resolve() == Path(typed).resolve()):
        return "auditor"
    return shlex.quote(typed)


def register(cli: click.Group) -> None:
    cli.add_command(run_command)
    cli.add_command(demo_command)
