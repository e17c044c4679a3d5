"""The snapshot database schema (SQLAlchemy Core tables), shared by every stage.

Design: records are **content-addressed** and runs only hold **membership**.

* ``cluster_versions`` / ``column_versions`` hold one row per distinct record content, identified by
  a 128-bit BLAKE2b hash (hex) of the record's canonical JSON. A record that did not change since the
  last run is not stored again: the next run only adds a membership row pointing at the same version.
* Column versions also carry an integer surrogate key (``id``, unique like the hash, so comparing ids
  is comparing contents). Run membership, tags and attributes refer to a column version by that id:
  a 1M-column run joins, probes and groups integers instead of random 32-character strings (4-8x
  faster in SQLite for rules and diffs), and new versions get ascending ids, so their tags and
  attributes are appended to their b-trees rather than inserted at random places.
* ``cluster_labels``, ``column_tags`` and ``column_attributes`` hang off a *version*, so they too are
  stored once per distinct content. Small rows keyed by their primary key are ``WITHOUT ROWID``
  tables on SQLite (one b-tree instead of a table plus a key index).
* ``run_clusters`` / ``run_columns`` say which versions a run saw, under which cluster. A column is
  identified within a run by ``(cluster_id, fqn)``; the same ``fqn`` under another cluster in a
  later run is a move.
* ``runs`` records what was fetched, from where, how completely, and how it ended.
* ``evaluations`` / ``findings`` hold the results of checking a run against a rule set.

Diffs join two runs' membership on ``fqn`` and compare version keys, so they are plain SQL whose memory does
not grow with the catalog. Every raw record is kept verbatim (``raw``), so fields we do not model yet
are never lost.
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Float,
    ForeignKey,
    ForeignKeyConstraint,
    Index,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
)

# Deterministic constraint names so that SQLite batch migrations and PostgreSQL agree.
NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

metadata = MetaData(naming_convention=NAMING)

HASH = String(32)  # hex of a 16-byte BLAKE2b digest
# A column version's surrogate key: BIGINT on PostgreSQL, and exactly INTEGER on SQLite, where
# "INTEGER PRIMARY KEY" makes the column the table's rowid (no separate key b-tree).
VERSION_ID = BigInteger().with_variant(Integer(), "sqlite")
# A count the API announced (a cluster's size, a totalCount, their sums): BIGINT on PostgreSQL
# (migration 0005), whose INTEGER stops at 2**31 - 1, where SQLite's holds any count the client
# takes (up to 2**53 - 1): a tenant announcing three billion failed the whole snapshot there only.
ANNOUNCED = BigInteger().with_variant(Integer(), "sqlite")

# The largest run id: ``runs.id`` is an INTEGER, 32 bits on PostgreSQL. A larger id given by a
# user names no run (and would overflow PostgreSQL's parameter: "integer out of range").
MAX_RUN_ID = 2**31 - 1

RUN_RUNNING = "running"
RUN_COMPLETE = "complete"
RUN_FAILED = "failed"
RUN_STATUSES = (RUN_RUNNING, RUN_COMPLETE, RUN_FAILED)

runs = Table(
    "runs",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("started_at", DateTime(timezone=True), nullable=False),
    Column("finished_at", DateTime(timezone=True)),
    Column("status", String(16), nullable=False, default=RUN_RUNNING),
    Column("source_url", Text),  # scheme://host[:port]/path, never credentials or query strings
    Column("cluster_filter", Text),  # the ``filter`` passed to GET /clusters, if any
    Column("auth_scheme", String(16)),  # bearer | raw | refresh: the scheme that worked
    Column("tool_version", String(32), nullable=False),
    Column("clusters_announced", ANNOUNCED),  # how many clusters the API listed
    Column("clusters_stored", Integer),
    Column("columns_announced", ANNOUNCED),  # sum over clusters of the best announced count
    Column("columns_stored", Integer),
    Column("requests", Integer),
    Column("retries", Integer),
    Column("error", Text),
    # Free-form facts about the fetch: envelope shapes seen, size/total mismatches, warnings, options.
    Column("details", JSON),
)

cluster_versions = Table(
    "cluster_versions",
    metadata,
    Column("hash", HASH, primary_key=True),
    Column("cluster_id", Text, nullable=False),
    Column("name", Text),
    Column("size", ANNOUNCED),
    Column("severity", Text),
    Column("status", Text),
    Column("created_at", Text),
    Column("cluster_type", Text),
    Column("raw", JSON, nullable=False),
)

cluster_labels = Table(
    "cluster_labels",
    metadata,
    Column("cluster_hash", HASH, ForeignKey("cluster_versions.hash", ondelete="CASCADE"), nullable=False),
    Column("position", Integer, nullable=False),
    Column("label", Text, nullable=False),
    PrimaryKeyConstraint("cluster_hash", "position"),
    sqlite_with_rowid=False,
)

column_versions = Table(
    "column_versions",
    metadata,
    Column("id", VERSION_ID, primary_key=True, autoincrement=True),
    Column("hash", HASH, nullable=False, unique=True),
    Column("fqn", Text, nullable=False),
    Column("column_name", Text),
    Column("table_name", Text),
    Column("source", Text),
    Column("data_type", Text),
    Column("is_primary", Boolean),
    Column("business_attribute", Text),
    Column("raw", JSON, nullable=False),
)

column_tags = Table(
    "column_tags",
    metadata,
    Column("column_id", VERSION_ID, ForeignKey("column_versions.id", ondelete="CASCADE"), nullable=False),
    Column("position", Integer, nullable=False),
    Column("tag_id", Text),
    Column("value_id", Text),
    Column("tag_name", Text),
    Column("tag_value", Text),
    Column("is_mutually_exclusive", Boolean),
    Column("hidden", Boolean),
    Column("application_type", Text),
    PrimaryKeyConstraint("column_id", "position"),
    sqlite_with_rowid=False,
)

column_attributes = Table(
    "column_attributes",
    metadata,
    Column("column_id", VERSION_ID, ForeignKey("column_versions.id", ondelete="CASCADE"), nullable=False),
    Column("position", Integer, nullable=False),
    Column("attribute_name", Text),
    Column("attribute_original_name", Text),
    Column("rank", Text),
    Column("confidence", Float),
    Column("attribute_type", Text),
    Column("attribute_id", Text),
    PrimaryKeyConstraint("column_id", "position"),
    sqlite_with_rowid=False,
)

run_clusters = Table(
    "run_clusters",
    metadata,
    Column("run_id", Integer, ForeignKey("runs.id", ondelete="CASCADE"), nullable=False),
    Column("cluster_id", Text, nullable=False),
    Column("cluster_hash", HASH, ForeignKey("cluster_versions.hash"), nullable=False),
    Column("position", Integer, nullable=False),  # order in which the API listed the cluster
    Column("size_announced", ANNOUNCED),  # the cluster's ``size``
    Column("total_announced", ANNOUNCED),  # ``totalCount`` of the columns endpoint, if it gave one
    Column("columns_fetched", Integer),  # distinct columns stored
    Column("duplicate_rows", Integer),  # rows received again (same fqn) and not stored twice
    Column("pages", Integer),
    # complete | short (fewer columns than announced were served; those are stored) | failed
    # (no column stored) | fetching (a snapshot stopped before the cluster ended)
    Column("fetch_status", String(16), nullable=False),
    Column("error", Text),
    PrimaryKeyConstraint("run_id", "cluster_id"),
)

run_columns = Table(
    "run_columns",
    metadata,
    Column("run_id", Integer, nullable=False),
    Column("cluster_id", Text, nullable=False),
    Column("fqn", Text, nullable=False),
    Column("column_id", VERSION_ID, ForeignKey("column_versions.id"), nullable=False),
    PrimaryKeyConstraint("run_id", "cluster_id", "fqn"),
    ForeignKeyConstraint(
        ["run_id", "cluster_id"], ["run_clusters.run_id", "run_clusters.cluster_id"], ondelete="CASCADE"
    ),
    Index("ix_run_columns_run_fqn", "run_id", "fqn"),
    # On SQLite the table is clustered on its primary key (WITHOUT ROWID), so the key b-tree holds
    # the version id too and covers the diff's four-column anti-join (auditor.diff.catalog) by
    # itself; one b-tree instead of three cut a run's membership rows from ~485 to ~200 bytes each.
    sqlite_with_rowid=False,
)

# Indexes of the references to versions, on PostgreSQL only (migration 0004): PostgreSQL checks a
# foreign key for each deleted version by searching the referencing table, and the prune deletes
# every version no run refers to any more. SQLite's prune turns the checks off instead.
POSTGRESQL_ONLY_INDEXES = frozenset({"ix_run_columns_column_id", "ix_run_clusters_cluster_hash"})
Index("ix_run_columns_column_id", run_columns.c.column_id).ddl_if(dialect="postgresql")
Index("ix_run_clusters_cluster_hash", run_clusters.c.cluster_hash).ddl_if(dialect="postgresql")


def include_object(dialect_name: str):
    """An Alembic ``include_object`` hook: compare PostgreSQL-only indexes on PostgreSQL only."""

    def include(obj, name, type_, reflected, compare_to) -> bool:
        return not (type_ == "index" and name in POSTGRESQL_ONLY_INDEXES and dialect_name != "postgresql")

    return include


evaluations = Table(
    "evaluations",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("run_id", Integer, ForeignKey("runs.id", ondelete="CASCADE"), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("rules_digest", String(64), nullable=False),  # hash of the rule set's canonical content
    Column("waivers_digest", String(64)),
    Column("rule_ids", JSON, nullable=False),
    Column("tool_version", String(32), nullable=False),
    Index("ix_evaluations_run", "run_id", "rules_digest"),
)

findings = Table(
    "findings",
    metadata,
    Column("evaluation_id", Integer, ForeignKey("evaluations.id", ondelete="CASCADE"), nullable=False),
    Column("run_id", Integer, ForeignKey("runs.id", ondelete="CASCADE"), nullable=False),
    Column("fingerprint", String(64), nullable=False),
    Column("rule_id", Text, nullable=False),
    Column("severity", String(16), nullable=False),
    Column("cluster_id", Text),
    Column("kind", String(16), nullable=False),  # column | cluster | group
    Column("column_fqn", Text),  # null for cluster and group findings
    Column("subject", Text),  # fqn for column findings, the group key for group findings
    Column("columns", JSON, nullable=False),  # every column involved (fqns)
    Column("message", Text, nullable=False),
    Column("first_seen_run", Integer),
    Column("status", String(16)),  # new | existing | waived (relative to the baseline used)
    Column("waiver", JSON),  # the matching waiver entry, if any, with its expiry state
    PrimaryKeyConstraint("evaluation_id", "fingerprint"),
    Index("ix_findings_run_fingerprint", "run_id", "fingerprint"),
    Index("ix_findings_fingerprint_run", "fingerprint", "run_id"),  # first-seen lookups
)
