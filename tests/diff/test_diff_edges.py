"""Edges of the diff that a wrong implementation would pass unnoticed elsewhere.

Each test pins one behaviour a reader of the diff relies on that the other tests did not hold:
changing the diff by hand (the last duplicate kept instead of the first, an identifier fallback
dropped, a cap moved by one, a sort key swapped, a move read backwards) left them all passing.
"""

from __future__ import annotations

from datetime import date

import pytest

from auditor.diff import compute_diff
from auditor.diff.model import not_compared_note
from auditor.diff.text import format_text
from auditor.engine import check_run, load_ruleset, load_waivers
from tests.diff.conftest import base_catalog, cluster, column, find_column, write_catalog

WAIVER = {"owner": "o", "expires": "2099-01-01", "reason": "r", "expired": False}


def _diff(engine, before, after, **options):
    options.setdefault("findings", "findings_source" in options)
    return compute_diff(engine, write_catalog(engine, before), write_catalog(engine, after), **options)


def _changes(result):
    return [changed["changes"] for changed in result.to_json()["columns"]["changed"]]


def _finding(fingerprint, *, column=None, columns=(), status="new", waiver=None, severity="medium"):
    found = {
        "rule": "r",
        "severity": severity,
        "cluster_id": "c1",
        "column": column,
        "columns": list(columns),
        "message": "m",
        "fingerprint": fingerprint,
        "status": status,
        "first_seen_run": 1,
    }
    if waiver:
        found["waiver"] = waiver
    return found


def _texts(finding):
    return [item["text"] for item in finding["explanation"]]


def _explained(result, category, index=0):
    return _texts(result.to_json()["findings"][category][index])


def _one(fqn="crm.t.x", **fields):
    return [(cluster("c1"), [column(fqn, **fields)])]


# -- catalog changes ----------------------------------------------------------------------------------


def test_of_two_attributes_with_one_name_the_first_is_compared(engine):
    before = _one(attributes=[("Email", "High", 0.9), ("Email", "Low", 0.2)])
    after = _one(attributes=[("Email", "High", 0.9), ("Email", "Medium", 0.2)])
    assert _changes(_diff(engine, before, after)) == []


def test_every_attribute_added_is_listed(engine):
    after = _one(attributes=[("Email", "High", 0.9), ("Phone", "Low", 0.3)])
    assert _changes(_diff(engine, _one(), after)) == [
        {
            "attributes": {
                "before": [],
                "after": ["Email", "Phone"],
                "added": [
                    {"name": "Email", "rank": "High", "confidence": 0.9},
                    {"name": "Phone", "rank": "Low", "confidence": 0.3},
                ],
                "removed": [],
            }
        }
    ]


def test_an_added_cluster_lists_its_labels_sorted(engine):
    after = [*_one(), (cluster("c2", labels=["PII", "Confidential"]), [])]
    added = _diff(engine, _one(), after).to_json()["clusters"]["added"]
    assert [(c["cluster_id"], c["labels"]) for c in added] == [("c2", ["Confidential", "PII"])]


def test_an_attribute_known_by_its_original_name_is_the_same_attribute_under_a_new_id(engine):
    def known_as(attribute_id):
        record = column("crm.t.x")
        record["attributes"] = [
            {
                "attribute_original_name": "Email",
                "attribute_id": attribute_id,
                "rank": "High",
                "calc_confidence_level": 0.9,
            }
        ]
        return [(cluster("c1"), [record])]

    assert _changes(_diff(engine, known_as("id-1"), known_as("id-2"))) == []


def test_a_tag_without_a_name_is_known_by_its_id(engine):
    def tagged(value):
        record = column("crm.t.x")
        record["tags"] = [{"tagId": "t-sens", "valueId": "v", "tagValue": value}]
        return [(cluster("c1"), [record])]

    (change,) = _changes(_diff(engine, tagged("high"), tagged("low")))
    assert change["tags"]["changed"] == [{"tagName": "t-sens", "before": "high", "after": "low"}]


def test_tag_values_are_listed_with_a_missing_value_last_and_kept_apart_from_empty(engine):
    def valued(*values, data_type="varchar"):
        record = column("crm.t.x", dataType=data_type)
        record["tags"] = [{"tagName": "s", "tagId": "t", "tagValue": value} for value in values]
        return [(cluster("c1"), [record])]

    (change,) = _changes(_diff(engine, valued(None, "a"), valued()))
    pairs = [{"tagName": "s", "tagValue": "a"}, {"tagName": "s", "tagValue": None}]
    assert change["tags"]["before"] == change["tags"]["removed"] == pairs
    # a missing value in both runs is no change, whatever else changes
    assert _changes(_diff(engine, valued(None), valued(None, data_type="int"))) == [
        {"dataType": {"before": "varchar", "after": "int"}}
    ]


