"""Every operator, quantifier and aggregate, compiled to SQL and run on SQLite (and PostgreSQL).

Each case is a rule condition in YAML and the exact set of subjects it must match over the
``CATALOG`` snapshot of ``conftest.py``. The same table runs on PostgreSQL when
``AUDITOR_TEST_POSTGRES_URL`` is set.
"""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import pytest
from sqlalchemy import select

from auditor.engine.conditions import column_from
from auditor.engine.evaluate import evaluate_rule, prepare_connection
from auditor.engine.fields import Level, Row
from auditor.engine.rules import Rule, load_ruleset
from auditor.store.db import open_database
from tests.engine.conftest import CATALOG, write_snapshot

COLUMN_CASES: list[tuple[str, set[str]]] = [
    # eq / ne: case-insensitive by default, exact on request; ne is true when the value is missing
    ("{field: columnName, eq: ssn}", {"hr.emp.ssn"}),  # " ssn " has spaces: eq does not trim
    ("{field: columnName, eq: ssn, case: exact}", set()),
    ("{field: dataType, eq: varchar}", {"hr.emp.ssn", "hr.emp.name", "fin.card.number"}),
    ("{field: dataType, eq: VARCHAR, case: exact}", {"hr.emp.name"}),
    ("{field: dataType, ne: varchar}", {"crm.contact.ssn", "hr.emp.notes%", "fin.card.brand"}),
    # in / not_in
    ("{field: source, in: [CRM, payments]}", {"crm.contact.ssn", "fin.card.number", "fin.card.brand"}),
    ("{field: source, not_in: [hr-db, payments]}", {"crm.contact.ssn"}),
    (
        "{not: {field: businessAttribute, in: ['social security number']}}",
        {"crm.contact.ssn", "hr.emp.name", "hr.emp.notes%", "fin.card.number", "fin.card.brand"},
    ),
    # contains / not_contains: plain substrings, % and _ are not wildcards
    ("{field: columnName, contains: '100%'}", {"hr.emp.notes%"}),
    ("{field: columnName, contains: 'o''brien'}", {"hr.emp.name"}),
    ("{field: columnName, contains: 'O''B', case: exact}", {"hr.emp.name"}),
    ("{field: columnName, contains: 'o''b', case: exact}", set()),
    ("{field: columnName, contains: '_'}", {"hr.emp.name", "hr.emp.notes%", "fin.card.number"}),
    (
        "{field: tableName, not_contains: emp}",
        {"crm.contact.ssn", "fin.card.number", "fin.card.brand"},
    ),
    # matches: a regular expression searched anywhere
    ("{field: fullyQualifiedName, matches: '^hr\\.emp\\.'}", {"hr.emp.ssn", "hr.emp.name", "hr.emp.notes%"}),
    ("{field: columnName, matches: '^SSN$', case: exact}", {"hr.emp.ssn"}),
    # not over a missing value: true (PostgreSQL's NULL ~ pattern is NULL, and NOT NULL is NULL)
    (
        "{not: {field: businessAttribute, matches: social}}",
        {"crm.contact.ssn", "hr.emp.name", "hr.emp.notes%", "fin.card.number", "fin.card.brand"},
    ),
    ("{field: columnName, matches: 'card|brand'}", {"fin.card.number", "fin.card.brand"}),
    # \x63 is 'c' on both: PostgreSQL read \x63a (every hex digit that follows) as U+063A
    ("{field: columnName, matches: '^\\x63ard'}", {"fin.card.number"}),
    # exists / absent / empty
    ("{field: businessAttribute, exists: true}", {"hr.emp.ssn", "hr.emp.name"}),
    (
        "{field: businessAttribute, absent: true}",
        {"crm.contact.ssn", "hr.emp.notes%", "fin.card.number", "fin.card.brand"},
    ),
    (
        "{field: businessAttribute, empty: true}",
        {"crm.contact.ssn", "hr.emp.name", "hr.emp.notes%", "fin.card.number", "fin.card.brand"},
    ),
    ("{field: businessAttribute, empty: false}", {"hr.emp.ssn"}),
    # booleans and missing booleans
    ("{field: isPrimary, eq: true}", {"hr.emp.ssn"}),
    ("{field: isPrimary, eq: false}", {"crm.contact.ssn"}),
    (
        "{field: isPrimary, ne: true}",
        {"crm.contact.ssn", "hr.emp.name", "hr.emp.notes%", "fin.card.number", "fin.card.brand"},
    ),
    # numbers on the cluster
    ("{field: cluster.size, gt: 2}", {"hr.emp.ssn", "crm.contact.ssn", "hr.emp.name", "hr.emp.notes%"}),
    ("{field: cluster.size, lte: 2}", {"fin.card.number", "fin.card.brand"}),
    ("{field: cluster.size, gte: 4}", {"hr.emp.ssn", "crm.contact.ssn", "hr.emp.name", "hr.emp.notes%"}),
    ("{field: cluster.size, lt: 4}", {"fin.card.number", "fin.card.brand"}),
    # cluster fields and label-list semantics (any element; negations: no element)
    ("{field: cluster.status, eq: archived}", {"fin.card.number", "fin.card.brand"}),
    ("{field: cluster.labels, contains: Confidential}", {"fin.card.number", "fin.card.brand"}),
    ("{field: cluster.labels, contains: Confidential, case: exact}", set()),
    (
        "{field: cluster.labels, not_contains: confidential}",
        {"hr.emp.ssn", "crm.contact.ssn", "hr.emp.name", "hr.emp.notes%"},
    ),
    ("{field: cluster.labels, in: [pci, phi]}", {"fin.card.number", "fin.card.brand"}),
    (
        "{field: cluster.labels, matches: '^p'}",
        {
            "hr.emp.ssn",
            "crm.contact.ssn",
            "hr.emp.name",
            "hr.emp.notes%",
            "fin.card.number",
            "fin.card.brand",
        },
    ),
    ("{field: cluster.id, eq: c-fin}", {"fin.card.number", "fin.card.brand"}),
    # boolean composition
    (
        "{all: [{field: source, eq: hr-db}, {not: {field: columnName, eq: ssn}}]}",
        {"hr.emp.name", "hr.emp.notes%"},
    ),
    (
        "{any: [{field: source, eq: crm}, {field: columnName, eq: brand}]}",
        {"crm.contact.ssn", "fin.card.brand"},
    ),
    ("[{field: source, eq: payments}, {field: columnName, contains: card}]", {"fin.card.number"}),
    # quantifiers over tags
    (
        "{tags: {any: [{field: tagName, eq: sensitivity}, {field: tagValue, eq: high}]}}",
        {"hr.emp.ssn", "fin.card.number"},
    ),
    (
        "{tags: {none: {field: tagName, eq: sensitivity}}}",
        {"hr.emp.name", "hr.emp.notes%", "fin.card.brand"},
    ),
    # all: vacuously true for columns without tags
    (
        "{tags: {all: {field: tagName, eq: sensitivity}}}",
        {"hr.emp.ssn", "crm.contact.ssn", "hr.emp.name", "fin.card.number", "fin.card.brand"},
    ),
    ("{tags: {any: {field: hidden, eq: true}}}", {"crm.contact.ssn"}),
    ("{tags: {any: {field: isMutuallyExclusive, eq: true}}}", {"hr.emp.ssn"}),
    # quantifiers over attributes
    (
        "{attributes: {any: [{field: attribute_name, eq: ssn}, {field: calc_confidence_level, gte: 0.9}]}}",
        {"hr.emp.ssn"},
    ),
    ("{attributes: {any: {field: rank, eq: high}}}", {"hr.emp.ssn", "fin.card.number"}),
    (
        "{attributes: {all: {field: rank, eq: high}}}",
        {"hr.emp.ssn", "hr.emp.name", "hr.emp.notes%", "fin.card.brand"},
    ),
    # counting form over a column's attributes
    ("{attributes: {having: {gte: 2}}}", {"fin.card.number"}),
    ("{attributes: {where: {field: rank, eq: high}, having: {eq: 1}}}", {"hr.emp.ssn", "fin.card.number"}),
]

