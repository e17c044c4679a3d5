"""Standard output and error under a locale whose encoding is not UTF-8."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from auditor.paths import rules_dir

ENTRY = "from auditor.cli.main import main; main()"


def auditor(*args: str, cwd: Path, encoding: str = "latin-1") -> subprocess.CompletedProcess[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BIGID_", "AUDITOR_"))}
    env.pop("LC_ALL", None)
    env.update(PYTHONIOENCODING=encoding, LANG="C")
    return subprocess.run(
        [sys.executable, "-c", ENTRY, *args], cwd=cwd, env=env, capture_output=True, timeout=300
    )


def test_a_latin1_locale_gets_utf8_files_and_pipes_and_never_fails_on_a_character(tmp_path: Path) -> None:
    # Found by a probe: under de_DE.ISO-8859-1, `auditor run` stored its snapshot and then failed
    # on the table's '…' (exit 3, "internal error: UnicodeEncodeError"), with no verdict printed;
    # `rules list` failed on the '—' of a title, `check --format json` on a cluster name.
    (tmp_path / "auditor.toml").write_text("[auditor.sandbox]\nclusters = 12\ncolumns = 600\n")
    ran = auditor("run", "--db", "a.db", cwd=tmp_path)
    assert ran.returncode == 0, ran.stderr
    assert "run 1: " in ran.stdout.decode("utf-8")  # the summary, after the table of findings
    rule = (rules_dir() / "clusters.yaml").read_text(encoding="utf-8")
    (tmp_path / "r.yaml").write_text(rule.replace("title: ", "title: Données — 日本 ", 1), encoding="utf-8")
    listed = auditor("rules", "list", "r.yaml", cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    assert "Données — 日本".encode() in listed.stdout  # UTF-8 in a pipe, as every file the tool writes
    checked = auditor("check", "--db", "a.db", "--format", "json", cwd=tmp_path)
    assert checked.returncode == 0, checked.stderr
    assert len(json.loads(checked.stdout.decode("utf-8"))["findings"]) > 0
    # standard error keeps the locale's encoding: a character it lacks is shown as an escape
    refused = auditor("check", "--db", "a.db", "--rules", "règles 日本", cwd=tmp_path)
    assert refused.returncode == 2
    assert "\n  r\xe8gles \\u65e5\\u672c:1:1: no such file or folder\n" in refused.stderr.decode("latin-1")


def test_a_database_path_the_file_name_encoding_cannot_hold_is_a_usage_error(tmp_path: Path) -> None:
    # Found by a probe: under LC_ALL=C with UTF-8 mode off (file names in ASCII), a database path
    # with an 'é' failed every command with "internal error: UnicodeEncodeError ... surrogates".
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BIGID_", "AUDITOR_"))}
    env.update(LC_ALL="C", PYTHONUTF8="0")
    listed = subprocess.run(
        [sys.executable, "-c", ENTRY, "runs", "--db", "dossier é/h.db"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        timeout=120,
    )
    assert listed.returncode == 2
    assert listed.stderr.decode("ascii").splitlines() == [
        "error: --db: 'dossier \\udcc3\\udca9/h.db' holds bytes that are not valid in the file name "
        "encoding (ascii)",
        "hint: run under a UTF-8 locale (LC_ALL=C.UTF-8, or PYTHONUTF8=1), or name a file in ASCII",
    ]


def _bare(*args: str, cwd: Path, preexec) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BIGID_", "AUDITOR_"))}
    return subprocess.run(
        # -P: no working folder on sys.path, as the installed `auditor` script (CPython 3.13.0 fails
        # to import socket from a removed one: "SystemError: error return without exception set")
        [sys.executable, "-P", "-c", ENTRY, *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        preexec_fn=preexec,
        stdin=None,
    )


def test_stdin_closed_where_the_key_would_be_asked_for_is_the_usual_error(tmp_path: Path) -> None:
    # Found by a probe: `auditor snapshot --url … <&-` was an internal error (AttributeError:
    # 'NoneType' object has no attribute 'isatty'), and `auditor run` created its database first.
    for command in ("snapshot", "run"):
        ran = _bare(
            command, "--url", "http://127.0.0.1:9", "--db", "h.db", cwd=tmp_path, preexec=lambda: os.close(0)
        )
        assert (ran.returncode, ran.stderr.splitlines()[0]) == (
            2,
            "error: no BigID API key: BIGID_TOKEN is not set",
        )
    assert not (tmp_path / "h.db").exists()


def test_a_working_folder_removed_under_the_shell_is_one_clear_line(tmp_path: Path) -> None:
    # Found by a probe: every command was "internal error: FileNotFoundError" (Path.cwd()).
    gone = tmp_path / "gone"
    gone.mkdir()

    def remove_it() -> None:
        os.chdir(gone)
        os.rmdir(gone)

    listed = _bare("runs", "--db", str(tmp_path / "h.db"), cwd=tmp_path, preexec=remove_it)
    assert (listed.returncode, listed.stderr.splitlines()) == (
        2,
        [
            "error: the current folder no longer exists (it was removed or renamed after the shell went "
            "into it)",
            "hint: cd to an existing folder and run the command again",
        ],
    )
