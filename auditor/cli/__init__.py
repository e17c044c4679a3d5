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
    main()
