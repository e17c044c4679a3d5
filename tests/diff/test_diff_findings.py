"""The findings half of the diff: five categories, each finding linked to the change that explains it.

Findings come from the real rules engine and the built-in rule pack, evaluated on demand.
"""

from __future__ import annotations

from datetime import date, timedelta

import pytest
from sqlalchemy import func, select

from auditor.diff import compute_diff
from auditor.diff.findings import ChangeIndex, diff_findings
from auditor.diff.model import CatalogDiff
from auditor.engine import check_run, load_ruleset, load_waivers
from auditor.store.schema import evaluations

HSWC = "high-sensitivity-without-confidential"
FINDING_KEYS = {
    "rule",
    "severity",
    "cluster_id",
    "column",
    "columns",
    "message",
    "fingerprint",
    "status",
    "first_seen_run",
    "explanation",
}


def by_rule(items, rule):
    return [f for f in items if f["rule"] == rule]


def test_label_removed_explains_the_new_finding(engine, write, base):
    after = base()
    after[0][0]["labels"] = ["PII"]  # c1 loses Confidential; its email column is sensitivity=high
    first, second = write(engine, base()), write(engine, after)
    data = compute_diff(engine, first, second).to_json()
    (finding,) = by_rule(data["findings"]["new"], HSWC)
    assert set(finding) == FINDING_KEYS
    assert (finding["cluster_id"], finding["column"], finding["status"]) == (
        "c1",
        "crm.public.users.email",
        "new",
    )
    assert finding["first_seen_run"] == second
    assert finding["explanation"] == [
        {
            "kind": "cluster_changed",
            "cluster_id": "c1",
            "column": None,
            "field": "labels",
            "before": "Confidential",
            "after": None,
            "text": "label 'Confidential' removed from cluster 'cluster c1'",
        }
    ]
    assert by_rule(data["findings"]["resolved"], HSWC) == []


def test_tag_change_explains_new_and_label_added_explains_resolved(engine, write, base):
    before = base()
    before[1][0]["labels"] = ["Analytics"]
    after = base()
    after[1][0]["labels"] = ["Analytics"]
    after[1][1][0]["tags"][0]["tagValue"] = (
        "high"  # dwh.sales.orders.total: low -> high, c2 lacks Confidential
    )
    after[0][0]["labels"] = ["PII", "Confidential", "Reviewed"]
    first, second = write(engine, before), write(engine, after)
    data = compute_diff(engine, first, second).to_json()
    (new,) = by_rule(data["findings"]["new"], HSWC)
    assert new["column"] == "dwh.sales.orders.total"
    assert [e["text"] for e in new["explanation"]] == [
        "tag sensitivity of column dwh.sales.orders.total changed from 'low' to 'high'"
    ]
    # A rule that no change touches stays open, with no explanation.
    open_rules = {f["rule"] for f in data["findings"]["open"]}
    assert "sensitive-column-without-business-attribute" in open_rules
    assert all(f["explanation"] == [] for f in data["findings"]["open"])

    # And back: the finding resolves, explained by the same tag changing back.
    third = write(engine, before)
    back = compute_diff(engine, second, third).to_json()
    (resolved,) = by_rule(back["findings"]["resolved"], HSWC)
    assert resolved["fingerprint"] == new["fingerprint"]
    assert [e["field"] for e in resolved["explanation"]] == ["tags.sensitivity"]
    assert (resolved["explanation"][0]["before"], resolved["explanation"][0]["after"]) == ("high", "low")


def test_a_move_explains_the_finding_in_both_clusters(engine, write, base):
    after = base()
    email = after[0][1].pop(0)  # sensitivity=high, leaves c1 (Confidential) for c2 (not Confidential)
    after[1][1].append(email)
    first, second = write(engine, base()), write(engine, after)
    data = compute_diff(engine, first, second).to_json()
    assert data["columns"]["moved"] == [
        {"column": "crm.public.users.email", "from_cluster": "c1", "to_cluster": "c2"}
    ]
    (new,) = by_rule(data["findings"]["new"], HSWC)
    assert (new["cluster_id"], new["column"]) == ("c2", "crm.public.users.email")
    assert new["explanation"] == [
        {
            "kind": "column_moved",
            "cluster_id": "c2",
            "column": "crm.public.users.email",
            "field": "cluster",
            "before": "c1",
            "after": "c2",
            "text": "column crm.public.users.email moved from cluster c1 to cluster c2",
        }
    ]


