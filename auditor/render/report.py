"""The HTML report: gathering a run's findings and diff from the database, rendering, exporting.

Three layers, each usable on its own:

* :func:`gather_input` reads what the report shows from the database (the run, its findings via
  ``auditor.engine.check_run``, the diff against the previous complete run via
  ``auditor.diff.compute_diff``, findings counts of the last complete runs for the trend, and the
  SHA-256 of the rule and waiver files) into a JSON-shaped :class:`~auditor.render.context.ReportInput`;
* :func:`render_html` renders a :class:`~auditor.render.context.ReportContext` through the one
  environment (``reports/report.html.j2``, overridable with ``--templates``);
* :class:`ReportBundle` ties them together and writes the self-contained HTML file and, on request,
  the full data beside it (``findings.csv``, ``findings.json``, ``diff.json``), since sections in the
  HTML are capped at ``max_rows`` rows each.

``build_report_bundle`` is what ``auditor report``, ``auditor email`` and ``auditor run`` call.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import threading
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import jinja2
import orjson
from sqlalchemy import Engine

from auditor import __version__, jsonstream
from auditor.diff.model import DiffResult
from auditor.errors import ConfigError, DeliveryError
from auditor.formats.csv_format import neutralise
from auditor.outfile import reader_of_stdout_gone, replacing, together
from auditor.paths import reports_dir
from auditor.render.context import (
    DEFAULT_MAX_ROWS,
    Evidence,
    FileEvidence,
    FindingsDigest,
    ReportContext,
    ReportInput,
    RuleView,
    RunView,
    TrendPoint,
    build_context,
)
from auditor.render.env import inline_assets, make_environment, template_errors
from auditor.store.db import store_errors

DEFAULT_TREND_RUNS = 10
DEFAULT_CONFIDENCE_THRESHOLD = 0.05
REPORT_TEMPLATE = "report.html.j2"
EXPORT_FILES = ("findings.csv", "findings.json", "diff.json")
CSV_FIELDS = (
    "status",
    "rule",
    "severity",
    "cluster_id",
    "column",
    "columns",
    "message",
    "fingerprint",
    "first_seen_run",
    "waiver_owner",
    "waiver_expires",
    "waiver_expired",
    "waiver_reason",
    "waiver_ticket",
)


# --------------------------------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------------------------------


def template_vars(context: ReportContext) -> dict[str, Any]:
    """The context object's fields as template variables (plus its derived ``capped`` flag)."""
    values = {name: getattr(context, name) for name in context.__dataclass_fields__}
    values["capped"] = context.capped
    values["export_command"] = context.export_command
    return values


def render_html(context: ReportContext, env: jinja2.Environment | None = None) -> str:
    """Render ``report.html.j2`` for ``context`` (with its inline assets and CSP)."""
    env = env or make_environment()
    if context.assets is None:
        against = context.against.id if context.against is not None else None
        context.assets = inline_assets(
            env, run_id=context.run.id, against_id=against, run_status=context.run.status
        )
    with template_errors("report"):
        return env.get_template(REPORT_TEMPLATE).render(template_vars(context))


# --------------------------------------------------------------------------------------------------
# Exports (the full data, uncapped)
# --------------------------------------------------------------------------------------------------


neutralise_cell = neutralise  # the check's CSV and this export neutralise alike


def export_rows(
    data: ReportInput, current: Iterable[Mapping[str, Any]] | None = None
) -> Iterator[dict[str, Any]]:
    """Every finding of the run (or ``current``), then every resolved one, as flat CSV rows."""
    resolved = ((data.diff or {}).get("findings") or {}).get("resolved") or []
    if current is None:
        current = data.source.findings_json() if data.source is not None else data.findings
    for finding in current:
        yield export_row(finding)
    for finding in resolved:
        yield export_row(finding, "resolved")