CLUSTER_CASES: list[tuple[str, set[str]]] = [
    ("{field: cluster.severity, eq: LOW}", {"c-fin"}),
    ("{field: cluster.labels, empty: true}", {"c-empty"}),
    ("{field: cluster.labels, exists: true}", {"c-hr", "c-fin"}),
    ("{field: cluster.name, matches: '^h'}", {"c-hr"}),
    ("{columns: {any: {field: source, eq: crm}}}", {"c-hr"}),
    ("{columns: {none: {field: source, eq: crm}}}", {"c-fin", "c-empty"}),
    ("{columns: {all: {field: source, eq: payments}}}", {"c-fin", "c-empty"}),
    ("{columns: {having: {distinct: source, gte: 2}}}", {"c-hr"}),
    ("{columns: {group_by: columnName, having: {gte: 2}}}", {"c-hr"}),
    ("{columns: {group_by: columnName, case: exact, having: {gte: 2}}}", set()),
    # columns without the grouped field are in no group (c-fin's two would otherwise count)
    ("{columns: {group_by: businessAttribute, having: {gte: 2}}}", set()),
    # SSN and ' ssn ' are one name, two when the quantifier's case (or the count's) is exact
    ("{columns: {having: {distinct: columnName, gte: 4}}}", set()),
    ("{columns: {case: exact, having: {distinct: columnName, gte: 4}}}", {"c-hr"}),
    ("{columns: {having: {distinct: columnName, gte: 4, case: exact}}}", {"c-hr"}),
    (
        "{columns: {any: {tags: {any: [{field: tagName, eq: sensitivity}, {field: tagValue, eq: high}]}}}}",
        {"c-hr", "c-fin"},
    ),
]

