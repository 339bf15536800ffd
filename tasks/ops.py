"""Beat's tasks on the ``yoloq.ops`` queue: thin Celery shells over :mod:`tasks.housekeeping`.

They run in the ops worker of each ``yoloq beat`` process, take JSON kwargs (``slot`` is the slot beat sent them
for), and are acknowledged on receipt (``acks_late=False``): a crash loses that run, never repeats it, and the next
slot runs again. Imported by ``yoloq beat`` only, so GPU workers never register them.
"""

from __future__ import annotations

from typing import Any

from infra.beat_schedule import GC_TASK, HEALTH_TASK, SLA_TASK, SUBMIT_TASK
from infra.beat_state import BeatState
from infra.cordon import CordonStore
from infra.gpu_control import FleetControl
from routing.health import HealthLimits
from routing.retention import Retention
from tasks import housekeeping
from tasks.app import app
from tasks.records import utc_now
from tasks.runtime import worker_runtime

OPTIONS: dict[str, Any] = {"acks_late": False, "ignore_result": True}


@app.task(name=SUBMIT_TASK, **OPTIONS)
def submit_scheduled(entry: str, spec: dict[str, Any], slot: str = "") -> dict[str, Any]:
    """Submit one slot's recurring job."""
    return housekeeping.submit_scheduled(worker_runtime(), entry, spec, slot, utc_now())


@app.task(name=GC_TASK, **OPTIONS)
def checkpoint_gc(keep_last: int, finished_days: float, slot: str = "") -> dict[str, Any]:
    """Trim checkpoints beyond the newest ``keep_last`` per job; delete finished jobs' objects after N days."""
    policy = Retention(keep_last=keep_last, finished_days=finished_days)
    rt = worker_runtime()
    return housekeeping.collect_garbage(rt.registry, rt.store, policy, utc_now())


@app.task(name=SLA_TASK, **OPTIONS)
def sla_report(window_hours: float, slot: str = "") -> dict[str, Any]:
    """Write the per-tier SLA report to Redis and S3."""
    rt = worker_runtime()
    state = BeatState(rt.registry.client, rt.settings.redis_url)
    return housekeeping.sla_report(rt.registry, rt.store, state, window_hours * 3600, utc_now())


@app.task(name=HEALTH_TASK, **OPTIONS)
def gpu_health(max_temperature_c: float, max_uncorrected_ecc: int = 0, slot: str = "") -> dict[str, Any]:
    """Read every GPU's health through its worker; cordon the unhealthy ones."""
    rt = worker_runtime()
    limits = HealthLimits(max_temperature_c=max_temperature_c, max_uncorrected_ecc=max_uncorrected_ecc)
    cordons = CordonStore(rt.registry.client, rt.settings.redis_url)
    return housekeeping.gpu_health(rt, FleetControl(app), cordons, limits, utc_now())
