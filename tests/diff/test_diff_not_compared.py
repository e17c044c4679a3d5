"""Clusters a run holds without all their columns are left out of the diff, and the diff says so.

A cluster that could not be fetched (``failed``) or that a stopped snapshot cut short (``fetching``)
keeps none of its columns in its run. Compared as it is, every column of it would read as removed
(or added) and every finding of it as resolved (or new): incomplete data passed off as a clean
result. The runs here are written with the real ``SnapshotWriter`` into real SQLite files (and a
PostgreSQL database where one is configured).
"""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from auditor.cli.main import cli
from auditor.diff import compute_diff
from auditor.diff.model import not_compared_note
from auditor.engine import load_ruleset

from .conftest import write_partial
from .test_diff_findings import python_reference_source

HSWC = "high-sensitivity-without-confidential"
NOTE = "2 clusters were not compared: not fetched in full in run {run} (k5, k7)"


def catalogs(base, kit):
    """Run 1 (complete) and run 2: real changes in c1 and c2; k5 and k7 each carry findings.

    In run 2 k5's record changed too (severity), which must not be reported either.
    """
    before, after = base(), base()
    for catalog in (before, after):
        # In c2 and in k5: a finding about the whole snapshot (no cluster), left out with k5.
        catalog[1][1].append(kit.column("shared.t.x"))
        catalog.append(
            (
                kit.cluster("k5", labels=["PII"], severity="Low"),  # pii-cluster-low-severity
                [
                    kit.column("hr.pay.salary.iban", tags={"sensitivity": "high"}),  # HSWC
                    kit.column("a.t.name"),  # with b.t.name: duplicate-columns-across-sources
                    kit.column("b.t.name"),
                    kit.column("shared.t.x"),
                ],
            )
        )
        catalog.append(
            (kit.cluster("k7", labels=[]), [kit.column("ops.log.events.card", tags={"sensitivity": "high"})])
        )
    after[2][0]["severity"] = "High"
    after[0][0]["labels"] = ["PII"]  # c1 loses Confidential: a new finding on its email column
    after[1][1].append(kit.column("dwh.sales.orders.card", tags={"sensitivity": "high"}))
    return before, after


def keyed(items):
    return sorted((f["rule"], f["cluster_id"], f["column"]) for f in items)


EXPECTED_CATALOG = {
    "clusters": {
        "added": [],
        "removed": [],
        "changed": [
            {
                "cluster_id": "c1",
                "changes": {
                    "labels": {
                        "before": ["Confidential", "PII"],
                        "after": ["PII"],
                        "added": [],
                        "removed": ["Confidential"],
                    }
                },
            }
        ],
    },
    "columns": {
        "added": [
            {
                "cluster_id": "c2",
                "column": "dwh.sales.orders.card",
                "columnName": "card",
                "tableName": "sales.orders",
                "source": "dwh",
                "dataType": "varchar",
                "isPrimary": False,
                "businessAttribute": None,
                "tags": [{"tagName": "sensitivity", "tagValue": "high"}],
                "attributes": [],
            }
        ],
        "removed": [],
        "changed": [],
        "moved": [],
    },
}


def diff_both_ways(engine, first, second):
    """The diff with stored findings (SQL) and with the plain Python findings source: equal."""
    rules = load_ruleset(None)
    stored = compute_diff(engine, first, second, ruleset=rules, allow_incomplete=True)
    plain = compute_diff(
        engine,
        first,
        second,
        allow_incomplete=True,
        findings_source=python_reference_source(engine, rules, None, None),
    )
    data = stored.to_json()
    assert plain.to_json() == data
    assert stored.summary() == plain.summary()
    return stored, data


@pytest.fixture
def partial_second(engine, base, kit):
    before, after = catalogs(base, kit)
    from .conftest import write_catalog

    first = write_catalog(engine, before)
    second = write_partial(engine, after, failed={"k5"}, fetching={"k7"})
    return first, second


