"""Edges of ``auditor.secrets``, ``auditor.outfile`` and ``auditor.stopping`` found by mutation testing:
the boundaries and spellings that keep a secret out of every output, and the files and exit codes a
stop or a failure leaves behind."""

from __future__ import annotations

import base64
import logging
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator

import pytest

from auditor import outfile, secrets

KEY = "Kf8QzLw2pVx7NmR4tYb1"  # a random API key: 20 characters


@pytest.fixture(autouse=True)
def _no_secrets() -> Iterator[None]:
    secrets.forget_all()
    yield
    secrets.forget_all()


# --- secrets: the shortest secret, and every spelling of one ---------------------------------------


def test_a_secret_of_exactly_the_minimum_length_is_masked_and_a_shorter_one_is_not():
    secrets.register("ab12")
    secrets.register("xyz")  # refused: it would mask ordinary words
    assert secrets.scrub("key ab12, word xyz") == "key ***, word xyz"
    assert secrets.forms("ab12") == frozenset({"ab12", "YWIxMg==", "YWIxMg"})
    assert secrets.forms("xyz") == frozenset()


def test_a_secret_is_masked_in_its_base64_spelling_with_and_without_padding():
    password = "hunter2-pw"  # 10 bytes: its base64 ends with '=='
    encoded = base64.b64encode(password.encode()).decode()
    assert encoded == "aHVudGVyMi1wdw=="
    secrets.register(password)
    assert secrets.scrub(f"AUTH PLAIN {encoded} refused") == "AUTH PLAIN *** refused"
    assert secrets.scrub("token=aHVudGVyMi1wdw&next") == "token=***&next"  # padding dropped (URL-safe)


def test_the_longest_secret_is_scrubbed_first_so_no_part_of_it_is_left():
    secrets.register("abcd1234")
    secrets.register("abcd1234EFGH")  # contains the other: masked whole, not as ***EFGH
    assert secrets.scrub("said abcd1234EFGH and abcd1234") == "said *** and ***"


# --- scrub_cut: a key cut at an edge of an excerpt, or quoted in part ---------------------------------


def test_scrub_cut_masks_an_edge_of_exactly_four_characters_and_the_longest_cut():
    secrets.register("sk-PROBE-2-zz9")  # not a credential: only its edges and whole forms are masked
    assert secrets.scrub_cut("tail sk-P") == "tail ***"
    assert secrets.scrub_cut("-zz9 head") == "*** head"
    assert secrets.scrub_cut("tail sk-PROBE-2-zz") == "tail ***"  # all but its last character
    assert secrets.scrub_cut("k-PROBE-2-zz9 head") == "*** head"  # all but its first


def test_scrub_cut_masks_an_ending_only_at_the_start_of_the_excerpt():
    secrets.register(KEY, credential=True)
    # the run of the key in the middle is masked as a run; the words before it are kept
    assert secrets.scrub_cut("cluster c3 said NmR4tYb1 twice") == "cluster c3 said *** twice"


def test_a_run_of_exactly_eight_characters_of_the_key_is_masked():
    secrets.register(KEY, credential=True)
    assert secrets.scrub_cut("QzLw2pVx") == "***"  # the whole text, eight characters
    assert secrets.scrub_cut("id 2pVx7NmR z") == "id *** z"
    assert secrets.scrub_cut("id 2pVx7Nm z") == "id 2pVx7Nm z"  # seven: left as they are


def test_the_last_eight_characters_of_the_key_are_a_run_too():
    secrets.register(KEY, credential=True)
    assert secrets.scrub_cut("id NmR4tYb1 z") == "id *** z"


def test_runs_of_a_twelve_character_key_are_masked():
    key = "Q7wE9rT2yU4i"  # the shortest credential searched for runs: 2 * FRAGMENT - 4
    assert len(key) == 2 * secrets.FRAGMENT - 4
    secrets.register(key, credential=True)
    assert secrets.scrub_cut("id wE9rT2yU4 z") == "id *** z"


def test_runs_of_the_key_in_upper_case_are_masked():
    secrets.register(KEY, credential=True)
    assert secrets.scrub_cut("TOKEN KF8QZLW2PVX7 REFUSED") == "TOKEN *** REFUSED"


def test_two_runs_side_by_side_are_one_mask():
    secrets.register(KEY, credential=True)
    assert secrets.scrub_cut("id Kf8QzLw2NmR4tYb1 z") == "id *** z"


def test_a_run_repeated_inside_a_key_is_masked_at_every_overlapping_place():
    secrets.register("QWERTYUIabababababZXCV", credential=True)
    assert secrets.scrub_cut("id abababababab z") == "id *** z"


# --- redact_bytes: spellings inside a JSON body --------------------------------------------------------


