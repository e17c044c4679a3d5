"""Replacing an output file (``--output``, ``--eml``, ``--export-dir``) the way a user expects.

Outputs are written to a hidden temporary file beside the target and moved over it once complete.
A rename ignores the target's permissions, so on its own it would replace a file the user
write-protected, and leave a ``chmod 600`` findings file readable by everyone (the new file gets
the default mode). :func:`refuse_write_protected` (before the work) and :func:`keep_mode` (before
the move) make the replacement behave like writing into the file.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path


def refuse_write_protected(path: Path) -> None:
    """Raise ``PermissionError`` when ``path`` is an existing file without its owner's write bit."""
    try:
        mode = path.stat().st_mode
    except OSError:
        return  # missing (or unreadable): the write itself reports what is wrong
    if stat.S_ISREG(mode) and not mode & stat.S_IWUSR:
        raise PermissionError(errno.EACCES, "Permission denied (the file is write-protected)", str(path))


def keep_mode(path: Path, tmp: Path) -> None:
    """Give ``tmp`` the permission bits of the file it is about to replace, if there is one."""
    try:
        mode = path.stat().st_mode
    except OSError:
        return
    if stat.S_ISREG(mode):
        os.chmod(tmp, stat.S_IMODE(mode))
