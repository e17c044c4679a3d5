"""Property tests: for random catalogs and random rules, the compiled SQL finds what the docs say.

Hypothesis draws a small catalog in BigID's wire format (1-4 clusters of 0-6 columns, with random
labels, severities, sizes, tags and attributes; missing, null, blank and duplicate values, mixed
case and surrounding spaces) and random rules: condition trees up to three levels deep over every
field and operator, ``tags``/``attributes``/``columns`` quantifiers in their any/all/none and
counting forms, and aggregate rules. Each rule is rendered to YAML, loaded by the real loader,
evaluated by the real compiler on a snapshot written by the real writer, and its findings are
compared with :mod:`tests.engine.reference`, a plain-Python evaluator written from docs/rules.md.

Text values come from a small ASCII alphabet (upper and lower case, space, ``%``, ``_``, a digit) so
that case folding, trimming, substrings and LIKE-wildcard lookalikes are all exercised, and SQLite's
ASCII-only case folding agrees with ``str.lower()``. The same properties run on PostgreSQL, with
fewer examples, when ``AUDITOR_TEST_POSTGRES_URL`` is set.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine

from auditor.engine.evaluate import evaluate_rule, prepare_connection
from auditor.engine.rules import load_ruleset
from auditor.store.db import open_database
from tests.engine import reference as ref
from tests.engine.conftest import write_snapshot

# -- catalogs ------------------------------------------------------------------------------------

ALPHABET = "aAb %_1"
# Text values: a few spellings of the same words (case, surrounding spaces, blanks, LIKE wildcards)
# weighted so that equal-ignoring-case values meet often, then every string of up to two characters.
CORE = ("a", "A", " a", "a ", "b", "B", "ab", "aB", "a%", "_b", "%", "_", "", " ", "1", "a b")
SHORT = tuple(sorted({x + y for x in ("", *ALPHABET) for y in ("", *ALPHABET)}))
TEXTS = CORE * 3 + SHORT
FQNS = ("a.b.c", "A.b.c", "a.b.c ", "x_y.%", "a", "b a")
CLUSTER_IDS = ("c1", "C1", "c2", "c 3")
SIZES = (0, 1, 2, 3, 5)
CONFIDENCES = (0, 0.5, 0.9, 0.95, 1.0)
MISSING = object()  # the key is left out of the record altogether

texts = st.sampled_from(TEXTS)


def maybe(*values: Any) -> st.SearchStrategy[Any]:
    """One of ``values``, null, or no key at all (the store reads both as missing)."""
    choices = values
    return st.sampled_from((*choices, *((None, MISSING) * max(1, len(choices) // 6))))


def record(fields: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in fields.items() if value is not MISSING}


# Few spellings of two words, for the aggregate tests: groups of several columns become common.
NARROW = ("a", "A", " a ", "b", "B", "")
BOOLEANS = (True, False)
TAG_NAMES = ("sensitivity", "Sensitivity", " sensitivity", "a", "A ")
TAG_VALUES = ("high", "HIGH", "High ", "low", *CORE)


@st.composite
def tag_records(draw) -> dict[str, Any]:
    tag = {
        "tagName": draw(maybe(*TAG_NAMES)),
        "tagValue": draw(maybe(*TAG_VALUES)),
        "tagId": draw(maybe(*CORE)),
        "valueId": draw(maybe(*CORE)),
        "isMutuallyExclusive": draw(maybe(*BOOLEANS)),
    }
    properties = draw(st.sampled_from(("none", "missing", "some", "some")))
    if properties == "none":
        tag["properties"] = None
    elif properties == "some":
        tag["properties"] = record({"hidden": draw(maybe(*BOOLEANS)), "applicationType": draw(maybe(*CORE))})
    return record(tag)


@st.composite
def attribute_records(draw) -> dict[str, Any]:
    return record(
        {
            "attribute_name": draw(maybe("SSN", "ssn", " Email", *CORE)),
            "attribute_original_name": draw(maybe(*CORE)),
            "rank": draw(maybe("High", "high", "Low", *CORE)),
            "calc_confidence_level": draw(maybe(*CONFIDENCES)),
            "attribute_type": draw(maybe(*CORE)),
            "attribute_id": draw(maybe(*CORE)),
        }
    )


@st.composite
def column_records(draw, fqn: str, words: tuple[str, ...]) -> dict[str, Any]:
    return record(
        {
            "fullyQualifiedName": fqn,
            "columnName": draw(maybe(*words)),
            "source": draw(maybe(*words)),
            "tableName": draw(maybe(*words)),
            "dataType": draw(maybe(*words)),
            "isPrimary": draw(maybe(*BOOLEANS)),
            "businessAttribute": draw(maybe(*words)),
            "tags": draw(st.lists(tag_records(), max_size=3)),
            "attributes": draw(st.lists(attribute_records(), max_size=3)),
        }
    )


@st.composite
def catalogs(draw, words: tuple[str, ...] = TEXTS) -> list[dict[str, Any]]:
    """Clusters of columns whose text fields are drawn from ``words`` (fewer words: more groups)."""
    clusters = []
    for cluster_id in draw(st.lists(st.sampled_from(CLUSTER_IDS), min_size=1, max_size=4, unique=True)):
        fqns = draw(st.lists(st.sampled_from(FQNS), max_size=6, unique=True))
        cluster = record(
            {
                "id": cluster_id,
                "name": draw(maybe(*words)),
                "size": draw(maybe(*SIZES)),
                "labels": draw(st.lists(texts, max_size=3)),
                "severity": draw(maybe("High", "low", "LOW ", *CORE)),
                "status": draw(maybe(*words)),
            }
        )
        cluster["columns"] = [draw(column_records(fqn, words)) for fqn in fqns]
        clusters.append(cluster)
    return clusters


# -- rules ---------------------------------------------------------------------------------------

# Safe, portable patterns (Python `re` on SQLite, `~`/`~*` on PostgreSQL must agree on them).
PATTERNS = ("a", "A", "^a", "a$", "^a$", "b.", "[ab]", "%", "_", " ", "^$", "a|b", "a*b", "^ ", "1$")
PATTERNS += ("^(a|b)", "a.?b", "^[^a]*$")

OPS = {
    ref.TEXT: (
        "eq",
        "ne",
        "in",
        "not_in",
        "contains",
        "not_contains",
        "matches",
        "exists",
        "absent",
        "empty",
    ),
    ref.NUMBER: ("eq", "ne", "in", "not_in", "gt", "gte", "lt", "lte", "exists", "absent"),
    ref.BOOLEAN: ("eq", "ne", "exists", "absent"),
    ref.LIST: ("eq", "ne", "in", "not_in", "contains", "not_contains", "matches", "exists", "empty"),
}

LEVEL_FIELDS: dict[str, dict[str, str]] = {
    "column": {name: kind for name, (kind, _) in {**ref.COLUMN_FIELDS, **ref.CLUSTER_FIELDS}.items()},
    "cluster": {name: kind for name, (kind, _) in ref.CLUSTER_FIELDS.items()},
    "tag": {name: kind for name, (kind, _) in ref.TAG_FIELDS.items()},
    "attribute": {name: kind for name, (kind, _) in ref.ATTRIBUTE_FIELDS.items()},
}
QUANTIFIERS = {"column": (("tags", "tag"), ("attributes", "attribute")), "cluster": (("columns", "column"),)}


def numbers(field: str) -> st.SearchStrategy[Any]:
    stored = SIZES if field == "cluster.size" else CONFIDENCES
    return st.sampled_from((*stored, 2.5 if field == "cluster.size" else 0.6))


@st.composite
def comparisons(draw, level: str) -> dict[str, Any]:
    fields = LEVEL_FIELDS[level]
    name = draw(st.sampled_from(sorted(fields)))
    kind = fields[name]
    op = draw(st.sampled_from(OPS[kind]))
    listed = op in ("in", "not_in")
    if op in ("exists", "absent", "empty") or kind == ref.BOOLEAN:
        value: Any = draw(st.booleans())
    elif kind == ref.NUMBER:
        value = draw(st.lists(numbers(name), min_size=1, max_size=3)) if listed else draw(numbers(name))
    elif op == "matches":
        value = draw(st.sampled_from(PATTERNS))
    else:
        value = draw(st.lists(texts, min_size=1, max_size=3)) if listed else draw(texts)
    node = {"field": name, op: value}
    # (beside exists/absent/empty, which compare no text, 'case' is refused: it would do nothing)
    if (
        kind in (ref.TEXT, ref.LIST)
        and op not in ("exists", "absent", "empty")
        and draw(st.integers(0, 3)) == 0
    ):
        node["case"] = "exact"
    return node


def groupable(level: str) -> list[str]:
    return sorted(name for name, kind in LEVEL_FIELDS[level].items() if kind != ref.LIST)


@st.composite
def havings(draw, level: str) -> dict[str, Any]:
    having: dict[str, Any] = {}
    if draw(st.integers(0, 2)) > 0:
        having["distinct"] = draw(st.sampled_from(groupable(level)))
        if draw(st.integers(0, 3)) == 0:
            having["case"] = "exact"
    op = draw(st.sampled_from(("eq", "ne", "gt", "gte", "lt", "lte")))
    # a plain count is at least 1, a distinct one at least 0: thresholds it can never meet are
    # refused by validation
    least = {"eq": 1, "lt": 2, "lte": 1}.get(op, 0) if "distinct" not in having else {"lt": 1}.get(op, 0)
    having[op] = draw(st.integers(least, 3))
    return having


@st.composite
def quantifiers(draw, key: str, level: str, depth: int, *, counting: bool = False) -> dict[str, Any]:
    inner = conditions(level, depth)
    form = "count" if counting else draw(st.sampled_from(("any", "all", "none", "count")))
    if form != "count":
        return {key: {form: draw(inner)}}
    body: dict[str, Any] = {}
    if draw(st.booleans()):
        body["where"] = draw(inner)
    if draw(st.booleans()):
        body["group_by"] = draw(st.sampled_from(groupable(level)))
        if draw(st.integers(0, 3)) == 0:
            body["case"] = "exact"
    body["having"] = draw(havings(level))
    return {key: body}


@functools.cache
def conditions(level: str, depth: int) -> st.SearchStrategy[Any]:
    """A condition tree at ``level`` with at most ``depth`` levels above its comparisons."""
    leaf = comparisons(level)
    if depth == 0:
        return leaf
    sub = conditions(level, depth - 1)
    options = [
        leaf,
        st.lists(sub, min_size=1, max_size=3).map(lambda parts: {"all": parts}),
        st.lists(sub, min_size=1, max_size=3).map(lambda parts: {"any": parts}),
        st.lists(sub, min_size=1, max_size=2),  # a bare list means all
        sub.map(lambda inner: {"not": inner}),
    ]
    options += [quantifiers(key, inner, depth - 1) for key, inner in QUANTIFIERS.get(level, ())]
    return st.one_of(options)


@st.composite
def aggregates(draw) -> dict[str, Any]:
    aggregate: dict[str, Any] = {"per": draw(st.sampled_from(("cluster", "snapshot")))}
    if draw(st.booleans()):
        aggregate["where"] = draw(conditions("column", 2))
    if draw(st.integers(0, 3)) > 0:
        aggregate["group_by"] = draw(st.sampled_from(groupable("column")))
    aggregate["having"] = draw(havings("column"))
    # (with neither a grouping nor a distinct count, 'case' is refused: it would do nothing)
    if draw(st.booleans()) and ("group_by" in aggregate or "distinct" in aggregate["having"]):
        aggregate["case"] = "exact"
    return aggregate


# -- running rules through the real loader, writer and compiler ----------------------------------


def rule_text(scope: str, bodies: list[Any]) -> str:
    """A rule file holding one rule per body (``condition:`` or ``aggregate:``)."""
    key = "aggregate" if scope == "aggregate" else "condition"
    message = "{group.count}|{group.distinct}" if scope == "aggregate" else "m"
    rules = [
        {
            "id": f"prop-{i}",
            "title": "t",
            "description": "d",
            "severity": "low",
            "scope": scope,
            key: body,
            "message": message,
            "remediation": "r",
        }
        for i, body in enumerate(bodies)
    ]
    return yaml.safe_dump({"rules": rules}, sort_keys=False, default_flow_style=None, width=10_000)


def sql_subjects(
    engine: Engine, tmp_path: Path, catalog: list[dict[str, Any]], scope: str, bodies: list[Any]
):
    path = tmp_path / "rules.yaml"
    path.write_text(rule_text(scope, bodies), encoding="utf-8")
    ruleset = load_ruleset([path])
    run_id = write_snapshot(engine, catalog)
    out = []
    with engine.connect() as connection:
        prepare_connection(connection)
        for rule in ruleset.rules:
            found = evaluate_rule(connection, run_id, rule)
            if scope == "column":
                out.append(sorted((f.cluster_id, f.column) for f in found))
            elif scope == "cluster":
                out.append(sorted((f.cluster_id, tuple(f.columns)) for f in found))
            else:
                groups = []
                for f in found:
                    count, distinct = f.message.split("|")
                    groups.append((f.cluster_id, f.key, tuple(f.columns), int(count), int(distinct)))
                out.append(sorted(groups, key=repr))
    return out


def reference_subjects(catalog: list[dict[str, Any]], scope: str, bodies: list[Any]) -> list[Any]:
    if scope == "column":
        return [ref.column_subjects(body, catalog) for body in bodies]
    if scope == "cluster":
        return [ref.cluster_subjects(body, catalog) for body in bodies]
    return [ref.aggregate_subjects(body, catalog, exact_distinct=True) for body in bodies]


def check(
    engine: Engine, tmp_path: Path, catalog: list[dict[str, Any]], scope: str, bodies: list[Any]
) -> None:
    got = sql_subjects(engine, tmp_path, catalog, scope, bodies)
    expected = reference_subjects(catalog, scope, bodies)
    for body, sql, python in zip(bodies, got, expected, strict=True):
        shown = yaml.safe_dump(body, default_flow_style=True, width=10_000).strip()
        assert sql == python, f"{scope} rule {shown}: SQL found {sql}, the reference {python}"


def examples(n: int) -> settings:
    """The house settings (see tests/diff): each example writes one more run into the test's database."""
    return settings(
        max_examples=n, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
    )


