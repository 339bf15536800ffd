"""The serving scaler's latency signal (``routing.serve_scale.judged_p99``, ``workers.serving``): a p99 judges only
the requests answered since the deployment last changed (its replica count, a replica warming up), and only once
``P99_MIN_REQUESTS`` of them are in. Judged over its newest requests, one slow burst (an outage's backlog, a cold
start) asked for one more replica at every tick with traffic, up to the maximum, and kept them."""

from __future__ import annotations

from typing import Any

import pytest

from infra.serve_stats import percentile
from routing.serve_scale import P99_MIN_REQUESTS
from tasks.model_records import Deployment
from tests.scaler_fakes import Fakes, deployment_of, make_scaler

pytestmark = pytest.mark.unit

ALIAS = "a@prod"
FIRST = {"job_id": "j1", "worker": "gpu0@a", "state": "ready"}


class Latencies(Fakes):
    """The fakes, with each answered request's latency kept as ServeStats keeps them (newest first)."""

    def __init__(self, deployment: Deployment) -> None:
        super().__init__([deployment], {ALIAS: [FIRST]}, [])
        self.latencies: list[float] = []

    def answer(self, ms: float, count: int) -> None:
        """``count`` more requests answered in ``ms`` each."""
        self.latencies[:0] = [ms] * count

    def alias_load(
        self, alias: str, since_requests: int | None = None, since_at: float | None = None
    ) -> dict[str, Any]:
        recent = self.latencies if since_requests is None else self.latencies[: len(self.latencies) - since_requests]
        return {"requests": len(self.latencies), "p99_ms": percentile(recent, 99), "counted": len(recent),
                "answered_at": None}  # fmt: skip


def _one_replica() -> Deployment:
    return deployment_of(ALIAS).model_copy(update={"replicas": 1, "target_p99_ms": 200.0})


def test_one_slow_burst_asks_for_one_replica_not_the_maximum(monkeypatch: pytest.MonkeyPatch) -> None:
    # Given one ready replica (at most 4), then 150 requests that waited 5 s (an outage's backlog)
    fakes, said = Latencies(_one_replica()), list[str]()
    scaler = make_scaler(monkeypatch, fakes, said)
    scaler.tick(1000.0)
    fakes.answer(5000.0, 150)
    # When the scaler ticks 10 s later (15 requests/s: a fraction of one replica's target), Then the p99 asks for a
    # second replica
    scaler.tick(1010.0)
    assert fakes.scaled == [(ALIAS, 2)] and said == [f"{ALIAS}: scale out to 2: p99 5000 ms over 200 ms"]
    # When it warms up, then both answer fast traffic for ten ticks
    fakes.jobs[ALIAS] = 2
    fakes.replicas[ALIAS] = [FIRST, {"job_id": "j2", "worker": "gpu1@a", "state": "warming"}]
    fakes.answer(5000.0, 10)  # the last of the backlog, answered while it warmed
    scaler.tick(1011.0)
    fakes.replicas[ALIAS] = [FIRST, {"job_id": "j2", "worker": "gpu1@a", "state": "ready"}]
    for now in range(1012, 1022):
        fakes.answer(20.0, 30)
        scaler.tick(float(now))
    # Then the burst asked for nothing more: the p99 judges the two replicas' requests alone
    assert fakes.scaled == [(ALIAS, 2)], said


def test_a_p99_is_judged_once_enough_requests_came_since_the_last_change(monkeypatch: pytest.MonkeyPatch) -> None:
    # Given one ready replica seen once, then one request fewer than a p99 is judged on, all slow
    fakes = Latencies(_one_replica())
    scaler = make_scaler(monkeypatch, fakes, [])
    scaler.tick(1000.0)
    fakes.answer(900.0, P99_MIN_REQUESTS - 1)
    scaler.tick(1010.0)
    assert fakes.scaled == []
    # When one more comes, Then the latency asks for a second replica
    fakes.answer(900.0, 1)
    scaler.tick(1011.0)
    assert fakes.scaled == [(ALIAS, 2)]


def test_a_change_by_hand_or_a_counter_gone_back_judges_anew(monkeypatch: pytest.MonkeyPatch) -> None:
    # Given one replica judged on 150 slow requests, when an operator scales it to 2 by hand before the scaler acts
    fakes = Latencies(_one_replica())
    scaler = make_scaler(monkeypatch, fakes, [])
    scaler.tick(1000.0)
    fakes.answer(5000.0, 150)
    fakes.deployments[ALIAS] = fakes.deployments[ALIAS].model_copy(update={"replicas": 2})
    fakes.jobs[ALIAS], fakes.replicas[ALIAS] = 2, [FIRST, {**FIRST, "job_id": "j2"}]
    scaler.tick(1010.0)
    # Then the slow requests, the smaller deployment's, ask for nothing; the two replicas' own do
    assert fakes.scaled == []
    fakes.answer(5000.0, P99_MIN_REQUESTS)
    scaler.tick(1020.0)
    assert fakes.scaled == [(ALIAS, 3)]
    # And when Redis comes back from an older snapshot (fewer requests counted than the scaler saw), it judges again
    # from there instead of waiting for the counter to pass its old value
    fakes.scaled.clear()
    fakes.jobs[ALIAS], fakes.replicas[ALIAS] = 3, [FIRST, {**FIRST, "job_id": "j2"}, {**FIRST, "job_id": "j3"}]
    scaler.tick(1030.0)
    fakes.latencies = []
    scaler.tick(1040.0)
    fakes.answer(5000.0, P99_MIN_REQUESTS)
    scaler.tick(1050.0)
    assert fakes.scaled == [(ALIAS, 4)]
    # And a deployment that is dropped is forgotten
    del fakes.deployments[ALIAS]
    scaler.tick(1060.0)
    assert all(ALIAS not in state for state in (scaler.seen, scaler.fresh, scaler.pending, scaler.heals))
