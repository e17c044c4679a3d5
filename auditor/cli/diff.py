"""``auditor diff``: what changed between two runs, in text, JSON, markdown or HTML.

Thin: parses options, calls :func:`auditor.diff.compute_diff`, formats. The HTML format is the report
of the newer run with this diff, rendered by :mod:`auditor.render.report`.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date
from enum import StrEnum
from typing import Any

import click

from auditor.cli.common import PathOption, Settings, db_option, pass_settings, today_option, write_output


class DiffFormat(StrEnum):
    """The output formats of ``auditor diff``."""

    TEXT = "text"
    JSON = "json"
    MARKDOWN = "markdown"
    HTML = "html"


@click.command("diff")
@click.option(
    "--from", "from_run", metavar="RUN", help="The older run (default: the complete run before --to)."
)
@click.option(
    "--to", "to_run", metavar="RUN", help="The newer run: an id or 'latest' (default: latest complete)."
)
@click.option(
    "--rules",
    "rules",
    multiple=True,
    type=PathOption(exists=True),
    metavar="PATH",
    help="Rule files or folders (repeatable; default: the built-in pack).",
)
@click.option("--waivers", type=PathOption(exists=True, dir_okay=False), metavar="FILE", help="Waivers file.")
@click.option(
    "--threshold",
    type=click.FloatRange(0, 1),
    default=0.05,
    show_default=True,
    help="Report attribute confidence changes only beyond this.",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice([f.value for f in DiffFormat]),
    default=DiffFormat.TEXT.value,
    show_default=True,
    help="text for people, json for programs, markdown for a pull request, html for a page.",
)
@click.option("--output", "-o", type=PathOption(dir_okay=False), help="Write to a file instead of stdout.")
@click.option("--no-findings", is_flag=True, help="Compare catalog metadata only; do not evaluate rules.")
@click.option("--allow-incomplete", is_flag=True, help="Accept runs that are not complete.")
@click.option(
    "--templates",
    type=PathOption(file_okay=False),
    metavar="DIR",
    help="Folder of templates searched before the bundled ones (html format).",
)
@today_option("Judge waivers as of this date (default: today, UTC), to make a diff again as it was.")
@db_option
@pass_settings
def diff_command(
    settings: Settings,
    from_run: str | None,
    to_run: str | None,
    rules: tuple[str, ...],
    waivers: str | None,
    threshold: float,
    fmt: str,
    output: str | None,
    no_findings: bool,
    allow_incomplete: bool,
    templates: str | None,
    today: date | None,
    db: str | None,
) -> None:
    """Show what changed between two runs: clusters, columns, moves and findings.

    By default compares the two newest complete runs. Findings of a run that was never checked are
    evaluated on demand (built-in rule pack unless --rules is given) and each new or resolved finding
    is linked to the catalog change that explains it. Exit 0 on success, 2 on usage errors, 3 when a
    run is missing or not complete.
    """
    from auditor.diff import compute_diff
    from auditor.diff.text import format_markdown, format_text

    ruleset = waiver_set = None
    rules_paths = settings.rules_paths(rules)
    waivers = settings.waivers_path(waivers)
    inputs = {"--rules": rules_paths, "--waivers": waivers, "--templates": templates}
    settings.guard_outputs(db, {"--output": output}, inputs)
    engine = settings.engine(db, create=False)
    templates = settings.templates_dir(templates)
    if not no_findings:
        from auditor.engine import load_rules_and_waivers

        ruleset, waiver_set = load_rules_and_waivers(rules_paths, waivers, to_evaluate=True)
    result = compute_diff(
        engine,
        from_run,
        to_run,
        ruleset=ruleset,
        waivers=waiver_set,
        confidence_threshold=threshold,
        allow_incomplete=allow_incomplete,
        findings=not no_findings,
        today=today,
    )
    chosen = DiffFormat(fmt)
    if chosen is DiffFormat.JSON:
        text = _json_pieces(result)
    elif chosen is DiffFormat.MARKDOWN:
        text = format_markdown(result)
    elif chosen is DiffFormat.HTML:
        from auditor.diff.html import render_diff_html

        text = render_diff_html(
            engine,
            result,
            ruleset=ruleset,
            waivers=waiver_set,
            rules_paths=rules_paths,
            waivers_path=waivers,
            templates_dir=templates,
            allow_incomplete=allow_incomplete,
            today=today,
        )
    else:
        text = format_text(result)
    write_output(text, output)
    summary = result.summary()
    findings_part = (
        "findings not compared (--no-findings)"
        if no_findings
        else f"{summary['findings']['new']} new and {summary['findings']['resolved']} resolved findings"
    )
    settings.info(
        f"run {result.from_run} -> run {result.to_run}: "
        f"{sum(summary['clusters'].values())} cluster changes, {sum(summary['columns'].values())} column "
        f"changes, {findings_part}"
    )
    note = result.not_compared_note()
    if note:
        from auditor.textsafe import one_line

        settings.info(f"note: {one_line(note)}")
    if result.from_run == result.to_run and to_run is None:  # `--from 2` alone, 2 the latest (a probe)
        settings.info(
            f"note: run {result.from_run} is compared with itself (--to is the latest complete run): "
            "nothing can differ; give --to another run"
        )
    if result.from_run > result.to_run:  # allowed (what would undoing the newer run change?), but say so
        settings.info(
            f"note: --from run {result.from_run} is newer than --to run {result.to_run}: the diff reads "
            "backwards ('added' is what the older run has and the newer one lost)"
        )


def register(cli: click.Group) -> None:
    cli.add_command(diff_command)


def _json_pieces(result: Any) -> Iterator[str]:
    """The diff's JSON document in pieces, the still-open findings streamed one by one: at 1M columns
    they are ~390k, and the document built whole (its dicts, then its text) peaked at 3.2 GB where
    the same bytes stream in a few hundred MB (bench/RESULTS.md)."""
    from auditor import jsonstream

    document = result.to_json(open_findings=False)
    document["findings"]["open"] = [jsonstream.MARK]
    items = (finding.to_json() for finding in result.findings.get("open", []))
    yield from jsonstream.batches(jsonstream.INDENTED, document, items, 1000)
    yield "\n"