AGGREGATE_CASES: list[tuple[str, set[tuple[str | None, tuple[str, ...]]]]] = [
    (
        "{per: cluster, group_by: columnName, having: {distinct: source, gte: 2}}",
        {("c-hr", ("crm.contact.ssn", "hr.emp.ssn"))},
    ),
    ("{per: cluster, group_by: columnName, case: exact, having: {distinct: source, gte: 2}}", set()),
    (
        "{per: cluster, having: {distinct: source, gte: 2}}",
        {("c-hr", ("crm.contact.ssn", "hr.emp.name", "hr.emp.notes%", "hr.emp.ssn"))},
    ),
    (
        "{per: snapshot, where: {field: source, eq: payments}, group_by: source, having: {gte: 2}}",
        {(None, ("fin.card.brand", "fin.card.number"))},
    ),
    # exact case keeps SSN and ' ssn ' (trimmed) apart in the groups listed
    (
        "{per: snapshot, where: {field: columnName, contains: ssn}, group_by: columnName, case: exact, "
        "having: {gte: 1}}",
        {(None, ("hr.emp.ssn",)), (None, ("crm.contact.ssn",))},
    ),
    # a distinct count can be 0 (no column has the field), unlike a count of a group's columns
    (
        "{per: cluster, having: {distinct: businessAttribute, lt: 1}}",
        {("c-fin", ("fin.card.brand", "fin.card.number"))},
    ),
    (
        "{per: cluster, group_by: source, having: {ne: 1}}",
        {
            ("c-hr", ("hr.emp.name", "hr.emp.notes%", "hr.emp.ssn")),
            ("c-fin", ("fin.card.brand", "fin.card.number")),
        },
    ),
    (
        "{per: snapshot, group_by: dataType, having: {gte: 3}}",
        {(None, ("fin.card.number", "hr.emp.name", "hr.emp.ssn"))},
    ),
]


def _rule(tmp_path: Path, scope: str, body: str) -> Rule:
    key = "aggregate" if scope == "aggregate" else "condition"
    text = textwrap.dedent(
        f"""\
        rules:
          - id: case-under-test
            title: t
            description: d
            severity: low
            scope: {scope}
            {key}: {body}
            message: m
            remediation: r
        """
    )
    path = tmp_path / f"rule-{abs(hash(body))}.yaml"
    path.write_text(text)
    return load_ruleset([path]).rules[0]


def _subjects(connection, run_id: int, rule: Rule) -> set:
    found = evaluate_rule(connection, run_id, rule)
    if rule.scope == "column":
        return {f.column for f in found}
    if rule.scope == "cluster":
        return {f.cluster_id for f in found}
    return {(f.cluster_id, tuple(f.columns)) for f in found}


def _run_cases(engine, tmp_path: Path) -> list[str]:
    run_id = write_snapshot(engine, CATALOG)
    failures = []
    with engine.connect() as connection:
        prepare_connection(connection)
        for scope, cases in (
            ("column", COLUMN_CASES),
            ("cluster", CLUSTER_CASES),
            ("aggregate", AGGREGATE_CASES),
        ):
            for body, expected in cases:
                got = _subjects(connection, run_id, _rule(tmp_path, scope, body))
                if got != expected:
                    failures.append(
                        f"{scope} {body}: expected {sorted(expected, key=str)}, got {sorted(got, key=str)}"
                    )
    return failures


