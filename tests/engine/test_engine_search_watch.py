"""The last guard of ``matches`` on SQLite: a search of one value that runs too long stops the check.

``check_pattern`` refuses the backtracking shapes it knows; this pattern is one it does not (bounded
segments, each splitting its part of a value few enough ways, whose ways multiply across the
separators when the last segment fails): on a 143-character value it searched for 219 s, and a run
holds a million values.
"""

from __future__ import annotations

import importlib
import signal
import time

import pytest
from sqlalchemy import func, select

from auditor.engine import check_run, load_ruleset, sqlfuncs
from auditor.engine.evaluate import evaluate_each
from auditor.errors import RuleError
from auditor.store.runs import resolve_run
from auditor.store.schema import evaluations

evaluate_module = importlib.import_module("auditor.engine.evaluate")  # (auditor.engine.evaluate: a function)

SLOW = "[a-z]{0,19}[a-z]{0,19}_" * 6
HOSTILE = ("a" * 20 + "_") * 5 + "a" * 38  # the sixth segment never finds its '_'

CATALOG = [
    {
        "id": "c1",
        "columns": [
            {"fullyQualifiedName": "a.b.short", "columnName": "a_b_c_d_e_f_"},
            {"fullyQualifiedName": "a.b.long", "columnName": HOSTILE},
        ],
    }
]


def _rule_file(write, pattern: str = SLOW):
    return write(
        "slow.yaml",
        "rules:\n"
        "  - {id: slow-pattern, title: t, description: d, severity: high, scope: column,\n"
        f"     remediation: r, message: m, condition: {{field: columnName, matches: '{pattern}'}}}}\n"
        "  - {id: every-column, title: t, description: d, severity: low, scope: column,\n"
        "     remediation: r, message: m, condition: {field: businessAttribute, absent: true}}\n",
    )


def _message(path, seconds: str) -> str:
    return (
        f"{path}:2: rule slow-pattern: its pattern '{SLOW}' searched one value for more than {seconds} s "
        "(it backtracks catastrophically on some values); the check was stopped"
    )


def test_the_pattern_passes_validation(write):
    assert sqlfuncs.check_pattern(SLOW) is None  # the shape this guard exists for
    rules = load_ruleset([_rule_file(write)]).rules
    assert sorted(rule.id for rule in rules) == ["every-column", "slow-pattern"]


def test_a_search_running_too_long_stops_the_check_naming_the_rule_and_pattern(
    engine, snapshot, write, monkeypatch
):
    monkeypatch.setattr(sqlfuncs, "SEARCH_SECONDS", 0.5)
    snapshot(engine, CATALOG)
    path = _rule_file(write)
    before = signal.getsignal(signal.SIGVTALRM)
    started = time.monotonic()
    with pytest.raises(RuleError) as raised:
        check_run(engine, "latest", load_ruleset([path]))
    assert time.monotonic() - started < 5  # not the minutes of the search
    assert raised.value.message == _message(path, "0.5")
    assert raised.value.hint.startswith("rewrite the pattern so that no two parts can match the same")
    assert signal.getsignal(signal.SIGVTALRM) is before  # the handler it replaced, back
    with engine.connect() as connection:  # nothing recorded for the run
        assert connection.execute(select(func.count()).select_from(evaluations)).scalar() == 0


def test_quick_searches_are_not_stopped_and_the_watch_leaves_no_trace(engine, snapshot, write, monkeypatch):
    monkeypatch.setattr(sqlfuncs, "SEARCH_SECONDS", 0.5)
    snapshot(engine, CATALOG)
    result = check_run(engine, "latest", load_ruleset([_rule_file(write, r"^([a-z]_){6}$")]))
    assert sorted((f.rule, f.column) for f in result.findings) == [
        ("every-column", "a.b.long"),
        ("every-column", "a.b.short"),
        ("slow-pattern", "a.b.short"),
    ]
    assert signal.getsignal(signal.SIGVTALRM) is signal.SIG_DFL
    assert signal.getitimer(signal.ITIMER_VIRTUAL) == (0.0, 0.0)  # the timer stopped


def test_a_caller_s_own_virtual_timer_and_handler_are_put_back(engine, snapshot, write):
    snapshot(engine, CATALOG)

    def own(signum, frame):  # pragma: no cover - it must not fire during the test
        raise AssertionError("the caller's timer fired")

    previous = signal.signal(signal.SIGVTALRM, own)
    signal.setitimer(signal.ITIMER_VIRTUAL, 1000.0, 500.0)
    try:
        check_run(engine, "latest", load_ruleset([_rule_file(write, r"^([a-z]_){6}$")]))
        assert signal.getsignal(signal.SIGVTALRM) is own
        left, interval = signal.getitimer(signal.ITIMER_VIRTUAL)
        # (the kernel rounds a timer it is given to its own granularity: 1000.004 s was seen)
        assert 900 < left <= 1001 and 500 <= interval < 501
    finally:
        signal.setitimer(signal.ITIMER_VIRTUAL, 0)
        signal.signal(signal.SIGVTALRM, previous)


def test_the_cli_exits_2_with_the_rule_its_file_and_line(run_cli, engine, snapshot, write, monkeypatch):
    monkeypatch.setattr(sqlfuncs, "SEARCH_SECONDS", 0.5)
    snapshot(engine, CATALOG)
    path = _rule_file(write)
    result = run_cli("check", "--db", str(engine.url.database), "--rules", str(path))
    assert result.exit_code == 2
    assert result.stdout == ""
    assert result.stderr.splitlines() == [
        f"error: {_message(path, '0.5')}",
        "hint: rewrite the pattern so that no two parts can match the same characters (anchor it, end "
        "each repeat at a character it cannot take, merge repeats in a row: [a-z]{0,38} for "
        "[a-z]{0,19}[a-z]{0,19}); `auditor rules validate` refuses the shapes it knows",
    ]  # and no traceback


def test_worker_processes_stop_the_same_way(engine, snapshot, write, monkeypatch):
    """Large SQLite runs are evaluated by worker processes: the rule stops there, at the default limit,
    and the error reaches the caller whole (rule, file, line, hint)."""
    snapshot(engine, CATALOG)
    monkeypatch.setattr(evaluate_module, "PROCESS_MIN_COLUMNS", 1)
    run_id = resolve_run(engine, "latest").id
    assert evaluate_module.parallel_mode(engine, run_id, 2) == "processes"
    path = _rule_file(write)
    started = time.monotonic()
    with pytest.raises(RuleError) as raised:
        list(evaluate_each(engine, run_id, load_ruleset([path]), workers=2))
    assert time.monotonic() - started < sqlfuncs.SEARCH_SECONDS + 10
    assert raised.value.message == _message(path, f"{sqlfuncs.SEARCH_SECONDS:g}")
    assert raised.value.hint.startswith("rewrite the pattern")
