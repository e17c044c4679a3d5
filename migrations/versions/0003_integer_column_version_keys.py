"""integer keys for column versions

Column versions get an integer surrogate key (``column_versions.id``); run membership, tags and
attributes refer to a version by that id instead of by its 32-character content hash. The hash
stays, unique, as the version's content identity. Nothing is lost: every existing reference is
translated through the hash.

SQLite cannot change a primary key in place, so there the four tables are rebuilt (old ones
renamed, new ones created, rows copied, old ones dropped); an existing version keeps its rowid as
its id. PostgreSQL alters the tables in place.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

VERSION_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
TAG_COLUMNS = (
    "position, tag_id, value_id, tag_name, tag_value, is_mutually_exclusive, hidden, application_type"
)
ATTRIBUTE_COLUMNS = (
    "position, attribute_name, attribute_original_name, rank, confidence, attribute_type, attribute_id"
)
VERSION_COLUMNS = "fqn, column_name, table_name, source, data_type, is_primary, business_attribute, raw"
CHILDREN = ("column_tags", "column_attributes", "run_columns")


def _version_table(by_id: bool) -> None:
    key = [sa.Column("id", VERSION_ID, autoincrement=True, nullable=False)] if by_id else []
    op.create_table(
        "column_versions",
        *key,
        sa.Column("hash", sa.String(length=32), nullable=False),
        sa.Column("fqn", sa.Text(), nullable=False),
        sa.Column("column_name", sa.Text(), nullable=True),
        sa.Column("table_name", sa.Text(), nullable=True),
        sa.Column("source", sa.Text(), nullable=True),
        sa.Column("data_type", sa.Text(), nullable=True),
        sa.Column("is_primary", sa.Boolean(), nullable=True),
        sa.Column("business_attribute", sa.Text(), nullable=True),
        sa.Column("raw", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id" if by_id else "hash", name="pk_column_versions"),
        *([sa.UniqueConstraint("hash", name="uq_column_versions_hash")] if by_id else []),
    )


def _key_column(by_id: bool) -> sa.Column:
    if by_id:
        return sa.Column("column_id", VERSION_ID, nullable=False)
    return sa.Column("column_hash", sa.String(length=32), nullable=False)


def _key_reference(table: str, by_id: bool, **options: str) -> sa.ForeignKeyConstraint:
    local, remote = ("column_id", "id") if by_id else ("column_hash", "hash")
    return sa.ForeignKeyConstraint(
        [local], [f"column_versions.{remote}"], name=f"fk_{table}_{local}_column_versions", **options
    )


def _child_tables(by_id: bool) -> None:
    key = "column_id" if by_id else "column_hash"
    op.create_table(
        "column_tags",
        _key_column(by_id),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("tag_id", sa.Text(), nullable=True),
        sa.Column("value_id", sa.Text(), nullable=True),
        sa.Column("tag_name", sa.Text(), nullable=True),
        sa.Column("tag_value", sa.Text(), nullable=True),
        sa.Column("is_mutually_exclusive", sa.Boolean(), nullable=True),
        sa.Column("hidden", sa.Boolean(), nullable=True),
        sa.Column("application_type", sa.Text(), nullable=True),
        _key_reference("column_tags", by_id, ondelete="CASCADE"),
        sa.PrimaryKeyConstraint(key, "position", name="pk_column_tags"),
        sqlite_with_rowid=False,
    )
    op.create_table(
        "column_attributes",
        _key_column(by_id),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("attribute_name", sa.Text(), nullable=True),
        sa.Column("attribute_original_name", sa.Text(), nullable=True),
        sa.Column("rank", sa.Text(), nullable=True),
        sa.Column("confidence", sa.Float(), nullable=True),
        sa.Column("attribute_type", sa.Text(), nullable=True),
        sa.Column("attribute_id", sa.Text(), nullable=True),
        _key_reference("column_attributes", by_id, ondelete="CASCADE"),
        sa.PrimaryKeyConstraint(key, "position", name="pk_column_attributes"),
        sqlite_with_rowid=False,
    )
    op.create_table(
        "run_columns",
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("cluster_id", sa.Text(), nullable=False),
        sa.Column("fqn", sa.Text(), nullable=False),
        _key_column(by_id),
        _key_reference("run_columns", by_id),
        sa.ForeignKeyConstraint(
            ["run_id", "cluster_id"],
            ["run_clusters.run_id", "run_clusters.cluster_id"],
            name="fk_run_columns_run_id_run_clusters",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("run_id", "cluster_id", "fqn", name="pk_run_columns"),
        sqlite_with_rowid=False,
    )


def _rebuild_sqlite(by_id: bool) -> None:
    """Rename the four tables away, create them in the target shape, copy the rows, drop the old."""
    for name in (*CHILDREN, "column_versions"):
        op.execute(f"ALTER TABLE {name} RENAME TO _old_{name}")
    op.execute("DROP INDEX ix_run_columns_run_fqn")  # it followed run_columns to _old_run_columns
    _version_table(by_id)
    _child_tables(by_id)
    if by_id:
        op.execute(
            f"INSERT INTO column_versions (id, hash, {VERSION_COLUMNS}) "
            f"SELECT rowid, hash, {VERSION_COLUMNS} FROM _old_column_versions ORDER BY rowid"
        )
        key_in = "v.id"
    else:
        op.execute(
            f"INSERT INTO column_versions (hash, {VERSION_COLUMNS}) "
            f"SELECT hash, {VERSION_COLUMNS} FROM _old_column_versions ORDER BY id"
        )
        key_in = "v.hash"
    match = "v.hash = o.column_hash" if by_id else "v.id = o.column_id"
    versions = "column_versions" if by_id else "_old_column_versions"
    new_key = "column_id" if by_id else "column_hash"
    for table, columns in (("column_tags", TAG_COLUMNS), ("column_attributes", ATTRIBUTE_COLUMNS)):
        selected = ", ".join(f"o.{c.strip()}" for c in columns.split(","))
        op.execute(
            f"INSERT INTO {table} ({new_key}, {columns}) SELECT {key_in}, {selected} "
            f"FROM _old_{table} AS o JOIN {versions} AS v ON {match} ORDER BY 1, 2"
        )
    op.execute(
        f"INSERT INTO run_columns (run_id, cluster_id, fqn, {new_key}) "
        f"SELECT o.run_id, o.cluster_id, o.fqn, {key_in} FROM _old_run_columns AS o "
        f"JOIN {versions} AS v ON {match} ORDER BY 1, 2, 3"
    )
    for name in (*CHILDREN, "column_versions"):
        op.execute(f"DROP TABLE _old_{name}")
    op.create_index("ix_run_columns_run_fqn", "run_columns", ["run_id", "fqn"], unique=False)


def _alter_postgresql_up() -> None:
    for table in CHILDREN:
        op.drop_constraint(f"fk_{table}_column_hash_column_versions", table, type_="foreignkey")
    op.execute("ALTER TABLE column_versions ADD COLUMN id BIGSERIAL NOT NULL")
    op.drop_constraint("pk_column_versions", "column_versions", type_="primary")
    op.create_primary_key("pk_column_versions", "column_versions", ["id"])
    op.create_unique_constraint("uq_column_versions_hash", "column_versions", ["hash"])
    for table in CHILDREN:
        op.add_column(table, sa.Column("column_id", sa.BigInteger(), nullable=True))
        op.execute(
            f"UPDATE {table} AS o SET column_id = v.id FROM column_versions AS v WHERE v.hash = o.column_hash"
        )
        op.alter_column(table, "column_id", nullable=False)
        if table != "run_columns":
            op.drop_constraint(f"pk_{table}", table, type_="primary")
        op.drop_column(table, "column_hash")
        if table != "run_columns":
            op.create_primary_key(f"pk_{table}", table, ["column_id", "position"])
        op.create_foreign_key(
            f"fk_{table}_column_id_column_versions",
            table,
            "column_versions",
            ["column_id"],
            ["id"],
            ondelete=None if table == "run_columns" else "CASCADE",
        )


def _alter_postgresql_down() -> None:
    for table in CHILDREN:
        op.drop_constraint(f"fk_{table}_column_id_column_versions", table, type_="foreignkey")
        op.add_column(table, sa.Column("column_hash", sa.String(length=32), nullable=True))
        op.execute(
            f"UPDATE {table} AS o SET column_hash = v.hash FROM column_versions AS v WHERE v.id = o.column_id"
        )
        op.alter_column(table, "column_hash", nullable=False)
        if table != "run_columns":
            op.drop_constraint(f"pk_{table}", table, type_="primary")
        op.drop_column(table, "column_id")
        if table != "run_columns":
            op.create_primary_key(f"pk_{table}", table, ["column_hash", "position"])
    op.drop_constraint("uq_column_versions_hash", "column_versions", type_="unique")
    op.drop_constraint("pk_column_versions", "column_versions", type_="primary")
    op.drop_column("column_versions", "id")
    op.create_primary_key("pk_column_versions", "column_versions", ["hash"])
    for table in CHILDREN:
        op.create_foreign_key(
            f"fk_{table}_column_hash_column_versions",
            table,
            "column_versions",
            ["column_hash"],
            ["hash"],
            ondelete=None if table == "run_columns" else "CASCADE",
        )


def upgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        _rebuild_sqlite(by_id=True)
    else:
        _alter_postgresql_up()


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        _rebuild_sqlite(by_id=False)
    else:
        _alter_postgresql_down()