def test_every_operator_on_sqlite(engine, tmp_path):
    assert _run_cases(engine, tmp_path) == []


@pytest.mark.postgres
def test_every_operator_on_postgresql(postgres_url, tmp_path):
    pg = open_database(postgres_url)
    try:
        assert _run_cases(pg, tmp_path) == []
    finally:
        pg.dispose()


def test_values_are_bound_parameters_never_formatted_into_sql(engine, tmp_path):
    rule = _rule(tmp_path, "column", '{field: columnName, contains: "x\'); DROP TABLE runs; --"}')
    row = Row(1, Level.COLUMN)
    predicate = rule.condition.compile(row)
    rc = row.table("rc")
    statement = select(rc.c.fqn).select_from(column_from(row)).where(predicate)
    compiled = statement.compile(engine)
    assert "DROP TABLE" not in str(compiled)
    assert "x'); drop table runs; --" in compiled.params.values()
    run_id = write_snapshot(engine, CATALOG)
    with engine.connect() as connection:
        prepare_connection(connection)
        assert evaluate_rule(connection, run_id, rule) == []


def test_only_the_asked_run_is_evaluated(engine, tmp_path):
    first = write_snapshot(engine, CATALOG)
    second = write_snapshot(engine, [CATALOG[1]])
    rule = _rule(tmp_path, "column", "{field: source, eq: payments}")
    with engine.connect() as connection:
        prepare_connection(connection)
        assert len(evaluate_rule(connection, first, rule)) == 2
        assert {f.cluster_id for f in evaluate_rule(connection, second, rule)} == {"c-fin"}
        assert len(evaluate_rule(connection, second + 1, rule)) == 0


def test_explanations_read_as_sentences(tmp_path):
    pack = load_ruleset()
    assert pack.get("high-sensitivity-without-confidential").explain() == (
        "Flags each column where the column has a tag where (tag name is sensitivity and tag value is high) "
        "and the cluster's labels do not include Confidential."
    )
    assert pack.get("duplicate-columns-across-sources").explain() == (
        "Flags each group where the columns of each cluster, grouped by column name (ignoring case and "
        "surrounding spaces), form a group with at least 2 distinct sources."
    )
    rule = _rule(tmp_path, "column", "{not: {field: dataType, in: [a, b], case: exact}}")
    assert rule.explain() == "Flags each column where not (the data type is one of a, b (exact case))."
    # a count that zero would meet says that owners with nothing to count never match
    few = _rule(tmp_path, "column", "{attributes: {having: {lt: 2}}}")
    assert (
        few.explain() == "Flags each column where the column has fewer than 2 attributes (and at least one)."
    )
    many = _rule(tmp_path, "cluster", "{columns: {where: {field: source, eq: crm}, having: {gte: 3}}}")
    assert (
        many.explain()
        == "Flags each cluster where the cluster has at least 3 columns where the source is crm."
    )


@pytest.mark.parametrize(
    ("condition", "sentence"),
    [
        # found by a probe: two conditions finding different columns read alike, values that did
        # not read as themselves, and missing caveats
        ("{field: isPrimary, eq: false}", "the column is not a primary key"),
        ("{field: isPrimary, ne: true}", "the column is not a primary key, or that is not known"),
        # found by a new-user probe: beside another condition it read as a different one
        (
            "{all: [{field: isPrimary, ne: true}, {field: fullyQualifiedName, not_contains: .archive.}]}",
            "(the column is not a primary key, or that is not known) and the fully qualified name does not "
            "contain '.archive.'",
        ),
        (
            "{any: [{field: isPrimary, ne: true}, {field: dataType, eq: int}]}",
            "the column is not a primary key, or that is not known or the data type is int",
        ),
        ("{field: businessAttribute, eq: ''}", "the business attribute is ''"),
        ("{field: columnName, in: [' ssn ', '']}", "the column name is one of ' ssn ', ''"),
        ("{field: columnName, in: ['a, b', c]}", "the column name is one of 'a, b', c"),
        ("{field: columnName, eq: social security}", "the column name is social security"),
        (
            "{tags: {all: {field: tagName, eq: owner}}}",
            "every tag of the column is such that tag name is owner (true when it has no tags)",
        ),
        (
            "{tags: {having: {distinct: tagValue, gte: 2, case: exact}}}",
            "the column has tags with at least 2 distinct tag values (exact case)",
        ),
        # found by a rule author's probe: 'at least 1 columns', 'other than 1 tags', and 'sharing
        # one the tag is hidden'
        ("{tags: {having: {gte: 1}}}", "the column has at least 1 tag"),
        ("{tags: {having: {ne: 1}}}", "the column has a number of tags other than 1 (and at least one)"),
        (
            "{tags: {group_by: hidden, having: {distinct: tagName, eq: 1}}}",
            "the column has tags alike in whether the tag is hidden with exactly 1 distinct tag name",
        ),
        # found by a docs walkthrough: case: exact beside having and inside it read alike
        (
            "{tags: {group_by: tagName, case: exact, having: {distinct: tagValue, gte: 2}}}",
            "the column has tags sharing one tag name (exact case) with at least 2 distinct tag values "
            "(exact case)",
        ),
        (
            "{tags: {group_by: tagName, having: {distinct: tagValue, gte: 2, case: exact}}}",
            "the column has tags sharing one tag name with at least 2 distinct tag values (exact case)",
        ),
        (
            "{tags: {having: {distinct: hidden, gte: 2}}}",
            "the column has tags with at least 2 distinct values of whether the tag is hidden",
        ),
    ],
)
def test_explanations_say_what_the_condition_does(tmp_path, condition, sentence):
    assert _rule(tmp_path, "column", condition).explain() == f"Flags each column where {sentence}."