def test_redact_bytes_masks_a_secret_with_a_space_in_a_body_with_escapes():
    secrets.register("open sesame 42")
    content = b'{"a": "say open sesame 42", "b": "x\\/y"}'  # a backslash: the spellings are searched
    assert secrets.redact_bytes(content) == (b'{"a": "say ***", "b": "x\\/y"}', 1)


def test_redact_bytes_takes_a_backslash_of_a_key_only_as_json_escapes_it():
    key = "ab\\ncd"  # a literal backslash, then n
    secrets.register(key)
    newline = b'["ab\\ncd", "x"]'  # 'ab', a line feed, 'cd': not the key
    assert secrets.redact_bytes(newline) == (newline, 0)
    assert secrets.redact_bytes(b'["ab\\\\ncd", "x"]') == (b'["***", "x"]', 1)


# --- the log filter -----------------------------------------------------------------------------------


def test_the_filter_scrubs_a_traceback_text_already_formatted():
    secrets.register(KEY)
    record = logging.LogRecord("auditor", logging.ERROR, __file__, 1, "failed with %s", (KEY,), None)
    record.exc_text = f"Traceback (most recent call last):\nValueError: bad token {KEY}"
    assert secrets.ScrubFilter().filter(record) is True
    assert (record.getMessage(), record.exc_text) == (
        "failed with ***",
        "Traceback (most recent call last):\nValueError: bad token ***",
    )


def test_records_logged_on_urllib3_and_requests_are_scrubbed(caplog):
    secrets.install_log_filter()
    secrets.register(KEY)
    with caplog.at_level(logging.DEBUG):
        logging.getLogger("urllib3").debug('"GET /%s/api HTTP/1.1" 401', KEY)
        logging.getLogger("requests").debug("retrying with %s", KEY)
    assert [r.getMessage() for r in caplog.records] == ['"GET /***/api HTTP/1.1" 401', "retrying with ***"]


def test_the_traceback_of_a_logged_exception_is_scrubbed(caplog):
    """Found by a probe: a filter runs before the formatter that writes the traceback, so the
    exception's text (and the source line that raised it) went out whole (the sandbox logs so)."""
    secrets.register(KEY)
    log = secrets.scrubbed_logger("auditor.sandbox")
    try:
        raise ValueError(f"bad token {KEY}")
    except ValueError:
        with caplog.at_level(logging.ERROR):
            log.exception("internal error")
            log.error("with its stack", stack_info=True, extra={"key": KEY})
    assert KEY not in caplog.text
    assert "ValueError: bad token ***" in caplog.text
    assert 'raise ValueError(f"bad token {KEY}")' in caplog.text  # (the source line: no key in it)


def test_a_debug_traceback_on_stderr_is_scrubbed(capsys):
    """``--debug`` printed the traceback of an error as Python wrote it: its text unmasked."""
    from auditor.cli.main import report_error
    from auditor.errors import ApiError

    secrets.register(KEY)
    try:
        raise ApiError(f"the server answered with the key {KEY}")
    except ApiError as exc:
        report_error(exc, debug=True)
    err = capsys.readouterr().err
    assert KEY not in err
    assert "Traceback (most recent call last):" in err
    assert "auditor.errors.ApiError: the server answered with the key ***" in err
    assert err.splitlines()[-1] == "error: the server answered with the key ***"


# --- outfile: nothing half-written, no temporary file left --------------------------------------------


def test_a_ctrl_c_while_writing_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "report.html"
    target.write_text("previous")
    with pytest.raises(KeyboardInterrupt), outfile.replacing(target) as stream:
        stream.write("half of it")
        raise KeyboardInterrupt
    assert target.read_text() == "previous"
    assert [p.name for p in tmp_path.iterdir()] == ["report.html"]


def test_a_failure_inside_together_replaces_nothing_and_leaves_no_temporary(tmp_path):
    report, export = tmp_path / "report.html", tmp_path / "export.csv"
    report.write_text("old report")
    export.write_text("old export")
    with pytest.raises(RuntimeError), outfile.together():
        with outfile.replacing(report) as stream:
            stream.write("new report")
        with outfile.replacing(export) as stream:
            stream.write("new export")
        raise RuntimeError("the third output failed")
    assert (report.read_text(), export.read_text()) == ("old report", "old export")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export.csv", "report.html"]


def test_a_move_that_fails_inside_together_leaves_no_temporary(tmp_path):
    report, export = tmp_path / "report.html", tmp_path / "export.csv"
    with pytest.raises(IsADirectoryError), outfile.together():
        with outfile.replacing(report) as stream:
            stream.write("new report")
        with outfile.replacing(export) as stream:
            stream.write("new export")
        (export / "in-the-way").mkdir(parents=True)  # a folder made meanwhile: the move over it fails
    assert report.read_text() == "new report"  # moved before the one that failed
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export.csv", "report.html"]
    assert export.is_dir()


