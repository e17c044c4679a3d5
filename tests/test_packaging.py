"""Packaging: the wheel ships the data folders, and the installed console script works from any folder."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import auditor
from auditor import paths

ROOT = Path(__file__).resolve().parents[1]


def _repo_files(folder: str) -> set[str]:
    base = ROOT / folder
    return {
        p.relative_to(base).as_posix()
        for p in base.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts and not p.name.endswith(".pyc")
    }


@pytest.mark.slow
def test_wheel_ships_rules_reports_and_migrations(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(ROOT)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    (wheel,) = tmp_path.glob("cluster_auditor-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for folder in ("rules", "reports", "migrations"):
        shipped = {
            n.split(f"auditor/_bundled/{folder}/", 1)[1] for n in names if f"auditor/_bundled/{folder}/" in n
        }
        assert _repo_files(folder) <= shipped, f"{folder}: missing {sorted(_repo_files(folder) - shipped)}"
    assert "auditor/cli/main.py" in names
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    assert "auditor = auditor.cli:entry" in zipfile.ZipFile(wheel).read(entry_points).decode()


def test_bundled_folders_resolve():
    assert (paths.migrations_dir() / "env.py").is_file()
    assert paths.rules_dir().is_dir()
    assert paths.reports_dir().is_dir()


def _entry(kind: str) -> list[str]:
    if kind == "python -m":  # for a Python whose scripts folder is not on PATH
        return [sys.executable, "-m", "auditor"]
    script = Path(sys.executable).with_name("auditor")
    exe = str(script) if script.exists() else shutil.which("auditor")
    assert exe, "the auditor console script is not installed"
    return [exe]


@pytest.mark.parametrize("kind", ["console script", "python -m"])
def test_the_command_runs_from_any_folder(tmp_path, kind):
    env = {k: v for k, v in os.environ.items() if k not in ("BIGID_URL", "BIGID_TOKEN", "AUDITOR_DB")}

    def auditor(*args: str) -> subprocess.CompletedProcess[str]:
        command = [*_entry(kind), *args]
        return subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, env=env, timeout=120)

    missing = auditor("check", "--run", "7")
    assert missing.returncode == 3
    assert missing.stderr.startswith("error: there is no database at auditor.db yet")
    assert "Traceback" not in missing.stderr
    upgraded = auditor("db", "upgrade")
    assert upgraded.returncode == 0, upgraded.stderr
    assert (tmp_path / "auditor.db").is_file()
    listed = auditor("runs", "--format", "json")
    assert listed.returncode == 0 and '"runs": []' in listed.stdout


@pytest.mark.skipif(
    os.environ.get("CI") != "true", reason="CI installs the project non-editable; dev venvs are editable"
)
def test_ci_tests_the_installed_non_editable_build():
    installed = Path(auditor.__file__).resolve()
    assert "site-packages" in installed.parts, installed
    assert (installed.parent / "_bundled" / "migrations" / "env.py").is_file()


def test_the_floors_file_pins_every_runtime_dependency_at_its_declared_floor():
    """tests/floors.txt (README: the suite at the lowest versions accepted) follows pyproject.toml."""
    import re
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    declared = {}
    extras = project["optional-dependencies"]
    for spec in [*project["dependencies"], *extras["postgres"], *extras["fast"]]:
        # name[extra]>=floor, an optional upper bound, an optional environment marker
        pattern = r"([A-Za-z0-9_-]+)(?:\[[a-z]+\])?>=([0-9.]+)(?:,<[0-9.]+)?(?:; .+)?"
        name, floor = re.fullmatch(pattern, spec).groups()
        declared[name.lower()] = floor
    pinned = {}
    for line in (ROOT / "tests" / "floors.txt").read_text(encoding="utf-8").splitlines():
        if line and not line.startswith("#"):
            name, version = line.split("==")
            pinned[name.lower()] = version
    assert set(pinned) == set(declared)
    for name, floor in declared.items():
        parts = floor.split(".")
        assert pinned[name].split(".")[: len(parts)] == parts, (name, floor, pinned[name])
        assert pinned[name].split(".")[len(parts) :] in ([], ["0"]), (name, floor, pinned[name])
