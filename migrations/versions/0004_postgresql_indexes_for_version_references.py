"""index the references to versions on PostgreSQL

PostgreSQL checks a foreign key for each deleted parent row by searching the child table for a
reference to it. ``run_columns.column_id`` and ``run_clusters.cluster_hash`` were not indexed, so
deleting the versions no run refers to any more (``auditor db prune``) searched the whole membership
table once per deleted version: hours for a million columns. With these indexes each check is one
index probe. SQLite needs neither (the prune turns its foreign-key checks off on its own
connection, and an index of its ``WITHOUT ROWID`` membership table would repeat the whole primary
key per row), so on SQLite this revision changes nothing.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-04
"""

from __future__ import annotations

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.create_index("ix_run_columns_column_id", "run_columns", ["column_id"])
        op.create_index("ix_run_clusters_cluster_hash", "run_clusters", ["cluster_hash"])


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.drop_index("ix_run_clusters_cluster_hash", table_name="run_clusters")
        op.drop_index("ix_run_columns_column_id", table_name="run_columns")