def export_row(finding: Mapping[str, Any], status: str | None = None) -> dict[str, Any]:
    """One finding (its JSON shape) as a flat CSV row; ``status`` overrides the finding's."""
    waiver = finding.get("waiver") or {}
    return {
        "status": status or finding.get("status") or "",
        "rule": finding.get("rule"),
        "severity": finding.get("severity"),
        "cluster_id": finding.get("cluster_id"),
        "column": finding.get("column"),
        "columns": ";".join(str(c) for c in finding.get("columns") or ()),
        "message": finding.get("message"),
        "fingerprint": finding.get("fingerprint"),
        "first_seen_run": finding.get("first_seen_run"),
        "waiver_owner": waiver.get("owner"),
        "waiver_expires": waiver.get("expires"),
        "waiver_expired": "" if not waiver else ("yes" if waiver.get("expired") else "no"),
        "waiver_reason": waiver.get("reason"),
        "waiver_ticket": waiver.get("ticket"),
    }


def write_findings_csv(rows: Iterable[Mapping[str, Any]], stream: io.TextIOBase | Any) -> None:
    """The findings CSV of ``rows``; ``rows`` closed when done or stopped (see ``closed_after``)."""
    writer = csv.writer(stream, lineterminator="\r\n")
    writer.writerow(CSV_FIELDS)
    with jsonstream.closed_after(rows):
        for row in rows:
            writer.writerow(_csv_cells(row))


def _csv_cells(row: Mapping[str, Any]) -> list[str]:
    return [neutralise_cell(row.get(name)) for name in CSV_FIELDS]


def findings_csv(data: ReportInput) -> str:
    buffer = io.StringIO()
    write_findings_csv(export_rows(data), buffer)
    return buffer.getvalue()


# --------------------------------------------------------------------------------------------------
# The bundle
# --------------------------------------------------------------------------------------------------


@dataclass
class ReportBundle:
    """A rendered report and the data it came from."""

    data: ReportInput
    context: ReportContext
    html: str
    check_json: dict[str, Any] = field(default_factory=dict)
    written: list[Path] = field(default_factory=list)

    @property
    def run_id(self) -> int:
        return self.data.run.id

    def findings_csv(self) -> str:
        return findings_csv(self.data)

    def write(self, output: str | Path | None, export_dir: str | Path | None = None) -> list[Path]:
        """Write the HTML (atomically; not with ``output`` None, for a caller that shows it) and,
        with ``export_dir``, the full data; return the paths."""
        written: list[Path] = []
        folder = Path(export_dir) if export_dir is not None else None
        # the folders this write creates, deepest first: removed again (when empty) on a failure
        created = [] if folder is None else [p for p in (folder, *folder.parents) if not p.exists()]
        try:
            # The report and its exports replace the files there all at once, or none of them: an
            # interruption midway left findings of one run beside the diff and report of another.
            with together():
                if folder is not None:
                    try:
                        folder.mkdir(parents=True, exist_ok=True)
                    except OSError as exc:
                        raise DeliveryError(f"cannot create export folder {folder}: {exc.strerror}") from None
                    written += self._write_exports(folder)
                if output is not None:
                    written.append(_write_atomic(Path(output), self.html))
                if self.data.source is not None:  # still whole: no prune deleted what was read
                    self.data.source.check_still_there()
        except BaseException as exc:  # a failure or Ctrl-C: no empty folder left looking like an export
            for made in created:
                try:
                    made.rmdir()  # only when empty
                except OSError:
                    break
            if output is not None and reader_of_stdout_gone(exc, output):
                raise
            if isinstance(exc, OSError):  # moving the files into place at the end of the block
                why = exc.strerror or str(exc) or type(exc).__name__
                raise DeliveryError(f"cannot write {exc.filename or output}: {why}") from None
            raise
        self.written = written
        return written

    def _write_exports(self, folder: Path) -> list[Path]:
        paths = []
        csv_path = folder / "findings.csv"
        source = self.data.source
        findings_path = folder / "findings.json"
        if not self.check_json and source is not None:
            # One read of the stored findings feeds both files (each read marks every finding).
            paths += _write_csv_and_json(csv_path, findings_path, self.data, source)
        else:
            try:
                with replacing(csv_path, newline="") as stream:
                    write_findings_csv(export_rows(self.data), stream)
            except OSError as exc:
                raise DeliveryError(f"cannot write {csv_path}: {exc.strerror}") from None
            paths.append(csv_path)
            findings_doc = self.check_json or {"run": self.data.run.id, "findings": self.data.findings}
            paths.append(_write_atomic(findings_path, _dumps(findings_doc)))
        diff_path = folder / "diff.json"
        if source is not None and source.diff is not None:
            paths.append(_write_streamed(diff_path, source.write_diff_json))
        else:
            diff_doc = (
                self.data.diff
                if self.data.diff is not None
                else DiffResult.without_baseline(
                    self.data.run.id, asked=self.data.compared_with_none
                ).to_json()
            )
            paths.append(_write_atomic(diff_path, _dumps(diff_doc)))
        return paths


