"""``python -m auditor``: the ``auditor`` command, for a Python whose scripts folder is not on PATH.

Guarded, because rule-evaluating worker processes import the main module again.
"""

if __name__ == "__main__":
    from auditor.cli import entry

    entry()