# About 240 examples on SQLite (~25 s on the 2-core machine) and 60 on PostgreSQL.
ON_POSTGRES = examples(15)

column_rules = st.lists(conditions("column", 3), min_size=1, max_size=3)
cluster_rules = st.lists(conditions("cluster", 3), min_size=1, max_size=2)
aggregate_rules = st.lists(aggregates(), min_size=1, max_size=3)
# The counting forms get a test of their own, with shallow conditions: in deep random trees the
# group_by/having paths are rare, and thresholds of 0-3 over a handful of elements decide them.
counting_rules = st.lists(
    st.one_of(
        quantifiers("tags", "tag", 1, counting=True),
        quantifiers("attributes", "attribute", 1, counting=True),
    ),
    min_size=1,
    max_size=3,
)
counting_columns = st.lists(quantifiers("columns", "column", 1, counting=True), min_size=1, max_size=2)


@examples(80)
@given(catalog=catalogs(), bodies=column_rules)
def test_column_rules_find_what_the_reference_finds(engine, tmp_path, catalog, bodies):
    check(engine, tmp_path, catalog, "column", bodies)


@examples(50)
@given(catalog=catalogs(), bodies=cluster_rules)
def test_cluster_rules_find_what_the_reference_finds(engine, tmp_path, catalog, bodies):
    check(engine, tmp_path, catalog, "cluster", bodies)


