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
