"""Fixtures shared by every test area.

* ``sandbox``: a factory that starts an in-process BigID-compatible sandbox on a loopback port with the
  given knobs and stops it at teardown: ``server = sandbox(clusters=5, columns=200, auth="raw")``;
  ``server.url``, ``server.key`` (the API key to present), ``server.dataset`` (the ground truth) and
  ``server.stats``. Knobs are those of :class:`auditor.sandbox.SandboxConfig`; a ``config=`` argument
  passes a ready config instead.
* ``tmp_db``: the path (str) of a fresh, not yet created SQLite file in ``tmp_path``; ``db_url`` is
  its ``sqlite:///`` URL.
* ``run_cli(*args, env=None)``: the CLI in-process, in ``tmp_path``, without BigID/database variables.
* ``fresh_postgres``: another empty PostgreSQL database of its own per test (migration tests).
* ``postgres_url``: session-scoped; a fresh, empty PostgreSQL database created on the server named by
  ``AUDITOR_TEST_POSTGRES_URL`` and dropped at the end of the session; the tests using it are skipped
  with a clear reason when the variable is unset.
"""

from __future__ import annotations

import contextlib
import os
import signal
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from auditor.sandbox import SandboxConfig, SandboxServer

POSTGRES_ENV = "AUDITOR_TEST_POSTGRES_URL"


def pytest_configure(config: pytest.Config) -> None:
    """Ctrl-C tests need SIGINT to reach Python: restore it when the suite was started with it ignored.

    A shell without job control starts a background command (``cmd &``) with SIGINT ignored, Python
    then installs no KeyboardInterrupt handler, and the ignored disposition is inherited by every
    process a test starts: the Ctrl-C and ``sandbox serve`` stop tests would fail for the way the
    suite was launched, not for the code. A handled signal is reset to the default in children.
    """
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture
def sandbox() -> Iterator[Callable[..., SandboxServer]]:
    started: list[SandboxServer] = []

    def start(config: SandboxConfig | None = None, **knobs: Any) -> SandboxServer:
        if config is None:
            config = SandboxConfig(**knobs)
        elif knobs:
            config = config.with_changes(**knobs)
        server = SandboxServer(config).start()
        started.append(server)
        return server

    yield start
    for server in reversed(started):
        server.stop()


@pytest.fixture
def tmp_db(tmp_path) -> str:
    return str(tmp_path / "auditor.db")


@pytest.fixture
def db_url(tmp_db: str) -> str:
    return f"sqlite:///{tmp_db}"


@contextlib.contextmanager
def scratch_database(base: str, prefix: str, options: str = "") -> Iterator[str]:
    """A new, empty database on the server of URL ``base``, dropped on exit; its URL. ``options``
    follow ``CREATE DATABASE name`` (a template, a locale provider)."""
    psycopg = pytest.importorskip("psycopg", reason="PostgreSQL tests need psycopg 3 (pip install psycopg)")
    from sqlalchemy.engine import make_url

    url = make_url(base)
    admin = url.set(drivername="postgresql").render_as_string(hide_password=False)
    name = f"{prefix}_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    try:
        with psycopg.connect(admin, autocommit=True, connect_timeout=10) as conn:
            conn.execute(f'CREATE DATABASE "{name}" {options}')
    except psycopg.Error as exc:
        pytest.fail(f"{POSTGRES_ENV} is set but the server refused to create a test database: {exc}")
    try:
        yield url.set(database=name).render_as_string(hide_password=False)
    finally:
        with psycopg.connect(admin, autocommit=True, connect_timeout=10) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    base = os.environ.get(POSTGRES_ENV, "").strip()
    if not base:
        pytest.skip(
            f"{POSTGRES_ENV} is not set: PostgreSQL tests need a server, "
            "e.g. postgresql://postgres@127.0.0.1:5432/test (.ci/run sets it)"
        )
    with scratch_database(base, "auditor_test") as url:
        yield url


@pytest.fixture
def fresh_postgres(postgres_url: str) -> Iterator[str]:
    """An empty database of its own on the test server, dropped afterwards (for migration tests)."""
    with scratch_database(postgres_url, "auditor_fresh") as url:
        yield url


@pytest.fixture
def run_cli(monkeypatch, tmp_path):
    """``run_cli(*args, env=None)``: the CLI in-process (CliRunner) in an empty working folder, with
    no BigID or database settings inherited from the environment."""
    from click.testing import CliRunner

    from auditor.cli.main import cli

    monkeypatch.chdir(tmp_path)  # no stray auditor.toml
    for name in ("BIGID_URL", "BIGID_TOKEN", "AUDITOR_DB"):
        monkeypatch.delenv(name, raising=False)

    def invoke(*args: str, env: dict[str, str] | None = None):
        return CliRunner().invoke(cli, list(args), env=env, catch_exceptions=False)

    return invoke
