"""Edges of the report's context and the diff's Markdown that a wrong implementation would pass
unnoticed elsewhere: changing them by hand (a move filed under the cluster it left, a group's total
taken from the rows shown, a section dropped, a row too many at the cap) left the other tests passing.
"""

from __future__ import annotations

import copy
import dataclasses

from auditor.diff import compute_diff
from auditor.diff.text import format_markdown
from auditor.render.context import build_context
from tests.diff.conftest import cluster, column, write_catalog
from tests.render.conftest import finding


def _groups(section):
    return [(g.cluster_id, g.total, [(r.kind, r.column, r.summary) for r in g.rows]) for g in section.groups]


def _with_diff(sample, **findings):
    diff = copy.deepcopy(sample.data.diff)
    diff["findings"].update(findings)
    return dataclasses.replace(sample.data, diff=diff)


def test_column_changes_are_grouped_by_cluster_and_a_move_under_the_cluster_it_joined(sample):
    columns = build_context(sample.data, max_rows=10).change_sections[1]
    assert (columns.key, columns.total, columns.counts) == (
        "columns",
        4,
        (("added", 1), ("removed", 1), ("changed", 1), ("moved", 1)),
    )
    assert _groups(columns) == [
        ("cluster-1", 1, [("added", "db.schema.table1.ssn", "source: db")]),
        (
            "cluster-2",
            2,
            [("removed", "db.schema.old.col", "source: db"), ("changed", "db.schema.table2.ssn", "dataType")],
        ),
        ("cluster-4", 1, [("moved", "db.schema.moved.col", "moved from cluster cluster-3")]),
    ]


def test_a_capped_group_says_how_many_changes_it_holds_not_how_many_it_shows(sample):
    columns = build_context(sample.data, max_rows=2).change_sections[1]
    assert [(g.cluster_id, g.total, len(g.rows)) for g in columns.groups] == [
        ("cluster-1", 1, 1),
        ("cluster-2", 2, 1),
    ]
    assert (columns.total, columns.shown, columns.more) == (4, 2, 2)


def test_a_changed_column_lists_its_fields_in_name_order(sample):
    data = copy.deepcopy(sample.data.diff)
    data["columns"]["changed"][0]["changes"] = {
        "dataType": {"before": "varchar", "after": "text"},
        "businessAttribute": {"before": None, "after": "SSN"},
    }
    context = build_context(dataclasses.replace(sample.data, diff=data), max_rows=10)
    (changed,) = [r for g in context.change_sections[1].groups for r in g.rows if r.kind == "changed"]
    assert [d.field for d in changed.details] == ["businessAttribute", "dataType"]


def test_waivers_expired_and_newly_waived_have_their_own_sections(sample):
    waiver = {"reason": "r", "owner": "o", "expires": "2026-12-01", "expired": True}
    data = _with_diff(
        sample,
        waiver_expired=[finding(20, waiver=waiver)],
        newly_waived=[
            finding(21, status="waived", waiver={**waiver, "expires": "2099-01-01", "expired": False})
        ],
    )
    sections = build_context(data, max_rows=10).finding_sections
    assert [(s.key, s.total) for s in sections] == [
        ("new", 4),
        ("resolved", 3),
        ("waiver_expired", 1),
        ("newly_waived", 1),
    ]


def test_the_new_card_is_a_warning_only_when_there_are_new_findings(sample):
    def new_card(data):
        (card,) = [c for c in build_context(data, max_rows=10).cards if c.key == "new"]
        return card.value, card.tone

    assert new_card(sample.data) == (4, "high")
    assert new_card(_with_diff(sample, new=[])) == (0, "good")


def test_markdown_moves_name_the_cluster_left_and_tables_stop_at_the_row_cap(tmp_path):
    from auditor.store.db import open_database

    engine = open_database(tmp_path / "md.db")
    before = write_catalog(
        engine, [(cluster("c1"), [column(f"crm.t.c{i}") for i in range(4)]), (cluster("c2"), [])]
    )
    after = write_catalog(
        engine,
        [(cluster("c1"), [column("crm.t.c0")]), (cluster("c2"), [column(f"crm.t.c{i}") for i in (1, 2, 3)])],
    )
    result = compute_diff(engine, before, after, findings=False)
    lines = format_markdown(result, max_rows=2).splitlines()
    rows = [line for line in lines if line.startswith("| moved")]
    assert rows == [
        "| moved | c2 | crm.t.c1 | from cluster c1 |",
        "| moved | c2 | crm.t.c2 | from cluster c1 |",
    ]
    assert "… and 1 more (the JSON format lists everything)." in lines
    engine.dispose()


def test_capped_changes_are_the_first_clusters_in_order_whatever_their_kind(sample):
    data = copy.deepcopy(sample.data.diff)
    data["columns"] = {
        "added": [{"cluster_id": "cluster-9", "column": "db.s.t.new", "source": "db"}],
        "removed": [{"cluster_id": "cluster-1", "column": "db.s.t.old", "source": "db"}],
        "changed": [],
        "moved": [],
    }
    columns = build_context(dataclasses.replace(sample.data, diff=data), max_rows=1).change_sections[1]
    assert _groups(columns) == [("cluster-1", 1, [("removed", "db.s.t.old", "source: db")])]
    assert columns.more == 1
