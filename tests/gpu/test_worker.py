"""A worker on the real GPU: it reports the device, trains on it in a job process, and its parent never holds CUDA.

BRIEF §5: a CUDA context in a process that later forks breaks every forked child, so the Celery parent and its pool
child must stay CUDA-free; the training runs in the job process, which NVML must show on the device while it trains.
"""

from __future__ import annotations

import json
from pathlib import Path

from bench.gpu.nvml import Nvml
from bench.harness import procs
from bench.harness.procs import job_process
from infra.processes import ManagedProcess
from tasks.specs import TrainSpec
from tasks.states import JobState
from tests.fleet import poll, yoloq_cli
from tests.gpu.device import marks
from workers.stack import Services
from yoloq.client import Client

pytestmark = marks()


def _is_job_process(pid: int) -> bool:
    try:
        return b"tasks.job_process" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def _worker_cuda_holders(worker: ManagedProcess, nvml: Nvml) -> set[int]:
    """The worker's own processes (parent and pool child, not job processes) holding a CUDA context on device 0."""
    mine = {worker.pid} | procs.descendants(worker.pid)
    jobs = {pid for pid in mine if _is_job_process(pid)}  # DataLoader workers share the job process's command line
    return (mine - jobs) & set(nvml.processes(0) or {})


def test_status_shows_the_real_device_and_the_idle_worker_holds_no_cuda(
    services: Services, gpu_worker: ManagedProcess, nvml: Nvml
) -> None:
    # When an operator asks for the status
    done = yoloq_cli(services, "status", "--json")

    # Then the GPU is the NVML device, not a simulation, and no worker process holds a CUDA context
    assert done.returncode == 0, done.stderr
    gpu = json.loads(done.stdout)["gpus"][0]
    assert gpu["simulated"] is False and gpu["uuid"].startswith(("GPU-", "MIG-"))
    assert gpu["uuid"] == (nvml.device(0) or {})["uuid"]
    assert _worker_cuda_holders(gpu_worker, nvml) == set()


def test_a_training_job_trains_on_the_gpu_in_its_job_process(
    gpu_worker: ManagedProcess, client: Client, nvml: Nvml, shapes_640: Path
) -> None:
    # Given a one-epoch yolov8n job with DataLoader workers
    spec = TrainSpec(data=str(shapes_640), model="yolov8n.yaml", epochs=1, imgsz=640, batch=8, workers=4,
                     tier="high", team="vision")  # fmt: skip
    handle = client.submit(spec)

    # When it trains, its job process holds the GPU and the worker's own processes still do not
    pid = poll(lambda: job_process(handle.job_id), 120, "the job process")
    poll(lambda: pid in (nvml.processes(0) or {}), 120, "the job process on the GPU")
    assert _worker_cuda_holders(gpu_worker, nvml) == set()

    # Then it succeeds, and once it is done nothing of the worker holds the GPU
    record = handle.wait(timeout_s=600)
    assert record.state is JobState.SUCCEEDED, record.error
    assert (record.result or {}).get("epochs") == 1
    assert _worker_cuda_holders(gpu_worker, nvml) == set()
    assert pid not in (nvml.processes(0) or {})
