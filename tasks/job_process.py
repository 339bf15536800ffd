"""The job process: runs one attempt's Ultralytics work outside the Celery pool (``python -m tasks.job_process``).

Why a process of its own: Celery's prefork children are daemonic, so training there cannot use DataLoader workers
(4.7× slower on a GPU, BRIEF §5); its exit frees the GPU's memory at once; and a crash in CUDA or a leak in
Ultralytics cannot take the worker down. The pool child (:mod:`tasks.job_body`) starts it, watches the job's lease,
and reads the outcome this process writes to ``outcome.json`` in its attempt directory:
``{"outcome": "succeeded" | "preempted" | "cancelled" | "failed", "result": {...}, "reason": "..."}``.
SIGTERM (a worker shutting down, a pod being evicted) is treated as a preempt request: checkpoint, then exit.

Its environment is chosen, not inherited (:func:`tasks.job_body.job_environ`): the basics a process needs and the
settings in :data:`JOB_SETTINGS`, handed over explicitly by its worker (so it reads no stack file either). The API
token, Flower's password and whatever else the worker's environment holds stay with the worker: a job runs
Ultralytics on files users name, and what its process can read should be what it needs.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tasks.errors import Cancelled, Preempted, YoloqError
from tasks.offline import prepare_environment
from tasks.standby import await_attempt

if TYPE_CHECKING:
    from tasks.attempt import AttemptControl

OUTCOME = "outcome.json"
WORK_STARTED = "work-started"  # written at the first trained batch: from then on a preempt request checkpoints
HANDED = "handed-at"  # the pool child's time.time() when it handed the attempt over (origin of the first-batch figure)

# The settings a job process reads: Redis and the broker (tasks.runtime, celeryconfig), S3 and its keys (checkpoints,
# results), its lease, its home (work and cache folders), the worker's GPU (attempt records), the data roots, the
# largest ONNX graph it may load (tasks.attempt).
JOB_SETTINGS = frozenset({
    "home", "redis_url", "s3_endpoint", "s3_bucket", "s3_region", "s3_access_key", "s3_secret_key", "worker_gpu",
    "visibility_timeout_s", "lease_ttl_s", "broker_timeout_s", "log_level", "data_roots", "onnx_max_mib",
})  # fmt: skip
# Those it is never handed: the surfaces' credentials (a job calls neither the API nor Flower) and what only the
# worker, beat or a client read. Every setting is in exactly one of the two (tests/unit/test_job_environ.py).
NOT_FOR_JOBS = frozenset({
    "api_token", "flower_basic_auth", "schedule_file", "gpus", "warm_start", "worker_ttl_s", "device_lock_dir",
    "hostname", "detect_rate", "detect_burst", "detect_max_mib", "detect_max_mpx", "detect_timeout_s",
    "detect_max_waiting", "webhook_allow_private", "worker_share",
})  # fmt: skip


def _write_outcome(workdir: Path, outcome: dict[str, Any]) -> None:
    tmp = workdir / (OUTCOME + ".tmp")
    tmp.write_text(json.dumps(outcome))
    tmp.replace(workdir / OUTCOME)


def _abandon(workdir: Path) -> Callable[[Preempted | Cancelled], None]:
    """The "record this outcome and exit now" hook a validation watch calls from its thread (tasks.val_watch)."""

    def abandon(request: Preempted | Cancelled) -> None:
        kind = "preempted" if isinstance(request, Preempted) else "cancelled"
        _write_outcome(workdir, {"outcome": kind, "reason": str(request)})
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)  # the main thread is mid-validation: nothing of it is worth finishing

    return abandon


def _first_batch(control: AttemptControl, workdir: Path, warm: bool) -> Callable[[], None]:
    """What the first trained batch does: mark that a preempt request now checkpoints (the pool child reads the
    marker), and record the ``first-batch`` event right then, ahead of any checkpoint of this attempt."""

    def first_batch() -> None:
        (workdir / WORK_STARTED).touch()
        kind = "warm (pre-imported)" if warm else "cold"
        fields: dict[str, Any] = {"warm": warm}
        try:
            fields["seconds"] = round(max(0.0, time.time() - float((workdir / HANDED).read_text())), 3)
            reason = f"first trained batch {fields['seconds']:.2f} s after the attempt reached a {kind} job process"
        except (OSError, ValueError):
            reason = f"first trained batch in a {kind} job process"
        try:
            control.note("first-batch", reason, **fields)
        except YoloqError as err:  # a figure, not the job: training goes on
            print(f"first-batch event not recorded: {err}", file=sys.stderr)

    return first_batch


def _handed_at(workdir: Path) -> float | None:
    """When the pool child handed this attempt over (``time.time()``), if it said: where a cold start begins."""
    try:
        return float((workdir / HANDED).read_text())
    except (OSError, ValueError):
        return None


def _device() -> str:
    """Every GPU of this process's CUDA_VISIBLE_DEVICES when CUDA works here ("0"; "0,1" for a gang of two, which
    Ultralytics trains with DDP), else the CPU (simulated fleets)."""
    import torch

    if not torch.cuda.is_available():
        return "cpu"
    return ",".join(str(i) for i in range(max(1, torch.cuda.device_count())))


def _run(job_id: str, task_id: str, workdir: Path, warm: bool) -> dict[str, Any]:
    from infra.celery_control import CeleryDispatch
    from infra.settings import load_settings
    from tasks.app import app
    from tasks.attempt import AttemptControl
    from tasks.runtime import build_runtime
    from tasks.specs import ExportSpec, InferSpec, ServeSpec, TrainSpec, parse_spec

    settings = load_settings(use_stack_file=False)  # its worker handed it every setting it reads (JOB_SETTINGS)
    rt = build_runtime(settings, CeleryDispatch(app))
    record = rt.registry.get(job_id)
    control = AttemptControl(rt, record, task_id)
    signal.signal(signal.SIGTERM, lambda *_: control.stop_requested.set())
    spec = parse_spec(record.spec)
    threads = len(os.sched_getaffinity(0))
    if isinstance(spec, TrainSpec):
        from tasks.train_runner import JobEnv, run_train

        env = JobEnv(workdir=workdir, cache=settings.home / "cache", threads=threads, device=_device(),
                     first_batch=_first_batch(control, workdir, warm), abandon=_abandon(workdir))  # fmt: skip
        result = run_train(spec, control, env)
        if spec.deploy is None:
            return result
        from tasks.deploy_stage import deploy_trained

        return deploy_trained(spec, control, result, workdir)
    if isinstance(spec, InferSpec):
        from tasks.infer_runner import run_infer

        return run_infer(spec, control, workdir, settings.home / "cache", _device())
    if isinstance(spec, ExportSpec):
        from tasks.export_runner import run_export

        return run_export(spec, control, workdir, _device())
    if isinstance(spec, ServeSpec):
        from tasks.serve_runner import run_serve

        return run_serve(spec, control, workdir, _device(), handed_at=_handed_at(workdir),
                         ready=(workdir / WORK_STARTED).touch)  # fmt: skip
    raise YoloqError(f"{spec.kind} jobs do not run in a job process")


def main(argv: list[str]) -> int:
    """Run the attempt named on the command line (or, with ``--standby DIR``, the one handed over on stdin after
    the imports are warm: :mod:`tasks.standby`) and record its outcome; the exit code mirrors it."""
    threads = len(os.sched_getaffinity(0))
    warm = argv[0] == "--standby"
    if warm:
        prepare_environment(Path(argv[1]) / "ultralytics-config", threads=threads)
        job_id, task_id, workdir = await_attempt(Path(argv[1]))
    else:
        job_id, task_id, workdir = argv[0], argv[1], Path(argv[2])
        prepare_environment(workdir.parent / "ultralytics-config", threads=threads)
    try:
        result = _run(job_id, task_id, workdir, warm)
    except Preempted as why:
        _write_outcome(workdir, {"outcome": "preempted", "reason": str(why)})
        return 0
    except Cancelled as why:
        _write_outcome(workdir, {"outcome": "cancelled", "reason": str(why)})
        return 0
    except Exception as err:
        traceback.print_exc()
        reason = f"{type(err).__name__}: {err}".splitlines()[0][:500]
        _write_outcome(workdir, {"outcome": "failed", "reason": reason})
        return 1
    _write_outcome(workdir, {"outcome": "succeeded", "result": result})
    return 0


if __name__ == "__main__":
    code = main(sys.argv[1:])
    sys.stdout.flush()
    sys.stderr.flush()
    # The outcome is on disk; skip interpreter teardown (torch, DataLoader, CUDA): ~2 s that would keep the GPU held.
    os._exit(code)
