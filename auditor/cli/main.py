"""The ``auditor`` command: the group, the global options, and the one place errors become exit codes.

Commands live in one module per group (``fetch``, ``sandbox``, ``check``, ``diff``, ``report``,
``run``); each parses options, calls the library and formats the result. Errors raised as
:class:`auditor.errors.AuditorError` print one line plus a hint on stderr and exit with their code;
anything else is a bug: one line, exit 3, and the traceback only with ``--debug``.
"""

from __future__ import annotations

import codecs
import contextlib
import functools
import io
import logging
import os
import re
import signal
import sys
import threading
import traceback
from typing import Any

import click

from auditor import __version__, stopping
from auditor.cli.common import PathOption, Settings, let_go_of_stdout, stdout_error
from auditor.errors import (
    EXIT_FAILURE,
    EXIT_INTERRUPTED,
    EXIT_PIPE_CLOSED,
    EXIT_TERMINATED,
    EXIT_USAGE,
    AuditorError,
    ConfigError,
    PartialSnapshotError,
    RuleError,
    Terminated,
)

GLOBAL_FLAGS = frozenset({"--debug", "-v", "--verbose", "-q", "--quiet"})


def hoisted(args: list[str], takes_value: frozenset[str] = frozenset()) -> list[str]:
    """``args`` with the global options written after the command moved before it.

    ``auditor check --debug`` reads as naturally as ``auditor --debug check``; click only knows the
    second. Nothing after ``--`` is moved, nor the value of an option of the command's that takes
    one (``takes_value``: ``--filter -v`` filters on ``-v``).
    """
    front: list[str] = []
    rest: list[str] = []
    words = iter(args)
    for word in words:
        if word == "--":
            rest.append(word)
            rest.extend(words)
        elif word in takes_value:
            rest.append(word)
            value = next(words, None)
            if value is not None:
                rest.append(value)
        elif word in GLOBAL_FLAGS or word.startswith("--config="):
            front.append(word)
        elif re.fullmatch(r"-[qv]{2,}", word):
            # `check -qv`: only the global flags written together (a word going on with other
            # letters may be an option's value: `--subject -quarterly`, `--sort -volume`)
            front += [f"-{letter}" for letter in word[1:]]
        elif word == "--config":
            value = next(words, None)
            if value is None:  # no value: left where it is (parse_args refuses it)
                rest.append(word)
            else:
                front += [word, value]
        else:
            rest.append(word)
    return front + rest


HELP_ASKED = "auditor.help_asked"
HELP_WORDS = frozenset({"-h", "--help"})


def asks_help(args: list[str]) -> bool:
    """Whether a command's ``--help`` is asked for (before any ``--``)."""
    for word in args:
        if word == "--":
            return False
        if word in HELP_WORDS:
            return True
    return False


def _option_names(command: click.Command) -> set[str]:
    return {name for param in command.params if isinstance(param, click.Option) for name in param.opts}


