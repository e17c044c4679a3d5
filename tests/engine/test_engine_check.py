"""Findings across runs: fingerprints, storage, baselines, incomplete runs, waivers and the gate."""

from __future__ import annotations

import copy
import dataclasses
from datetime import date

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import func, select

from auditor.engine import check_run, evaluate, findings_for_run, fingerprint, load_ruleset, load_waivers
from auditor.errors import EXIT_FAILURE, ConfigError, RuleError, RunNotUsableError
from auditor.store.schema import evaluations, findings
from tests.engine.conftest import CATALOG

TODAY = date(2026, 11, 28)


def _without_column(catalog, fqn):
    changed = copy.deepcopy(catalog)
    for cluster in changed:
        cluster["columns"] = [c for c in cluster.get("columns", []) if c["fullyQualifiedName"] != fqn]
    return changed


def _with_column(catalog, cluster_id, column):
    changed = copy.deepcopy(catalog)
    next(c for c in changed if c["id"] == cluster_id)["columns"].append(column)
    return changed


NEW_HIGH = {
    "fullyQualifiedName": "hr.emp.salary",
    "columnName": "salary",
    "source": "hr-db",
    "tags": [{"tagName": "sensitivity", "tagValue": "high"}],
}


def test_findings_have_the_shared_shape_and_fingerprints_of_catalog_identifiers(engine, snapshot):
    run = snapshot(engine, CATALOG)
    items = evaluate(engine, run, load_ruleset())
    high = [f for f in items if f.rule == "high-sensitivity-without-confidential"]
    assert [f.to_json() for f in high] == [
        {
            "rule": "high-sensitivity-without-confidential",
            "severity": "high",
            "cluster_id": "c-hr",
            "column": "hr.emp.ssn",
            "columns": ["hr.emp.ssn"],
            "message": "hr.emp.ssn is tagged sensitivity=high but cluster HR People (c-hr) is not labelled "
            "Confidential",
            "fingerprint": fingerprint(
                "high-sensitivity-without-confidential", "column", "c-hr", "hr.emp.ssn"
            ),
            "status": "new",
            "first_seen_run": None,
        }
    ]
    duplicates = [f for f in items if f.rule == "duplicate-columns-across-sources"]
    assert [(f.cluster_id, f.column, f.columns) for f in duplicates] == [
        ("c-hr", None, ["crm.contact.ssn", "hr.emp.ssn"])
    ]
    assert (
        duplicates[0].message
        == "column SSN appears in 2 sources in cluster HR People: crm.contact.ssn, hr.emp.ssn"
    )
    assert duplicates[0].fingerprint == fingerprint(
        "duplicate-columns-across-sources", "group", "c-hr", "ssn"
    )
    assert len({f.fingerprint for f in items}) == len(items)
    # every kind, whichever loop built it (column rules with and without other column fields in
    # their message, cluster and group rules)
    assert {f.kind for f in items} == {"column", "cluster", "group"}
    assert all(f.fingerprint == fingerprint(f.rule, f.kind, f.cluster_id, f.key) for f in items)


def test_fingerprints_survive_rule_edits(engine, snapshot, write):
    run = snapshot(engine, CATALOG)
    text = """\
rules:
  - id: payments-columns
    title: {title}
    description: d
    severity: {severity}
    scope: column
    condition: {condition}
    message: "{message}"
    remediation: r
"""
    first = write(
        "a.yaml",
        text.format(title="T", severity="low", condition="{field: source, eq: payments}", message="m1"),
    )
    second = write(
        "b.yaml",
        text.format(
            title="Other",
            severity="high",
            condition="{field: source, in: [payments, billing]}",
            message="{column.columnName} changed",
        ),
    )
    one = {f.column: f.fingerprint for f in evaluate(engine, run, load_ruleset([first]))}
    two = {f.column: f.fingerprint for f in evaluate(engine, run, load_ruleset([second]))}
    assert one == two and len(one) == 2


def test_baseline_previous_marks_new_and_existing_with_first_seen(engine, snapshot):
    pack = load_ruleset()
    first = snapshot(engine, CATALOG)
    second = snapshot(engine, _with_column(CATALOG, "c-hr", NEW_HIGH))
    result = check_run(engine, "latest", pack, today=TODAY)
    assert result.run.id == second and result.baseline.id == first
    high = {f.column: (f.status, f.first_seen_run) for f in result.findings if f.rule.startswith("high-sens")}
    assert high == {"hr.emp.ssn": ("existing", first), "hr.emp.salary": ("new", second)}
    assert result.summary["new"] == sum(1 for f in result.findings if f.status == "new")
    assert result.summary["existing"] + result.summary["new"] == result.summary["total"]
    # with no baseline, everything is new
    assert {f.status for f in check_run(engine, second, pack, baseline="none").findings} == {"new"}
    # an explicit baseline id works the same way, now reading the baseline's stored evaluation
    again = check_run(engine, second, pack, baseline=str(first), today=TODAY)
    assert again.baseline.id == first
    assert {f.fingerprint: (f.status, f.first_seen_run) for f in again.findings} == {
        f.fingerprint: (f.status, f.first_seen_run) for f in result.findings
    }


def test_first_seen_survives_a_gap(engine, snapshot):
    pack = load_ruleset()
    first = snapshot(engine, CATALOG)
    check_run(engine, first, pack)
    snapshot(engine, _without_column(CATALOG, "hr.emp.ssn"))
    third = snapshot(engine, CATALOG)
    result = check_run(engine, third, pack)
    ssn = next(f for f in result.findings if f.column == "hr.emp.ssn" and f.rule.startswith("high-sens"))
    assert ssn.status == "new"  # absent from the baseline (run 2)...
    assert ssn.first_seen_run == first  # ...but first seen in run 1


def test_first_seen_counts_complete_runs_only(engine, snapshot):
    """Found by a probe: a failed run checked with --allow-incomplete became the first-seen run of
    findings that, checked against the previous complete run, were new ('new, since run 2')."""
    pack = load_ruleset()
    first = snapshot(engine, CATALOG)
    changed = _with_column(CATALOG, "c-hr", NEW_HIGH)
    failed = snapshot(engine, changed, status="failed")
    check_run(engine, failed, pack, allow_incomplete=True)
    third = snapshot(engine, changed)
    result = check_run(engine, third, pack)
    salary = next(
        f for f in result.findings if f.column == "hr.emp.salary" and f.rule.startswith("high-sens")
    )
    assert (result.baseline.id, salary.status, salary.first_seen_run) == (first, "new", third)


