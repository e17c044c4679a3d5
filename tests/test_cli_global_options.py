"""The options of ``auditor`` itself work before or after the command."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st

from auditor.cli.main import cli, hoisted
from auditor.store.db import open_database

ENV_CLEAN = {"BIGID_URL": None, "BIGID_TOKEN": None, "AUDITOR_DB": None}


def invoke(args):
    return CliRunner().invoke(cli, args, env=ENV_CLEAN, catch_exceptions=False)


def test_global_options_after_the_command_act_as_before_it(tmp_path, monkeypatch):
    # `auditor check --debug` said "No such option '--debug'" (exit 2), `auditor runs --config F`
    # the same, though the README and docs name them without saying where they go.
    monkeypatch.chdir(tmp_path)
    Path("other.toml").write_text("[auditor]\nworkers = 1000\n")  # read only if --config is taken
    listed = invoke(["runs", "--config", "other.toml", "--quiet"])
    assert listed.exit_code == 2, listed.output
    assert listed.stderr.splitlines()[0] == (
        "error: other.toml:2: setting workers must be from 1 to 64, not 1000"
    )
    open_database(tmp_path / "from-config.db").dispose()
    checked = invoke(["check", "--db", "from-config.db", "--debug"])
    assert checked.exit_code == 3
    assert "Traceback (most recent call last)" in checked.stderr  # --debug took effect
    assert "error: there is no complete run in this database yet" in checked.stderr


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (
            ["--fail-on", "high", "check"],
            "'--fail-on' before the command: it is an option of 'auditor check'; "
            "write it after the command (auditor check --fail-on ...)",
        ),
        (
            ["--format=json", "runs"],
            "'--format' before the command: it is an option of 'auditor runs'; "
            "write it after the command (auditor runs --format ...)",
        ),
        (
            ["--keep", "2", "db", "prune"],
            "'--keep' before the command: it is an option of 'auditor db "
            "prune'; write it after the command (auditor db prune --keep ...)",
        ),
        (["--nope", "check"], "'--nope'."),
        # a review: an option's value that names a command is the value, not the command
        (
            ["--output", "report", "check"],
            "'--output' before the command: it is an option of 'auditor "
            "check'; write it after the command (auditor check --output ...)",
        ),
        (
            ["--db", "snapshot", "runs"],
            "'--db' before the command: it is an option of 'auditor runs'; "
            "write it after the command (auditor runs --db ...)",
        ),
    ],
)
def test_a_command_s_option_written_before_it_is_told_where_it_goes(args, said):
    """A new user's walkthrough: 'auditor --fail-on high check' said only "No such option
    '--fail-on'" (and '--keep' got "Did you mean '--help'?")."""
    result = invoke(args)
    assert result.exit_code == 2
    assert result.stderr.splitlines()[-1] == f"Error: No such option {said}"
    assert "Did you mean" not in result.stderr


def test_arguments_after_a_double_dash_stay_where_they_are():
    assert hoisted(["rules", "validate", "-q", "--", "--debug", "-v"]) == [
        "-q",
        "rules",
        "validate",
        "--",
        "--debug",
        "-v",
    ]
    assert hoisted(["runs", "--config=a.toml", "--config", "b.toml"]) == [
        "--config=a.toml",
        "--config",
        "b.toml",
        "runs",
    ]
    assert hoisted(["runs", "--config"]) == ["runs", "--config"]


def test_short_global_flags_written_together_are_taken_apart(tmp_path, monkeypatch):
    # `auditor check -qv` said "No such option: -q" (exit 2): only single words were moved.
    assert hoisted(["check", "-qv"]) == ["-q", "-v", "check"]
    assert hoisted(["check", "-vq", "--db", "x"]) == ["-v", "-q", "check", "--db", "x"]
    assert hoisted(["check", "-oq"]) == ["check", "-oq"]  # -o's value "q" stays the command's
    # a value that starts like them is left alone (a review: `--subject -quarterly` lost its q)
    assert hoisted(["email", "--subject", "-quarterly"]) == ["email", "--subject", "-quarterly"]
    assert hoisted(["columns", "k1", "--sort", "-volume"]) == ["columns", "k1", "--sort", "-volume"]
    assert hoisted(["check", "--", "-qv"]) == ["check", "--", "-qv"]
    monkeypatch.chdir(tmp_path)
    listed = invoke(["runs", "-qv", "--format", "json"])
    assert listed.exit_code == 0, listed.output
    assert json.loads(listed.stdout) == {"runs": []}


