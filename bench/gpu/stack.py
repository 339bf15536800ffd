"""The GPU validation's stack and job watching: embedded Redis + SeaweedFS, one real worker on GPU 0, polling.

The stack is the one ``yoloq up`` runs (workers/stack.py), started in a fresh home with no ``YOLOQ_GPUS``, so the
worker takes the real inventory from NVML; the dry run passes a simulated one instead. Everything is stopped at the
end and every process the stack started must be gone (``leaked``). Jobs are followed through the registry only, as
an operator would; the one exception is the job process's pid, found in /proc to time the GPU's release.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.gpu.nvml import Nvml
from bench.gpu.results import Sample
from bench.gpu.sizes import Profile
from bench.harness import procs
from infra.presence import GpuClaims
from infra.redis_client import connect
from infra.settings import load_settings
from tasks.job_process import WORK_STARTED
from tasks.records import JobRecord, parse_iso
from tasks.states import TERMINAL, JobState
from workers.stack import Services, start_services
from yoloq.client import Client

ROOT = Path(__file__).resolve().parents[2]
TEAM = "gpu-validate"


@dataclass
class Harness:
    """What every step talks to: the services, a client, the scratch folders, NVML and the sizes to use."""

    services: Services
    client: Client
    home: Path
    work: Path
    profile: Profile
    nvml: Nvml
    leaked: list[int] = field(default_factory=list)

    def cli(self, *args: str, timeout_s: float = 600) -> subprocess.CompletedProcess[str]:
        """The real ``yoloq`` command against this stack (``python -m yoloq``: nothing is installed on the device)."""
        argv = [sys.executable, "-m", "yoloq", *args]
        return subprocess.run(argv, capture_output=True, text=True, timeout=timeout_s, env=self.services.env(),
                              cwd=ROOT, check=False)  # fmt: skip

    def worker_pid(self) -> int:
        """The pid of the worker's parent process (the one that must never touch CUDA)."""
        return self.services.workers[0].pid

    def worker_tail(self, lines: int = 40) -> str:
        """The end of the worker's log, attached to a failed step."""
        proc = self.services.workers.get(0)
        return proc.tail(lines) if proc else ""

    def ensure_worker(self) -> None:
        """Restart the worker if an earlier step left it dead, and wait until it consumes."""
        proc = self.services.workers.get(0)
        if proc is None or not proc.alive():
            self.services.start_worker(0)
            wait_ready(self.services)

    def drain(self, timeout_s: float = 60) -> None:
        """Cancel whatever an earlier (failed) step left queued or running, and wait for it to end."""
        live = [r for r in self.client.jobs(limit=1000) if r.state not in TERMINAL]
        for record in live:
            with contextlib.suppress(Exception):
                self.client.cancel(record.job_id, by="gpu-validate")
        deadline = time.monotonic() + timeout_s
        while any(self.client.job(r.job_id).state not in TERMINAL for r in live):
            if time.monotonic() > deadline:
                raise TimeoutError(f"jobs still live {timeout_s:.0f}s after cancel: {[r.job_id for r in live]}")
            time.sleep(0.2)

    def dataset(self, images: int, imgsz: int, seed: int = 0) -> Path:
        """A synthetic dataset made by ``yoloq dataset synth`` (cached in the work folder across calls)."""
        target = self.work / "datasets" / f"shapes-{images}-{imgsz}-s{seed}"
        if not (target / "data.yaml").exists():
            done = self.cli("dataset", "synth", str(target), "--images", str(images), "--imgsz", str(imgsz),
                            "--seed", str(seed), "--json")  # fmt: skip
            if done.returncode != 0:
                raise RuntimeError(f"yoloq dataset synth failed: {done.stderr.strip()[-500:]}")
        return target


