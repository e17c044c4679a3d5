"""The hard stop: Ctrl-C or SIGTERM while the main thread is stuck inside SQLite's busy wait."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time

import pytest

# A process that arms the hard stop, registers a temporary file, and then waits for a write lock
# the test holds: the wait happens inside SQLite's C busy handler, where no Python signal handler runs.
CHILD = textwrap.dedent(
    """
    import signal, sqlite3, sys
    from auditor import stopping
    from auditor.cli.main import _terminate
    signal.signal(signal.SIGTERM, _terminate)  # as the command's entry point does
    from multiprocessing import util
    print(util.get_temp_dir(), flush=True)  # the pymp-… folder worker pools make
    leftover = open(sys.argv[2], "w")
    with stopping.armed(grace=float(sys.argv[3])) as armed, stopping.removed_on_hard_stop(sys.argv[2]):
        assert armed
        waiting = sqlite3.connect(sys.argv[1], timeout=60, isolation_level=None)
        print("waiting", flush=True)
        waiting.execute("BEGIN IMMEDIATE")
    print("got the lock", flush=True)
    """
)


@pytest.fixture
def locked(tmp_path):
    """A SQLite file whose write lock this test holds."""
    path = tmp_path / "locked.db"
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("PRAGMA journal_mode=WAL")
    holder.execute("CREATE TABLE t (x)")
    holder.execute("BEGIN IMMEDIATE")
    yield path
    holder.rollback()
    holder.close()


def _start(locked, tmp_path, grace: float) -> tuple[subprocess.Popen[str], str]:
    leftover = tmp_path / ".report.html.0123.tmp"
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(locked), str(leftover), str(grace)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "TMPDIR": str(tmp_path)},
    )
    assert os.path.basename(child.stdout.readline()).startswith("pymp-")
    assert child.stdout.readline() == "waiting\n"
    time.sleep(0.5)  # inside the busy wait by now
    return child, str(leftover)


def test_a_stop_that_cannot_unwind_ends_after_the_grace(locked, tmp_path):
    child, leftover = _start(locked, tmp_path, grace=1.0)
    started = time.monotonic()
    child.send_signal(signal.SIGTERM)
    out, err = child.communicate(timeout=30)
    assert child.returncode == 143
    assert 0.9 < time.monotonic() - started < 10  # not the 60 s the lock wait had left
    assert out == ""
    assert err.strip().splitlines() == [
        "auditor: still stopping after 1 s: exiting without finishing the cleanup (a database write may be "
        "waiting for another process's lock); a run being written, if any, is left running and shows as "
        "abandoned (auditor db prune marks it so)"
    ]
    assert not os.path.exists(leftover)  # the registered temporary file went with it


def test_a_second_ctrl_c_stops_at_once(locked, tmp_path):
    child, leftover = _start(locked, tmp_path, grace=60.0)
    child.send_signal(signal.SIGINT)
    time.sleep(1.0)
    assert child.poll() is None  # still waiting inside SQLite: the first Ctrl-C alone did nothing yet
    started = time.monotonic()
    child.send_signal(signal.SIGINT)
    _out, err = child.communicate(timeout=30)
    assert child.returncode == 130
    assert time.monotonic() - started < 5
    assert err.strip().startswith("auditor: stopped again: exiting without finishing the cleanup")
    assert not os.path.exists(leftover)
    # multiprocessing's own pymp-… folder too: its cleanup runs at a normal exit only
    assert not [p for p in os.listdir(tmp_path) if p.startswith("pymp-")]


def test_a_sigterm_sent_twice_at_once_is_one_stop(locked, tmp_path):
    # Found by a probe: GNU timeout signals the command, then its whole process group: the command
    # got two SIGTERMs a moment apart, took the second for "stopped again" and ended at once,
    # leaving its run running. A SIGTERM within a second of the first is the same stop.
    child, _leftover = _start(locked, tmp_path, grace=2.0)
    child.send_signal(signal.SIGTERM)
    time.sleep(0.1)
    child.send_signal(signal.SIGTERM)
    _out, err = child.communicate(timeout=30)
    assert child.returncode == 143
    assert err.strip().startswith("auditor: still stopping after 2 s")  # the grace, not "stopped again"
    # a SIGTERM once the second is past is a second stop, as a second Ctrl-C is
    child, _leftover = _start(locked, tmp_path, grace=60.0)
    child.send_signal(signal.SIGTERM)
    time.sleep(1.5)
    child.send_signal(signal.SIGTERM)
    _out, err = child.communicate(timeout=30)
    assert err.strip().startswith("auditor: stopped again")


def test_a_stop_that_unwinds_in_time_is_left_alone(tmp_path):
    # The usual case: the signal raises in the main thread, which cleans up and exits with its own
    # message and code; the watcher never speaks.
    script = textwrap.dedent(
        """
        import time
        from auditor import stopping
        with stopping.armed(grace=0.5) as armed:
            assert armed
            try:
                print("ready", flush=True)  # inside the try: the signal may come at once
                time.sleep(30)
            except KeyboardInterrupt:
                print("unwound", flush=True)
                raise SystemExit(7)
        """
    )
    child = subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    assert child.stdout.readline() == "ready\n"
    child.send_signal(signal.SIGINT)
    out, err = child.communicate(timeout=30)
    assert (child.returncode, out, err) == (7, "unwound\n", "")


def test_the_hard_stop_is_armed_only_while_the_command_runs(tmp_path):
    """Armed for the process's life, it ended a program that ran a command in-process and then
    handled a Ctrl-C of its own 10 s later (found in review). Off the main thread it is not armed."""
    import threading

    from auditor import stopping

    answers: list[bool] = []

    def off_main() -> None:
        with stopping.armed() as armed:
            answers.append(armed)

    worker = threading.Thread(target=off_main)
    worker.start()
    worker.join()
    assert answers == [False]
    script = textwrap.dedent(
        """
        import os, signal, time
        from auditor import stopping
        from auditor.cli.main import main
        stopping.GRACE_SECONDS = 0.5  # were it still armed, the Ctrl-C below would end the process
        for argv in (["--version"], ["runs", "--format", "json"]):  # (a command that ends and closes)
            try:
                main(argv)
            except SystemExit:
                pass
        assert signal.set_wakeup_fd(-1) == -1  # the descriptor was given back
        try:
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(1)
        except KeyboardInterrupt:
            print("handled", flush=True)
        time.sleep(1.5)
        print("finished", flush=True)
        """
    )
    child = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "AUDITOR_TEST_GRACE": "1", "AUDITOR_DB": str(tmp_path / "a.db")},
    )
    assert (child.returncode, child.stdout.splitlines()[-2:]) == (0, ["handled", "finished"]), child.stderr


@pytest.mark.parametrize(("name", "raised"), [("SIGINT", "KeyboardInterrupt"), ("SIGTERM", "Terminated")])
@pytest.mark.parametrize(
    "function",
    ["auditor_lower('Ärger' || x)", "auditor_lower('plain' || x)", "auditor_regexp('z', 'a' || x, 1)"],
)
def test_a_real_signal_during_a_query_calling_our_functions_is_the_stop(tmp_path, name, raised, function):
    """Python raises a pending signal's exception at the next function call, mostly the first line
    of a function SQLite calls, where nothing can catch it: SQLite said "user-defined function
    raised exception" and check exited 3 with a hint about locked databases instead of 130/143."""
    script = textwrap.dedent(
        f"""
        import os, signal, threading
        from sqlalchemy import text
        from auditor.cli.main import install_stop_handlers
        from auditor.errors import Terminated
        from auditor.engine.evaluate import prepare_connection
        from auditor.store.db import open_database, store_errors
        install_stop_handlers()
        engine = open_database({str(tmp_path / "q.db")!r})
        threading.Timer(0.5, os.kill, (os.getpid(), signal.{name})).start()
        query = "WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n LIMIT 200000000) "
        try:
            with store_errors("could not evaluate run 1"), engine.connect() as connection:
                prepare_connection(connection)  # our SQLite functions, as evaluations do
                connection.execute(text(query + "SELECT count(*) FROM n WHERE {function}")).scalar()
        except KeyboardInterrupt as exc:
            print(type(exc).__name__)
        """
    )
    child = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert (child.stdout, child.stderr) == (f"{raised}\n", ""), child


