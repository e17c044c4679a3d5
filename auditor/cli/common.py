"""What every command shares: settings resolution, the database, output writing.

:class:`Settings` is the click context object. It merges flags over environment over the config file,
and opens the database lazily (creating or upgrading it on first use).
"""

from __future__ import annotations

import contextlib
import getpass
import os
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

import click
from sqlalchemy import Engine

from auditor import config as cfg
from auditor import paths
from auditor.bigid.auth import check_token
from auditor.errors import ConfigError, DeliveryError
from auditor.jsonstream import closed_after

if TYPE_CHECKING:
    from auditor.pipeline import EmailOptions


def setting_type(key: str) -> click.ParamType:
    """The click type of numeric setting ``key``'s flag: the bounds its file value has."""
    low, high, open_below = cfg.RANGES[key]
    if cfg.KINDS[key] == cfg.WHOLE:
        return click.IntRange(int(low), None if high is None else int(high))
    return click.FloatRange(low, high, min_open=open_below)


@dataclass
class Settings:
    file: cfg.FileSettings
    debug: bool = False
    verbose: bool = False
    quiet: bool = False
    _engines: dict[str, Engine] = field(default_factory=dict)

    @classmethod
    def load(cls, config_path: str | None, *, debug: bool, verbose: bool, quiet: bool) -> Settings:
        return cls(cfg.load_config(config_path, explicit=config_path is not None), debug, verbose, quiet)

    # -- values --------------------------------------------------------------------------------

    def value(self, flag: Any, env: str | None, key: str, default: Any = None) -> Any:
        return cfg.pick(flag, env, self.file, key, default)

    def db_target(self, flag: str | None = None) -> str:
        return str(self.value(flag, cfg.ENV_DB, "db", "auditor.db"))

    def engine(self, flag: str | None = None, *, create: bool = True) -> Engine:
        """The database engine (upgraded on first use). ``create=False``: commands that read runs
        refuse a SQLite file that does not exist (exit 3) rather than create an empty one where a
        mistyped ``--db`` points."""
        from auditor.errors import RunNotUsableError
        from auditor.store.db import open_database

        target = self.db_target(flag)
        if not create and not self.database_exists(flag):
            from auditor.store.db import display_url

            server = "://" in target and not target.startswith("sqlite")
            what = (
                f"there is no auditor database at {display_url(target)} yet (it holds none of its tables)"
                if server
                else f"there is no database at {display_url(target) if '://' in target else target} yet"
            )
            demo = self.demo_database(target)
            raise RunNotUsableError(
                what,
                hint=f"the demo's runs are in {demo}: give --db {demo}"
                if demo
                else "take a snapshot first: auditor snapshot (or auditor demo); or check --db / AUDITOR_DB",
            )
        if target not in self._engines:
            self._engines[target] = open_database(target)
        return self._engines[target]

    @staticmethod
    def demo_database(target: str) -> str | None:
        """The demo's database, when ``target`` is the default one and ``auditor demo`` left one here:
        a new user's next command after the demo reads ./auditor.db, which the demo did not write."""
        demo = Path(cfg.DEMO_FOLDER, "auditor.db")
        return str(demo) if target == "auditor.db" and demo.is_file() else None

    def close(self) -> None:
        """Close the databases the command opened (when it ends: Python 3.13 warns of a SQLite
        connection left open at exit)."""
        from sqlalchemy.exc import SQLAlchemyError

        engines, self._engines = list(self._engines.values()), {}
        for engine in engines:
            with contextlib.suppress(SQLAlchemyError, OSError):  # the command's outcome is already said
                engine.dispose()

    def guard_outputs(
        self,
        db_flag: str | None,
        outputs: dict[str, str | None],
        inputs: dict[str, Any],
        creates: str | None = None,
        *,
        uses_database: bool = True,
    ) -> None:
        """Refuse (exit 2, before any work) an output file that is this command's database, a file
        SQLite keeps beside it, one of its input files, or a rule file inside a ``--rules`` folder:
        ``check --db a.db -o a.db`` replaced the whole history with the results; and (exit 3) one
        that cannot be written (a missing or locked folder, a write-protected file), found before
        the work, not after an hour of fetching (``creates``: the folder the command makes, its
        ``--export-dir``). ``outputs`` and
        ``inputs`` map an option's name to the path it was given (inputs: a path or a list); the
        settings file and the files it names (``token_file``, ``templates``, the CA bundles) are
        inputs of every command: ``-o auditor.toml`` or ``--report`` over the key's file lost them.
        ``uses_database=False``: a command that opens no database (``clusters``, ``rules schema``)
        still keeps off the one configured, but a configured URL it cannot read is not its error."""
        from auditor.store.db import database_url, sqlite_file

        try:
            path = sqlite_file(database_url(self.db_target(db_flag)))
        except ConfigError:
            if uses_database:
                raise
            path = None
        # resolved, links too: SQLite keeps its side files beside the file a link leads to
        database = os.path.realpath(Path(path).expanduser()) if path else None
        # SQLite creates, rewrites and deletes these by name: compared by name, as they come and go
        sides = {f"{database}{side}" for side in ("-wal", "-shm", "-journal")} if database else set()
        label = "--db" if uses_database else "the database (--db, AUDITOR_DB or the settings file's db)"
        readers = [(label, Path(database))] if database else []
        # whatever the command: the settings file and the files it names (the API key's file above all)
        if (settings_file := self.file.path) is not None:
            readers.append(("the settings file", settings_file))
            for key in ("token_file", "templates", "smtp_ca_bundle", "ca_bundle"):
                if named := self.file.get(key):
                    readers.append((f"{key} ({settings_file.name})", Path(str(named))))
        for option, given in inputs.items():
            readers += [
                (option, Path(path))
                for path in (given if isinstance(given, list | tuple) else [given])
                if path
            ]
        # the bundled pack and templates: read whenever no --rules is given, and behind --templates
        readers += [("the built-in rules", paths.rules_dir()), ("templates (built in)", paths.reports_dir())]
        for option, given in outputs.items():
            if given and given != "-" and (why := _overwrites(Path(given).expanduser(), sides, readers)):
                raise ConfigError(f"{option} {given} is {why}", hint=f"give {option} another file")
        from auditor.errors import DeliveryError
        from auditor.outfile import check_creatable, check_writable

        if creates:  # the folder the command makes: where it begins must be a folder it may write in
            folder = Path(creates).expanduser().absolute()
            try:
                check_creatable(folder)
            except OSError as exc:
                there = folder.is_dir()  # found by a probe: an existing folder was "cannot create"
                verb, reason = (
                    ("write", exc.strerror) if there else ("create", f"{exc.strerror} ({exc.filename})")
                )
                raise DeliveryError(
                    f"cannot {'write into' if there else 'create'} the folder {creates}: {reason}",
                    hint=f"nothing was done yet: give --export-dir a folder you can {verb}",
                ) from None

        for option, given in outputs.items():  # and writable, before the work rather than after it
            if given and given != "-":
                try:
                    check_writable(
                        Path(given).expanduser().absolute(),
                        Path(creates).expanduser().absolute() if creates else None,
                    )
                except OSError as exc:
                    raise DeliveryError(
                        f"cannot write {given}: {exc.strerror}",
                        hint=f"nothing was done yet: give {option} a file you can write",
                    ) from None

    def database_exists(self, flag: str | None = None) -> bool:
        """False for a SQLite file that is not there, or a server database without this tool's
        tables (see :func:`auditor.store.db.holds_a_store`)."""
        from auditor.store.db import holds_a_store

        target = self.db_target(flag)
        if "://" not in target:
            return Path(target).expanduser().exists()
        return target in self._engines or holds_a_store(target)

    def bigid_url(self, flag: str | None = None) -> str | None:
        url = self.value(flag, cfg.ENV_URL, "url")
        return str(url).rstrip("/") if url else None

    def token(self, token_file: str | None = None, *, prompt: bool = False) -> str:
        """The API key: ``--token-file``, else ``BIGID_TOKEN``, else the config file's ``token_file``,
        else a hidden prompt (flags, then the environment, then the config file, as for every
        setting). A key that cannot be sent in an HTTP header is refused without being shown."""
        from auditor import secrets

        if token_file:
            token = cfg.read_token_file(token_file)
            origin = "--token-file"
        else:
            token = os.environ.get(cfg.ENV_TOKEN, "").strip()
            origin = cfg.ENV_TOKEN
            if not token and self.file.get("token_file"):
                token = cfg.read_token_file(self.file.get("token_file"))
                origin = "token_file"
        if not token and prompt and sys.stdin is not None and sys.stdin.isatty():  # `<&-`: no stdin
            token = getpass.getpass("BigID API key: ").strip()
            origin = "the prompt"
        if not token:
            raise ConfigError(
                "no BigID API key: BIGID_TOKEN is not set",
                hint="export BIGID_TOKEN=... , or pass --token-file FILE, or set token_file in auditor.toml",
            )
        secrets.register(token, credential=True)
        check_token(token, origin)
        return token

    def list_value(self, flag: tuple[str, ...] | list[str] | None, key: str) -> list[str]:
        """A repeatable option: the flags if given, else the config file's value (one or a list)."""
        if flag:
            return [str(item) for item in flag]
        value = self.file.get(key)
        if value is None or value == "":
            return []
        return [str(value)] if isinstance(value, str) else [str(item) for item in value]

    def email_route(
        self,
        to: tuple[str, ...] | None,
        smtp: str | None,
        eml: str | None,
        *,
        cc: tuple[str, ...] = (),
        flags: tuple[str, str, str] = ("--to", "--cc", "--from"),
        sender: str | None = None,
        subject: str | None = None,
        ca_bundle: str | None = None,
        attach: tuple[bool, bool] = (True, True),
    ) -> EmailOptions:
        """Where and how an email goes (``attach``: the report, the CSV), checked before any work.

        ``auditor email`` and ``auditor run`` share it, so a missing recipient or server, both
        ``--smtp`` and ``--eml``, a malformed address, sender, subject or SMTP URL, credentials
        without their pair, or a CA file that does not load fails at once (exit 2), never after a
        snapshot. ``flags`` names the command's own recipient, copy and sender options in its
        errors; a value from the environment or the settings file is named by its variable or key.
        """
        from auditor.errors import ConfigError
        from auditor.pipeline import EmailOptions

        to_flag, cc_flag, from_flag = flags
        recipients = self.list_value(to, "email_to")
        if not recipients:
            raise ConfigError(f"no recipient: pass {to_flag} ADDR (or set email_to in auditor.toml)")
        if eml and smtp:
            raise ConfigError("give either --smtp URL or --eml FILE, not both")
        smtp_url = None if eml else self.value(smtp, cfg.ENV_SMTP, "smtp")
        if not eml and not smtp_url:
            empty = "" if self.file.get("smtp") is None else f" ({self._setting('smtp')} is empty)"
            raise ConfigError(
                f"no SMTP server{empty}: pass --smtp URL (or set AUDITOR_SMTP), or --eml FILE to write the "
                "message"
            )
        options = EmailOptions(
            to=recipients,
            cc=list(cc),
            sender=self.value(sender, cfg.ENV_EMAIL_FROM, "email_from"),
            subject=subject,
            smtp_url=smtp_url,
            eml_path=eml,
            attach_report=attach[0],
            attach_csv=attach[1],
            cafile=self.value(ca_bundle, None, "smtp_ca_bundle"),
            # a malformed value is named where it was written: the flag, its variable, or the setting
            names={
                "to": to_flag if to else self._setting("email_to"),
                "cc": cc_flag,
                "from": self._origin(sender, from_flag, cfg.ENV_EMAIL_FROM, "email_from"),
                "smtp": self._origin(smtp, "--smtp", cfg.ENV_SMTP, "smtp"),
                "smtp_ca_bundle": self._origin(ca_bundle, "--smtp-ca-bundle", None, "smtp_ca_bundle"),
            },
        )
        options.check()
        return options

    def _setting(self, key: str) -> str:
        """How an error names a setting of the settings file: ``/path/auditor.toml: smtp``."""
        return f"{self.file.path}: {key}"

    def _origin(self, flag: Any, option: str, env: str | None, key: str) -> str:
        """Where the value :meth:`value` picks for ``key`` was given: ``option``, ``env``, or the
        settings file's key."""
        if flag is not None:
            return option
        if env is not None and os.environ.get(env):
            return env
        return self._setting(key)

    def rules_paths(self, flag: tuple[str, ...] | None = None) -> list[Path] | None:
        """``--rules`` or the config's ``rules``; ``None`` means the built-in pack."""
        return [Path(p) for p in self.list_value(flag, "rules")] or None

    def waivers_path(self, flag: str | None = None) -> str | None:
        """``--waivers`` or the config's ``waivers``."""
        value = self.value(flag, None, "waivers")
        return str(value) if value else None

    def note_new_only(self, new_only: bool, fail_on: str | None) -> None:
        """Say that ``--new-only`` does nothing without a gate (it narrows what fails ``--fail-on``)."""
        if new_only and fail_on is None:
            self.info(
                "note: --new-only has no effect without a --fail-on severity (findings never fail the "
                "gate then)"
            )

    def fail_on(self, flag: str | None = None) -> str | None:
        """``--fail-on`` or the config's ``fail_on`` (checked: a typo must not silently pass a gate).
        ``--fail-on none`` switches off a ``fail_on`` from the config (a report-only step)."""
        if flag == "none":
            return None
        value = self.value(flag, None, "fail_on")
        if value == "none":  # as the flag takes it: no gate
            return None
        if value is not None and value not in cfg.SEVERITIES:
            raise ConfigError(f"setting fail_on must be one of {', '.join(cfg.SEVERITIES)}, not {value!r}")
        return value

    def templates_dir(self, flag: str | None = None) -> str | None:
        value = self.value(flag, None, "templates")
        return str(value) if value else None

    def info(self, message: str) -> None:
        """An informational line on stderr (silenced by --quiet)."""
        if not self.quiet:
            click.echo(message, err=True)


