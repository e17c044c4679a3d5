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
    code = 1  # what Python exits with after any other exception
    try:
        main(console=True)
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 0 if exc.code is None else 1
        raise
    finally:
        # The command has ended and its exit code is decided (its work committed, its output
        # written): a Ctrl-C or SIGTERM while Python shuts down would only replace that code with
        # 130 or 143, and a scheduler would read a complete snapshot as interrupted. Ignored from
        # here; and should the shutdown hang (a thread or a process it waits for), the process
        # ends with that code after EXIT_GRACE seconds rather than only on SIGKILL.
        import signal
        import threading

        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        threading.Thread(target=_end_after, args=(EXIT_GRACE, code), name="auditor-exit", daemon=True).start()


EXIT_GRACE = 10.0  # seconds the process may take to end once its command has returned


def _end_after(seconds: float, code: int) -> None:
    import contextlib
    import os
    import time

    time.sleep(seconds)
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):  # ending regardless
            stream.flush()
    os._exit(code)
