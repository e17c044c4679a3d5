"""The sandbox's ground truth: a deterministic, lazily generated BigID catalog with drift by epoch.

Every record is a pure function of ``(seed, epoch, cluster slot, column slot)``. Nothing proportional
to the number of columns is ever held in memory: a page of columns is generated on demand from its
position. What *is* held, per :class:`Dataset`, is small:

* the base size of every cluster slot (one integer per cluster), and
* the drift log: what changed at each epoch ``1..epoch`` (clusters added, removed and relabelled;
  columns added, removed, retagged and moved between clusters). It holds about 1% of the records per
  epoch, and nothing at epoch 0.

Layout. Cluster *slots* ``0..clusters-1`` exist at epoch 0; each epoch appends a few new slots. A
cluster's id is a Mongo-style 24-hex ObjectId whose last 6 hex digits are the slot, so an id maps back
to its slot in O(1) (see :func:`Dataset.slot_of`). Inside a cluster, column *slots* ``0..n-1`` are its
own columns (new ones appended by drift); the columns served are those slots that were neither removed
nor moved away, in slot order, followed by the columns moved in from other clusters, in the order they
arrived. Column content depends only on the owning cluster slot, the column slot and the number of
times its tags changed, so a column moved to another cluster keeps its ``fullyQualifiedName``.

Column and cluster dicts are exactly what the server serves (field aliases included when
``config.aliases`` is on); faults never change them.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

from auditor.sandbox import catalog as cat
from auditor.sandbox.config import SandboxConfig

_M64 = 0xFFFFFFFFFFFFFFFF
_TWO53 = float(1 << 53)

# Salts that separate the independent random streams.
(
    K_SIZE,
    K_THEME,
    K_CLUSTER,
    K_COLUMN,
    K_RM_CLUSTER,
    K_LABEL,
    K_RM_COL,
    K_ADD_COL,
    K_TAG_COL,
    K_MOVE,
    K_MOVE_DST,
    K_ADDED_SIZE,
    K_ID,
    K_SAMPLE,
    K_STOCH,
) = range(1, 16)

# Drift rates per epoch (fractions of the records alive at the previous epoch).
RATE_CLUSTER_REMOVE = 0.005
RATE_CLUSTER_ADD = 0.005
RATE_CLUSTER_RELABEL = 0.01
RATE_COLUMN_REMOVE = 0.003
RATE_COLUMN_ADD = 0.003
RATE_COLUMN_RETAG = 0.003
RATE_COLUMN_MOVE = 0.002

BASE_TIME = 1_672_531_200  # 2023-01-01T00:00:00Z: clusters of epoch 0 were created after it
CREATION_SPAN = 900 * 86_400
DRIFT_TIME = 1_756_684_800  # 2025-09-01T00:00:00Z: clusters added by epoch k were created k days later


def mix(a: int, b: int = 0, c: int = 0, d: int = 0, e: int = 0) -> int:
    """A 64-bit hash of up to five integers (splitmix64 finalisers); fast and well spread."""
    h = (a * 0x9E3779B97F4A7C15 + b) & _M64
    h = ((h ^ (h >> 30)) * 0xBF58476D1CE4E5B9 + c) & _M64
    h = ((h ^ (h >> 27)) * 0x94D049BB133111EB + d) & _M64
    h = ((h ^ (h >> 31)) * 0x9E3779B97F4A7C15 + e) & _M64
    h = ((h ^ (h >> 30)) * 0xBF58476D1CE4E5B9) & _M64
    return h ^ (h >> 31)


def unit(h: int) -> float:
    """A float in [0, 1) from a hash."""
    return (h >> 11) / _TWO53


def _iso(seconds: int, millis: int) -> str:
    return datetime.fromtimestamp(seconds, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S") + f".{millis:03d}Z"


def _uuid(h1: int, h2: int) -> str:
    x = f"{h1:016x}{h2:016x}"
    return f"{x[:8]}-{x[8:12]}-4{x[13:16]}-a{x[17:20]}-{x[20:32]}"


@dataclass
class ClusterDrift:
    """What drift did to one cluster slot up to the dataset's epoch."""

    slots: int  # column slots ever allocated (base + added)
    gone: list[int] = field(default_factory=list)  # sorted column slots removed or moved away
    retagged: dict[int, int] = field(default_factory=dict)  # column slot -> number of tag changes
    moved_in: list[tuple[int, int, int]] = field(
        default_factory=list
    )  # (from slot, column slot, tag version)
    relabels: int = 0

    @property
    def size(self) -> int:
        return self.slots - len(self.gone) + len(self.moved_in)