def test_incomplete_runs_are_refused_and_never_baselines(engine, snapshot):
    pack = load_ruleset()
    complete = snapshot(engine, CATALOG)
    failed = snapshot(engine, CATALOG, status="failed")
    with pytest.raises(RunNotUsableError) as caught:
        check_run(engine, failed, pack)
    assert caught.value.exit_code == EXIT_FAILURE
    assert caught.value.message == (
        f"run {failed} is failed, not complete: page 3 of cluster c-hr answered 500 five times"
    )
    # latest means the newest complete run
    assert check_run(engine, "latest", pack).run.id == complete
    # explicitly allowed: evaluated, and its baseline is still the previous complete run
    allowed = check_run(engine, failed, pack, allow_incomplete=True)
    assert allowed.run.id == failed and allowed.baseline.id == complete
    running = snapshot(engine, CATALOG, status="running")
    later = snapshot(engine, CATALOG)
    assert check_run(engine, later, pack).baseline.id == complete
    with pytest.raises(RunNotUsableError) as caught:
        check_run(engine, later, pack, baseline=running)
    assert caught.value.message == (
        f"baseline run {running} is running, not complete; an incomplete run is never a baseline"
    )
    with pytest.raises(RunNotUsableError, match="run 99 does not exist"):
        check_run(engine, 99, pack)
    with pytest.raises(ConfigError, match="--baseline 'last' is not 'previous', 'none' or a run id"):
        check_run(engine, later, pack, baseline="last")


def test_the_library_refuses_missing_and_incomplete_runs_as_check_run_does(engine, snapshot):
    """From Python, ``findings_for_run`` and ``evaluate`` of a run that does not exist returned
    ``[]`` (read as a clean catalog), and a failed run was evaluated without being asked."""
    pack = load_ruleset()
    complete = snapshot(engine, CATALOG)
    failed = snapshot(engine, CATALOG, status="failed")
    for call in (
        lambda: findings_for_run(engine, 999, pack, store=False),
        lambda: findings_for_run(engine, 999, pack),
        lambda: evaluate(engine, 999, pack),
    ):
        with pytest.raises(RunNotUsableError) as caught:
            call()
        assert (caught.value.message, caught.value.hint) == (
            "run 999 does not exist",
            "list runs with: auditor runs",
        )
    with pytest.raises(RunNotUsableError, match=f"run {failed} is failed, not complete"):
        findings_for_run(engine, failed, pack)
    allowed = findings_for_run(engine, failed, pack, allow_incomplete=True, store=False)
    latest = findings_for_run(engine, "latest", pack, store=False)
    assert latest and [f.fingerprint for f in allowed] == [f.fingerprint for f in latest]
    assert {f.first_seen_run for f in latest} == {complete}


def test_check_run_takes_a_run_info_and_a_waiver_path_as_compute_diff_does(engine, snapshot, write):
    from auditor.store.runs import resolve_run

    pack = load_ruleset()
    snapshot(engine, CATALOG)
    waivers = write(
        "w.yaml",
        """
        waivers:
          - rule: high-sensitivity-without-confidential
            column: "*"
            reason: moving to the warehouse
            owner: gov@example.com
            expires: 2027-03-31
        """,
    )
    info = resolve_run(engine, "latest")
    by_path = check_run(engine, info, pack, waivers=str(waivers), today=TODAY)
    by_object = check_run(engine, info.id, pack, waivers=load_waivers(waivers), today=TODAY)
    assert by_path.run.id == info.id and by_path.summary == by_object.summary
    assert by_path.summary["waived"] > 0


def test_the_gate_takes_none_and_names_the_valid_severities(engine, snapshot):
    snapshot(engine, CATALOG)
    result = check_run(engine, "latest", load_ruleset())
    assert result.gate("none") == 0 == result.gate(None) and result.failing("none") == []
    with pytest.raises(ConfigError) as caught:
        result.gate("urgent")
    assert caught.value.message == (
        "fail_on 'urgent' is not a severity: use one of info, low, medium, high, critical, or none"
    )


def test_the_incomplete_note_counts_the_clusters_never_reached_too(engine, snapshot):
    """A snapshot stopped after 3 failures of 150 clusters said "(3 clusters were not fetched)",
    as if the other 147 had been checked."""
    from auditor.store.writer import RunTotals, SnapshotWriter

    pack = load_ruleset()
    snapshot(engine, CATALOG)
    writer = SnapshotWriter(engine, source_url="test://catalog")
    details = {"failed_cluster_count": 3}
    writer.fail(
        "the snapshot stopped after 3 clusters failed", RunTotals(clusters_announced=150, details=details)
    )
    result = check_run(engine, writer.run_id, pack, allow_incomplete=True)
    assert result.incomplete_note() == (
        f"run {writer.run_id} is failed, not complete (0 of 150 clusters were stored in full: 3 could not "
        "be fetched, the other 147 were not fetched): these findings cover only the clusters and columns "
        "it holds; what it lacks was not checked"
    )
    # a probe: "(1 of 2 clusters were stored in full: 1 were not fetched)"
    writer = SnapshotWriter(engine, source_url="test://catalog")
    writer.fail("stopped", RunTotals(clusters_announced=2, details={"failed_cluster_count": 0}))
    with engine.begin() as connection:  # one cluster stored, as the note reads it
        from auditor.store.schema import runs

        connection.execute(runs.update().where(runs.c.id == writer.run_id).values(clusters_stored=1))
    result = check_run(engine, writer.run_id, pack, allow_incomplete=True)
    assert "(1 of 2 clusters was stored in full: 1 was not fetched)" in result.incomplete_note()


def test_empty_database_has_no_run_to_check(engine):
    with pytest.raises(RunNotUsableError, match="there is no complete run in this database yet"):
        check_run(engine, "latest", load_ruleset())


def test_evaluations_are_stored_and_reused_for_the_same_rules(engine, snapshot, write):
    pack = load_ruleset()
    run = snapshot(engine, CATALOG)
    first = findings_for_run(engine, run, pack)
    again = findings_for_run(engine, run, pack)
    assert [f.to_json() for f in first] == [f.to_json() for f in again]
    with engine.connect() as connection:
        assert connection.execute(select(func.count()).select_from(evaluations)).scalar() == 1
        stored = connection.execute(select(func.count()).select_from(findings)).scalar()
    assert stored == len(first)
    other = load_ruleset([pack.sources[0]])
    findings_for_run(engine, run, other)
    findings_for_run(engine, run, other, store=False)
    with engine.connect() as connection:
        assert connection.execute(select(func.count()).select_from(evaluations)).scalar() == 2


