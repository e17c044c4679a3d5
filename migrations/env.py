"""Alembic environment for cluster-auditor.

Driven from code (``auditor.store.db``): the caller passes a live connection in
``config.attributes["connection"]``; there is no alembic.ini. SQLite uses batch mode so that
ALTER TABLE operations work.
"""

from __future__ import annotations

from alembic import context

from auditor.store.schema import include_object, metadata

config = context.config


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is None:
        from auditor.store.db import create_db_engine, database_url

        engine = create_db_engine(database_url(config.get_main_option("sqlalchemy.url")))
        with engine.begin() as connection:
            _run(connection)
        return
    _run(connection)


def _run(connection) -> None:
    from auditor.store.db import version_table_schema

    context.configure(
        connection=connection,
        target_metadata=metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
        include_object=include_object(connection.dialect.name),
        # PostgreSQL: the revision beside the tables, never another application's through the path
        version_table_schema=version_table_schema(connection),
    )
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():  # pragma: no cover - offline SQL generation is not offered
    raise SystemExit("cluster-auditor migrations run online only: use `auditor db upgrade`")
run_migrations_online()
