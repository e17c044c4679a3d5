"""Helpers for the sandbox tests: a requests session speaking to a started sandbox."""

from __future__ import annotations

from typing import Any

import pytest
import requests

from auditor.sandbox import SandboxServer

CLUSTERS = "/api/v1/clusters"
SIMILAR = "/api/v1/data-catalog/column/cluster/similar"
REFRESH = "/api/v1/refresh-access-token"


class Api:
    """A tiny client for tests: ``api.get(path, token=..., scheme=..., **params)``."""

    def __init__(self, server: SandboxServer) -> None:
        self.server = server
        self.session = requests.Session()

    def headers(self, token: str | None, scheme: str | None) -> dict[str, str]:
        if token is None:
            return {}
        return {"Authorization": f"{scheme} {token}" if scheme else token}

    def get(self, path: str, *, token: str | None = "default", scheme: str | None = "default", **params: Any):
        config = self.server.config
        if token == "default":
            token = config.key
        if scheme == "default":
            scheme = "Bearer" if config.auth == "bearer" else None
        return self.session.get(
            self.server.url + path, params=params, headers=self.headers(token, scheme), timeout=30
        )

    def all_columns(self, cluster_id: str, limit: int = 100, token: str | None = "default") -> list[dict]:
        """Every column of a cluster the way a careful client pages: skip += rows received, stop on an
        empty page or once the unique rows reach totalCount, de-duplicate by fullyQualifiedName."""
        seen: dict[str, dict] = {}
        skip = 0
        for _ in range(10_000):
            body = self.get(SIMILAR, token=token, clusterId=cluster_id, limit=limit, skip=skip).json()
            rows = body["results"]
            for row in rows:
                seen.setdefault(row["fullyQualifiedName"], row)
            skip += len(rows)
            if not rows or len(seen) >= int(body["totalCount"]):
                return list(seen.values())
        raise AssertionError("no progress")


@pytest.fixture
def api_for():
    apis: list[Api] = []

    def make(server: SandboxServer) -> Api:
        api = Api(server)
        apis.append(api)
        return api

    yield make
    for api in apis:
        api.session.close()
