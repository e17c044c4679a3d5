"""Replacing an output file (``--output``, ``--eml``, ``--export-dir``) the way a user expects.

A symbolic link is written through (the file it leads to is replaced, the link kept), and a target
that is not a regular file (``/dev/null``, ``/dev/stdout``, a named pipe) is written into directly;
so is the file standard output or error already writes to (``-o /dev/stdout >> log``), through
that stream's own descriptor.

:func:`replacing` is the one way outputs are written: to a new hidden temporary file beside the target,
moved over it once complete, and removed if anything fails first (no half-written report, export
or message is ever left under the target's name). A rename ignores the target's permissions, so on
its own it would replace a file the user write-protected, and leave a ``chmod 600`` findings file
readable by everyone (the new file gets the default mode). :func:`_refuse_write_protected` (before
the work) and :func:`_keep_mode` (before the move) make the replacement behave like writing into the
file. A folder is refused before the work too, and so is a SQLite database or one of its journals
(:func:`_refuse_database`): a report or message written from Python over the snapshot history it
was read from destroyed it (the CLI also refuses its own database and inputs by name, exit 2).
"""

from __future__ import annotations

import contextlib
import errno
import glob
import os
import secrets
import stat
import sys
import time
from collections.abc import Iterator
from contextvars import ContextVar
from pathlib import Path
from typing import IO, Any

from auditor.stopping import removed_on_hard_stop, signals_held


def _refuse_write_protected(path: Path) -> None:
    """Raise ``PermissionError`` when ``path`` is an existing file without its owner's write bit, or
    one this process may not write (another user's file in a folder it may write: a rename would
    replace it all the same)."""
    try:
        mode = path.stat().st_mode
    except OSError:
        return  # missing (or unreadable): the write itself reports what is wrong
    if stat.S_ISREG(mode) and not (mode & stat.S_IWUSR and os.access(path, os.W_OK)):
        raise PermissionError(errno.EACCES, "Permission denied (the file is write-protected)", str(path))


# The first bytes of a SQLite database, of its write-ahead log (either byte order of checksums) and
# of its rollback journal (https://www.sqlite.org/fileformat.html)
_SQLITE_MAGIC = (
    b"SQLite format 3\x00",
    b"\x37\x7f\x06\x82",
    b"\x37\x7f\x06\x83",
    b"\xd9\xd5\x05\xf9\x20\xa1\x63\xd7",
)


def _sqlite_file(path: Path) -> bool:
    try:
        with open(path, "rb") as stream:
            head = stream.read(16)
    except OSError:
        return False
    return head.startswith(_SQLITE_MAGIC)


def _refuse_database(path: Path) -> None:
    """Raise ``OSError`` when ``path`` is a folder, or a SQLite database, its write-ahead log, its
    shared-memory index or its rollback journal (an output written there destroys the history)."""
    if path.is_dir():
        raise IsADirectoryError(errno.EISDIR, "Is a directory", str(path))
    if not path.is_file():
        return
    shm = path.name.endswith("-shm") and _sqlite_file(path.with_name(path.name.removesuffix("-shm")))
    if shm or _sqlite_file(path):
        raise OSError(errno.EEXIST, "it is a SQLite database (writing it would destroy it)", str(path))


def _keep_mode(path: Path, tmp: Path) -> None:
    """Give ``tmp`` the permission bits of the file it is about to replace, if there is one."""
    try:
        mode = path.stat().st_mode
    except OSError:
        return
    if stat.S_ISREG(mode):
        os.chmod(tmp, stat.S_IMODE(mode))


LEFTOVER_AGE = 24 * 3600  # seconds: a temporary file of ours this old was left by a killed writer


NAME_MAX = 255  # bytes in one file name (Linux, macOS, and most file systems)


def _temporary_stem(name: str) -> str:
    """``name``, cut at a character so that its temporary file's name (18 bytes more) still fits
    in :data:`NAME_MAX`: a legal output name of 238-255 bytes could not be written at all."""
    room = NAME_MAX - len(".." + "0" * 12 + ".tmp")
    encoded = name.encode("utf-8", "surrogateescape")
    if len(encoded) <= room:
        return name
    return encoded[:room].decode("utf-8", "ignore")


def _temporary_name(stem: str, tag: str) -> str:
    """The hidden name of a temporary file for an output whose :func:`_temporary_stem` is ``stem``
    (``tag``: 12 hex digits)."""
    return f".{stem}.{tag}.tmp"


