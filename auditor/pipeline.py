"""The main job and the demo, as library functions: snapshot → check → diff → report → email.

:func:`run_job` is what ``auditor run`` does, on any :class:`~auditor.bigid.client.BigIDClient`;
:func:`builtin_sandbox` starts the in-process sandbox that ``auditor run`` falls back to when no
BigID URL is configured; :func:`run_demo` is ``auditor demo``: two snapshots of the sandbox at two
epochs, checked, diffed and reported into one folder. The CLI only parses and prints.
"""

from __future__ import annotations

import contextlib
import shlex
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine, func, select

from auditor import secrets
from auditor.bigid.client import BigIDClient, ClientOptions
from auditor.config import DEMO_FOLDER
from auditor.engine import CheckResult, RuleSet, Waivers, check_run
from auditor.engine.check import asks_no_baseline, baseline_run, check_fail_on, parse_baseline
from auditor.engine.evaluate import check_evaluation_settings
from auditor.engine.rules import RulePaths, ruleset_to_evaluate
from auditor.errors import ConfigError
from auditor.paths import absolute_path, input_words
from auditor.progress import Progress
from auditor.render.report import ReportBundle, build_report_bundle, default_report_name
from auditor.snapshot import DEFAULT_MAX_FAILED_CLUSTERS, take_snapshot
from auditor.store.db import absolute_db, url_holds_password
from auditor.store.runs import RunInfo
from auditor.store.schema import RUN_COMPLETE, runs

if TYPE_CHECKING:
    from email.message import EmailMessage

log = secrets.scrubbed_logger(__name__)

DEMO_SEED = 7
DEMO_CLUSTERS = 150
DEMO_COLUMNS = 15_000
SANDBOX_SOURCE = "sandbox://built-in"  # the source runs against the built-in sandbox record


@dataclass
class EmailOptions:
    """Where ``auditor run`` sends the report (``smtp_url``) or writes it (``eml_path``)."""

    to: Sequence[str]
    cc: Sequence[str] = ()
    sender: str | None = None
    subject: str | None = None
    smtp_url: str | None = None
    eml_path: str | Path | None = None
    attach_report: bool = True
    attach_csv: bool = True
    cafile: str | Path | None = None  # CA certificates to trust for the SMTP server (a private CA)
    # where each setting was given, for the errors of check() (see check_email_settings)
    names: Mapping[str, str] = field(default_factory=dict)

    def resend_command(
        self,
        run_id: int,
        against: int | str | None,
        rules: Sequence[str | Path] = (),
        waivers: str | Path | None = None,
        *,
        db: str | None = None,
        templates: str | Path | None = None,
        smtp_given: bool = False,
        error: Any = None,
        config: str | Path | None = None,
    ) -> str | None:
        """The ``auditor email`` command that sends the message again, or ``None`` when sending the
        same message again cannot work (too large, with nothing to leave out).

        Every setting the job was given on its command line goes in (``db``, the database as given
        there, left out when its URL holds a password, which is never printed: the caller says so;
        ``smtp_given``: the SMTP URL, which never holds a password; ``against``: a run id, or
        ``"none"`` after ``--baseline none``;
        the CA file, the templates, ``--eml``; ``config``: the ``--config`` file; every file by its
        absolute path, so that the command works as printed from any folder); what came from the environment
        or the config file comes from there again. After ``error`` (a
        :class:`~auditor.errors.DeliveryError`) the command adapts: to the refused recipients only
        when the others got the message, without the attachments when the message was too large.
        """
        absolute = absolute_path
        refused = tuple(getattr(error, "refused", ()) or ())
        too_large = bool(getattr(error, "too_large", False))
        attach_report, attach_csv = self.attach_report, self.attach_csv
        if too_large:
            if not (attach_report or attach_csv):
                return None
            attach_report = attach_csv = False
        words = _command_words("email", run_id, against, db=db, config=config)
        recipients, copies = (refused, ()) if refused else (self.to, self.cc)
        for flag, values in (("--to", recipients), ("--cc", copies)):
            for value in values:
                words += [flag, str(value)]
        words += input_words(rules, waivers, templates)
        for flag, value in (("--from", self.sender), ("--subject", self.subject)):
            if value:
                # --subject=-q: a value starting with '-' would be read as an option of its own
                words += [f"{flag}={value}"] if value.startswith("-") else [flag, value]
        words += ["--attach-report"] if attach_report else []
        words += ["--attach-csv"] if attach_csv else []
        if self.eml_path is not None:
            words += ["--eml", absolute(self.eml_path)]
        elif smtp_given and self.smtp_url:
            from auditor.render.email import parse_smtp_url

            words += ["--smtp", parse_smtp_url(self.smtp_url).url]
        if self.cafile:
            words += ["--smtp-ca-bundle", absolute(self.cafile)]
        return shlex.join(words)

    def check(self) -> None:
        """Raise the usage errors (exit 2) delivery would meet, before any work is done."""
        from auditor.render.email import check_email_settings, check_one_destination

        check_one_destination(self.smtp_url, self.eml_path)
        check_email_settings(
            to=self.to,
            cc=self.cc,
            sender=self.sender,
            subject=self.subject,
            smtp_url=self.smtp_url,
            cafile=self.cafile,
            names=self.names,
        )

    def deliver(self, bundle: ReportBundle, *, templates_dir: str | Path | None = None) -> EmailMessage:
        """Send the message for ``bundle`` (or write it to ``eml_path``); returns the message."""
        from auditor.render.email import deliver_email

        return deliver_email(
            bundle,
            to=self.to,
            cc=self.cc,
            sender=self.sender,
            subject=self.subject,
            smtp_url=self.smtp_url,
            eml_path=self.eml_path,
            attach_report=self.attach_report,
            attach_csv=self.attach_csv,
            templates_dir=templates_dir,
            cafile=self.cafile,
        )


