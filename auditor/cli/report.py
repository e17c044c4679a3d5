"""``auditor report`` (the HTML report of a run) and ``auditor email`` (the report by email).

Thin: parse options, call :mod:`auditor.render.report` / :mod:`auditor.render.email`, say where the
result went. The report file is written only after rendering succeeded; the path goes to stdout.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from auditor.cli.common import (
    PathOption,
    Settings,
    db_option,
    is_standard_output,
    pass_settings,
    smtp_ca_bundle_option,
    today_option,
    write_output,
)

if TYPE_CHECKING:
    from datetime import date

    from auditor.render.report import ReportBundle


def _report_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """Options shared by ``report`` and ``email``: which run, which rules, which templates."""
    for option in reversed(
        (
            click.option(
                "--run",
                "run",
                default="latest",
                show_default=True,
                metavar="ID|latest",
                help="The run to report (a complete run).",
            ),
            click.option(
                "--against",
                "against",
                metavar="RUN|none",
                help="The run to compare with (default: the previous complete run; none: no comparison).",
            ),
            click.option(
                "--rules",
                "rules",
                multiple=True,
                type=PathOption(exists=True),
                metavar="PATH",
                help="Rule files or folders (repeatable; default: the built-in pack).",
            ),
            click.option(
                "--waivers",
                "waivers",
                type=PathOption(exists=True, dir_okay=False),
                metavar="FILE",
                help="Waivers file (YAML).",
            ),
            click.option(
                "--templates",
                "templates",
                type=PathOption(file_okay=False),
                metavar="DIR",
                help="Folder of templates searched before the bundled reports/ folder.",
            ),
            click.option(
                "--max-rows",
                "max_rows",
                type=click.IntRange(min=1),
                default=500,
                show_default=True,
                help="Rows shown per report section; the rest are counted and exported.",
            ),
            today_option(
                "Judge waivers as of this date (default: today, UTC), to make a signed report again."
            ),
        )
    ):
        func = option(func)
    return func


def _bundle(
    settings: Settings,
    db: str | None,
    run: str,
    against: str | None,
    rules: tuple[str, ...],
    waivers: str | None,
    templates: str | None,
    max_rows: int,
    with_exports: bool,
    allow_incomplete: bool = False,
    *,
    outputs: dict[str, str | None],
    creates: str | None = None,
    reads: dict[str, str | None] | None = None,
    today: date | None = None,
) -> ReportBundle:
    """The report bundle of ``run``, once ``outputs`` (option → path) are known not to name the
    database or an input file, and the rule files hold a rule to evaluate."""
    from auditor.engine import load_rules_and_waivers
    from auditor.render.report import build_report_bundle

    rules_paths, waivers_path = settings.rules_paths(rules), settings.waivers_path(waivers)
    inputs = {"--rules": rules_paths, "--waivers": waivers_path, "--templates": templates, **(reads or {})}
    settings.guard_outputs(db, outputs, inputs, creates)
    ruleset, waiver_set = load_rules_and_waivers(rules_paths, waivers_path, to_evaluate=True)
    bundle = build_report_bundle(
        settings.engine(db, create=False),
        run,
        against=against,
        ruleset=ruleset,
        waivers=waiver_set,
        rules_paths=rules_paths,  # named in the report's evidence
        waivers_path=waivers_path,
        templates_dir=settings.templates_dir(templates),
        max_rows=max_rows,
        with_exports=with_exports,
        allow_incomplete=allow_incomplete,
        today=today,
    )
    if bundle.context.direction_note:
        settings.info(f"note: {bundle.context.direction_note}")
    return bundle


@click.command("report")
@_report_options
@click.option(
    "--output",
    "-o",
    type=PathOption(dir_okay=False),
    metavar="FILE",
    help="Where to write the HTML file (default: auditor-report-run<ID>.html; - for standard output).",
)
@click.option(
    "--export-dir",
    type=PathOption(file_okay=False),
    metavar="DIR",
    help="Also write the full data there: findings.csv, findings.json, diff.json.",
)
@click.option(
    "--allow-incomplete",
    is_flag=True,
    help="Report a run that is not complete (clusters it lacks in part are left out of the diff).",
)
@db_option
@pass_settings
def report_command(
    settings: Settings,
    run: str,
    against: str | None,
    rules: tuple[str, ...],
    waivers: str | None,
    templates: str | None,
    max_rows: int,
    output: str | None,
    export_dir: str | None,
    allow_incomplete: bool,
    db: str | None,
    today: date | None,
) -> None:
    """Write the HTML report of a run: its findings and what changed since the previous complete run.

    One self-contained file (no network access needed to view it) that prints for sign-off. Sections
    are capped at --max-rows rows; --export-dir writes every row beside it. Prints the file's path.
    Exit 0 on success, 2 on usage or rule errors, 3 when the run is missing or not complete.
    """
    from auditor.render.env import plural
    from auditor.render.report import default_report_name

    full = export_dir is not None
    bundle = _bundle(
        settings, db, run, against, rules, waivers, templates, max_rows, full, allow_incomplete,
        outputs={"--output": output}, creates=export_dir, today=today,
    )  # fmt: skip
    shown = output == "-"  # the HTML on standard output (for a pipe), not a file
    target = None if shown else Path(output) if output else Path(default_report_name(bundle.run_id))
    if shown:
        # what was read still whole (no prune deleted it meanwhile), then the HTML, then the exports:
        # a closed, full or broken standard output leaves an export folder as it was
        bundle.write(None)
        write_output(bundle.html, "-")
    written = bundle.write(target, export_dir) if target is not None or export_dir else []
    for path in written if shown else written[:-1]:
        settings.info(f"exported {path}")
    context = bundle.context
    new = next(s.total for s in context.finding_sections if s.key == "new")
    # -o /dev/stdout (a pipe, a terminal or the file stdout is redirected to): the HTML went where the
    # path would go, so the path is not printed after it, and what was written is counted (a pipe
    # or a device has no size; a file stdout was redirected to was replaced, not written through)
    to_stdout = target is None or is_standard_output(target)
    size = len(bundle.html.encode("utf-8")) if to_stdout or not target.is_file() else target.stat().st_size
    settings.info(
        f"run {bundle.run_id}: {plural(context.total_findings, 'finding')} ({new:,} new), "
        f"{plural(context.changes_total, 'catalog change')}, {size:,} bytes"
    )
    if not to_stdout:
        # as given: Path('./-r.html') prints as '-r.html', which a script then passes as an option
        click.echo(output or str(target))


@click.command("email")
@click.option("--to", "to", multiple=True, metavar="ADDR", help="Recipient (repeatable; config: email_to).")
@click.option("--cc", "cc", multiple=True, metavar="ADDR", help="Copy recipient (repeatable).")
@click.option(
    "--from",
    "sender",
    metavar="ADDR",
    help="Sender (env AUDITOR_EMAIL_FROM, config email_from; default: cluster-auditor "
    "<cluster-auditor@localhost>).",
)
@click.option("--subject", metavar="TEXT", help="Subject (default: run, new, resolved and open counts).")
@click.option(
    "--smtp",
    "smtp",
    metavar="URL",
    help="smtp://host[:25], smtp+starttls://host[:587] or smtps://host[:465] (env AUDITOR_SMTP).",
)
@smtp_ca_bundle_option
@click.option(
    "--eml",
    "eml",
    type=PathOption(dir_okay=False),
    metavar="FILE",
    help="Write the message to FILE instead of sending it (- for standard output).",
)
@click.option("--attach-report", is_flag=True, help="Attach the full HTML report.")
@click.option("--attach-csv", is_flag=True, help="Attach the findings as CSV.")
@click.option(
    "--allow-incomplete",
    is_flag=True,
    help="Email the report of a run that is not complete (the message says so first).",
)
@_report_options
@db_option
@pass_settings
def email_command(
    settings: Settings,
    to: tuple[str, ...],
    cc: tuple[str, ...],
    sender: str | None,
    subject: str | None,
    smtp: str | None,
    smtp_ca_bundle: str | None,
    eml: str | None,
    attach_report: bool,
    attach_csv: bool,
    allow_incomplete: bool,
    run: str,
    against: str | None,
    rules: tuple[str, ...],
    waivers: str | None,
    templates: str | None,
    max_rows: int,
    db: str | None,
    today: date | None,
) -> None:
    """Email a run's report: a summary (text and HTML) with the report and CSV optionally attached.

    Sends through --smtp (STARTTLS when offered; credentials from AUDITOR_SMTP_USER and
    AUDITOR_SMTP_PASSWORD, never logged) or writes the message to --eml FILE. Exit 0 when sent or
    written, 2 on usage errors, 3 when the run is missing or delivery failed.
    """
    email = settings.email_route(
        to,
        smtp,
        eml,
        cc=cc,
        sender=sender,
        subject=subject,
        ca_bundle=smtp_ca_bundle,
        attach=(attach_report, attach_csv),
    )
    bundle = _bundle(
        settings, db, run, against, rules, waivers, templates, max_rows, False, allow_incomplete,
        outputs={"--eml": eml}, reads={"--smtp-ca-bundle": smtp_ca_bundle}, today=today,
    )  # fmt: skip
    message = email.deliver(bundle, templates_dir=settings.templates_dir(templates))
    everyone = ", ".join(filter(None, (message["To"], message["Cc"])))
    if eml:
        settings.info(f"run {bundle.run_id}: message for {everyone} written")
        if eml != "-" and not is_standard_output(eml):  # (the message itself went to standard output)
            click.echo(eml)
    else:
        from auditor.render.email import parse_smtp_url

        settings.info(
            f"run {bundle.run_id}: report sent to {everyone} via {parse_smtp_url(str(email.smtp_url)).where}"
        )


def register(cli: click.Group) -> None:
    cli.add_command(report_command)
    cli.add_command(email_command)