def test_the_report_s_lookup_of_a_stored_evaluation_reads_none_of_its_findings(engine, snapshot, monkeypatch):
    """The report and the diff ask for an evaluation's id (``stored_evaluation``) four times; each
    read the whole evaluation into objects, ~390k of them at 1M columns (report 4.4 -> 18.6 s)."""
    from auditor.engine import check as check_module
    from auditor.engine.check import stored_evaluation

    pack = load_ruleset()
    run = snapshot(engine, CATALOG)
    first = stored_evaluation(engine, run, pack)  # evaluated and stored: nothing to read yet

    def no_reading(*args, **kwargs):
        raise AssertionError("a stored evaluation was read whole")

    monkeypatch.setattr(check_module, "load_findings", no_reading)
    assert stored_evaluation(engine, run, pack) == first
    with engine.connect() as connection:
        assert connection.execute(select(func.count()).select_from(evaluations)).scalar() == 1
    with pytest.raises(AssertionError, match="read whole"):  # what the findings' readers still do
        findings_for_run(engine, run, pack)


HR_WAIVER = """\
waivers:
  - rule: high-sensitivity-without-confidential
    cluster: c-hr
    reason: moving
    owner: me
    expires: 2026-12-31
"""


def test_the_check_records_status_and_waiver_on_stored_findings(engine, snapshot, write):
    pack = load_ruleset()
    snapshot(engine, CATALOG)
    waivers = load_waivers(write("w.yaml", HR_WAIVER))
    check_run(engine, "latest", pack, waivers=waivers, today=TODAY)
    with engine.connect() as connection:
        rows = connection.execute(
            select(findings.c.status, findings.c.waiver).where(findings.c.rule_id.like("high-sens%"))
        ).all()
        digest = connection.execute(select(evaluations.c.waivers_digest)).scalar()
    assert len(rows) == 1  # hr.emp.ssn, the one high-sensitivity column of c-hr
    assert all(row.status == "waived" and row.waiver["owner"] == "me" for row in rows)
    assert digest == waivers.digest
    # a read-only view (the report) checks again without waivers: the recorded check stays as it was
    result = check_run(engine, "latest", pack, today=TODAY, record=False)
    assert {f.status for f in result.findings if f.rule.startswith("high-sens")} == {"new"}
    with engine.connect() as connection:
        after = connection.execute(
            select(findings.c.status, findings.c.waiver).where(findings.c.rule_id.like("high-sens%"))
        ).all()
        assert connection.execute(select(evaluations.c.waivers_digest)).scalar() == waivers.digest
    assert sorted(map(tuple, after), key=str) == sorted(map(tuple, rows), key=str)


def test_a_repeated_check_rewrites_only_the_findings_whose_state_changed(engine, snapshot, write):
    """A CI job checking the same run again (same baseline, same waivers) writes no finding rows."""
    pack = load_ruleset()
    snapshot(engine, CATALOG)
    with engine.begin() as connection:
        connection.exec_driver_sql("CREATE TABLE updates (n INTEGER)")
        connection.exec_driver_sql(
            "CREATE TRIGGER count_updates AFTER UPDATE ON findings BEGIN INSERT INTO updates VALUES (1); END"
        )

    def updates() -> int:
        with engine.begin() as connection:
            count = connection.exec_driver_sql("SELECT count(*) FROM updates").scalar()
            connection.exec_driver_sql("DELETE FROM updates")
        return count

    first = check_run(engine, "latest", pack, today=TODAY)
    assert updates() == 0  # stored as new, with no waiver: nothing to record
    again = check_run(engine, "latest", pack, today=TODAY)
    assert updates() == 0
    assert [f.to_json() for f in again.findings] == [f.to_json() for f in first.findings]
    waivers = load_waivers(write("w.yaml", HR_WAIVER))
    check_run(engine, "latest", pack, waivers=waivers, today=TODAY)
    assert updates() == 1  # the one waived finding
    check_run(engine, "latest", pack, waivers=waivers, today=TODAY)
    assert updates() == 0
    check_run(engine, "latest", pack, today=TODAY)
    assert updates() == 1  # the waiver is gone again
    with engine.connect() as connection:
        states = connection.execute(select(findings.c.status, findings.c.waiver)).all()
    assert {(row.status, row.waiver) for row in states} == {("new", None)}


WAIVERS = """\
waivers:
  - rule: high-sensitivity-without-confidential
    cluster: c-hr
    column: "HR.EMP.*"
    reason: Payroll moves to the confidential warehouse in Q1
    owner: governance@example.com
    expires: 2026-12-05
    ticket: GOV-1
  - rule: duplicate-columns-across-sources
    column_regex: '(hr|crm)\\..*\\.ssn'
    reason: Known copy, tracked
    owner: data-team
    expires: 2026-11-27
  - rule: pii-cluster-low-severity
    cluster: c-nowhere
    reason: Old cluster
    owner: someone
    expires: 2027-06-01
"""


def test_waivers_waive_expire_and_go_stale(engine, snapshot, write):
    pack = load_ruleset()
    snapshot(engine, CATALOG)
    waivers = load_waivers(write("waivers.yaml", WAIVERS))
    result = check_run(engine, "latest", pack, waivers=waivers, today=TODAY)
    high = next(f for f in result.findings if f.rule == "high-sensitivity-without-confidential")
    assert high.status == "waived"
    assert high.to_json()["waiver"] == {
        "reason": "Payroll moves to the confidential warehouse in Q1",
        "owner": "governance@example.com",
        "expires": "2026-12-05",
        "expired": False,
        "where": f"{waivers.source}:2",
        "ticket": "GOV-1",
    }
    duplicate = next(f for f in result.findings if f.rule == "duplicate-columns-across-sources")
    assert duplicate.status == "new" and duplicate.waiver["expired"] is True  # "waiver expired"
    summary = result.summary
    assert (summary["waived"], summary["waiver_expired"]) == (1, 1)
    assert [w["rule"] for w in summary["stale_waivers"]] == ["pii-cluster-low-severity"]
    assert [(w["rule"], w["days_left"]) for w in summary["expiring_waivers"]] == [
        ("high-sensitivity-without-confidential", 7)
    ]
    # waived findings never fail the gate; the expired one counts again
    assert [f.rule for f in result.failing("high")] == ["archived-cluster-with-high-sensitivity"]
    assert result.gate("critical") == 0
    assert "duplicate-columns-across-sources" in {f.rule for f in result.failing("medium")}
    # the day after the expiry the first waiver no longer applies
    later = check_run(engine, "latest", pack, waivers=waivers, today=date(2026, 12, 6))
    high = next(f for f in later.findings if f.rule == "high-sensitivity-without-confidential")
    assert high.status == "new" and high.waiver_expired
    assert "high-sensitivity-without-confidential" in {f.rule for f in later.failing("high")}


