"""A shared GPU's admission of an attempt (``yoloq worker --share``, docs/placement.md "GPU sharing").

Several pool processes of one worker run jobs on one large GPU at once while their memory needs fit
(``routing.sharing.fits``: the needs, each with its own CUDA context, plus a safety margin, at most four jobs). Each
attempt joins the GPU's ledger (:mod:`infra.share_ledger`) before it claims its job and leaves it when it ends. One
that does not fit (another tenant took the room a moment earlier) is given back once the worker's watch has narrowed
its queues to what still fits, so it is not taken again at once.
"""

from __future__ import annotations

import functools
import time
from typing import TYPE_CHECKING

from infra.inventory import device, discover
from infra.share_ledger import ShareLedger
from routing.sharing import SharePolicy, room_for
from tasks.errors import YoloqError
from tasks.gang_attempt import give_back
from tasks.states import TERMINAL

if TYPE_CHECKING:
    from tasks.runtime import Runtime

POLICY = SharePolicy()
RECHECK_S = 1.0  # > workers.sharing.WATCH_S: the worker consumes only what fits by the time it is given back


@functools.cache
def gpu_memory_mib(gpus: str, index: int) -> int:
    """This worker's GPU memory (read once per process)."""
    return device(discover(gpus), index).memory_mib


def joins(memory_mib: int, others: list[int], need_mib: int) -> bool:
    """Whether a job of ``need_mib`` may join tenants of ``others`` MiB on a shared GPU of ``memory_mib``."""
    return 0 < need_mib <= room_for(memory_mib, others, POLICY)


def admitted(rt: Runtime, job_id: str, task_id: str, gpu: str) -> bool | None:
    """Join the shared GPU's tenants (True: joined, to be left at the end), or give the job back (False); None when
    there is nothing to join or undo (a GPU that is not shared, a duplicate delivery of a tenant)."""
    if not rt.settings.worker_share or not gpu.isdigit():
        return None
    try:
        need = rt.registry.get(job_id).memory_mib
    except YoloqError:
        return None  # no record: the claim refuses it, as any delivery
    memory = gpu_memory_mib(rt.settings.gpus, int(gpu))
    ledger = ShareLedger(rt.registry.client, rt.settings.redis_url)
    prune(rt, ledger, rt.settings.host(), int(gpu))
    joined = ledger.admit(rt.settings.host(), int(gpu), (job_id, task_id, need), lambda o: joins(memory, o, need))
    if joined is False:
        time.sleep(RECHECK_S)
        give_back(rt, job_id, task_id, f"{need} MiB does not fit beside the jobs on shared GPU {gpu} now")
    return joined


def prune(rt: Runtime, ledger: ShareLedger, host: str, index: int) -> dict[str, int]:
    """Drop tenants whose attempt is over (killed with its pool process, or its end unrecorded) and return the others
    (job → admitted MiB): an entry stays only while its job's current attempt is the one it was admitted for and the
    job is not finished. The worker's admission and the supervisor's defragmenter both call it."""
    entries = ledger.entries(host, index)
    if not entries:
        return {}
    current = {r.job_id: r for r in rt.registry.many(list(entries))}
    alive = {}
    for job_id, (need, task_id) in entries.items():
        record = current.get(job_id)
        if record is None or record.state in TERMINAL or record.attempts[-1].task_id != task_id:
            ledger.leave(host, index, job_id, task_id)
        else:
            alive[job_id] = need
    return alive


def left(rt: Runtime, job_id: str, task_id: str, gpu: str) -> None:
    """The attempt that joined ended: its memory is free for the next tenant."""
    ShareLedger(rt.registry.client, rt.settings.redis_url).leave(rt.settings.host(), int(gpu), job_id, task_id)
