"""The catalog half of the diff: every kind of change, exactly, with its before and after."""

from __future__ import annotations

import json

import pytest

from auditor.diff import compute_diff, resolve_pair
from auditor.errors import ConfigError, RunNotUsableError

from .conftest import DIFF_KEYS


def diff_of(engine, write, before, after, **options):
    first = write(engine, before)
    second = write(engine, after)
    return compute_diff(engine, first, second, findings=False, **options)


def test_identical_runs_give_an_empty_diff(engine, write, base):
    result = diff_of(engine, write, base(), base())
    assert result.empty
    data = result.to_json()
    assert data["clusters"] == {"added": [], "removed": [], "changed": []}
    assert data["columns"] == {"added": [], "removed": [], "changed": [], "moved": []}
    assert data["summary"]["columns"] == {"added": 0, "removed": 0, "changed": 0, "moved": 0}


def test_a_run_diffed_with_itself_is_empty(engine, write, base):
    run = write(engine, base())
    assert compute_diff(engine, run, run, findings=False).empty


def test_cluster_added_and_removed_with_their_fields(kit, engine, write, base):
    after = base()
    removed = after.pop(1)
    after.append(
        (
            kit.cluster("c9", labels=["Confidential", "PII"], name="payroll", size=1, severity="Critical"),
            [kit.column("hr.pay.salary.amount")],
        )
    )
    data = diff_of(engine, write, base(), after).to_json()
    assert data["clusters"]["added"] == [
        {
            "cluster_id": "c9",
            "name": "payroll",
            "size": 1,
            "severity": "Critical",
            "status": "Active",
            "labels": ["Confidential", "PII"],
        }
    ]
    assert data["clusters"]["removed"] == [
        {
            "cluster_id": "c2",
            "name": "cluster c2",
            "size": 2,
            "severity": "Low",
            "status": "Active",
            "labels": ["Analytics"],
        }
    ]
    assert data["clusters"]["changed"] == []
    # The columns of a removed cluster are removed, those of an added cluster are added.
    assert [(c["cluster_id"], c["column"]) for c in data["columns"]["removed"]] == [
        ("c2", c["fullyQualifiedName"]) for c in sorted(removed[1], key=lambda c: c["fullyQualifiedName"])
    ]
    assert [(c["cluster_id"], c["column"]) for c in data["columns"]["added"]] == [
        ("c9", "hr.pay.salary.amount")
    ]


def test_every_cluster_field_change_is_reported_as_before_and_after(engine, write, base):
    after = base()
    after[0][0].update(
        name="customers", size=3, severity="Medium", status="Archived", labels=["PII", "Reviewed"]
    )
    data = diff_of(engine, write, base(), after).to_json()
    assert data["clusters"]["changed"] == [
        {
            "cluster_id": "c1",
            "changes": {
                "name": {"before": "cluster c1", "after": "customers"},
                "labels": {
                    "before": ["Confidential", "PII"],
                    "after": ["PII", "Reviewed"],
                    "added": ["Reviewed"],
                    "removed": ["Confidential"],
                },
                "severity": {"before": "High", "after": "Medium"},
                "status": {"before": "Active", "after": "Archived"},
                "size": {"before": 2, "after": 3},
            },
        }
    ]
    assert data["columns"] == {"added": [], "removed": [], "changed": [], "moved": []}


def test_label_order_alone_is_not_a_change(engine, write, base):
    after = base()
    after[0][0]["labels"] = ["Confidential", "PII"]  # was PII, Confidential: new hash, same set
    assert diff_of(engine, write, base(), after).empty


