"""Opening the snapshot database: URLs, SQLite pragmas, and migrations driven from code.

``open_database(target)`` accepts a file path or any SQLAlchemy URL, applies the SQLite settings
(WAL, a busy timeout, foreign keys on, ``synchronous=NORMAL``, memory-mapped reads), and upgrades a
new or older database to the newest schema on first use, so users never need an ``alembic.ini``. A
database written by a newer cluster-auditor is refused rather than guessed at.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import os
import re
import sys
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import unquote

from sqlalchemy import ColumnElement, Connection, Engine, any_, bindparam, create_engine, event, inspect
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError, SQLAlchemyError
from sqlalchemy.util import asbool

from auditor import secrets, stopping
from auditor.errors import ConfigError, StoreError
from auditor.paths import absolute_path, migrations_dir

log = secrets.scrubbed_logger("auditor.store")

DEFAULT_DB = "auditor.db"
# How long a SQLite statement waits for another connection's write lock before it fails. The longest
# write transactions this tool makes must fit, with room: a prune of a 1M-column run holds the lock
# for ~37 s, storing a 1M-column evaluation ~7 s (bench/RESULTS.md). A snapshot or check that meets
# a prune then waits for it rather than failing; a lock held longer than this is someone's stuck
# transaction, reported as such (LOCKED_HINT).
SQLITE_BUSY_TIMEOUT_MS = 300_000
# After this long waiting for the write lock, a command says so once (then waits on, up to the busy
# timeout): an operations probe took five silent minutes for a hang.
LOCK_NOTICE_SECONDS = 5.0
# Rule evaluation reads the database file through a memory map (up to SQLite's default
# compile-time ceiling of 2 GiB; a larger file is read through the map up to there and by read()
# beyond): without it, every page a connection reads is copied out of the OS cache by a system call
# into a 2 MB page cache, and each rule re-reads ~1 GB of a 1M-column run that way. Measured at 1M
# columns: the membership-to-version join 2.1 -> 0.94 s, the built-in pack ~10% less CPU. Only the
# evaluation's connections map the file (auditor.engine.evaluate.prepare_connection): the diff and
# the report gained nothing from it (1.5-1.8 s either way at 1M), and every page they touched was
# counted in the process's resident memory (the report's peak 206 MiB -> 2.3 GiB, the diff's
# 164 MiB -> 2.7 GiB, all of it the file's pages). SQLite only reads through the map (writes still
# use write()), so durability is unchanged.
SQLITE_MMAP_BYTES = 2_147_418_112
# The DB-API module of the processes that evaluate rules on a large SQLite run
# (auditor.engine.evaluate): pysqlite3 where it is installed (the ``fast`` extra, on CPython for
# glibc Linux x86-64, the platform its wheels exist for), else Python's own sqlite3.
# pysqlite3-binary bundles a current SQLite (3.51 in 0.5.4.post2) built with SQLite's
# per-connection lookaside allocator, which Debian's libsqlite3 (3.40, the one Python links
# there) leaves out. Measured at 1M columns (bench/RESULTS.md): the built-in pack's CPU
# 14.4 -> 11.9 s one rule after another, its wall 8.6-9.0 -> 7.5-7.7 s. Only there, for two reasons:
# * two copies of SQLite in one process do not see each other's locks on a file (SQLite's POSIX
#   locks are the process's, and each copy keeps its own table of them), so a program using
#   Python's sqlite3 on the database beside this library could corrupt it. Rule workers are
#   processes of their own that open the file only through pysqlite3, and only read it;
# * pysqlite3's SQLite keeps temporary tables in memory whatever PRAGMA temp_store says: VACUUM
#   of a 1.7 GB database took 1.8 GB of memory (72 MB with Python's sqlite3, which writes it to a
#   temporary file).
# AUDITOR_RULES_SQLITE names the module (``sqlite3`` or ``pysqlite3``) instead.
SQLITE_MODULES = ("pysqlite3", "sqlite3")
SQLITE_MODULE_VARIABLE = "AUDITOR_RULES_SQLITE"


@functools.cache
def _sqlite_module(name: str | None) -> ModuleType:
    if name is None:
        try:
            return importlib.import_module("pysqlite3.dbapi2")
        except ImportError:
            return importlib.import_module("sqlite3.dbapi2")
    if name not in SQLITE_MODULES:
        raise ConfigError(
            f"{SQLITE_MODULE_VARIABLE}={name!r} is not a SQLite module this tool can evaluate rules with",
            hint=f"set it to {' or '.join(SQLITE_MODULES)}, or unset it (pysqlite3 where installed)",
        )
    try:
        return importlib.import_module(f"{name}.dbapi2")
    except ImportError:
        raise ConfigError(
            f"{SQLITE_MODULE_VARIABLE}=pysqlite3, but pysqlite3 is not installed",
            hint="install the fast extra (pip install 'cluster-auditor[fast]': CPython on Linux x86-64),"
            " or unset the variable",
        ) from None


def rules_sqlite_module() -> ModuleType:
    """The DB-API module rule-evaluating worker processes open SQLite with (see
    :data:`SQLITE_MODULES`); a :class:`ConfigError` when :data:`SQLITE_MODULE_VARIABLE` names
    another, or one not installed."""
    return _sqlite_module(os.environ.get(SQLITE_MODULE_VARIABLE, "").strip() or None)


def database_url(target: str | os.PathLike[str] | None = None) -> str:
    """Turn ``--db`` / ``AUDITOR_DB`` (a path or a URL; ``None``: ``./auditor.db``) into a
    SQLAlchemy URL. An empty one is refused, as ``--db ""`` is: it opened ``./auditor.db``."""
    if target is not None and not isinstance(target, str | os.PathLike):  # 5 made a file named '5'
        raise TypeError(f"the database: expected a path or a URL, not {type(target).__name__}")
    if target is not None and not str(target).strip():
        raise ConfigError(
            "--db: the database path or URL is empty", hint=f"give a path, or None for {DEFAULT_DB}"
        )
    value = str(target) if target is not None else DEFAULT_DB
    if "://" in value:
        try:
            url = make_url(value)
            url.port  # noqa: B018 - a port that is no number raises here, not deep in the driver
        except (ArgumentError, ValueError) as exc:
            hint = str(exc) if isinstance(exc, ArgumentError) else "check the host and the port"
            raise ConfigError(f"--db: {_redact(value)} is not a valid database URL", hint=hint) from None
        if url.host and "@" in url.host:  # an '@' in the password: the rest of it was read as the host
            raise ConfigError(
                "--db: the database URL has an '@' after the user's password",
                hint="write an '@' inside the password as %40",
            )
        # Hidden from every message from now on, however a driver quotes it.
        secrets.register(url.password)
        for name, item in url.query.items():
            if name.lower() in SECRET_PARAMETERS:
                for secret in (item,) if isinstance(item, str) else item:
                    secrets.register(secret)
        if url.drivername in ("postgresql", "postgres"):
            url = url.set(drivername="postgresql+psycopg")
        if url.get_backend_name() == "sqlite":
            try:  # the driver's options read as SQLAlchemy reads them ('?uri=maybe' was an internal error)
                url.get_dialect()().create_connect_args(url)
            except (ArgumentError, ValueError) as exc:
                raise ConfigError(
                    f"--db {_redact(value)}: {str(exc).splitlines()[0]}",
                    hint="a SQLite URL is sqlite:///relative/path.db or sqlite:////absolute/path.db (or give "
                    "the path alone)"
                    if isinstance(exc, ArgumentError)
                    else "check the options after '?' in --db / AUDITOR_DB (the driver's connection options)",
                ) from None
        return url.render_as_string(hide_password=False)
    try:
        path = Path(value).expanduser()
    except RuntimeError:  # ~nosuchuser/x.db
        raise ConfigError(f"--db: cannot expand {value!r}: no such user's home folder") from None
    if path.is_dir():
        raise ConfigError(f"--db: {path} is a folder, not a database file")
    try:
        str(path).encode("utf-8")
    except UnicodeEncodeError:  # bytes the file name encoding could not decode: SQLite takes UTF-8
        utf8 = sys.getfilesystemencoding().lower().replace("-", "") == "utf8"
        raise ConfigError(
            f"--db: {str(path)!a} holds bytes that are not valid in the file name encoding "
            f"({sys.getfilesystemencoding()})",
            hint="rename the file or folder so that its name is UTF-8 text"
            if utf8
            else "run under a UTF-8 locale (LC_ALL=C.UTF-8, or PYTHONUTF8=1), or name a file in ASCII",
        ) from None
    # Built, not formatted: a '?' or '%' in a file name is part of the name, not of the URL.
    return URL.create("sqlite", database=str(path.resolve())).render_as_string()


def sqlite_file(url: str | URL) -> str | None:
    """The file a SQLite URL opens; ``None`` for an in-memory database or another dialect.

    ``sqlite:///file:x.db?mode=ro&uri=true`` (SQLite's own URI form, which SQLAlchemy passes on
    as it is) opens ``x.db``: every check of the file (does it exist, may it be written, was it
    replaced) must look there, not for a file named ``file:x.db`` (a probe: ``check`` and ``runs``
    said no database existed while ``run`` used it).
    """
    url = make_url(url) if isinstance(url, str) else url
    database = url.database
    if url.get_backend_name() != "sqlite" or not database or database == ":memory:":
        return None
    if not (asbool(url.query.get("uri", False)) and database.startswith("file:")):  # as the driver reads it
        return database
    if str(url.query.get("mode", "")).lower() == "memory":
        return None
    path = database[len("file:") :].partition("#")[0]
    if path.startswith("//"):  # file://host/path: SQLite takes an empty host or localhost only
        path = "/" + path[2:].partition("/")[2]
    path = unquote(path)
    return path if path and path != ":memory:" else None


SECRET_PARAMETERS = frozenset({"password", "passwd", "pwd", "sslpassword"})


def _redact(url: str) -> str:
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):
        return "<unparseable URL>"
    masked = "***"
    if parsed.host and "@" in parsed.host:
        parsed = parsed.set(host=parsed.host.rsplit("@", 1)[1], password=masked)
    query = parsed.query
    if any(name.lower() in SECRET_PARAMETERS for name in query):
        hidden = {name: masked if name.lower() in SECRET_PARAMETERS else item for name, item in query.items()}
        parsed = parsed.set(query=hidden)
    return parsed.render_as_string(hide_password=True).replace("%2A%2A%2A", masked)


def display_url(url: str) -> str:
    """The URL with any password hidden, for messages."""
    return _redact(url)


def url_holds_password(target: str) -> bool:
    """Whether a ``--db`` value is a URL with a password (never to be printed back)."""
    return "://" in target and holds_secret(target)


def absolute_db(db: str) -> str:
    """A ``--db`` value that names the same database from any folder: a file path made absolute
    (in a ``sqlite:///`` URL too); a server's URL as it is."""
    if "://" not in db:
        return absolute_path(db)
    head, _, rest = db.partition(":///")
    if head.startswith("sqlite") and rest and not rest.startswith(("/", ":memory:", "file:")):
        path, query = rest.partition("?")[::2]
        return f"{head}:///{absolute_path(path)}" + (f"?{query}" if query else "")
    return db


def follow_up_db(engine: Engine) -> str | None:
    """The ``--db`` value that names ``engine``'s database in a command printed for later, from any
    folder: its file's absolute path (its URL when it has options), a server's URL; ``None`` for an
    in-memory database and for a URL that holds a password (never printed)."""
    url = engine.url
    rendered = url.render_as_string(hide_password=False)
    if url.get_backend_name() == "sqlite":
        name = url.database or ""
        if not name or name == ":memory:" or "mode=memory" in rendered:
            return None
        if not url.query and not name.startswith("file:"):
            return absolute_path(name)
        if name.startswith("file:"):  # (rendered, its ':' is escaped: %3A)
            from urllib.parse import urlencode

            rendered = f"{url.drivername}:///{name}" + (
                f"?{urlencode(url.query, doseq=True)}" if url.query else ""
            )
    return None if url_holds_password(rendered) else absolute_db(rendered)


def holds_secret(url: str) -> bool:
    """Whether ``url`` carries a password (or a secret query parameter, or cannot be parsed to
    tell): what :func:`display_url` would mask. Not a comparison with :func:`display_url`, which
    also sorts query parameters and escapes ``:`` in a ``file:`` name."""
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):
        return True
    return (
        parsed.password is not None
        or "@" in (parsed.host or "")
        or any(name.lower() in SECRET_PARAMETERS for name in parsed.query)
    )