def test_a_failed_and_a_cut_short_cluster_are_not_compared(engine, partial_second):
    first, second = partial_second
    result, data = diff_both_ways(engine, first, second)
    assert {k: data[k] for k in ("clusters", "columns")} == EXPECTED_CATALOG
    assert data["not_compared"] == [
        {"cluster_id": "k5", "from": "complete", "to": "failed"},
        {"cluster_id": "k7", "from": "complete", "to": "fetching"},
    ]
    assert data["summary"] == {
        "clusters": {"added": 0, "removed": 0, "changed": 1},
        "columns": {"added": 1, "removed": 0, "changed": 0, "moved": 0},
        "findings": {"new": 3, "resolved": 0, "open": 2, "newly_waived": 0, "waiver_expired": 0},
        "not_compared": 2,
    }
    findings = data["findings"]
    assert keyed(findings["new"]) == [
        (HSWC, "c1", "crm.public.users.email"),
        (HSWC, "c2", "dwh.sales.orders.card"),
        ("sensitive-column-without-business-attribute", "c2", "dwh.sales.orders.card"),
    ]
    # k5's and k7's findings (column, cluster and per-cluster group findings) are not "resolved";
    # nor is the one about the whole snapshot (no cluster) that involves a column of k5: the
    # cluster cut short took the column's second cluster away, not the duplicate itself.
    assert findings["resolved"] == []
    assert keyed(findings["open"]) == [
        ("high-severity-cluster-without-labels", "k7", None),  # in both runs: the cluster record is
        ("sensitive-column-without-business-attribute", "c1", "crm.public.users.email"),
    ]
    assert findings["newly_waived"] == findings["waiver_expired"] == []
    assert result.not_compared_note() == NOTE.format(run=second)


def test_an_older_partial_run_adds_nothing_for_its_clusters(engine, base, kit):
    before, after = catalogs(base, kit)
    from .conftest import write_catalog

    first = write_partial(engine, before, failed={"k5"}, fetching={"k7"})
    second = write_catalog(engine, after)
    _, data = diff_both_ways(engine, first, second)
    assert {k: data[k] for k in ("clusters", "columns")} == EXPECTED_CATALOG
    assert data["not_compared"] == [
        {"cluster_id": "k5", "from": "failed", "to": "complete"},
        {"cluster_id": "k7", "from": "fetching", "to": "complete"},
    ]
    assert keyed(data["findings"]["new"]) == [  # not column-in-several-clusters: it involves k5
        (HSWC, "c1", "crm.public.users.email"),
        (HSWC, "c2", "dwh.sales.orders.card"),
        ("sensitive-column-without-business-attribute", "c2", "dwh.sales.orders.card"),
    ]
    assert data["findings"]["resolved"] == []
    assert not_compared_note(data["not_compared"], first, second) == NOTE.format(run=first)


def test_two_complete_runs_compare_every_cluster_as_before(engine, base, kit):
    """The same catalogs, both fetched in full: k5's and k7's changes are all there, nothing is
    left out, and the text has no note."""
    from auditor.diff.text import format_text

    from .conftest import write_catalog

    before, after = catalogs(base, kit)
    first, second = write_catalog(engine, before), write_catalog(engine, after)
    result, data = diff_both_ways(engine, first, second)
    assert data["not_compared"] == [] and data["summary"]["not_compared"] == 0
    assert [c["cluster_id"] for c in data["clusters"]["changed"]] == ["c1", "k5"]
    assert "not compared" not in format_text(result)


def test_clusters_only_in_one_run_and_partial_there(engine, base, kit):
    """A cluster that only the partial run holds is not compared either (not an added cluster)."""
    from .conftest import write_catalog

    before, after = base(), base()
    after.append((kit.cluster("k9"), [kit.column("x.y.z")]))
    after.append((kit.cluster("c3"), [kit.column("x.y.w")]))
    first = write_catalog(engine, before)
    second = write_partial(engine, after, failed={"k9"})
    _, data = diff_both_ways(engine, first, second)
    assert data["not_compared"] == [{"cluster_id": "k9", "from": None, "to": "failed"}]
    assert [c["cluster_id"] for c in data["clusters"]["added"]] == ["c3"]
    assert [(c["cluster_id"], c["column"]) for c in data["columns"]["added"]] == [("c3", "x.y.w")]