def test_column_added_and_removed_carry_fields_tags_and_attributes(kit, engine, write, base):
    after = base()
    after[0][1].pop(0)  # crm.public.users.email
    after[1][1].append(
        kit.column(
            "dwh.sales.orders.iban",
            tags={"sensitivity": "high", "pii": "true"},
            attributes=[("IBAN", "High", 0.97)],
            businessAttribute="Bank account",
        )
    )
    data = diff_of(engine, write, base(), after).to_json()
    assert data["columns"]["removed"] == [
        {
            "cluster_id": "c1",
            "column": "crm.public.users.email",
            "columnName": "email",
            "tableName": "public.users",
            "source": "crm",
            "dataType": "varchar",
            "isPrimary": False,
            "businessAttribute": None,
            "tags": [{"tagName": "sensitivity", "tagValue": "high"}],
            "attributes": [{"name": "Email", "rank": "High", "confidence": 0.9}],
        }
    ]
    assert data["columns"]["added"] == [
        {
            "cluster_id": "c2",
            "column": "dwh.sales.orders.iban",
            "columnName": "iban",
            "tableName": "sales.orders",
            "source": "dwh",
            "dataType": "varchar",
            "isPrimary": False,
            "businessAttribute": "Bank account",
            "tags": [{"tagName": "pii", "tagValue": "true"}, {"tagName": "sensitivity", "tagValue": "high"}],
            "attributes": [{"name": "IBAN", "rank": "High", "confidence": 0.97}],
        }
    ]
    assert data["columns"]["moved"] == []


def test_every_column_field_change_is_reported(kit, engine, write, base):
    after = base()
    kit.find(after, "crm.public.users.id").update(
        dataType="bigint",
        isPrimary=False,
        businessAttribute="Customer id",
        tableName="public.customers",
        source="crm2",
        columnName="ID",
    )
    data = diff_of(engine, write, base(), after).to_json()
    assert data["columns"]["changed"] == [
        {
            "cluster_id": "c1",
            "column": "crm.public.users.id",
            "changes": {
                "columnName": {"before": "id", "after": "ID"},
                "tableName": {"before": "public.users", "after": "public.customers"},
                "source": {"before": "crm", "after": "crm2"},
                "dataType": {"before": "int", "after": "bigint"},
                "isPrimary": {"before": True, "after": False},
                "businessAttribute": {"before": None, "after": "Customer id"},
            },
        }
    ]


def test_tags_added_removed_and_changed_in_value(kit, engine, write, base):
    after = base()
    email = kit.find(after, "crm.public.users.email")
    email["tags"] = [
        {"tagName": "sensitivity", "tagValue": "medium"},
        {"tagName": "owner", "tagValue": "crm-team"},
    ]
    total = kit.find(after, "dwh.sales.orders.total")
    total["tags"] = []
    data = diff_of(engine, write, base(), after).to_json()
    changed = {(c["cluster_id"], c["column"]): c["changes"] for c in data["columns"]["changed"]}
    assert changed[("c1", "crm.public.users.email")] == {
        "tags": {
            "before": [{"tagName": "sensitivity", "tagValue": "high"}],
            "after": [
                {"tagName": "owner", "tagValue": "crm-team"},
                {"tagName": "sensitivity", "tagValue": "medium"},
            ],
            "added": [{"tagName": "owner", "tagValue": "crm-team"}],
            "removed": [],
            "changed": [{"tagName": "sensitivity", "before": "high", "after": "medium"}],
        }
    }
    assert changed[("c2", "dwh.sales.orders.total")] == {
        "tags": {
            "before": [{"tagName": "sensitivity", "tagValue": "low"}],
            "after": [],
            "added": [],
            "removed": [{"tagName": "sensitivity", "tagValue": "low"}],
            "changed": [],
        }
    }


def test_a_tag_name_gaining_a_second_value_is_an_addition_not_a_change(kit, engine, write, base):
    after = base()
    kit.find(after, "crm.public.users.email")["tags"].append({"tagName": "sensitivity", "tagValue": "low"})
    (change,) = diff_of(engine, write, base(), after).to_json()["columns"]["changed"]
    assert change["changes"]["tags"]["added"] == [{"tagName": "sensitivity", "tagValue": "low"}]
    assert change["changes"]["tags"]["changed"] == []


