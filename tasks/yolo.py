"""Train, infer, export and serve tasks: thin Celery shells; the work runs in a job process (:mod:`tasks.job_body`)."""

from __future__ import annotations

from typing import Any

from tasks.app import app
from tasks.attempt import Where, published_to, run_attempt
from tasks.job_body import rearm_standby, run_in_process
from tasks.runtime import worker_runtime


def _run(task: Any, job_id: str) -> str:
    rt = worker_runtime()
    where = Where(str(task.request.hostname), rt.settings.worker_gpu, published_to(task.request))
    try:
        return run_attempt(rt, job_id, str(task.request.id), where, run_in_process)
    finally:
        rearm_standby(rt.settings)


@app.task(bind=True, name="yoloq.train", acks_late=True, ignore_result=True)
def train(self: Any, job_id: str, tier: str = "", team: str = "") -> str:
    """Run one attempt of a training job."""
    return _run(self, job_id)


@app.task(bind=True, name="yoloq.infer", acks_late=True, ignore_result=True)
def infer(self: Any, job_id: str, tier: str = "", team: str = "") -> str:
    """Run one attempt of a batch-inference job."""
    return _run(self, job_id)


@app.task(bind=True, name="yoloq.export", acks_late=True, ignore_result=True)
def export(self: Any, job_id: str, tier: str = "", team: str = "") -> str:
    """Run one attempt of an export job."""
    return _run(self, job_id)


@app.task(bind=True, name="yoloq.serve", acks_late=True, ignore_result=True)
def serve(self: Any, job_id: str, tier: str = "", team: str = "") -> str:
    """Run one attempt of a serving replica (it serves until preempted or cancelled: tasks/serve_runner.py)."""
    return _run(self, job_id)
