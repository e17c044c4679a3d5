"""The diff's result types and their JSON contract.

A :class:`DiffResult` is what :func:`auditor.diff.compute_diff` returns and what every output format
(text, markdown, JSON, the HTML report) reads. ``DiffResult.to_json()`` is the contract other tools
consume; its shape is documented in ``docs/diff.md`` and pinned by ``tests/diff``. Everything in it is
sorted deterministically, so two diffs of the same runs serialise to the same bytes.

A *change* of one field is always ``{"before": ..., "after": ...}``. Tags and attributes carry, next
to their before/after lists, the itemised ``added``/``removed``/``changed`` entries that a reviewer
actually reads. Every atomic change can also describe itself as an :class:`Explanation`, the object a
finding links to when that change explains why it appeared or went away.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

SEVERITY_ORDER = {"critical": 5, "high": 4, "medium": 3, "low": 2, "info": 1}

FINDING_CATEGORIES = ("new", "resolved", "open", "newly_waived", "waiver_expired")

# The order in which a column's and a cluster's fields are reported (and explain findings).
COLUMN_FIELDS = (
    "columnName",
    "tableName",
    "source",
    "dataType",
    "isPrimary",
    "businessAttribute",
    "tags",
    "attributes",
    "rank",
    "confidence",
)
CLUSTER_FIELDS = ("name", "labels", "severity", "status", "size")


@dataclass(frozen=True)
class Explanation:
    """One atomic catalog change, as a finding's explanation refers to it.

    ``kind`` is one of ``cluster_added``, ``cluster_removed``, ``cluster_changed``, ``column_added``,
    ``column_removed``, ``column_changed``, ``column_moved``, ``waiver_added``, ``waiver_expired``.
    ``field`` names what changed (``labels``, ``severity``, ``tags.sensitivity``, ``rank.SSN``,
    ``cluster`` for a move); ``before``/``after`` are that field's atomic values.
    """

    kind: str
    cluster_id: str | None
    column: str | None
    field: str | None
    before: Any
    after: Any
    text: str

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "cluster_id": self.cluster_id,
            "column": self.column,
            "field": self.field,
            "before": self.before,
            "after": self.after,
            "text": self.text,
        }


@dataclass
class ClusterEntry:
    """A cluster added or removed: its fields as the run holding it saw them."""

    cluster_id: str
    name: str | None
    size: int | None
    severity: str | None
    status: str | None
    labels: list[str]

    def to_json(self) -> dict[str, Any]:
        return {
            "cluster_id": self.cluster_id,
            "name": self.name,
            "size": self.size,
            "severity": self.severity,
            "status": self.status,
            "labels": list(self.labels),
        }

    def explanations(self, kind: str) -> list[Explanation]:
        verb = "added" if kind == "cluster_added" else "removed"
        return [
            Explanation(kind, self.cluster_id, None, None, None, None, f"cluster {_q(self.name)} was {verb}")
        ]


@dataclass
class ClusterChange:
    """A cluster present in both runs whose compared fields differ."""

    cluster_id: str
    name: str | None  # the name in the newer run
    changes: dict[str, dict[str, Any]]

    def to_json(self) -> dict[str, Any]:
        return {"cluster_id": self.cluster_id, "changes": _ordered(self.changes)}

    def explanations(self) -> list[Explanation]:
        out: list[Explanation] = []
        for name in CLUSTER_FIELDS:
            change = self.changes.get(name)
            if change is None:
                continue
            if name == "labels":
                for label in change["removed"]:
                    out.append(
                        Explanation(
                            "cluster_changed",
                            self.cluster_id,
                            None,
                            "labels",
                            label,
                            None,
                            f"label {_q(label)} removed from cluster {_q(self.name)}",
                        )
                    )
                for label in change["added"]:
                    out.append(
                        Explanation(
                            "cluster_changed",
                            self.cluster_id,
                            None,
                            "labels",
                            None,
                            label,
                            f"label {_q(label)} added to cluster {_q(self.name)}",
                        )
                    )
                continue
            out.append(
                Explanation(
                    "cluster_changed",
                    self.cluster_id,
                    None,
                    name,
                    change["before"],
                    change["after"],
                    f"cluster {_q(self.name)} {name} changed from {_q(change['before'])} "
                    f"to {_q(change['after'])}",
                )
            )
        return out


@dataclass
class ColumnEntry:
    """A column added or removed, with its fields, tags and attributes."""

    cluster_id: str
    column: str
    fields: dict[str, Any]
    tags: list[dict[str, Any]]
    attributes: list[dict[str, Any]]

    def to_json(self) -> dict[str, Any]:
        return {
            "cluster_id": self.cluster_id,
            "column": self.column,
            **self.fields,
            "tags": list(self.tags),
            "attributes": list(self.attributes),
        }

    def explanations(self, kind: str) -> list[Explanation]:
        verb = "added to" if kind == "column_added" else "removed from"
        return [
            Explanation(
                kind,
                self.cluster_id,
                self.column,
                None,
                None,
                None,
                f"column {self.column} {verb} cluster {self.cluster_id}",
            )
        ]


@dataclass
class ColumnChange:
    """A column present under the same cluster in both runs whose compared fields differ."""

    cluster_id: str
    column: str
    changes: dict[str, dict[str, Any]]

    def to_json(self) -> dict[str, Any]:
        return {"cluster_id": self.cluster_id, "column": self.column, "changes": _ordered(self.changes)}

    def explanations(self, kind: str = "column_changed") -> list[Explanation]:
        return column_change_explanations(kind, self.cluster_id, self.column, self.changes)


@dataclass
class ColumnMove:
    """A fullyQualifiedName that left one cluster and appeared in another: one move.

    When the column's content also changed as it moved, that change is reported separately in
    ``columns.changed`` under the new cluster (and :attr:`changes` holds it here too, for explanations).
    """

    column: str
    from_cluster: str
    to_cluster: str
    changes: dict[str, dict[str, Any]] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"column": self.column, "from_cluster": self.from_cluster, "to_cluster": self.to_cluster}

    def explanations(self) -> list[Explanation]:
        move = Explanation(
            "column_moved",
            self.to_cluster,
            self.column,
            "cluster",
            self.from_cluster,
            self.to_cluster,
            f"column {self.column} moved from cluster {self.from_cluster} to cluster {self.to_cluster}",
        )
        return [
            move,
            *column_change_explanations("column_changed", self.to_cluster, self.column, self.changes),
        ]


def column_change_explanations(
    kind: str, cluster_id: str, column: str, changes: dict[str, dict[str, Any]]
) -> list[Explanation]:
    """Atomic explanations for a column's field changes, in reporting order."""
    out: list[Explanation] = []
    for name in COLUMN_FIELDS:
        change = changes.get(name)
        if change is None:
            continue
        if name == "tags":
            for tag in change["removed"]:
                out.append(
                    Explanation(
                        kind,
                        cluster_id,
                        column,
                        f"tags.{tag['tagName']}",
                        tag["tagValue"],
                        None,
                        f"tag {tag['tagName']}={_q(tag['tagValue'])} removed from column {column}",
                    )
                )
            for tag in change["added"]:
                out.append(
                    Explanation(
                        kind,
                        cluster_id,
                        column,
                        f"tags.{tag['tagName']}",
                        None,
                        tag["tagValue"],
                        f"tag {tag['tagName']}={_q(tag['tagValue'])} added to column {column}",
                    )
                )
            for tag in change["changed"]:
                out.append(
                    Explanation(
                        kind,
                        cluster_id,
                        column,
                        f"tags.{tag['tagName']}",
                        tag["before"],
                        tag["after"],
                        f"tag {tag['tagName']} of column {column} changed from {_q(tag['before'])} "
                        f"to {_q(tag['after'])}",
                    )
                )
        elif name == "attributes":
            for attribute in change["removed"]:
                out.append(
                    Explanation(
                        kind,
                        cluster_id,
                        column,
                        "attributes",
                        attribute["name"],
                        None,
                        f"attribute {_q(attribute['name'])} removed from column {column}",
                    )
                )
            for attribute in change["added"]:
                out.append(
                    Explanation(
                        kind,
                        cluster_id,
                        column,
                        "attributes",
                        None,
                        attribute["name"],
                        f"attribute {_q(attribute['name'])} added to column {column}",
                    )
                )
        elif name in ("rank", "confidence"):
            for attribute in sorted(set(change["before"]) | set(change["after"])):
                before, after = change["before"].get(attribute), change["after"].get(attribute)
                out.append(
                    Explanation(
                        kind,
                        cluster_id,
                        column,
                        f"{name}.{attribute}",
                        before,
                        after,
                        f"{name} of attribute {_q(attribute)} on column {column} changed from "
                        f"{_q(before)} to {_q(after)}",
                    )
                )
        else:
            out.append(
                Explanation(
                    kind,
                    cluster_id,
                    column,
                    name,
                    change["before"],
                    change["after"],
                    f"{name} of column {column} changed from {_q(change['before'])} to {_q(change['after'])}",
                )
            )
    return out