def test_attributes_added_removed_and_rank_changes(kit, engine, write, base):
    after = base()
    ssn = kit.find(after, "dwh.sales.orders.ssn")
    ssn["attributes"] = [
        {"attribute_name": "SSN", "rank": "High", "calc_confidence_level": 0.6},
        {"attribute_name": "Phone", "rank": "Low", "calc_confidence_level": 0.3},
    ]
    kit.find(after, "crm.public.users.email")["attributes"] = []
    data = diff_of(engine, write, base(), after).to_json()
    changed = {c["column"]: c["changes"] for c in data["columns"]["changed"]}
    assert changed["dwh.sales.orders.ssn"] == {
        "attributes": {
            "before": ["SSN"],
            "after": ["Phone", "SSN"],
            "added": [{"name": "Phone", "rank": "Low", "confidence": 0.3}],
            "removed": [],
        },
        "rank": {"before": {"SSN": "Medium"}, "after": {"SSN": "High"}},
    }
    assert changed["crm.public.users.email"] == {
        "attributes": {
            "before": ["Email"],
            "after": [],
            "added": [],
            "removed": [{"name": "Email", "rank": "High", "confidence": 0.9}],
        }
    }


@pytest.mark.parametrize(
    ("after", "threshold", "reported"),
    [
        (0.66, 0.05, True),  # moved by 0.06
        (0.64, 0.05, False),  # by 0.04
        (0.65, 0.05, False),  # exactly the threshold: not beyond it (float noise ignored)
        (0.55, 0.05, False),  # exactly the threshold downwards
        (0.54, 0.05, True),
        (0.64, 0.01, True),  # a stricter threshold reports it
        (0.9, 0.5, False),
        (None, 0.05, True),  # a confidence that vanished
    ],
)
def test_confidence_changes_are_reported_only_beyond_the_threshold(
    kit, engine, write, base, after, threshold, reported
):
    new = base()
    kit.find(new, "dwh.sales.orders.ssn")["attributes"][0]["calc_confidence_level"] = after
    data = diff_of(engine, write, base(), new, confidence_threshold=threshold).to_json()
    expected = (
        [
            {
                "cluster_id": "c2",
                "column": "dwh.sales.orders.ssn",
                "changes": {"confidence": {"before": {"SSN": 0.6}, "after": {"SSN": after}}},
            }
        ]
        if reported
        else []
    )
    assert data["columns"]["changed"] == expected


def test_a_change_in_an_uncompared_raw_field_is_not_reported(kit, engine, write, base):
    after = base()
    kit.find(after, "crm.public.users.id")["undocumentedField"] = "new"
    after[0][0]["createdAt"] = "2026-01-01T00:00:00Z"
    assert diff_of(engine, write, base(), after).empty


def test_a_column_that_changed_cluster_is_one_move(engine, write, base):
    after = base()
    moved = after[1][1].pop(0)  # dwh.sales.orders.total leaves c2 ...
    after[0][1].append(moved)  # ... and appears in c1
    data = diff_of(engine, write, base(), after).to_json()
    assert data["columns"] == {
        "added": [],
        "removed": [],
        "changed": [],
        "moved": [{"column": "dwh.sales.orders.total", "from_cluster": "c2", "to_cluster": "c1"}],
    }
    assert data["summary"]["columns"] == {"added": 0, "removed": 0, "changed": 0, "moved": 1}


def test_a_column_that_moved_and_changed_is_a_move_plus_a_change_under_its_new_cluster(engine, write, base):
    after = base()
    moved = after[1][1].pop(0)
    moved["tags"][0]["tagValue"] = "high"
    after[0][1].append(moved)
    data = diff_of(engine, write, base(), after).to_json()
    assert data["columns"]["moved"] == [
        {"column": "dwh.sales.orders.total", "from_cluster": "c2", "to_cluster": "c1"}
    ]
    assert data["columns"]["changed"] == [
        {
            "cluster_id": "c1",
            "column": "dwh.sales.orders.total",
            "changes": {
                "tags": {
                    "before": [{"tagName": "sensitivity", "tagValue": "low"}],
                    "after": [{"tagName": "sensitivity", "tagValue": "high"}],
                    "added": [],
                    "removed": [],
                    "changed": [{"tagName": "sensitivity", "before": "low", "after": "high"}],
                }
            },
        }
    ]
    assert data["columns"]["added"] == data["columns"]["removed"] == []