class AuditorGroup(click.Group):
    """A click group that translates errors once, for every command."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if ctx.parent is None:  # the top group: accept its options after the command too
            args = hoisted(args, self._value_options(ctx, args))
            if args[-1:] == ["--config"] and "--" not in args:  # (the command would say it has none)
                raise click.BadOptionUsage("--config", "Option '--config' requires an argument.", ctx)
        given = list(args)  # (click's parser consumes the list it parses)
        try:
            return super().parse_args(ctx, args)
        except click.NoSuchOption as exc:
            # 'auditor --fail-on high check': the option is the command's, written before it
            name = exc.option_name.partition("=")[0]
            path, command = self._command_after_options(ctx, given)
            if ctx.parent is None and command is not None and name in _option_names(command):
                exc.message = (
                    f"No such option '{name}' before the command: it is an option of 'auditor {path}'; "
                    f"write it after the command (auditor {path} {name} ...)"
                )
                exc.possibilities = None  # (click's guess among the top options: '--help')
            raise

    def _named_command(self, ctx: click.Context, args: list[str]) -> tuple[str, click.Command | None]:
        """The command ``args`` name (nested groups' commands included, such as ``db prune``),
        with the words that name it."""
        command: click.Command | None = self
        names: list[str] = []
        words = iter(args)
        for word in words:
            if word == "--config":
                next(words, None)
            elif word == "--":
                break
            elif not word.startswith("-") and isinstance(command, click.Group):
                command = command.get_command(ctx, word)
                names.append(word)
                if not isinstance(command, click.Group):
                    break
        return " ".join(names), command

    def _command_after_options(self, ctx: click.Context, args: list[str]) -> tuple[str, click.Command | None]:
        """The command named after options that are not the top group's: the first word naming
        one that is not the value of the option before it (``--fail-on high check``: 'high' names
        none; ``--output report check``: 'report' is the value of check's --output)."""
        for at, word in enumerate(args):
            if word == "--":
                break
            if word.startswith("-") or self.get_command(ctx, word) is None:
                continue
            path, command = self._named_command(ctx, args[at:])
            before = args[at - 1] if at else ""
            if command is not None and before not in self._value_options(ctx, args[at:]):
                return path, command
        return "", None

    def _value_options(self, ctx: click.Context, args: list[str]) -> frozenset[str]:
        """The option names of the command ``args`` name that take a value (nested groups'
        commands included, such as ``db prune``'s)."""
        _path, command = self._named_command(ctx, args)
        if command is None or isinstance(command, click.Group):
            return frozenset()
        return frozenset(
            name
            for param in command.params
            if isinstance(param, click.Option) and not param.is_flag and not param.count
            for name in param.opts
        )

    def invoke(self, ctx: click.Context):
        if ctx.parent is None:
            ctx.meta[HELP_ASKED] = asks_help([*ctx._protected_args, *ctx.args])
        try:
            return super().invoke(ctx)
        except AuditorError as exc:
            exc.hint = with_config(exc.hint, ctx.find_root().params.get("config_path"))
            report_error(exc, debug=_debug(ctx))
            ctx.exit(exc.exit_code)
        except (click.exceptions.Exit, click.exceptions.Abort, click.ClickException):
            raise
        except Terminated:
            click.echo("auditor: terminated (SIGTERM)", err=True)
            ctx.exit(EXIT_TERMINATED)
        except KeyboardInterrupt:
            click.echo("auditor: interrupted", err=True)
            ctx.exit(EXIT_INTERRUPTED)
        except BrokenPipeError:
            # The reader of stdout went away (`auditor diff | head`): stop quietly, and keep Python
            # from complaining again when it flushes stdout at exit. Not 1, which a CI job reads as
            # "the gate failed": 141 (128 + SIGPIPE), what other programs end with there.
            let_go_of_stdout()
            ctx.exit(EXIT_PIPE_CLOSED)
        except Exception as exc:  # noqa: BLE001 - a bug: say so in one line, never a raw traceback by default
            if isinstance(exc, OSError) and (failed := stdout_error()):  # `--help > /dev/full`: no bug
                report_error(failed)
                ctx.exit(failed.exit_code)
            if (exhausted := resource_error(exc) or path_error(exc)) is not None:  # not a bug either
                if _debug(ctx):
                    _print_traceback()
                report_error(exhausted)
                ctx.exit(exhausted.exit_code)
            if _debug(ctx):
                _print_traceback()
            click.echo(f"error: internal error: {type(exc).__name__}: {_scrub(str(exc))}", err=True)
            click.echo("hint: re-run with --debug for the traceback, and report it", err=True)
            ctx.exit(EXIT_FAILURE)


def path_error(exc: BaseException) -> AuditorError | None:
    """The usage error (exit 2) for what ``pathlib`` raises as a RuntimeError about a path given:
    a loop of symbolic links (``Path.resolve``, Python 3.11-3.12) or ``~user`` for no known user
    (``Path.expanduser``); a path probe met both as internal errors. Else ``None``."""
    from auditor.errors import ConfigError

    text = str(exc)
    if isinstance(exc, RuntimeError) and text.startswith("Symlink loop from "):
        where = text.removeprefix("Symlink loop from ")
        return ConfigError(
            f"the path {where} leads into a loop of symbolic links", hint="fix or remove the link"
        )
    if isinstance(exc, RuntimeError) and text == "Could not determine home directory.":
        return ConfigError(
            "a path given starts with ~ or ~user, and that home folder is not known here",
            hint="write the path in full (or set HOME)",
        )
    return None


def resource_error(exc: BaseException) -> AuditorError | None:
    """The error (exit 3) for ``exc`` when it says that the machine ran out of something (memory,
    open files, threads or processes) rather than that the tool has a bug; else ``None``."""
    import errno

    def limit(kind: str) -> str:
        try:
            import resource  # (not on Windows)

            soft = resource.getrlimit(getattr(resource, kind))[0]
        except (ImportError, OSError, ValueError):
            return ""
        return "" if soft == resource.RLIM_INFINITY else f" (the limit is {soft:,})"

    if isinstance(exc, MemoryError):
        return AuditorError(
            "out of memory" + (f" ({exc})" if str(exc) else ""),
            hint="give the command more memory (ulimit -v, the container's or the job's limit), or "
            "fewer --workers / --processes",
        )
    if isinstance(exc, OSError) and exc.errno in (errno.EMFILE, errno.ENFILE):
        return AuditorError(
            f"too many open files{limit('RLIMIT_NOFILE') if exc.errno == errno.EMFILE else ''}",
            hint="raise the limit (ulimit -n 4096), or use fewer --workers / --processes",
        )
    if isinstance(exc, RuntimeError) and "can't start new thread" in str(exc):
        return AuditorError(
            "cannot start a thread: the process or memory limit is reached",
            hint="raise the limits (ulimit -u, ulimit -v, the container's), or use fewer --workers",
        )
    if isinstance(exc, OSError) and exc.errno == errno.EAGAIN and _starting_a_process(exc):
        return AuditorError(
            "cannot start a process: the process limit is reached" + limit("RLIMIT_NPROC"),
            hint="raise the limit (ulimit -u), or use --processes 0",
        )
    return None


def _starting_a_process(exc: BaseException) -> bool:
    """Whether ``exc`` was raised while a process was being started (``fork`` failing with EAGAIN
    says only "Resource temporarily unavailable")."""
    frame = exc.__traceback__
    while frame is not None:
        name = frame.tb_frame.f_code.co_filename.replace("\\", "/")
        if "/multiprocessing/" in name or name.endswith("/subprocess.py"):
            return True
        frame = frame.tb_next
    return False


def _thread_failed(args: threading.ExceptHookArgs) -> None:
    """One line, not Python's traceback, for an exception that ends a background thread (one of
    multiprocessing's own, that could not start a thread of its own under a memory limit, say):
    the command then fails with its own error; ``--debug`` shows the traceback."""
    if args.exc_type is SystemExit:
        return
    name = args.thread.name if args.thread is not None else "a thread"
    with contextlib.suppress(Exception):
        said = _scrub(str(args.exc_value)) if args.exc_value is not None else ""
        click.echo(
            f"warning: {name} failed: {args.exc_type.__name__}" + (f": {said}" if said else ""), err=True
        )


def _debug(ctx: click.Context) -> bool:
    root = ctx.find_root()
    return bool(root.params.get("debug")) if root.params else False


def _print_traceback(exc: BaseException | None = None) -> None:
    """The traceback of ``exc`` (default: the exception being handled) on stderr (``--debug``),
    secrets masked: it repeats the exception's text and the source lines that raised it."""
    from auditor.secrets import scrub

    text = "".join(traceback.format_exception(exc)) if exc is not None else traceback.format_exc()
    sys.stderr.write(scrub(text))
    sys.stderr.flush()


def _scrub(text: str) -> str:
    """``text`` fit for stderr: no secret, and no control character from a server's error text."""
    from auditor.secrets import scrub
    from auditor.textsafe import visible

    return visible(scrub(text))


# "auditor <command>" where a hint gives a command to run: at its start, or after ": ", "; " or "("
# (never inside a quoted argument, a path or a word such as cluster-auditor)
_HINTED_COMMAND = re.compile(
    r"(?:^|(?<=: )|(?<=; )|(?<=\())auditor "
    r"(?=(?:check|clusters|columns|db|diff|email|report|rules|run|runs|snapshot)\b)"
)


def with_config(hint: str | None, config_path: str | None) -> str | None:
    """``hint`` with ``--config FILE`` in every auditor command it gives, when the command that
    failed was given one: run as printed from a scheduler's folder, ``auditor check --run 3 …``
    read no settings ("no database at auditor.db"). A command already naming ``--config`` (the
    email resend command builds its own) is left as it is."""
    if not hint or not config_path:
        return hint
    import shlex
    from pathlib import Path

    option = f"auditor --config {shlex.quote(str(Path(config_path).expanduser().absolute()))} "
    out, start = [], 0
    for match in _HINTED_COMMAND.finditer(hint):
        if hint.count("'", 0, match.start()) % 2:  # inside a quoted argument of an earlier command
            continue
        out += [hint[start : match.start()], option]
        start = match.end()
    return "".join([*out, hint[start:]])


def report_error(exc: AuditorError, *, debug: bool = False) -> None:
    """``exc`` on standard error. Should that be gone too (``auditor check 2>&1 | head -1``), the
    rest is dropped: the exit code still tells the error (2 or 3), where a failed write would have
    ended the command with 1, which a CI job reads as a failed gate."""
    try:
        if debug:
            _print_traceback(exc)
        click.echo(f"error: {_scrub(exc.message)}", err=True)
        if isinstance(exc, RuleError | PartialSnapshotError | ConfigError):
            from auditor.textsafe import one_line

            for problem in exc.problems:  # one line each: a line break in a quoted value must not forge one
                click.echo(f"  {one_line(_scrub(problem))}", err=True)
        if exc.hint:
            click.echo(f"hint: {_scrub(exc.hint)}", err=True)
    except OSError:
        let_go_of_stdout(sys.stderr)


@click.group(
    cls=AuditorGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100}
)
@click.version_option(__version__, prog_name="cluster-auditor")
@click.option(
    "--config",
    "config_path",
    type=PathOption(dir_okay=False),
    help="Settings file (default: ./auditor.toml).",
)
@click.option("--debug", is_flag=True, help="Show tracebacks on errors.")
@click.option(
    "-v", "--verbose", is_flag=True, help="Log requests and progress details to stderr (never the key)."
)
@click.option("-q", "--quiet", is_flag=True, help="No progress bar and no informational messages.")
@click.pass_context
def cli(ctx: click.Context, config_path: str | None, debug: bool, verbose: bool, quiet: bool) -> None:
    """cluster-auditor: snapshot BigID clusters, check governance rules, diff runs, report and gate CI.

    Exit codes: 0 success, 1 the gate failed, 2 usage/configuration/rule error, 3 the API, the
    network or the database failed (or the run is missing or incomplete), 130 interrupted (Ctrl-C),
    141 the reader of stdout went away, 143 terminated (SIGTERM).
    """

    try:
        ctx.obj = Settings.load(config_path, debug=debug, verbose=verbose, quiet=quiet)
    except ConfigError:
        if not ctx.meta.get(HELP_ASKED):
            raise
        # `auditor check --help` in a folder whose auditor.toml is broken: the help needs no
        # settings (and is how one finds out how to mend them)
        from auditor.config import FileSettings

        ctx.obj = Settings(FileSettings(), debug, verbose, quiet)
    ctx.call_on_close(functools.partial(_end_command, ctx.obj))
    from auditor.secrets import ScrubFilter, install_log_filter

    install_log_filter()
    threading.excepthook = _thread_failed if not debug else threading.__excepthook__
    handler = _StderrHandler(sys.stderr)
    # A logger's filter sees only the records logged on that very logger, not those of its children
    # ('urllib3.connectionpool' traced "GET /<key>/api/…" for a key pasted into the URL): every
    # record printed is scrubbed here, whichever logger made it.
    handler.addFilter(ScrubFilter())
    handler.setFormatter(_StderrFormatter("%(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=logging.DEBUG if verbose else logging.WARNING, handlers=[handler])
    logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)  # set-up lines: noise to users
    # and the migration context's own set-up lines, said at every open ("Context impl SQLiteImpl.");
    # "Running upgrade 0005 -> 0006" stays
    logging.getLogger("alembic.runtime.migration").addFilter(_alembic_setup_filter)
    # psycopg's own warnings while a connection the server ended is closed ("error ignored
    # terminating <psycopg.Pipeline [BAD]>"): the error that ended it is reported, in one line
    if not verbose:
        logging.getLogger("psycopg").setLevel(logging.ERROR)


def _alembic_setup_filter(record: logging.LogRecord) -> bool:
    return not str(record.msg).startswith(("Context impl", "Will assume"))


class _StderrHandler(logging.StreamHandler):
    """Log lines on stderr that first clear a progress line drawn there (:func:`auditor.progress.cleared`)."""

    def emit(self, record: logging.LogRecord) -> None:
        from auditor.progress import cleared

        with cleared(self.stream):
            super().emit(record)


class _StderrFormatter(logging.Formatter):
    """Log lines as :func:`_scrub` makes errors: a server's text cannot act on the terminal, and a
    record is one line (a cluster id holding a line feed forged a second log line); a traceback
    appended under ``--debug`` keeps its lines."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        from auditor.textsafe import one_line

        return one_line(super().formatMessage(record))

    def format(self, record: logging.LogRecord) -> str:
        from auditor.textsafe import visible

        return visible(super().format(record))


def _register() -> None:
    """Attach every command group; each module owns its commands."""
    import importlib

    for name in ("fetch", "sandbox", "store", "check", "diff", "report", "run"):
        try:
            module = importlib.import_module(f"auditor.cli.{name}")
        except ModuleNotFoundError as exc:  # a module not written yet during development
            if exc.name != f"auditor.cli.{name}":
                raise
            continue
        module.register(cli)


_register()


# Set once the command's outcome is decided (see _end_command), inside main() only; the stop
# handlers then let a signal pass. Reset when main() begins, and when it returns to a program that
# called it in-process.
_command_ended = False
_in_main = False


def _terminate(_signum: int, _frame: object) -> None:
    if _command_ended:
        return
    if stopping.repeated_term():  # the same stop sent twice (GNU timeout: the command, then its group)
        return
    raise stopping.stop_raised(Terminated())


def _interrupt(_signum: int, _frame: object) -> None:
    if _command_ended:
        return
    raise stopping.stop_raised(KeyboardInterrupt())


def _end_command(settings: Settings) -> None:
    """Close what the command opened, once its outcome is decided (its work committed, its output
    written, or its error said). A Ctrl-C or SIGTERM from here on no longer stops it, as
    :func:`auditor.cli.entry` ignores one afterwards: raised inside the connection pool's close, it
    printed the pool's traceback, and click made it "Aborted!" and exit 1, which a scheduler reads as
    a failed gate, for a job that had done everything. (The hard stop still ends a close that hangs.)"""
    global _command_ended
    _command_ended = _in_main  # (a click runner's in-process command leaves the handlers as they are)
    settings.close()


def install_stop_handlers() -> None:
    """SIGTERM unwinds as Ctrl-C does (runs marked, workers stopped); both are remembered as they
    are raised (:func:`auditor.stopping.stop_raised`)."""
    signal.signal(signal.SIGTERM, _terminate)
    signal.signal(signal.SIGINT, _interrupt)


def _is_utf8(encoding: str | None) -> bool:
    try:
        return codecs.lookup(encoding or "ascii").name == "utf-8"
    except LookupError:
        return False


def _prepare_stdio() -> None:
    """Give stdout a buffer when Python runs unbuffered, and an encoding that cannot fail.

    Unbuffered (``python -u``, ``PYTHONUNBUFFERED=1``, usual in containers and CI images), a text
    write is one system call on the raw file: to a pipe whose reader goes away midway it returns a
    short count without error, and the rest of the output was lost silently (``auditor check
    --format json | head -1`` exited 0 having written 73 KB of 252 KB). A buffered writer writes all
    or raises BrokenPipeError (exit 141). Line-buffered, as a terminal expects.

    Under a locale whose encoding is not UTF-8 (``de_DE.ISO-8859-1``), the first character it lacks
    (the table's ``…``, a cluster name in Japanese) failed the command after its work was done: a
    snapshot stored, its check never printed. Standard output written to a file or a pipe is then
    UTF-8, as every file the tool writes (the data formats are UTF-8 by their definitions); on a
    terminal it keeps the terminal's encoding, and a character it lacks is shown as an escape
    (``\u2026``), as on standard error.
    """
    stream = sys.stdout
    if isinstance(stream, io.TextIOWrapper):
        encoding, errors = stream.encoding, stream.errors
        if not _is_utf8(encoding):
            errors = "backslashreplace"
            with contextlib.suppress(OSError, ValueError):
                if not stream.isatty():
                    encoding = "utf-8"
        raw = getattr(stream, "buffer", None)
        if isinstance(raw, io.FileIO):
            stream.flush()
            sys.stdout = io.TextIOWrapper(
                io.BufferedWriter(raw), encoding=encoding, errors=errors, line_buffering=True
            )
        elif (encoding, errors) != (stream.encoding, stream.errors):
            stream.reconfigure(encoding=encoding, errors=errors)
    if isinstance(sys.stderr, io.TextIOWrapper) and not _is_utf8(sys.stderr.encoding):
        sys.stderr.reconfigure(errors="backslashreplace")
    stream = sys.stderr
    if type(stream) is io.TextIOWrapper and isinstance(stream.buffer, io.BufferedWriter | io.FileIO):
        with contextlib.suppress(OSError, ValueError):  # (no file descriptor: left as it is)
            raw = _StderrToTheEnd(stream.fileno())
            stream.flush()
            unbuffered = isinstance(stream.buffer, io.FileIO)  # (python -u, PYTHONUNBUFFERED=1)
            sys.stderr = io.TextIOWrapper(
                raw if unbuffered else io.BufferedWriter(raw),
                encoding=stream.encoding,
                errors=stream.errors,
                line_buffering=stream.line_buffering,
                write_through=stream.write_through,
            )


class _StderrToTheEnd(io.RawIOBase):
    """Standard error's file descriptor, written to until its reader goes away (``auditor check
    2>&1 | head -1``, a log collector that stops), and to the null device from then on, so that
    nothing printed there changes the command's exit code. A click usage error whose message met a
    closed pipe exited 1 (a failed gate, to a CI job) instead of 2, and a check whose gate passed
    exited 141, as if its results had not all been written, when only the reader of its messages
    had gone (a probe). At the raw layer, so that a text layer click puts over the buffer (for a
    stream it finds misconfigured, such as ASCII) has it too; closing it leaves the descriptor open
    (``sys.__stderr__`` writes to it still), and every write writes all it is given."""

    name = "<stderr>"

    def __init__(self, fd: int) -> None:
        super().__init__()
        self._fd = fd

    def writable(self) -> bool:
        return True

    def fileno(self) -> int:
        return self._fd

    def isatty(self) -> bool:
        return os.isatty(self._fd)

    def write(self, data: Any) -> int:
        view = memoryview(data).cast("B")
        size = len(view)
        while view:
            try:
                view = view[os.write(self._fd, view) :]
            except BrokenPipeError:
                let_go_of_stdout(self)  # (the descriptor now points at the null device)
                break
        return size


def main(argv: list[str] | None = None, *, console: bool = False) -> None:
    """Console-script entry point (``console``: called by :func:`auditor.cli.entry`, which ignores
    stops once it returns; a program calling it in-process gets the stop handlers back working)."""
    global _command_ended, _in_main
    _command_ended, _in_main = False, True
    _prepare_stdio()
    install_stop_handlers()  # SIGTERM unwinds as Ctrl-C does: runs marked, workers stopped
    # and stop outright when unwinding cannot finish (a wait inside SQLite), while the command runs
    try:
        with stopping.armed():
            try:
                cli.main(args=argv, prog_name="auditor", standalone_mode=True)
            except AuditorError as exc:  # raised while loading settings, before a command ran
                report_error(exc)
                sys.exit(exc.exit_code if exc.exit_code else EXIT_USAGE)
            except OSError:  # `auditor --version > /dev/full`
                if (failed := stdout_error()) is None:
                    raise
                report_error(failed)
                sys.exit(failed.exit_code)
    finally:
        _in_main = False
        if not console:
            _command_ended = False


if __name__ == "__main__":  # pragma: no cover
    main()