@dataclass
class CatalogDiff:
    """The metadata half of a diff: clusters and columns."""

    clusters_added: list[ClusterEntry] = field(default_factory=list)
    clusters_removed: list[ClusterEntry] = field(default_factory=list)
    clusters_changed: list[ClusterChange] = field(default_factory=list)
    columns_added: list[ColumnEntry] = field(default_factory=list)
    columns_removed: list[ColumnEntry] = field(default_factory=list)
    columns_changed: list[ColumnChange] = field(default_factory=list)
    columns_moved: list[ColumnMove] = field(default_factory=list)

    def sort(self) -> None:
        self.clusters_added.sort(key=lambda c: c.cluster_id)
        self.clusters_removed.sort(key=lambda c: c.cluster_id)
        self.clusters_changed.sort(key=lambda c: c.cluster_id)
        self.columns_added.sort(key=lambda c: (c.cluster_id, c.column))
        self.columns_removed.sort(key=lambda c: (c.cluster_id, c.column))
        self.columns_changed.sort(key=lambda c: (c.cluster_id, c.column))
        self.columns_moved.sort(key=lambda m: (m.column, m.from_cluster, m.to_cluster))

    @property
    def empty(self) -> bool:
        return not any(
            (
                self.clusters_added,
                self.clusters_removed,
                self.clusters_changed,
                self.columns_added,
                self.columns_removed,
                self.columns_changed,
                self.columns_moved,
            )
        )


