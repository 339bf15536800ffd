"""``yoloq worker --gpu I``: one Celery worker pinned to one device, consuming exactly the queues it fits.

The process locks the device on this host (:mod:`infra.device_lock`: refused while another live worker holds it,
whatever Redis says), claims it in Redis (refusing if a live worker holds it there), sets ``CUDA_VISIBLE_DEVICES=I``
before anything could touch CUDA, and becomes a prefork worker with concurrency 1 whose node name is unique per
host and device. The parent never touches CUDA (BRIEF §5: CUDA before fork breaks every child).
"""

from __future__ import annotations

import json
import os

from kombu import Exchange, Queue

from infra.celery_control import CeleryDispatch
from infra.device_lock import lock_gpu
from infra.inventory import device, discover
from infra.ports import GpuInfo
from infra.presence import GpuClaims
from infra.processes import PRIVATE_UMASK
from infra.queues import prune_bindings
from infra.settings import Settings
from routing.tiers import OPS_QUEUE, all_queues, device_queue, queues_for_gpu
from tasks.errors import GpuUnavailable
from tasks.records import iso, utc_now
from tasks.runtime import build_runtime
from workers.cordon import install_cordon
from workers.presence import ClaimKeeper, install


def worker_argv(node: str, queues: tuple[str, ...], log_level: str) -> list[str]:
    """Celery worker arguments: strict queue order, one job at a time, events on for Flower."""
    return [
        "worker", "-Q", ",".join(queues), "-c", "1", "-n", node, "--pool", "prefork", "-l", log_level,
        "-E", "--without-gossip", "--without-mingle", "-O", "fair",
    ]  # fmt: skip


def plan(settings: Settings, index: int) -> tuple[GpuInfo, tuple[str, ...]]:
    """The device and the queues its worker consumes, or GpuUnavailable."""
    gpu = device(discover(settings.gpus), index)
    queues = queues_for_gpu(gpu.memory_mib)
    if not queues:
        raise GpuUnavailable(f"GPU {index} ({gpu.name}, {gpu.memory_mib} MiB) is smaller than every size class")
    return gpu, queues


def run_worker(settings: Settings, index: int) -> None:
    """Claim device ``index`` and run its worker in this process until it is stopped."""
    gpu, queues = plan(settings, index)
    lock = lock_gpu(settings.device_lock_dir, settings.home, gpu)  # first: whatever Redis holds, one worker per device
    host = settings.host()
    node = f"gpu{index}@{host}"
    os.environ["CUDA_VISIBLE_DEVICES"] = str(index)
    os.environ["YOLOQ_WORKER_GPU"] = str(index)
    os.umask(PRIVATE_UMASK)  # its job folders, checkpoints and logs are the owner's alone, however it was started
    from tasks.app import app

    rt = build_runtime(settings.model_copy(update={"worker_gpu": str(index)}), CeleryDispatch(app))
    claims = GpuClaims(rt.registry.client, settings.redis_url)
    prune_bindings(rt.registry.client, (*all_queues(), OPS_QUEUE), settings.redis_url)  # before it declares its own
    now = iso(utc_now())
    record = {
        "node": node, "host": host, "pid": os.getpid(), "gpu": json.dumps(gpu.as_dict()),
        "queues": json.dumps(list(queues)), "started_at": now, "heartbeat_at": now,
    }  # fmt: skip
    token = claims.claim(host, index, record, settings.worker_ttl_s)
    keeper = ClaimKeeper(claims, settings, (host, index, token), record, rt=rt)
    install(app, keeper, rt, node)
    install_cordon(app, rt.registry.client, settings.redis_url, (host, index), queues, simulated=gpu.simulated)
    own = device_queue(host, index)  # first: a gang placed here starts before anything else (docs/placement.md)
    app.conf.task_queues = [*app.conf.task_queues, Queue(own, Exchange(own, type="direct"), routing_key=own)]
    try:
        app.worker_main(worker_argv(node, (own, *queues), settings.log_level))
    finally:
        keeper.stop()
        lock.release()