def _dumps(value: Any) -> str:
    return (
        orjson.dumps(value, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS, default=str).decode() + "\n"
    )


@store_errors("could not read the findings to export")
def _write_csv_and_json(csv_path: Path, json_path: Path, data: ReportInput, source: Any) -> list[Path]:
    """``findings.csv`` and ``findings.json`` from one pass over the stored findings, both atomically."""
    try:
        with replacing(csv_path, newline="") as csv_stream, replacing(json_path, newline="") as json_stream:
            writer = csv.writer(csv_stream, lineterminator="\r\n")
            writer.writerow(CSV_FIELDS)

            def shared() -> Iterator[dict[str, Any]]:
                for finding in source.findings_json():
                    writer.writerow(_csv_cells(export_row(finding)))
                    yield finding

            source.write_check_json(json_stream, _dumps, shared())
            for row in export_rows(data, current=()):  # then the resolved findings
                writer.writerow(_csv_cells(row))
    except OSError as exc:
        raise DeliveryError(f"cannot write {exc.filename or csv_path}: {exc.strerror}") from None
    return [csv_path, json_path]


@store_errors("could not read the findings to export")
def _write_streamed(path: Path, write: Any) -> Path:
    """Write ``path`` atomically with ``write(stream, dumps)`` (a JSON document streamed)."""
    try:
        with replacing(path, newline="") as stream:
            write(stream, _dumps)
    except OSError as exc:
        raise DeliveryError(f"cannot write {path}: {exc.strerror}") from None
    return path


def _write_atomic(path: Path, text: str) -> Path:
    try:
        with replacing(path, newline="") as stream:
            stream.write(text)
    except OSError as exc:
        if reader_of_stdout_gone(exc, path):
            raise
        raise DeliveryError(f"cannot write {path}: {exc.strerror}") from None
    return path


def bundle_from_input(
    data: ReportInput,
    *,
    templates_dir: str | Path | None = None,
    max_rows: int = DEFAULT_MAX_ROWS,
    export_files: Sequence[str] = (),
    check_json: dict[str, Any] | None = None,
) -> ReportBundle:
    """Render ``data`` (hand-made or gathered) into a :class:`ReportBundle`."""
    env = make_environment(templates_dir)
    context = build_context(data, max_rows=max_rows)
    context.export_files = tuple(export_files)
    if templates_dir is not None:  # the evidence says which templates rendered it, with their digests
        context.evidence = dataclasses.replace(context.evidence, templates=template_evidence(templates_dir))
    return ReportBundle(
        data=data, context=context, html=render_html(context, env), check_json=check_json or {}
    )


# --------------------------------------------------------------------------------------------------
# Gathering from the database
# --------------------------------------------------------------------------------------------------


def template_evidence(templates_dir: str | Path) -> tuple[FileEvidence, ...]:
    """The files of ``templates_dir`` that replace bundled templates, each with its SHA-256."""
    folder = Path(templates_dir)
    names = sorted(p.name for p in reports_dir().iterdir() if p.is_file())
    return tuple(
        FileEvidence("template", str(folder / name), sha256_file(folder / name))
        for name in names
        if (folder / name).is_file()
    )


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for block in iter(lambda: stream.read(1 << 16), b""):
            digest.update(block)
    return digest.hexdigest()


