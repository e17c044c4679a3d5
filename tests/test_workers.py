"""Worker processes import this package, even when started from a folder holding another ``auditor``."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

from auditor.snapshot import _init_decoder
from auditor.workers import shadowed_by_current_directory, start_pool, starting_workers


def fake_package(folder: Path) -> None:
    (folder / "auditor").mkdir()
    (folder / "auditor" / "__init__.py").write_text('raise SystemExit("the wrong auditor package")\n')


def test_a_foreign_auditor_folder_in_the_current_directory_is_detected(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert not shadowed_by_current_directory()
    fake_package(tmp_path)
    assert shadowed_by_current_directory()


def test_the_fork_server_ignores_the_folder_and_the_callers_environment_is_left_as_it_was(tmp_path):
    """A program using the library from a folder holding another ``auditor``: the workers import
    this package, and ``PYTHONSAFEPATH`` is not left set for the program's own subprocesses."""
    fake_package(tmp_path)
    script = tmp_path / "elsewhere" / "job.py"
    script.parent.mkdir()
    script.write_text(
        textwrap.dedent(
            """
            import os
            from auditor.workers import start_pool

            def where():
                import auditor
                return auditor.__file__

            def nothing():
                pass

            if __name__ == "__main__":
                print(os.environ.get("PYTHONSAFEPATH"))
                futures = []
                pool = start_pool("auditor.workers", 1, nothing, lambda p: futures.append(p.submit(where)))
                print(futures[0].result(timeout=60))
                pool.shutdown()
                print(os.environ.get("PYTHONSAFEPATH"))
            """
        )
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    done = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    before, imported, after = done.stdout.splitlines()
    import auditor

    assert (before, after) == ("None", "None")
    assert Path(imported).resolve() == Path(auditor.__file__).resolve()


def test_this_package_s_own_folder_is_not_a_shadow(monkeypatch):
    import auditor

    monkeypatch.chdir(Path(auditor.__file__).resolve().parent.parent)
    assert not shadowed_by_current_directory()


def test_a_snapshot_with_decoding_processes_run_from_such_a_folder(sandbox, tmp_path):
    script = Path(sys.executable).with_name("auditor")
    if not script.exists():
        pytest.fail(f"the console script {script} is missing: install the project (pip install .)")
    fake_package(tmp_path)
    server = sandbox(clusters=5, columns=300, seed=3)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BIGID_", "AUDITOR_", "PYTHON"))}
    env.update({"BIGID_URL": server.url, "BIGID_TOKEN": "SAMPLE"})
    done = subprocess.run(
        [str(script), "snapshot", "--db", str(tmp_path / "a.db"), "--processes", "2"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "the wrong auditor package" not in done.stderr
    assert "300 columns" in done.stderr


def test_ctrl_c_while_a_pool_starts_is_raised_once_the_block_is_done():
    # An interrupt inside ProcessPoolExecutor.submit left a half-started worker that nobody joined;
    # it then died on semaphores already gone, printing a traceback after "auditor: interrupted".
    reached = []
    with pytest.raises(KeyboardInterrupt), starting_workers():
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.05)  # Python runs signal handlers between bytecodes: it has run by now
        reached.append(True)
    assert reached == [True]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_sigterm_is_held_too_and_handled_once_the_pool_exists():
    # The same race under SIGTERM (docker stop, a cancelled CI job): a snapshot stopped as its
    # decoders started printed a worker's FileNotFoundError traceback after "terminated (SIGTERM)".
    from auditor.cli.main import Terminated, _terminate

    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        reached = []
        with pytest.raises(Terminated), starting_workers():
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.05)
            os.kill(os.getpid(), signal.SIGINT)  # a second signal while held: the first one counts
            time.sleep(0.05)
            reached.append(True)
        assert reached == [True]
        assert signal.getsignal(signal.SIGTERM) is _terminate
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_a_pool_that_fails_to_start_is_shut_down_with_its_processes_joined():
    """start_pool (rule workers and page decoders): an interrupt while the first tasks are submitted
    must not leave live worker processes behind."""
    started: list[int] = []

    def submit_then_interrupt(pool: Any) -> None:
        started.append(pool.submit(os.getpid).result(timeout=60))  # the worker exists
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.05)

    with pytest.raises(KeyboardInterrupt):
        # the decoders' own initializer: a worker cannot import a function of the tests
        start_pool("auditor.snapshot", 1, _init_decoder, submit_then_interrupt)
    (pid,) = started
    with pytest.raises(ProcessLookupError):  # joined: not even a zombie is left
        os.kill(pid, 0)


def test_the_fork_server_ignores_ctrl_c_while_it_imports_the_workers_module(tmp_path):
    # Ctrl-C reaches the whole process group: the fork server, still importing auditor.snapshot,
    # printed a KeyboardInterrupt traceback of its own.
    script = """
import os, signal, time
from multiprocessing import forkserver
from auditor.workers import worker_context
worker_context("auditor.snapshot")
forkserver.ensure_running()
pid = forkserver._forkserver._forkserver_pid
time.sleep(0.2)  # Python is up and importing
os.kill(pid, signal.SIGINT)
time.sleep(1)
print("alive" if os.waitpid(pid, os.WNOHANG) == (0, 0) else "dead")
"""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[1])
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert (done.returncode, done.stdout, done.stderr) == (0, "alive\n", "")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with contextlib.suppress(ChildProcessError):  # a zombie of ours is dead too
        if os.waitpid(pid, os.WNOHANG) != (0, 0):
            return False
    return True


