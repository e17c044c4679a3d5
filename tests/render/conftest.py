"""Fixtures for the render tests: hand-made report inputs (plain and hostile), SMTP servers, a TLS cert.

The report is driven by JSON-shaped dicts exactly as check and diff produce them, so these tests do
not depend on the rules engine; ``test_render_cli.py`` covers the database path end to end.
"""

from __future__ import annotations

import socket
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from auditor.render.context import Evidence, FileEvidence, ReportInput, RuleView, RunView, TrendPoint

TODAY = date(2026, 11, 28)

HOSTILE = (
    "<script>window.__pwned = 1; alert(1)</script>",
    '"><img src=x onerror="window.__pwned=2;alert(2)">',
    "javascript:window.__pwned=3",
    "'><svg onload=window.__pwned=4>",
    "</style><script>window.__pwned=5</script>",
    "</textarea></title><iframe src=javascript:alert(6)>",
    "{{ 7*7 }}{% raw %}",
    "Ünïcødé 名前 🚀 \u202e evil",
    '=HYPERLINK("http://evil.example","x")',
    "crm.forged\n- [critical] forged-rule: a line that is not a finding\tOpen findings: 0",
    "x" * 400,
)


def run_view(run_id: int, **overrides: Any) -> RunView:
    values: dict[str, Any] = {
        "id": run_id,
        "status": "complete",
        "started_at": f"2026-11-{20 + run_id:02d}T10:00:00Z",
        "finished_at": f"2026-11-{20 + run_id:02d}T10:04:30Z",
        "source_url": "https://bigid.example.net/api/v1",
        "tool_version": "0.1.0",
        "clusters_announced": 40,
        "clusters_stored": 40,
        "columns_announced": 1200,
        "columns_stored": 1200,
        "requests": 57,
        "retries": 2,
    }
    values.update(overrides)
    return RunView(**values)


def finding(
    index: int,
    *,
    rule: str = "high-sensitivity-without-confidential",
    severity: str = "high",
    status: str = "new",
    cluster: str | None = None,
    column: str | None = None,
    message: str | None = None,
    waiver: dict[str, Any] | None = None,
    explanation: Any = None,
) -> dict[str, Any]:
    column = column if column is not None else f"db.schema.table{index}.ssn"
    data: dict[str, Any] = {
        "rule": rule,
        "severity": severity,
        "cluster_id": cluster or f"cluster-{index % 7}",
        "column": column,
        "columns": [column],
        "message": message or f"column {column} holds high-sensitivity data",
        "fingerprint": f"{rule}:{index:08d}",
        "status": status,
        "first_seen_run": 3 if status == "new" else 1,
    }
    if waiver is not None:
        data["waiver"] = waiver
    if explanation is not None:
        data["explanation"] = explanation
    return data


RULES = {
    "high-sensitivity-without-confidential": RuleView(
        id="high-sensitivity-without-confidential",
        title="High-sensitivity column in a cluster not labelled Confidential",
        severity="high",
        description="Highly sensitive data must live in clusters handled as confidential.",
        explanation=(
            "the column has a tag sensitivity that is high and the cluster lacks the label Confidential"
        ),
        remediation="Label the cluster Confidential, or correct the column's sensitivity tag.",
        references=("GDPR Art. 32", "ISO 27001 A.8.2"),
    ),
    "duplicate-columns-across-sources": RuleView(
        id="duplicate-columns-across-sources",
        title="Same column name in several sources",
        severity="medium",
        explanation="columns with the same columnName live in 2 or more distinct sources",
        remediation="Review whether the copies are needed.",
    ),
    "pii-without-sensitivity-tag": RuleView(
        id="pii-without-sensitivity-tag",
        title="PII attribute without a sensitivity tag",
        severity="critical",
        explanation="an attribute of type PII has confidence at least 0.9 and no tag sensitivity exists",
        remediation="Tag the column.",
    ),
}


@dataclass
class Sample:
    data: ReportInput
    rules_file: Path
    waivers_file: Path


def evidence(tmp_path: Path) -> tuple[Evidence, Path, Path]:
    rules_file = tmp_path / "rules.yml"
    rules_file.write_text("rules: []\n", encoding="utf-8")
    waivers_file = tmp_path / "waivers.yml"
    waivers_file.write_text("waivers: []\n", encoding="utf-8")
    from auditor.render.report import sha256_file

    ev = Evidence(
        generated_at="2026-11-28T12:00:00Z",
        tool_version="0.1.0",
        rules_source=str(rules_file),
        rules_digest="d1g35t",
        rule_count=len(RULES),
        rule_files=(FileEvidence("rules", str(rules_file), sha256_file(rules_file)),),
        waiver_file=FileEvidence("waivers", str(waivers_file), sha256_file(waivers_file)),
        baseline="run 2",
    )
    return ev, rules_file, waivers_file


