"""A BigID-compatible API for the demo, the tests and new users: no BigID tenant needed.

It serves ``GET /api/v1/clusters``, ``GET /api/v1/data-catalog/column/cluster/similar`` and
``GET /api/v1/refresh-access-token`` exactly as BigID's Cluster Analysis tutorial documents them, from a
deterministic, lazily generated catalog (:class:`Dataset`) that drifts by epoch, with the header forms
and faults of real tenants on demand. ``docs/sandbox.md`` describes every knob.

    from auditor.sandbox import SandboxConfig, SandboxServer, Dataset
    with SandboxServer(SandboxConfig(seed=1, clusters=50, columns=2000)) as server:
        ...  # server.url, server.key, server.stats
    Dataset(SandboxConfig(seed=1)).clusters()  # the ground truth, exactly as served
"""

from __future__ import annotations

from auditor.sandbox.config import SandboxConfig, user_token_for
from auditor.sandbox.data import Dataset
from auditor.sandbox.server import SandboxApp, SandboxServer, ServerStats

__all__ = ["Dataset", "SandboxApp", "SandboxConfig", "SandboxServer", "ServerStats", "user_token_for"]
