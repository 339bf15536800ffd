"""Warm job processes: each pool child keeps one job process that has already imported torch and Ultralytics and
waits for its attempt, so a dequeued job reaches its first batch without the cold import (~3 s on CPU here, 6.4 s
with CUDA on an H100; BRIEF §5).

A standby is started when the pool child starts and again after each attempt it served (each job still gets a fresh
process: its exit frees the GPU, nothing leaks between jobs). It never touches CUDA before its attempt: importing
torch initialises nothing on the device. It gets the pool child's parent-death signal like a cold job process. It is
handed its attempt as one JSON line on stdin; from then on it is exactly the job process of
:mod:`tasks.job_process` (same outcome file, same SIGTERM handling), with its output moved to the attempt's log.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from infra.processes import die_with_parent

READY = "standby-ready"  # written by the standby once its imports are done


class Standby:
    """The pool child's handle on its one warm job process (at most one, started lazily, replaced after use)."""

    def __init__(self, home: Path, env: dict[str, str] | None = None) -> None:
        self.home = home
        self.env = env  # the job process's whole environment (tasks.job_body.job_environ); None: this process's
        self.proc: subprocess.Popen[bytes] | None = None
        self.dir: Path | None = None
        self.used: Path | None = None  # the folder of the process handed out last (removed after its attempt)

    def start(self) -> None:
        """Start a warm job process if none is waiting (cheap to call again)."""
        if self.proc is not None and self.proc.poll() is None:
            return
        self.dir = self.home / "work" / f"standby-{os.getpid()}-{time.monotonic_ns()}"
        self.dir.mkdir(parents=True, exist_ok=True)
        argv = [sys.executable, "-m", "tasks.job_process", "--standby", str(self.dir)]
        with (self.dir / "standby.log").open("ab") as log:
            self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=log, stderr=subprocess.STDOUT,
                                         cwd=self.dir, env=self.env, preexec_fn=die_with_parent)  # noqa: PLW1509  # fmt: skip

    def take(self, job_id: str, task_id: str, workdir: Path, wait_s: float = 60.0) -> subprocess.Popen[bytes] | None:
        """Hand the attempt to the warm process (waiting for its imports to finish: a cold start would redo them);
        None means start a cold one."""
        proc, folder, self.proc, self.used = self.proc, self.dir, None, self.dir
        if proc is None or folder is None or not _ready(proc, folder, wait_s):
            self._discard(proc)
            return None
        line = json.dumps({"job_id": job_id, "task_id": task_id, "workdir": str(workdir)}) + "\n"
        try:
            assert proc.stdin is not None
            proc.stdin.write(line.encode())
            proc.stdin.close()
        except OSError:
            self._discard(proc)
            return None
        return proc

    def stop(self) -> None:
        """Kill the waiting process (the pool child is going away)."""
        self._discard(self.proc)
        self.proc = None

    @staticmethod
    def _discard(proc: subprocess.Popen[bytes] | None) -> None:
        if proc is not None and proc.poll() is None:
            proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(5)


def _ready(proc: subprocess.Popen[bytes], folder: Path, wait_s: float) -> bool:
    """Whether the standby finished its imports, waiting up to ``wait_s`` while it is still importing."""
    deadline = time.monotonic() + wait_s
    while proc.poll() is None:
        if (folder / READY).exists():
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return False


def _warm_up() -> None:
    """Pay now what a training attempt pays before its first batch: the imports (torch's dynamo/inductor alone
    are ~1.6 s here, pulled in by Ultralytics' ``init_seeds``) and, on a GPU, CUDA's initialisation."""
    import torch
    import torch._dynamo
    import torch._inductor
    import ultralytics.models.yolo.detect  # noqa: F401

    import tasks.train_runner  # noqa: F401

    if torch.cuda.is_available():  # simulated fleets: False, quickly
        torch.cuda.init()  # type: ignore[no-untyped-call]  # the job process owns it; DataLoader workers use no CUDA


def await_attempt(folder: Path) -> tuple[str, str, Path]:
    """In the standby: warm the imports (and CUDA, on a GPU), say so, then block until an attempt is handed over."""
    _warm_up()
    (folder / READY).touch()
    line = sys.stdin.readline()
    if not line:
        raise SystemExit(0)  # the pool child closed the pipe without an attempt: nothing to do
    doc = json.loads(line)
    workdir = Path(doc["workdir"])
    log = os.open(workdir / "job.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(log, 1)
    os.dup2(log, 2)
    os.close(log)
    return str(doc["job_id"]), str(doc["task_id"]), workdir