def test_a_signal_once_the_console_command_has_ended_does_not_replace_its_exit_code():
    """A SIGTERM in the moments between a snapshot's last output and the process's end made a
    complete run exit 143 (a scheduler read it as interrupted)."""
    script = textwrap.dedent(
        """
        import atexit, os, signal, sys, time
        atexit.register(lambda: (os.kill(os.getpid(), signal.SIGTERM), time.sleep(0.3)))
        sys.argv = ["auditor", "--version"]
        from auditor.cli import entry
        entry()
        """
    )
    from auditor import __version__

    child = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert (child.returncode, child.stdout, child.stderr) == (
        0,
        f"cluster-auditor, version {__version__}\n",
        "",
    )


def test_a_shutdown_that_hangs_after_the_command_ends_with_its_code_not_only_on_sigkill():
    """Signals are ignored once the command has returned; a shutdown waiting for a thread that
    never ends must still end, with the command's own code."""
    script = textwrap.dedent(
        """
        import sys, threading, time
        import auditor.cli
        import auditor.cli.main

        def stuck_command(**_options):
            threading.Thread(target=time.sleep, args=(60,)).start()  # not a daemon: joined at exit
            sys.exit(3)

        auditor.cli.EXIT_GRACE = 0.5
        auditor.cli.main.main = stuck_command
        auditor.cli.entry()
        """
    )
    started = time.monotonic()
    child = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert child.returncode == 3, child.stderr
    assert time.monotonic() - started < 20