@dataclass
class JobResult:
    """What one main job produced."""

    run: RunInfo
    check: CheckResult
    baseline: RunInfo | None
    report: ReportBundle
    written: list[Path] = field(default_factory=list)
    emailed_to: list[str] = field(default_factory=list)
    eml_path: Path | None = None
    exit_code: int = 0


def _command_words(
    command: str, run_id: int, against: int | str | None, *, db: str | None, config: str | Path | None
) -> list[str]:
    """``auditor [--config F] COMMAND --run ID [--against RUN] [--db DB]``, as a job's follow-up
    command begins (the database left out when its URL holds a password: the caller says so)."""
    words = ["auditor"]
    if config:
        words += ["--config", absolute_path(config)]
    words += [command, "--run", str(run_id)]
    if against is not None:
        words += ["--against", str(against)]
    if db and not url_holds_password(db):
        words += ["--db", absolute_db(db)]
    return words


def report_command(
    run_id: int,
    against: int | str | None,
    rules: Sequence[str | Path] = (),
    waivers: str | Path | None = None,
    *,
    output: str | Path,
    export_dir: str | Path | None = None,
    db: str | None = None,
    templates: str | Path | None = None,
    config: str | Path | None = None,
) -> str:
    """The ``auditor report`` command that writes a job's report (and exports) again, from the run
    and check it stored, with the settings it was given (as :meth:`EmailOptions.resend_command`)."""
    words = _command_words("report", run_id, against, db=db, config=config)
    words += input_words(rules, waivers, templates)
    words += ["--output", absolute_path(output)]
    if export_dir is not None:
        words += ["--export-dir", absolute_path(export_dir)]
    return shlex.join(words)