def _json_dumps(value) -> str:
    import orjson

    try:
        return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS).decode()
    except (TypeError, orjson.JSONEncodeError):
        import json

        # A lone UTF-16 surrogate (text quoted from a bad record) is written as the six characters
        # of its escape, not as the escape itself: read back, an escaped lone surrogate is no JSON
        # (auditor.jsonexact), and the run's record would read as damaged.
        text = json.dumps(value, default=str, ensure_ascii=False)
        return _LONE_SURROGATE.sub(lambda m: f"\\\\u{ord(m.group()):04x}", text)


_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def json_text(value) -> str:
    """``value`` as the JSON text the engine stores in JSON columns (``None`` as JSON ``null``)."""
    return _json_dumps(value)


def _json_loads(text):
    import orjson

    from auditor import jsonexact

    try:
        return jsonexact.loads(text)  # as stored: integers past 64 bits stay exact
    except orjson.JSONDecodeError as exc:  # stored by us as JSON: changed outside, or a damaged file
        raise StoreError(
            f"a value stored as JSON in the database is damaged ({exc})",
            hint="the database was changed outside cluster-auditor, or is damaged: restore it from a backup",
        ) from None


@contextlib.contextmanager
def lock_wait_notice(after: float | None = None) -> Iterator[None]:
    """Around a statement that only takes SQLite's write lock (``BEGIN IMMEDIATE``, a no-op
    update): a warning, once, if it is still waiting after ``after`` seconds. SQLite waits for
    another process's lock inside its C busy handler, saying nothing, for up to the busy timeout.
    ``after``: :data:`LOCK_NOTICE_SECONDS` unless given."""
    after = LOCK_NOTICE_SECONDS if after is None else after
    left = max(0.0, SQLITE_BUSY_TIMEOUT_MS / 1000 - after)
    timer = threading.Timer(
        after,
        log.warning,
        (
            "waiting for the database's write lock, which another process holds (a snapshot, check or "
            "prune running meanwhile?); waiting up to %.0f s more",
            left,
        ),
    )
    timer.daemon = True
    timer.start()
    try:
        yield
    finally:
        timer.cancel()
        timer.join()  # its thread ends when it wakes: none is left behind the statement


