"""The serving scaler: each supervisor tick, size every deployment's replicas to its load (``routing.serve_scale``).

It runs in the supervisor's leader (one actor, HA for free) and acts only through job submission and cancellation
(``tasks.replicas.scale_to``): a replica is a scheduled job, so scale-out waits for a GPU like any job of its tier and
scale-in cancels the newest replica, which drains (finishes its batch, leaves the rest of the queue to the others).
It also heals: a deployment whose replica jobs ended (failed, cancelled by hand) is brought back to its count, and
the requests a replica killed with -9 had taken go back to the queue (``ServeQueue.orphans``).
A deployment marked ``scaler: external`` (``yoloq serve ALIAS --external``) is left alone: its replicas are
``yoloq replica`` pods that KEDA scales (infra/k8s/serving.yaml), and two scalers of one deployment would fight.
The GPU utilisation signal is the mean NVML figure of the claims (``yoloq:gpu:*``, :mod:`workers.presence`) of the
workers its live replicas run on; simulated fleets report none, so there the other signals decide alone.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from infra.deployments import Deployments
from infra.presence import GpuClaims
from infra.serve_queue import ServeQueue
from infra.serve_replicas import ServeReplicas
from infra.serve_stats import ServeStats
from routing.serve_scale import Heal, Load, Pending, Targets, decide, heal, judge_anew, judged_p99
from tasks.model_records import Deployment
from tasks.records import JobRecord
from tasks.replicas import replica_jobs, scale_to
from tasks.runtime import Runtime
from tasks.states import JobState

log = logging.getLogger("yoloq.serving")


@dataclass
class _Seen:
    """What the last tick read of a deployment: when, and its requests answered so far (for a rate)."""

    at: float
    answered: int


def targets_of(deployment: Deployment, down_delay_s: float) -> Targets:
    """The policy's bounds and targets for one deployment."""
    return Targets(deployment.min_replicas, deployment.max_replicas, deployment.target_rps_per_replica,
                   deployment.target_p99_ms, deployment.max_batch, down_delay_s=down_delay_s)  # fmt: skip


def _figure(claim: dict[str, Any]) -> float | None:
    value = claim.get("utilization")
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def replicas_gpu_util(replicas: list[dict[str, Any]], claims: list[dict[str, Any]]) -> float | None:
    """Mean utilisation (0-1) of the GPUs a deployment's live replicas run on, from their workers' claims: the
    policy's ``Load.gpu_util``; None when none of those claims has a figure (simulated GPUs, pods, MIG)."""
    nodes = {str(r["worker"]) for r in replicas if r.get("worker")}
    figures = [f for c in claims if str(c.get("node")) in nodes and (f := _figure(c)) is not None]
    return sum(figures) / len(figures) if figures else None