def test_an_expired_waiver_fails_a_new_only_gate(engine, snapshot, write):
    """Found by a CI probe: with --new-only (the README's CI gate), a finding whose waiver expired
    was 'existing' and never failed the gate, so the expiry never reached anyone."""
    pack = load_ruleset()
    snapshot(engine, CATALOG)
    snapshot(engine, CATALOG)
    waivers = load_waivers(write("waivers.yaml", WAIVERS))
    result = check_run(engine, "latest", pack, waivers=waivers, today=date(2026, 12, 6))
    expired = {f.rule for f in result.findings if f.waiver_expired}
    assert expired == {"high-sensitivity-without-confidential", "duplicate-columns-across-sources"}
    assert {f.status for f in result.findings} == {"existing"}
    assert {f.rule for f in result.failing("medium", new_only=True)} == expired
    assert result.gate("high", new_only=True) == 1
    # before the expiry, nothing new: the gate passes
    waived = check_run(engine, "latest", pack, waivers=waivers, today=date(2026, 11, 20))
    assert waived.failing("low", new_only=True) == []


def test_gate_thresholds_and_new_only(engine, snapshot):
    pack = load_ruleset()
    snapshot(engine, CATALOG)
    snapshot(engine, _with_column(CATALOG, "c-fin", {"fullyQualifiedName": "fin.x", "source": "s"}))
    result = check_run(engine, "latest", pack)
    assert result.gate(None) == 0
    assert result.gate("info") == 1
    assert result.gate("critical") == 0
    assert [f.rule for f in result.failing("high")] == [
        "archived-cluster-with-high-sensitivity",
        "high-sensitivity-without-confidential",
    ]
    assert result.gate("high") == 1
    assert result.gate("info", new_only=True) == 0  # nothing new since the previous run
    snapshot(engine, _with_column(CATALOG, "c-hr", NEW_HIGH))
    result = check_run(engine, "latest", pack)
    assert [(f.rule, f.subject) for f in result.failing("high", new_only=True)] == [
        ("high-sensitivity-without-confidential", "c-hr/hr.emp.salary")
    ]
    assert result.gate("high", new_only=True) == 1
    assert result.gate("critical", new_only=True) == 0


def test_a_column_pattern_waives_group_findings_only_when_every_column_matches(engine, snapshot, write):
    snapshot(engine, CATALOG)
    text = (
        "waivers:\n  - rule: duplicate-columns-across-sources\n    column: 'hr.*'\n"
        "    reason: r\n    owner: o\n    expires: 2030-01-01\n"
    )
    result = check_run(engine, "latest", load_ruleset(), waivers=load_waivers(write("w.yaml", text)))
    duplicate = next(f for f in result.findings if f.rule == "duplicate-columns-across-sources")
    assert duplicate.status == "new" and duplicate.waiver is None
    assert [w.column for w in result.waiver_report.stale] == ["hr.*"]


def test_column_star_waives_cluster_findings_that_involve_no_column(engine, snapshot, write):
    """Found by a probe: ``column: '*'`` (documented as waiving a rule's findings everywhere) waived
    none of a cluster rule's findings that list no column, and the waiver was reported stale."""
    snapshot(engine, CATALOG)
    pack = load_ruleset()
    bare = [f for f in check_run(engine, "latest", pack).findings if f.column is None and not f.columns]
    assert bare  # cluster findings with no column involved
    rule = bare[0].rule
    expected = sorted(f.fingerprint for f in bare if f.rule == rule)
    for pattern, waives in (("column: '*'", True), ("column_regex: '.*'", True), ("column: 'hr.*'", False)):
        text = f"waivers:\n  - {{rule: {rule}, {pattern}, reason: r, owner: o, expires: 2030-01-01}}\n"
        result = check_run(engine, "latest", pack, waivers=load_waivers(write("w.yaml", text)), today=TODAY)
        waived = sorted(f.fingerprint for f in result.findings if f.rule == rule and f.status == "waived")
        assert (waived, len(result.waiver_report.stale)) == ((expected, 0) if waives else ([], 1)), pattern


def test_waiver_cluster_ids_ignore_case_and_regexes_span_line_breaks(engine, snapshot, write):
    """Found by a probe: a cluster id copied in upper case matched nothing (ObjectIds are hex, in
    either case), and a column regex's '.' did not match a line break in a name."""
    catalog = [
        {"id": "abcdef0123456789abcdef01", "columns": [{"fullyQualifiedName": "db.t.line\nbreak"}]},
    ]
    snapshot(engine, catalog)
    rules = write(
        "r.yaml",
        "rules:\n  - {id: every-column, title: t, description: d, severity: low, scope: column,\n"
        "     condition: {field: columnName, absent: true}, message: m, remediation: r}\n",
    )
    ruleset = load_ruleset([rules])
    for narrowing in (
        "cluster: ABCDEF0123456789ABCDEF01",
        "column_regex: 'db\\.t\\.line.break'",
        "column: 'db.t.line*'",
    ):
        text = (
            f"waivers:\n  - {{rule: every-column, {narrowing}, reason: r, owner: o, expires: 2030-01-01}}\n"
        )
        result = check_run(
            engine, "latest", ruleset, waivers=load_waivers(write("w.yaml", text)), today=TODAY
        )
        assert [f.status for f in result.findings] == ["waived"], narrowing