@pytest.mark.parametrize(
    ("aggregate", "sentence"),
    [
        (
            "{group_by: isPrimary, having: {gte: 1}}",
            "grouped by whether the column is a primary key, form a group with at least 1 column",
        ),
        (
            "{group_by: source, having: {distinct: cluster.status, gte: 2}}",
            "grouped by source (ignoring case and surrounding spaces), form a group with at least 2 distinct "
            "cluster statuses",
        ),
        (
            "{group_by: cluster.size, having: {eq: 2}}",
            "grouped by cluster size, form a group with exactly 2 columns",
        ),
        (
            "{group_by: columnName, having: {distinct: dataType, gte: 1}}",
            "grouped by column name (ignoring case and surrounding spaces), form a group with at least 1 "
            "distinct data type",
        ),
    ],
)
def test_aggregates_explain_their_grouping_by_the_fields_kind(tmp_path, aggregate, sentence):
    explained = _rule(tmp_path, "aggregate", aggregate).explain()
    assert explained == f"Flags each group where the columns of each cluster, {sentence}."


def test_regular_expressions_are_tested_after_cheaper_parts_and_explained_as_written(engine, tmp_path):
    body = (
        "{all: [{field: columnName, matches: 'ss'}, "
        "{any: [{field: source, eq: x}, {field: tableName, matches: e}, {field: dataType, eq: varchar}]}, "
        "{field: isPrimary, eq: true}]}"
    )
    rule = _rule(tmp_path, "column", body)
    sql = str(rule.condition.compile(Row(1, Level.COLUMN)).compile(engine))
    # cheap comparisons first, the regex calls (a Python callback per row on SQLite) after them,
    # at every level; parts of equal cost keep their written order
    name_regex, table_regex = sql.index("column_name, 1)"), sql.index("table_name, 1)")
    assert sql.index("is_primary") < name_regex < sql.index("source") < sql.index("data_type") < table_regex
    assert rule.condition.explain() == (
        "the column name matches /ss/ and (the source is x or the table name matches /e/ or the data "
        "type is varchar) and the column is a primary key"
    )
    run_id = write_snapshot(engine, CATALOG)
    with engine.connect() as connection:
        prepare_connection(connection)
        assert _subjects(connection, run_id, rule) == {"hr.emp.ssn"}


def test_cluster_findings_list_the_columns_their_columns_quantifier_matched(engine, tmp_path):
    run_id = write_snapshot(engine, CATALOG)
    high = "{tags: {any: [{field: tagName, eq: sensitivity}, {field: tagValue, eq: high}]}}"
    cases = {
        # the columns that make the cluster match are the columns the finding is about
        f"{{columns: {{any: {high}}}}}": {"c-hr": ["hr.emp.ssn"], "c-fin": ["fin.card.number"]},
        f"{{all: [{{field: cluster.name, matches: '^h'}}, {{columns: {{any: {high}}}}}]}}": {
            "c-hr": ["hr.emp.ssn"]
        },
        "{columns: {any: {field: columnName, contains: ssn}}}": {"c-hr": ["crm.contact.ssn", "hr.emp.ssn"]},
        # a negated, universal or counting quantifier names no particular column
        "{columns: {none: {field: source, eq: crm}}}": {"c-fin": [], "c-empty": []},
        "{columns: {having: {distinct: source, gte: 2}}}": {"c-hr": []},
    }
    with engine.connect() as connection:
        prepare_connection(connection)
        for body, expected in cases.items():
            found = evaluate_rule(connection, run_id, _rule(tmp_path, "cluster", body))
            assert {f.cluster_id: f.columns for f in found} == expected, body
            assert all(f.column is None for f in found)