def _expand(path: Path) -> list[Path]:
    from auditor.engine.rules import folder_entries, is_rule_file

    if not path.is_dir():
        return [path]
    return [p for p in folder_entries(path) if is_rule_file(p)]


def _rule_files(paths: Sequence[str | Path] | None, ruleset: Any) -> tuple[str, list[FileEvidence]]:
    """Which rule files were used, with their SHA-256: the files the loader read when it says so."""
    from auditor.paths import rules_dir

    builtin = rules_dir().resolve()
    sources = [Path(s) for s in getattr(ruleset, "sources", ()) or ()]
    if not sources:
        sources = [f for given in (paths or [builtin]) for f in _expand(Path(given))]
    evidence: list[FileEvidence] = []
    for file in sources:
        try:
            shown = f"rules/{file.resolve().relative_to(builtin).as_posix()}"
        except ValueError:
            shown = str(file)
        try:
            evidence.append(FileEvidence("rules", shown, sha256_file(file)))
        except OSError as exc:
            raise ConfigError(f"--rules: cannot read {file} ({exc.strerror})") from None
    # named after the files read (a ruleset given from Python has no paths beside it)
    whole_pack = {f.resolve() for f in _expand(builtin)}
    if paths:
        source = ", ".join(str(p) for p in paths)
    elif {f.resolve() for f in sources} == whole_pack:
        source = "built-in pack"
    else:
        source = ", ".join(item.path for item in evidence)
    return source, evidence


def _to_json(value: Any, what: str = "check") -> dict[str, Any]:
    """A check or diff given to the report (a result object, or its JSON as a mapping) as JSON."""
    if value is None:
        return {}
    if isinstance(value, Mapping):
        return dict(value)
    if not callable(getattr(value, "to_json", None)):
        kind = "CheckResult (what auditor.engine.check_run returns)" if what == "check" else "DiffResult"
        raise TypeError(f"{what}: expected a {kind} or its JSON, not {type(value).__name__}")
    return dict(value.to_json())


def _severity_of(finding: Any) -> tuple[str, str]:
    if isinstance(finding, Mapping):
        return str(finding.get("severity", "info")).lower(), str(finding.get("status") or "")
    severity = getattr(finding, "severity", "info")
    return str(getattr(severity, "value", severity)).lower(), str(getattr(finding, "status", "") or "")


def count_open_findings(findings: Any) -> dict[str, int]:
    """Counts by severity of the findings that are not waived (any shape ``findings_for_run`` returns)."""
    if hasattr(findings, "to_json") and not isinstance(findings, Mapping):
        findings = findings.to_json()
    if isinstance(findings, Mapping):
        findings = findings.get("findings") or []
    counts: Counter[str] = Counter()
    for finding in findings or ():
        severity, status = _severity_of(finding)
        if status != "waived":
            counts[severity] += 1
    return dict(counts)


@dataclass
class _Subject:
    """What a waiver matches a finding on (a stand-in for the engine's Finding, read by SQL)."""

    rule: str
    cluster_id: str | None
    column: str | None
    columns: list[str]