@pytest.mark.parametrize(
    ("before", "after", "moved", "added", "removed"),
    [
        # in X and Y, then in Y and Z: it left X and arrived in Z, one move
        (
            {"X": ["s.t.a"], "Y": ["s.t.a"], "Z": []},
            {"X": [], "Y": ["s.t.a"], "Z": ["s.t.a"]},
            [("X", "Z")],
            [],
            [],
        ),
        # stays in X and also appears in Z: an addition, not a move
        ({"X": ["s.t.a"], "Z": []}, {"X": ["s.t.a"], "Z": ["s.t.a"]}, [], ["Z"], []),
        # left X and Y, arrived in Z only: X->Z pairs in cluster order, Y is a removal
        (
            {"X": ["s.t.a"], "Y": ["s.t.a"], "Z": []},
            {"X": [], "Y": [], "Z": ["s.t.a"]},
            [("X", "Z")],
            [],
            ["Y"],
        ),
        # left X, arrived in Y and Z: X->Y pairs first, Z is an addition
        (
            {"X": ["s.t.a"], "Y": [], "Z": []},
            {"X": [], "Y": ["s.t.a"], "Z": ["s.t.a"]},
            [("X", "Y")],
            ["Z"],
            [],
        ),
        # swapped between two pairs of clusters: two moves, paired in cluster order
        (
            {"A": ["s.t.a"], "B": ["s.t.a"], "C": [], "D": []},
            {"A": [], "B": [], "C": ["s.t.a"], "D": ["s.t.a"]},
            [("A", "C"), ("B", "D")],
            [],
            [],
        ),
    ],
)
def test_a_column_in_several_clusters_pairs_departures_with_arrivals(
    kit, engine, write, before, after, moved, added, removed
):
    data = diff_of(engine, write, kit.memberships(before), kit.memberships(after)).to_json()["columns"]
    assert [(m["from_cluster"], m["to_cluster"]) for m in data["moved"]] == moved
    assert [c["cluster_id"] for c in data["added"]] == added
    assert [c["cluster_id"] for c in data["removed"]] == removed


def test_the_json_has_exactly_the_contract_keys(kit, engine, write, base):
    after = base()
    after[0][0]["severity"] = "Low"
    after[1][1].append(kit.column("dwh.sales.orders.new"))
    after[0][1].append(after[1][1].pop(0))
    kit.find(after, "crm.public.users.id")["dataType"] = "text"
    data = diff_of(engine, write, base(), after).to_json()
    assert list(data) == DIFF_KEYS
    assert list(data["clusters"]) == ["added", "removed", "changed"]
    assert list(data["columns"]) == ["added", "removed", "changed", "moved"]
    assert list(data["findings"]) == ["new", "resolved", "open", "newly_waived", "waiver_expired"]
    assert set(data["clusters"]["changed"][0]) == {"cluster_id", "changes"}
    assert set(data["clusters"]["changed"][0]["changes"]["severity"]) == {"before", "after"}
    assert set(data["columns"]["changed"][0]) == {"cluster_id", "column", "changes"}
    assert {"cluster_id", "column"} <= set(data["columns"]["added"][0])
    assert set(data["columns"]["moved"][0]) == {"column", "from_cluster", "to_cluster"}
    assert data["summary"] == {
        "clusters": {"added": 0, "removed": 0, "changed": 1},
        "columns": {"added": 1, "removed": 0, "changed": 1, "moved": 1},
        "findings": {"new": 0, "resolved": 0, "open": 0, "newly_waived": 0, "waiver_expired": 0},
        "not_compared": 0,
    }
    assert data["not_compared"] == []  # both runs were fetched in full
    json.dumps(data)  # plain JSON types only


