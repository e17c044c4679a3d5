"""The waiver index finds exactly the waivers that trying each one on each finding finds.

A waiver file is applied to every finding of a check. Trying every waiver of a rule on every finding
cost findings x waivers pattern matches (a scale probe: 10,000 waivers over 18,600 findings took
204 s), so ``apply_waivers`` looks waivers up by rule, cluster and the literal start of their
column glob. These properties hold the lookup to the plain definition, :meth:`Waiver.matches`.
"""

from __future__ import annotations

from datetime import date

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from auditor.engine.findings import Finding
from auditor.engine.waivers import Waiver, WaiverIndex, Waivers, apply_waivers

TODAY = date(2026, 11, 28)
RULES = ("rule-a", "rule-b")
CLUSTERS = ("c1", "C1", "c2", None)
NAMES = ("hr.emp.ssn", "HR.emp.SSN", "hr.emp.email", "crm.contact.ssn", "crm.c.x", "h", "", "a*b.c", "a[1].b")
GLOBS = ("*", "hr.*", "HR.EMP.*", "hr.emp.ssn", "hr.emp.s?n", "crm.*.ssn", "h*", "", "a[*]b.c", "a[[]1].b")
GLOBS += ("[hc]*", "hr.emp.ssn.*")
REGEXES = (".*", "hr\\..*", ".*ssn", "", "HR\\.EMP\\.SSN", "crm\\.(contact|c)\\..*")


@st.composite
def waivers(draw) -> Waiver:
    column = draw(st.one_of(st.none(), st.sampled_from(GLOBS)))
    regex = draw(st.one_of(st.none(), st.sampled_from(REGEXES)))
    return Waiver(
        rule=draw(st.sampled_from(RULES)),
        cluster=draw(st.sampled_from(CLUSTERS)),
        column=column,
        column_regex=regex,
        reason="r",
        owner="o",
        expires=draw(st.sampled_from((date(2026, 1, 1), date(2027, 1, 1), date(2027, 6, 30)))),
        ticket=None,
        source="w.yaml",
        line=draw(st.integers(1, 50)),
    )


@st.composite
def findings(draw) -> Finding:
    kind = draw(st.sampled_from(("column", "group", "cluster")))
    rule = draw(st.sampled_from(RULES))
    cluster = draw(st.sampled_from(("c1", "C1", "c2", "c3")))
    if kind == "column":
        column = draw(st.sampled_from([n for n in NAMES if n]))
        return Finding(rule, "high", kind, cluster, column, [column], "m", key=column)
    columns = draw(st.lists(st.sampled_from([n for n in NAMES if n]), max_size=3, unique=True))
    if kind == "cluster" and draw(st.booleans()):
        columns = []
    return Finding(rule, "high", kind, cluster, None, columns, "m", key="k")


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(waivers(), max_size=12), findings())
def test_the_index_finds_the_waivers_that_match_in_file_order(entries, finding):
    expected = [(i, w) for i, w in enumerate(entries) if w.matches(finding)]
    assert WaiverIndex(entries).candidates(finding) == expected


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(waivers(), max_size=12), st.lists(findings(), max_size=8))
def test_applied_waivers_are_those_trying_every_waiver_gives(entries, items):
    applied = apply_waivers(items, Waivers(tuple(entries), "w.yaml", "d"), TODAY)
    used = set()
    for finding in items:
        matching = [(i, w) for i, w in enumerate(entries) if w.matches(finding)]
        used.update(i for i, _ in matching)
        active = [w for _, w in matching if not w.expired(TODAY)]
        chosen = max(active or [w for _, w in matching], key=lambda w: w.expires) if matching else None
        assert finding.waiver == (chosen.state(TODAY) if chosen else None)
        assert finding.status == ("waived" if active else "new")
    assert applied.stale == [w for i, w in enumerate(entries) if i not in used]


def test_a_glob_s_literal_start_is_what_every_name_it_matches_begins_with():
    def start(glob: str | None) -> str | None:
        return Waiver("r", None, glob, None, "r", "o", TODAY, None, "w", 1).literal_prefix

    assert [start(g) for g in ("HR.Emp.*", "hr.e?p", "a[*]b", "*", "exact.name", None)] == [
        "hr.emp.",
        "hr.e",
        "a",
        "",
        "exact.name",
        None,
    ]
