"""The shared fixtures of tests/conftest.py do what they promise."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import requests


def test_sandbox_factory_starts_and_stops_servers(sandbox):
    first = sandbox(clusters=5, columns=200, auth="raw")
    second = sandbox(seed=2)
    assert first.url != second.url
    response = requests.get(first.url + "/api/v1/clusters", headers={"Authorization": "SAMPLE"}, timeout=10)
    assert response.status_code == 200 and len(response.json()) == 5
    assert first.dataset.column_count() == 200
    assert sandbox(config=first.config, auth="bearer").config.auth == "bearer"


def test_tmp_db_is_a_fresh_path_and_db_url_its_url(tmp_db, db_url, tmp_path):
    assert Path(tmp_db).parent == tmp_path
    assert not Path(tmp_db).exists()
    assert db_url == f"sqlite:///{tmp_db}"


@pytest.mark.postgres
def test_postgres_url_is_a_database_of_this_session(postgres_url):
    from sqlalchemy import create_engine, inspect, text
    from sqlalchemy.engine import make_url

    url = make_url(postgres_url)
    assert url.database.startswith("auditor_test_")
    assert url.database != make_url(os.environ["AUDITOR_TEST_POSTGRES_URL"]).database
    engine = create_engine(url.set(drivername="postgresql+psycopg"))
    try:
        with engine.connect() as conn:
            assert conn.execute(text("select current_database()")).scalar() == url.database
        # The database is shared by the whole session, so other tests may have created the
        # project's tables in it already; nothing else may be there.
        from auditor.store.schema import metadata

        assert set(inspect(engine).get_table_names()) <= set(metadata.tables) | {"alembic_version"}
    finally:
        engine.dispose()