SKIPPED = "skipped"  # a NotCompared status: the run was asked to leave the cluster out (--skip-cluster)


@dataclass(frozen=True)
class NotCompared:
    """A cluster left out of the diff: a run holds it without all its columns, or left it out.

    ``before``/``after`` are its ``fetch_status`` in the older and the newer run (``complete``,
    ``short``, ``failed`` or ``fetching``; ``None`` when the run does not hold it), or
    :data:`SKIPPED` for a run asked to leave it out; at least one is not ``complete``.
    """

    cluster_id: str
    before: str | None
    after: str | None

    def to_json(self) -> dict[str, Any]:
        return {"cluster_id": self.cluster_id, "from": self.before, "to": self.after}


NOTE_IDS = 10  # cluster ids a not-compared note lists per run before "… and N more"


def not_compared_note(entries: Sequence[dict[str, Any]], from_run: Any, to_run: Any) -> str | None:
    """The sentence saying which clusters a diff left out, from its ``not_compared`` JSON entries.

    ``2 clusters were not compared: not fetched in full in run 7 (k5, k7)``; ``None`` when the
    diff left nothing out. Clusters partial in the older run, in the newer run and in both are
    named in that order, at most :data:`NOTE_IDS` ids each; then those a run left out on purpose
    (``left out of run 7 by --skip-cluster (k9)``).
    """
    if not entries:
        return None
    groups: dict[tuple[bool, str], list[str]] = {}
    for entry in entries:
        before, after = entry.get("from"), entry.get("to")
        skipped = SKIPPED in (before, after)
        if skipped:
            older, newer = before == SKIPPED, after == SKIPPED
        else:
            older, newer = before not in (None, "complete"), after not in (None, "complete")
        where = f"runs {from_run} and {to_run}" if older and newer else f"run {from_run if older else to_run}"
        groups.setdefault((skipped, where), []).append(str(entry.get("cluster_id")))
    order = [f"run {from_run}", f"run {to_run}", f"runs {from_run} and {to_run}"]
    parts = []
    for skipped, where in sorted(groups, key=lambda g: (g[0], order.index(g[1]) if g[1] in order else 3)):
        ids = groups[(skipped, where)]
        listed = ", ".join(ids[:NOTE_IDS])
        if len(ids) > NOTE_IDS:
            listed += f" … and {len(ids) - NOTE_IDS} more"
        reason = f"left out of {where} by --skip-cluster" if skipped else f"not fetched in full in {where}"
        parts.append(f"{reason} ({listed})")
    count = len(entries)
    verb = "cluster was" if count == 1 else "clusters were"
    return f"{count:,} {verb} not compared: " + "; ".join(parts)


@dataclass
class FindingDiff:
    """One finding in one of the five categories, with the changes that explain it."""

    category: str
    finding: dict[str, Any]  # the ``auditor check --format json`` shape
    explanation: list[Explanation] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {**self.finding, "explanation": [e.to_json() for e in self.explanation]}

    def sort_key(self) -> tuple[Any, ...]:
        f = self.finding
        return (
            -SEVERITY_ORDER.get(str(f.get("severity", "")).lower(), 0),
            f.get("rule") or "",
            f.get("cluster_id") or "",
            f.get("column") or "",
            f.get("fingerprint") or "",
        )