def test_a_slow_column_regex_gets_advice_for_a_whole_name_match(engine, snapshot, write):
    """Found by a probe of the gate: '.*CC_NUM.*' was refused with the rules' advice (a search finds
    the pattern anywhere, so a leading .* is not needed); a column_regex matches the whole name, so
    'CC_NUM' then matched nothing and the finding stayed open. The glob it now names waives it."""
    path = write(
        "w.yaml",
        "waivers:\n  - {rule: every-column, cluster: c1, column_regex: '.*CC_NUM.*', reason: r, owner: o, "
        "expires: 2099-01-01}\n",
    )
    with pytest.raises(RuleError) as caught:
        load_waivers(path)
    (problem,) = caught.value.problems
    assert problem.endswith(
        "it must match the whole name: for names holding a part, write column: '*PART*' (a glob) "
        "instead, or make the repeats exclusive ([^.]*\\. instead of .*\\.)"
    )
    assert "a leading .* is not needed" not in problem
    snapshot(engine, [{"id": "c1", "columns": [{"fullyQualifiedName": "db.t.MY_CC_NUM_1"}]}])
    ruleset = load_ruleset(
        write(
            "every.yaml",
            "rules:\n  - {id: every-column, title: t, description: d, severity: high, scope: column, "
            "remediation: r, message: m, condition: {field: businessAttribute, absent: true}}\n",
        )
    )
    glob = write(
        "g.yaml",
        "waivers:\n  - {rule: every-column, cluster: c1, column: '*CC_NUM*', reason: r, owner: o, "
        "expires: 2099-01-01}\n",
    )
    result = check_run(engine, "latest", ruleset, waivers=load_waivers(glob), store=False)
    assert [f.status for f in result.findings] == ["waived"]


def test_invalid_waiver_files_report_every_problem(write):
    path = write(
        "bad-waivers.yaml",
        """\
waivers:
  - rule: high-sensitivity-without-confidential
    column_regex: '(a+)+'
    reason: ""
    expires: next week
    color: red
  - rule: x
    cluster: 12345
    reason: r
    owner: o
    expires: 2026-01-01
""",
    )
    with pytest.raises(RuleError) as caught:
        load_waivers(path)
    assert caught.value.message == f"6 problems in the waiver file {path}"
    assert caught.value.problems == [
        f"{path}:2:5: a waiver is missing the required key 'owner'",
        f"{path}:3:19: column_regex: nested quantifiers such as (a+)+ can take exponential time; rewrite "
        "the pattern without a repeated group that itself repeats",
        f"{path}:4:13: reason: must not be empty",
        f"{path}:5:14: expires: expected a date written YYYY-MM-DD (such as 2027-03-31), "
        "got text 'next week'",
        f"{path}:6:5: unknown key 'color' in a waiver; valid: rule, cluster, column, column_regex, reason, "
        "owner, expires, ticket",
        f"{path}:8:14: cluster: expected text, got number 12345 (quote it)",
    ]


def test_impossible_waiver_dates_are_problems_with_their_position(write):
    # PyYAML raised a bare ValueError for 2027-02-30: an internal error (exit 3) with no position.
    entry = """\
  - rule: r
    column: x
    reason: r
    owner: o
    expires: {expires}
"""
    path = write(
        "dates.yaml",
        "waivers:\n"
        + entry.format(expires="2027-02-30")
        + entry.format(expires="'2027-13-01'")
        + entry.format(expires="2027-02-03T10:00:00")
        # pydantic's lax reading took a Unix time, 0 and a date-time with an offset for dates
        + entry.format(expires="1798675200")
        + entry.format(expires="'1798675200'")
        + entry.format(expires="0")
        + entry.format(expires="2027-01-11T00:00:00+14:00")
        + entry.format(expires="'2027-1-5'")
        # named as the rule files name a value (a probe: "number True", "[datetime.date(…)]")
        + entry.format(expires="true")
        + entry.format(expires="[2027-12-31]")
        + entry.format(expires="{a: 1}"),
    )
    with pytest.raises(RuleError) as caught:
        load_waivers(path)
    assert caught.value.exit_code == 2
    expected = "expected a date written YYYY-MM-DD (such as 2027-03-31)"
    assert caught.value.problems == [
        f"{path}:6:14: expires: '2027-02-30' is not a valid date (day value is outside expected range)",
        f"{path}:11:14: expires: '2027-13-01' is not a valid date (month value is outside expected range "
        "of 1-12)",
        f"{path}:16:14: expires: must be a date (YYYY-MM-DD) without a time",
        f"{path}:21:14: expires: {expected}, got number 1798675200",
        f"{path}:26:14: expires: {expected}, got text '1798675200'",
        f"{path}:31:14: expires: {expected}, got number 0",
        f"{path}:36:14: expires: must be a date (YYYY-MM-DD) without a time",
        f"{path}:41:14: expires: {expected}, got text '2027-1-5'",
        f"{path}:46:14: expires: {expected}, got boolean true",
        f"{path}:51:14: expires: {expected}, got a list",
        f"{path}:56:14: expires: {expected}, got a mapping",
    ]


def test_reading_stored_findings_by_position_gives_what_reading_by_name_gives(engine, snapshot):
    from auditor.engine import Finding

    run = snapshot(engine, CATALOG)
    stored = findings_for_run(engine, run, load_ruleset())
    assert len(stored) >= 5
    with engine.connect() as connection:
        # the columns in another order, and more of them, as the report's and the diff's joins read
        query = select(
            findings.c.waiver, findings.c.status, func.length(findings.c.message).label("n"), findings
        )
        result = connection.execute(query)
        read = Finding.reader(result.keys())
        rows = result.fetchall()
    by_name = [
        Finding(
            rule=row.rule_id,
            severity=row.severity,
            kind=row.kind,
            cluster_id=row.cluster_id,
            column=row.column_fqn,
            columns=list(row.columns),
            message=row.message,
            key=row.subject,
            fingerprint=row.fingerprint,
            first_seen_run=row.first_seen_run,
        )
        for row in rows
    ]
    assert [read(row) for row in rows] == by_name
    existing = [dataclasses.replace(f, status="existing") for f in by_name]
    assert [Finding.from_row(row, status="existing") for row in rows] == existing
    assert sorted(read(row).fingerprint for row in rows) == sorted(f.fingerprint for f in stored)


