"""The report gathered in SQL (``auditor.render.stored``) is the page the full check gives.

Three sandbox runs (so there is a baseline, a diff and a trend) with waivers that waive findings by
cluster, by column glob (a group finding's columns) and by regex, one that expired, one that
expires within 14 days, overlapping ones and a stale one. Each scenario gathers the same report
twice, once with every finding checked in memory (``full=True``, what the page was made from before)
and once from the stored evaluation in SQL, and compares the context the templates see, the HTML,
and the three export files byte for byte. On SQLite each path works on its own copy of the database
made before anything was evaluated, so each evaluates (and stores) the runs itself, in its own order.
"""

from __future__ import annotations

import dataclasses
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from auditor.engine import check_run, load_ruleset
from auditor.pipeline import builtin_sandbox
from auditor.render.context import build_context
from auditor.render.report import EXPORT_FILES, bundle_from_input, gather_input
from auditor.snapshot import take_snapshot
from auditor.store.db import open_database
from auditor.store.schema import evaluations

SEED, CLUSTERS, COLUMNS = 11, 8, 400


def snapshots(engine: Any, count: int = 3) -> list[int]:
    runs = []
    for epoch in range(count):
        with builtin_sandbox(engine, seed=SEED, clusters=CLUSTERS, columns=COLUMNS, epoch=epoch) as (
            client,
            _epoch,
        ):
            runs.append(take_snapshot(engine, client, workers=2).id)
    return runs


def write_waivers(engine: Any, run_id: int, folder: Path) -> Path:
    """Waivers aimed at the findings the sandbox gives (found by a check that records nothing)."""
    found = check_run(engine, run_id, load_ruleset(None), store=False, record=False).findings
    by_rule: dict[str, list[Any]] = {}
    for finding in found:
        by_rule.setdefault(finding.rule, []).append(finding)
    soon = (datetime.now(UTC).date() + timedelta(days=5)).isoformat()
    sensitive = by_rule["sensitive-column-without-business-attribute"]
    group = next(f for f in by_rule["duplicate-columns-across-sources"] if len(f.columns) > 1)
    high = by_rule["high-sensitivity-without-confidential"][0]
    source = str(group.columns[0]).split(".", 1)[0]
    entries = [
        (
            "sensitive-column-without-business-attribute",
            f"cluster: '{sensitive[0].cluster_id}'",
            "2099-12-31",
        ),
        ("sensitive-column-without-business-attribute", f"cluster: '{sensitive[0].cluster_id}'", soon),
        ("sensitive-column-without-business-attribute", f"column: '{sensitive[-1].column.upper()}'", soon),
        ("duplicate-columns-across-sources", "column: '*'", soon),
        ("duplicate-columns-across-sources", f"column: '{source}.*'", "2099-12-31"),
        ("high-sensitivity-without-confidential", f"column_regex: '{high.column[:8]}.*'", "2000-01-01"),
        ("rank-sensitivity-mismatch", "cluster: nowhere", "2099-12-31"),
    ]
    text = "waivers:\n" + "".join(
        f"  - rule: {rule}\n    {where}\n    reason: r{index}\n    owner: o{index}@example.org\n"
        f"    expires: {expires}\n"
        for index, (rule, where, expires) in enumerate(entries)
    )
    path = folder / "waivers.yml"
    path.write_text(text, encoding="utf-8")
    return path


def report(engine: Any, run: int, folder: Path, *, full: bool, **options: Any) -> dict[str, Any]:
    """The context, the HTML and the exports of one report, gathered one way or the other."""
    max_rows = options.pop("max_rows", 500)
    data, check_json = gather_input(engine, run, full=full, max_rows=max_rows, **options)
    assert (data.digest is None) is full and (data.findings == []) is not full
    data.evidence = dataclasses.replace(data.evidence, generated_at="2026-01-01T00:00:00Z")
    assert data.follow_up.startswith(" --db ")  # names the database: one per way, so left out here
    data.follow_up = ""
    bundle = bundle_from_input(data, max_rows=max_rows, export_files=EXPORT_FILES, check_json=check_json)
    folder.mkdir()
    bundle.write(folder / "report.html", folder / "export")
    context = build_context(data, max_rows=max_rows)
    return {
        "context": dataclasses.replace(context, assets=None),
        "html": bundle.html,
        "csv": bundle.findings_csv(),
        **{name: (folder / "export" / name).read_bytes() for name in EXPORT_FILES},
    }


