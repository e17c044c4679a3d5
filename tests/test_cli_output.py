"""write_output: whole texts and streamed pieces, to stdout or atomically to --output."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import time

import pytest

from auditor.cli.common import write_output
from auditor.errors import DeliveryError


def test_pieces_are_written_to_the_file_once_all_are_produced(tmp_path):
    target = tmp_path / "out.json"
    target.write_text("previous")

    def pieces():
        yield "{"
        assert target.read_text() == "previous"  # the old file stays until the last piece
        yield '"a": 1}\n'

    write_output(pieces(), str(target))
    assert target.read_text() == '{"a": 1}\n'
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]


def test_a_failure_while_producing_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "out.json"
    target.write_text("previous")

    def pieces():
        yield "{"
        raise RuntimeError("the database went away")

    with pytest.raises(RuntimeError):
        write_output(pieces(), str(target))
    assert target.read_text() == "previous"
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]


def test_an_unwritable_target_is_a_delivery_error(tmp_path):
    with pytest.raises(DeliveryError, match="cannot write"):
        write_output(iter(["x"]), str(tmp_path / "missing" / "out.json"))


@pytest.mark.parametrize(
    ("text", "printed"),
    [("a\nb\n", "a\nb\n"), ("no newline", "no newline\n"), ("", "\n"), (iter(["a", "", "b\n"]), "ab\n")],
)
def test_stdout_gets_the_text_with_one_final_newline(text, printed, capsys):
    write_output(text, None)
    assert capsys.readouterr().out == printed


def test_a_write_protected_target_is_refused_and_kept(tmp_path):
    # The temporary file was renamed over it: a file the user had made read-only was replaced.
    target = tmp_path / "out.json"
    target.write_text("previous")
    target.chmod(0o444)
    with pytest.raises(DeliveryError) as caught:
        write_output(iter(["new"]), str(target))
    assert caught.value.message == f"cannot write {target}: Permission denied (the file is write-protected)"
    assert target.read_text() == "previous"
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]


def test_a_replaced_file_keeps_its_permissions(tmp_path):
    # A chmod 600 findings file came back 644 (the new file's default mode): readable by all.
    target = tmp_path / "findings.json"
    target.write_text("previous")
    target.chmod(0o600)
    write_output("new", str(target))
    assert (target.read_text(), target.stat().st_mode & 0o777) == ("new", 0o600)


def test_a_planted_symbolic_link_is_not_written_through(tmp_path):
    """In a shared workspace, a link planted under the temporary file's name (it was always
    '.out.json.tmp') had the output written over whatever file it pointed at."""
    precious = tmp_path / "precious.txt"
    precious.write_text("precious")
    for planted in (".out.json.tmp", ".out.json.0.tmp"):
        (tmp_path / planted).symlink_to(precious)
    target = tmp_path / "out.json"
    write_output('{"a": 1}', str(target))
    assert precious.read_text() == "precious"
    assert not target.is_symlink()
    assert target.read_text() == '{"a": 1}'
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        ".out.json.0.tmp",
        ".out.json.tmp",
        "out.json",
        "precious.txt",
    ]


def test_an_output_named_through_a_symbolic_link_replaces_the_file_it_leads_to(tmp_path):
    """Found by a CI probe: the rename replaced the link itself with a regular file, and the file
    it leads to (where the user's pipeline reads) kept the old findings."""
    (tmp_path / "reports").mkdir()
    real = tmp_path / "reports" / "findings.json"
    real.write_text("old")
    real.chmod(0o600)
    (tmp_path / "latest.json").symlink_to(real)
    (tmp_path / "via.json").symlink_to(tmp_path / "latest.json")  # a chain of two
    write_output("new", str(tmp_path / "via.json"))
    assert (tmp_path / "via.json").is_symlink() and (tmp_path / "latest.json").is_symlink()
    assert (real.read_text(), real.stat().st_mode & 0o777) == ("new", 0o600)
    assert sorted(p.name for p in (tmp_path / "reports").iterdir()) == ["findings.json"]
    # a link to a file not made yet creates it, as writing through the link does
    (tmp_path / "dangling.json").symlink_to(tmp_path / "reports" / "first.json")
    write_output("first", str(tmp_path / "dangling.json"))
    assert (tmp_path / "dangling.json").is_symlink()
    assert (tmp_path / "reports" / "first.json").read_text() == "first"


def test_links_that_loop_or_lead_nowhere_are_errors_naming_what_was_asked(tmp_path):
    """Found by the session's review: a loop of links was replaced by a regular file, and a link
    into a missing folder named the internal temporary file."""
    (tmp_path / "a").symlink_to(tmp_path / "b")
    (tmp_path / "b").symlink_to(tmp_path / "a")
    with pytest.raises(DeliveryError, match="cannot write") as caught:
        write_output("x", str(tmp_path / "a"))
    assert "symbolic links" in caught.value.message
    assert (tmp_path / "a").is_symlink() and (tmp_path / "b").is_symlink()
    (tmp_path / "away").symlink_to(tmp_path / "missing" / "out.json")
    with pytest.raises(DeliveryError) as caught:
        write_output("x", str(tmp_path / "away"))
    assert caught.value.message.startswith(f"cannot write {tmp_path / 'away'}")
    assert ".tmp" not in caught.value.message


def test_a_file_reached_through_a_link_is_written_as_this_user_may_write_it(tmp_path, monkeypatch):
    """Found by the session's review (as another user than root): a rename replaced a file that
    user could not write, in a folder it could; a writable file in a folder it cannot write is
    refused too, with the reason (written in place, a failure would leave it half-written)."""
    shared = tmp_path / "shared"
    shared.mkdir()
    theirs = shared / "theirs.txt"
    theirs.write_text("theirs")
    (tmp_path / "to-theirs").symlink_to(theirs)
    locked = tmp_path / "locked"
    locked.mkdir()
    mine = locked / "mine.txt"
    mine.write_text("old")
    (tmp_path / "to-mine").symlink_to(mine)
    real_access = os.access

    def access(path, mode, **kw):  # the tests run as root, for whom every access succeeds
        if os.fspath(path) == str(theirs) and mode & os.W_OK:
            return False
        if os.fspath(path) == str(locked) and mode & os.W_OK:
            return False
        return real_access(path, mode, **kw)

    monkeypatch.setattr(os, "access", access)
    with pytest.raises(DeliveryError, match="write-protected"):
        write_output("mine now", str(tmp_path / "to-theirs"))
    assert theirs.read_text() == "theirs"
    with pytest.raises(DeliveryError, match="its folder is not writable"):
        write_output("new", str(tmp_path / "to-mine"))
    assert mine.read_text() == "old"
    assert sorted(p.name for p in locked.iterdir()) == ["mine.txt"]


def test_a_named_pipe_is_written_into_not_replaced(tmp_path):
    """Found by a CI probe: the command exited at once, leaving a regular file in the pipe's place
    and its reader waiting forever (so did /dev/null and /dev/full, as root)."""
    import threading

    fifo = tmp_path / "findings.fifo"
    os.mkfifo(fifo)
    received: list[str] = []
    reader = threading.Thread(target=lambda: received.append(fifo.read_text()), daemon=True)
    reader.start()
    write_output(iter(["{", '"a": 1}']), str(fifo))
    reader.join(timeout=10)
    assert received == ['{"a": 1}']
    assert stat.S_ISFIFO(fifo.stat().st_mode)
    assert [p.name for p in tmp_path.iterdir()] == ["findings.fifo"]


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="no /dev/full here")
def test_a_full_device_is_a_delivery_error_and_stays_a_device():
    before = os.stat("/dev/full")
    assert stat.S_ISCHR(before.st_mode)
    with pytest.raises(DeliveryError, match="cannot write /dev/full"):
        write_output("x" * 100_000, "/dev/full")
    after = os.stat("/dev/full")
    assert stat.S_ISCHR(after.st_mode) and after.st_rdev == before.st_rdev
    write_output("discarded", os.devnull)
    assert stat.S_ISCHR(os.stat(os.devnull).st_mode)


