"""The tutorial's own example payloads (copied verbatim from
``shared/seed/cluster-analysis-api-tutorial.txt``) parse into the models unchanged, and a snapshot of
a server answering with exactly them stores them byte for byte."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import select

from auditor.bigid.client import CLUSTERS_PATH
from auditor.bigid.client import COLUMNS_PATH as SIMILAR
from auditor.bigid.models import parse_cluster, parse_column
from auditor.errors import ApiError, NotFoundError
from auditor.snapshot import take_snapshot
from auditor.store.db import open_database
from auditor.store.schema import cluster_versions, column_tags, column_versions

from .conftest import Reply, Request

# Section 2, "Obtain Cluster ID" (verbatim, including its spacing)
TUTORIAL_CLUSTERS = """[
{ "id": "abc123def456", "name": "Sensitive HR Data", "size": 20, "labels": ["PII", "Confidential"], "severity": "High", "status": "Active", "createdAt": "2025-07-15T14:22:30.000Z" }, { "id": "ghi789jkl012", "name": "Marketing Metrics", "size": 20, "labels": ["Analytics"], "severity": "Low", "status": "Archived", "createdAt": "2025-06-28T09:08:12.000Z" }
]"""  # noqa: E501

# Section 3, "Get All Columns" (verbatim)
TUTORIAL_COLUMNS = """{
"results": [
{
"fullyQualifiedName": "x.y.z",
"columnName": "abc",
"businessAttribute": "friendly name",
"tableName": "my-table",
"source": "my-sql-tables",
"isPrimary": true,
"dataType": "integer",
"attributes": [
{
"attribute_original_name": "SSN",
"attribute_name": "SSN",
"rank": "High",
"calc_confidence_level": 0.695781717492013,
"attribute_type": "IDSoR Attribute",
"attribute_id": "74b78d7040e97f1ab9ba3b69c8e372e3"
}
],
"tags": [
{
"tagId": "ba7a5426-64d6-47eb-995b-8fd8e1224de0",
"valueId": "ba7a5426-64d6-47eb-995b-8fd8e1224de1",
"isMutuallyExclusive": "true",
"properties": {
"hidden": false,
"applicationType": "sensitivityClassification"
},
"tagName": "sensitivity",
"tagValue": "high"
}
]
}
],
"totalCount": 5
}"""

# Section 4, "Troubleshooting" example bodies (verbatim)
TUTORIAL_400 = '{ "error": "Scan ID is invalid" }'
TUTORIAL_404 = '{ "error": "Scan 1234 was not found" }'
TUTORIAL_500 = '{ "status": "error", "message": "Server error", "errors": [{}] }'


def test_tutorial_clusters_parse_unchanged():
    raws = json.loads(TUTORIAL_CLUSTERS)
    clusters = [parse_cluster(raw) for raw in raws]
    first = clusters[0]
    assert (
        first.id,
        first.name,
        first.size,
        first.labels,
        first.severity,
        first.status,
        first.createdAt,
    ) == (
        "abc123def456",
        "Sensitive HR Data",
        20,
        ["PII", "Confidential"],
        "High",
        "Active",
        "2025-07-15T14:22:30.000Z",
    )
    assert clusters[1].labels == ["Analytics"] and clusters[1].status == "Archived"
    for model, raw in zip(clusters, raws, strict=True):
        assert model.model_dump(exclude_none=True) == raw  # nothing lost, nothing renamed
        assert model.model_extra == {}


def test_tutorial_columns_parse_unchanged():
    raw = json.loads(TUTORIAL_COLUMNS)["results"][0]
    column = parse_column(raw)
    assert column.fullyQualifiedName == "x.y.z" and column.isPrimary is True and column.dataType == "integer"
    (attribute,) = column.attributes
    assert attribute.calc_confidence_level == 0.695781717492013 and attribute.rank == "High"
    (tag,) = column.tags
    assert tag.isMutuallyExclusive is True  # the tutorial sends the string "true"
    assert tag.properties is not None and tag.properties.hidden is False
    assert tag.properties.applicationType == "sensitivityClassification"
    dumped = column.model_dump(exclude_none=True)
    dumped["tags"][0]["isMutuallyExclusive"] = "true"  # the one coercion
    assert dumped == raw


def test_snapshot_of_the_tutorial_server(loopback, make_client, tmp_path):
    """A server that answers exactly like the tutorial (totalCount 5 for one column: a wrong total)."""

    def handler(request: Request) -> Reply:
        if request.path == CLUSTERS_PATH:
            return Reply(200, TUTORIAL_CLUSTERS.encode() if request.query["skip"] == "0" else b"[]")
        if request.query["skip"] == "0":
            return Reply(200, TUTORIAL_COLUMNS.encode())
        return Reply(200, {"results": [], "totalCount": 5})

    loopback.reset(handler)
    engine = open_database(tmp_path / "t.db")
    run = take_snapshot(engine, make_client(loopback.url, token="SAMPLE"), workers=2)
    assert run.status == "complete" and run.auth_scheme == "bearer"
    assert loopback.seen[0].authorization == "Bearer SAMPLE"  # the tutorial's header form
    assert run.clusters_stored == 2 and run.columns_stored == 2
    assert sorted(run.details["total_mismatches"], key=lambda m: m["cluster_id"]) == [
        {"cluster_id": "abc123def456", "total_count": 5, "fetched": 1},
        {"cluster_id": "ghi789jkl012", "total_count": 5, "fetched": 1},
    ]
    with engine.connect() as connection:
        assert sorted(
            connection.execute(select(cluster_versions.c.raw)).scalars(), key=lambda r: r["id"]
        ) == (json.loads(TUTORIAL_CLUSTERS))
        assert (
            list(connection.execute(select(column_versions.c.raw)).scalars())
            == json.loads(TUTORIAL_COLUMNS)["results"]
        )
        assert connection.execute(select(column_tags.c.is_mutually_exclusive)).scalar_one() is True


def test_tutorial_error_bodies(loopback, make_client):
    loopback.reset(lambda r: Reply(400, TUTORIAL_400.encode()))
    client = make_client(loopback.url, cluster_id_fallback=False)
    with pytest.raises(ApiError) as caught:
        client.get_columns("1234")
    assert (
        caught.value.message
        == f"the API says cluster id '1234' is malformed (HTTP 400 from GET {SIMILAR}): Scan ID is invalid"
    )
    loopback.reset(lambda r: Reply(404, TUTORIAL_404.encode()))
    with pytest.raises(NotFoundError) as caught:
        client.get_columns("1234")
    assert (
        caught.value.message
        == f"cluster '1234' was not found (HTTP 404 from GET {SIMILAR}): Scan 1234 was not found"
    )
    loopback.reset(lambda r: Reply(500, TUTORIAL_500.encode()))
    with pytest.raises(ApiError) as caught:
        make_client(loopback.url, max_retries=1).get_columns("1234")
    said = "HTTP 500: Server error"  # the tutorial's error body's message
    assert caught.value.message.startswith(f"cluster 1234: GET {SIMILAR} failed: {said} (2 attempts in ")
