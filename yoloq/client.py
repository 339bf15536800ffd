"""The typed Python API: ``Client().submit(TrainSpec(...))`` and friends, over the same path the CLI uses."""

from __future__ import annotations

import getpass
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from infra.admission_rules import AdmissionStore
from infra.audit import AuditLog
from infra.cordon import CordonStore
from infra.presence import GpuClaims
from infra.queues import depths
from infra.redis_client import connect
from infra.registry import RedisRegistry
from infra.settings import Settings, load_settings
from routing.sla import DEFAULT_TARGETS, history, summarize
from routing.tiers import TIERS, Tier, all_queues, tier_of_queue
from tasks.records import JobRecord
from tasks.states import TERMINAL, JobState
from yoloq.views import queue_view

if TYPE_CHECKING:  # Celery (sending) and boto3 (the runtime's store) load only when a call needs them
    from infra.celery_control import CeleryDispatch
    from infra.leases import Leases
    from infra.trusted_files import TrustedFiles
    from tasks.admission import Promoted
    from tasks.runtime import Runtime
    from tasks.specs import JobSpec
    from tasks.submit import Submitted
    from tasks.trust import TrustedFile

SLA_WINDOW_S = 24 * 3600
RULES_MAX_AGE_S = 1.0


def local_actor(face: str = "python") -> str:
    """Who acts from this host, as histories and the audit log name them (``python:<user>``; the CLI's ``cli:<user>``):
    one name per caller, so that four-eyes compares a submitter with an approver."""
    try:
        return f"{face}:{getpass.getuser()}"
    except (KeyError, OSError):  # containers may have no passwd entry
        return face


class JobHandle:
    """A submitted job: its id and where it went, with ways to read it back and wait for it."""

    def __init__(self, client: Client, submitted: Submitted) -> None:
        self.client = client
        self.job_id = submitted.job_id
        self.state = submitted.state
        self.tier = submitted.tier
        self.queue = submitted.queue

    def as_dict(self) -> dict[str, str]:
        """The ``submit --json`` document."""
        return {"job_id": self.job_id, "state": self.state.value, "tier": self.tier, "queue": self.queue}

    def refresh(self) -> JobRecord:
        """The job's current record from the registry."""
        return self.client.job(self.job_id)

    def wait(self, states: Iterable[JobState] = TERMINAL, timeout_s: float = 600, poll_s: float = 0.1) -> JobRecord:
        """Poll until the job reaches one of ``states``; TimeoutError with its last state otherwise."""
        wanted = frozenset(states)
        deadline = time.monotonic() + timeout_s
        while True:
            record = self.refresh()
            if record.state in wanted:
                return record
            if time.monotonic() > deadline:
                raise TimeoutError(f"job {self.job_id} still {record.state.value} after {timeout_s:.0f}s")
            time.sleep(poll_s)