class _ClusterInfo:
    """Per-cluster constants used for every column of the cluster (computed once, cached)."""

    __slots__ = (
        "awkward_offset",
        "instance",
        "slot",
        "sources",
        "src_count",
        "theme",
        "var_count",
        "variants",
    )

    def __init__(self, seed: int, slot: int) -> None:
        h = mix(seed, K_THEME, slot)
        self.slot = slot
        themes = cat.THEMES
        # Themes are dealt round-robin from a seed-dependent start, so each appears about equally
        # often; the n-th cluster of a theme is its instance n, whose sources carry a distinct suffix.
        start = mix(seed, K_THEME) % len(themes)
        self.theme = themes[(start + slot) % len(themes)]
        self.instance = slot // len(themes)
        suffix = _instance_suffix(self.instance)
        rot = (h >> 16) % len(self.theme.sources)
        srcs = self.theme.sources[rot:] + self.theme.sources[:rot]
        count = 1 + (h >> 24) % len(srcs)
        self.sources = tuple((cat.SOURCES[name]._replace(name=name + suffix)) for name in srcs[:count])
        vrot = (h >> 32) % len(self.theme.variants)
        self.variants = self.theme.variants[vrot:] + self.theme.variants[:vrot]
        self.var_count = 1 + (h >> 40) % len(self.variants)
        self.src_count = len(self.sources)
        self.awkward_offset = (h >> 48) % 37


def _instance_suffix(instance: int) -> str:
    if instance == 0:
        return ""
    if instance < len(cat.INSTANCE_SUFFIXES):
        return cat.INSTANCE_SUFFIXES[instance]
    return f"-{instance:04d}"


