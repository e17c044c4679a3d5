"""The diff on PostgreSQL: the same SQL gives the same diff as on SQLite, findings included.

Uses ``pg_engine`` (over the shared ``postgres_url`` fixture: a fresh database on the server named by
``AUDITOR_TEST_POSTGRES_URL``; skipped with the reason when it is unset). The property test against
the Python reference also runs on PostgreSQL, in ``test_diff_properties.py``.
"""

from __future__ import annotations

import pytest

from auditor.diff import compute_diff

pytestmark = pytest.mark.postgres


def drifted(base, kit):
    after = base()
    after[0][0]["labels"] = ["PII"]
    after[0][0]["severity"] = "Medium"
    after[1][1].append(after[0][1].pop(0))  # email moves c1 -> c2
    kit.find(after, "dwh.sales.orders.ssn")["attributes"][0].update(rank="High", calc_confidence_level=0.95)
    kit.find(after, "crm.public.users.id")["dataType"] = "bigint"
    after.append(
        (kit.cluster("c3", labels=[]), [kit.column("hr.pay.salary.amount", tags={"sensitivity": "high"})])
    )
    return after


def without_run_ids(data):
    def strip(finding):
        return {k: v for k, v in finding.items() if k != "first_seen_run"}

    return {
        **{k: v for k, v in data.items() if k not in ("from_run", "to_run", "findings")},
        "findings": {name: [strip(f) for f in items] for name, items in data["findings"].items()},
    }


def test_postgres_and_sqlite_give_the_same_diff(pg_engine, engine, write, base, kit):
    on_pg = compute_diff(pg_engine, write(pg_engine, base()), write(pg_engine, drifted(base, kit))).to_json()
    on_sqlite = compute_diff(engine, write(engine, base()), write(engine, drifted(base, kit))).to_json()
    assert without_run_ids(on_pg) == without_run_ids(on_sqlite)
    assert on_pg["summary"]["columns"] == {"added": 1, "removed": 0, "changed": 2, "moved": 1}
    assert on_pg["summary"]["clusters"] == {"added": 1, "removed": 0, "changed": 1}
    assert on_pg["findings"]["new"], "the drift raises findings"


def test_open_findings_stream_in_the_same_order_as_on_sqlite(pg_engine, engine, write, base, kit):
    catalog = base()
    for name in ("Zeta", "alpha", "Émile", "beta", "_under", "10", "9"):
        catalog[0][1].append(kit.column(f"src.t.{name}", tags={"sensitivity": "high"}))
    on_pg = compute_diff(pg_engine, write(pg_engine, catalog), write(pg_engine, catalog)).to_json()
    on_sqlite = compute_diff(engine, write(engine, catalog), write(engine, catalog)).to_json()
    assert [f["fingerprint"] for f in on_pg["findings"]["open"]] == [
        f["fingerprint"] for f in on_sqlite["findings"]["open"]
    ]