def assert_same(full: dict[str, Any], stored: dict[str, Any]) -> None:
    assert stored["context"] == full["context"]
    assert stored["html"] == full["html"]
    assert stored["csv"] == full["csv"]
    for name in EXPORT_FILES:
        assert stored[name] == full[name], name


def evaluation_count(engine: Any) -> int:
    with engine.connect() as connection:
        return connection.execute(select(func.count()).select_from(evaluations)).scalar_one()


SCENARIOS = {
    "latest with waivers": {"run": 3, "waivers": True},
    "capped at two rows": {"run": 3, "waivers": True, "max_rows": 2},
    "against the first run": {"run": 3, "against": 1, "waivers": False},
    "first run: no baseline, no diff": {"run": 1, "waivers": True, "max_rows": 3},
    "second run, no waivers": {"run": 2, "waivers": False, "max_rows": 7},
}


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Three runs, never evaluated, and the waiver file."""
    folder = tmp_path_factory.mktemp("stored")
    database = folder / "runs.db"
    engine = open_database(database)
    try:
        assert snapshots(engine) == [1, 2, 3]
        waivers = write_waivers(engine, 3, folder)
        assert evaluation_count(engine) == 0
    finally:
        engine.dispose()
    return database, waivers


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_the_stored_path_gives_the_page_and_exports_of_the_full_check(
    name: str, pristine: tuple[Path, Path], tmp_path: Path
) -> None:
    scenario = dict(SCENARIOS[name])
    database, waivers = pristine
    options = {"waivers_path": waivers} if scenario.pop("waivers") else {}
    run = scenario.pop("run")
    pages = {}
    counts = {}
    for full in (True, False):
        copy = tmp_path / f"{'full' if full else 'stored'}.db"
        shutil.copyfile(database, copy)
        engine = open_database(copy)
        try:
            pages[full] = report(engine, run, tmp_path / copy.stem, full=full, **scenario, **options)
            counts[full] = evaluation_count(engine)
        finally:
            engine.dispose()
    assert counts[False] == counts[True] > 0  # the stored path evaluated (and stored) the runs too
    assert_same(pages[True], pages[False])


def test_a_report_from_stored_evaluations_reads_no_finding_as_an_object(
    pristine: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The stored path counts, caps and exports findings in SQL. A change routed its lookup of the
    stored evaluations through the findings reader: every finding of both runs was read as an
    object, twice, and `auditor report` at 1M columns took 18.6 s instead of 4.4 (bench/RESULTS.md).
    Once both runs' evaluations are stored, a report (with its exports) reads none that way."""
    from auditor.engine import check as check_module
    from auditor.engine import findings as findings_module

    database, waivers = pristine
    copy = tmp_path / "copy.db"
    shutil.copyfile(database, copy)
    engine = open_database(copy)
    try:
        first = report(engine, 3, tmp_path / "first", full=False, waivers_path=waivers)
        stored = evaluation_count(engine)

        def no_reading(*args: Any, **kwargs: Any) -> Any:
            raise AssertionError("stored findings were read as objects")

        monkeypatch.setattr(check_module, "load_findings", no_reading)
        monkeypatch.setattr(findings_module, "load_findings", no_reading)
        again = report(engine, 3, tmp_path / "again", full=False, waivers_path=waivers)
        assert evaluation_count(engine) == stored  # nothing evaluated again
    finally:
        engine.dispose()
    assert_same(first, again)


def test_the_scenarios_cover_what_they_claim(pristine: tuple[Path, Path], tmp_path: Path) -> None:
    database, waivers = pristine
    copy = tmp_path / "copy.db"
    shutil.copyfile(database, copy)
    engine = open_database(copy)
    try:
        page = report(engine, 3, tmp_path / "page", full=False, waivers_path=waivers, max_rows=2)
    finally:
        engine.dispose()
    cards = {card.key: card.value for card in page["context"].cards}
    assert cards["waived"] > 0 and cards["expired"] > 0 and cards["expiring"] > 0
    assert cards["new"] > 0 and cards["resolved"] > 0
    sections = {s.key: s for s in (*page["context"].finding_sections, *page["context"].other_sections)}
    assert sections["open"].more > 0 and sections["waived"].more > 0  # capped
    assert b'"stale_waivers": [\n' in page["findings.json"]