def test_column_added_and_removed_explain_new_and_resolved(engine, write, base, kit):
    after = base()
    after[1][1].append(kit.column("dwh.sales.orders.card", tags={"sensitivity": "high"}))
    first, second = write(engine, base()), write(engine, after)
    data = compute_diff(engine, first, second).to_json()
    (new,) = by_rule(data["findings"]["new"], HSWC)
    assert [(e["kind"], e["text"]) for e in new["explanation"]] == [
        ("column_added", "column dwh.sales.orders.card added to cluster c2")
    ]
    third = write(engine, base())
    back = compute_diff(engine, second, third).to_json()
    (resolved,) = by_rule(back["findings"]["resolved"], HSWC)
    assert [(e["kind"], e["column"]) for e in resolved["explanation"]] == [
        ("column_removed", "dwh.sales.orders.card")
    ]


def test_a_finding_about_the_whole_snapshot_is_explained_by_its_columns_in_any_cluster(
    engine, write, base, kit
):
    # Found by a probe: column-in-several-clusters (no cluster) always had an empty explanation
    after = base()
    after[1][1].append(kit.column("crm.public.users.email", tags={"sensitivity": "high"}))  # also in c2
    first, second = write(engine, base()), write(engine, after)
    data = compute_diff(engine, first, second).to_json()
    (new,) = by_rule(data["findings"]["new"], "column-in-several-clusters")
    assert new["cluster_id"] is None
    assert [(e["kind"], e["text"]) for e in new["explanation"]] == [
        ("column_added", "column crm.public.users.email added to cluster c2")
    ]
    back = compute_diff(engine, second, write(engine, base())).to_json()
    (resolved,) = by_rule(back["findings"]["resolved"], "column-in-several-clusters")
    assert [(e["kind"], e["cluster_id"]) for e in resolved["explanation"]] == [("column_removed", "c2")]


def test_cluster_severity_change_explains_a_cluster_finding(engine, write, base):
    after = base()
    after[0][0]["severity"] = "Low"  # c1 is labelled PII
    first, second = write(engine, base()), write(engine, after)
    data = compute_diff(engine, first, second).to_json()
    (new,) = by_rule(data["findings"]["new"], "pii-cluster-low-severity")
    assert new["column"] is None
    assert [(e["field"], e["before"], e["after"]) for e in new["explanation"]] == [
        ("severity", "High", "Low")
    ]


def test_findings_are_evaluated_on_demand_and_stored(engine, write, base):
    first, second = write(engine, base()), write(engine, base())
    compute_diff(engine, first, second)
    with engine.connect() as connection:
        runs = connection.execute(select(evaluations.c.run_id).order_by(evaluations.c.run_id)).scalars().all()
    assert runs == [first, second]
    compute_diff(engine, first, second)  # reused, not evaluated again
    with engine.connect() as connection:
        assert connection.execute(select(func.count()).select_from(evaluations)).scalar_one() == 2


def test_an_unchanged_catalog_has_only_open_findings(engine, write, base):
    first, second = write(engine, base()), write(engine, base())
    result = compute_diff(engine, first, second)
    assert result.empty
    summary = result.summary()["findings"]
    assert summary["open"] > 0
    assert {k: v for k, v in summary.items() if k != "open"} == {
        "new": 0,
        "resolved": 0,
        "newly_waived": 0,
        "waiver_expired": 0,
    }
    assert all(f.finding["status"] == "existing" for f in result.findings["open"])


def write_waiver(tmp_path, expires: date, column: str = "crm.public.users.email"):
    path = tmp_path / "waivers.yaml"
    path.write_text(
        "waivers:\n"
        "  - rule: sensitive-column-without-business-attribute\n"
        f"    column: {column}\n"
        "    reason: classification under review\n"
        "    owner: data-governance@example.com\n"
        f"    expires: {expires.isoformat()}\n",
        encoding="utf-8",
    )
    return path