def test_case_insensitive_tests_fold_in_the_database_without_copying_values(engine, tmp_path):
    """SQLite compares with NOCASE (the same ASCII folding as its lower(), no copy per value);
    PostgreSQL lower-cases; substrings are lower-cased on both; exact comparisons fold nothing."""
    from sqlalchemy.dialects import postgresql

    def compiled(body: str, dialect) -> str:
        rule = _rule(tmp_path, "column", body)
        return str(rule.condition.compile(Row(1, Level.COLUMN)).compile(dialect=dialect))

    sqlite = engine.dialect
    assert "COLLATE NOCASE = " in compiled("{field: columnName, eq: SSN}", sqlite)
    assert "lower(" not in compiled("{field: columnName, eq: SSN}", sqlite)
    assert "COLLATE NOCASE IN " in compiled("{field: source, in: [a, B]}", sqlite)
    assert "lower(" in compiled("{field: columnName, contains: SS}", sqlite)
    assert "NOCASE" not in compiled("{field: columnName, eq: SSN, case: exact}", sqlite)
    assert "lower(" not in compiled("{field: columnName, eq: SSN, case: exact}", sqlite)
    pg = postgresql.dialect()
    assert "lower(" in compiled("{field: columnName, eq: SSN}", pg)
    assert "NOCASE" not in compiled("{field: columnName, eq: SSN}", pg)
    # values are searched in their first 2,000 characters on PostgreSQL too, as on SQLite
    searched = compiled("{field: columnName, matches: x}", pg)
    assert re.search(r"\(substr\(cv_\d+\.column_name, 1, 2000\) ~\* ", searched), searched


UNICODE_CATALOG = [
    {
        "id": "c-fr",
        "labels": ["CONFIDENTIALITÉ"],
        "columns": [
            {
                "fullyQualifiedName": "fr.a",
                "columnName": "GRÖSSE",
                "tags": [{"tagName": "Niveau", "tagValue": "ÉLEVÉ"}],
            },
            {
                "fullyQualifiedName": "fr.b",
                "columnName": "grösse",
                "tags": [{"tagName": "niveau", "tagValue": "élevé"}],
            },
            {
                "fullyQualifiedName": "fr.c",
                "columnName": "Straße",
                "tags": [{"tagName": "niveau", "tagValue": "Élevée"}],
            },
            {
                "fullyQualifiedName": "fr.d",
                "columnName": "size",
                "tags": [{"tagName": "niveau", "tagValue": "ELEVE"}],
            },
            # Python and PostgreSQL lower-case these two differently ('İ' → 'i̇' / 'i', a final
            # sigma 'ς' / 'σ'): a value identical to the literal must still match on both.
            {"fullyQualifiedName": "tr.e", "columnName": "x", "tableName": "İstanbul", "source": "ΟΔΟΣ"},
            # Lower-cased one letter at a time, as PostgreSQL does, on SQLite too: 'İstanbul' is
            # 'istanbul' on both, and 'ΟΔΟΣ' ('οδοσ') is not 'οδος' (a final sigma) on either.
            {"fullyQualifiedName": "tr.f", "columnName": "x", "tableName": "istanbul", "source": "οδος"},
            {"fullyQualifiedName": "tr.g", "columnName": "x", "tableName": "ISTANBUL", "source": "x"},
        ],
    }
]
UNICODE_CASES = [
    ("{tags: {any: {field: tagValue, eq: élevé}}}", {"fr.a", "fr.b"}),
    ("{tags: {any: {field: tagValue, eq: ÉLEVÉ, case: exact}}}", {"fr.a"}),
    ("{tags: {any: {field: tagValue, in: [élevé, nothing]}}}", {"fr.a", "fr.b"}),
    ("{tags: {any: {field: tagValue, contains: ÉLEV}}}", {"fr.a", "fr.b", "fr.c"}),
    ("{field: columnName, eq: GRÖSSE}", {"fr.a", "fr.b"}),
    ("{field: columnName, ne: grösse}", {"fr.c", "fr.d", "tr.e", "tr.f", "tr.g"}),
    ("{field: tableName, eq: İstanbul}", {"tr.e", "tr.f", "tr.g"}),
    ("{field: source, eq: ΟΔΟΣ}", {"tr.e"}),
    ("{field: source, eq: οδος}", {"tr.f"}),
    ("{field: source, in: [ΟΔΟΣ, x]}", {"tr.e", "tr.g"}),
    ("{field: source, contains: ΟΣ}", {"tr.e"}),
    ("{field: source, ne: ΟΔΟΣ}", {"fr.a", "fr.b", "fr.c", "fr.d", "tr.f", "tr.g"}),
    ("{field: columnName, contains: STRA}", {"fr.c"}),
    (
        "{field: cluster.labels, contains: confidentialité}",
        {"fr.a", "fr.b", "fr.c", "fr.d", "tr.e", "tr.f", "tr.g"},
    ),
    ("{field: cluster.labels, not_contains: Confidentialité}", set()),
    ("{tags: {any: {field: tagValue, eq: eleve}}}", {"fr.d"}),  # an ASCII literal: accents still count
]