def _sqlite_pragmas(dbapi_connection, _record) -> None:  # pragma: no cover - exercised via engines
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def _postgres_settings(dbapi_connection, _record) -> None:  # pragma: no cover - exercised via engines
    """Session settings of every PostgreSQL connection: JIT compilation off (PostgreSQL 11+), lock
    waits bounded like SQLite's (``lock_timeout``), and times in UTC.

    The planner's cost estimate of a rule or diff statement over a whole run is far above
    ``jit_above_cost``, so PostgreSQL compiles it with LLVM first: 1.27 s of compiling for a
    1.27 s statement (``rank-sensitivity-mismatch`` at 200,000 columns, 0.47 s without). The
    statements are short scans, joins and aggregates that compiling never pays back.
    """
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("SELECT current_setting('server_version_num')::int >= 110000")
        if cursor.fetchone()[0]:
            cursor.execute("SET jit = off")
        # A lock held elsewhere (a prune, a stuck session) is waited for as long as SQLite's busy
        # timeout, then fails with the lock hint; PostgreSQL's default is to wait forever.
        cursor.execute(f"SET lock_timeout = {int(SQLITE_BUSY_TIMEOUT_MS)}")
        # Times come back in UTC whatever the server's or PGTZ's zone: the report and the email
        # print them as UTC, and a session in New York showed 09:22 "UTC" for 14:22.
        cursor.execute("SET TIME ZONE 'UTC'")
    finally:
        cursor.close()
    dbapi_connection.commit()  # a SET in a transaction that the pool rolls back would be undone