@examples(50)
@given(catalog=catalogs(NARROW), bodies=aggregate_rules)
def test_aggregate_rules_find_what_the_reference_finds(engine, tmp_path, catalog, bodies):
    check(engine, tmp_path, catalog, "aggregate", bodies)


@examples(60)
@given(
    catalog=catalogs(NARROW),
    bodies=counting_rules,
    columns=counting_columns,
)
def test_counting_quantifiers_find_what_the_reference_finds(engine, tmp_path, catalog, bodies, columns):
    check(engine, tmp_path, catalog, "column", bodies)
    check(engine, tmp_path, catalog, "cluster", columns)


# -- regressions the properties found, kept as plain cases -----------------------------------------


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def any_engine(request: pytest.FixtureRequest) -> Engine:
    """Each regression case runs on both databases (PostgreSQL where the test server is set)."""
    return request.getfixturevalue("engine" if request.param == "sqlite" else "pg_engine")


def test_elements_missing_the_group_by_value_form_no_group(any_engine, tmp_path):
    # Found by the counting property: two tags without a name were one group ("a tag name shared by
    # two tags"), unlike aggregate rules, where columns whose key is missing are not grouped.
    catalog = [
        {
            "id": "c1",
            "columns": [
                {"fullyQualifiedName": "nameless", "tags": [{"tagValue": "x"}, {"tagValue": "y"}]},
                {
                    "fullyQualifiedName": "named",
                    "tags": [{"tagName": " A", "tagValue": "x"}, {"tagName": "a"}],
                },
            ],
        },
        {"id": "c2", "columns": [{"fullyQualifiedName": "p"}, {"fullyQualifiedName": "q"}]},
    ]
    tags = [
        {"tags": {"group_by": "tagName", "having": {"gte": 2}}},
        {"tags": {"group_by": "applicationType", "having": {"distinct": "applicationType", "eq": 0}}},
    ]
    assert sql_subjects(any_engine, tmp_path, catalog, "column", tags) == [[("c1", "named")], []]
    columns = [{"columns": {"group_by": "columnName", "having": {"gte": 2}}}]
    assert sql_subjects(any_engine, tmp_path, catalog, "cluster", columns) == [[]]
    assert reference_subjects(catalog, "column", tags) == [[("c1", "named")], []]


