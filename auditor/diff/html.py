"""The diff as HTML: the report of the newer run, with this diff, through the report renderer.

``auditor diff --format html`` does not keep a second set of templates: it hands the computed
:class:`~auditor.diff.model.DiffResult` to :mod:`auditor.render.report`, which renders the one
self-contained, escaped report (``reports/report.html.j2``) with the findings of the newer run, the
findings diff and the catalog changes. Without findings (``--no-findings``) the same template renders
the catalog changes alone.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Engine

from auditor import __version__
from auditor.diff.model import DiffResult
from auditor.store.runs import get_run


def render_diff_html(
    engine: Engine,
    result: DiffResult,
    *,
    ruleset: Any = None,
    waivers: Any = None,
    rules_paths: list[str] | None = None,
    waivers_path: str | Path | None = None,
    templates_dir: str | Path | None = None,
    allow_incomplete: bool = False,
    max_rows: int | None = None,
    today: date | None = None,
) -> str:
    """One self-contained HTML document showing ``result`` (and the newer run's findings)."""
    from auditor.render.context import DEFAULT_MAX_ROWS, Evidence, ReportInput, RunView
    from auditor.render.report import build_report_bundle, bundle_from_input

    rows = max_rows or DEFAULT_MAX_ROWS
    if ruleset is not None:
        return build_report_bundle(
            engine,
            result.to_run,
            against=result.from_run,
            ruleset=ruleset,
            waivers=waivers,
            rules_paths=rules_paths,
            waivers_path=waivers_path,
            diff=result.to_json(open_findings=False),  # the report lists only what changed
            templates_dir=templates_dir,
            max_rows=rows,
            allow_incomplete=allow_incomplete,
            today=today,
        ).html
    before, after = get_run(engine, result.from_run), get_run(engine, result.to_run)
    assert before is not None and after is not None  # compute_diff resolved both
    data = ReportInput(
        run=RunView.from_info(after),
        findings=[],
        rules={},
        evidence=Evidence(
            generated_at=datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
            tool_version=__version__,
            rules_source="not evaluated (catalog changes only)",
            rules_digest=None,
            rule_count=0,
            baseline=f"run {before.id}",
        ),
        against=RunView.from_info(before),
        diff=result.to_json(open_findings=False),
        today=today,
    )
    return bundle_from_input(data, templates_dir=templates_dir, max_rows=rows).html