pass_settings = click.make_pass_decorator(Settings)


class PathOption(click.Path):
    """``click.Path`` that refuses an empty value. ``--output "$OUT"`` with ``OUT`` unset in a CI
    job was an internal error for ``-o``, and wrote to the current folder for ``--export-dir``."""

    def convert(self, value, param, ctx):
        if isinstance(value, str) and not value.strip():
            self.fail("the path is empty (a variable left unset?)", param, ctx)
        if isinstance(value, str) and value.startswith("~"):
            # '--export-dir=~/reports' (no shell expands a ~ after '=') made a folder named '~' here;
            # --db and --templates already expanded it (a path probe): every path option does now
            value = os.path.expanduser(value)
        if isinstance(value, str) and not self.dir_okay and value.endswith(("/", os.sep)) and value != "-":
            # 'newdir/' was read as the file 'newdir' (pathlib drops the slash): a folder was meant
            self.fail(f"{value!r} names a folder (it ends with '/'); give a file name", param, ctx)
        return super().convert(value, param, ctx)


class IsoDate(click.ParamType):
    """A date written YYYY-MM-DD, as waiver files write ``expires`` (``2027-1-5`` is refused there,
    and so here)."""

    name = "date"

    def convert(self, value, param, ctx):
        from auditor.engine.waivers import calendar_date

        if isinstance(value, date):
            return value
        day = calendar_date(str(value))
        if day is None:
            self.fail(f"{value!r} is not a date written YYYY-MM-DD, such as 2027-03-31", param, ctx)
        return day


