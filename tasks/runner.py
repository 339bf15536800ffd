"""Job bodies written against ports (object store, attempt control); they never import Celery."""

from __future__ import annotations

import time
from typing import Any, Protocol

from infra.ports import ObjectStore
from tasks.errors import CheckpointError
from tasks.specs import JobSpec, ProbeSpec
from tasks.trust import Trust


class Control(Protocol):
    """The slice of :class:`tasks.attempt.AttemptControl` a body uses."""

    job_id: str
    store: ObjectStore
    trust: Trust  # which model files this body may load (tasks/trust.py)

    def progress(self, **values: int | float) -> None:
        """Publish progress."""

    def checkpoint_saved(self, uri: str) -> None:
        """Record the newest checkpoint."""

    def check(self) -> None:
        """Raise when the attempt must stop."""

    def note(self, kind: str, reason: str, **fields: Any) -> None:
        """Append an event to the job's history (``fields``: figures the supervisor reads back, e.g. bytes)."""


STEP_S = 1.0


def probe_checkpoint_key(job_id: str) -> str:
    """Where a probe keeps its step count (documented S3 layout: jobs/{id}/...)."""
    return f"jobs/{job_id}/probe/checkpoint.json"


def _resume_step(control: Control, steps: int) -> int:
    saved = control.store.get_json(probe_checkpoint_key(control.job_id))
    if saved is None:
        return 0
    step = saved.get("step") if isinstance(saved, dict) else None
    if not isinstance(step, int) or not 0 <= step <= steps:
        raise CheckpointError(f"probe checkpoint of {control.job_id} is corrupt: {saved!r}")
    return step


def run_probe(spec: JobSpec, control: Control) -> dict[str, Any]:
    """Hold the GPU slot for ``spec.seconds`` in 1 s steps, checkpointing each step; resume from the last one."""
    assert isinstance(spec, ProbeSpec)
    steps = spec.seconds
    start = _resume_step(control, steps) if steps else 0
    control.progress(step=start, steps=steps)
    key = probe_checkpoint_key(control.job_id)
    for step in range(start + 1, steps + 1):
        control.check()
        time.sleep(STEP_S)
        control.store.put_json(key, {"step": step})
        control.checkpoint_saved(control.store.uri(key))
        control.progress(step=step, steps=steps)
    return {"steps": steps, "resumed_from": start}