def test_changed_and_moved_columns_are_listed_in_a_fixed_order(engine):
    moved = _diff(
        engine,
        [(cluster("c1"), [column("crm.t.b")]), (cluster("c2"), [column("crm.t.a")]), (cluster("c3"), [])],
        [(cluster("c1"), []), (cluster("c2"), []), (cluster("c3"), [column("crm.t.a"), column("crm.t.b")])],
    )
    assert moved.to_json()["columns"]["moved"] == [
        {"column": "crm.t.a", "from_cluster": "c2", "to_cluster": "c3"},
        {"column": "crm.t.b", "from_cluster": "c1", "to_cluster": "c3"},
    ]
    assert format_text(moved).splitlines()[-2:] == [
        "  > crm.t.a  from c2 to c3",
        "  > crm.t.b  from c1 to c3",
    ]
    changed = _diff(
        engine,
        [(cluster("c1"), [column("crm.t.z")]), (cluster("c2"), [column("crm.t.a")])],
        [
            (cluster("c1"), [column("crm.t.z", dataType="int")]),
            (cluster("c2"), [column("crm.t.a", dataType="int")]),
        ],
    )
    assert [(c["cluster_id"], c["column"]) for c in changed.to_json()["columns"]["changed"]] == [
        ("c1", "crm.t.z"),
        ("c2", "crm.t.a"),
    ]


def test_tag_and_attribute_sentences_say_which_way_they_changed(engine):
    removed = format_text(_diff(engine, _one(tags={"s": "h"}), _one()))
    assert "      tag s='h' removed from column crm.t.x" in removed.splitlines()
    added = format_text(_diff(engine, _one(), _one(tags={"s": "h"}, attributes=[("Email", "High", 0.9)])))
    assert added.splitlines()[-2:] == [
        "      tag s='h' added to column crm.t.x",
        "      attribute 'Email' added to column crm.t.x",
    ]


def test_exactly_ten_clusters_not_compared_are_all_named_with_nothing_more():
    ids = [{"cluster_id": f"k{i}", "from": "complete", "to": "failed"} for i in range(10)]
    assert not_compared_note(ids, 7, 8) == (
        "10 clusters were not compared: not fetched in full in run 8 (k0, k1, k2, k3, k4, k5, k6, k7, k8, k9)"
    )


# -- findings and their explanations ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("added", "count", "last"),
    [
        (1, 1, "column crm.t.y0 added to cluster c1"),
        (10, 10, "column crm.t.y9 added to cluster c1"),  # ten listed in full
        (11, 10, "and 2 more changes"),  # nine, then the rest counted
    ],
)
def test_a_cluster_finding_is_explained_by_its_cluster_changes_up_to_ten(engine, added, count, last):
    after = [(cluster("c1"), [column("crm.t.x")] + [column(f"crm.t.y{i}") for i in range(added)])]
    result = _diff(engine, _one(), after, findings_source=lambda *_: ([], [_finding("k")]))
    explained = _explained(result, "new")
    assert (len(explained), explained[0], explained[-1]) == (
        count,
        "column crm.t.y0 added to cluster c1",
        last,
    )


def test_a_group_finding_is_explained_by_the_columns_it_lists(engine):
    result = _diff(
        engine,
        _one(),
        _one(dataType="int"),
        findings_source=lambda *_: ([], [_finding("g", columns=["crm.t.x"])]),
    )
    assert _explained(result, "new") == ["dataType of column crm.t.x changed from 'varchar' to 'int'"]


def test_every_change_of_a_column_explains_its_finding(engine):
    result = _diff(
        engine,
        _one(),
        _one(attributes=[("Email", "High", 0.9), ("Phone", "Low", 0.3)]),
        findings_source=lambda *_: ([], [_finding("k", column="crm.t.x")]),
    )
    assert _explained(result, "new") == [
        "attribute 'Email' added to column crm.t.x",
        "attribute 'Phone' added to column crm.t.x",
    ]