def today_option(help_text: str) -> Callable[[Any], Any]:
    """``--today YYYY-MM-DD``: the date waivers are judged as of (``check``, ``diff``, ``report``,
    ``email``)."""
    return click.option("--today", type=IsoDate(), metavar="YYYY-MM-DD", default=None, help=help_text)


class NonEmptyText(click.ParamType):
    """Text that may not be empty: ``--db ""`` created an empty ./auditor.db, as if it were not given."""

    name = "text"

    def convert(self, value, param, ctx):
        if isinstance(value, str) and not value.strip():
            self.fail("the value is empty (a variable left unset?)", param, ctx)
        return value


def smtp_ca_bundle_option(func):
    return click.option(
        "--smtp-ca-bundle",
        "smtp_ca_bundle",
        type=PathOption(exists=True, dir_okay=False),
        default=None,
        metavar="FILE",
        help="CA certificates to trust for the SMTP server's TLS certificate (config: smtp_ca_bundle).",
    )(func)


def rules_option(func):
    """``--rules PATH`` (repeatable), as check and run take it."""
    return click.option(
        "--rules",
        "rules",
        multiple=True,
        type=PathOption(),
        metavar="PATH",
        help="Rule file or folder (repeatable; default: the built-in pack).",
    )(func)


def _is_rule_file(path: Path) -> bool:
    return path.suffix.lower() in (".yaml", ".yml")