@pytest.mark.postgres
def test_postgres_records_a_repeated_check_rewriting_only_changed_rows(fresh_postgres, snapshot, write):
    """A repeated check on PostgreSQL copies its states in and updates, in one statement, only the
    rows whose status, waiver or first-seen run changed (each row's ``xmin`` says whether it was
    rewritten); what is stored is what the check returned."""
    from sqlalchemy import literal_column

    from auditor.store.db import open_database

    waiver = write(
        "w.yaml",
        "waivers:\n  - rule: high-sensitivity-without-confidential\n    cluster: c-hr\n"
        "    reason: Moving to the confidential warehouse\n    owner: governance@example.com\n"
        "    expires: 2026-12-31\n",
    )
    engine = open_database(fresh_postgres)
    try:
        run = snapshot(engine, CATALOG)
        pack, day = load_ruleset(), date(2026, 11, 28)

        def stored() -> dict[str, tuple]:
            with engine.connect() as connection:
                rows = connection.execute(
                    select(
                        findings.c.fingerprint,
                        findings.c.status,
                        findings.c.waiver,
                        findings.c.first_seen_run,
                        literal_column("xmin::text"),
                    )
                ).all()
            return {r[0]: tuple(r[1:]) for r in rows}

        check_run(engine, run, pack, today=day)  # the first check stores the evaluation, states included
        before = stored()
        waived = check_run(engine, run, pack, waivers=load_waivers(waiver), today=day)
        after = stored()
        changed = {f.fingerprint for f in waived.findings if f.waived}
        assert changed and len(changed) < len(after)
        assert {fp for fp in after if after[fp][3] != before[fp][3]} == changed  # only those rewritten
        for f in waived.findings:
            status, stored_waiver, first_seen, _ = after[f.fingerprint]
            assert (status, stored_waiver, first_seen) == (f.status, f.waiver, f.first_seen_run)
        check_run(engine, run, pack, waivers=load_waivers(waiver), today=day)
        assert stored() == after  # the same check again: no row rewritten
    finally:
        engine.dispose()


def test_a_waiver_whose_narrowing_narrows_nothing_is_a_problem(write):
    # `cluster: null` passed the "has a narrowing key" test and then waived the rule everywhere.
    entry = """\
  - rule: r
    {narrowing}
    reason: r
    owner: o
    expires: 2099-01-01
"""
    path = write(
        "wide.yaml",
        "waivers:\n"
        + entry.format(narrowing="cluster: null")
        + entry.format(narrowing="column: '   '")
        + entry.format(narrowing="column_regex: ~"),
    )
    with pytest.raises(RuleError) as caught:
        load_waivers(path)
    assert caught.value.exit_code == 2
    everywhere = (
        "a waiver must narrow its rule with 'cluster', 'column' or 'column_regex' "
        "(to switch a rule off everywhere, set enabled: false on the rule)"
    )
    assert caught.value.problems == [
        f"{path}:2:5: {everywhere}",
        f"{path}:3:14: cluster is null, which narrows nothing; give a value or remove the key",
        f"{path}:8:13: column: must not be blank",
        f"{path}:12:5: {everywhere}",
        f"{path}:13:19: column_regex is null, which narrows nothing; give a value or remove the key",
    ]


def test_a_waiver_repeated_is_a_problem_and_overlapping_ones_are_not(write):
    """Found by a CI probe: two identical entries were accepted, neither ever reported stale."""
    entry = "  - {{rule: r, {narrowing}, reason: r, owner: o, expires: {expires}}}\n"
    path = write(
        "twice.yaml",
        "waivers:\n"
        + entry.format(narrowing="cluster: ABC, column: 'hr.*'", expires="2099-01-01")
        + entry.format(narrowing="cluster: abc, column: 'HR.*'", expires="2099-01-01")  # ids, globs: any case
        + entry.format(narrowing="cluster: abc, column: 'hr.*'", expires="2099-06-01")  # renewed: overlaps
        + entry.format(narrowing="cluster: abc, column: 'crm.*'", expires="2099-01-01")  # another column
        + entry.format(narrowing="column_regex: 'hr\\..*'", expires="2099-01-01")
        + entry.format(narrowing="column_regex: 'hr\\..*'", expires="2099-01-01"),
    )
    with pytest.raises(RuleError) as caught:
        load_waivers(path)
    said = (
        "{}: this waiver repeats the waiver at line {} "
        "(same rule, cluster, column, reason, owner and expiry); keep one"
    )
    assert caught.value.problems == [said.format(f"{path}:3:5", 2), said.format(f"{path}:7:5", 6)]


def test_findings_of_a_run_deleted_meanwhile_are_refused_as_such(engine, snapshot):
    # A prune in another process deleted the run while it was evaluated: storing its findings
    # failed on the foreign key, with the hint to check that the database is writable.
    from auditor.engine.findings import store_evaluation
    from auditor.errors import RunNotUsableError
    from auditor.store.retention import plan_prune, prune

    doomed = snapshot(engine, [{"id": "c1", "columns": [{"fullyQualifiedName": "a.b"}]}])
    snapshot(engine, [{"id": "c1", "columns": [{"fullyQualifiedName": "a.b"}]}])
    prune(engine, plan_prune(engine, keep=1))
    with pytest.raises(RunNotUsableError) as caught:
        store_evaluation(engine, doomed, "digest", ["r"], [])
    assert caught.value.message == (
        # said so whether it was the run checked or its baseline (a probe saw the baseline named
        # as the run being checked)
        f"run {doomed} was deleted while its findings were being stored (by auditor db prune?)"
    )


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_two_checks_of_one_run_at_once_store_one_evaluation(
    kind, engine, snapshot, write, request, monkeypatch
):
    """Two CI jobs checking the same run at the same moment both evaluate it; the second to store
    keeps the first's evaluation (its statuses recorded on it) instead of storing a duplicate."""
    import threading

    import auditor.engine.check as check_module
    from auditor.store.db import open_database

    if kind == "postgresql":
        engine = open_database(request.getfixturevalue("fresh_postgres"))
    snapshot(engine, CATALOG)
    pack = load_ruleset()
    waivers = load_waivers(write("w.yaml", HR_WAIVER))
    both_evaluated = threading.Barrier(2, timeout=60)
    real_evaluate = check_module.evaluate

    def evaluate_then_wait(*args, **kwargs):
        items = real_evaluate(*args, **kwargs)
        both_evaluated.wait()  # neither stores before both have found no stored evaluation
        return items

    monkeypatch.setattr(check_module, "evaluate", evaluate_then_wait)
    results, errors = [], []

    def one_job() -> None:
        own = open_database(engine.url.render_as_string(hide_password=False))
        try:
            results.append(check_run(own, "latest", pack, waivers=waivers, today=TODAY))
        except Exception as exc:  # noqa: BLE001 - a thread's failure is asserted on below
            errors.append(exc)
        finally:
            own.dispose()

    jobs = [threading.Thread(target=one_job) for _ in range(2)]
    for job in jobs:
        job.start()
    for job in jobs:
        job.join()
    assert errors == []
    assert [f.to_json() for f in results[0].findings] == [f.to_json() for f in results[1].findings]
    with engine.connect() as connection:
        assert connection.execute(select(func.count()).select_from(evaluations)).scalar() == 1
        assert connection.execute(select(evaluations.c.waivers_digest)).scalar() == waivers.digest
        stored = connection.execute(select(findings.c.fingerprint, findings.c.status)).all()
    assert sorted(map(tuple, stored)) == sorted((f.fingerprint, f.status) for f in results[0].findings)
    assert "waived" in {status for _, status in stored}
    engine.dispose()


