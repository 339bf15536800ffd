"""A worker's check, before it claims an attempt, that the attempt belongs on its GPU (docs/placement.md, gangs).

A device held for a gang (:mod:`infra.gang_holds`) stops taking jobs from the tier queues, but a worker may already
have taken one message when the hold lands: that job is given back (published again, placed by its submit time, so it
keeps its place, after the worker's cordon watch has stopped its tier queues) instead of starting on a device the gang
is about to use. The gang's own message reaches only its
leader's device queue; it runs with every held device visible. A gang message that reaches a device its gang does not
hold (the hold was released meanwhile: preempted, the leader restarted) goes back to its gang queue to be placed again,
never runs on one GPU.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from infra.gang_holds import GangHolds
from infra.queues import place_by_submit_time
from routing.tiers import GANG
from tasks import lifecycle
from tasks.errors import YoloqError
from tasks.records import Event, iso, parse_iso, utc_now
from tasks.specs import gpus_of
from tasks.states import JobState

if TYPE_CHECKING:
    from tasks.runtime import Runtime

log = logging.getLogger("yoloq.attempt")
# > workers.cordon.CHECK_INTERVAL_S (2 s): a job taken just as its GPU was held is given back once its worker has
# stopped taking tier-queue jobs, so it is not taken and given back again in a loop while the hold drains.
GIVE_BACK_AFTER_S = 2.5


def placed(rt: Runtime, job_id: str, task_id: str, gpu: str, queue: str = "") -> str | None:
    """The GPUs this attempt runs on (a gang: every held device, ``"0,1"``), or None when it was given back.
    ``queue``: where the message was published (a gang's says its gang queue; '' when unknown: the record says)."""
    if not gpu.isdigit():
        return gpu  # not a pinned GPU worker (a test's solo worker, a CPU pool): nothing is held here
    holds = GangHolds(rt.registry.client, rt.settings.redis_url)
    host = rt.settings.host()
    holder = holds.holder(host, int(gpu))
    if holder == job_id:
        hold = holds.get(job_id) or {}
        return ",".join(str(g) for g in hold.get("gpus", [int(gpu)]))
    if holder is not None and holds.loan(host, int(gpu)) == (holder, job_id):
        return gpu  # backfill: lent this held GPU until its gang is due (workers/gangs.py)
    if holder is None:
        single = not queue.endswith(f".{GANG}") if queue else _single(rt, job_id)  # no registry read when it says
        if single:
            return gpu
    if holder is not None:  # wait until the worker's cordon watch has stopped its tier queues, or it takes it again
        time.sleep(GIVE_BACK_AFTER_S)
        if holds.loan(host, int(gpu)) == (holder, job_id):
            return gpu  # lent meanwhile (the supervisor moves the message, then records the loan): run it here
    why = f"GPU {gpu} of {host} is held for gang {holder}" if holder else "its gang's hold was released"
    give_back(rt, job_id, task_id, why)
    return None


def _single(rt: Runtime, job_id: str) -> bool:
    try:
        return gpus_of(rt.registry.get(job_id).spec) == 1
    except YoloqError:
        return True  # no record (or Redis failing): the claim decides, as for any delivery


def give_back(rt: Runtime, job_id: str, task_id: str, why: str) -> None:
    """A delivery this GPU must not run: publish the attempt again under the same task id at its submit-time
    place; a stale delivery is only dropped."""
    record = rt.registry.get(job_id)
    if record.state is not JobState.QUEUED or not record.attempts or record.attempts[-1].task_id != task_id:
        return  # cancelled, already running elsewhere, or an older attempt: the claim would refuse it anyway
    rt.registry.append_event(job_id, Event(at=iso(utc_now()), type="given-back", reason=f"not started: {why}",
                                           by="worker"))  # fmt: skip
    submitted = parse_iso(record.submitted_at).timestamp()
    rt.dispatch.send(record.kind, job_id, task_id, record.queue, lifecycle.labels(record), submitted_ts=submitted)
    place_by_submit_time(rt.registry.client, record.queue, task_id, submitted, rt.registry.url)
    log.info("gave %s back to %s: %s", job_id, record.queue, why)