def test_everything_is_sorted_deterministically(kit, engine, write):
    before = kit.memberships({"b": ["z.t.1", "a.t.1"], "a": ["m.t.1"]})
    after = kit.memberships({"c": ["y.t.1", "b.t.1"], "a": ["n.t.1", "c.t.1"]})
    data = diff_of(engine, write, before, after).to_json()
    assert [(c["cluster_id"], c["column"]) for c in data["columns"]["added"]] == [
        ("a", "c.t.1"),
        ("a", "n.t.1"),
        ("c", "b.t.1"),
        ("c", "y.t.1"),
    ]
    assert [(c["cluster_id"], c["column"]) for c in data["columns"]["removed"]] == [
        ("a", "m.t.1"),
        ("b", "a.t.1"),
        ("b", "z.t.1"),
    ]
    assert [c["cluster_id"] for c in data["clusters"]["added"]] == ["c"]
    again = compute_diff(engine, data["from_run"], data["to_run"], findings=False).to_json()
    assert json.dumps(again) == json.dumps(data)


def test_default_runs_are_the_two_newest_complete_ones(engine, write, base):
    first = write(engine, base())
    second = write(engine, base())
    write(engine, base(), complete=False)  # a failed run is never a default
    before, after = resolve_pair(engine)
    assert (before.id, after.id) == (first, second)
    result = compute_diff(engine, findings=False)
    assert (result.from_run, result.to_run) == (first, second)
    third = write(engine, base())
    assert [r.id for r in resolve_pair(engine, to_run=third)] == [second, third]
    assert [r.id for r in resolve_pair(engine, from_run=first)] == [first, third]


def test_incomplete_runs_are_refused_unless_allowed(engine, write, base):
    good = write(engine, base())
    failed = write(engine, base(), complete=False)
    with pytest.raises(RunNotUsableError, match=f"run {failed} is failed, not complete"):
        compute_diff(engine, good, failed, findings=False)
    with pytest.raises(RunNotUsableError, match=f"run {failed} is failed, not complete"):
        compute_diff(engine, failed, good, findings=False)
    assert compute_diff(engine, good, failed, findings=False, allow_incomplete=True).empty


def test_missing_runs_and_a_lone_run_are_refused(engine, write, base):
    with pytest.raises(RunNotUsableError, match="there is no complete run in this database yet"):
        compute_diff(engine, findings=False)
    only = write(engine, base())
    with pytest.raises(RunNotUsableError, match=f"there is no complete run before run {only}"):
        compute_diff(engine, findings=False)
    with pytest.raises(RunNotUsableError, match="run 42 does not exist"):
        compute_diff(engine, 42, only, findings=False)


def test_a_threshold_outside_zero_to_one_is_a_usage_error(engine, write, base):
    write(engine, base())
    write(engine, base())
    with pytest.raises(ConfigError, match=r"--threshold 1\.5 is outside 0\.\.1"):
        compute_diff(engine, findings=False, confidence_threshold=1.5)


def test_only_changed_memberships_leave_the_database(kit, engine, write):
    """The anti-join returns changed rows only, however large the unchanged rest is."""
    from auditor.diff.catalog import _unmatched

    before = kit.memberships({f"c{c}": [f"s.t{c}.col{i}" for i in range(200)] for c in range(10)})
    after = kit.memberships({f"c{c}": [f"s.t{c}.col{i}" for i in range(200)] for c in range(10)})
    kit.find(after, "s.t3.col7")["dataType"] = "int"  # changed
    after[4][1].append(after[5][1].pop(0))  # moved
    after[6][1].pop()  # removed
    first, second = write(engine, before), write(engine, after)
    with engine.connect() as connection:
        older = sorted(key for key, _hash in _unmatched(connection, first, second))
        newer = sorted(key for key, _hash in _unmatched(connection, second, first))
    assert older == [("c3", "s.t3.col7"), ("c5", "s.t5.col0"), ("c6", "s.t6.col199")]
    assert newer == [("c3", "s.t3.col7"), ("c4", "s.t5.col0")]