def run_job(
    engine: Engine,
    client: BigIDClient,
    *,
    ruleset: RuleSet | RulePaths,
    waivers: Waivers | None = None,
    rules_paths: Sequence[str | Path] | None = None,
    waivers_path: str | Path | None = None,
    cluster_filter: str | None = None,
    workers: int = 4,
    processes: int | None = None,
    max_failed_clusters: int = DEFAULT_MAX_FAILED_CLUSTERS,
    max_seconds: float | None = None,
    skip_clusters: Sequence[str] = (),
    progress: Progress | None = None,
    baseline: str | int | None = "previous",
    fail_on: str | None = None,
    new_only: bool = False,
    report_path: str | Path | None = None,
    export_dir: str | Path | None = None,
    templates_dir: str | Path | None = None,
    email: EmailOptions | None = None,
    taken: Callable[[RunInfo], Any] | None = None,
    checked: Callable[[CheckResult, int], Any] | None = None,
) -> JobResult:
    """Snapshot, check against ``baseline``, diff against it too, write the report, email it.

    The report is always written, as ``auditor run`` writes it: to ``report_path``, or without one
    to ``auditor-report-run<ID>.html`` in the current working folder (:func:`default_report_name`);
    a caller that keeps its working folder clean passes a path.

    The exit code is the gate's (:meth:`CheckResult.gate`). A failed snapshot raises (the run is
    recorded ``failed``) before anything is checked, so a partial catalog never reads as clean; one
    with clusters that could not be fetched raises :class:`auditor.errors.PartialSnapshotError`.

    ``taken(run)`` is called once the snapshot is complete, before the check (a caller that meets
    an error after it can say the run is stored), and ``checked(check, exit_code)`` once the
    check is done and stored, before the
    report is built: a caller prints the check's results there, so that they are out even when
    writing the report then fails (a full disk, a stop).

    ``fail_on``, ``baseline`` (a run id must name a complete run), ``ruleset`` (as
    :func:`~auditor.engine.check_run` takes it; every rule disabled is a RuleError) and ``email``
    (:meth:`EmailOptions.check`) are checked before the snapshot, and so is ``AUDITOR_RULES_SQLITE``.
    """
    check_fail_on(fail_on)
    ruleset = ruleset_to_evaluate(ruleset)  # a set whose every rule is off: refused before the snapshot
    if email is not None:
        email.check()
    check_evaluation_settings(engine)
    if isinstance(ref := parse_baseline(baseline), int):
        baseline_run(engine, ref)
    run = take_snapshot(
        engine,
        client,
        cluster_filter=cluster_filter,
        workers=workers,
        processes=processes,
        progress=progress,
        max_failed_clusters=max_failed_clusters,
        max_seconds=max_seconds,
        skip_clusters=skip_clusters,
    )
    if taken is not None:
        taken(run)
    check = check_run(engine, run.id, ruleset, waivers=waivers, baseline=baseline)
    exit_code = check.gate(fail_on, new_only)
    if checked is not None:
        checked(check, exit_code)
    bundle, written = report_on_check(
        engine,
        check,
        ruleset=ruleset,
        waivers=waivers,
        rules_paths=rules_paths,
        waivers_path=waivers_path,
        baseline=baseline,
        report_path=report_path or default_report_name(run.id),
        export_dir=export_dir,
        templates_dir=templates_dir,
    )
    result = JobResult(run=run, check=check, baseline=check.baseline, report=bundle, written=written)
    result.exit_code = exit_code
    if email is not None:
        email_report(result, email, templates_dir=templates_dir)
    return result


def email_report(result: JobResult, email: EmailOptions, *, templates_dir: str | Path | None = None) -> None:
    """Send (or write as ``.eml``) the report of a finished job; records where it went on ``result``.

    The last step of the job, kept apart so that a caller can save the check's output before it:
    a mail server that is down must not cost a CI job its results or its gate's verdict.
    """
    email.deliver(result.report, templates_dir=templates_dir)
    if email.smtp_url:
        result.emailed_to = [*email.to, *email.cc]
    else:
        result.eml_path = Path(str(email.eml_path))


def report_on_check(
    engine: Engine,
    check: CheckResult,
    *,
    ruleset: RuleSet,
    report_path: str | Path,
    waivers: Waivers | None = None,
    rules_paths: Sequence[str | Path] | None = None,
    waivers_path: str | Path | None = None,
    baseline: str | int | None = "previous",
    export_dir: str | Path | None = None,
    templates_dir: str | Path | None = None,
) -> tuple[ReportBundle, list[Path]]:
    """Write the report (and exports) of a check that :func:`~auditor.engine.check_run` made with
    ``baseline``: the rendered report and the files written. The report's diff compares with the
    run the check compared with, and with none when ``--baseline none`` was asked for: a report
    that compared with the previous run would call "existing" what the check called new. (Without
    a baseline for want of an earlier complete run, the report finds none either, and says so.)"""
    asked_none = asks_no_baseline(baseline)
    bundle = build_report_bundle(
        engine,
        check.run.id,
        against=check.baseline.id if check.baseline else "none" if asked_none else None,
        ruleset=ruleset,
        waivers=waivers,
        rules_paths=rules_paths,
        waivers_path=waivers_path,
        check=report_check(check),
        templates_dir=templates_dir,
        with_exports=export_dir is not None,
    )
    return bundle, bundle.write(Path(report_path), export_dir)


