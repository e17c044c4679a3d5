"""The command-line interface: thin click commands over the library (the only place click is used).

:func:`entry` is the console script: it imports the commands (a fraction of a second, longer on a
loaded machine) with Ctrl-C answered as everywhere else, one line and exit 130, rather than with a
traceback of whichever import it cut.
"""

from __future__ import annotations

import sys


def entry() -> None:
    """The ``auditor`` console script: :func:`auditor.cli.main.main`, imported under a Ctrl-C guard."""
    try:
        from auditor.cli.main import main
    except KeyboardInterrupt:
        sys.stderr.write("auditor: interrupted\n")
        raise SystemExit(130) from None
    try:
        main()
    finally:
        # The command has ended and its exit code is decided (its work committed, its output
        # written): a Ctrl-C or SIGTERM while Python shuts down would only replace that code with
        # 130 or 143, and a scheduler would read a complete snapshot as interrupted.
        import signal

        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
