"""The ``sarif`` format: SARIF 2.1.0 for code-scanning uploads.

* ``tool.driver.rules`` describes every rule (title, description, remediation as help, framework
  references and tags as properties, default level from the severity).
* Every result has a location: a *logical* location naming the catalog object
  (``bigid://clusters/<id>/columns/<fqn>``) and a *physical* one pointing at the rule's definition
  in its rule file (code scanning rejects results without a physical location; catalog objects
  have no file, the rule that flagged them does).
* ``partialFingerprints`` carries the finding's fingerprint, so uploads de-duplicate across runs.
* Waived findings are kept, with a ``suppressions`` entry (``external``, ``accepted``) whose
  justification is the waiver's reason.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import orjson

from auditor import __version__, jsonstream
from auditor.paths import rules_dir

if TYPE_CHECKING:
    from auditor.engine.check import CheckResult
    from auditor.engine.rules import Rule

SCHEMA = "https://docs.oasis-open.org/sarif/sarif/v2.1.0/errata01/os/schemas/sarif-schema-2.1.0.json"
LEVELS = {"critical": "error", "high": "error", "medium": "warning", "low": "note", "info": "note"}
SECURITY_SEVERITY = {"critical": "9.5", "high": "8.0", "medium": "5.5", "low": "3.0", "info": "0.0"}


def rule_uri(rule: Rule) -> str:
    """The rule file as a repository-relative URI.

    A built-in rule is ``rules/<file>`` wherever the package is installed (never a path into a
    virtual environment); a user's rule file is relative to the working folder (the repository a
    CI job runs in), else ``rules/<file name>``. Percent-encoded: a space or ``#`` in a path would
    otherwise make it an invalid URI, or one naming another file.
    """
    path = Path(rule.source).resolve()
    for base, prefix in ((rules_dir().resolve(), "rules/"), (Path.cwd().resolve(), "")):
        try:
            return prefix + quote(path.relative_to(base).as_posix(), safe="/")
        except ValueError:
            continue
    return f"rules/{quote(path.name, safe='')}"


def catalog_uri(cluster_id: str | None, column: str | None, key: str | None) -> str:
    base = "bigid://clusters/" + quote(cluster_id or "*", safe="")
    if column:
        return f"{base}/columns/{quote(column, safe='')}"
    if key:
        return f"{base}/groups/{quote(key, safe='')}"
    return base


def _descriptor(rule: Rule) -> dict[str, Any]:
    cited = ", ".join(rule.references)  # (a rule may cite none: no dangling "References:" then)
    return {
        "id": rule.id,
        "name": "".join(part.capitalize() for part in rule.id.split("-")),
        "shortDescription": {"text": rule.title},
        "fullDescription": {"text": rule.description.strip()},
        "help": {
            "text": rule.remediation.strip() + (f"\nReferences: {cited}" if cited else ""),
            "markdown": rule.remediation.strip()
            + (f"\n\n**References:** {cited}" if cited else "")
            + f"\n\n_{rule.explain()}_",
        },
        "defaultConfiguration": {"level": LEVELS[rule.severity]},
        "properties": {
            "tags": list(rule.tags),
            "references": list(rule.references),
            "severity": rule.severity,
            "security-severity": SECURITY_SEVERITY[rule.severity],
        },
    }


BATCH = 1_000  # results per piece


def format(result: CheckResult) -> str:
    return "".join(chunks(result))


GITHUB_MAX_RESULTS = 25_000  # results per run GitHub code scanning takes; it rejects a file with more


def size_note(result: CheckResult) -> str | None:
    """What to know before uploading: more results than GitHub code scanning takes in one run."""
    count = len(result.findings)
    if count <= GITHUB_MAX_RESULTS:
        return None
    return (
        f"the SARIF log holds {count:,} results; GitHub code scanning rejects a run of more than "
        f"{GITHUB_MAX_RESULTS:,}: upload the results of fewer rules (--rules), or keep the JSON output"
    )


def chunks(result: CheckResult) -> Iterator[str]:
    """The log piece by piece, a batch of results at a time (never held whole at 1M columns).

    The bytes are those of ``json.dumps(log, indent=2, ensure_ascii=False)`` (tested).
    """
    rules = list(result.rules)
    log = {
        "$schema": SCHEMA,
        "version": "2.1.0",
        "runs": [
            {
                "tool": {
                    "driver": {
                        "name": "cluster-auditor",
                        "version": __version__,
                        "informationUri": "https://github.com/cluster-auditor/cluster-auditor",
                        "rules": [_descriptor(rule) for rule in rules],
                    }
                },
                "automationDetails": {"id": f"cluster-auditor/run-{result.run.id}"},
                "invocations": [_invocation(result)],
                "results": [jsonstream.MARK],
                "properties": {"run": result.run.id, "summary": dict(result.summary)},
            }
        ],
    }
    yield from jsonstream.batches(_dumps, log, _results(result, rules), BATCH)


def _invocation(result: CheckResult) -> dict[str, Any]:
    """The one invocation, with a notification for each note the other formats print: a run that
    is not complete (``incomplete-run``) or whose clusters served fewer columns than announced
    (``total-shortfall``), warnings; a baseline of another scope (``baseline-scope``), a note."""
    invocation: dict[str, Any] = {"executionSuccessful": True, "workingDirectory": {"uri": _cwd_uri()}}
    notes = (
        ("warning", "incomplete-run", result.incomplete_note()),
        ("warning", "total-shortfall", result.shortfall_note()),
        ("note", "baseline-scope", result.baseline_note()),
    )
    notifications = [
        {"level": level, "descriptor": {"id": name}, "message": {"text": text}}
        for level, name, text in notes
        if text
    ]
    if notifications:
        invocation["toolExecutionNotifications"] = notifications
    return invocation


def _results(result: CheckResult, rules: list[Rule]) -> Iterator[dict[str, Any]]:
    index = {rule.id: i for i, rule in enumerate(rules)}
    files: dict[str, dict[str, Any]] = {}  # rule id -> its physical location (resolved once)
    for f in result.findings:
        physical = files.get(f.rule)
        if physical is None:
            rule = result.ruleset.get(f.rule)
            physical = files[f.rule] = {
                "artifactLocation": {"uri": rule_uri(rule) if rule else "rules"},
                "region": {"startLine": rule.line if rule else 1},
            }
        entry: dict[str, Any] = {
            "ruleId": f.rule,
            "level": LEVELS[f.severity],
            "message": {"text": f.message},
            "locations": [
                {
                    "physicalLocation": physical,
                    "logicalLocations": [
                        {
                            "name": f.column or f.key or f.cluster_id or "snapshot",
                            "fullyQualifiedName": catalog_uri(f.cluster_id, f.column, f.key),
                            "kind": "object",
                        }
                    ],
                }
            ],
            "partialFingerprints": {"clusterAuditorFingerprint/v1": f.fingerprint},
            "properties": {
                "status": f.status,
                "severity": f.severity,
                "cluster_id": f.cluster_id,
                "columns": list(f.columns),
                "first_seen_run": f.first_seen_run,
            },
        }
        if f.rule in index:
            entry["ruleIndex"] = index[f.rule]
        if f.waiver is not None:
            entry["properties"]["waiver"] = dict(f.waiver)
        if f.waived and f.waiver:
            entry["suppressions"] = [
                {
                    "kind": "external",
                    "status": "accepted",
                    "justification": f"{f.waiver['reason']} (owner {f.waiver['owner']}, "
                    f"valid through {f.waiver['expires']})",
                }
            ]
        yield entry


def _dumps(value: Any) -> str:
    # orjson writes json.dumps(indent=2, ensure_ascii=False)'s layout, several times faster
    return orjson.dumps(value, option=orjson.OPT_INDENT_2).decode() + "\n"


def _cwd_uri() -> str:
    return Path(os.getcwd()).resolve().as_uri() + "/"