def _remove_leftovers(path: Path) -> None:
    """Remove this output's temporary files left by writers killed outright (``kill -9``, an
    out-of-memory kill, a power cut) more than a day ago: hidden, nothing else would ever remove
    them, and each may be as large as the output. A writer still at work has a younger one."""
    cutoff = time.time() - LEFTOVER_AGE
    with contextlib.suppress(OSError):
        for found in path.parent.glob(
            _temporary_name(glob.escape(_temporary_stem(path.name)), "[0-9a-f]" * 12)
        ):
            with contextlib.suppress(OSError):
                info = found.lstat()
                if stat.S_ISREG(info.st_mode) and info.st_mtime < cutoff:
                    found.unlink()


def _create_beside(path: Path) -> tuple[Path, int]:
    """A new, hidden temporary file beside ``path``, opened for writing: (its path, its descriptor).

    Its name is random and it is created exclusively, never through an existing file or symbolic
    link: a link planted under a predictable name in a shared workspace would otherwise have the
    output written wherever it points. Its mode is the default one (0666 less the umask), as a file
    written by ``open`` would have.
    """
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    _remove_leftovers(path)
    while True:
        tmp = path.with_name(_temporary_name(_temporary_stem(path.name), secrets.token_hex(6)))
        try:
            return tmp, os.open(tmp, flags, 0o666)
        except FileExistsError:
            continue  # 48 random bits taken already: draw again
        except OSError as exc:  # named after the target, not the temporary file nobody asked for
            raise OSError(exc.errno, exc.strerror, str(path)) from None


def _final_target(path: Path) -> Path:
    """The file a symbolic link ``path`` leads to (through every link), else ``path``: the new
    content replaces that file and the link stays, as writing through the link would do (a rename
    over the link replaced the link itself with a regular file, and left its target as it was).
    A loop of links raises ``OSError`` (ELOOP), as a write through it would."""
    if not path.is_symlink():
        return path
    try:
        return Path(os.path.realpath(path, strict=True))
    except FileNotFoundError:  # the link leads to a file not made yet: create it, as a write would
        return Path(os.path.realpath(path))


def standard_stream(path: str | os.PathLike[str]) -> int | None:
    """1 or 2 when ``path`` names the very file this process's standard output or error writes to
    (``/dev/stdout``, ``/dev/fd/2``, or the file a shell redirected it to, named again); else None."""
    try:
        target = os.stat(path)
    except (OSError, ValueError):
        return None
    for fd in (1, 2):
        try:
            if os.path.samestat(target, os.fstat(fd)):
                return fd
        except OSError:  # (closed)
            continue
    return None


def reader_of_stdout_gone(exc: BaseException, path: str | os.PathLike[str]) -> bool:
    """Whether ``exc``, raised writing ``path``, is standard output's reader going away: ``-o
    /dev/stdout | head -1`` then ends as the same command without ``-o`` (exit 141), not with an
    error (exit 3)."""
    return isinstance(exc, BrokenPipeError) and standard_stream(path) == 1


def _not_a_file(path: Path) -> bool:
    """``path`` exists and is something other than a regular file or a folder (links followed:
    ``/dev/stdout`` leads to ``pipe:[…]``, which has no path of its own)."""
    try:
        mode = path.stat().st_mode
    except OSError:
        return False
    return not (stat.S_ISREG(mode) or stat.S_ISDIR(mode))


def _refuse_locked_folder(path: Path) -> None:
    if path.is_file() and not os.access(path.parent, os.W_OK | os.X_OK):
        # A writable file in a folder this process may not write: no new file can be made beside
        # it, and writing into it would leave it half-written on a failure (and out of step with
        # the files written together with it), so it is refused.
        raise PermissionError(
            errno.EACCES,
            "Permission denied (its folder is not writable: the file is replaced, not edited)",
            str(path),
        )


def check_writable(path: Path, creates: Path | None = None) -> None:
    """Raise ``OSError`` now where :func:`replacing` would fail on ``path`` later for reasons known
    beforehand: its folder missing or not writable, the file write-protected. A command checks its
    outputs so before an hour of fetching, not after (a full disk can only be found by writing).
    ``creates``: a folder the command makes (with its parents) before writing ``path``."""
    if _not_a_file(path) or standard_stream(path) is not None:
        return
    target = _final_target(path)
    if target.is_dir():
        return  # refused by name (exit 2) by the caller's options
    _refuse_write_protected(target)
    _refuse_locked_folder(target)
    folder = target.parent
    made = creates is not None and (folder == creates or folder in creates.parents)
    if not folder.is_dir() and not made:
        # said as what to fix ("No such file or directory" named neither the folder nor a file in its way)
        start = next((p for p in (folder, *folder.parents) if p.exists()), None)
        if start is not None and not start.is_dir():
            raise NotADirectoryError(errno.ENOTDIR, f"{start} is a file, not a folder", str(path))
        raise FileNotFoundError(errno.ENOENT, f"the folder {folder} does not exist", str(path))
    check_creatable(folder)


