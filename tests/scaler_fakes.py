"""The serving scaler's stores in memory (deployments, queue, stats, replicas, claims, its replica jobs), for unit
tests of ``workers.serving.ServingScaler`` without Redis."""

from __future__ import annotations

import types
from typing import Any

import pytest

from tasks.model_records import Deployment
from tasks.states import JobState
from workers import serving
from workers.serving import ServingScaler


class Scripts:
    """A Redis client as far as the scaler's constructor uses one (script registration); never called."""

    def register_script(self, script: str) -> Any:
        return None


class Fakes:
    """The scaler's stores: deployments, queue, stats, replicas and claims, in memory."""

    def __init__(self, deployments: list[Deployment], replicas: dict[str, list[dict[str, Any]]],
                 claims: list[dict[str, Any]]) -> None:  # fmt: skip
        self.deployments, self.replicas, self.claims = {d.alias: d for d in deployments}, replicas, claims
        self.claim_reads, self.scaled = 0, list[tuple[str, int]]()
        self.jobs = {d.alias: d.replicas for d in deployments}  # replica jobs submitted, per alias

    def all(self) -> list[Deployment]:
        return list(self.deployments.values())

    def get(self, alias: str) -> Deployment | None:
        return self.deployments.get(alias)

    def put(self, deployment: Deployment, by: str, reason: str) -> None:
        self.deployments[deployment.alias] = deployment

    def depth(self, alias: str) -> int:
        return 0

    def orphans(self, alias: str, live: set[str]) -> int:
        return 0

    def alias_load(
        self, alias: str, since_requests: int | None = None, since_at: float | None = None
    ) -> dict[str, Any]:
        return {"requests": 0, "p99_ms": None, "counted": 0, "answered_at": None}

    def alias(self, alias: str) -> Any:
        return types.SimpleNamespace(versions=lambda: [])

    def live(self, alias: str | None = None) -> list[dict[str, Any]]:
        if alias is not None:
            return self.replicas.get(alias, [])
        self.claim_reads += 1
        return self.claims


def make_scaler(monkeypatch: pytest.MonkeyPatch, fakes: Fakes, said: list[str]) -> ServingScaler:
    """A scaler over ``fakes`` (every replica job running; what it scales lands in ``fakes.scaled``)."""
    rt: Any = types.SimpleNamespace(registry=types.SimpleNamespace(client=Scripts()),
                                    settings=types.SimpleNamespace(redis_url=""))  # fmt: skip
    scaler = ServingScaler(rt, said.append)
    scaler.deployments = scaler.queue = scaler.stats = fakes  # type: ignore[assignment]
    scaler.replicas = scaler.claims = fakes  # type: ignore[assignment]
    running = types.SimpleNamespace(state=JobState.RUNNING)
    monkeypatch.setattr(serving, "replica_jobs", lambda registry, alias: [running] * fakes.jobs[alias])
    monkeypatch.setattr(serving, "scale_to", lambda rt, d, n, by: fakes.scaled.append((d.alias, n)))
    return scaler


def deployment_of(alias: str) -> Deployment:
    """Two replicas (1 to 4) of ``alias`` at 100 requests/s each."""
    return Deployment(alias=alias, team="vision", replicas=2, min_replicas=1, max_replicas=4,
                      target_rps_per_replica=100.0, created_at="2026-01-01T00:00:00Z", created_by="test")  # fmt: skip