def test_a_waiver_added_since_the_older_check_is_newly_waived(engine, write, base, tmp_path):
    rules = load_ruleset(None)
    first, second = write(engine, base()), write(engine, base())
    check_run(engine, first, rules, baseline="none")  # checked without waivers: the finding counted
    today = date.today()
    expires = (today + timedelta(days=30)).isoformat()
    waivers = load_waivers(write_waiver(tmp_path, today + timedelta(days=30)))
    data = compute_diff(engine, first, second, ruleset=rules, waivers=waivers, today=today).to_json()
    (item,) = data["findings"]["newly_waived"]
    assert (item["rule"], item["column"], item["status"]) == (
        "sensitive-column-without-business-attribute",
        "crm.public.users.email",
        "waived",
    )
    assert item["waiver"]["owner"] == "data-governance@example.com"
    assert item["waiver"]["expired"] is False
    assert item["explanation"] == [
        {
            "kind": "waiver_added",
            "cluster_id": "c1",
            "column": "crm.public.users.email",
            "field": "waiver",
            "before": None,
            "after": expires,
            "text": f"waived by data-governance@example.com through {expires}: classification under review",
        }
    ]
    assert data["findings"]["new"] == data["findings"]["resolved"] == []


def test_a_waiver_that_lapsed_between_the_runs_is_waiver_expired(engine, write, base, tmp_path):
    rules = load_ruleset(None)
    first, second = write(engine, base()), write(engine, base())
    today = date.today()
    waivers = load_waivers(write_waiver(tmp_path, today + timedelta(days=3)))
    check_run(engine, first, rules, waivers=waivers, baseline="none", today=today)  # waived then
    later = today + timedelta(days=10)
    data = compute_diff(engine, first, second, ruleset=rules, waivers=waivers, today=later).to_json()
    (item,) = data["findings"]["waiver_expired"]
    assert item["column"] == "crm.public.users.email"
    assert item["status"] == "existing"
    assert item["waiver"]["expired"] is True
    assert [e["kind"] for e in item["explanation"]] == ["waiver_expired"]
    assert item["explanation"][0]["text"] == (
        "the waiver by data-governance@example.com, valid through "
        f"{(today + timedelta(days=3)).isoformat()}, expired"
    )
    assert data["findings"]["newly_waived"] == []


def test_an_older_run_never_checked_gets_the_waivers_as_of_its_own_day(engine, write, base, tmp_path):
    rules = load_ruleset(None)
    first, second = write(engine, base()), write(engine, base())
    today = date.today()
    waivers = load_waivers(write_waiver(tmp_path, today + timedelta(days=3)))
    # Waived on the day run 1 was taken; expired by the day the diff is judged.
    data = compute_diff(
        engine, first, second, ruleset=rules, waivers=waivers, today=today + timedelta(days=10)
    ).to_json()
    assert [f["column"] for f in data["findings"]["waiver_expired"]] == ["crm.public.users.email"]
    # Judged today, it is waived in both runs: still open, nothing changed.
    same_day = compute_diff(engine, first, second, ruleset=rules, waivers=waivers, today=today).to_json()
    assert same_day["findings"]["waiver_expired"] == same_day["findings"]["newly_waived"] == []
    (still,) = [f for f in same_day["findings"]["open"] if f["status"] == "waived"]
    assert still["column"] == "crm.public.users.email"


def finding(fp, *, status="existing", waiver=None, rule="r", cluster="c1", column="s.t.a"):
    data = {
        "rule": rule,
        "severity": "high",
        "cluster_id": cluster,
        "column": column,
        "columns": [column] if column else [],
        "message": "m",
        "fingerprint": fp,
        "status": status,
        "first_seen_run": 1,
    }
    if waiver is not None:
        data["waiver"] = waiver
    return data


ACTIVE = {"reason": "r", "owner": "o", "expires": "2030-01-01", "expired": False}
EXPIRED = {"reason": "r", "owner": "o", "expires": "2020-01-01", "expired": True}