@dataclass
class DiffResult:
    """Everything that changed between two runs: catalog metadata and findings."""

    from_run: int
    to_run: int
    catalog: CatalogDiff
    findings: dict[str, Sequence[FindingDiff]]  # "open" may be streamed from the database
    confidence_threshold: float = 0.05
    from_started_at: str | None = None
    to_started_at: str | None = None
    # Clusters left out because a run holds them without all their columns (sorted by id).
    not_compared: list[NotCompared] = field(default_factory=list)
    # The two runs were taken from other sources or with other cluster filters (scope_note).
    scope_note: str | None = None
    # False for a catalog-only diff (--no-findings): its finding counts are not zeros to read.
    findings_compared: bool = True

    @classmethod
    def without_baseline(cls, run_id: int, *, asked: bool = False) -> DiffResult:
        """The diff document of a run that has no earlier complete run to compare with (or, with
        ``asked``, was compared with none on request): the same keys as any diff (every list
        empty, ``from_run`` null, findings not compared), so that a consumer of the contract reads
        a first run like any other."""
        return cls(
            from_run=None,  # type: ignore[arg-type]
            to_run=run_id,
            catalog=CatalogDiff(),
            findings={},
            scope_note=f"run {run_id} was not compared with an earlier run (none was asked for)"
            if asked
            else f"there is no earlier complete run to compare run {run_id} with",
            findings_compared=False,
        )

    def summary(self) -> dict[str, Any]:
        c = self.catalog
        return {
            "clusters": {
                "added": len(c.clusters_added),
                "removed": len(c.clusters_removed),
                "changed": len(c.clusters_changed),
            },
            "columns": {
                "added": len(c.columns_added),
                "removed": len(c.columns_removed),
                "changed": len(c.columns_changed),
                "moved": len(c.columns_moved),
            },
            "findings": {name: len(self.findings.get(name, [])) for name in FINDING_CATEGORIES},
            "not_compared": len(self.not_compared),
        }

    def not_compared_note(self) -> str | None:
        """``N clusters were not compared: …`` (see :func:`not_compared_note`), or ``None``."""
        return not_compared_note([entry.to_json() for entry in self.not_compared], self.from_run, self.to_run)

    @property
    def empty(self) -> bool:
        """No catalog change and no finding that appeared, went away or changed waiver state."""
        return self.catalog.empty and not any(
            self.findings.get(name) for name in FINDING_CATEGORIES if name != "open"
        )

    def to_json(self, *, open_findings: bool = True) -> dict[str, Any]:
        """The JSON contract. ``open_findings=False`` leaves the ``open`` list empty (its count stays
        in the summary): the HTML report shows only the findings that changed, and the still-open
        ones can be hundreds of thousands."""
        c = self.catalog
        return {
            "from_run": self.from_run,
            "to_run": self.to_run,
            "summary": self.summary(),
            "clusters": {
                "added": [e.to_json() for e in c.clusters_added],
                "removed": [e.to_json() for e in c.clusters_removed],
                "changed": [e.to_json() for e in c.clusters_changed],
            },
            "columns": {
                "added": [e.to_json() for e in c.columns_added],
                "removed": [e.to_json() for e in c.columns_removed],
                "changed": [e.to_json() for e in c.columns_changed],
                "moved": [e.to_json() for e in c.columns_moved],
            },
            "findings": {
                name: [f.to_json() for f in self.findings.get(name, [])]
                if open_findings or name != "open"
                else []
                for name in FINDING_CATEGORIES
            },
            # Last, so the keys before keep their places: the clusters left out above, and
            # whether the two runs were taken alike (null when they were).
            "not_compared": [entry.to_json() for entry in self.not_compared],
            "scope_note": self.scope_note,
            # false for --no-findings: the finding counts above are then not zeros to read
            "findings_compared": self.findings_compared,
        }


def _ordered(changes: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    order = {name: i for i, name in enumerate((*COLUMN_FIELDS, *CLUSTER_FIELDS))}
    return {name: changes[name] for name in sorted(changes, key=lambda n: (order.get(n, 99), n))}


def _q(value: Any) -> str:
    """A value as it reads in a sentence: strings quoted, absent values as 'nothing'."""
    if value is None:
        return "nothing"
    if isinstance(value, str):
        return f"'{value}'"
    return str(value)