def test_workers_end_soon_after_their_owner_is_killed(tmp_path):
    # After `kill -9` of the command, its workers waited on their queue forever, holding its stdout,
    # and its spool folder stayed.
    script = """
import os, sys, time
from auditor.snapshot import _init_decoder
from auditor.workers import remove_if_orphaned, start_pool
os.mkdir("spool")
pool = start_pool("auditor.snapshot", 2, _init_decoder, lambda p: [p.submit(time.sleep, 1) for _ in range(2)])
pool.submit(remove_if_orphaned, os.path.abspath("spool")).result()
print(" ".join(str(pid) for pid in pool._processes), flush=True)
time.sleep(60)
"""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[1])
    owner = subprocess.Popen(
        [sys.executable, "-c", script], env=env, cwd=tmp_path, stdout=subprocess.PIPE, text=True
    )
    try:
        workers = [int(pid) for pid in owner.stdout.readline().split()]
        assert len(workers) == 2 and all(_alive(pid) for pid in workers)
        owner.kill()  # and not reaped yet: a zombie, which still answers kill(pid, 0)
        deadline = time.monotonic() + 10
        while any(_alive(pid) for pid in workers) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not any(_alive(pid) for pid in workers)
        assert not (tmp_path / "spool").exists()  # a /dev/shm spool would have held memory
    finally:
        owner.kill()
        owner.wait(timeout=10)
        owner.stdout.close()


def test_a_sigterm_to_the_process_group_is_left_to_the_owner_of_the_workers(tmp_path):
    # Found by a probe: `systemctl stop` (and GNU timeout, CI runners) signal the whole process
    # group; the page decoders died with the command, which then waited 10 s for pages nobody
    # would decode. Workers now leave a SIGTERM from anyone else to the command, and still end on
    # their owner's (a broken pool's terminate).
    script = """
import os, signal, subprocess, time
from auditor.snapshot import _init_decoder
from auditor.workers import _running, start_pool
if __name__ == "__main__":
    first = lambda p: [p.submit(time.sleep, 0.2) for _ in range(2)]
    pool = start_pool("auditor.snapshot", 2, _init_decoder, first)
    time.sleep(0.5)  # the workers are past their initializer
    workers = sorted(pool._processes)
    for pid in workers:  # sent by another process, as by `kill -TERM -- -PGID`
        subprocess.run(["kill", "-TERM", str(pid)], check=True)
    time.sleep(1)
    print(sum(_running(pid) for pid in workers), flush=True)
    os.kill(workers[0], signal.SIGTERM)  # the owner's own terminate still ends a worker
    deadline = time.monotonic() + 5
    while _running(workers[0]) and time.monotonic() < deadline:
        time.sleep(0.05)
    print(_running(workers[0]), flush=True)
    # the pool is broken now (a worker gone): its own shutdown may hang on CPython 3.11's
    # terminate_broken; the other worker ends within a second of its owner (see _watched)
    os._exit(0)
"""
    (tmp_path / "group.py").write_text(script)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[1])
    done = subprocess.run(
        [sys.executable, "group.py"], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert (done.returncode, done.stdout) == (0, "2\nFalse\n"), done.stderr


def test_a_held_stop_wins_over_the_failure_it_caused():
    # The same group SIGTERM ends the fork server a pool is starting from: the pool's EOFError,
    # raised while the stop was held, was reported as an internal error (exit 3), not 143
    import signal as signals

    from auditor.errors import Terminated
    from auditor.stopping import signals_held

    def terminate(_signum, _frame):
        raise Terminated()

    previous = signals.signal(signals.SIGTERM, terminate)
    try:
        with pytest.raises(Terminated) as caught, signals_held():
            os.kill(os.getpid(), signals.SIGTERM)
            time.sleep(0.05)
            raise EOFError("the fork server went away")
        assert isinstance(caught.value.__context__, EOFError)
    finally:
        signals.signal(signals.SIGTERM, previous)


def test_a_program_read_from_standard_input_decodes_in_its_threads_and_says_so(sandbox, tmp_path):
    # Found by a library probe: 'python - < job.py' names its main program '<stdin>', which the
    # workers import again by path: every one died as it started, and the snapshot failed with "a
    # page-decoding process died unexpectedly".
    server = sandbox(clusters=4, columns=200, seed=3)
    job = textwrap.dedent(
        f"""
        import logging
        from auditor.bigid.client import BigIDClient, ClientOptions
        from auditor.snapshot import take_snapshot
        from auditor.store.db import open_database

        logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
        engine = open_database({str(tmp_path / "s.db")!r})
        with BigIDClient(ClientOptions(url={server.url!r}, token={server.key!r})) as client:
            run = take_snapshot(engine, client, processes=2)
        print(run.status, run.columns_stored, run.details["processes"])
        """
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BIGID_", "AUDITOR_"))}
    done = subprocess.run(
        [sys.executable, "-"], input=job, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["complete", "200", "0"]
    assert done.stderr.splitlines() == [
        "WARNING pages are decoded in this process's threads, not in 2 processes: the main program "
        "(<stdin>) is not a file that worker processes could import"
    ]


def test_a_script_run_from_a_file_or_as_a_module_can_start_workers(monkeypatch, tmp_path):
    import types

    from auditor.workers import main_unimportable

    script = tmp_path / "job.py"
    script.write_text("pass\n")
    for main, expected in (
        (types.SimpleNamespace(__spec__=None, __file__=str(script)), None),
        (types.SimpleNamespace(__spec__=types.SimpleNamespace(name="job"), __file__="<stdin>"), None),
        (types.SimpleNamespace(__spec__=None), None),  # python -c, the interactive interpreter
        (
            types.SimpleNamespace(__spec__=None, __file__=str(tmp_path / "gone.py")),
            f"the main program ({tmp_path / 'gone.py'}) is not a file that worker processes could import",
        ),
    ):
        monkeypatch.setitem(sys.modules, "__main__", main)
        assert main_unimportable() == expected