@pytest.mark.parametrize(
    ("before", "after", "category"),
    [
        (None, finding("f"), "new"),
        (finding("f"), None, "resolved"),
        (finding("f"), finding("f"), "open"),
        (None, finding("f", status="waived", waiver=ACTIVE), "newly_waived"),
        (finding("f"), finding("f", status="waived", waiver=ACTIVE), "newly_waived"),
        (finding("f", status="waived", waiver=ACTIVE), finding("f", status="waived", waiver=ACTIVE), "open"),
        (finding("f", status="waived", waiver=ACTIVE), finding("f", waiver=EXPIRED), "waiver_expired"),
        (finding("f", waiver=EXPIRED), finding("f", waiver=EXPIRED), "open"),
        (None, finding("f", waiver=EXPIRED), "new"),
        (finding("f", status="waived", waiver=ACTIVE), finding("f"), "open"),  # waiver deleted
    ],
)
def test_every_fingerprint_lands_in_exactly_one_category(before, after, category):
    result = diff_findings([before] if before else [], [after] if after else [], ChangeIndex(CatalogDiff()))
    assert {name: len(items) for name, items in result.items() if items} == {category: 1}


def test_a_custom_findings_source_plugs_in(engine, write, base):
    first, second = write(engine, base()), write(engine, base())
    calls = []

    def source(before, after):
        calls.append((before.id, after.id))
        return [finding("gone"), finding("kept")], [finding("kept"), finding("fresh", status="new")]

    result = compute_diff(engine, first, second, findings_source=source)
    assert calls == [(first, second)]
    assert {name: [f.finding["fingerprint"] for f in items] for name, items in result.findings.items()} == {
        "new": ["fresh"],
        "resolved": ["gone"],
        "open": ["kept"],
        "newly_waived": [],
        "waiver_expired": [],
    }


def python_reference_source(engine, rules, waivers, today):
    """The findings diff's inputs computed the plain way: both runs loaded whole into Python."""
    from auditor.engine import apply_waivers, findings_for_run

    def source(before, after):
        older = findings_for_run(engine, before, rules, allow_incomplete=True)  # as the diff accepted it
        for f in older:
            f.status = "new" if (f.first_seen_run or before.id) >= before.id else "existing"
        apply_waivers(older, waivers, before.started_at.date())
        newer = findings_for_run(engine, after, rules, allow_incomplete=True)
        seen = {f.fingerprint: f for f in older}
        for f in newer:
            previous = seen.get(f.fingerprint)
            f.status = "existing" if previous else "new"
            if previous is not None:
                f.first_seen_run = min(f.first_seen_run or after.id, previous.first_seen_run or before.id)
        apply_waivers(newer, waivers, today)
        return [f.to_json() for f in older], [f.to_json() for f in newer]

    return source


def drifted_pair(base, kit):
    before, after = base(), base()
    for catalog in (before, after):  # unchanged, with findings in both runs
        catalog[1][1].append(kit.column("dwh.sales.orders.phone", tags={"sensitivity": "high"}))
    after[0][0]["labels"] = ["PII"]
    after[0][0]["severity"] = "Low"
    after[1][1].append(after[0][1].pop(0))
    after[1][1].append(kit.column("dwh.sales.orders.card", tags={"sensitivity": "high"}))
    kit.find(after, "dwh.sales.orders.total")["tags"] = []
    return before, after


def test_the_sql_findings_diff_equals_the_plain_python_one(engine, write, base, kit, tmp_path):
    rules = load_ruleset(None)
    before, after = drifted_pair(base, kit)
    first, second = write(engine, before), write(engine, after)
    today = date.today()
    waivers = load_waivers(write_waiver(tmp_path, today + timedelta(days=3), column="dwh.sales.orders.*"))
    later = today + timedelta(days=10)
    stored = compute_diff(engine, first, second, ruleset=rules, waivers=waivers, today=later)
    plain = compute_diff(
        engine, first, second, findings_source=python_reference_source(engine, rules, waivers, later)
    )
    assert stored.to_json() == plain.to_json()
    summary = stored.summary()["findings"]
    assert summary["new"] > 0 and summary["resolved"] > 0 and summary["open"] > 0
    assert [f["column"] for f in stored.to_json()["findings"]["waiver_expired"]] == ["dwh.sales.orders.phone"]