def report_check(check: CheckResult) -> CheckResult | None:
    """The check a job's report is given: none when it can read the stored one instead.

    ``check_run`` has stored the findings; with a baseline, the report reads them from the
    database as ``auditor report`` does (the page counts in SQL and the exports stream, where the
    check in memory would be turned into one JSON document per export: gigabytes at 1M columns),
    and marks them against the same run, so it shows what the check found. Without a baseline it
    is given the check itself (every finding new, as the check said).
    """
    return None if check.baseline is not None else check


def complete_run_count(engine: Engine) -> int:
    with engine.connect() as connection:
        return int(connection.execute(select(func.count()).where(runs.c.status == RUN_COMPLETE)).scalar_one())


@contextlib.contextmanager
def builtin_sandbox(
    engine: Engine,
    *,
    seed: int = DEMO_SEED,
    clusters: int = DEMO_CLUSTERS,
    columns: int = DEMO_COLUMNS,
    epoch: int | None = None,
    workers: int = 4,
) -> Iterator[tuple[BigIDClient, int]]:
    """Start the sandbox in-process and yield a client for it and the epoch it serves.

    The epoch defaults to the number of complete runs already in the database, so that successive
    runs against the sandbox see the catalog drift as a real one would. Its runs record
    :data:`SANDBOX_SOURCE` as their source: the port changes from one run to the next, the
    catalog does not.
    """
    from auditor.sandbox import SandboxConfig, SandboxServer

    chosen = complete_run_count(engine) if epoch is None else epoch
    config = SandboxConfig(seed=seed, epoch=chosen, clusters=clusters, columns=columns)
    with SandboxServer(config) as server:
        options = ClientOptions(
            url=server.url, token=server.key, workers=workers, source_label=SANDBOX_SOURCE
        )
        client = BigIDClient(options)
        try:
            yield client, chosen
        finally:
            client.close()


@dataclass
class DemoResult:
    folder: Path
    database: Path
    runs: list[RunInfo]
    check: CheckResult
    report: Path
    written: list[Path]
    exit_code: int


def run_demo(
    folder: str | Path = DEMO_FOLDER,
    *,
    ruleset: RuleSet,
    seed: int = DEMO_SEED,
    clusters: int = DEMO_CLUSTERS,
    columns: int = DEMO_COLUMNS,
    workers: int = 4,
    progress_factory: Callable[[], Progress] | None = None,
    info: Callable[[str], Any] = log.info,
) -> DemoResult:
    """Two sandbox snapshots at successive epochs, checked, diffed and reported into ``folder``.

    The demo's database lives in ``folder`` and is kept: running the demo again adds two more runs
    (the sandbox drifts on), so the report's trend grows and nothing is ever deleted.
    """
    from auditor.store.db import open_database

    target = Path(folder)
    try:
        target.mkdir(parents=True, exist_ok=True)
    except OSError as exc:  # a file of that name (FileExistsError), a folder it may not write in
        raise ConfigError(f"cannot create the demo's folder {target}: {exc.strerror or exc}") from None
    database = target / "auditor.db"
    engine = open_database(database)
    taken: list[RunInfo] = []
    try:
        for number in (1, 2):
            with builtin_sandbox(engine, seed=seed, clusters=clusters, columns=columns, workers=workers) as (
                client,
                epoch,
            ):
                # The sandbox's catalog drifts from epoch to epoch (it holds the counts asked for at
                # epoch 0 only): what a snapshot holds is said once it is taken. ("its epoch 0 held
                # 150 clusters" on every run, epoch 3 included, read as a mistake: a walkthrough.)
                info(
                    f"snapshot {number} of 2: the sandbox at epoch {epoch} (its catalog drifts with each "
                    "epoch)…"
                )
                progress = progress_factory() if progress_factory else None
                run = take_snapshot(engine, client, workers=workers, progress=progress)
                info(
                    f"run {run.id} complete: {run.clusters_stored:,} clusters, {run.columns_stored:,} columns"
                )
                taken.append(run)
        report = target / "report.html"
        check = check_run(engine, taken[-1].id, ruleset)
        _bundle, written = report_on_check(
            engine, check, ruleset=ruleset, report_path=report, export_dir=target / "export"
        )
        return DemoResult(
            folder=target,
            database=database,
            runs=taken,
            check=check,
            report=report,
            written=written,
            exit_code=check.gate(None),
        )
    finally:
        engine.dispose()
