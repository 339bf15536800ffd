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
from infra.share_ledger import ShareLedger
from routing.sharing import SharePolicy
from routing.tiers import OPS_QUEUE, all_queues, device_queue, queues_for_gpu
from tasks.errors import GpuUnavailable
from tasks.records import iso, utc_now
from tasks.runtime import build_runtime
from workers.cordon import CHECK_INTERVAL_S, install_cordon
from workers.presence import ClaimKeeper, install
from workers.sharing import WATCH_S, room_queues


def worker_argv(node: str, queues: tuple[str, ...], log_level: str, concurrency: int = 1) -> list[str]:
    """Celery worker arguments: strict queue order, one job at a time (a shared GPU: up to its tenant limit), events
    on for Flower."""
    return [
        "worker", "-Q", ",".join(queues), "-c", str(concurrency), "-n", node, "--pool", "prefork", "-l", log_level,
        "-E", "--without-gossip", "--without-mingle", "-O", "fair",
    ]  # fmt: skip


def plan(settings: Settings, index: int) -> tuple[GpuInfo, tuple[str, ...]]:
    """The device and the queues its worker consumes, or GpuUnavailable."""
    gpu = device(discover(settings.gpus), index)
    queues = queues_for_gpu(gpu.memory_mib)
    if not queues:
        raise GpuUnavailable(f"GPU {index} ({gpu.name}, {gpu.memory_mib} MiB) is smaller than every size class")
    return gpu, queues


def run_worker(settings: Settings, index: int, share: bool = False) -> None:
    """Claim device ``index`` and run its worker in this process until it is stopped; ``share``: several jobs at
    once while their memory fits (workers/sharing.py)."""
    gpu, queues = plan(settings, index)
    lock = lock_gpu(settings.device_lock_dir, settings.home, gpu)  # first: whatever Redis holds, one worker per device
    host = settings.host()
    node = f"gpu{index}@{host}"
    os.environ["CUDA_VISIBLE_DEVICES"] = str(index)
    os.environ["YOLOQ_WORKER_GPU"] = str(index)
    os.environ["YOLOQ_WORKER_SHARE"] = "1" if share else "0"
    os.umask(PRIVATE_UMASK)  # its job folders, checkpoints and logs are the owner's alone, however it was started
    from tasks.app import app

    shape = {"worker_gpu": str(index), "worker_share": share}
    rt = build_runtime(settings.model_copy(update=shape), CeleryDispatch(app))
    claims = GpuClaims(rt.registry.client, settings.redis_url)
    prune_bindings(rt.registry.client, (*all_queues(), OPS_QUEUE), settings.redis_url)  # before it declares its own
    now = iso(utc_now())
    record = {
        "node": node, "host": host, "pid": os.getpid(), "gpu": json.dumps(gpu.as_dict()),
        "queues": json.dumps(list(queues)), "started_at": now, "heartbeat_at": now, "shared": "1" if share else "",
    }  # fmt: skip
    token = claims.claim(host, index, record, settings.worker_ttl_s)
    keeper = ClaimKeeper(claims, settings, (host, index, token), record, rt=rt)
    install(app, keeper, rt, node)
    ledger = ShareLedger(rt.registry.client, settings.redis_url)
    ledger.clear(host, index)  # whatever a killed worker's tenants were, they died with it
    room = room_queues(ledger, (host, index), gpu.memory_mib, queues) if share else None
    install_cordon(app, rt.registry.client, settings.redis_url, (host, index), queues, simulated=gpu.simulated,
                   interval_s=WATCH_S if share else CHECK_INTERVAL_S, room=room)  # fmt: skip
    own = device_queue(host, index)  # first: a gang placed here starts before anything else (docs/placement.md)
    app.conf.task_queues = [*app.conf.task_queues, Queue(own, Exchange(own, type="direct"), routing_key=own)]
    try:
        tenants = SharePolicy().max_tenants if share else 1
        app.worker_main(worker_argv(node, (own, *queues), settings.log_level, tenants))
    finally:
        keeper.stop()
        lock.release()
