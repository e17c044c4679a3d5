"""the schema of databases created on the first day, brought in line with the others

Revisions 0001 and 0002 were amended after databases had been created with them: 0002 gained the
index ``ix_findings_fingerprint_run`` (first-seen lookups by fingerprint), and 0001 made
``cluster_labels`` a ``WITHOUT ROWID`` table on SQLite (0003 rebuilds the other such tables, not
this one). A database stamped 0002 before those amendments upgraded to head without either: a
schema that differs from a new database's, slower first-seen lookups on a long history, and a
trap for any later migration that assumes them (found by an upgrade probe). This revision adds
what is missing and changes nothing where it is already there.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    bind = op.get_bind()
    indexes = {index["name"] for index in sa.inspect(bind).get_indexes("findings")}
    if "ix_findings_fingerprint_run" not in indexes:
        op.create_index("ix_findings_fingerprint_run", "findings", ["fingerprint", "run_id"])
    if bind.dialect.name == "sqlite":
        created = bind.exec_driver_sql(
            "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'cluster_labels'"
        ).scalar()
        if created is not None and "WITHOUT ROWID" not in created.upper():
            _rebuild_cluster_labels()


def _rebuild_cluster_labels() -> None:
    """``cluster_labels`` again, as 0001 now creates it: one b-tree keyed by (hash, position)."""
    op.create_table(
        "_cluster_labels_new",
        sa.Column("cluster_hash", sa.String(length=32), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("label", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(
            ["cluster_hash"],
            ["cluster_versions.hash"],
            name=op.f("fk_cluster_labels_cluster_hash_cluster_versions"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("cluster_hash", "position", name=op.f("pk_cluster_labels")),
        sqlite_with_rowid=False,
    )
    op.execute(
        "INSERT INTO _cluster_labels_new (cluster_hash, position, label) "
        "SELECT cluster_hash, position, label FROM cluster_labels"
    )
    op.drop_table("cluster_labels")
    op.rename_table("_cluster_labels_new", "cluster_labels")


def downgrade() -> None:
    # Both are what 0001 and 0002 create today: a database downgraded to 0005 keeps them.
    pass