def test_an_exact_aggregate_counts_distinct_values_exactly(any_engine, tmp_path):
    # Found by the aggregate property: `case: exact` grouped exactly but still counted distinct
    # sources ignoring case, although "distinct counts are normalised the same way" as keys.
    catalog = [
        {
            "id": "c1",
            "columns": [
                {"fullyQualifiedName": "b", "columnName": "n", "source": "S"},
                {"fullyQualifiedName": "c", "columnName": "n ", "source": "s"},
            ],
        }
    ]
    bodies = [
        {"group_by": "columnName", "case": "exact", "having": {"distinct": "source", "gte": 2}},
        {"group_by": "columnName", "having": {"distinct": "source", "gte": 2}},
    ]
    assert sql_subjects(any_engine, tmp_path, catalog, "aggregate", bodies) == [
        [("c1", "n", ("b", "c"), 2, 2)],
        [],
    ]


def test_an_aggregate_can_group_by_a_boolean(any_engine, tmp_path):
    # Found by the aggregate property on PostgreSQL, which has no min(boolean) for {group.value}.
    catalog = [
        {
            "id": "c1",
            "columns": [
                {"fullyQualifiedName": "a", "isPrimary": True},
                {"fullyQualifiedName": "b", "isPrimary": True},
                {"fullyQualifiedName": "c"},
            ],
        }
    ]
    bodies = [{"group_by": "isPrimary", "having": {"gte": 1}}]
    assert sql_subjects(any_engine, tmp_path, catalog, "aggregate", bodies) == [
        [("c1", "true", ("a", "b"), 2, 2)]
    ]