def test_a_ctrl_c_between_the_moves_of_together_is_held_until_all_are_moved(tmp_path):
    """A Ctrl-C arriving during the first move (sent by an audit hook on the move itself) must not
    leave a new report beside an old export."""
    script = textwrap.dedent(
        """
        import os, signal, sys
        from pathlib import Path
        from auditor import outfile
        folder = Path(sys.argv[1])
        sent = []
        def hook(event, args):
            if event == "os.rename" and not sent:
                sent.append(1)
                os.kill(os.getpid(), signal.SIGINT)
        sys.addaudithook(hook)
        try:
            with outfile.together():
                for name in ("report.html", "export.csv"):
                    with outfile.replacing(folder / name) as stream:
                        stream.write("new " + name)
        except KeyboardInterrupt:
            print("interrupted", flush=True)
        """
    )
    for name in ("report.html", "export.csv"):
        (tmp_path / name).write_text("old " + name)
    child = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path)], capture_output=True, text=True, timeout=60
    )
    assert (child.returncode, child.stdout, child.stderr) == (0, "interrupted\n", "")
    assert {p.name: p.read_text() for p in tmp_path.iterdir()} == {
        "report.html": "new report.html",
        "export.csv": "new export.csv",
    }


def test_a_folder_is_refused_before_the_work_naming_the_folder(tmp_path):
    folder = tmp_path / "reports"
    folder.mkdir()
    ran = []
    with pytest.raises(IsADirectoryError) as caught, outfile.replacing(folder) as stream:
        ran.append(stream)
    assert (caught.value.filename, ran) == (str(folder), [])
    assert [p.name for p in tmp_path.iterdir()] == ["reports"]


@pytest.mark.parametrize(
    ("name", "head"),
    [
        ("history.db-shm", b"anything: the index has no magic"),
        ("history.db-journal", b"\xd9\xd5\x05\xf9\x20\xa1\x63\xd7" + b"\x00" * 8),
    ],
)
def test_a_database_s_shared_memory_index_or_rollback_journal_is_never_written_over(tmp_path, name, head):
    (tmp_path / "history.db").write_bytes(b"SQLite format 3\x00" + b"\x00" * 84)
    kept = tmp_path / name
    kept.write_bytes(head)
    with pytest.raises(OSError) as caught, outfile.replacing(kept) as stream:
        stream.write("a report")
    assert (caught.value.errno, caught.value.filename) == (17, str(kept))
    assert kept.read_bytes() == head
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["history.db", name])


def test_an_output_in_the_very_folder_the_command_creates_is_writable(tmp_path):
    folder = tmp_path / "exports"
    outfile.check_writable(folder / "c.csv", creates=folder)  # no error: the folder is made first
    with pytest.raises(FileNotFoundError):
        outfile.check_writable(folder / "c.csv")


def test_a_name_too_long_for_the_file_system_is_an_error_naming_the_target(tmp_path):
    target = tmp_path / ("r" * 256)  # over 255 bytes: no file can have it (the temporary one is cut)
    with pytest.raises(OSError) as caught, outfile.replacing(target) as stream:
        stream.write("x")
    assert (caught.value.errno, caught.value.filename) == (36, str(target))
    assert list(tmp_path.iterdir()) == []


# --- stopping: the exit codes and the signals held ---------------------------------------------------


def _run(script: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script), *args], capture_output=True, text=True, timeout=60
    )


def test_the_first_stop_held_is_the_one_raised_and_the_handlers_come_back():
    child = _run(
        """
        import os, signal, time
        from auditor import stopping
        from auditor.cli.main import install_stop_handlers
        install_stop_handlers()
        try:
            with stopping.signals_held():
                os.kill(os.getpid(), signal.SIGINT)
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(0.2)
                print("block done", flush=True)
        except BaseException as exc:
            print(type(exc).__name__, flush=True)
        try:
            os.kill(os.getpid(), signal.SIGINT)  # after the block: raised at once, as ever
            time.sleep(5)
            print("not raised", flush=True)
        except KeyboardInterrupt:
            print("raised again", flush=True)
        """
    )
    assert (child.returncode, child.stdout, child.stderr) == (
        0,
        "block done\nKeyboardInterrupt\nraised again\n",
        "",
    )


def test_a_first_sigterm_is_raised_in_the_command():
    child = _run(
        """
        import os, signal, time
        from auditor.cli.main import install_stop_handlers
        install_stop_handlers()
        try:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)
            print("ignored", flush=True)
        except BaseException as exc:
            print(type(exc).__name__, flush=True)
        """
    )
    assert (child.returncode, child.stdout, child.stderr) == (0, "Terminated\n", "")