class Client:
    """Submit, inspect, cancel and preempt jobs; read the fleet status. One per process is plenty. Each action is
    signed ``by`` its caller: ``actor`` (:func:`local_actor`) unless the call names one (the CLI's, the HTTP key)."""

    def __init__(self, settings: Settings | None = None, *, actor: str | None = None) -> None:
        self.settings = settings or load_settings()
        self.actor = actor or local_actor()
        self._registry: RedisRegistry | None = None
        self._dispatch: CeleryDispatch | None = None
        self._rt: Runtime | None = None
        self._rules: AdmissionStore | None = None

    @property
    def registry(self) -> RedisRegistry:
        """The job registry, connected lazily so that building a Client never blocks; reads need nothing else."""
        if self._registry is None:
            client = connect(self.settings.redis_url, self.settings.broker_timeout_s)
            self._registry = RedisRegistry(client, self.settings.redis_url)
        return self._registry

    @property
    def dispatch(self) -> CeleryDispatch:
        """The Celery sender, built on the first call that publishes (importing Celery is most of a submit's cost)."""
        if self._dispatch is None:
            from infra.celery_control import CeleryDispatch
            from tasks.app import create_app

            self._dispatch = CeleryDispatch(create_app(self.settings))
        return self._dispatch

    @property
    def rt(self) -> Runtime:
        """Every adapter a job body gets (registry, leases, store, dispatch) on this client's Redis pool."""
        if self._rt is None:
            from tasks.runtime import build_runtime

            self._rt = build_runtime(self.settings, self.dispatch, self.registry)
        return self._rt

    @property
    def submit_rules(self) -> AdmissionStore:
        """The admission rules submits read: a long-lived client (API, bench) rereads them at most once a second."""
        if self._rules is None:
            self._rules = AdmissionStore(self.registry.client, self.settings.redis_url, max_age_s=RULES_MAX_AGE_S)
        return self._rules

    def prepare(self) -> Client:
        """Build the adapters a server uses now, for a server that calls this client from many threads at once (lazy
        construction is not thread-safe); still no connection is opened."""
        _ = self.registry, self.dispatch, self.submit_rules
        return self

    @property
    def _fresh_rules(self) -> AdmissionStore:
        """The admission rules as they are now (no cache): an operator's demotion binds the next promotion."""
        return AdmissionStore(self.registry.client, self.settings.redis_url)

    @property
    def _leases(self) -> Leases:
        from infra.leases import Leases

        return Leases(self.registry.client, self.settings.redis_url)

    def submit(self, spec: JobSpec | dict[str, Any], *, remote: bool = False, by: str | None = None) -> JobHandle:
        """Validate, register, route and send one job; raises SpecRejected or BrokerUnavailable. ``remote``: the
        caller is not on this host (the HTTP API), so it may name local paths only under the data roots; ``by``: who
        submits (default: this client's actor; kept on the job, so they may not approve it)."""
        from tasks.locations import Locations
        from tasks.submit import submit

        doors = Locations.from_setting(self.settings.data_roots, remote)
        sent = submit(spec, self.registry, self.dispatch, self.submit_rules, doors, by=by or self.actor)
        return JobHandle(self, sent)

    def job(self, job_id: str) -> JobRecord:
        """One job's record (JobNotFound if unknown)."""
        return self.registry.get(job_id)

    def jobs(self, state: JobState | None = None, tier: Tier | None = None, limit: int = 100) -> list[JobRecord]:
        """Jobs newest first, optionally one state and/or tier."""
        ids = self.registry.ids(state, limit if tier is None else 10 * limit)
        records = self.registry.many(ids)
        return [r for r in records if tier is None or r.tier is tier][:limit]

    def cancel(self, job_id: str, by: str | None = None) -> JobState:
        """Cancel a job; a running one stops at its next step."""
        from tasks import lifecycle

        return lifecycle.cancel(self.registry, self._leases, self.dispatch, job_id, by or self.actor)

    def preempt(self, job_id: str, reason: str = "operator request", by: str | None = None) -> None:
        """Ask a running job to checkpoint, yield its GPU and requeue."""
        from tasks import lifecycle

        lifecycle.request_preempt(self.registry, self._leases, job_id, reason, by or self.actor)

    def promote(self, job_id: str, tier: Tier, by: str | None = None) -> Promoted:
        """Move a job to another tier under the admission rules (demotion caps it, critical may await approval)."""
        from tasks import admission

        return admission.promote(self.registry, self.dispatch, self._fresh_rules, job_id, tier, by=by or self.actor)

    def approve(self, job_id: str, by: str | None = None) -> None:
        """Approve a held critical job or a promotion to critical (not one ``by`` submitted or promoted)."""
        from tasks import admission

        admission.approve(self.registry, self.dispatch, self._fresh_rules, job_id, by=by or self.actor)

    def quota(self, team: str, tier: Tier, gpus: int | None, by: str | None = None) -> None:
        """Limit a team's queued + running jobs at one tier (None removes the limit)."""
        self._fresh_rules.set_quota(team, tier, gpus, by or self.actor)

    def preapprove(self, team: str, approved: bool = True, by: str | None = None) -> None:
        """Let a team's critical jobs in without per-job approval (or stop doing so)."""
        self._fresh_rules.set_pre_approved(team, approved, by or self.actor)

    def demote(self, team: str, demoted: bool = True, by: str | None = None) -> None:
        """Run a team's future critical submissions at high (or stop doing so)."""
        self._fresh_rules.set_demoted(team, demoted, by or self.actor)

    def audit(self, limit: int = 100, job_id: str | None = None) -> list[dict[str, Any]]:
        """Decisions about jobs and rules, newest first: the answer to "who did this, and why"."""
        return AuditLog(self.registry.client, self.settings.redis_url).entries(limit, job_id)

    @property
    def trusted_files(self) -> TrustedFiles:
        """The trust ledger: the model files jobs may unpickle and the sha256 each must have (tasks/trust.py)."""
        from infra.trusted_files import TrustedFiles

        return TrustedFiles(self.registry.client, self.settings.redis_url)

    def trust_weights(self, location: str, sha256: str | None = None, by: str | None = None) -> TrustedFile:
        """Vouch for a weights file yoloq did not write, so that jobs may name it (audited with ``by`` and its
        sha256; ``sha256``: refuse unless the file has exactly that content)."""
        from infra.s3 import S3Store
        from tasks.errors import SpecRejected
        from tasks.locations import Locations
        from tasks.trust import import_weights

        try:
            where = Locations.from_setting(self.settings.data_roots).check("weights", location)
        except SpecRejected as err:
            raise SpecRejected(str(err).replace("invalid job spec: ", "cannot trust ")) from None
        return import_weights(where, S3Store(self.settings), self.trusted_files, by or self.actor, sha256)

    def serve(self, alias: str, replicas: int | None = None, *, by: str | None = None, **fields: Any) -> dict[str, Any]:
        """Serve an alias with ``replicas`` serving jobs (``fields``: Deployment fields such as team, tier,
        max_batch; a new deployment needs team), or resize and retune its deployment; returns it and the replica
        jobs submitted and cancelled."""
        from tasks.replicas import deploy

        return deploy(self.rt, alias, replicas, fields, by or self.actor)

    def stop_serving(self, alias: str, by: str | None = None) -> dict[str, Any]:
        """Cancel an alias's replicas (each drains: answers what it holds) and drop its deployment."""
        from tasks.replicas import undeploy

        return undeploy(self.rt, alias, by or self.actor)

    def admission_rules(self) -> dict[str, Any]:
        """Quotas with what each team uses, borrows and lends; demoted, pre-approved teams; default tiers; credit."""
        from yoloq.quota_view import quota_view

        return quota_view(self.registry)

    def lend(self, team: str, tier: Tier, gpus: int | None, by: str | None = None) -> None:
        """Let other teams borrow up to ``gpus`` of a team's unused quota at one tier (None or 0: lend nothing)."""
        self._fresh_rules.set_lend(team, tier, gpus, by or self.actor)

    def default_tier(self, team: str, tier: Tier | None, by: str | None = None) -> None:
        """The tier a team's submissions get when they name none (None: medium)."""
        self._fresh_rules.set_default_tier(team, tier, by or self.actor)

    def judge(self, job_id: str, reason: str = "", by: str | None = None) -> None:
        """Judge a critical job not urgent: a strike against its team's credit score (``routing.credit``)."""
        from infra.credit_store import CreditStore
        from tasks.credit import judge_non_urgent

        credit = CreditStore(self.registry.client, self.settings.redis_url)
        judge_non_urgent(self.registry, credit, job_id, by=by or self.actor, reason=reason)

    def freeze(self, job_id: str, frozen: bool = True, by: str | None = None) -> None:
        """Protect a job from preemption (or lift that protection)."""
        from tasks import lifecycle

        lifecycle.set_frozen(self.registry, job_id, frozen, by or self.actor)

    def status(self, now_ts: float | None = None) -> dict[str, Any]:
        """Fleet view: queue depth per tier, live workers and GPUs, running jobs, SLA per tier."""
        client = self.registry.client
        by_queue = depths(client, all_queues(), self.settings.redis_url)
        per_tier = {tier.value: 0 for tier in TIERS}
        for queue, count in by_queue.items():
            per_tier[tier_of_queue(queue).value] += count
        workers = GpuClaims(client, self.settings.redis_url).live()
        cordoned = {(str(f.get("host")), int(f.get("index", -1))): f.get("reason")
                    for f in CordonStore(client, self.settings.redis_url).all()}  # fmt: skip
        running = self.jobs(JobState.RUNNING, limit=1000)
        return {
            "queues": per_tier,
            "queues_by_class": {q: n for q, n in by_queue.items() if n},
            "workers": [{k: w.get(k) for k in ("node", "host", "pid", "queues", "heartbeat_at")} for w in workers],
            "gpus": [
                {
                    **w.get("gpu", {}),
                    "host": w.get("host"),
                    "node": w.get("node"),
                    "cordoned": cordoned.get((str(w.get("host")), int(w.get("gpu", {}).get("index", -1)))),
                    **({"utilization": w["utilization"]} if w.get("utilization") is not None else {}),  # NVML only
                }
                for w in workers
            ],
            "running": [
                {
                    "job_id": r.job_id,
                    "kind": r.kind,
                    "tier": r.tier.value,
                    "team": r.team,
                    "worker": r.worker,
                    "gpu": r.gpu,
                    "memory_mib": r.memory_mib,
                    "progress": r.progress,
                    "started_at": r.started_at,
                }
                for r in running
            ],
            "sla": self.sla(now_ts),
        }

    def sla_history(self, now_ts: float | None = None) -> dict[str, Any]:
        """Per tier, the hourly share of jobs started within the target over the last 24 h (the status page chart)."""
        now = time.time() if now_ts is None else now_ts
        return {t.value: history(self.registry.starts(t.value, now - SLA_WINDOW_S), DEFAULT_TARGETS[t], now)
                for t in TIERS}  # fmt: skip

    def queues(self, now_ts: float | None = None) -> dict[str, Any]:
        """Per-tier depth (waiting + held by workers) and oldest wait: what autoscalers and dashboards read."""
        return queue_view(self.registry, time.time() if now_ts is None else now_ts)

    def sla(self, now_ts: float | None = None) -> dict[str, Any]:
        """Per-tier time-to-start percentiles over the last 24 h and compliance with each tier's target; a job still
        waiting (queued or held) past its tier's target already counts as a miss."""
        now = time.time() if now_ts is None else now_ts
        held = self.registry.submit_times(JobState.HELD)  # no records: held jobs may be thousands (bench drill load)
        out: dict[str, Any] = {}
        for tier in TIERS:
            target = DEFAULT_TARGETS[tier]
            waits = [now - ts for ts in self.registry.queued_before(tier.value, now - target.within_s)]
            waits += [now - submitted for name, submitted in held if name == tier.value]
            started = self.registry.times_to_start(tier.value, now - SLA_WINDOW_S)
            out[tier.value] = summarize(started, target, waits)
        return out