def test_the_note_lists_ten_ids_per_run_then_counts_the_rest():
    entries = [{"cluster_id": f"k{i:02}", "from": "complete", "to": "failed"} for i in range(12)]
    entries.append({"cluster_id": "a1", "from": "failed", "to": "complete"})
    entries.append({"cluster_id": "b1", "from": "fetching", "to": "failed"})
    entries.append({"cluster_id": "b2", "from": None, "to": "fetching"})
    assert not_compared_note(entries, 6, 7) == (
        "15 clusters were not compared: not fetched in full in run 6 (a1); "
        "not fetched in full in run 7 (k00, k01, k02, k03, k04, k05, k06, k07, k08, k09 … and 3 more); "
        "not fetched in full in runs 6 and 7 (b1)"
    )
    assert (
        not_compared_note(entries[:1], 6, 7)
        == "1 cluster was not compared: not fetched in full in run 7 (k00)"
    )
    assert not_compared_note([], 6, 7) is None
    left_out = [
        {"cluster_id": "s1", "from": "complete", "to": "skipped"},
        {"cluster_id": "s2", "from": "skipped", "to": "failed"},  # left out, then failed
        {"cluster_id": "s3", "from": "skipped", "to": "complete"},
    ]
    assert not_compared_note(entries[:1] + left_out, 6, 7) == (
        "4 clusters were not compared: not fetched in full in run 7 (k00); "
        "left out of run 6 by --skip-cluster (s2, s3); left out of run 7 by --skip-cluster (s1)"
    )


# -- the command line and the report ------------------------------------------------------------


def run_cli(*args):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def test_cli_diff_text_says_what_it_left_out(engine, partial_second):
    first, second = partial_second
    db = str(engine.url.database)

    def diff_cli(fmt: str):
        runs = ("--from", str(first), "--to", str(second))
        return run_cli("diff", "--db", db, *runs, "--allow-incomplete", "--format", fmt)

    result = diff_cli("text")
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[4] == NOTE.format(run=second)  # right under the counts
    assert "Columns removed" not in result.stdout and "Resolved findings" not in result.stdout
    assert f"note: {NOTE.format(run=second)}" in result.stderr.splitlines()

    as_json = diff_cli("json")
    assert json.loads(as_json.stdout)["not_compared"] == [
        {"cluster_id": "k5", "from": "complete", "to": "failed"},
        {"cluster_id": "k7", "from": "complete", "to": "fetching"},
    ]

    markdown = diff_cli("markdown")
    assert f"**Note:** {NOTE.format(run=second)}" in markdown.stdout.splitlines()


def note_paragraph(html: str) -> str:
    start = html.index('data-field="not-compared"')
    return html[html.index(">", start) + 1 : html.index("</p>", start)]


@pytest.mark.parametrize("command", ["report", "diff"])
def test_the_html_report_shows_the_note_first(engine, partial_second, tmp_path, command):
    first, second = partial_second
    db, out = str(engine.url.database), tmp_path / "report.html"
    if command == "report":
        args = ["report", "--db", db, "--run", str(second), "--allow-incomplete", "--output", str(out)]
    else:
        args = ["diff", "--db", db, "--from", str(first), "--to", str(second), "--allow-incomplete"]
        args += ["--format", "html", "--output", str(out)]
    result = run_cli(*args)
    assert result.exit_code == 0, result.stderr
    html = out.read_text(encoding="utf-8")
    assert note_paragraph(html) == (
        f"<strong>Not compared:</strong> {NOTE.format(run=second)}. New and resolved findings and "
        "catalog changes below leave these clusters out."
    )
    assert html.index('data-field="not-compared"') < html.index('id="new"')