def test_open_findings_are_streamed_sorted_and_counted(engine, write, base, kit):
    from auditor.diff import OpenFindings
    from auditor.diff.model import FindingDiff

    catalog = base()
    for i in range(40):  # enough open findings to span several rules, clusters and severities
        catalog[i % 2][1].append(kit.column(f"src.t.c{i:02d}", tags={"sensitivity": "high"}))
    first, second = write(engine, catalog), write(engine, catalog)
    result = compute_diff(engine, first, second)
    items = result.findings["open"]
    assert isinstance(items, OpenFindings)
    streamed = list(items)
    assert len(streamed) == len(items) > 40
    assert streamed == sorted(streamed, key=FindingDiff.sort_key)
    assert items[0] == streamed[0] and items[-1] == streamed[-1]
    assert all(f.finding["status"] == "existing" and f.finding["first_seen_run"] == first for f in streamed)


def test_the_report_variant_of_the_json_leaves_still_open_findings_out(engine, write, base):
    first, second = write(engine, base()), write(engine, base())
    result = compute_diff(engine, first, second)
    full, lean = result.to_json(), result.to_json(open_findings=False)
    assert len(full["findings"]["open"]) == full["summary"]["findings"]["open"] > 0
    assert lean["findings"]["open"] == []
    assert lean["summary"] == full["summary"]
    assert {k: v for k, v in lean.items() if k != "findings"} == {
        k: v for k, v in full.items() if k != "findings"
    }


def test_a_cluster_size_change_does_not_explain_a_column_finding(engine, write, base, kit):
    after = base()
    after[0][0]["size"] = 3  # c1's size changes along with the column that arrives
    after[0][1].append(kit.column("crm.public.users.phone", tags={"sensitivity": "high"}))
    after[0][0]["labels"] = ["PII"]
    first, second = write(engine, base()), write(engine, after)
    data = compute_diff(engine, first, second).to_json()
    phone = next(f for f in by_rule(data["findings"]["new"], HSWC) if f["column"] == "crm.public.users.phone")
    assert [(e["kind"], e["field"]) for e in phone["explanation"]] == [
        ("column_added", None),
        ("cluster_changed", "labels"),
    ]


@pytest.mark.parametrize("then", ["fail", "return"])
def test_a_run_deleted_while_the_diff_reads_it_is_the_error_reported(engine, write, base, then):
    # A prune in another process, committing between the diff's reads, gave an internal KeyError
    # on SQLite and, on PostgreSQL, once a wrong diff with exit 0.
    from auditor.errors import RunNotUsableError
    from auditor.store.retention import plan_prune, prune

    first, second = write(engine, base()), write(engine, base())

    def source(before, after):
        prune(engine, plan_prune(engine, keep=1))  # deletes the older run, `first`
        if then == "fail":
            raise KeyError(12345)  # what a read of its half-deleted rows ran into
        return [], []

    with pytest.raises(RunNotUsableError) as caught:
        compute_diff(engine, first, second, findings_source=source)
    assert caught.value.exit_code == 3
    assert caught.value.message == f"run {first} was deleted while the diff read it (by auditor db prune?)"


def test_with_clusters_left_out_whole_snapshot_findings_in_one_run_only_are_left_out_too():
    """A group of the whole snapshot may span the clusters left out, whose absence alone can make
    it pass or fail (a column's second cluster not fetched): such a finding that only one run has
    is neither resolved nor new. One both runs have is open as usual; without clusters left out,
    every one is compared."""
    gone = finding("gone", cluster=None, column=None)
    both = finding("both", cluster=None, column=None)
    appeared = finding("appeared", cluster=None, column=None, status="new")
    own = finding("c1-own")
    index = ChangeIndex(CatalogDiff())
    result = diff_findings([gone, both, own], [both, appeared], index, {"k5"})
    assert [f.finding["fingerprint"] for f in result["resolved"]] == ["c1-own"]
    assert result["new"] == []
    assert [f.finding["fingerprint"] for f in result["open"]] == ["both"]
    whole = diff_findings([gone, both, own], [both, appeared], index)
    assert sorted(f.finding["fingerprint"] for f in whole["resolved"]) == ["c1-own", "gone"]
    assert [f.finding["fingerprint"] for f in whole["new"]] == ["appeared"]
