"""The probe task: a thin Celery shell over :func:`tasks.runner.run_probe`."""

from __future__ import annotations

from typing import Any

from tasks.app import app
from tasks.attempt import Where, published_to, run_attempt
from tasks.runner import run_probe
from tasks.runtime import worker_runtime


@app.task(bind=True, name="yoloq.probe", acks_late=True, ignore_result=True)
def probe(self: Any, job_id: str, tier: str = "", team: str = "") -> str:
    """Run one attempt of a probe job on this worker's GPU."""
    rt = worker_runtime()
    where = Where(str(self.request.hostname), rt.settings.worker_gpu, published_to(self.request))
    return run_attempt(rt, job_id, str(self.request.id), where, run_probe)