def _is_template_file(path: Path) -> bool:
    """A file a templates folder overrides the bundled ``reports/`` with (or a partial of one)."""
    from auditor import paths

    return path.suffix == ".j2" or (paths.reports_dir() / path.name).is_file()


def _overwrites(written: Path, sides: set[str], readers: list[tuple[str, Path]]) -> str | None:
    """Why writing ``written`` would destroy what the command reads (see :meth:`Settings.guard_outputs`)."""
    real = os.path.realpath(written)
    if real in sides:
        return (
            "a file SQLite keeps beside the database (--db): writing it would lose the output, or damage it"
        )
    # Where the name is looked up, and the file a link there leads to: either may be what a folder
    # read by name holds (a probe: -o LINK to a rule file or a template replaced it, exit 0)
    named = Path(os.path.realpath(written.parent)) / written.name
    places = {named, Path(real)}
    for reader, path in readers:
        if path.is_dir():  # a rule file (or a fixture) inside a --rules folder, a template in --templates
            folder = os.path.realpath(path)
            if reader.startswith(("--templates", "templates")):  # read by name: a new one too, next time
                if any(str(place.parent) == folder and _is_template_file(place) for place in places):
                    return f"a template in the folder this command reads as {reader}"
            elif any(
                _is_rule_file(place) and place.exists() and place.is_relative_to(folder) for place in places
            ):
                return f"a file inside the folder this command reads as {reader}: writing it would destroy it"
            continue
        with contextlib.suppress(OSError, ValueError):  # either missing: nothing to destroy
            if os.path.samefile(written, path.expanduser()):
                if reader.startswith("the database"):  # a command that does not open it
                    return f"{reader}: writing it would destroy the runs it holds"
                return f"the file this command reads as {reader}: writing it would destroy it"
        if reader == "--db" and real == os.path.realpath(path):  # a database `run` is about to create
            return f"the file this command reads as {reader}: writing it would destroy it"
    return None