def stored_open_counts(engine: Engine, run: Any, ruleset: Any, waivers: Any) -> dict[str, int] | None:
    """Open (not waived) findings by severity of a run's stored evaluation under ``ruleset``, in SQL.

    The trend needs only counts, so rather than loading every finding of every past run as objects,
    rules without waivers are counted with ``GROUP BY``; only findings of rules that have waivers are
    read (four fields) and matched, with expiry judged on the day the run was taken. ``None`` when the
    run was never evaluated with these rules.
    """
    from sqlalchemy import func, select

    from auditor.engine.findings import evaluation_rows, latest_evaluation
    from auditor.store.schema import findings

    digest = getattr(ruleset, "digest", None)
    if not digest:
        return None
    entries = list(getattr(waivers, "entries", ()) or ())
    waived_rules = waivers.rules if waivers is not None else []
    day = run.started_at.date()
    counts: Counter[str] = Counter()
    with engine.connect() as connection:
        evaluation_id = latest_evaluation(connection, run.id, digest)
        if evaluation_id is None:
            return None
        in_evaluation = evaluation_rows(connection, findings, evaluation_id)
        grouped = (
            select(findings.c.severity, func.count())
            .where(in_evaluation, findings.c.rule_id.not_in(waived_rules))
            .group_by(findings.c.severity)
        )
        for severity, count in connection.execute(grouped):
            counts[str(severity).lower()] += int(count)
        if waived_rules:
            from auditor.engine.waivers import WaiverIndex

            active = WaiverIndex([waiver for waiver in entries if not waiver.expired(day)])
            rows = connection.execute(
                select(
                    findings.c.severity,
                    findings.c.rule_id,
                    findings.c.cluster_id,
                    findings.c.column_fqn,
                    findings.c.columns,
                ).where(in_evaluation, findings.c.rule_id.in_(waived_rules))
            )
            for severity, rule_id, cluster_id, column, columns in rows:
                subject = _Subject(rule_id, cluster_id, column, list(columns or []))
                if not active.candidates(subject):
                    counts[str(severity).lower()] += 1
    return dict(counts)


def _in_background(work: Any, result: Future[Any]) -> None:
    """Run ``work`` in a daemon thread, its return value or exception going to ``result``.

    A daemon thread, not a pool's: the counting only reads, and when the report is abandoned
    (Ctrl-C, or the diff failing) the process must not wait at exit for seconds of counting nobody
    will read (a pool's threads are joined at exit). Its connection is simply dropped with it.
    """

    def target() -> None:
        try:
            value = work()
        except BaseException as exc:  # noqa: BLE001 - handed to whoever waits on the result
            result.set_exception(exc)
        else:
            result.set_result(value)

    threading.Thread(target=target, name="report-counts", daemon=True).start()


def follow_up_options(
    engine: Engine, rules_paths: Sequence[str | Path] | None = None, waivers_path: str | Path | None = None
) -> str:
    """The options a command that reads this report's run again needs, as a shell takes them, each
    file by its absolute path: ``--db`` (the database the report was read from, see
    :func:`auditor.store.db.follow_up_db`: the hints said ``auditor report --run 5``, which reads
    ``./auditor.db``, to the reader of a job's email sent from another one), then ``--rules`` and
    ``--waivers`` as given. ``""`` when there is none."""
    import shlex

    from auditor.paths import input_words
    from auditor.store.db import follow_up_db

    db = follow_up_db(engine)
    words = [*(["--db", db] if db else []), *input_words(rules_paths, waivers_path)]
    return " " + shlex.join(words) if words else ""


