"""Docs that cannot go stale: every YAML example in docs/rules.md and in the condition docstrings
goes through the real loader, and the documented pack table lists every built-in rule."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import pytest

from auditor.engine import conditions, load_ruleset, load_waivers
from auditor.engine.fixtures import run_fixtures
from auditor.formats import Format

DOC = Path(__file__).resolve().parents[2] / "docs" / "rules.md"


def _yaml_blocks(text: str) -> list[str]:
    return re.findall(r"```yaml\n(.*?)```", text, flags=re.S)


def _as_rule_file(condition: str, scope: str) -> str:
    body = textwrap.indent(condition.strip(), " " * 6)
    return (
        "rules:\n  - id: doc-example\n    title: t\n    description: d\n    severity: low\n"
        f"    scope: {scope}\n    condition:\n{body}\n    message: m\n    remediation: r\n"
    )


def _load_example(block: str, tmp_path: Path, index: int) -> None:
    path = tmp_path / f"example-{index}.yaml"
    stripped = block.lstrip()
    if stripped.startswith("rules:"):
        path.write_text(block)
        assert load_ruleset([path]).rules
    elif stripped.startswith("waivers:"):
        path.write_text(block)
        assert len(load_waivers(path)) >= 1
    elif stripped.startswith("cases:"):
        fixture = tmp_path / f"example-{index}.test.yaml"
        fixture.write_text(block)
        report = run_fixtures([fixture])
        assert report.passed, "\n".join(report.lines())
    else:
        scope = "cluster" if stripped.startswith("# cluster rule") else "column"
        path.write_text(_as_rule_file(block, scope))
        assert load_ruleset([path]).rules[0].explain()


def test_every_yaml_example_in_the_rules_doc_loads(tmp_path):
    blocks = _yaml_blocks(DOC.read_text(encoding="utf-8"))
    assert len(blocks) == 29
    for index, block in enumerate(blocks):
        _load_example(block, tmp_path, index)


def test_every_operator_has_an_example_in_the_doc():
    text = DOC.read_text(encoding="utf-8")
    examples = "\n".join(_yaml_blocks(text))
    for operator in conditions.OPERATORS:
        assert re.search(rf"\b{operator}:", examples), operator
        assert f"`{operator}`" in text, operator


def test_condition_docstring_examples_load(tmp_path):
    doc = conditions.__doc__ or ""
    examples = [line.strip() for line in doc.splitlines() if line.strip().startswith("{")]
    assert len(examples) == 7
    for index, example in enumerate(examples):
        scope = "cluster" if example.startswith("{columns") else "column"
        path = tmp_path / f"docstring-{index}.yaml"
        path.write_text(_as_rule_file(example, scope))
        load_ruleset([path])


def test_the_documented_pack_table_lists_every_built_in_rule():
    text = DOC.read_text(encoding="utf-8")
    pack = load_ruleset()
    listed = re.findall(r"^\| `([a-z0-9-]+)` \| (\w+) \| (\w+) \|", text, flags=re.M)
    assert sorted(listed) == sorted((r.id, r.severity, r.scope) for r in pack.rules)
    assert f"It holds {len(pack.rules)} rules" in text


@pytest.mark.parametrize("fmt", list(Format))
def test_every_format_is_documented(fmt):
    assert f"* `{fmt.value}`" in DOC.read_text(encoding="utf-8")