def wait_ready(services: Services, timeout_s: float = 120) -> dict[str, Any]:
    """Block until worker 0's claim shows ``ready_at`` (it consumes its queues)."""
    claims = GpuClaims(connect(services.settings.redis_url), services.settings.redis_url)
    proc = services.workers[0]
    deadline = time.monotonic() + timeout_s
    while True:
        mine = [w for w in claims.live() if w.get("pid") == proc.pid and w.get("ready_at")]
        if mine:
            return mine[0]
        if not proc.alive():
            raise RuntimeError(f"worker exited at start:\n{proc.tail(40)}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"worker not ready after {timeout_s:.0f}s:\n{proc.tail(40)}")
        time.sleep(0.1)


@contextlib.contextmanager
def open_harness(profile: Profile, work: Path, nvml: Nvml) -> Iterator[Harness]:
    """Start Redis, S3 and the worker for GPU 0 in a fresh home under ``work``; stop all of it afterwards."""
    home = work / f"home-{time.strftime('%H%M%S')}-{os.getpid()}"
    settings = load_settings(use_stack_file=False).model_copy(update={"home": home, "gpus": profile.simulated_gpus})
    started = procs.descendants(os.getpid())
    services = start_services(settings, prefer_configured_redis=False)
    harness = Harness(services, Client(services.settings), home, work, profile, nvml)
    try:
        services.start_worker(0)
        wait_ready(services)
        harness.client.preapprove(TEAM)
        yield harness
    finally:
        started = procs.descendants(os.getpid()) | started
        services.stop()
        harness.leaked = procs.survivors(started)


@dataclass
class JobWatch:
    """A job followed through the registry: progress samples (registry write time) and first-batch times."""

    client: Client
    job_id: str
    home: Path
    samples: list[Sample] = field(default_factory=list)
    first_batch: dict[str, float] = field(default_factory=dict)  # task id → time its first batch ended
    batches: int = 0

    def refresh(self) -> JobRecord:
        """Read the record once; keep a sample when (attempt, epoch, batch) changed."""
        record = self.client.job(self.job_id)
        p = record.progress
        if "batch" in p and record.heartbeat_at:
            row = (len(record.attempts), int(p["epoch"]), int(p["batch"]))
            self.batches = int(p.get("batches", self.batches))
            if not self.samples or self.samples[-1][1:] != row:
                # heartbeat_at is written with the progress (tasks/attempt.py): the time the batch ended, to 1 ms.
                self.samples.append((parse_iso(record.heartbeat_at).timestamp(), *row))
        if record.state is JobState.RUNNING and record.attempts:
            task = record.attempts[-1].task_id
            marker = self.home / "work" / self.job_id / task / WORK_STARTED
            if task not in self.first_batch:
                with contextlib.suppress(OSError):
                    self.first_batch[task] = marker.stat().st_mtime  # touched at the first trained batch
        return record

    def until(self, done: Callable[[JobRecord], Any], what: str, timeout_s: float, poll_s: float = 0.02) -> JobRecord:
        """Poll until ``done(record)``; an early terminal state or the timeout raises with the job's error."""
        return procs.until(self.refresh, done, what, timeout_s, poll_s)


def seconds_between(start: str | None, end: str | None) -> float | None:
    """Registry timestamps → seconds between them (None if either is missing)."""
    if not start or not end:
        return None
    return round((parse_iso(end) - parse_iso(start)).total_seconds(), 3)


def event_time(record: JobRecord, kind: str) -> tuple[float, str] | None:
    """(epoch seconds, reason) of the last event of ``kind``."""
    found = [e for e in record.events if e.type == kind]
    return (parse_iso(found[-1].at).timestamp(), found[-1].reason) if found else None


def run_json(argv: list[str], out: Path, env: dict[str, str], timeout_s: float) -> dict[str, Any]:
    """Run a helper process that writes one JSON document to ``out``; its error tail if it does not."""
    out.unlink(missing_ok=True)
    done = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout_s, check=False)
    if done.returncode != 0 or not out.exists():
        raise RuntimeError(f"{' '.join(argv[:4])} exited {done.returncode}: {(done.stderr or done.stdout)[-1500:]}")
    doc: dict[str, Any] = json.loads(out.read_text())
    return doc