def test_a_fraction_is_equal_to_no_whole_size(any_engine, tmp_path):
    # Found by the cluster property on PostgreSQL: `in` bound its list as integers (2.5 -> 2 or 3).
    catalog = [{"id": "c1", "size": 2}, {"id": "c2", "size": 3}]
    bodies = [{"field": "cluster.size", "in": [0, 2.5]}, {"field": "cluster.size", "not_in": [2.5]}]
    assert sql_subjects(any_engine, tmp_path, catalog, "cluster", bodies) == [[], [("c1", ()), ("c2", ())]]


@pytest.fixture(scope="module")
def pg_engine(postgres_url: str) -> Iterator[Engine]:
    db = open_database(postgres_url)
    yield db
    db.dispose()


@pytest.mark.postgres
@ON_POSTGRES
@given(catalog=catalogs(), bodies=column_rules)
def test_column_rules_on_postgresql(pg_engine, tmp_path, catalog, bodies):
    check(pg_engine, tmp_path, catalog, "column", bodies)


@pytest.mark.postgres
@ON_POSTGRES
@given(catalog=catalogs(), bodies=cluster_rules)
def test_cluster_rules_on_postgresql(pg_engine, tmp_path, catalog, bodies):
    check(pg_engine, tmp_path, catalog, "cluster", bodies)