@pytest.mark.parametrize("name", ["SIGTERM", "SIGINT"])
def test_a_stop_after_the_command_has_ended_keeps_its_exit_code(tmp_path, name):
    """Found by a probe: a SIGTERM or Ctrl-C arriving while `auditor run` closed its database, after
    every output was written, printed the connection pool's traceback and "Aborted!", and exited 1
    (a failed gate, to a scheduler)."""
    script = textwrap.dedent(
        f"""
        import os, signal, sys, time
        from auditor.cli.common import Settings

        real_close = Settings.close

        def close(self):
            os.kill(os.getpid(), signal.{name})
            time.sleep(0.3)  # the handler runs here, as it would inside the pool's close
            real_close(self)
            print("closed", file=sys.stderr, flush=True)

        Settings.close = close
        import auditor.cli
        sys.argv = ["auditor", "runs", "--format", "json"]
        auditor.cli.entry()
        """
    )
    child = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "AUDITOR_DB": str(tmp_path / "a.db")},
    )
    assert (child.returncode, child.stderr) == (0, "closed\n")
    assert '"runs": []' in child.stdout


def test_a_command_run_by_a_click_runner_leaves_the_stop_handlers_working(tmp_path, monkeypatch):
    """Found by the suite: once any in-process command (CliRunner) had ended, SIGTERM's handler let
    every later stop pass, as if the process were a console script past its command."""
    from click.testing import CliRunner

    from auditor import stopping
    from auditor.cli import main as main_module

    monkeypatch.setattr(stopping, "_last_term", [0.0])  # (the handlers' own state, not the suite's)
    monkeypatch.setattr(stopping, "_stops_raised", [])

    result = CliRunner().invoke(main_module.cli, ["runs", "--db", str(tmp_path / "a.db")])
    assert result.exit_code == 0, result.output
    with pytest.raises(KeyboardInterrupt):
        main_module._terminate(signal.SIGTERM, None)
    with pytest.raises(KeyboardInterrupt):
        main_module._interrupt(signal.SIGINT, None)
