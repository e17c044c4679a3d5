"""Docs that cannot go stale: every command has help and is in the README; CI runs the README's commands."""

from __future__ import annotations

import re
from pathlib import Path

import click
from click.testing import CliRunner

from auditor.cli.main import cli

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def _commands(group: click.Group, prefix: tuple[str, ...] = ()):
    for name, command in sorted(group.commands.items()):
        path = (*prefix, name)
        yield path, command
        if isinstance(command, click.Group):
            yield from _commands(command, path)


def test_every_command_has_help_and_is_in_the_readme():
    runner = CliRunner()
    commands = list(_commands(cli))
    assert len(commands) >= 5
    for path, command in commands:
        assert command.help or command.short_help, f"auditor {' '.join(path)} has no help text"
        result = runner.invoke(cli, [*path, "--help"])
        assert result.exit_code == 0, result.output
        assert "Usage:" in result.output
        assert f"auditor {' '.join(path)}" in README, f"`auditor {' '.join(path)}` is not in README.md"


def test_every_option_of_every_command_has_a_help_text():
    """``auditor demo --help`` listed --clusters and --columns with no word (a README walkthrough)."""
    silent = [
        f"auditor {' '.join(path)} {param.opts[0]}"
        for path, command in _commands(cli)
        for param in command.params
        if isinstance(param, click.Option) and not param.hidden and not (param.help or "").strip()
    ]
    assert silent == []


def test_every_option_of_every_command_is_documented():
    """Each long option appears in README.md or docs/ (the sandbox's knobs as their settings' names,
    ``fail_rate`` for ``--fail-rate``): an option added without a word about it is found here."""
    docs = README + "".join(path.read_text(encoding="utf-8") for path in sorted((ROOT / "docs").glob("*.md")))
    undocumented = [
        f"auditor {' '.join(path)} {opt}"
        for path, command in _commands(cli)
        for param in command.params
        if isinstance(param, click.Option)
        for opt in (*param.opts, *param.secondary_opts)
        if opt.startswith("--")
        and opt != "--help"
        and not re.search(rf"{re.escape(opt)}(?![\w-])", docs)
        and not (path[0] == "sandbox" and f"`{opt[2:].replace('-', '_')}`" in docs)
    ]
    assert undocumented == []


def _fenced_commands(text: str) -> list[str]:
    return [
        line.strip() for block in re.findall(r"```sh\n(.*?)```", text, re.S) for line in block.splitlines()
    ]


def test_ci_runs_the_readme_test_command_verbatim():
    test_command = next(c for c in _fenced_commands(README) if c.endswith("pytest"))
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert test_command in ci.splitlines()


def test_the_first_readme_command_installs_and_runs_the_demo():
    first = _fenced_commands(README)[0]
    assert first.startswith("python3 -m venv .venv && .venv/bin/pip install . && ")
    assert first.endswith("auditor demo")


def test_exit_codes_table_matches_the_error_hierarchy():
    from auditor import errors

    table = dict(re.findall(r"^\| (\d) \| (.+?) \|$", README, re.M))
    assert set(table) == {"0", "1", "2", "3"}
    assert errors.ConfigError("x").exit_code == errors.RuleError("x").exit_code == 2
    assert errors.ApiError("x").exit_code == errors.StoreError("x").exit_code == 3
    assert errors.RunNotUsableError("x").exit_code == 3


def test_readme_rule_and_waiver_examples_load(tmp_path):
    from auditor.engine import load_ruleset, load_waivers

    blocks = {block.split(":", 1)[0]: block for block in re.findall(r"```yaml\n(.*?)```", README, re.S)}
    rules = tmp_path / "rules.yaml"
    rules.write_text(blocks["rules"])
    assert [rule.id for rule in load_ruleset([rules]).rules] == ["high-sensitivity-without-confidential"]
    waivers = tmp_path / "waivers.yaml"
    waivers.write_text(blocks["waivers"])
    (waiver,) = load_waivers(waivers).entries
    assert (waiver.rule, waiver.column, waiver.owner) == (
        "high-sensitivity-without-confidential",
        "hr.payroll.*",
        "data-governance@example.com",
    )
    assert waiver.expires.isoformat() == "2027-03-31"


def test_readme_config_example_is_accepted(tmp_path):
    import tomllib

    from auditor.config import KNOWN_KEYS

    block = re.search(r"```toml\n(.*?)```", README, re.S).group(1)
    assert set(tomllib.loads(block)["auditor"]) <= KNOWN_KEYS


def test_architecture_public_surface_imports_as_listed():
    """Every name the architecture table lists for a stage imports from that stage's module."""
    import importlib

    table = (ROOT / "docs" / "ARCHITECTURE.md").read_text(encoding="utf-8")
    checked = []
    for line in table.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) != 3 or cells[0] not in {
            "wire models",
            "fetch",
            "snapshot",
            "store",
            "evaluate",
            "diff",
            "main job",
            "sandbox",
        }:
            continue
        path = re.search(r"`(auditor/[\w/]*?)(?:\.py)?/?`", cells[1]).group(1)
        module = importlib.import_module(path.replace("/", "."))
        for token in re.findall(r"`([^`]+)`", cells[2]):
            found = re.match(r"[A-Za-z_][\w.]*", token)
            if found is None or found.group(0) == "None":  # `.to_json()`, a value in a signature
                continue
            name = found.group(0).rstrip(".")
            target = module
            for part in name.split("."):
                if not hasattr(target, part) and hasattr(target, "__path__"):  # `retention.prune`
                    importlib.import_module(f"{target.__name__}.{part}")
                assert hasattr(target, part), f"{cells[0]}: {path} has no {name}"
                target = getattr(target, part)
            checked.append(name)
    assert len(checked) >= 30
    assert "previous_complete_run" in checked
