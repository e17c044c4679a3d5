"""The findings half of the diff: five categories, each finding linked to the change that explains it.

Findings of the two runs are matched by fingerprint (derived from the rule id and catalog
identifiers, so stable across runs). Every fingerprint lands in exactly one category:

* ``new``: only in the newer run and not waived there;
* ``resolved``: only in the older run;
* ``newly_waived``: waived (by a waiver that has not expired) in the newer run but not in the older
  one, including a finding that is new and already waived;
* ``waiver_expired``: waived in the older run, and in the newer run its waiver has expired, so it
  counts again;
* ``open``: in both runs, with no change of waiver state.

Each finding carries ``explanation``: the atomic catalog changes (see
:class:`auditor.diff.model.Explanation`) touching its subject. Column changes of the finding's column
(or of the columns a group finding lists) under its cluster come first, then changes of the cluster
itself (its size only for cluster and group findings); for a cluster finding with neither, the
column additions, removals and moves within the cluster. Waiver state changes add a
``waiver_added`` or ``waiver_expired`` entry.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Collection, Iterable, Mapping
from typing import Any

from auditor.diff.model import FINDING_CATEGORIES, CatalogDiff, Explanation, FindingDiff
from auditor.store.runs import RunInfo

MAX_EXPLANATIONS = 10  # per finding; a cluster finding in a cluster with 10,000 changes lists a few

# Where findings come from: given the older and the newer run, the findings of each in the shape of
# ``auditor check --format json`` (``Finding.to_json()``), waiver states applied; the older run's
# may be a stream (it is read once). Without one, the diff compares the rules engine's stored
# evaluations in SQL (:mod:`auditor.diff.sources`); tests and other tools may plug in any callable.
FindingsSource = Callable[[RunInfo, RunInfo], tuple[Iterable[dict[str, Any]], Iterable[dict[str, Any]]]]


class ChangeIndex:
    """The catalog changes, looked up by (cluster, column) and by cluster."""

    def __init__(self, catalog: CatalogDiff) -> None:
        self.by_column: dict[tuple[str, str], list[Explanation]] = defaultdict(list)
        self.by_fqn: dict[str, list[Explanation]] = defaultdict(list)  # in any cluster
        self.by_cluster: dict[str, list[Explanation]] = defaultdict(list)
        self.columns_in_cluster: dict[str, list[Explanation]] = defaultdict(list)
        for change in catalog.columns_changed:
            self._column(change.cluster_id, change.column, change.explanations())
        for entry in catalog.columns_added:
            self._column(entry.cluster_id, entry.column, entry.explanations("column_added"), structural=True)
        for entry in catalog.columns_removed:
            self._column(
                entry.cluster_id, entry.column, entry.explanations("column_removed"), structural=True
            )
        for move in catalog.columns_moved:
            explained = move.explanations()[:1]  # the move itself; content changes are in columns_changed
            for cluster_id in (move.from_cluster, move.to_cluster):
                self._column(cluster_id, move.column, explained, structural=True)
        for cluster_change in catalog.clusters_changed:
            self.by_cluster[cluster_change.cluster_id].extend(cluster_change.explanations())
        for cluster in catalog.clusters_added:
            self.by_cluster[cluster.cluster_id].extend(cluster.explanations("cluster_added"))
        for cluster in catalog.clusters_removed:
            self.by_cluster[cluster.cluster_id].extend(cluster.explanations("cluster_removed"))

    def _column(
        self, cluster_id: str, fqn: str, explained: list[Explanation], *, structural: bool = False
    ) -> None:
        self.by_column[(cluster_id, fqn)].extend(explained)
        self.by_fqn[fqn].extend(explained)
        if structural:
            self.columns_in_cluster[cluster_id].extend(explained)

    def explain(self, finding: Mapping[str, Any]) -> list[Explanation]:
        """The changes that explain ``finding`` appearing or going away (may be empty)."""
        cluster_id = str(finding.get("cluster_id") or "")
        subjects: list[str] = []
        if finding.get("column"):
            subjects.append(str(finding["column"]))
        subjects.extend(str(c) for c in finding.get("columns") or () if c and c not in subjects)
        out: list[Explanation] = []
        seen: set[tuple[Any, ...]] = set()
        for fqn in subjects:
            # a finding about the whole snapshot (no cluster: column-in-several-clusters) is explained
            # by its columns' changes in any cluster (found by a probe: it was never explained)
            _extend(
                out,
                seen,
                self.by_column.get((cluster_id, fqn), ()) if cluster_id else self.by_fqn.get(fqn, ()),
            )
        cluster_changes = self.by_cluster.get(cluster_id, ())
        if finding.get("column"):  # a column finding: its cluster's size says nothing about it
            cluster_changes = [e for e in cluster_changes if e.field != "size"]
        _extend(out, seen, cluster_changes)
        if not out and not finding.get("column"):
            _extend(out, seen, self.columns_in_cluster.get(cluster_id, ()))
        if len(out) > MAX_EXPLANATIONS:
            more = len(out) - MAX_EXPLANATIONS + 1
            out = [
                *out[: MAX_EXPLANATIONS - 1],
                Explanation("more", cluster_id, None, None, None, None, f"and {more} more changes"),
            ]
        return out


def _extend(out: list[Explanation], seen: set[tuple[Any, ...]], items: Iterable[Explanation]) -> None:
    for item in items:
        key = (item.kind, item.cluster_id, item.column, item.field, item.text)
        if key not in seen:
            seen.add(key)
            out.append(item)


def actively_waived(finding: Mapping[str, Any]) -> bool:
    """Waived by a waiver that has not expired."""
    waiver = finding.get("waiver")
    if isinstance(waiver, Mapping) and waiver.get("expired"):
        return False
    return finding.get("status") == "waived" or isinstance(waiver, Mapping)


def waiver_expired(finding: Mapping[str, Any]) -> bool:
    """Matched by a waiver whose expiry date has passed: the finding counts again."""
    waiver = finding.get("waiver")
    return isinstance(waiver, Mapping) and bool(waiver.get("expired"))


def diff_findings(
    before: Iterable[dict[str, Any]],
    after: Iterable[dict[str, Any]],
    index: ChangeIndex,
    skip: Collection[str] = (),
) -> dict[str, list[FindingDiff]]:
    """Sort the findings of two runs into the five categories, each with its explanation.

    ``before`` is read once, as a stream: only its resolved findings are kept (and, for the others,
    whether a waiver was active), so the older run never has to be held in memory as a whole. The
    finding dicts are kept as they are (not copied): the result refers to them.

    A finding of a cluster in ``skip`` (one that a run holds without all its columns) that only one
    run has is left out: its absence from the other run says nothing. So is, when any cluster is
    left out, a finding about the whole snapshot (no cluster id) that only one run has: its group
    may span the clusters left out, whose absence can make a group pass or fail. One both runs
    have is sorted as usual.
    """
    skip = frozenset(skip)
    new = {str(f["fingerprint"]): f for f in after}
    out: dict[str, list[FindingDiff]] = {name: [] for name in FINDING_CATEGORIES}
    waived_before: dict[str, bool] = {}  # fingerprint in both runs -> actively waived in the older
    for finding in before:
        fingerprint = str(finding["fingerprint"])
        if fingerprint in new:
            waived_before[fingerprint] = actively_waived(finding)
        elif not _left_out(finding, skip):
            out["resolved"].append(FindingDiff("resolved", finding, index.explain(finding)))
    for fingerprint, finding in new.items():
        previous = waived_before.get(fingerprint)  # None: not in the older run
        if previous is None and _left_out(finding, skip):
            continue
        if actively_waived(finding) and not previous:
            explained = index.explain(finding) if previous is None else []
            out["newly_waived"].append(
                FindingDiff(
                    "newly_waived", finding, [*explained, waiver_explanation(finding, "waiver_added")]
                )
            )
        elif previous is None:
            out["new"].append(FindingDiff("new", finding, index.explain(finding)))
        elif waiver_expired(finding) and previous:
            out["waiver_expired"].append(
                FindingDiff("waiver_expired", finding, [waiver_explanation(finding, "waiver_expired")])
            )
        else:
            out["open"].append(FindingDiff("open", finding, []))
    for items in out.values():
        items.sort(key=FindingDiff.sort_key)
    return out


def _left_out(finding: Mapping[str, Any], skip: frozenset[str]) -> bool:
    """Whether a finding that only one run has is left out of a diff that leaves ``skip`` out."""
    if not skip:
        return False
    cluster_id = finding.get("cluster_id")
    return cluster_id is None or cluster_id in skip


def waiver_explanation(finding: Mapping[str, Any], kind: str) -> Explanation:
    """The ``waiver_added`` / ``waiver_expired`` entry of a finding's explanation."""
    waiver = finding.get("waiver") if isinstance(finding.get("waiver"), Mapping) else {}
    assert isinstance(waiver, Mapping)
    owner, expires, reason = waiver.get("owner"), waiver.get("expires"), waiver.get("reason")
    if kind == "waiver_added":
        text = (
            f"waived by {owner or 'an unnamed owner'} through {expires or 'no date'}: {reason or 'no reason'}"
        )
    else:
        through = expires or "an unknown date"
        text = f"the waiver by {owner or 'an unnamed owner'}, valid through {through}, expired"
    return Explanation(
        kind,
        finding.get("cluster_id"),
        finding.get("column"),
        "waiver",
        None if kind == "waiver_added" else expires,
        expires if kind == "waiver_added" else None,
        text,
    )
