"""The filter subset, without HTTP: semantics and error messages."""

from __future__ import annotations

import pytest

from auditor.sandbox.filters import (
    CLUSTER_FIELDS,
    COLUMN_FIELDS,
    FilterError,
    column_dynamic_field,
    compile_filter,
)

CLUSTER = {
    "id": "a" * 24,
    "name": "Sensitive HR Data",
    "size": 20,
    "labels": ["PII", "Confidential"],
    "severity": "High",
    "status": "Active",
    "createdAt": "2025-07-15T14:22:30.000Z",
}


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        ("", True),
        ("size=20", True),
        ('size="20"', True),
        ("size=to_number(20)", True),
        ("size!=20", False),
        ("size>19 AND size<21", True),
        ("size>=20 and size<=20", True),
        ("size>20 OR status=active", True),
        ('name = "sensitive hr data"', True),
        ('name = "Sensitive"', False),
        ("labels=PII", True),
        ("labels!=Analytics", True),
        ("NOT (labels=PII)", False),
        ('createdAt > "2025-07-01"', True),
        ("severity=Low", False),
        ("SIZE=20", True),
    ],
)
def test_cluster_expressions(expr, expected):
    assert compile_filter(expr, CLUSTER_FIELDS)(CLUSTER) is expected


def test_nulls_match_only_not_equal():
    record = {"size": None, "labels": None}
    assert compile_filter("size=1", CLUSTER_FIELDS)(record) is False
    assert compile_filter("size>1", CLUSTER_FIELDS)(record) is False
    assert compile_filter("size!=1", CLUSTER_FIELDS)(record) is True
    assert compile_filter("labels=PII", CLUSTER_FIELDS)(record) is False


def test_column_fields_tags_and_attributes():
    column = {
        "columnName": "email",
        "objectName": "users",
        "isPrimary": True,
        "attributes": [{"attribute_name": "Email"}],
        "tags": [
            {"tagName": "Access Type", "tagValue": "Open Access"},
            {"tagName": "sensitivity", "tagValue": "HIGH"},
        ],
    }

    def check(expr):
        return compile_filter(expr, COLUMN_FIELDS, column_dynamic_field)(column)

    assert check("tableName=users AND isPrimary=true")
    assert check("attribute=Email")
    assert check('tags."Access Type" = "Open Access"')
    assert check("catalog_tag.sensitivity=high")
    assert not check("tags.sensitivity=low")


@pytest.mark.parametrize(
    ("expr", "message"),
    [
        ("size", "the filter ends too early"),
        ("size=", "the filter ends too early"),
        ("=20", "expected a field name, found '='"),
        ("size = = 2", "expected a value after size =, found '='"),
        ("size=1 AND", "the filter ends too early"),
        ("((size=1)", "a parenthesis is not closed"),
        ("size=1)", "unexpected ')' after a complete expression"),
        ('name="a', "unterminated double quote at character 6"),
        ("size~1", "unexpected character '~' at character 5"),
        (
            "colour=red",
            "unknown field 'colour' (known: clusterid, clustername, createdat, id, label, labels, "
            "name, severity, size, status)",
        ),
    ],
)
def test_errors(expr, message):
    with pytest.raises(FilterError) as info:
        compile_filter(expr, CLUSTER_FIELDS)
    assert str(info.value) == message