def test_a_report_of_two_complete_runs_has_no_note(engine, write, base, tmp_path):
    write(engine, base()), write(engine, base())
    out = tmp_path / "report.html"
    result = run_cli("report", "--db", str(engine.url.database), "--output", str(out))
    assert result.exit_code == 0, result.stderr
    assert "not-compared" not in out.read_text(encoding="utf-8")


@pytest.fixture
def own_pg_engine(fresh_postgres):
    """A PostgreSQL database of its own: the shared one's other tests count on the findings they
    see first (``first_seen_run``), so these runs stay out of it."""
    from auditor.store.db import open_database

    db = open_database(fresh_postgres)
    yield db
    db.dispose()


@pytest.mark.postgres
def test_postgres_leaves_out_the_same_clusters(own_pg_engine, base, kit):
    from .conftest import write_catalog

    pg_engine = own_pg_engine

    before, after = catalogs(base, kit)
    first = write_catalog(pg_engine, before)
    second = write_partial(pg_engine, after, failed={"k5"}, fetching={"k7"})
    _, data = diff_both_ways(pg_engine, first, second)
    assert {k: data[k] for k in ("clusters", "columns")} == EXPECTED_CATALOG
    assert [e["cluster_id"] for e in data["not_compared"]] == ["k5", "k7"]
    assert data["findings"]["resolved"] == []
    assert [f["cluster_id"] for f in data["findings"]["new"]] == ["c1", "c2", "c2"]


def test_the_email_of_a_partial_run_says_so_first(engine, partial_second, tmp_path):
    """auditor email refuses a run that is not complete unless asked; asked, both parts of the
    message say that it is not complete and which clusters the diff left out."""
    import email
    from email import policy

    _first, second = partial_second
    db, eml = str(engine.url.database), tmp_path / "report.eml"
    send = ("email", "--db", db, "--run", str(second), "--to", "governance@example.com", "--eml", str(eml))
    refused = run_cli(*send)
    assert refused.exit_code == 3 and not eml.exists()
    assert refused.stderr.splitlines()[0].startswith(f"error: run {second} is failed, not complete")
    result = run_cli(*send, "--allow-incomplete")
    assert result.exit_code == 0, result.stderr
    message = email.message_from_bytes(eml.read_bytes(), policy=policy.default)
    text = message.get_body(("plain",)).get_content()
    html = message.get_body(("html",)).get_content()
    # with why it failed (the run's error), where a paging note was quoted before
    warning = (
        f"run {second} is failed, not complete (the snapshot stopped): these findings cover only "
        "what it holds."
    )
    not_compared = (
        f"{NOTE.format(run=second)}. New and resolved findings and catalog changes leave these clusters out."
    )
    lines = text.splitlines()
    assert lines[1:5] == ["", f"WARNING: {warning}", f"Not compared: {not_compared}", ""]
    assert f"<strong>Warning:</strong> {warning}</td>" in html
    assert f"<strong>Not compared:</strong> {not_compared}</td>" in html
    assert html.index('data-field="incomplete"') < html.index('data-field="not-compared"')


def test_the_email_of_complete_runs_has_no_warning(engine, write, base, tmp_path):
    import email
    from email import policy

    write(engine, base())
    second = write(engine, base())
    db, eml = str(engine.url.database), tmp_path / "report.eml"
    result = run_cli("email", "--db", db, "--run", str(second), "--to", "a@example.com", "--eml", str(eml))
    assert result.exit_code == 0, result.stderr
    message = email.message_from_bytes(eml.read_bytes(), policy=policy.default)
    text = message.get_body(("plain",)).get_content()
    assert "WARNING" not in text
    assert text.splitlines()[1] == "" and text.splitlines()[2].startswith("Finished: ")  # as before
    html = message.get_body(("html",)).get_content()
    assert 'data-field="incomplete"' not in html and 'data-field="not-compared"' not in html


