"""The pool-child side of a job process: start it, watch the lease, turn its outcome into the attempt's outcome.

The Celery pool child stays small (no torch): it only supervises. The job process gets the kernel's parent-death
signal (SIGTERM, which it treats as a preempt request), so a terminated pool child never leaves training behind; a
lost lease means another attempt may own the job, so the process is killed without writing a checkpoint.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from infra.leases import Flag
from infra.processes import die_with_parent
from tasks.attempt import AttemptControl
from tasks.errors import Cancelled, JobFailed, Preempted, StorageError
from tasks.job_process import OUTCOME, WORK_STARTED
from tasks.specs import JobSpec

POLL_S = 0.2


def _start(control: AttemptControl, workdir: Path) -> subprocess.Popen[bytes]:
    argv = [sys.executable, "-m", "tasks.job_process", control.job_id, control.task_id, str(workdir)]
    with (workdir / "job.log").open("ab") as log:
        return subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, cwd=workdir,
                                preexec_fn=die_with_parent)  # noqa: PLW1509  # fmt: skip


def _forward_sigterm(proc: subprocess.Popen[bytes]) -> Any:
    """While supervising, SIGTERM to the pool child is passed on (checkpoint, then exit) instead of killing it."""
    try:
        return signal.signal(signal.SIGTERM, lambda *_: proc.send_signal(signal.SIGTERM))
    except ValueError:  # not the main thread (solo/threads pools): the preempt flag still reaches the job
        return None


def _stop_before_work(control: AttemptControl, workdir: Path) -> bool:
    """Preempted before its first trained batch (still importing, fetching, building): nothing to save, so stop now."""
    return not (workdir / WORK_STARTED).exists() and control.rt.leases.flag(control.job_id) is Flag.PREEMPT


def _supervise(control: AttemptControl, proc: subprocess.Popen[bytes], workdir: Path) -> None:
    previous = _forward_sigterm(proc)
    try:
        while proc.poll() is None:
            if control.lease_lost.wait(POLL_S):
                proc.kill()
                proc.wait()
                raise Preempted("lease lost: another attempt may own this job; its job process was killed")
            if _stop_before_work(control, workdir):
                proc.kill()
                proc.wait()
                raise Preempted("preempt requested before the first batch: nothing to checkpoint")
    except BaseException:
        if proc.poll() is None:  # the pool child is being terminated: never leave training running
            proc.kill()
            proc.wait()
        raise
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _keep_log(control: AttemptControl, workdir: Path) -> str | None:
    """Copy the job process's log to S3 (jobs/{id}/attempts/{task}.log) so it outlives the worker's disk."""
    key = f"jobs/{control.job_id}/attempts/{control.task_id}.log"
    try:
        control.store.put_file(key, workdir / "job.log")
    except (StorageError, OSError):
        return None
    return control.store.uri(key)


def _tail(path: Path, lines: int = 5) -> str:
    try:
        return " | ".join(path.read_text(errors="replace").strip().splitlines()[-lines:])[-400:]
    except OSError:
        return ""


def run_in_process(spec: JobSpec, control: AttemptControl) -> dict[str, Any]:
    """Body for train/infer/export: run the work in a job process and map its outcome (raises to end the attempt)."""
    workdir = control.rt.settings.home / "work" / control.job_id / control.task_id
    workdir.mkdir(parents=True, exist_ok=True)
    proc = _start(control, workdir)
    _supervise(control, proc, workdir)
    log_uri = _keep_log(control, workdir)
    try:
        outcome = json.loads((workdir / OUTCOME).read_text())
    except (OSError, ValueError):
        code = proc.returncode
        raise JobFailed(
            f"job process exited with code {code} without an outcome; log tail: {_tail(workdir / 'job.log')}"
        ) from None
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    kind = outcome.get("outcome")
    if kind == "preempted":
        raise Preempted(str(outcome.get("reason")))
    if kind == "cancelled":
        raise Cancelled(str(outcome.get("reason")))
    if kind != "succeeded":
        raise JobFailed(str(outcome.get("reason")) + (f" (log: {log_uri})" if log_uri else ""))
    result: dict[str, Any] = outcome.get("result") or {}
    return {**result, "log": log_uri} if log_uri else result