def test_a_finding_waived_since_is_explained_by_its_waiver_alone(engine):
    result = _diff(
        engine,
        _one(),
        _one(dataType="int"),
        findings_source=lambda *_: (
            [_finding("k", column="crm.t.x", status="existing")],
            [_finding("k", column="crm.t.x", status="waived", waiver=WAIVER)],
        ),
    )
    assert _explained(result, "newly_waived") == ["waived by o through 2099-01-01: r"]


def test_a_diff_whose_only_change_is_a_new_waiver_is_not_empty(engine):
    result = _diff(
        engine,
        _one(),
        _one(),
        findings_source=lambda *_: (
            [_finding("k", column="crm.t.x", status="existing")],
            [_finding("k", column="crm.t.x", status="waived", waiver=WAIVER)],
        ),
    )
    assert not result.empty
    assert "Newly waived findings (1)" in format_text(result).splitlines()


def test_new_findings_are_ordered_by_severity_whatever_its_case(engine):
    result = _diff(
        engine,
        _one(),
        _one(),
        findings_source=lambda *_: ([], [_finding("a", severity="low"), _finding("b", severity="HIGH")]),
    )
    assert [f["fingerprint"] for f in result.to_json()["findings"]["new"]] == ["b", "a"]


def test_a_move_explains_the_findings_it_resolves_in_the_cluster_left(engine):
    before = base_catalog()
    before[1][1].append(before[0][1].pop(0))  # the email column sits in c2 (not Confidential) first
    result = compute_diff(engine, write_catalog(engine, before), write_catalog(engine, base_catalog()))
    assert [(f["rule"], f["cluster_id"], _texts(f)) for f in result.to_json()["findings"]["resolved"]] == [
        (rule, "c2", ["column crm.public.users.email moved from cluster c2 to cluster c1"])
        for rule in ("high-sensitivity-without-confidential", "sensitive-column-without-business-attribute")
    ]


# -- findings from stored evaluations (the SQL path) --------------------------------------------------


def _waivers(write_to, expires: date):
    path = write_to / f"waivers-{expires}.yaml"
    path.write_text(
        "waivers:\n  - rule: sensitive-column-without-business-attribute\n"
        "    column: crm.public.users.email\n"
        f"    reason: r\n    owner: o\n    expires: {expires}\n"
    )
    return load_waivers(path)


def test_a_newly_waived_finding_keeps_the_change_that_made_it_with_its_waiver(engine, tmp_path):
    before = base_catalog()
    find_column(before, "crm.public.users.email")["tags"] = []
    result = compute_diff(
        engine,
        write_catalog(engine, before),
        write_catalog(engine, base_catalog()),
        ruleset=load_ruleset(None),
        waivers=_waivers(tmp_path, date(2099, 1, 1)),
    )
    assert [
        (f["rule"], [(item["kind"], item["text"]) for item in f["explanation"]])
        for f in result.to_json()["findings"]["newly_waived"]
    ] == [
        (
            "sensitive-column-without-business-attribute",
            [
                ("column_changed", "tag sensitivity='high' added to column crm.public.users.email"),
                ("waiver_added", "waived by o through 2099-01-01: r"),
            ],
        )
    ]


def test_an_expired_waiver_that_never_waived_the_finding_leaves_it_open(engine, tmp_path):
    rules = load_ruleset(None)
    before, after = write_catalog(engine, base_catalog()), write_catalog(engine, base_catalog())
    check_run(engine, before, rules, baseline="none")  # stored, unwaived
    result = compute_diff(engine, before, after, ruleset=rules, waivers=_waivers(tmp_path, date(2000, 1, 1)))
    assert result.to_json()["summary"]["findings"] == {
        "new": 0,
        "resolved": 0,
        "open": 1,
        "newly_waived": 0,
        "waiver_expired": 0,
    }


def test_a_resolved_finding_that_was_waived_shows_its_waiver(engine, tmp_path):
    rules = load_ruleset(None)
    waivers = _waivers(tmp_path, date(2099, 1, 1))
    before = write_catalog(engine, base_catalog())
    check_run(engine, before, rules, waivers=waivers, baseline="none")
    after = base_catalog()
    find_column(after, "crm.public.users.email")["tags"] = []
    result = compute_diff(engine, before, write_catalog(engine, after), ruleset=rules, waivers=waivers)
    (resolved,) = result.to_json()["findings"]["resolved"]
    assert (resolved["rule"], resolved["status"]) == ("sensitive-column-without-business-attribute", "waived")
    assert {k: resolved["waiver"][k] for k in ("reason", "owner", "expires", "expired")} == {
        "reason": "r",
        "owner": "o",
        "expires": "2099-01-01",
        "expired": False,
    }