def _mismatches(engine, tmp_path: Path, catalog: list[dict], cases: list[tuple[str, set[str]]]) -> list[str]:
    """Each column condition of ``cases`` that did not flag exactly its expected columns."""
    run_id = write_snapshot(engine, catalog)
    with engine.connect() as connection:
        prepare_connection(connection)
        return [
            f"{body}: expected {sorted(expected)}, got {sorted(got)}"
            for body, expected in cases
            if (got := _subjects(connection, run_id, _rule(tmp_path, "column", body))) != expected
        ]


# Python's re read these differently from PostgreSQL's ~ until SQLite's search spelt them out:
# `$` before a final newline, `.` and a newline, `\d` and other scripts' digits.
REGEX_CATALOG = [
    {
        "id": "c-re",
        "columns": [
            {"fullyQualifiedName": "re.newline-end", "columnName": "abc\n"},
            {"fullyQualifiedName": "re.newline-mid", "columnName": "a\nb"},
            {"fullyQualifiedName": "re.arabic", "columnName": "\u0661\u0662\u0663"},
            {"fullyQualifiedName": "re.ascii", "columnName": "123"},
        ],
    }
]
REGEX_CASES = [
    ("{field: columnName, matches: '^abc$'}", set()),
    ("{field: columnName, matches: 'c$'}", set()),
    ("{field: columnName, matches: '^a.b$'}", {"re.newline-mid"}),
    ("{field: columnName, matches: '^\\d+$'}", {"re.ascii"}),
    ("{field: columnName, matches: '^[\\d]+$'}", {"re.ascii"}),
    ("{field: columnName, matches: '^\\D'}", {"re.newline-end", "re.newline-mid", "re.arabic"}),
]


# Each table: a catalog, and column conditions with the columns each must flag.
CASE_TABLES = {
    # SQLite's own folding knows ASCII only: a literal outside ASCII compares through Python's.
    "unicode": (UNICODE_CATALOG, UNICODE_CASES),
    "regex": (REGEX_CATALOG, REGEX_CASES),
}


@pytest.mark.parametrize("table", sorted(CASE_TABLES))
def test_conditions_flag_what_the_documentation_says_on_sqlite(engine, tmp_path, table):
    assert _mismatches(engine, tmp_path, *CASE_TABLES[table]) == []


@pytest.mark.postgres
@pytest.mark.parametrize("table", sorted(CASE_TABLES))
def test_conditions_flag_the_same_on_postgresql(postgres_url, tmp_path, table):
    pg = open_database(postgres_url)
    try:
        assert _mismatches(pg, tmp_path, *CASE_TABLES[table]) == []
    finally:
        pg.dispose()