def table_or_json_option(func):
    """``--format table|json``: the listing commands' choice between people and programs."""
    return click.option(
        "--format",
        "fmt",
        type=click.Choice(["table", "json"]),
        default="table",
        show_default=True,
        help="table for people, json for programs.",
    )(func)


def waivers_option(func):
    """``--waivers FILE``, as check and run take it."""
    return click.option("--waivers", type=PathOption(), metavar="FILE", help="Waiver file (YAML).")(func)


def db_option(func):
    return click.option(
        "--db",
        "db",
        type=NonEmptyText(),
        default=None,
        metavar="PATH|URL",
        help="Database file or SQLAlchemy URL (env AUDITOR_DB; default ./auditor.db).",
    )(func)


def let_go_of_stdout(stream: TextIO | None = None) -> None:
    """Point standard output (or ``stream``) at the null device: what is still buffered in it would
    fail again when Python flushes it at exit (``Exception ignored … OSError``, exit 120; a closed
    pipe's complaint after exit 141)."""
    with contextlib.suppress(OSError, ValueError):  # (a stream with no file: nothing to let go)
        target = (stream or sys.stdout).fileno()
        devnull = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(devnull, target)
        finally:
            os.close(devnull)


def is_standard_output(path: str | os.PathLike[str]) -> bool:
    """``path`` names the file standard output already writes to (``/dev/stdout``, ``/dev/fd/1``,
    or the very file stdout is redirected to): a command then does not print the path it wrote
    after what it wrote there (the path would end up inside the HTML or the message)."""
    from auditor.outfile import standard_stream

    return standard_stream(path) == 1