def create_db_engine(url: str, *, sqlite_module: ModuleType | None = None) -> Engine:
    """An engine for ``url`` with this project's connection settings (no migration).

    ``sqlite_module``: the DB-API module for a SQLite URL of SQLAlchemy's default driver instead of
    Python's sqlite3 (:func:`rules_sqlite_module`, in a process that opens the file only so)."""
    try:
        if url.startswith("sqlite"):
            path = sqlite_file(url)
            if path:
                parent = Path(path).parent
                if not parent.exists():
                    raise StoreError(
                        f"database folder {parent} does not exist", hint="create it or choose another --db"
                    )
            # another module only for SQLAlchemy's default SQLite driver (not pysqlcipher and such)
            own = sqlite_module is not None and make_url(url).get_driver_name() == "pysqlite"
            engine = create_engine(
                url,
                **({"module": sqlite_module} if own else {}),
                connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000},
                json_serializer=_json_dumps,
                json_deserializer=_json_loads,
            )
            event.listen(engine, "connect", _sqlite_pragmas)
        else:
            engine = create_engine(
                url, pool_pre_ping=True, json_serializer=_json_dumps, json_deserializer=_json_loads
            )
            if engine.dialect.name == "postgresql":
                event.listen(engine, "connect", _postgres_settings)
    except ModuleNotFoundError as exc:
        raise ConfigError(
            f"the database driver for {display_url(url)} is not installed ({exc.name})",
            hint=(
                "the [postgres] extra installs psycopg 3: use postgresql+psycopg:// (or postgresql://), "
                f"or install {exc.name} yourself"
                if exc.name != "psycopg"
                else "for PostgreSQL, install the project with its [postgres] extra, which brings psycopg 3 "
                "(as the README shows: pip install '.[postgres]' in the project's folder)"
            )
            if url.startswith("postgres")
            else f"install the driver that provides the module {exc.name!r} (SQLite and PostgreSQL are the "
            "tested databases)",
        ) from None
    except NoSuchModuleError:
        raise ConfigError(
            f"--db: {display_url(url)} names a kind of database SQLAlchemy does not know "
            f"({make_url(url).drivername!r})",
            hint="give a file path (SQLite), sqlite:///FILE or postgresql://USER@HOST/NAME",
        ) from None
    return engine


def _alembic_config(connection=None):
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(migrations_dir()))
    config.attributes["connection"] = connection
    return config


def head_revision() -> str:
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(_alembic_config()).get_current_head()


def version_table_schema(connection: Connection) -> str | None:
    """Where the schema revision is kept: on PostgreSQL the schema the store's tables are made in
    (``current_schema()``), named explicitly. Left to the search path, Alembic read another
    application's ``public.alembic_version`` beside a schema of the tool's own (found by a probe:
    "written by a newer cluster-auditor (schema revision a1b2c3d4e5f6)")."""
    if connection.dialect.name != "postgresql":
        return None
    return connection.exec_driver_sql("SELECT current_schema()").scalar()


def current_revision(engine: Engine) -> str | None:
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as connection:
        opts = {"version_table_schema": version_table_schema(connection)}
        return MigrationContext.configure(connection, opts=opts).get_current_revision()


def _refuse_unknown(engine: Engine, revision: str | None) -> None:
    """A schema revision this version does not know was written by a newer cluster-auditor."""
    from alembic.script import ScriptDirectory

    script = ScriptDirectory.from_config(_alembic_config())
    if revision is not None and revision not in {rev.revision for rev in script.walk_revisions()}:
        raise StoreError(
            f"the database {display_url(str(engine.url))} was written by a newer cluster-auditor "
            f"(schema revision {revision})",
            hint="upgrade cluster-auditor, or point --db at another database (if another application "
            "that uses Alembic owns this one, give cluster-auditor a database of its own)",
        )


