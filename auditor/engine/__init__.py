"""The rules engine: YAML rules compiled to SQL, findings, waivers, baselines and the CI gate.

Public surface (other stages call these; keep the names):

* :func:`load_ruleset` (``None`` = the built-in pack) → :class:`RuleSet` (``.rules``, ``.digest``);
  each :class:`Rule` has ``id, title, description, severity, remediation, references, tags`` and
  ``explain()``.
* :func:`load_waivers` → :class:`Waivers`; :func:`load_rules_and_waivers` loads both, one error
  listing the problems of both.
* :func:`evaluate` (always evaluates), :func:`findings_for_run` (reuses a stored evaluation with
  the same rules digest).
* :func:`check_run` → :class:`CheckResult` (``.findings``, ``.summary``, ``.gate()``, ``.to_json()``).
* :class:`Finding` (``.to_json()`` in the shared shape).
"""

from __future__ import annotations

from auditor.engine.check import CheckResult, check_run, findings_for_run, resolve_baseline
from auditor.engine.evaluate import evaluate, evaluate_each
from auditor.engine.findings import Finding, fingerprint
from auditor.engine.rules import (
    SEVERITY_ORDER,
    Rule,
    RuleSet,
    Severity,
    load_ruleset,
    rules_json_schema,
    validate_rule_files,
)
from auditor.engine.waivers import Waiver, Waivers, apply_waivers, load_rules_and_waivers, load_waivers

__all__ = [
    "SEVERITY_ORDER",
    "CheckResult",
    "Finding",
    "Rule",
    "RuleSet",
    "Severity",
    "Waiver",
    "Waivers",
    "apply_waivers",
    "check_run",
    "evaluate",
    "evaluate_each",
    "findings_for_run",
    "fingerprint",
    "load_rules_and_waivers",
    "load_ruleset",
    "load_waivers",
    "resolve_baseline",
    "rules_json_schema",
    "validate_rule_files",
]