class Dataset:
    """The ground truth for one :class:`SandboxConfig`.

    Only ``seed``, ``epoch``, ``clusters`` and ``columns`` decide the data; ``aliases`` and
    ``string_counts`` decide how records are spelled (``Dataset`` returns them exactly as served);
    fault, auth and envelope knobs never change them. Thread-safe.
    """

    def __init__(self, config: SandboxConfig | None = None, **knobs: Any) -> None:
        if config is None:
            config = SandboxConfig(**knobs)
        elif knobs:
            config = config.with_changes(**knobs)
        self.config = config
        self.seed = config.seed
        self.epoch = config.epoch
        self.aliases = config.aliases
        self._adds_per_epoch = max(1, round(config.clusters * RATE_CLUSTER_ADD))
        self._base_sizes = self._compute_base_sizes()
        self._drift_built = False
        self._drift_lock = threading.Lock()
        self._removed_at: dict[int, int] = {}
        self._drift: dict[int, ClusterDrift] = {}
        self._info = lru_cache(maxsize=4096)(self._make_info)

    # -- cluster slots ---------------------------------------------------------------------------

    def _compute_base_sizes(self) -> list[int]:
        """Split ``columns`` over ``clusters`` with a skewed (Pareto-like) distribution, each >= 1."""
        n, total = self.config.clusters, self.config.columns
        weights = [unit(mix(self.seed, K_SIZE, i)) ** 2.2 + 0.02 for i in range(n)]
        spare = total - n
        scale = spare / sum(weights)
        sizes = [1 + int(w * scale) for w in weights]
        remainder = total - sum(sizes)
        if remainder:
            order = sorted(range(n), key=lambda i: (weights[i] * scale) % 1.0, reverse=True)
            for i in order[:remainder]:
                sizes[i] += 1
        return sizes

    def slots_at(self, epoch: int) -> int:
        """How many cluster slots exist (alive or removed) at ``epoch``."""
        return self.config.clusters + self._adds_per_epoch * epoch

    def created_epoch(self, slot: int) -> int:
        if slot < self.config.clusters:
            return 0
        return 1 + (slot - self.config.clusters) // self._adds_per_epoch

    def base_size(self, slot: int) -> int:
        if slot < self.config.clusters:
            return self._base_sizes[slot]
        avg = self.config.columns / self.config.clusters
        return max(2, round(avg * (0.4 + 1.2 * unit(mix(self.seed, K_ADDED_SIZE, slot)))))

    def _make_info(self, slot: int) -> _ClusterInfo:
        return _ClusterInfo(self.seed, slot)

    def cluster_id(self, slot: int) -> str:
        """A Mongo-style ObjectId: creation time, 5 random bytes, and the slot as the counter."""
        created, _ = self._created(slot)
        rnd = mix(self.seed, K_ID, slot) & 0xFFFFFFFFFF
        return f"{created & 0xFFFFFFFF:08x}{rnd:010x}{slot:06x}"

    def slot_of(self, cluster_id: str) -> int | None:
        """The slot of a well-formed id if such a cluster exists at this epoch, else None."""
        slot = int(cluster_id[-6:], 16)
        if slot >= self.slots_at(self.epoch) or self.cluster_id(slot) != cluster_id.lower():
            return None
        return slot if self.exists(slot) else None

    def _created(self, slot: int) -> tuple[int, int]:
        h = mix(self.seed, K_CLUSTER, slot, 7)
        created_epoch = self.created_epoch(slot)
        if created_epoch == 0:
            return BASE_TIME + h % CREATION_SPAN, (h >> 40) % 1000
        return DRIFT_TIME + created_epoch * 86_400 + h % 86_400, (h >> 40) % 1000

    # -- drift -----------------------------------------------------------------------------------

    def _pick(self, kind: int, epoch: int, index: int, modulus: int, salt: int = 0) -> int:
        return mix(self.seed, kind, epoch, index, salt) % modulus

    def _pick_alive(
        self, kind: int, epoch: int, index: int, modulus: int, removed: dict[int, int]
    ) -> int | None:
        """A slot below ``modulus`` not yet removed (a few draws, then give up)."""
        for attempt in range(16):
            slot = self._pick(kind, epoch, index, modulus, attempt)
            if slot not in removed:
                return slot
        return None

    def _stoch(self, expected: float, *salt: int) -> int:
        """Round ``expected`` up or down at random (so small clusters drift too, on average)."""
        whole = math.floor(expected)
        return whole + (1 if unit(mix(self.seed, K_STOCH, *salt)) < expected - whole else 0)

    def _ensure_drift(self) -> None:
        if self._drift_built:
            return
        with self._drift_lock:  # the first requests may arrive on several threads at once
            if not self._drift_built:
                self._build_drift()

    def _build_drift(self) -> None:
        removed_at: dict[int, int] = {}
        drift: dict[int, ClusterDrift] = {}
        gone_sets: dict[int, set[int]] = {}

        def state(slot: int) -> ClusterDrift:
            entry = drift.get(slot)
            if entry is None:
                entry = drift[slot] = ClusterDrift(slots=self.base_size(slot))
            return entry

        for k in range(1, self.epoch + 1):
            before = self.slots_at(k - 1)
            alive = before - sum(1 for v in removed_at.values() if v < k)
            # clusters removed at k (chosen among the slots existing at k-1)
            for t in range(max(1, round(alive * RATE_CLUSTER_REMOVE))):
                slot = self._pick_alive(K_RM_CLUSTER, k, t, before, removed_at)
                if slot is not None and alive > 1:
                    removed_at[slot] = k
                    alive -= 1
            # clusters relabelled at k
            for t in range(max(1, round(alive * RATE_CLUSTER_RELABEL))):
                slot = self._pick_alive(K_LABEL, k, t, before, removed_at)
                if slot is not None:
                    state(slot).relabels += 1
            now = self.slots_at(k)
            # column changes in every cluster alive at k (added clusters start fresh)
            for slot in range(before):
                if slot in removed_at:
                    continue
                entry = drift.get(slot)
                slots = entry.slots if entry else self.base_size(slot)
                gone = gone_sets.get(slot, ())
                alive_cols = slots - len(gone)
                for t in range(self._stoch(alive_cols * RATE_COLUMN_REMOVE, K_RM_COL, k, slot)):
                    j = self._pick(K_RM_COL, k, slot, slots, t)
                    if j not in gone:
                        gone = gone_sets.setdefault(slot, set())
                        gone.add(j)
                        state(slot)
                for t in range(self._stoch(alive_cols * RATE_COLUMN_RETAG, K_TAG_COL, k, slot)):
                    j = self._pick(K_TAG_COL, k, slot, slots, t)
                    if j not in gone:
                        retagged = state(slot).retagged
                        retagged[j] = retagged.get(j, 0) + 1
                for t in range(self._stoch(alive_cols * RATE_COLUMN_MOVE, K_MOVE, k, slot)):
                    j = self._pick(K_MOVE, k, slot, slots, t)
                    dst = self._pick(K_MOVE_DST, k, slot, now, t)
                    if j in gone or dst == slot or dst in removed_at:
                        continue
                    gone = gone_sets.setdefault(slot, set())
                    gone.add(j)
                    src_state = state(slot)
                    state(dst).moved_in.append((slot, j, src_state.retagged.get(j, 0)))
                added = self._stoch(alive_cols * RATE_COLUMN_ADD, K_ADD_COL, k, slot)
                if added:
                    state(slot).slots += added
        for slot, gone in gone_sets.items():
            drift[slot].gone = sorted(gone)
        self._removed_at = removed_at
        self._drift = drift
        self._drift_built = True

    def exists(self, slot: int, epoch: int | None = None) -> bool:
        epoch = self.epoch if epoch is None else epoch
        if slot >= self.slots_at(epoch):
            return False
        self._ensure_drift()
        removed = self._removed_at.get(slot)
        return removed is None or removed > epoch

    def drift_of(self, slot: int) -> ClusterDrift:
        self._ensure_drift()
        entry = self._drift.get(slot)
        return entry if entry is not None else ClusterDrift(slots=self.base_size(slot))

    # -- clusters --------------------------------------------------------------------------------

    def cluster_slots(self) -> Iterator[int]:
        """Slots of the clusters alive at this epoch, in served order."""
        self._ensure_drift()
        removed = self._removed_at
        for slot in range(self.slots_at(self.epoch)):
            if slot not in removed:
                yield slot

    def cluster_count(self) -> int:
        self._ensure_drift()
        return self.slots_at(self.epoch) - len(self._removed_at)

    def cluster_size(self, slot: int) -> int:
        return self.drift_of(slot).size

    def column_count(self) -> int:
        return sum(self.cluster_size(slot) for slot in self.cluster_slots())

    def clusters(self) -> Iterator[dict[str, Any]]:
        """Every cluster record, exactly as served, in served order."""
        for slot in self.cluster_slots():
            yield self.cluster_record(slot)

    def cluster_ids(self) -> Iterator[str]:
        for slot in self.cluster_slots():
            yield self.cluster_id(slot)

    def cluster(self, cluster_id: str) -> dict[str, Any]:
        slot = self.slot_of(cluster_id)
        if slot is None:
            raise KeyError(cluster_id)
        return self.cluster_record(slot)

    def cluster_record(self, slot: int) -> dict[str, Any]:
        info = self._info(slot)
        theme = info.theme
        h = mix(self.seed, K_CLUSTER, slot)
        drift = self.drift_of(slot)
        u_conf, u_sev, u_stat = unit(h), unit(mix(h, 1)), unit(mix(h, 2))
        labels: list[str] = []
        if theme.pii:
            labels.append("PII")
            if u_conf < 0.7:
                labels.append("Confidential")
            severity = (
                "Low"
                if u_sev < 0.12
                else "Medium"
                if u_sev < 0.35
                else "High"
                if u_sev < 0.85
                else "Critical"
            )
        else:
            severity = "Low" if u_sev < 0.6 else "Medium" if u_sev < 0.95 else "High"
        labels.extend(theme.labels[: 1 + (h >> 20) % len(theme.labels)])
        status = "Archived" if u_stat < 0.12 else "Active"
        for r in range(drift.relabels):
            # Each relabel toggles Confidential, and every other one also moves the severity/status.
            if "Confidential" in labels:
                labels.remove("Confidential")
            else:
                labels.insert(min(1, len(labels)), "Confidential")
            if r % 2 == 1:
                severity = {"Low": "Medium", "Medium": "High", "High": "Critical", "Critical": "Low"}[
                    severity
                ]
                status = "Active" if status == "Archived" else "Archived"
        name = theme.names[(h >> 28) % len(theme.names)] + cat.QUALIFIERS[(h >> 32) % len(cat.QUALIFIERS)]
        created, millis = self._created(slot)
        size: Any = drift.size
        if self.config.string_counts:
            size = str(size)
        record: dict[str, Any] = {
            "id": self.cluster_id(slot),
            "name": name,
            "size": size,
            "labels": labels,
            "severity": severity,
            "status": status,
            "createdAt": _iso(created, millis),
        }
        awkward = (slot * 7 + self.seed) % 41
        if 0 <= awkward < len(cat.AWKWARD_CLUSTER_NAMES):
            record["name"] = cat.AWKWARD_CLUSTER_NAMES[awkward]
        elif awkward == 8 and not drift.relabels:  # a relabelled cluster shows its new labels
            del record["labels"]  # a missing list
        elif awkward == 9:
            if not drift.relabels:
                record["labels"] = None
            record["createdAt"] = None
        elif awkward == 10:
            record["severity"] = None
        elif awkward == 11:
            record["type"] = "structured"  # fields nobody documented
            record["x_review"] = {"owner": None, "lastReviewed": "2025-03-02"}
        if self.aliases:
            record = _alias_cluster(record)
        return record

    # -- columns ---------------------------------------------------------------------------------

    def columns(
        self, cluster_id: str | int, start: int = 0, stop: int | None = None
    ) -> Iterator[dict[str, Any]]:
        """The columns of a cluster (by id or slot) exactly as served, from position ``start``."""
        slot = cluster_id if isinstance(cluster_id, int) else self.slot_of(cluster_id)
        if slot is None:
            raise KeyError(cluster_id)
        drift = self.drift_of(slot)
        size = drift.size
        stop = size if stop is None else min(stop, size)
        own = drift.slots - len(drift.gone)
        position = max(0, start)
        if position < own:
            gone = drift.gone
            # column slot of the first position: skip over the gone slots at or before it
            j = position
            g = 0
            while g < len(gone) and gone[g] <= j:
                j += 1
                g += 1
            while position < min(own, stop):
                while g < len(gone) and gone[g] == j:
                    j += 1
                    g += 1
                yield self.column_record(slot, j, drift.retagged.get(j, 0))
                j += 1
                position += 1
        while position < stop:
            src, j, version = drift.moved_in[position - own]
            yield self.column_record(src, j, version)
            position += 1

    def column_at(self, slot: int, position: int) -> dict[str, Any]:
        return next(self.columns(slot, position, position + 1))

    def column_record(self, slot: int, j: int, version: int = 0) -> dict[str, Any]:
        """Column slot ``j`` of cluster slot ``slot`` after ``version`` tag changes."""
        info = self._info(slot)
        theme = info.theme
        seed = self.seed
        h = mix(seed, K_COLUMN, slot, j)
        # Mixed radix over (variant, source, table): unique per j within the cluster.
        var = info.variants[j % info.var_count]
        rest = j // info.var_count
        source = info.sources[rest % info.src_count]
        rest //= info.src_count
        tables = source.tables
        table = tables[(rest + slot) % len(tables)]
        shard = rest // len(tables)
        schema = source.schemas[((rest + slot) % len(tables)) % len(source.schemas)]
        if shard:
            if source.family == "obj":
                stem, dot, ext = table.rpartition(".")
                table = f"{stem}_{shard:04d}{dot}{ext}" if dot else f"{table}_{shard:04d}"
            else:
                table = f"{table}_{shard}"
        column_name = var
        business = theme.business
        data_type: Any = source.types[theme.logical]
        u_pk = unit(mix(h, 3))
        is_primary: Any = (theme.pk and j % info.var_count == 0 and u_pk < 0.7) or (theme.pii and u_pk < 0.03)
        record: dict[str, Any] = {
            "fullyQualifiedName": "",
            "columnName": column_name,
            "businessAttribute": business,
            "tableName": table,
            "source": source.name,
            "isPrimary": is_primary,
            "dataType": data_type,
            "attributes": self._attributes(theme, h),
            "tags": self._tags(theme, h, version),
        }
        awkward = -1
        if (j + info.awkward_offset) % 37 == 5:
            awkward = (j // 37 + slot) % 12
            _apply_awkward(record, awkward)
        record["fullyQualifiedName"] = (
            f"{record['source']}.{schema}.{record['tableName']}.{record['columnName']}"
        )
        if self.aliases:
            record = _alias_column(record)
        return record

    def _attributes(self, theme: cat.Theme, h: int) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        u = unit(mix(h, 11))
        if theme.attribute and u < (0.92 if theme.pii else 0.5):
            out.append(
                self._attribute(theme.attribute, "IDSoR Attribute" if theme.pii else "Classification", h, 0)
            )
        if theme.secondary and unit(mix(h, 12)) < 0.25:
            out.append(self._attribute(theme.secondary, "Classification", h, 1))
        if theme.pii and theme.attribute and unit(mix(h, 13)) < 0.08:
            out.append(self._attribute(f"classifier.MD::{theme.attribute}", "Classification_MD", h, 2))
        return out

    def _attribute(self, name: str, kind: str, h: int, n: int) -> dict[str, Any]:
        hh = mix(h, 20 + n)
        u = unit(hh)
        rank = "High" if u < 0.6 else "Medium" if u < 0.9 else "Low"
        lo, hi = {"High": (0.75, 1.0), "Medium": (0.5, 0.8), "Low": (0.2, 0.55)}[rank]
        confidence = lo + (hi - lo) * unit(mix(hh, 1))
        return {
            "attribute_original_name": name if kind == "IDSoR Attribute" else f"classifier.{name}",
            "attribute_name": name,
            "rank": rank,
            "calc_confidence_level": confidence,
            "attribute_type": kind,
            "attribute_id": _attribute_id(self.seed, name),
        }

    def _tags(self, theme: cat.Theme, h: int, version: int) -> list[dict[str, Any]]:
        seed = self.seed
        tags: list[dict[str, Any]] = []
        u = unit(mix(h, 30))
        if theme.pii:
            level = 0 if u < 0.8 else 1 if u < 0.95 else -1  # 0 high, 1 medium, 2 low, -1 untagged
        else:
            level = 2 if u < 0.6 else 1 if u < 0.9 else -1
        if version:
            level = (max(level, 0) + version) % 3
        if level >= 0:
            tags.append(_sensitivity_tag(seed, level, mix(h, 31)))
            if unit(mix(h, 32)) < 0.015:  # two values of a mutually exclusive tag
                tags.append(_sensitivity_tag(seed, (level + 2) % 3, mix(h, 33)))
        u2 = unit(mix(h, 34))
        if u2 < 0.3:
            tags.append(
                _tag(
                    seed,
                    "Access Type",
                    "Open Access" if u2 < 0.1 else "Restricted",
                    "true",
                    False,
                    "userDefined",
                )
            )
        u3 = unit(mix(h, 35))
        if u3 < 0.25:
            owner = cat.OWNERS[int(u3 * 1000) % len(cat.OWNERS)]
            if owner:
                tags.append(_tag(seed, "data-owner", owner, "false", False, "userDefined"))
        u4 = unit(mix(h, 36))
        if u4 < 0.2:
            score = str(10 + int(u4 * 450) % 90)
            tags.append(_tag(seed, "system.risk.riskScore", score, "true", True, "risk"))
        return tags

    # -- whole dataset helpers (tests, benchmarks) -----------------------------------------------

    def all_columns(self) -> Iterator[tuple[str, dict[str, Any]]]:
        """(cluster id, column) for every column, streamed."""
        for slot in self.cluster_slots():
            cid = self.cluster_id(slot)
            for column in self.columns(slot):
                yield cid, column


def _apply_awkward(record: dict[str, Any], kind: int) -> None:
    """Turn a row into one of the awkward shapes real catalogs hold (names stay unique)."""
    if kind == 0:
        record["tableName"] += "_données_clés"
        record["businessAttribute"] = "Adresse électronique (clé primaire ñ)"
    elif kind == 1:
        record["tableName"] += "_顧客"
        record["businessAttribute"] = "顧客の電子メール"
    elif kind == 2:
        record["columnName"] += "_📧🔥"
    elif kind == 3:
        record["tableName"] += "_עברית"
        record["businessAttribute"] = "البريد الإلكتروني"
    elif kind == 4:
        record["tableName"] += cat.LONG_SUFFIX
    elif kind == 5:
        record["columnName"] += "<script>alert(1)</script>"
        record["businessAttribute"] = "<script>alert(1)</script>"
    elif kind == 6:
        record["tableName"] += '"><img src=x onerror=alert(1)>'
    elif kind == 7:
        record["columnName"] += "&amp;"
        record["businessAttribute"] = "Terms &amp; Conditions"
    elif kind == 8:
        record["businessAttribute"] = None
        record["dataType"] = None
        record["isPrimary"] = None
    elif kind == 9:
        del record["attributes"]
        record["tags"] = None
    elif kind == 10:
        record["columnProfile"] = {"distinctPct": 0.93, "emptyPct": 0.01, "inferredDataType": "string"}
        record["x_lineage"] = {"upstream": [], "system": None}
    elif kind == 11:
        record["columnName"] += ' "quoted" '
        for tag in record["tags"]:
            tag["isMutuallyExclusive"] = tag["isMutuallyExclusive"] == "true"  # a real boolean


def _alias_cluster(record: dict[str, Any]) -> dict[str, Any]:
    renames = {"id": "clusterId", "name": "clusterName"}
    return {renames.get(k, k): v for k, v in record.items()}


def _alias_column(record: dict[str, Any]) -> dict[str, Any]:
    renames = {"tableName": "objectName", "dataType": "fieldType", "attributes": "attributeDetails"}
    return {renames.get(k, k): v for k, v in record.items()}


@lru_cache(maxsize=1024)
def _attribute_id(seed: int, name: str) -> str:
    h = mix(seed, sum(ord(c) * (i + 1) for i, c in enumerate(name)), len(name))
    return f"{h:016x}{mix(h, 1):016x}"


@lru_cache(maxsize=4096)
def _tag_ids(seed: int, name: str, value: str) -> tuple[str, str]:
    tag_h = mix(seed, 77, sum(ord(c) * (i + 3) for i, c in enumerate(name)), len(name))
    value_h = mix(tag_h, sum(ord(c) * (i + 5) for i, c in enumerate(value.lower())), len(value))
    return _uuid(tag_h, mix(tag_h, 1)), _uuid(value_h, mix(value_h, 1))


_LEVELS = (("high", "High", "HIGH"), ("medium", "Medium", "MEDIUM"), ("low", "Low", "LOW"))


def _sensitivity_tag(seed: int, level: int, h: int) -> dict[str, Any]:
    u = unit(h)
    value = _LEVELS[level][0 if u < 0.7 else 1 if u < 0.9 else 2]
    return _tag(seed, "sensitivity", value, "true", False, "sensitivityClassification")


def _tag(seed: int, name: str, value: str, exclusive: Any, hidden: bool, app: str) -> dict[str, Any]:
    tag_id, value_id = _tag_ids(seed, name, value)
    return {
        "tagId": tag_id,
        "valueId": value_id,
        "isMutuallyExclusive": exclusive,
        "properties": {"hidden": hidden, "applicationType": app},
        "tagName": name,
        "tagValue": value,
    }