def test_a_run_that_failed_before_listing_its_clusters_is_refused_by_diff_report_and_email(
    sandbox, run_cli, tmp_path
):
    """A snapshot that failed at the listing holds no cluster: compared as it was, every cluster of
    the other run read as removed and every finding as resolved (or new), with no note at all."""
    from auditor.store.db import open_database
    from auditor.store.runs import get_run

    server = sandbox(clusters=4, columns=40)
    db = str(tmp_path / "runs.db")
    env = {"BIGID_URL": server.url, "BIGID_TOKEN": server.key}
    assert run_cli("--quiet", "snapshot", "--db", db, env=env).exit_code == 0
    server.stop()
    failed = run_cli("--quiet", "snapshot", "--db", db, env=env)
    assert failed.exit_code == 3, failed.stderr
    engine = open_database(db)
    try:
        run = get_run(engine, 2)
        assert (run.status, run.clusters_announced, run.listing_stored) == ("failed", None, False)
        assert get_run(engine, 1).listing_stored is True
    finally:
        engine.dispose()
    refusal = "error: run 2 failed before its cluster listing was stored (NetworkError: "
    for args in (
        ("diff", "--from", "1", "--to", "2", "--format", "json"),
        ("diff", "--from", "2", "--to", "1", "--no-findings"),
        ("report", "--run", "1", "--against", "2", "--output", str(tmp_path / "r.html")),
        ("email", "--run", "2", "--against", "1", "--to", "a@example.com", "--eml", str(tmp_path / "r.eml")),
    ):
        result = run_cli(*args, "--db", db, "--allow-incomplete")
        assert result.exit_code == 3, (args, result.stderr)
        assert result.stdout == ""
        first, hint = result.stderr.splitlines()[:2]
        assert first.startswith(refusal) and first.endswith("): it holds no catalog to compare"), first
        assert hint == "hint: compare two runs that listed their clusters (see: auditor runs)"
    assert not (tmp_path / "r.html").exists() and not (tmp_path / "r.eml").exists()


def test_a_run_that_stored_part_of_its_listing_says_so(engine, write, base):
    from auditor.diff import refuse_unlisted
    from auditor.errors import RunNotUsableError
    from auditor.store.runs import LISTING_KEY, get_run
    from auditor.store.writer import RunTotals, SnapshotWriter

    first = write(engine, base())
    writer = SnapshotWriter(engine, source_url="http://127.0.0.1:1", cluster_filter=None)
    writer.fail("interrupted (Ctrl-C)", RunTotals(clusters_announced=2, details={LISTING_KEY: False}))
    cut = get_run(engine, writer.run_id)
    assert cut.listing_stored is False
    with pytest.raises(RunNotUsableError, match=f"run {cut.id} failed before its cluster listing was stored"):
        compute_diff(engine, first, cut.id, findings=False, allow_incomplete=True)
    refuse_unlisted(engine, get_run(engine, first))  # a complete run: nothing to refuse


@pytest.mark.postgres
def test_postgres_analyzes_a_freshly_loaded_run_before_diffing_it(own_pg_engine, kit):
    """Found by an operations probe: a diff of a run just bulk-loaded (autovacuum not there yet)
    was planned from empty statistics, and its membership anti-join spilled to disk for minutes."""
    import time

    from sqlalchemy import text

    from auditor.diff import compute_diff

    from .conftest import cluster, write_catalog

    engine = own_pg_engine
    with engine.begin() as connection:  # only the diff may analyze it here
        connection.execute(text("ALTER TABLE run_columns SET (autovacuum_enabled = false)"))

    def catalog(n: int):
        return [(cluster("c1"), [kit.column(f"crm.public.t.col{i}") for i in range(n)])]

    first, second = write_catalog(engine, catalog(1_100)), write_catalog(engine, catalog(1_150))

    def stats():
        with engine.connect() as connection:
            return connection.execute(
                text("SELECT n_live_tup, last_analyze FROM pg_stat_user_tables WHERE relname = 'run_columns'")
            ).one()

    deadline = time.monotonic() + 15  # the counts reach the statistics within about a second
    while stats()[0] <= 1000 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert stats()[1] is None
    data = compute_diff(engine, first, second, findings=False).to_json()
    assert data["summary"]["columns"]["added"] == 50
    assert stats()[1] is not None
