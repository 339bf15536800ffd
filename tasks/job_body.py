"""The pool-child side of a job process: start it, watch the lease, turn its outcome into the attempt's outcome.

The Celery pool child stays small (no torch): it only supervises. The job process gets the kernel's parent-death
signal (SIGTERM, which it treats as a preempt request), so a terminated pool child never leaves training behind; a
lost lease means another attempt may own the job, so the process is killed without writing a checkpoint. Warm or
cold, a job process gets the environment :func:`job_environ` builds, never the worker's own.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from celery.signals import worker_process_init, worker_process_shutdown

from infra.leases import Flag
from infra.processes import allowed_environ, die_with_parent
from infra.settings import PREFIX, Settings, environ_for, load_settings, process_environ
from tasks.attempt import AttemptControl
from tasks.errors import Cancelled, JobFailed, Preempted, StorageError
from tasks.job_process import HANDED, JOB_SETTINGS, OUTCOME, WORK_STARTED
from tasks.specs import JobSpec
from tasks.standby import Standby

POLL_S = 0.2


_standby: Standby | None = None  # this pool child's warm job process (tasks.standby)


def job_environ(settings: Settings) -> dict[str, str]:
    """A job process's whole environment: the allow-listed basics (PATH, locale, CUDA devices, thread counts) and
    only the settings it reads, so the API token, Flower's password and any other secret the worker holds stay
    with the worker."""
    handed = {PREFIX + name.upper() for name in JOB_SETTINGS}
    return allowed_environ(process_environ(), {k: v for k, v in environ_for(settings).items() if k in handed})


def standby(settings: Settings) -> Standby:
    """The pool child's one Standby (created on first use)."""
    global _standby  # noqa: PLW0603 - one per pool child process, by design
    if _standby is None:
        _standby = Standby(settings.home, job_environ(settings))
    return _standby


def rearm_standby(settings: Settings) -> None:
    """After an attempt is recorded (its requeue included), start the next warm job process: its imports take a
    core for seconds, and on a pinned worker that core is the one the attempt's ending and the next job start on."""
    spare = standby(settings)
    if spare.used is not None:
        shutil.rmtree(spare.used, ignore_errors=True)
        spare.used = None
    if settings.warm_start:
        spare.start()  # the next attempt on this GPU finds a warm job process


@worker_process_init.connect
def _warm_at_start(**_: Any) -> None:
    """A GPU worker's pool child starts its first warm job process at once (other Celery apps do not)."""
    settings = load_settings()
    if settings.worker_gpu and settings.warm_start:
        standby(settings).start()


@worker_process_shutdown.connect
def _drop_at_exit(**_: Any) -> None:
    """The pool child is going away: so does its standby (and its folder)."""
    if _standby is not None:
        _standby.stop()
        if _standby.dir is not None:
            shutil.rmtree(_standby.dir, ignore_errors=True)


def _start(control: AttemptControl, workdir: Path) -> subprocess.Popen[bytes]:
    """The attempt's job process: the warm standby when it is ready, else a cold one (it knows which it is)."""
    settings = control.rt.settings
    gang = bool(control.devices)  # a gang's process sees all its GPUs: the standby was started seeing one
    warm = (
        standby(settings).take(control.job_id, control.task_id, workdir) if settings.warm_start and not gang else None
    )
    if warm is not None:
        return warm
    env = job_environ(settings)
    if gang:
        env["CUDA_VISIBLE_DEVICES"] = ",".join(str(g) for g in control.devices)
    argv = [sys.executable, "-m", "tasks.job_process", control.job_id, control.task_id, str(workdir)]
    with (workdir / "job.log").open("ab") as log:
        return subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, cwd=workdir, env=env,
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


def _exited(proc: subprocess.Popen[bytes], within_s: float) -> bool:
    try:
        proc.wait(timeout=within_s)
    except subprocess.TimeoutExpired:
        return False
    return True


def _supervise(control: AttemptControl, proc: subprocess.Popen[bytes], workdir: Path) -> None:
    previous = _forward_sigterm(proc)
    try:
        while not _exited(proc, POLL_S):  # an exit is seen at once: the next job waits on this pool child
            if control.lease_lost.is_set():
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
    (workdir / HANDED).write_text(repr(time.time()))  # the job process times its first batch from here
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