@store_errors("could not read the runs and findings for the report")
def gather_input(
    engine: Engine,
    run: str | int | None = "latest",
    *,
    against: str | int | None = None,
    ruleset: Any = None,
    waivers: Any = None,
    rules_paths: Sequence[str | Path] | None = None,
    waivers_path: str | Path | None = None,
    check: Any = None,
    diff: Any = None,
    trend_runs: int = DEFAULT_TREND_RUNS,
    confidence_threshold: float = DEFAULT_CONFIDENCE_THRESHOLD,
    allow_incomplete: bool = False,
    open_findings: bool = True,
    max_rows: int = DEFAULT_MAX_ROWS,
    full: bool = False,
    today: date | None = None,
) -> tuple[ReportInput, dict[str, Any]]:
    """Read everything the report shows; return it with the check's JSON (for ``findings.json``).

    ``check`` and ``diff`` may be passed when the caller already computed them (``auditor run``);
    otherwise they are computed here. ``against`` defaults to the previous complete run; ``"none"``
    compares with no run (the report of a first run).

    Without ``check``, the run's findings stay in the database: they are marked as ``check_run``
    would mark them, counted and capped in SQL (:mod:`auditor.render.stored`), and only the first
    ``max_rows`` rows of each section are read; ``data.findings`` is then empty, ``data.digest``
    holds what the page shows, ``data.source`` streams every finding (and the diff's still-open
    ones) to the exports, and the check's JSON returned is empty. ``full=True`` checks the run in
    memory instead (``check_run``), as the page did before; the two give the same page.
    ``open_findings=False`` leaves the still-open findings out of the diff in memory (only the
    ``diff.json`` export needs them, and at 1M columns they are most of the cost). ``today`` is the
    date waivers are judged as of (default: today in UTC), so that a signed report can be made again.
    """
    from auditor.engine import (
        apply_waivers,
        check_run,
        findings_for_run,
        load_rules_and_waivers,
        load_waivers,
    )
    from auditor.engine.check import waiver_lists
    from auditor.engine.rules import ruleset_to_evaluate
    from auditor.render.stored import ReportSource, StoredFindings
    from auditor.store.db import one_connection_only
    from auditor.store.runs import latest_complete_runs, previous_complete_run, resolve_run

    run_info = resolve_run(engine, run, allow_incomplete=allow_incomplete)
    given_diff = _to_json(diff, "diff") if diff is not None else None
    if given_diff is not None:
        if given_diff.get("to_run") != run_info.id:
            raise ConfigError(
                f"the diff given is of run {given_diff.get('to_run')}, not of run {run_info.id}"
            )
        if against is None:
            against = given_diff.get("from_run")
    compare = not (isinstance(against, str) and against.strip().lower() == "none")
    if not compare:  # "none": a report without a comparison, as for a first run
        against_info = None
    elif against is not None:
        against_info = resolve_run(
            engine, against, option="--against", words=("latest", "none"), allow_incomplete=allow_incomplete
        )
        if against_info.id == run_info.id:
            raise ConfigError(f"--against {against_info.id} is the run being reported")
    else:
        against_info = previous_complete_run(engine, run_info.id)

    if isinstance(check, Mapping) and not isinstance(check.get("findings"), list):
        # (the JSON of a check, as `auditor check --format json` writes it; anything else would
        # read as a run without findings)
        raise ConfigError("the check result given holds no list of findings: it is not a check's JSON")
    if ruleset is not None:
        ruleset = ruleset_to_evaluate(ruleset)  # paths loaded; every rule disabled: a RuleError
    checked_with = getattr(check, "ruleset", None)  # a CheckResult knows the rules behind it
    if checked_with is not None:
        if ruleset is not None and getattr(ruleset, "digest", None) != checked_with.digest:
            raise ConfigError("the check result given was made with other rules than the ruleset given")
        ruleset = checked_with
    if ruleset is None:
        ruleset, loaded = load_rules_and_waivers(
            [Path(p) for p in rules_paths] if rules_paths else None,
            None if waivers else waivers_path,
            to_evaluate=True,
        )
        waivers = waivers or loaded
    elif waivers is None and waivers_path is not None:
        waivers = load_waivers(waivers_path)

    baseline = against_info.id if against_info else "previous" if compare else "none"
    stored: StoredFindings | None = None
    # a check given was judged as of its own day: the page and its evidence say that day
    today = today or getattr(check, "today", None) or datetime.now(UTC).date()
    if check is None and not full:
        # The baseline is the run diffed against (resolve_baseline would find the same run again).
        stored = StoredFindings.load(engine, run_info, against_info, ruleset, waivers, today)
    elif check is None:
        check = check_run(
            engine,
            run_info.id,
            ruleset,
            waivers=waivers,
            baseline=baseline,
            today=today,
            record=False,  # a report is a view: it does not rewrite the run's recorded check
        )
    check_json = _to_json(check)
    if check_json.get("run") not in (None, run_info.id):
        raise ConfigError(
            f"the check result given is of run {check_json.get('run')}, not of run {run_info.id}"
        )

    diff_json: dict[str, Any] | None = given_diff
    diff_result = None
    if given_diff is not None and (against_info is None or given_diff.get("from_run") != against_info.id):
        raise ConfigError(f"the diff given starts at run {given_diff.get('from_run')}, not at --against")
    past: list[Any] = []
    if trend_runs > 1:
        past = list(reversed(latest_complete_runs(engine, trend_runs, before=run_info.id)))
        # a damaged record is not used (store.runs.refuse_damaged): not in the trend either
        past = [info for info in past if info.damaged is None][-(trend_runs - 1) :]
    pending: Future[tuple[FindingsDigest, list[dict[str, int] | None]]] | None = None
    if stored is not None:
        # Count the page's findings and the trend's (of runs evaluated before) while the diff is
        # computed: all of it only reads (the evaluations are stored by now) and the database works
        # outside the GIL, so on two cores this hides most of the counting. (Not for an in-memory
        # SQLite database, which another thread's connection would not see.)
        def count() -> tuple[FindingsDigest, list[dict[str, int] | None]]:
            with_new = given_diff is None and against_info is None  # else the diff lists the new ones
            assert stored is not None
            digest = stored.digest(max_rows, with_new=with_new)
            return digest, [stored_open_counts(engine, info, ruleset, waivers) for info in past]

        pending = Future()
        if one_connection_only(engine):
            pending.set_result(count())
        else:
            _in_background(count, pending)
    if given_diff is None and against_info is not None:
        from auditor.diff import compute_diff

        diff_result = compute_diff(
            engine,
            against_info.id,
            run_info.id,
            ruleset=ruleset,
            waivers=waivers,
            confidence_threshold=confidence_threshold,
            allow_incomplete=allow_incomplete,  # the run was accepted above; the diff names what it left out
            today=today,
        )
        # The stored path streams the still-open findings to diff.json from the result itself.
        diff_json = diff_result.to_json(open_findings=open_findings and stored is None)

    findings = list(check_json.get("findings") or [])
    digest, past_counts = pending.result() if pending is not None else (None, [None] * len(past))
    trend: list[TrendPoint] = []
    if trend_runs > 0:
        for info, counts in zip(past, past_counts, strict=True):
            if counts is None and pending is None:  # (with pending, counted in the thread already)
                counts = stored_open_counts(engine, info, ruleset, waivers)
            if counts is None:  # never evaluated with these rules: evaluate (and store) it now
                past_findings = findings_for_run(engine, info.id, ruleset)
                if waivers is not None:  # open means "not waived" on the day that run was taken
                    apply_waivers(past_findings, waivers, info.started_at.date())
                counts = count_open_findings(past_findings)
            trend.append(TrendPoint(info.id, RunView.from_info(info).started_at, counts))
        counts = dict(digest.open_by_severity) if digest is not None else count_open_findings(findings)
        trend.append(TrendPoint(run_info.id, RunView.from_info(run_info).started_at, counts, run_info.status))

    rules_source, rule_files = _rule_files(rules_paths, ruleset)
    waiver_file = None
    if waivers_path is not None:
        path = Path(waivers_path)
        try:
            waiver_file = FileEvidence("waivers", str(path), sha256_file(path))
        except OSError as exc:
            raise ConfigError(f"--waivers: cannot read {path} ({exc.strerror})") from None
    rules = {str(rule.id): RuleView.from_rule(rule) for rule in ruleset.rules}
    evidence = Evidence(
        generated_at=datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
        tool_version=__version__,
        rules_source=rules_source,
        rules_digest=str(getattr(ruleset, "digest", "") or "") or None,
        rule_count=len(rules),
        rule_files=tuple(rule_files),
        waiver_file=waiver_file,
        baseline=f"run {against_info.id}" if against_info else "none",
        waivers_judged_on=today.isoformat() if waivers is not None else None,
    )
    data = ReportInput(
        run=RunView.from_info(run_info),
        findings=findings,
        rules=rules,
        evidence=evidence,
        against=RunView.from_info(against_info) if against_info else None,
        diff=diff_json,
        trend=trend,
        digest=digest,
        source=ReportSource(stored, diff_result) if stored is not None else None,
        compared_with_none=not compare,
        today=today,
    )
    data.follow_up = follow_up_options(engine, rules_paths, waivers_path)
    if stored is not None:
        data.stale_waivers, data.expiring_waivers = waiver_lists(stored.waiver_report, stored.today)
    else:
        summary = check_json.get("summary") or {}
        data.stale_waivers = list(summary.get("stale_waivers") or [])
        data.expiring_waivers = list(summary.get("expiring_waivers") or [])
    return data, check_json