def test_a_recorded_check_and_postgres_give_the_same_page(postgres_url: str, tmp_path: Path) -> None:
    """On PostgreSQL (text ordered as in Python, by code point), after a recorded ``auditor check``."""
    engine = open_database(postgres_url)
    try:
        runs = snapshots(engine)
        waivers = write_waivers(engine, runs[-1], tmp_path)
        from auditor.engine import load_waivers

        check_run(engine, runs[-1], load_ruleset(None), waivers=load_waivers(waivers))  # records
        for max_rows in (500, 4):
            stored = report(
                engine,
                runs[-1],
                tmp_path / f"s{max_rows}",
                full=False,
                waivers_path=waivers,
                max_rows=max_rows,
            )
            full = report(
                engine,
                runs[-1],
                tmp_path / f"f{max_rows}",
                full=True,
                waivers_path=waivers,
                max_rows=max_rows,
            )
            assert_same(full, stored)
    finally:
        engine.dispose()


def test_streamed_documents_splice_the_list_where_it_stands_whatever_the_catalog_holds():
    """A catalog value that looks like a marker (names and tags share the document) is left alone."""
    import io
    import json

    from auditor.jsonstream import MARK
    from auditor.jsonstream import write as write_streamed

    def dumps(value):
        return json.dumps(value, indent=2, ensure_ascii=False) + "\n"

    hostile = ["\x00streamed\x00", '"\\u0000streamed\\u0000"']
    document = {"clusters": [{"name": hostile[0], "labels": hostile}], "findings": {"open": [MARK]}, "n": 2}
    items = [{"rule": "r", "columns": ["a", "b"]}, {"rule": "s", "columns": []}]
    stream = io.StringIO()
    write_streamed(stream, dumps, document, iter(items))
    assert stream.getvalue() == dumps({**document, "findings": {"open": items}})
    empty = io.StringIO()
    write_streamed(empty, dumps, document, iter([]))
    assert empty.getvalue() == dumps({**document, "findings": {"open": []}})
    with pytest.raises(ValueError, match="exactly one"):
        write_streamed(io.StringIO(), dumps, {"a": [MARK], "b": [MARK]}, iter(items))


def test_new_rows_are_listed_only_for_a_run_without_a_baseline(
    pristine: tuple[Path, Path], tmp_path: Path
) -> None:
    """Against a baseline the diff lists the new findings; asking the digest for them is a mistake."""
    from datetime import date

    from auditor.render.stored import StoredFindings
    from auditor.store.runs import get_run

    database = tmp_path / "runs.db"
    shutil.copy(pristine[0], database)
    engine = open_database(database)
    try:
        pack, day = load_ruleset(), date(2026, 11, 29)
        against = StoredFindings.load(engine, get_run(engine, 2), get_run(engine, 1), pack, None, day)
        with pytest.raises(ValueError, match="without a baseline"):
            against.digest(10, with_new=True)
        first = StoredFindings.load(engine, get_run(engine, 1), None, pack, None, day)
        alone = first.digest(10, with_new=True)
        everything = check_run(engine, 1, pack, baseline="none", today=day, store=False)
        assert alone.new.total == len(everything.findings) > 0
    finally:
        engine.dispose()


def test_a_stop_while_the_exports_are_written_lets_go_of_the_database_at_once(
    pristine: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found by a probe: SIGTERM while `auditor run` wrote its exports printed "Exception ignored in
    <generator StoredFindings.stream>" with a traceback at exit: the stop, remembered with its
    traceback, kept the suspended stream (and its connection) alive until the interpreter was torn
    down. Whoever consumes a stream now closes it when stopped."""
    from auditor.render import report as report_module

    copy = tmp_path / "runs.db"
    shutil.copyfile(pristine[0], copy)
    engine = open_database(copy)
    try:
        data, check_json = gather_input(engine, 3, full=False, max_rows=50)
        bundle = bundle_from_input(data, max_rows=50, export_files=EXPORT_FILES, check_json=check_json)
        real_dumps, written = report_module._dumps, []

        def stopping_dumps(value):
            written.append(value)
            if len(written) == 5:  # the head and four findings: the stream is suspended mid-way
                raise KeyboardInterrupt
            return real_dumps(value)

        monkeypatch.setattr(report_module, "_dumps", stopping_dumps)
        with pytest.raises(KeyboardInterrupt) as stopped:
            bundle.write(tmp_path / "report.html", tmp_path / "export")
        assert stopped.value.__traceback__ is not None  # held, as the remembered stop holds it
        assert engine.pool.checkedout() == 0
        assert not (tmp_path / "export" / "findings.json").exists()
    finally:
        engine.dispose()