def _refuse_foreign(engine: Engine) -> set[str]:
    """A database without our schema revision is only set up when nothing of ours would clash.

    A SQLite file holding another application's tables is refused outright: adding ours would
    change a file the user did not mean to hand over (a mistyped ``--db``). It is looked at through a
    plain connection before ours opens it, as ours switches the file to WAL. A server database may
    well be shared, so there only tables named like ours are refused (the migration would fail on
    them, or worse, read them). Returns the tables found (what :func:`require_tables` needs when
    no upgrade follows).
    """
    from auditor.store.schema import metadata

    where = display_url(str(engine.url))
    if engine.dialect.name == "sqlite":
        database = sqlite_file(engine.url)
        if not database or not Path(database).is_file():
            return set()
        try:
            with contextlib.closing(engine.dialect.dbapi.connect(database)) as peek:
                rows = peek.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()
        except engine.dialect.dbapi.Error:
            return set()  # not a database, or damaged: reported when ours opens it
        found = {name for (name,) in rows if not name.startswith("sqlite_")}
        if found and "alembic_version" not in found:
            shown = ", ".join(sorted(found)[:5]) + (f" and {len(found) - 5} more" if len(found) > 5 else "")
            raise StoreError(
                f"the database {where} belongs to another application (tables: {shown}); "
                "cluster-auditor adds its tables only to a new or empty database",
                hint="check --db / AUDITOR_DB, or point it at a new file",
            )
        return found
    with engine.connect() as connection:
        schema = version_table_schema(connection)
    if schema is None:  # no schema of the search path exists, or the role may not use it
        raise StoreError(
            f"the database {where} offers this role no schema to use: none of its search path "
            "exists or may be used, so its runs could not be read nor tables be created",
            hint="grant the role USAGE (and CREATE, to create the tables) on the store's schema, or "
            "name the schema: ?options=-csearch_path%3DSCHEMA",
        )
    found = set(inspect(engine).get_table_names())
    clash = sorted(found & set(metadata.tables))
    if clash and current_revision(engine) is None:
        raise StoreError(
            f"the database {where} already has tables named {', '.join(clash)} that cluster-auditor did "
            "not create (it has no cluster-auditor schema revision)",
            hint="give cluster-auditor a database of its own, or a schema of its own "
            "(e.g. ?options=-csearch_path%3Dauditor after creating the schema auditor)",
        )
    return found


UPGRADE_LOCK = 0x61756469746F72  # 'auditor': the advisory lock PostgreSQL upgrades take
# Alembic runs a migration through module-level proxies (``alembic.context``, ``alembic.op``) bound
# to the running migration: two threads upgrading two databases at once ran each other's operations
# on the wrong connection (half a schema in one file, KeyError/SystemError in the other). One
# upgrade at a time per process; other processes are kept apart by the database's own locks.
_upgrading = threading.Lock()


def upgrade(engine: Engine, revision: str = "head") -> tuple[str | None, str]:
    """Upgrade the database to ``revision``; return (revision before, revision after)."""
    from alembic import command

    try:
        _refuse_foreign(engine)  # (it connects: a server that cannot be reached is reported below)
        before = current_revision(engine)
        _refuse_unknown(engine, before)
        with engine.begin() as connection:
            if connection.dialect.name == "sqlite":
                # pysqlite opens a transaction only before INSERT/UPDATE/DELETE, so a migration's
                # CREATE/ALTER/DROP would each commit on their own and a failure halfway (Ctrl-C,
                # a full disk) would leave a half-rebuilt schema. One explicit transaction makes
                # the whole upgrade all or nothing, as on PostgreSQL.
                # IMMEDIATE: the write lock first (waiting up to the busy timeout for another
                # process's upgrade), so that Alembic reads the revision under it. A deferred BEGIN
                # read first, then failed at once with "database is locked" when it came to write.
                with lock_wait_notice():
                    connection.exec_driver_sql("BEGIN IMMEDIATE")
            elif connection.dialect.name == "postgresql":
                # Two commands upgrading at once: the second waits, then finds nothing to do.
                connection.exec_driver_sql("SELECT pg_advisory_xact_lock(%(key)s)", {"key": UPGRADE_LOCK})
            # the database's own lock first: a wait for another process's upgrade of this database
            # (up to the busy timeout) does not hold up other threads' upgrades of other databases
            with _upgrading:
                command.upgrade(_alembic_config(connection), revision)
        return before, current_revision(engine) or ""
    except SQLAlchemyError as exc:
        detail = str(getattr(exc, "orig", exc)).splitlines()[0][:200]
        if unwritable := _unwritable_error(engine, "migrate", detail):
            raise unwritable from None
        if _disk_failed(detail):
            raise StoreError(
                f"could not migrate the database {display_url(str(engine.url))}: {detail}", hint=DISK_HINT
            ) from None
        locked = any(text in detail for text in _LOCKED)
        raise StoreError(
            f"could not migrate the database {display_url(str(engine.url))}: {type(exc).__name__}",
            hint=LOCKED_HINT.format(seconds=SQLITE_BUSY_TIMEOUT_MS / 1000) if locked else detail,
        ) from None


def holds_a_store(target: str | os.PathLike[str] | None = None) -> bool:
    """Whether the database at ``target`` exists and holds this tool's tables (or at least its
    schema revision): for commands that only read runs, which must not create a store where a
    mistyped ``--db`` points, a SQLite file or a server's database alike (another application's
    database on a shared server got our eleven tables from ``auditor runs``). A server that cannot
    be reached counts as holding one: opening it then says what is wrong."""
    url = database_url(target)
    if url.startswith("sqlite"):
        path = sqlite_file(url)
        return not path or Path(path).exists()
    engine = create_db_engine(url)
    try:
        with engine.connect() as connection:
            if connection.dialect.name == "postgresql" and version_table_schema(connection) is None:
                return True  # no schema this role may use: opening it says so
            names = set(inspect(connection).get_table_names())
    except SQLAlchemyError:
        return True
    finally:
        engine.dispose()
    return bool(names & {"alembic_version", "runs"})


FILE_GONE = "gone"