@pytest.mark.postgres
@ON_POSTGRES
@given(catalog=catalogs(NARROW), bodies=aggregate_rules)
def test_aggregate_rules_on_postgresql(pg_engine, tmp_path, catalog, bodies):
    check(pg_engine, tmp_path, catalog, "aggregate", bodies)


@pytest.mark.postgres
@ON_POSTGRES
@given(catalog=catalogs(NARROW), bodies=counting_rules, columns=counting_columns)
def test_counting_quantifiers_on_postgresql(pg_engine, tmp_path, catalog, bodies, columns):
    check(pg_engine, tmp_path, catalog, "column", bodies)
    check(pg_engine, tmp_path, catalog, "cluster", columns)


# Patterns at the edges of what validation accepts: each must run on PostgreSQL (an error there is
# exit 3 in the middle of a check) and give the answer SQLite's Python function gives.
EDGE_PATTERNS = [
    *("a{", "a{x}", "{", "a{1,}", "a{1,2}", "[.]", "[a.]", "\\{1", "[{1]", "[]{1]", "x{0}y", "[:]"),
    # a lookaround inside a repeated group (refused for a while by mistake), a comment
    *("^(?:(?!tmp).)*_bak$", "(?:(?=a))*", "(?:a(?=b))+", "((?!x).)*", "a(?#c{1)b", "[\\0]"),
]
EDGE_VALUES = ["a{", "a{x}", "{1", "x.y", "]", ":", "aa", "xy", "plain", "a_bak", "tmp_bak", "ab"]


@pytest.mark.postgres
@pytest.mark.parametrize("pattern", EDGE_PATTERNS)
def test_accepted_edge_patterns_run_alike_on_postgresql(pg_engine, pattern):
    from sqlalchemy import text

    from auditor.engine.sqlfuncs import _sqlite_regexp, check_pattern, portable_pattern

    assert check_pattern(pattern) is None
    compiled = portable_pattern(pattern)
    with pg_engine.connect() as connection:
        for value in EDGE_VALUES:
            found = connection.execute(text("SELECT :v ~* :p"), {"v": value, "p": compiled}).scalar()
            assert bool(found) == bool(_sqlite_regexp(compiled, value, 1)), (pattern, value)