@pytest.fixture
def sample(tmp_path: Path) -> Sample:
    """Run 3 against run 2: 4 new, 2 existing, 2 waived (one expiring), 3 resolved, a few changes."""
    ev, rules_file, waivers_file = evidence(tmp_path)
    findings = [
        finding(1),
        finding(2),
        finding(3, rule="pii-without-sensitivity-tag", severity="critical"),
        finding(4, rule="duplicate-columns-across-sources", severity="medium"),
        finding(5, status="existing"),
        finding(6, rule="duplicate-columns-across-sources", severity="medium", status="existing"),
        finding(
            7,
            status="waived",
            waiver={
                "reason": "migration under way",
                "owner": "data-team",
                "expires": "2026-12-05",
                "expired": False,
            },
        ),
        finding(
            8,
            status="waived",
            waiver={"reason": "accepted risk", "owner": "ciso", "expires": "2027-06-30", "expired": False},
        ),
    ]
    findings[3]["column"] = None  # a group finding: no single column, several involved
    findings[3]["columns"] = ["crm.a.email", "erp.b.email", "web.c.email"]
    resolved = [finding(10 + i, status="existing") for i in range(3)]
    diff = {
        "from_run": 2,
        "to_run": 3,
        "clusters": {
            "added": [{"cluster_id": "cluster-new", "name": "New cluster", "size": 4, "labels": ["PII"]}],
            "removed": [],
            "changed": [
                {
                    "cluster_id": "cluster-1",
                    "changes": {
                        "labels": {
                            "before": ["Confidential", "PII"],
                            "after": ["PII"],
                            "added": [],
                            "removed": ["Confidential"],
                        }
                    },
                }
            ],
        },
        "columns": {
            "added": [{"cluster_id": "cluster-1", "column": "db.schema.table1.ssn", "source": "db"}],
            "removed": [{"cluster_id": "cluster-2", "column": "db.schema.old.col", "source": "db"}],
            "changed": [
                {
                    "cluster_id": "cluster-2",
                    "column": "db.schema.table2.ssn",
                    "changes": {"dataType": {"before": "varchar", "after": "text"}},
                }
            ],
            "moved": [
                {"column": "db.schema.moved.col", "from_cluster": "cluster-3", "to_cluster": "cluster-4"}
            ],
        },
        "findings": {
            "new": findings[:4],
            "resolved": resolved,
            "open": findings[4:6],
            "newly_waived": [],
            "waiver_expired": [],
        },
        "summary": {},
    }
    diff["findings"]["new"][0] = {
        **findings[0],
        "explanation": [
            {"kind": "cluster_changed", "text": "label 'Confidential' removed from cluster 'c1'"}
        ],
    }
    data = ReportInput(
        run=run_view(3),
        against=run_view(2),
        findings=findings,
        rules=RULES,
        evidence=ev,
        diff=diff,
        trend=[
            TrendPoint(1, "2026-11-21T10:00:00Z", {"high": 2}),
            TrendPoint(2, "2026-11-22T10:00:00Z", {"high": 4, "medium": 1}),
            TrendPoint(3, "2026-11-23T10:00:00Z", {"critical": 1, "high": 3, "medium": 2}),
        ],
        today=TODAY,
    )
    return Sample(data, rules_file, waivers_file)


def hostile_input(tmp_path: Path) -> ReportInput:
    """Every catalog-derived string holds markup, script, URLs, unicode or 400 characters."""
    ev, _rules, _waivers = evidence(tmp_path)
    findings = []
    for index, value in enumerate(HOSTILE):
        findings.append(
            finding(
                index,
                status="new" if index % 2 else "existing",
                cluster=value,
                column=value,
                message=value,
                explanation=value,
            )
        )
    findings.append(
        finding(
            99,
            status="waived",
            waiver={"reason": HOSTILE[0], "owner": HOSTILE[1], "expires": HOSTILE[2], "expired": False},
        )
    )
    hostile_rule = RuleView(
        id="high-sensitivity-without-confidential",
        title=HOSTILE[1],
        severity="high",
        description=HOSTILE[0],
        explanation=HOSTILE[3],
        remediation=HOSTILE[2],
        references=(HOSTILE[4],),
    )
    diff = {
        "from_run": 2,
        "to_run": 3,
        "clusters": {
            "added": [{"cluster_id": value, "name": value, "labels": [value]} for value in HOSTILE],
            "removed": [],
            "changed": [
                {
                    "cluster_id": HOSTILE[0],
                    "changes": {HOSTILE[1]: {"before": HOSTILE[2], "after": HOSTILE[3]}},
                }
            ],
        },
        "columns": {
            "added": [{"cluster_id": value, "column": value, "source": value} for value in HOSTILE],
            "removed": [],
            "changed": [],
            "moved": [{"column": HOSTILE[0], "from_cluster": HOSTILE[1], "to_cluster": HOSTILE[4]}],
        },
        "findings": {
            "new": [f for f in findings if f["status"] == "new"],
            "resolved": findings[:2],
            "open": [],
            "newly_waived": [],
            "waiver_expired": [],
        },
        "summary": {},
    }
    return ReportInput(
        run=run_view(3, source_url=HOSTILE[2], error=None),
        against=run_view(2),
        findings=findings,
        rules={hostile_rule.id: hostile_rule},
        evidence=ev,
        diff=diff,
        trend=[TrendPoint(2, HOSTILE[0], {"high": 1}), TrendPoint(3, HOSTILE[1], {"high": 3})],
        today=TODAY,
    )


