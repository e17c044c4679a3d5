"""announced counts as BIGINT on PostgreSQL

A cluster's ``size``, a listing's ``totalCount`` and their sums are what the tenant announced; the
client takes any count up to 2**53 - 1 (JSON's safe integers). PostgreSQL's INTEGER stops at
2**31 - 1, so a tenant announcing three billion columns failed the whole snapshot there ("integer
out of range") while SQLite, whose INTEGER is 64-bit, stored it. On PostgreSQL these columns become
BIGINT (a rewrite of the runs and cluster tables, which are small: one row per run, per cluster
version and per cluster of a run); on SQLite this revision changes nothing.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

COLUMNS = (
    ("runs", "clusters_announced"),
    ("runs", "columns_announced"),
    ("cluster_versions", "size"),
    ("run_clusters", "size_announced"),
    ("run_clusters", "total_announced"),
)


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for table, column in COLUMNS:
            op.alter_column(table, column, type_=sa.BigInteger(), existing_type=sa.Integer())


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for table, column in COLUMNS:
            op.alter_column(table, column, type_=sa.Integer(), existing_type=sa.BigInteger())
