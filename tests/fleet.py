"""Real worker processes for integration tests, with readiness polled from the registry (no sleeps)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from infra.presence import GpuClaims
from infra.processes import ManagedProcess
from infra.redis_client import connect
from routing.tiers import DEVICE_PREFIX, all_queues, gang_queues
from tasks.specs import TrainSpec
from tasks.synth import SynthConfig, synthesize
from workers.stack import Services


def poll(check: Callable[[], Any], timeout_s: float, what: str, interval_s: float = 0.05) -> Any:
    """Return the first truthy value of ``check()``, or fail the test after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
        time.sleep(interval_s)


def clean_redis(services: Services) -> None:
    """Delete yoloq's keys and queue contents, keeping kombu's exchange bindings."""
    client = connect(services.settings.redis_url)
    lists = [*all_queues(), *gang_queues(), *client.scan_iter(match=f"{DEVICE_PREFIX}*", count=1000)]
    keys = list(client.scan_iter(match="yoloq:*", count=1000)) + lists + ["unacked", "unacked_index"]
    if keys:
        client.delete(*keys)
    # The teams most tests submit as may run critical work without a per-job approval (test_admission uses others).
    client.sadd("yoloq:pre-approved", "ops", "vision")
    client.close()


class Fleet:
    """Worker processes for one simulated inventory."""

    def __init__(self, services: Services) -> None:
        self.services = services
        self.gpus = ""
        self.claims = GpuClaims(connect(services.settings.redis_url), services.settings.redis_url)

    def start(self, gpus: str, shared: tuple[int, ...] = ()) -> dict[int, ManagedProcess]:
        """One worker per device in ``gpus`` (``index:model:GB,...``), each ready to consume (``--share`` for the
        indexes in ``shared``)."""
        self.gpus = gpus
        indexes = [int(item.split(":")[0]) for item in gpus.split(",")]
        for index in indexes:
            self.services.start_worker(index, gpus=gpus, share=index in shared)
        for index in indexes:
            self.wait_ready(index)
        return self.services.workers

    def ready_nodes(self) -> dict[str, dict[str, Any]]:
        """Live, consuming workers by node name."""
        return {w["node"]: w for w in self.claims.live() if w.get("ready_at")}

    def wait_ready(self, index: int, timeout_s: float = 60) -> dict[str, Any]:
        """Block until the worker for ``index`` consumes its queues."""
        proc = self.services.workers[index]

        def ready() -> dict[str, Any] | None:
            assert proc.alive(), f"worker {index} exited:\n{proc.tail(40)}"
            return next((w for w in self.ready_nodes().values() if w["pid"] == proc.pid), None)

        return poll(ready, timeout_s, f"worker for GPU {index}")

    def kill9(self, index: int) -> None:
        """Simulate a lost machine: SIGKILL the worker and its pool children."""
        proc = self.services.workers[index]
        os.killpg(proc.pid, signal.SIGKILL)
        proc.proc.wait(10)

    def restart(self, index: int) -> None:
        """Start a new worker for ``index`` and wait until it consumes."""
        self.services.start_worker(index, gpus=self.gpus)
        self.wait_ready(index)

    def stop(self) -> None:
        """Stop every worker (warm, then forced)."""
        self.services.stop_workers(grace_s=15)


def stop_supervisors(services: Services) -> None:
    """Stop every supervisor started in this session's services (left running, one keeps placing gangs and scaling
    deployments in the tests after its own)."""
    for proc in services.supervisors:
        proc.stop(10)
    services.supervisors.clear()


@contextlib.contextmanager
def stopped(pid: int) -> Iterator[None]:
    """The process ``pid`` frozen (SIGSTOP) for the block, and always thawed (SIGCONT) after it: a Redis that hangs
    every client, then answers with the keys whose TTL passed gone (a network partition, a long fork)."""
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(pid, signal.SIGCONT)


def yoloq_cli(services: Services, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run the real ``yoloq`` command against the session's services."""
    return subprocess.run(
        [sys.executable, "-m", "yoloq", *args],
        capture_output=True, text=True, timeout=60, env=env or services.env(), check=False,
    )  # fmt: skip


def small_dataset(root: Path, seed: int) -> Path:
    """A 24-image, 64 px, 2-class synthetic dataset folder: enough for one CPU epoch in seconds."""
    return synthesize(root, SynthConfig(images=24, imgsz=64, classes=2, seed=seed)).parent


def small_train(data: str, **extra: object) -> TrainSpec:
    """A one-epoch yolov8n train spec at 64 px that checkpoints every epoch (fields in ``extra`` override)."""
    fields = {"model": "yolov8n.yaml", "epochs": 1, "imgsz": 64, "batch": 4, "workers": 0, "save_period": 1,
              "tier": "low", "team": "vision", "memory_gb": 4} | extra  # fmt: skip
    return TrainSpec(data=data, **fields)  # type: ignore[arg-type]