def test_a_new_file_gets_the_default_mode(tmp_path):
    import os

    umask = os.umask(0o022)
    try:
        write_output("new", str(tmp_path / "new.json"))
    finally:
        os.umask(umask)
    assert (tmp_path / "new.json").stat().st_mode & 0o777 == 0o644


@pytest.fixture(scope="module")
def demo_database(tmp_path_factory):
    folder = tmp_path_factory.mktemp("demo") / "d"
    subprocess.run(
        [
            *(sys.executable, "-m", "auditor.cli.main", "demo", "--folder", str(folder)),
            *("--clusters", "12", "--columns", "600"),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    return folder / "auditor.db"


def _check_command(database) -> list[str]:
    return [sys.executable, "-m", "auditor.cli.main", "check", "--db", str(database), "--format", "json"]


def _check(database, **options):
    return subprocess.Popen(_check_command(database), stderr=subprocess.PIPE, **options)


def test_stdout_that_cannot_take_the_results_is_never_read_as_the_gate(demo_database):
    """Found by a probe: `auditor check --format json | head -1` exited 1, which a CI job reads as
    "the gate failed" (without --fail-on, findings never fail it); `> /dev/full` was an internal
    error; and with stdout closed the results went nowhere, with exit 0."""
    # the reader goes away: 141 (128 + SIGPIPE), as other programs end there, and nothing said
    for unbuffered in ("", "1"):  # PYTHONUNBUFFERED=1 (containers, CI images): a write is one call
        env = {**os.environ, "PYTHONUNBUFFERED": unbuffered}
        reader = _check(demo_database, stdout=subprocess.PIPE, env=env)
        # as `head -1` does: read a first block, then go; the writer is blocked in a large write
        assert reader.stdout.read1(4096).startswith(b'{\n  "run":')
        reader.stdout.close()
        # unbuffered, the write returned short without an error and the rest was lost: exit 0
        assert reader.wait(timeout=60) == 141, unbuffered
        assert reader.stderr.read() == b""
    # a full disk behind the redirection
    with open("/dev/full", "wb") as full:
        process = _check(demo_database, stdout=full)
        assert process.wait(timeout=60) == 3
    said = process.stderr.read().decode()
    assert said.splitlines()[0] == "error: cannot write to standard output: No space left on device"
    # started with stdout closed
    process = _check(demo_database, stdout=None, pass_fds=(), preexec_fn=lambda: os.close(1))
    assert process.wait(timeout=60) == 3
    assert process.stderr.read().decode().splitlines() == [
        "error: standard output is closed: the results cannot be written",
        "hint: pass --output FILE",
    ]
    # the same for a command without --output (found by a probe: `rules list >&-` exited 0)
    for words in (("rules", "list"), ("rules", "test")):
        closed = subprocess.run(
            [sys.executable, "-m", "auditor.cli.main", *words],
            stderr=subprocess.PIPE,
            preexec_fn=lambda: os.close(1),
            timeout=120,
        )
        assert closed.returncode == 3, words
        assert closed.stderr.decode().splitlines() == [
            "error: standard output is closed: the results cannot be written",
            "hint: redirect standard output to a file or a pipe",
        ]


def test_a_reader_of_standard_error_that_went_away_changes_no_exit_code(demo_database, tmp_path):
    """Found by a probe of the CI gate: a usage error whose message met a closed pipe exited 1 (a
    failed gate, to a CI job) instead of 2, and with only the reader of stderr gone (`2>&1
    >/dev/null | true`) a check exited 141 whatever its gate said; `-o /dev/stdout | head -1`
    exited 3 with an error instead of 141 as without -o."""
    closed_stderr = {"stderr": subprocess.DEVNULL}
    # (with an ASCII stderr click writes through a text layer of its own: a review found it exiting 1)
    for unbuffered, encoding in (("", "utf-8"), ("1", "utf-8"), ("", "ascii")):
        env = {**os.environ, "PYTHONUNBUFFERED": unbuffered, "PYTHONIOENCODING": encoding}
        read, write = os.pipe()
        os.close(read)  # a reader already gone: the first write to stderr fails
        try:
            for words, expected in (
                (("--fail-on", "bogus"), 2),  # click's usage error
                (("--bogus-flag",), 2),
                (("--fail-on", "info", "-o", str(tmp_path / "r.json")), 1),  # written, then said
                (("-o", str(tmp_path / "r.json")), 0),
                (("--run", "99"), 3),
            ):
                command = _check_command(demo_database)
                done = subprocess.run(
                    [*command, *words], stdout=subprocess.DEVNULL, stderr=write, env=env, timeout=120
                )
                assert done.returncode == expected, (unbuffered, words)
        finally:
            os.close(write)
        assert json.loads((tmp_path / "r.json").read_text(encoding="utf-8"))["run"] == 2
        main = [sys.executable, "-m", "auditor.cli.main"]
        for command in (
            [*_check_command(demo_database), "-o", "/dev/stdout"],
            [*main, "report", "--db", str(demo_database), "-o", "/dev/stdout"],  # (a review: exit 3)
            [*main, "email", "--db", str(demo_database), "--to", "a@example.org", "--eml", "/dev/stdout"],
        ):
            reader = subprocess.Popen(command, stdout=subprocess.PIPE, env=env, **closed_stderr)
            assert reader.stdout.read1(10)
            reader.stdout.close()
            assert reader.wait(timeout=60) == 141, (unbuffered, command)


def test_a_report_to_standard_output_that_cannot_take_it_leaves_the_export_folder_alone(
    demo_database, tmp_path
):
    """Found by a docs probe: `report -o - --export-dir DIR` wrote the exports, then failed on a
    closed or full standard output (exit 3 with the folder written: "nothing is written when
    anything fails")."""
    report = [sys.executable, "-m", "auditor.cli.main", "report", "--db", str(demo_database), "-o", "-"]
    closed = subprocess.run(
        [*report, "--export-dir", str(tmp_path / "closed")],
        stderr=subprocess.PIPE,
        preexec_fn=lambda: os.close(1),
        timeout=120,
    )
    assert closed.returncode == 3
    assert closed.stderr.decode().splitlines() == [
        "error: standard output is closed: the results cannot be written",
        "hint: pass --output FILE",
    ]
    with open("/dev/full", "wb") as full:
        filled = subprocess.run(
            [*report, "--export-dir", str(tmp_path / "full")],
            stdout=full,
            stderr=subprocess.PIPE,
            timeout=120,
        )
    assert filled.returncode == 3
    assert (
        filled.stderr.decode().splitlines()[0]
        == "error: cannot write to standard output: No space left on device"
    )
    assert list(tmp_path.iterdir()) == []  # no export folder made
    # and when it can: the HTML, then the exports
    shown = subprocess.run([*report, "--export-dir", str(tmp_path / "ex")], capture_output=True, timeout=120)
    assert shown.returncode == 0 and shown.stdout.startswith(b"<!DOCTYPE html>")
    assert sorted(path.name for path in (tmp_path / "ex").iterdir()) == [
        "diff.json",
        "findings.csv",
        "findings.json",
    ]


def test_a_report_or_message_written_to_dev_stdout_is_not_followed_by_its_path(demo_database, tmp_path):
    """`report -o /dev/stdout` printed "/dev/stdout" after the HTML, into the same pipe or file
    (and counted 0 bytes when standard output was a file); so did `email --eml /dev/stdout`. The
    path is printed only for a file other than standard output. A file stdout was redirected to
    is written through stdout (`>> log` replaced the log with the report)."""
    base = [sys.executable, "-m", "auditor.cli.main"]
    piped = subprocess.run(
        [*base, "report", "--db", str(demo_database), "-o", "/dev/stdout"], capture_output=True, timeout=120
    )
    assert piped.returncode == 0, piped.stderr
    assert piped.stdout.startswith(b"<!DOCTYPE html>") and piped.stdout.endswith(b"</html>\n")
    assert piped.stderr.decode().endswith(f" catalog changes, {len(piped.stdout):,} bytes\n")
    redirected = tmp_path / "report.html"
    with redirected.open("wb") as out:  # `> report.html`: the file is replaced, not written through
        to_file = subprocess.run(
            [*base, "report", "--db", str(demo_database), "-o", "/dev/stdout"],
            stdout=out,
            stderr=subprocess.PIPE,
            timeout=120,
        )
    assert to_file.returncode == 0, to_file.stderr
    html = redirected.read_bytes()  # (generated a moment later: its timestamp may differ)
    assert html.startswith(b"<!DOCTYPE html>") and html.endswith(b"</html>\n")
    assert to_file.stderr.decode().endswith(f" catalog changes, {len(html):,} bytes\n")
    log = tmp_path / "log.html"
    log.write_bytes(b"kept\n")
    with log.open("ab") as out:  # `>> log.html`: appended to, what it held kept (a rename replaced it)
        appended = subprocess.run(
            [*base, "report", "--db", str(demo_database), "-o", "/dev/stdout"], stdout=out, timeout=120
        )
    assert appended.returncode == 0
    held = log.read_bytes()
    assert held.startswith(b"kept\n<!DOCTYPE html>") and held.endswith(b"</html>\n")
    message = subprocess.run(
        [*base, "email", "--db", str(demo_database), "--to", "a@example.com", "--eml", "/dev/stdout"],
        capture_output=True,
        timeout=120,
    )
    assert message.returncode == 0, message.stderr
    assert message.stdout.rstrip(b"\r\n").endswith(b"--")  # the MIME message's last boundary, nothing after
    assert b"/dev/stdout" not in message.stdout
    elsewhere = subprocess.run(
        [*base, "report", "--db", str(demo_database), "-o", str(tmp_path / "r.html")],
        capture_output=True,
        timeout=120,
    )
    assert elsewhere.stdout.decode() == f"{tmp_path / 'r.html'}\n"  # a file: its path, as before


@pytest.mark.parametrize(
    "words",
    [("check",), ("runs",), ("rules", "list"), ("--version",), ("clusters", "--help"), ("--help",)],
    ids=lambda words: " ".join(words),
)
def test_a_full_disk_behind_stdout_is_one_line_and_exit_3_for_every_output(demo_database, words):
    """The short outputs (a table, help, the version) stay in stdout's buffer: the error was said,
    then Python's flush at exit failed again ("Exception ignored … OSError") and the exit was 120;
    help and --version were internal errors."""
    command = [sys.executable, "-m", "auditor.cli.main", *words]
    if words[0] in ("check", "runs"):
        command += ["--db", str(demo_database)]
    with open("/dev/full", "wb") as full:
        process = subprocess.run(command, stdout=full, stderr=subprocess.PIPE, timeout=120)
    assert (process.returncode, process.stderr.decode().splitlines()) == (
        3,
        ["error: cannot write to standard output: No space left on device"],
    )


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="no /dev/full here")
def test_a_prune_whose_outcome_cannot_be_written_says_on_stderr_what_it_deleted(demo_database, tmp_path):
    # Found by a probe: `auditor db prune --keep 1 >> /dev/full` (a cron job's full log disk)
    # deleted run 1 for good, then said only "cannot write to standard output" (exit 3), and
    # with stdout closed its hint was "pass --output FILE", an option prune did not have.
    import shutil

    database = tmp_path / "a.db"
    shutil.copy(demo_database, database)
    prune = [sys.executable, "-m", "auditor.cli.main", "db", "prune", "--keep", "1", "--db", str(database)]
    with open("/dev/full", "w") as full:
        failed = subprocess.run(prune, stdout=full, stderr=subprocess.PIPE, text=True, timeout=120)
    assert failed.returncode == 3
    lines = failed.stderr.splitlines()
    assert lines[0] == "pruned: removed"
    assert "  runs deleted      1" in lines and "  runs kept         2" in lines
    assert lines[-1] == (
        "error: the prune was committed (above), but its outcome could not be written: cannot write to "
        "standard output: No space left on device"
    )
    listed = subprocess.run(
        [sys.executable, "-m", "auditor.cli.main", "runs", "--db", str(database), "--format", "json"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert [run["id"] for run in json.loads(listed.stdout)["runs"]] == [2]
    again = subprocess.run([*prune, "--format", "json", "-o", str(tmp_path / "p.json")], capture_output=True)
    assert again.returncode == 0, again.stderr
    assert json.loads((tmp_path / "p.json").read_text())["deleted_runs"] == []


def test_a_killed_writers_day_old_temporary_file_is_removed_by_the_next_write(tmp_path):
    # Found by a probe: `kill -9` of `check -o out/c.json` left a hidden `.c.json.<hex>.tmp` (4 MB)
    # that nothing ever removed
    old = tmp_path / ".c.json.0123456789ab.tmp"
    young = tmp_path / ".c.json.ba9876543210.tmp"  # a writer at work right now
    other = tmp_path / ".d.json.0123456789ab.tmp"  # another output's
    mine = tmp_path / ".c.json.notours.tmp"  # not a name this tool makes
    for leftover in (old, young, other, mine):
        leftover.write_text("partial")
    day_ago = time.time() - 25 * 3600
    for aged in (old, other, mine):
        os.utime(aged, (day_ago, day_ago))
    write_output('{"a": 1}', str(tmp_path / "c.json"))
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["c.json", young.name, other.name, mine.name])


@pytest.mark.parametrize("to_file", [False, True])
def test_a_stop_while_output_streams_closes_the_stream_at_once(monkeypatch, tmp_path, to_file):
    """A stream of findings read from the database holds a connection while suspended; stopped in
    the middle of being written, it is closed there (jsonstream.closed_after), not at interpreter
    exit, where closing it printed "Exception ignored … TypeError" (found by a probe)."""
    import contextlib

    import click

    from auditor import jsonstream, outfile

    closed = []

    def findings():
        try:
            yield from ({"n": 1}, {"n": 2}, {"n": 3})
        finally:
            closed.append(True)

    written = []

    def stopping(piece, *args, **kwargs):
        written.append(piece)
        if len(written) == 2:  # the stream suspended after its first finding
            raise KeyboardInterrupt

    if to_file:
        real = outfile.replacing

        class Handle:
            def __init__(self, handle):
                self.write = lambda piece: (stopping(piece), handle.write(piece))

        @contextlib.contextmanager
        def replacing(path, **kwargs):
            with real(path, **kwargs) as handle:
                yield Handle(handle)

        monkeypatch.setattr(outfile, "replacing", replacing)
    else:
        monkeypatch.setattr(click, "echo", stopping)
    pieces = jsonstream.batches(json.dumps, {"findings": [jsonstream.MARK]}, findings(), 1)
    with pytest.raises(KeyboardInterrupt) as stopped:
        write_output(pieces, str(tmp_path / "out.json") if to_file else None)
    assert stopped.value.__traceback__ is not None  # still held, as a remembered stop holds it
    assert closed == [True]
    assert not (tmp_path / "out.json").exists()


def test_standard_error_is_left_open_for_python_after_a_command(tmp_path):
    """A review found the first form of the stderr that outlives its reader closing standard error
    when it was freed: Python's own messages at exit ("Exception ignored in ...") were lost."""
    script = tmp_path / "after.py"
    script.write_text(
        "import sys\n"
        "class Boom:\n"
        "    def __del__(self):\n"
        "        raise RuntimeError('said at exit')\n"
        "keep = Boom()\n"
        "from auditor.cli.main import main\n"
        "try:\n"
        "    main(['--version'])\n"
        "except SystemExit:\n"
        "    pass\n"
        "sys.stderr = sys.__stderr__\n"
        "import gc; gc.collect()\n"
        "sys.__stderr__.write('still open\\n')\n",
        encoding="utf-8",
    )
    for unbuffered in ("", "1"):
        done = subprocess.run(
            [sys.executable, str(script)],
            capture_output=True,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": unbuffered},
            timeout=60,
        )
        assert done.returncode == 0
        assert "still open" in done.stderr and "RuntimeError: said at exit" in done.stderr, done.stderr
