"""Fixtures of the gpu tests: a worker on the real device 0 (no simulated inventory), NVML, a 640 px dataset.

They build on the session's Redis and SeaweedFS (tests/conftest.py). Every test module here is marked ``gpu`` and
skipped, before any fixture starts a server, where NVML sees no GPU (tests/gpu/device.py).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.gpu.nvml import Nvml
from bench.gpu.stack import wait_ready
from infra.processes import ManagedProcess
from tasks.synth import SynthConfig, synthesize
from tests.fleet import clean_redis
from workers.stack import Services


@pytest.fixture
def nvml() -> Iterator[Nvml]:
    """An NVML session in the test process (safe: NVML creates no CUDA context)."""
    session = Nvml()
    yield session
    session.close()


@pytest.fixture
def gpu_worker(services: Services) -> Iterator[ManagedProcess]:
    """``yoloq worker --gpu 0`` on the real inventory, ready to consume; stopped and the registry wiped after."""
    assert not services.settings.gpus, "the gpu tests need the real inventory: unset YOLOQ_GPUS"
    clean_redis(services)
    proc = services.start_worker(0)
    wait_ready(services)
    yield proc
    services.stop_workers(grace_s=30)
    clean_redis(services)


@pytest.fixture(scope="session")
def shapes_640(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """512 synthetic 640 px images (384 train): ~2 s epochs of yolov8n at batch 8, long enough to stop mid-epoch."""
    return synthesize(tmp_path_factory.mktemp("shapes-640"), SynthConfig(images=512, imgsz=640)).parent