WORDS = ["check", "--db", "x.db", "-q", "--debug", "--config", "c.toml", "-v", "--"]


@given(st.lists(st.sampled_from(WORDS)))
def test_hoisting_moves_arguments_and_never_loses_one(args):
    assert sorted(hoisted(args)) == sorted(args)


@given(st.lists(st.sampled_from(["check", "--db", "x.db", "-q", "--debug", "-v", "--quiet"])))
def test_hoisting_keeps_the_order_of_what_it_does_not_move(args):
    out = hoisted(args)
    flags = {"-q", "--debug", "-v", "--quiet"}
    assert [a for a in out if a not in flags] == [a for a in args if a not in flags]
    assert out[: len([a for a in args if a in flags])] == [a for a in args if a in flags]


def test_ctrl_c_while_the_commands_are_imported_is_one_line_not_a_traceback():
    # Ctrl-C in the first fraction of a second (longer on a loaded machine) cut an import of the
    # console script's module and printed Python's traceback.
    import subprocess
    import sys

    script = (
        "import builtins\n"
        "real = builtins.__import__\n"
        "def cut(name, *args, **kwargs):\n"
        "    if name == 'auditor.cli.main':\n"
        "        raise KeyboardInterrupt\n"
        "    return real(name, *args, **kwargs)\n"
        "builtins.__import__ = cut\n"
        "from auditor.cli import entry\n"
        "entry()\n"
    )
    child = subprocess.run([sys.executable, "-c", script, "runs"], capture_output=True, text=True, timeout=60)
    assert (child.returncode, child.stdout, child.stderr) == (130, "", "auditor: interrupted\n")


@pytest.mark.parametrize(
    "args",
    [
        ("check", "-o", ""),
        ("diff", "--output", " "),
        ("runs", "-o", ""),
        ("check", "--db", ""),
        ("db", "prune", "--keep", "1", "--db", ""),
        ("check", "--waivers", ""),
        ("report", "--export-dir", ""),
        ("--config", "", "runs"),
    ],
)
def test_an_empty_value_is_a_usage_error_not_a_default(run_cli, tmp_path, args):
    # An unset CI variable (--output "$OUT"): -o '' was an internal error, --db '' created an
    # empty ./auditor.db, --export-dir '' wrote into the current folder.
    result = run_cli(*args)
    assert result.exit_code == 2, result.output
    assert "(a variable left unset?)" in result.stderr
    assert list(tmp_path.iterdir()) == []  # no database, no output


def test_new_only_without_a_gate_says_it_does_nothing(run_cli, tmp_path):
    from auditor.store.db import open_database
    from tests.store.conftest import make_catalog, write_catalog

    engine = open_database(tmp_path / "a.db")
    write_catalog(engine, make_catalog(1, 2))
    engine.dispose()
    result = run_cli("check", "--db", str(tmp_path / "a.db"), "--new-only", "--format", "json")
    assert result.exit_code == 0
    assert "note: --new-only has no effect without a --fail-on severity" in result.stderr
    gated = run_cli("check", "--db", str(tmp_path / "a.db"), "--new-only", "--fail-on", "critical")
    assert "has no effect" not in gated.stderr