def build_report_bundle(
    engine: Engine,
    run: str | int | None = "latest",
    *,
    against: str | int | None = None,
    ruleset: Any = None,
    waivers: Any = None,
    rules_paths: Sequence[str | Path] | None = None,
    waivers_path: str | Path | None = None,
    check: Any = None,
    diff: Any = None,
    templates_dir: str | Path | None = None,
    max_rows: int = DEFAULT_MAX_ROWS,
    trend_runs: int = DEFAULT_TREND_RUNS,
    with_exports: bool = False,
    allow_incomplete: bool = False,
    today: date | None = None,
) -> ReportBundle:
    """Gather and render a run's report; ``with_exports`` makes the "N more" notes name the export files."""
    make_environment(templates_dir)  # a bad --templates folder fails before any database work
    data, check_json = gather_input(
        engine,
        run,
        against=against,
        ruleset=ruleset,
        waivers=waivers,
        rules_paths=rules_paths,
        waivers_path=waivers_path,
        check=check,
        diff=diff,
        trend_runs=trend_runs,
        allow_incomplete=allow_incomplete,
        open_findings=with_exports,
        max_rows=max_rows,
        today=today,
    )
    return bundle_from_input(
        data,
        templates_dir=templates_dir,
        max_rows=max_rows,
        export_files=EXPORT_FILES if with_exports else (),
        check_json=check_json,
    )