def scale_input(tmp_path: Path, changes: int = 100_000, findings_count: int = 20_000) -> ReportInput:
    """A run with ``changes`` column changes and ``findings_count`` new findings (and as many resolved)."""
    ev, _rules, _waivers = evidence(tmp_path)
    findings = [finding(i, severity=("high", "medium", "low")[i % 3]) for i in range(findings_count)]
    third = changes // 4
    diff = {
        "from_run": 2,
        "to_run": 3,
        "clusters": {"added": [], "removed": [], "changed": []},
        "columns": {
            "added": [{"cluster_id": f"c{i % 500}", "column": f"db.s.t{i}.added"} for i in range(third)],
            "removed": [{"cluster_id": f"c{i % 500}", "column": f"db.s.t{i}.removed"} for i in range(third)],
            "changed": [
                {
                    "cluster_id": f"c{i % 500}",
                    "column": f"db.s.t{i}.changed",
                    "changes": {"dataType": {"before": "int", "after": "bigint"}},
                }
                for i in range(third)
            ],
            "moved": [
                {
                    "column": f"db.s.t{i}.moved",
                    "from_cluster": f"c{i % 500}",
                    "to_cluster": f"c{(i + 1) % 500}",
                }
                for i in range(changes - 3 * third)
            ],
        },
        "findings": {
            "new": findings,
            "resolved": findings,
            "open": [],
            "newly_waived": [],
            "waiver_expired": [],
        },
        "summary": {},
    }
    return ReportInput(
        run=run_view(3),
        against=run_view(2),
        findings=findings,
        rules=RULES,
        evidence=ev,
        diff=diff,
        today=TODAY,
    )


# --------------------------------------------------------------------------------------------------
# SMTP
# --------------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Received:
    envelopes: list[Any] = field(default_factory=list)
    logins: list[tuple[str, str]] = field(default_factory=list)
    event: threading.Event = field(default_factory=threading.Event)


class _Handler:
    def __init__(self, received: Received) -> None:
        self.received = received

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.received.envelopes.append(envelope)
        self.received.event.set()
        return "250 Message accepted for delivery"


@pytest.fixture(scope="session")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and its key, made with the openssl CLI."""
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
            "-keyout", str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1",
            "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return cert, key


@pytest.fixture
def smtp_server() -> Iterator[Any]:
    """A factory starting aiosmtpd on loopback: ``smtp_server(tls=None|"starttls"|"implicit", auth=...)``."""
    import ssl

    from aiosmtpd.controller import Controller
    from aiosmtpd.smtp import AuthResult

    controllers: list[Any] = []

    def start(
        *,
        tls: str | None = None,
        cert: tuple[Path, Path] | None = None,
        credentials: tuple[str, str] | None = None,
        offer_login: bool = True,
    ) -> tuple[str, int, Received]:
        received = Received()
        kwargs: dict[str, Any] = {} if offer_login else {"auth_exclude_mechanism": ["LOGIN", "PLAIN"]}
        if tls:
            assert cert is not None
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(str(cert[0]), str(cert[1]))
            kwargs["tls_context" if tls == "starttls" else "ssl_context"] = context
        if credentials is not None:

            def authenticator(
                server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any
            ) -> Any:
                login = auth_data.login.decode() if isinstance(auth_data.login, bytes) else auth_data.login
                password = (
                    auth_data.password.decode()
                    if isinstance(auth_data.password, bytes)
                    else auth_data.password
                )
                received.logins.append((login, password))
                return AuthResult(success=(login, password) == credentials, handled=False)

            kwargs["authenticator"] = authenticator
            kwargs["auth_require_tls"] = True
        for attempt in range(5):  # the free port may be taken before the server binds it (parallel workers)
            port = free_port()
            controller = Controller(_Handler(received), hostname="127.0.0.1", port=port, **kwargs)
            if tls == "implicit":
                # the readiness probe must speak TLS too: trust our own certificate for it
                controller.ssl_context = kwargs["ssl_context"]
            try:
                controller.start()
            except (OSError, RuntimeError):
                if attempt == 4:
                    raise
                continue
            controllers.append(controller)
            return "127.0.0.1", port, received
        raise AssertionError("unreachable")

    yield start
    for controller in controllers:
        controller.stop()