def stdout_error(cause: OSError | None = None) -> DeliveryError | None:
    """The error to report when standard output cannot be written (its buffer fails to flush, or
    ``cause`` says why a write failed), standard output then let go of; else ``None``."""
    if sys.stdout is None:
        return None
    why = None
    try:
        sys.stdout.flush()
    except OSError as exc:
        why = exc.strerror or str(exc)
    if why is None and cause is not None:
        why = cause.strerror or str(cause)
    if why is None:
        return None
    let_go_of_stdout()
    return DeliveryError(f"cannot write to standard output: {why}")


def write_output(text: str | Iterable[str], output: str | None) -> None:
    """Write the chosen format to ``--output`` (atomically, after the work succeeded) or stdout.

    ``text`` may come in pieces (a streaming format): they are written as they come, to stdout or
    to a temporary file that replaces ``--output`` only once the last piece is written.
    """
    pieces = [text] if isinstance(text, str) else text
    if output in (None, "-"):
        if sys.stdout is None:  # started with stdout closed (`>&-`): click would write nothing, silently
            context = click.get_current_context(silent=True)
            has_output = context is not None and any(p.name == "output" for p in context.command.params)
            raise DeliveryError(
                "standard output is closed: the results cannot be written",
                hint="pass --output FILE" if has_output else "redirect standard output to a file or a pipe",
            )
        ends_line = False
        try:
            with closed_after(pieces):  # a stop midway lets go of a stream's connection at once
                for piece in pieces:
                    if piece:
                        # color=True: written as is. click removes what looks like a terminal escape
                        # when stdout is not a terminal, so `--format csv > file` lost characters of
                        # catalog text the data formats keep exactly (those for people escape them).
                        click.echo(piece, nl=False, color=True)
                        ends_line = piece.endswith("\n")
            if not ends_line:
                click.echo()
        except BrokenPipeError:
            raise  # the reader went away: see AuditorGroup.invoke
        except OSError as exc:  # a full disk behind a redirection (`> /dev/full`): no bug
            raise stdout_error(exc) from None
        return
    from auditor.outfile import reader_of_stdout_gone, replacing

    path = Path(output)
    try:
        # a failure while producing the pieces: no half-written file
        with closed_after(pieces), replacing(path) as handle:
            for piece in pieces:
                handle.write(piece)
    except OSError as exc:
        if reader_of_stdout_gone(exc, path):
            raise
        raise DeliveryError(f"cannot write {path}: {exc.strerror}") from None
