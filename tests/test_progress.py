"""The progress line and log lines share stderr: a log line never starts inside the progress text."""

from __future__ import annotations

import io
import logging

from auditor.progress import Progress, cleared


def test_a_log_line_erases_the_progress_line_which_is_drawn_again_below_it(monkeypatch):
    from auditor.cli.main import _StderrFormatter, _StderrHandler

    monkeypatch.setattr(Progress, "rate", lambda self: 0.0)
    stream = io.StringIO()
    progress = Progress(stream=stream, enabled=True, min_interval=3600)  # only forced or due draws
    progress.start(3)
    handler = _StderrHandler(stream)
    handler.setFormatter(_StderrFormatter("%(levelname)s %(name)s: %(message)s"))
    logger = logging.getLogger("auditor.test-progress")
    logger.propagate = False
    logger.addHandler(handler)
    try:
        logger.warning("the server reflects the key")
        progress.add_columns(20)  # drawn at once: the line was erased, so it is due again
        progress.cluster_done()  # throttled: not drawn
        logger.warning("second warning")
    finally:
        logger.removeHandler(handler)
    progress.close()
    first = "snapshot: clusters 0/3, columns 0, 0 columns/s"
    again = "snapshot: clusters 0/3, columns 20, 0 columns/s"
    last = "snapshot: clusters 1/3, columns 20, 0 columns/s"
    assert stream.getvalue() == (
        f"\r{first}\r{' ' * len(first)}\rWARNING auditor.test-progress: the server reflects the key\n"
        f"\r{again}\r{' ' * len(again)}\rWARNING auditor.test-progress: second warning\n"
        f"\r{last}\n"
    )
    # what a terminal shows: each log line from the left margin, the progress line below them
    shown = [line.split("\r")[-1] for line in stream.getvalue().split("\n")]
    assert shown == [
        "WARNING auditor.test-progress: the server reflects the key",
        "WARNING auditor.test-progress: second warning",
        last,
        "",
    ]


def test_nothing_is_erased_on_another_stream_or_when_no_progress_is_shown():
    shown, other = io.StringIO(), io.StringIO()
    progress = Progress(stream=shown, enabled=True)
    progress.start(1)
    with cleared(other):
        other.write("line\n")
    assert other.getvalue() == "line\n"
    progress.close()
    assert shown.getvalue().count("\r") == 2  # its own two draws: never erased
    quiet = io.StringIO()
    Progress(stream=quiet, enabled=False).start(1)
    with cleared(quiet):
        quiet.write("line\n")
    assert quiet.getvalue() == "line\n"


def test_a_log_record_is_one_line_whatever_the_tenant_put_in_it():
    """A cluster id holding a line feed forged a second, dated ERROR line on stderr at the default
    verbosity; a traceback appended under --debug keeps its lines."""
    from auditor.cli.main import _StderrFormatter

    formatter = _StderrFormatter("%(levelname)s %(name)s: %(message)s")
    logger = logging.getLogger("auditor.test-one-line")
    record = logger.makeRecord(
        logger.name,
        logging.WARNING,
        __file__,
        1,
        "cluster %s: a page failed",
        ("evil\n2026-12-06 ERROR forged",),
        None,
    )
    assert formatter.format(record) == (
        "WARNING auditor.test-one-line: cluster evil\\x0a2026-12-06 ERROR forged: a page failed"
    )
    try:
        raise ValueError("inner")
    except ValueError:
        import sys

        record = logger.makeRecord(logger.name, logging.ERROR, __file__, 1, "failed", (), sys.exc_info())
    shown = formatter.format(record)
    assert shown.splitlines()[0] == "ERROR auditor.test-one-line: failed"
    assert shown.splitlines()[1] == "Traceback (most recent call last):"


def test_clusters_found_by_a_second_listing_raise_the_total_shown():
    progress = Progress(stream=io.StringIO(), enabled=True)
    progress.start(3)
    progress.cluster_done()
    progress.add_clusters(2)
    assert progress.line().startswith("snapshot: clusters 1/5, columns 0, ")
