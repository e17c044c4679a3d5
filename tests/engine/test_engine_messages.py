"""Message templates: the prepared (bound) renderer of the hot path says exactly what render_message says."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from auditor.engine.rules import bind_message, render_message, show_value

ROW = ["column.fullyQualifiedName", "column.columnName"]
NAMES = [*ROW, "cluster.name", "cluster.labels", "rule.id", "rule.severity", "unknown.thing"]
VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.text(alphabet="ab{}() ,é<", max_size=6),
    st.lists(st.text(alphabet="xy{}", max_size=3), max_size=3),
)
PIECE = st.one_of(
    st.sampled_from(["{{", "}}", " ", "text", "{", "}", "é"]),
    st.sampled_from(NAMES).map(lambda name: "{" + name + "}"),
)


@given(
    template=st.lists(PIECE, max_size=8).map("".join),
    row=st.tuples(VALUES, VALUES),
    cluster=st.fixed_dictionaries({"cluster.name": VALUES, "cluster.labels": VALUES}),
    constants=st.fixed_dictionaries(
        {"rule.id": st.text(alphabet="r-{}", max_size=5), "rule.severity": VALUES}
    ),
)
def test_bound_message_renders_like_render_message(template, row, cluster, constants):
    bound = bind_message(template, ROW, constants)
    expected = render_message(template, dict(zip(ROW, row, strict=True)), cluster, constants)
    assert bound.render(cluster, row) == expected
    fmt = bound.format_for(cluster)
    assert fmt.format(*[show_value(row[i]) for i in bound.row_positions]) == expected


def test_bound_message_example():
    bound = bind_message(
        "{column.columnName} in {cluster.name} breaks {rule.id} {{literal}}", ROW, {"rule.id": "r-1"}
    )
    assert bound.row_positions == (1,)
    fmt = bound.format_for({"cluster.name": "Pay{roll}"})
    assert fmt == "{0} in Pay{{roll}} breaks r-1 {{literal}}"
    assert fmt.format("ssn") == "ssn in Pay{roll} breaks r-1 {literal}"


GROUP_RULES = """
rules:
  - id: names-in-sources
    title: t
    description: d
    severity: low
    scope: aggregate
    aggregate: {per: cluster, group_by: columnName, having: {distinct: source, gte: 2}}
    message: "GROUP|{cluster.name}|{cluster.labels}|{rule.id} {{x}}"
    remediation: r
  - id: fqn-in-clusters
    title: t
    description: d
    severity: low
    scope: aggregate
    aggregate: {per: snapshot, group_by: fullyQualifiedName, having: {distinct: cluster.id, gte: 2}}
    message: "GROUP|{rule.severity}"
    remediation: r
""".replace(
    "GROUP", "{group.key}|{group.value}|{group.count}|{group.distinct}|{group.columns}|{group.clusters}"
)


def test_group_messages_fill_every_placeholder(engine, snapshot, write):
    from auditor.engine import evaluate, load_ruleset

    many = [
        {"fullyQualifiedName": f"s{i}.t.email", "columnName": "Email ", "source": f"s{i}"} for i in range(22)
    ]
    run_id = snapshot(
        engine,
        [
            {"id": "c-1", "name": "Pay{roll}", "labels": ["PII", "HR"], "columns": many},
            {"id": "c-2", "name": "Other", "columns": [{"fullyQualifiedName": "s3.t.email", "source": "s3"}]},
        ],
    )
    found = evaluate(engine, run_id, load_ruleset([write("g.yaml", GROUP_RULES)]))
    messages = {f.rule: f.message for f in found}
    listed = ", ".join(sorted(c["fullyQualifiedName"] for c in many)[:20])
    assert messages["names-in-sources"] == (
        f"email|Email|22|22|{listed} … and 2 more|c-1|Pay{{roll}}|PII, HR|names-in-sources {{x}}"
    )
    assert messages["fqn-in-clusters"] == "s3.t.email|s3.t.email|2|2|s3.t.email|c-1, c-2|low"
    assert {(f.rule, f.cluster_id, len(f.columns)) for f in found} == {
        ("names-in-sources", "c-1", 22),
        ("fqn-in-clusters", None, 1),
    }


def test_a_boolean_group_key_reads_as_its_value_does(engine, snapshot, write):
    # {group.key} read "True" where {group.value} and {column.isPrimary} read "true"; the same
    # text went into the group's fingerprint.
    from auditor.engine import evaluate, load_ruleset
    from auditor.engine.findings import KIND_GROUP, fingerprint_prefix, fingerprint_with

    rules = write(
        "b.yaml",
        """\
rules:
  - id: keys-in-sources
    title: t
    description: d
    severity: low
    scope: aggregate
    aggregate: {per: cluster, group_by: isPrimary, having: {distinct: source, gte: 2}}
    message: "key={group.key} value={group.value}"
    remediation: r
""",
    )
    columns = [{"fullyQualifiedName": f"s{i}.t.id", "source": f"s{i}", "isPrimary": True} for i in range(2)]
    run_id = snapshot(engine, [{"id": "c-1", "columns": columns}])
    (found,) = evaluate(engine, run_id, load_ruleset([rules]))
    assert found.message == "key=true value=true"
    assert found.fingerprint == fingerprint_with(
        fingerprint_prefix("keys-in-sources", KIND_GROUP), "c-1", "true"
    )