def file_identity(engine: Engine) -> tuple[int, int] | str | None:
    """The SQLite file of ``engine`` as (device, inode), :data:`FILE_GONE` when no file can be
    found at its path any more (deleted, its folder replaced or out of reach); ``None`` for a
    server's database, an in-memory one, or a file system that numbers no file (inode 0)."""
    path = sqlite_file(engine.url)
    if not path:
        return None
    try:
        found = os.stat(path)
    except OSError:  # ENOENT, ENOTDIR (its folder replaced by a file), ESTALE, EACCES
        return FILE_GONE
    if not found.st_ino:
        return None
    return (found.st_dev, found.st_ino)


class DatabaseFileGone(StoreError):
    """The SQLite file a command was writing was deleted or replaced meanwhile (exit 3)."""


SIDECARS = ("-wal", "-shm")  # the write-ahead log of a SQLite file, beside it


def sidecar_identities(engine: Engine) -> dict[str, tuple[int, int]]:
    """The write-ahead log files of the SQLite file of ``engine`` that exist, by path, as
    (device, inode); empty for a server's database."""
    path = sqlite_file(engine.url)
    found: dict[str, tuple[int, int]] = {}
    if not path:
        return found
    for suffix in SIDECARS:
        with contextlib.suppress(OSError):
            stat = os.stat(path + suffix)
            if stat.st_ino:
                found[path + suffix] = (stat.st_dev, stat.st_ino)
    return found


def require_same_file(
    engine: Engine,
    identity: tuple[int, int] | str | None,
    what: str,
    sidecars: dict[str, tuple[int, int]] | None = None,
) -> None:
    """Raise :class:`StoreError` when the SQLite file of ``engine`` is no longer the one that had
    ``identity`` (:func:`file_identity`): deleted, or replaced by another file, while ``what``.

    Its connections would go on writing into the deleted file (a snapshot then ended "complete",
    exit 0, with nothing left on disk), or into the file put in its place with the old one's
    write-ahead log (which damaged it).

    ``sidecars`` (:func:`sidecar_identities`, kept up to date here while the file is the same): the
    write-ahead log the command's connections use. SQLite leaves it beside the path when the file
    under it has moved, and the next command to open the file now there (or a backup restored
    there) replayed the old file's pages into it: a malformed database, for good. Those of its
    files that are still the ones the command used are removed when the file is found gone.
    """
    if identity is None or identity == FILE_GONE:
        return
    now = file_identity(engine)
    if now == identity or now is None:
        if sidecars is not None:
            sidecars.clear()
            sidecars.update(sidecar_identities(engine))
        return
    removed = []
    for path, seen in sorted((sidecars or {}).items()):
        with contextlib.suppress(OSError):
            stat = os.stat(path)
            if (stat.st_dev, stat.st_ino) == seen:
                os.unlink(path)
                removed.append(Path(path).name)
    how = "deleted (or can no longer be reached)" if now == FILE_GONE else "replaced by another file"
    cleared = (
        f"; its write-ahead log ({', '.join(removed)}) was removed, so that no command applies it to "
        "the file there now"
        if removed
        else ""
    )
    raise DatabaseFileGone(
        f"the database file {sqlite_file(engine.url)} was {how} while {what}",
        hint=f"nothing more is written to it{cleared}; restore the file (or remove what replaced it) and "
        "run the command again",
    )


def open_database(target: str | os.PathLike[str] | None = None, *, migrate: bool = True) -> Engine:
    """Open (and by default create or upgrade) the database at ``target`` (path or URL).

    A SQLite file this user may not write is refused (exit 3), as one in a folder it may not write
    is: SQLite opened it read-only and left its write-ahead log files beside it with the file's
    read-only mode, owned by this user, and the next command that writes (the file's owner's
    scheduled snapshot) then failed with "attempt to write a readonly database".
    """
    url = database_url(target)
    engine = create_db_engine(url)
    path = sqlite_file(engine.url)
    if not migrate and path and not os.path.exists(path):
        # (SQLite would create an empty file, and the first query fail on a missing table)
        engine.dispose()
        raise StoreError(
            f"there is no database at {path}",
            hint="open it with migrate=True to create it (as every command does), or check the path",
        )
    if path and os.path.isfile(path) and not os.access(path, os.W_OK):
        refused = _unwritable_error(engine, "open")
        engine.dispose()
        if refused is not None:
            raise refused
    try:
        found = _refuse_foreign(engine) if migrate else None
        current, head = (current_revision(engine), head_revision()) if migrate else (None, None)
        if migrate and current != head:
            _refuse_unknown(engine, current)  # before announcing an upgrade that cannot happen
            if current is not None:  # an existing database: say why this first command pauses
                # only the rebuild of 0003 takes long (the README lists what each revision does)
                slow = current < "0003" <= head
                log.warning(
                    # one way (a probe: nothing said so, and even 'auditor runs' upgrades)
                    "upgrading the database %s from schema revision %s to %s%s; older versions of "
                    "cluster-auditor cannot open it afterwards",
                    display_url(url),
                    current,
                    head,
                    "; on a large database this takes about a minute per million stored column versions"
                    if slow
                    else "",
                )
            upgrade(engine)
            found = None  # the upgrade made tables: look again
        if migrate:
            require_tables(engine, found)
    except SQLAlchemyError as exc:
        reason = str(getattr(exc, "orig", exc)).splitlines()[0][:200]
        if unwritable := _unwritable_error(engine, "open", reason):
            raise unwritable from None
        if "file is not a database" in reason or "database disk image is malformed" in reason:
            raise StoreError(
                f"could not open the database {display_url(url)}: {reason} (SQLite)",
                hint="check --db / AUDITOR_DB: it names a file that is not an auditor database, or a "
                "damaged one (restore it from a backup)",
            ) from None
        if "invalid connection option" in reason or reason.startswith("bad value for "):
            # an option of the URL the driver refuses (?bogus=1, ?connect_timeout=abc): a setting
            # to correct, exit 2, not a database that failed
            engine.dispose()
            raise ConfigError(
                f"--db {display_url(url)}: {reason}",
                hint="check the options after '?' in --db / AUDITOR_DB (the driver's connection options)",
            ) from None
        if _disk_failed(reason):
            raise StoreError(
                f"could not open the database {display_url(url)}: {reason}", hint=DISK_HINT
            ) from None
        raise StoreError(
            f"could not open the database {display_url(url)}: {type(exc).__name__}", hint=reason
        ) from None
    return engine