def test_verbose_logs_carry_no_alembic_set_up_noise(tmp_path):
    import subprocess
    import sys

    child = subprocess.run(
        [
            sys.executable,
            "-c",
            "from auditor.cli import entry; entry()",
            "-v",
            "runs",
            "--db",
            str(tmp_path / "v.db"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert child.returncode == 0, child.stderr
    assert "alembic.runtime.plugins" not in child.stderr


def test_a_ca_bundle_that_does_not_load_is_a_usage_error_before_any_request(run_cli, tmp_path):
    bundle = tmp_path / "ca.pem"
    bundle.write_text("not a certificate\n")
    env = {"BIGID_URL": "https://127.0.0.1:9", "BIGID_TOKEN": "x"}
    result = run_cli("clusters", "--ca-bundle", str(bundle), env=env)
    assert result.exit_code == 2
    assert result.stderr.startswith(f"error: --ca-bundle / ca_bundle: cannot load {bundle} (")


@pytest.mark.parametrize(
    ("raised", "said"),
    [
        (MemoryError(), ["error: out of memory", "hint: give the command more memory"]),
        (
            OSError(24, "Too many open files"),
            ["error: too many open files", "hint: raise the limit (ulimit -n 4096), or use fewer"],
        ),
        (
            RuntimeError("can't start new thread"),
            [
                "error: cannot start a thread: the process or memory limit is reached",
                "hint: raise the limits",
            ],
        ),
    ],
)
def test_a_machine_limit_is_named_not_reported_as_a_bug(tmp_path, monkeypatch, raised, said):
    # Found by a probe: under `ulimit -v` or `ulimit -n`, "internal error: MemoryError: " (an empty
    # reason) and "report it", as if the tool had a bug.
    import auditor.store.runs

    def exhausted(*args, **kwargs):
        raise raised

    monkeypatch.chdir(tmp_path)
    open_database(tmp_path / "h.db").dispose()
    monkeypatch.setattr(auditor.store.runs, "list_runs", exhausted)
    result = invoke(["runs", "--db", "h.db"])
    assert result.exit_code == 3
    lines = result.stderr.splitlines()
    assert len(lines) == 2 and "internal error" not in result.stderr
    assert [line[: len(start)] for line, start in zip(lines, said, strict=True)] == said


def test_a_process_limit_met_while_starting_workers_is_named():
    # a review: fork failing with EAGAIN says "Resource temporarily unavailable", without "fork"
    from auditor.cli.main import resource_error

    raising = "raise BlockingIOError(11, 'Resource temporarily unavailable')"
    where = "/x/multiprocessing/popen_fork.py"  # raised where multiprocessing starts a process

    with pytest.raises(BlockingIOError) as caught:
        exec(compile(raising, where, "exec"))
    named = resource_error(caught.value)
    assert named is not None
    assert named.message.startswith("cannot start a process: the process limit is reached")
    elsewhere = BlockingIOError(11, "Resource temporarily unavailable")
    assert resource_error(elsewhere) is None  # not while starting a process: not named so


def test_a_background_thread_that_fails_says_one_line_not_a_traceback(capsys):
    import threading

    from auditor.cli.main import _thread_failed

    previous = threading.excepthook
    threading.excepthook = _thread_failed
    try:
        thread = threading.Thread(target=lambda: 1 / 0, name="feeder")
        thread.start()
        thread.join()
    finally:
        threading.excepthook = previous
    assert capsys.readouterr().err == "warning: feeder failed: ZeroDivisionError: division by zero\n"


def test_a_command_closes_the_database_it_opened(tmp_path: Path, monkeypatch):
    # Python 3.13 warns at exit of every SQLite connection left open (ResourceWarning): each
    # command's engines are disposed when the command ends, successful or not.
    from sqlalchemy import event

    import auditor.store.db as db

    closed: list[str] = []
    real = db.open_database

    def tracked(target, *args, **kwargs):
        engine = real(target, *args, **kwargs)
        event.listen(engine, "close", lambda *_: closed.append(str(target)))
        return engine

    monkeypatch.setattr(db, "open_database", tracked)
    real(tmp_path / "a.db").dispose()
    assert invoke(["runs", "--db", str(tmp_path / "a.db")]).exit_code == 0
    assert closed and set(closed) == {str(tmp_path / "a.db")}
    closed.clear()
    assert invoke(["check", "--db", str(tmp_path / "a.db")]).exit_code == 3  # no run to check
    assert closed