def test_a_baseline_pruned_between_its_two_reads_is_said_not_read_as_empty(engine, snapshot, monkeypatch):
    # Found by reasoning in a probe: the baseline's evaluation and its findings are two reads; a
    # prune committing between them left nothing to compare with, and every finding read as new.
    import auditor.engine.check as check_module
    from auditor.errors import RunNotUsableError
    from auditor.store.retention import plan_prune, prune

    catalog = [{"id": "c1", "columns": [{"fullyQualifiedName": "a.b"}]}]
    first = snapshot(engine, catalog)
    second = snapshot(engine, catalog)
    ruleset = load_ruleset()
    check_run(engine, first, ruleset)
    read = check_module._sightings

    def pruned_meanwhile(engine_, run_id, ruleset_, *, store):
        read(engine_, run_id, ruleset_, store=store)  # the first read
        prune(engine_, plan_prune(engine_, keep=1))  # the baseline goes
        return {}  # what the second read would have found

    monkeypatch.setattr(check_module, "_sightings", pruned_meanwhile)
    with pytest.raises(RunNotUsableError) as caught:
        check_run(engine, second, ruleset, baseline=first)
    assert (
        caught.value.message
        == f"run {first} was deleted while it was read as the baseline (by auditor db prune?)"
    )


_separated = st.text(alphabet=st.sampled_from("ab\x1e\x1f_/"), max_size=6)


@given(st.tuples(_separated, _separated), st.tuples(_separated, _separated))
def test_two_subjects_never_share_a_fingerprint(one, other):
    """Found by a probe: catalog text may hold the unit separator the parts were joined with."""
    from auditor.engine.findings import KIND_COLUMN, fingerprint

    if one != other:
        assert fingerprint("r", KIND_COLUMN, *one) != fingerprint("r", KIND_COLUMN, *other)


@given(st.text().filter(lambda t: "\x1e" not in t and "\x1f" not in t), st.text())
def test_fingerprints_of_ordinary_text_are_what_they_were(cluster_id, key):
    import hashlib

    from auditor.engine.findings import FINGERPRINT_VERSION, KIND_COLUMN, fingerprint

    key = key.replace("\x1e", "").replace("\x1f", "")
    before = "\x1f".join((FINGERPRINT_VERSION, "r", KIND_COLUMN, f"{cluster_id}\x1f{key}"))
    expected = hashlib.blake2b(before.encode("utf-8"), digest_size=16).hexdigest()
    assert fingerprint("r", KIND_COLUMN, cluster_id, key) == expected  # (text() holds no surrogate)


def test_subjects_joined_alike_before_are_two_findings(engine, snapshot):
    # the probe's tenant: cluster 'p\x1fq' with column 'r', and cluster 'p' with column 'q\x1fr':
    # one fingerprint for two findings stopped the check with exit 3 (a UNIQUE constraint)
    ssn = CATALOG[0]["columns"][0]
    snapshot(
        engine,
        [
            {**CATALOG[0], "id": "p\x1fq", "columns": [{**ssn, "fullyQualifiedName": "r"}]},
            {**CATALOG[0], "id": "p", "columns": [{**ssn, "fullyQualifiedName": "q\x1fr"}]},
        ],
    )
    result = check_run(engine, "latest", load_ruleset())
    rule = "high-sensitivity-without-confidential"
    prints = [f.fingerprint for f in result.findings if f.rule == rule]
    assert len(prints) == len(set(prints)) == 2


@pytest.mark.postgres
def test_a_group_s_spelling_is_the_same_on_an_icu_database_as_on_sqlite(postgres_url, engine, snapshot):
    """Found by a probe: on a PostgreSQL database with an ICU collation the duplicate rule said
    'column firstname appears in 5 sources' where SQLite (and a C.UTF-8 database) said 'FirstName':
    the representative spelling was the smallest by the database's collation."""
    from auditor.store.db import open_database
    from tests.conftest import scratch_database

    ssn = CATALOG[0]["columns"][0]
    catalog = [
        {
            **CATALOG[0],
            "columns": [
                {**ssn, "fullyQualifiedName": "a.t.FirstName", "columnName": "FirstName", "source": "a"},
                {**ssn, "fullyQualifiedName": "b.t.firstname", "columnName": "firstname", "source": "b"},
            ],
        }
    ]

    def messages(target) -> list[str]:
        found = check_run(target, "latest", load_ruleset()).findings
        return sorted(f.message for f in found if f.rule == "duplicate-columns-across-sources")

    snapshot(engine, catalog)
    probe = open_database(postgres_url)
    try:
        with probe.connect() as connection:
            icu = connection.exec_driver_sql("SELECT count(*) FROM pg_collation WHERE collprovider = 'i'")
            if not icu.scalar():
                pytest.skip("this PostgreSQL server is built without ICU")
    finally:
        probe.dispose()
    options = "TEMPLATE template0 LOCALE_PROVIDER icu ICU_LOCALE 'en-US' LOCALE 'C.UTF-8'"
    with scratch_database(postgres_url, "auditor_icu", options) as url:
        server = open_database(url)
        try:
            snapshot(server, catalog)
            on_server = messages(server)
        finally:
            server.dispose()
    assert on_server == messages(engine)
    assert on_server[0].startswith("column FirstName appears in 2 sources")


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_an_evaluation_taken_while_the_snapshot_ran_is_not_reused_once_it_is_complete(kind, engine, request):
    """Found by a probe: ``check --allow-incomplete`` beside a snapshot still being written stored
    an evaluation of the part written so far (0 findings), and every later check of the finished
    run reused it: the gate passed on a catalog with findings, and the next run, checked against
    it, saw every finding as new."""
    from auditor.bigid.models import parse_cluster, parse_column
    from auditor.store.db import open_database
    from auditor.store.writer import ClusterStats, RunTotals, SnapshotWriter

    if kind == "postgresql":
        engine = open_database(request.getfixturevalue("fresh_postgres"))
    pack = load_ruleset()
    writer = SnapshotWriter(engine, source_url="test://catalog")
    for position, raw in enumerate(CATALOG):
        data = {k: v for k, v in raw.items() if k != "columns"}
        writer.add_cluster(parse_cluster(data), data, position)
    writer.flush()  # the clusters are listed; no column has arrived yet
    early = check_run(engine, writer.run_id, pack, today=TODAY, allow_incomplete=True)
    assert early.run.status == "running"
    early_total = early.summary["total"]  # cluster findings only
    for raw in CATALOG:
        columns = raw.get("columns", [])
        writer.add_columns(raw["id"], [(parse_column(c), c) for c in columns])
        writer.finish_cluster(raw["id"], ClusterStats(columns_fetched=len(columns), pages=1))
    writer.complete(RunTotals(clusters_announced=len(CATALOG)))
    expected = sorted(f.fingerprint for f in evaluate(engine, writer.run_id, pack))
    assert len(expected) > early_total  # the columns bring findings of their own
    for _ in range(2):  # evaluated once more, then that evaluation is reused
        later = check_run(engine, "latest", pack, today=TODAY)
        assert later.run.status == "complete"
        assert sorted(f.fingerprint for f in later.findings) == expected
    with engine.connect() as connection:
        assert connection.execute(select(func.count()).select_from(evaluations)).scalar() == 2