@contextlib.contextmanager
def bounded_lock_wait(connection: Connection, seconds: float | None) -> Iterator[None]:
    """Inside the block, statements of ``connection`` wait at most ``seconds`` for another's lock
    (instead of :data:`SQLITE_BUSY_TIMEOUT_MS`): for work done while the command is being stopped.
    ``None``: the usual wait. Call it inside a transaction (PostgreSQL's ``SET LOCAL``)."""
    if seconds is None:
        yield
        return
    if connection.dialect.name == "postgresql":
        connection.exec_driver_sql(f"SET LOCAL lock_timeout = {int(seconds * 1000)}")
        yield
        return
    if connection.dialect.name != "sqlite":
        yield
        return
    connection.exec_driver_sql(f"PRAGMA busy_timeout = {int(seconds * 1000)}")
    try:
        yield
    finally:
        with contextlib.suppress(SQLAlchemyError):
            connection.exec_driver_sql(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")


def require_tables(engine: Engine, found: set[str] | None = None) -> None:
    """Raise StoreError when a table of the schema is missing (dropped outside cluster-auditor): its
    schema revision says it is there, so an upgrade would not recreate it, and every command would
    fail on it with a database error. ``found``: the tables, when just listed (else listed here)."""
    from auditor.store.schema import metadata

    missing = sorted(set(metadata.tables) - (found if found else set(table_names(engine))))
    if missing:
        raise StoreError(
            f"the database {display_url(str(engine.url))} lacks the table"
            f"{'s' if len(missing) > 1 else ''} {', '.join(missing)} of its schema (schema revision "
            f"{current_revision(engine)}): it was changed outside cluster-auditor",
            hint="restore it from a backup, or start a new database (--db)",
        )


def table_names(engine: Engine) -> list[str]:
    return sorted(inspect(engine).get_table_names())


def one_connection_only(engine: Engine) -> bool:
    """True when another connection would not see the same data: an in-memory SQLite database.

    Work spread over several connections (rules, the two halves of a diff) must stay on one
    connection there.
    """
    return engine.dialect.name == "sqlite" and sqlite_file(engine.url) is None


def keys_in(connection: Connection, column: Any, keys: Sequence[Any]) -> ColumnElement[bool]:
    """``column`` is one of ``keys`` (a chunk of a few thousand), as the database reads it fastest.

    PostgreSQL: ``column = ANY(%(keys)s)``, the keys bound as one array. An ``IN`` list binds each
    key as its own parameter, and psycopg re-parses the statement text with its thousands of
    placeholders on every call (~30 ms a chunk of 2,000: 1.5 s of a 1M-column diff). Elsewhere
    (SQLite): ``column IN (…)``.
    """
    if connection.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import ARRAY

        return column == any_(bindparam(None, list(keys), type_=ARRAY(column.type)))
    return column.in_(keys)


READ_HINT = (
    "check that the database is readable, not locked by a long write, and at the newest schema "
    "(auditor db upgrade)"
)
WRITE_HINT = "check that the database is writable and not full"
DISK_HINT = (
    "check that the disk holding the database is not full (nor the file over a size limit, ulimit -f), "
    "nor SQLite's temporary folder ($SQLITE_TMPDIR, else $TMPDIR, else /var/tmp or /tmp: large "
    "sorts and findings go there), and that the file can be read and written"
)
MALFORMED_HINT = (
    "the database file is damaged: restore it from a backup, or salvage what it holds with "
    "'sqlite3 FILE .recover | sqlite3 NEW.db' and point --db at the new file"
)


def _disk_failed(detail: str) -> bool:
    """Whether SQLite's ``detail`` is its word for a full disk or a failed read or write."""
    lowered = detail.lower()
    return any(
        words in lowered
        for words in ("disk i/o error", "database or disk is full", "no space left on device")
    )


LOCKED_HINT = (
    "another process held the database's write lock for longer than {seconds:g} s (a prune, a "
    "snapshot or a check writing to the same database, or a stuck program); re-run once it has finished"
)
_LOCKED = ("database is locked", "database table is locked", "database is busy", "lock timeout")


TIMEOUT_HINT = (
    "the server's statement_timeout ended the statement: raise it for the role the tool connects as "
    "(ALTER ROLE … SET statement_timeout = '10min') and re-run"
)
# PostgreSQL says "due to user request" for a pg_cancel_backend, and also for a statement_timeout
# that fires just as the statement before ends (the cancel lands on the next one): seen in CI with a
# 1 ms timeout
CANCELLED_HINT = (
    "the server cancelled the statement (an administrator's pg_cancel_backend, or a statement_timeout "
    "of the role's that fired between two statements): re-run; if it recurs, raise the role's "
    "statement_timeout (ALTER ROLE … SET statement_timeout = '10min')"
)
CONNECTION_LOST_HINT = "the connection to the database server was lost: check the server, then re-run"
_CONNECTION_LOST = (
    "server closed the connection",
    "terminating connection",
    "the connection is lost",
    "connection is closed",
    "consuming input failed",
)

# PostgreSQL roles: what the error names is a privilege missing, not a full or read-only disk
TEMP_HINT = (
    "the database role may not create temporary tables, which checks and prunes use: "
    "GRANT TEMP ON DATABASE <database> TO <role>"
)
PRIVILEGE_HINT = (
    "the database role lacks a privilege on the store's schema or tables (it needs USAGE and CREATE on "
    "the schema, and to own the tables to migrate them): see the README's PostgreSQL paragraph"
)
# SQLSTATEs of a transaction PostgreSQL rolled back for a conflict with a concurrent one: trying it
# again is the documented remedy (serialization_failure, deadlock_detected)
CONFLICT_SQLSTATES = frozenset({"40001", "40P01"})


def transaction_conflict(exc: BaseException) -> bool:
    """Whether ``exc`` is a transaction rolled back for a conflict with a concurrent transaction."""
    return getattr(getattr(exc, "orig", None), "sqlstate", None) in CONFLICT_SQLSTATES


SERIALIZATION_HINT = (
    "another transaction changed the same rows at the same time under SERIALIZABLE isolation; "
    "nothing was written: re-run"
)

READ_ONLY_HINT = (
    "copy the database to a folder you can write to and point --db at the copy, or mount it read-write"
)


def _unwritable_error(engine: Engine, doing: str, reason: str | None = None) -> StoreError | None:
    """The error to raise when ``reason`` (a failure to open or migrate; none: found before trying)
    is SQLite's file being unwritable: it must write the file and the journal beside it, even to
    read."""
    unwritable = _sqlite_unwritable(engine) if engine.dialect.name == "sqlite" else None
    if unwritable is None:
        return None
    return StoreError(
        f"could not {doing} the database {display_url(str(engine.url))}: {f'{reason}: ' if reason else ''}"
        f"{unwritable} (SQLite writes the file and a journal beside it, even to read it)",
        hint=READ_ONLY_HINT,
    )


def _sqlite_unwritable(engine: Engine) -> str | None:
    """Why SQLite cannot write the database file of ``engine`` or beside it, when that is the case."""
    database = sqlite_file(engine.url)
    if not database:
        return None
    path = Path(database)
    folder = path.parent
    try:
        if os.statvfs(folder).f_flag & os.ST_RDONLY:
            return f"{folder} is on a read-only file system"
    except OSError:
        return None
    if path.exists() and not os.access(path, os.W_OK):
        return f"this user may not write to {path}"
    if not os.access(folder, os.W_OK):  # the journal beside the file: the folder, not the file (a probe)
        return f"this user may not write to the folder {folder}"
    return None


@contextlib.contextmanager
def store_errors(what: str, hint: str = READ_HINT) -> Iterator[None]:
    """Turn a database error inside the block (or the decorated function) into a one-line StoreError.

    ``what`` says what was being done, e.g. "could not read the findings for the report"; the
    driver's first line follows it, then ``hint`` (:data:`LOCKED_HINT` instead when SQLite gave up
    waiting for another connection's write lock). Without this, a locked or damaged database would
    surface as an internal error. The one place a database error becomes a user's error.
    """
    try:
        yield
    except SQLAlchemyError as exc:
        detail = str(getattr(exc, "orig", exc)).splitlines()[0][:200]
        if (stop := stopping.stop_inside_database(detail)) is not None:  # Ctrl-C in auditor_regexp…
            raise stop from None
        if any(text in detail for text in _LOCKED):
            hint = LOCKED_HINT.format(seconds=SQLITE_BUSY_TIMEOUT_MS / 1000)
        elif "readonly database" in detail:  # SQLite opened the file read-only (no write permission)
            hint = f"the database file or its folder cannot be written: {READ_ONLY_HINT}"
        elif _disk_failed(detail) and hint in (READ_HINT, WRITE_HINT):  # (a writer's own hint may say more)
            hint = DISK_HINT
        elif "malformed" in detail or "file is not a database" in detail:
            hint = MALFORMED_HINT
        elif "statement timeout" in detail:  # PostgreSQL's statement_timeout (a role's or a server's)
            hint = TIMEOUT_HINT
        elif "canceling statement due to user request" in detail:
            hint = CANCELLED_HINT
        elif any(text in detail for text in _CONNECTION_LOST):
            hint = CONNECTION_LOST_HINT
        elif "permission denied to create temporary tables" in detail:
            hint = TEMP_HINT
        elif "permission denied" in detail or "must be owner of" in detail:
            hint = PRIVILEGE_HINT
        elif "could not serialize access" in detail:
            hint = SERIALIZATION_HINT
        raise StoreError(f"{what}: {detail}", hint=hint) from None