def test_a_stop_behind_a_database_error_is_told_once():
    from auditor import stopping

    stop = KeyboardInterrupt()
    assert stopping.stop_raised(stop) is stop
    detail = "(sqlite3.OperationalError) user-defined function raised exception"
    assert stopping.stop_inside_database(detail) is stop
    assert stopping.stop_inside_database(detail) is None  # a later failure of a function is its own
    assert stopping.stop_inside_database("database is locked") is None


def test_the_hard_stop_is_not_armed_over_an_event_loop_s_wakeup_descriptor():
    from auditor import stopping

    read_end, write_end = os.pipe()
    os.set_blocking(write_end, False)
    previous = signal.set_wakeup_fd(write_end)
    try:
        with stopping.armed() as armed:
            assert armed is False
        assert signal.set_wakeup_fd(previous) == write_end  # theirs stayed in place
    finally:
        os.close(read_end)
        os.close(write_end)


def _ready(script: str, *args: str) -> subprocess.Popen[str]:
    """A Python child running ``script`` (dedented) with ``args``, once it has printed ``ready``."""
    child = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(script), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None and child.stdout.readline() == "ready\n"
    return child


def test_a_hard_stop_keeps_a_file_whose_block_has_ended(tmp_path):
    """Only temporary files still being written are removed by a hard stop, not a finished output."""
    kept, temporary = tmp_path / "report.html", tmp_path / ".report.html.0123456789ab.tmp"
    script = """
        import signal, sys, time
        from auditor import stopping
        from auditor.cli.main import install_stop_handlers
        install_stop_handlers()
        kept, temporary = sys.argv[1], sys.argv[2]
        with stopping.armed(grace=60) as armed:
            with stopping.removed_on_hard_stop(kept):
                open(kept, "w").write("done")
            with stopping.removed_on_hard_stop(temporary):
                open(temporary, "w").write("half")
                said = False
                while True:  # a cleanup that never ends: only the hard stop ends it
                    try:
                        if not said:  # inside the try: the signal may come at once
                            print("ready", flush=True)
                            said = True
                        time.sleep(5)
                    except KeyboardInterrupt:
                        pass
        """
    child = _ready(script, str(kept), str(temporary))
    child.send_signal(signal.SIGINT)

    time.sleep(0.5)
    child.send_signal(signal.SIGINT)
    _out, err = child.communicate(timeout=30)
    assert child.returncode == 130
    assert err.strip().startswith("auditor: stopped again")
    assert [p.name for p in tmp_path.iterdir()] == ["report.html"]
    assert kept.read_text() == "done"


def test_the_hard_stop_comes_when_the_grace_ends_not_later(tmp_path):

    script = """
        import time
        from auditor import stopping
        from auditor.cli.main import install_stop_handlers
        install_stop_handlers()
        with stopping.armed(grace=3.0):
            said = False
            while True:
                try:
                    if not said:  # inside the try: the signal may come at once
                        print("ready", flush=True)
                        said = True
                    time.sleep(5)
                except BaseException:
                    pass
        """
    child = _ready(script)
    started = time.monotonic()
    child.send_signal(signal.SIGTERM)
    _out, err = child.communicate(timeout=30)
    elapsed = time.monotonic() - started
    assert child.returncode == 143
    assert err.strip().startswith("auditor: still stopping after 3 s")
    assert 2.9 < elapsed < 5.9  # the grace, not twice it (6 s)


@pytest.mark.parametrize("name", ["L" * 250 + ".html", "é" * 125 + ".csv", "r" * 237])
def test_an_output_whose_name_uses_most_of_255_bytes_is_written(tmp_path, name):
    # Found by a path probe: the temporary file's name adds 18 bytes, so a legal name of 238-255
    # bytes failed with "File name too long" (and under 'run', after the snapshot).
    import os
    import time

    target = tmp_path / name
    assert len(name.encode()) <= 255
    with outfile.replacing(target) as stream:
        stream.write("done")
    assert target.read_text() == "done"
    assert sorted(p.name for p in tmp_path.iterdir()) == [name]
    # a day-old temporary file of a killed writer is still found and removed, its name cut the same way
    stale = tmp_path / outfile._temporary_name(outfile._temporary_stem(name), "0" * 12)
    stale.write_text("half")
    os.utime(stale, (time.time() - 2 * outfile.LEFTOVER_AGE,) * 2)
    with outfile.replacing(target) as stream:
        stream.write("again")
    assert sorted(p.name for p in tmp_path.iterdir()) == [name]