def test_a_snapshot_that_finishes_while_its_run_is_evaluated_is_evaluated_again(engine, monkeypatch):
    """Found by a review: the first fix compared the evaluation's storing time with the run's end,
    so a snapshot that finished between the evaluation's reading and its storing left a partial
    evaluation that every later check reused (and machines' clocks decided the rest)."""
    import auditor.engine.check as check_module
    from auditor.bigid.models import parse_cluster, parse_column
    from auditor.store.writer import ClusterStats, RunTotals, SnapshotWriter

    pack = load_ruleset()
    writer = SnapshotWriter(engine, source_url="test://catalog")
    for position, raw in enumerate(CATALOG):
        data = {k: v for k, v in raw.items() if k != "columns"}
        writer.add_cluster(parse_cluster(data), data, position)
    writer.flush()
    real_evaluate = check_module.evaluate

    def evaluate_then_the_snapshot_finishes(*args, **kwargs):
        items = real_evaluate(*args, **kwargs)  # what was written so far: no column yet
        for raw in CATALOG:
            columns = raw.get("columns", [])
            writer.add_columns(raw["id"], [(parse_column(c), c) for c in columns])
            writer.finish_cluster(raw["id"], ClusterStats(columns_fetched=len(columns), pages=1))
        writer.complete(RunTotals(clusters_announced=len(CATALOG)))
        return items

    monkeypatch.setattr(check_module, "evaluate", evaluate_then_the_snapshot_finishes)
    early = check_run(engine, writer.run_id, pack, today=TODAY, allow_incomplete=True)
    monkeypatch.setattr(check_module, "evaluate", real_evaluate)
    later = check_run(engine, "latest", pack, today=TODAY)
    assert later.run.status == "complete"
    expected = sorted(f.fingerprint for f in evaluate(engine, writer.run_id, pack))
    assert len(expected) > early.summary["total"]
    assert sorted(f.fingerprint for f in later.findings) == expected


def test_evaluations_are_reused_whatever_the_checking_machines_clock_says(engine, snapshot, monkeypatch):
    """Found by a review: reuse decided by comparing timestamps of two machines (the snapshot's and
    the checker's) stored a new evaluation on every check when the checker's clock was behind."""
    from datetime import timedelta

    import auditor.engine.findings as findings_module

    snapshot(engine, CATALOG)
    real_now = findings_module.now
    monkeypatch.setattr(findings_module, "now", lambda: real_now() - timedelta(hours=1))
    pack = load_ruleset()
    for _ in range(3):
        check_run(engine, "latest", pack, today=TODAY)
    with engine.connect() as connection:
        assert connection.execute(select(func.count()).select_from(evaluations)).scalar() == 1


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_a_run_id_beyond_any_run_is_said_not_to_exist_on_either_database(
    kind, tmp_path, snapshot, request, run_cli
):
    """A PostgreSQL probe: ``--run 2147483648`` overflowed ``runs.id`` there ("integer out of range",
    blamed on a locked or old database, or an internal error with the SQL for ``diff``), and an id
    of 2**63 or more was an internal error on SQLite. Such an id names no run, on both."""
    from auditor.diff import compute_diff
    from auditor.store.db import open_database

    url = (
        request.getfixturevalue("fresh_postgres")
        if kind == "postgresql"
        else f"sqlite:///{tmp_path / 'a.db'}"
    )
    engine = open_database(url)
    first = snapshot(engine, CATALOG)
    pack = load_ruleset()
    for too_big in (2**31, 2**63, 10**20):
        for call in (
            lambda too_big=too_big: check_run(engine, too_big, pack),
            lambda too_big=too_big: findings_for_run(engine, too_big, pack, store=False),
            lambda too_big=too_big: evaluate(engine, too_big, pack),
            lambda too_big=too_big: compute_diff(engine, first, too_big),
        ):
            with pytest.raises(RunNotUsableError) as caught:
                call()
            assert (caught.value.message, caught.value.hint) == (
                f"run {too_big} does not exist",
                "list runs with: auditor runs",
            )
        with pytest.raises(RunNotUsableError, match=f"^baseline run {too_big} does not exist$"):
            check_run(engine, first, pack, baseline=too_big)
    engine.dispose()
    for args, said in (
        (["check", "--run", "2147483648"], "run 2147483648 does not exist"),
        (["check", "--run", "99999999999999999999"], "run 99999999999999999999 does not exist"),
        (["check", "--baseline", "2147483648"], "baseline run 2147483648 does not exist"),
        (["diff", "--from", "1", "--to", "9223372036854775808"], "run 9223372036854775808 does not exist"),
        (["diff", "--from", "2147483648"], "run 2147483648 does not exist"),
        (
            ["report", "--run", "9223372036854775807", "-o", "r.html"],
            "run 9223372036854775807 does not exist",
        ),
        (["report", "--against", "2147483648", "-o", "r.html"], "run 2147483648 does not exist"),
    ):
        result = run_cli(*args, "--db", url)
        assert result.exit_code == 3, (args, result.output)
        assert result.stderr == f"error: {said}\nhint: list runs with: auditor runs\n", args