@pytest.mark.parametrize("seeked", [0, 1, 2, 5_000])
def test_whole_snapshot_groups_are_the_same_however_they_are_listed(engine, tmp_path, monkeypatch, seeked):
    """Two passing groups: listed by key (up to SEEKED_GROUPS of them), else by one whole pass."""
    import importlib

    monkeypatch.setattr(importlib.import_module("auditor.engine.evaluate"), "SEEKED_GROUPS", seeked)
    run_id = write_snapshot(
        engine,
        [
            {"id": "c1", "columns": [{"fullyQualifiedName": "a.t.x"}, {"fullyQualifiedName": "b.t.y"}]},
            {"id": "c2", "columns": [{"fullyQualifiedName": " A.T.X"}, {"fullyQualifiedName": "c.t.z"}]},
            {"id": "c3", "columns": [{"fullyQualifiedName": "b.t.y"}, {"fullyQualifiedName": "a.t.x"}]},
        ],
    )
    rule = _rule(
        tmp_path,
        "aggregate",
        "{per: snapshot, group_by: fullyQualifiedName, having: {distinct: cluster.id, gte: 2}}",
    )
    with engine.connect() as connection:
        prepare_connection(connection)
        found = evaluate_rule(connection, run_id, rule)
    assert [(f.key, f.columns) for f in found] == [
        ("a.t.x", [" A.T.X", "a.t.x"]),
        ("b.t.y", ["b.t.y"]),
    ]
    none = _rule(
        tmp_path,
        "aggregate",
        "{per: snapshot, group_by: fullyQualifiedName, having: {distinct: cluster.id, gte: 4}}",
    )
    with engine.connect() as connection:
        prepare_connection(connection)
        assert evaluate_rule(connection, run_id, none) == []


# Oracle upper-cases identifiers and PostgreSQL lower-cases them: the same column, two spellings.
UNICODE_GROUP_CATALOG = [
    {
        "id": "c-de",
        "columns": [
            {"fullyQualifiedName": "ora.T.ÄNDERUNGSDATUM", "columnName": "ÄNDERUNGSDATUM", "source": "ora"},
            {"fullyQualifiedName": "pg.t.änderungsdatum", "columnName": " änderungsdatum", "source": "pg"},
            # lower-casing, not case folding: STRASSE and straße are two names
            {"fullyQualifiedName": "ora.T.STRASSE", "columnName": "STRASSE", "source": "ora"},
            {"fullyQualifiedName": "pg.t.straße", "columnName": "straße", "source": "pg"},
            # one source spelt two ways is one source
            {"fullyQualifiedName": "x.t.größe", "columnName": "größe", "source": "Mü-DB"},
            {"fullyQualifiedName": "y.t.GRÖSSE", "columnName": "GRÖßE", "source": "MÜ-db"},
            {
                "fullyQualifiedName": "pg.t.kunde",
                "columnName": "kunde",
                "source": "pg",
                "tags": [
                    {
                        "tagName": "Vertraulichkeit",
                        "tagValue": "HÖCH",
                        "properties": {"isMutuallyExclusive": True},
                    },
                    {
                        "tagName": "VERTRAULICHKEIT",
                        "tagValue": "höch",
                        "properties": {"isMutuallyExclusive": True},
                    },
                ],
            },
        ],
    }
]


def _unicode_groups(engine) -> dict[str, list[tuple]]:
    run_id = write_snapshot(engine, UNICODE_GROUP_CATALOG)
    pack = {rule.id: rule for rule in load_ruleset(None).rules}
    with engine.connect() as connection:
        prepare_connection(connection)
        return {
            rule_id: [(f.key, f.columns) for f in evaluate_rule(connection, run_id, pack[rule_id])]
            for rule_id in ("duplicate-columns-across-sources", "conflicting-exclusive-tag-values")
        }


UNICODE_GROUPS = {
    "duplicate-columns-across-sources": [
        ("änderungsdatum", ["ora.T.ÄNDERUNGSDATUM", "pg.t.änderungsdatum"]),
    ],
    "conflicting-exclusive-tag-values": [],
}


def test_groups_and_distinct_counts_lower_case_all_of_unicode_on_sqlite(engine):
    """The built-in duplicate rule found nothing for ``ÄNDERUNGSDATUM`` and ``änderungsdatum`` on
    SQLite (whose NOCASE folds ASCII letters only), and counted ``Mü-DB`` and ``MÜ-db`` as two sources."""
    assert _unicode_groups(engine) == UNICODE_GROUPS


@pytest.mark.postgres
def test_groups_and_distinct_counts_lower_case_all_of_unicode_on_postgresql(postgres_url):
    pg = open_database(postgres_url)
    try:
        assert _unicode_groups(pg) == UNICODE_GROUPS
    finally:
        pg.dispose()