def check_creatable(folder: Path) -> None:
    """Raise ``OSError`` where writing into ``folder``, made first with its parents if missing,
    must fail: the first of them that exists is not a folder, or not one this process may write in."""
    start = next((p for p in (folder, *folder.parents) if p.exists()), None)
    if start is None:
        return
    if not start.is_dir():
        raise NotADirectoryError(errno.ENOTDIR, "Not a directory", str(start))
    if not os.access(start, os.W_OK | os.X_OK):
        raise PermissionError(errno.EACCES, "Permission denied", str(start))


@contextlib.contextmanager
def replacing(path: Path, *, binary: bool = False, newline: str | None = None) -> Iterator[IO[Any]]:
    """A stream whose content replaces ``path`` when the block ends without an exception.

    Text is UTF-8 (``newline`` as for :func:`open`); ``binary`` gives a bytes stream. ``OSError``
    (a missing folder, a full disk, a write-protected target) propagates for the caller to word.
    """
    stream_fd = standard_stream(path)
    if stream_fd is not None:
        # The file standard output (or error) already writes to, a regular file behind `> FILE` or
        # `>> FILE`: written through that descriptor. Opening the path again would truncate what a
        # `>>` kept, and a rename would leave the stream writing into a file no longer there.
        for std in (sys.stdout, sys.stderr):
            with contextlib.suppress(AttributeError, OSError, ValueError):
                std.flush()
        duplicate = os.dup(stream_fd)
        with (
            os.fdopen(duplicate, "wb")
            if binary
            else open(duplicate, "w", encoding="utf-8", newline=newline) as stream
        ):
            yield stream
        return
    if _not_a_file(path):
        # A device, a pipe or a socket (/dev/null, /dev/stdout, a FIFO a reader waits on) is written
        # into, as a shell redirection would: a rename would replace the node with a regular file.
        with open(path, "wb") if binary else open(path, "w", encoding="utf-8", newline=newline) as stream:
            yield stream
        return
    path = _final_target(path)
    _refuse_database(path)
    _refuse_write_protected(path)
    _refuse_locked_folder(path)
    tmp, fd = _create_beside(path)
    with removed_on_hard_stop(tmp):
        try:
            with (
                os.fdopen(fd, "wb") if binary else open(fd, "w", encoding="utf-8", newline=newline) as stream
            ):
                yield stream
            _keep_mode(path, tmp)
            batch = _batch.get()
            if batch is None:
                tmp.replace(path)
            else:
                batch.defer(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise


class _Batch:
    """The files written inside :func:`together`: each complete under its temporary name."""

    def __init__(self, stack: contextlib.ExitStack) -> None:
        self.pending: list[tuple[Path, Path]] = []
        self._stack = stack

    def defer(self, tmp: Path, target: Path) -> None:
        self._stack.enter_context(removed_on_hard_stop(tmp))
        self.pending.append((tmp, target))


_batch: ContextVar[_Batch | None] = ContextVar("auditor_outfile_batch", default=None)


@contextlib.contextmanager
def together() -> Iterator[None]:
    """Files written with :func:`replacing` inside the block replace their targets only once the
    whole block has succeeded, one right after the other with Ctrl-C held: a report and its
    exports are never left a mix of two runs (an interruption or failure midway replaces none,
    and removes the new files). Nested blocks join the outer one."""
    if _batch.get() is not None:
        yield
        return
    with contextlib.ExitStack() as stack:
        batch = _Batch(stack)
        token = _batch.set(batch)
        try:
            yield
        except BaseException:
            for tmp, _ in batch.pending:
                tmp.unlink(missing_ok=True)
            raise
        finally:
            _batch.reset(token)
        with signals_held():
            for i, (tmp, target) in enumerate(batch.pending):
                try:
                    tmp.replace(target)
                except BaseException:
                    for rest, _ in batch.pending[i:]:
                        rest.unlink(missing_ok=True)
                    raise