def render_report(
    engine: Engine,
    run: str | int | None = "latest",
    *,
    against: str | int | None = None,
    ruleset: Any = None,
    waivers: Any = None,
    rules_paths: Sequence[str | Path] | None = None,
    waivers_path: str | Path | None = None,
    templates_dir: str | Path | None = None,
    max_rows: int = DEFAULT_MAX_ROWS,
    **options: Any,
) -> str:
    """The report of ``run`` as one self-contained HTML document (options: :func:`build_report_bundle`)."""
    return build_report_bundle(
        engine,
        run,
        against=against,
        ruleset=ruleset,
        waivers=waivers,
        rules_paths=rules_paths,
        waivers_path=waivers_path,
        templates_dir=templates_dir,
        max_rows=max_rows,
        **options,
    ).html


def write_report(
    engine: Engine,
    run: str | int | None = "latest",
    *,
    output: str | Path,
    export_dir: str | Path | None = None,
    against: str | int | None = None,
    ruleset: Any = None,
    waivers: Any = None,
    rules_paths: Sequence[str | Path] | None = None,
    waivers_path: str | Path | None = None,
    templates_dir: str | Path | None = None,
    max_rows: int = DEFAULT_MAX_ROWS,
    **options: Any,
) -> ReportBundle:
    """Render the report of ``run``, write it to ``output`` (and the full data to ``export_dir``)."""
    bundle = build_report_bundle(
        engine,
        run,
        against=against,
        ruleset=ruleset,
        waivers=waivers,
        rules_paths=rules_paths,
        waivers_path=waivers_path,
        templates_dir=templates_dir,
        max_rows=max_rows,
        with_exports=export_dir is not None,
        **options,
    )
    bundle.write(output, export_dir)
    return bundle


def default_report_name(run_id: int) -> str:
    return f"auditor-report-run{run_id}.html"


def render_diff_report(engine: Engine, diff: Any, **options: Any) -> str:
    """The report of a computed diff's newer run against its older run (``bench/diff.py`` calls this)."""
    data = diff.to_json() if hasattr(diff, "to_json") else diff
    return build_report_bundle(engine, data["to_run"], against=data["from_run"], diff=data, **options).html