class ServingScaler:
    """Holds the pending scale decisions between ticks; only the supervisor's leader calls :meth:`tick`."""

    def __init__(self, rt: Runtime, say: Callable[[str], None], down_delay_s: float = 60.0) -> None:
        client, url = rt.registry.client, rt.settings.redis_url
        self.rt, self.say, self.down_delay_s = rt, say, down_delay_s
        self.deployments = Deployments(client, url)
        self.queue = ServeQueue(client, url)
        self.stats = ServeStats(client, url)
        self.replicas = ServeReplicas(client, url)
        self.claims = GpuClaims(client, url)
        self._fleet: list[dict[str, Any]] | None = None  # this tick's worker claims, read once, when first needed
        self.pending: dict[str, Pending] = {}
        self.seen: dict[str, _Seen] = {}
        # Per alias, its replica count and request count when it last changed: the p99 judges later requests only.
        self.fresh: dict[str, tuple[int, int]] = {}
        self.heals: dict[str, Heal] = {}

    def _load(self, deployment: Deployment, now: float, jobs: list[JobRecord]) -> Load:
        """Queue depth, answered requests per second since the last tick, the p99 of the requests answered since it
        last changed (``routing.serve_scale.judged_p99``), the mean utilisation of its replicas' GPUs, how many
        replicas are ready and how many of its ``jobs`` wait for a GPU."""
        alias = deployment.alias
        live = self.replicas.live(alias)
        ready = sum(1 for r in live if r.get("state") == "ready")
        unplaced = sum(1 for job in jobs if job.state in (JobState.QUEUED, JobState.HELD))
        known = self.fresh.get(alias)
        figures = self.stats.alias_load(alias, since_requests=known[1] if known else None)  # this alias's only
        answered, counted = int(figures["requests"]), int(figures["counted"])
        last = self.seen.get(alias)
        self.seen[alias] = _Seen(now, answered)
        if judge_anew(known, replicas=deployment.replicas, ready=ready, unplaced=unplaced, answered=answered):
            self.fresh[alias], counted = (deployment.replicas, answered), 0
        rps = max(answered - last.answered, 0) / (now - last.at) if last and now > last.at else 0.0
        p99 = judged_p99(figures["p99_ms"], counted, rps)
        util = self._gpu_util(live) if ready >= deployment.replicas else None  # a cold start's figure is not read
        return Load(deployment.replicas, self.queue.depth(alias), rps, p99, util, ready, unplaced)

    def _gpu_util(self, replicas: list[dict[str, Any]]) -> float | None:
        if not replicas:
            return None
        if self._fleet is None:
            self._fleet = self.claims.live()
        return replicas_gpu_util(replicas, self._fleet)

    def tick(self, now: float) -> None:
        """Decide and act for every deployment yoloq scales (not ``scaler: external`` ones: KEDA runs their pods);
        one deployment's error never stops the others."""
        self._fleet = None
        deployments = self.deployments.all()
        served = {d.alias for d in deployments}
        for state in (self.pending, self.seen, self.fresh, self.heals):  # forget deployments dropped since
            for alias in [a for a in state if a not in served]:
                del state[alias]
        for deployment in deployments:
            self._reclaim(deployment.alias)
            if deployment.scaler == "external":
                for state in (self.pending, self.seen, self.fresh):
                    state.pop(deployment.alias, None)
                continue
            try:
                self._one(deployment, now)
            except Exception as err:  # a scaler round must go on for the other deployments
                log.warning("serving scaler: %s: %s", deployment.alias, err)

    def _reclaim(self, alias: str) -> None:
        """Put the batches replicas killed with -9 held back in the queue (their pods' too: KEDA's or yoloq's)."""
        try:
            back = self.queue.orphans(alias, {str(r.get("job_id")) for r in self.replicas.live(alias)})
        except Exception as err:  # the next tick tries again
            log.warning("serving scaler: %s: reclaiming taken requests: %s", alias, err)
            return
        if back:
            self.say(f"{alias}: {back} requests held by dead replicas put back in the queue")

    def _one(self, deployment: Deployment, now: float) -> None:
        alias = deployment.alias
        jobs = replica_jobs(self.rt.registry, alias)
        load = self._load(deployment, now, jobs)
        verdict = decide(load, targets_of(deployment, self.down_delay_s), self.pending.get(alias, Pending()), now)
        self.pending[alias] = verdict.pending
        current = self.deployments.get(alias)  # again: `serve --stop` or `--external` may have come since the read
        if current is None or current.scaler == "external" or current.model_dump() != deployment.model_dump():
            return  # the next tick decides on what is there now
        if verdict.replicas != deployment.replicas:
            deployment = deployment.model_copy(update={"replicas": verdict.replicas})
            self.deployments.put(deployment, "autoscaler", verdict.reason)
            self.say(f"{alias}: {verdict.reason}")
            scale_to(self.rt, deployment, deployment.replicas, by="autoscaler")
            return
        all_ready = load.replicas > 0 and load.ready is not None and load.ready >= load.replicas
        go, self.heals[alias], why = heal(self.heals.get(alias, Heal()), missing=deployment.replicas - len(jobs),
                                          all_ready=all_ready, now=now)  # fmt: skip
        if go or len(jobs) > deployment.replicas:
            if go:
                self.say(f"{alias}: {why}")
            scale_to(self.rt, deployment, deployment.replicas, by="autoscaler")
