"""A serving replica: the body of a ``kind: serve`` job, run in the job process (docs/serving.md).

1. **Warm**: load every version its alias names (:mod:`tasks.serve_models`: fetched, sha256-checked, warmed with one
   batch each), then report ready; the cold start (attempt handed over → ready) goes to the serving figures, the
   presence entry (:mod:`infra.serve_replicas`, rewritten every second by a thread) and the job's history.
2. **Serve**: take a batch from the alias's request list (:meth:`infra.serve_queue.ServeQueue.take_batch`: up to
   ``max_batch``, waiting at most ``max_wait_ms`` after the first; what it takes waits in its own "taken" list until
   the batch's last reply is delivered, so a kill -9 loses none of it), drop requests whose caller has gone (deadline
   passed), group the rest by version (loading a version not held yet, e.g. after a canary change), decode with
   ``cv2.imdecode(IMREAD_COLOR)`` (EXIF orientation applied: boxes are in the displayed image's pixels), letterbox,
   run and decode with :mod:`tasks.postprocess` (the infer job's own steps), and answer each request. An image that
   does not decode gets ``{"id", "error", "status": 422}``; a version that was refused gets 503; the replica goes on.
   The alias is read again every :data:`REFRESH_S` (a canary set or removed, a rollback); every :data:`PROGRESS_S`
   the batches dead replicas held are put back in the queue (``ServeQueue.orphans``: the scaler does it too).
3. **Drain**: between batches it checks its job's flags (``control.check()``; SIGTERM counts as a preempt request):
   on a preempt or cancel it has already answered everything it took, so it marks itself draining, removes its
   presence entry and re-raises; requests still queued go to the other replicas (or wait for this one's requeued
   attempt). None is dropped. A preempted replica is requeued like any job; a cancelled one ends cancelled.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

from infra.model_registry import ModelRegistry
from infra.redis_client import connect
from infra.redis_clock import RedisClock
from infra.serve_queue import Request, ServeQueue
from infra.serve_replicas import HEARTBEAT_S, ServeReplicas
from infra.serve_stats import ServeStats
from tasks.attempt import AttemptControl
from tasks.errors import AttemptInterrupted, BrokerUnavailable, JobFailed, ModelNotFound, YoloqError
from tasks.model_records import split_alias
from tasks.records import iso, utc_now
from tasks.serve_models import Models, Reply, check_backend, detect, error_reply
from tasks.specs import ServeSpec

log = logging.getLogger("yoloq.serve")
REFRESH_S = 1.0  # how often the alias is read again (canary set or removed, rollback)
PROGRESS_S = 5.0  # how often the job's progress (requests answered, batches) is published
IDLE_S = 0.5  # how long one take waits for a first request: also the longest a stop request waits to be seen
RETRY_S = 1.0  # the pause after Redis failed, before trying again


class Beacon:
    """The replica's presence entry, rewritten every :data:`~infra.serve_replicas.HEARTBEAT_S` by a thread."""

    def __init__(self, presence: ServeReplicas, alias: str, entry: dict[str, Any]) -> None:
        self.presence, self.alias, self.entry = presence, alias, entry
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, daemon=True, name="serve-presence")

    def update(self, **fields: Any) -> None:
        """Change the entry and write it now (state changes are seen at once, not at the next beat)."""
        self.entry.update(fields)
        self._write()

    def start(self) -> None:
        """Write the entry and keep it fresh."""
        self._write()
        self._thread.start()

    def stop(self) -> None:
        """Stop the heartbeat and remove the entry (only this attempt's own)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        with contextlib.suppress(YoloqError):  # Redis gone: readers stop counting the entry once it is old
            self.presence.remove(self.alias, str(self.entry["job_id"]), str(self.entry["task_id"]))

    def _beat(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            self._write()

    def _write(self) -> None:
        if self._stop.is_set():
            return
        try:
            self.presence.put(self.alias, dict(self.entry))
        except YoloqError as err:
            log.warning("presence of %s not written: %s", self.entry["job_id"], err)


class Replica:
    """One attempt of a serve job (see the module docstring)."""

    def __init__(self, spec: ServeSpec, control: AttemptControl, workdir: Path, device: str, *,
                 handed_at: float | None, ready: Callable[[], None]) -> None:  # fmt: skip
        self.spec, self.control, self.workdir = spec, control, workdir
        self.handed_at, self.ready = handed_at, ready
        rt = control.rt
        url = rt.settings.redis_url
        self.alias, (self.name, _) = spec.alias, split_alias(spec.alias)
        self.queue = ServeQueue(connect(url, rt.settings.broker_timeout_s, binary=True, read_timeout_s=IDLE_S + 5), url)
        self.clock = RedisClock(self.queue.client)  # the API's clock too: deadlines and latencies across hosts
        self.stats = ServeStats(rt.registry.client, url)
        self.registry = ModelRegistry(rt.registry.client, url)
        self.models = Models(self.registry, self.name, control, workdir / "models", backend=spec.backend,
                             device=device, max_batch=spec.max_batch)  # fmt: skip
        worker, gpu = control.placement()  # a job's worker and GPU, or a pod's host (tasks.standalone)
        entry: dict[str, Any] = {"job_id": control.job_id, "task_id": control.task_id, "worker": worker,
                                 "gpu": gpu, "backend": spec.backend, "versions": [], "state": "warming",
                                 "ready_at": None, "cold_start_s": None}  # fmt: skip
        self.beacon = Beacon(ServeReplicas(rt.registry.client, url), self.alias, entry)
        self.presence = self.beacon.presence
        self.holder = str(control.job_id)  # its taken list's name: a later attempt of this job reclaims it at start
        self.stable, self.answered, self.batches = 0, 0, 0
        self._refreshed = self._progressed = 0.0
        self._lost_batch = False  # Redis failed mid-batch: what this replica holds goes back to the queue

    def run(self) -> dict[str, Any]:
        """Warm up, then serve until told to stop; a stop drains (see the module docstring) and re-raises."""
        check_backend(self.spec.backend)
        self.beacon.start()
        try:
            self._warm()
            self._loop()
        except AttemptInterrupted as why:
            self._drain(why)
            raise
        finally:
            with contextlib.suppress(YoloqError):  # whatever ended it, a batch it still holds goes back to the queue
                self.queue.reclaim(self.alias, self.holder, forget=True)
            self.beacon.stop()
        return {"answered": self.answered, "batches": self.batches}  # never reached: a replica serves until stopped

    def _warm(self) -> None:
        try:
            state = self.registry.alias(self.alias)
        except ModelNotFound as err:
            raise JobFailed(f"cannot serve {self.alias}: {err}") from None
        self.stable = state.version
        self.models.sync(state.versions())
        if not self.models.loaded:
            reasons = "; ".join(reason for reason, _ in self.models.refused.values())
            raise JobFailed(f"cannot serve {self.alias}: no version loads ({reasons})")
        cold = round(time.time() - self.handed_at, 3) if self.handed_at is not None else None
        self.ready()  # from now on a preempt request drains this replica instead of killing its process
        self.beacon.update(state="ready", ready_at=iso(utc_now()), cold_start_s=cold,
                           versions=sorted(self.models.loaded), backend=self.models.backends())  # fmt: skip
        with contextlib.suppress(YoloqError):  # figures, not the serving
            if cold is not None:
                self.stats.record_cold_start(self.alias, cold)
            self.control.note("serve-ready", f"serving {self.alias} v{sorted(self.models.loaded)} with "
                              f"{self.models.backends()}; cold start {cold} s", cold_start_s=cold)  # fmt: skip
        self._refreshed = self._progressed = time.monotonic()

    def _loop(self) -> None:
        spec = self.spec
        self._lost_batch = True  # a previous attempt of this job, killed, may have left a batch taken
        while True:
            try:
                self.control.check()
                if self._lost_batch:
                    if back := self.queue.hold(self.alias, self.holder):
                        log.warning("serving %s: %d taken requests put back in the queue", self.alias, back)
                    self._lost_batch = False
                self._refresh()
                taken = self.queue.take_batch(self.alias, spec.max_batch, spec.max_wait_ms / 1000, idle_s=IDLE_S,
                                              holder=self.holder)  # fmt: skip
                if taken:
                    self._serve(taken, self.clock.now())
            except BrokerUnavailable as err:  # Redis restarting: wait for it (a lost lease ends this attempt)
                log.warning("serving %s: %s; retrying in %.0f s", self.alias, err, RETRY_S)
                self._lost_batch = True
                self.control.stop_requested.wait(RETRY_S)  # a SIGTERM meanwhile is seen by the next check

    def _refresh(self) -> None:
        """Every :data:`REFRESH_S`: read the alias again and hold what it names; publish progress now and then."""
        now = time.monotonic()
        if now - self._refreshed < REFRESH_S:
            return
        self._refreshed = now
        try:
            state = self.registry.alias(self.alias)
        except ModelNotFound:  # the alias was removed: keep serving what is held until the replica is stopped
            return
        self.stable = state.version
        before = sorted(self.models.loaded)
        self.models.sync(state.versions())
        if sorted(self.models.loaded) != before:
            self.beacon.update(versions=sorted(self.models.loaded), backend=self.models.backends())
        if now - self._progressed >= PROGRESS_S:
            self._progressed = now
            self.control.progress(requests=self.answered, batches=self.batches)
            live = {str(r.get("job_id")) for r in self.presence.live(self.alias)} | {self.holder}
            if back := self.queue.orphans(self.alias, live):
                log.warning("serving %s: %d requests held by dead replicas put back in the queue", self.alias, back)

    def _serve(self, taken: list[Request], taken_at: float) -> None:
        """Answer one batch: each version's requests together, each group's replies as soon as they are ready."""
        groups: dict[int, list[Request]] = defaultdict(list)
        for request in taken:
            deadline = request.meta.get("deadline")
            if isinstance(deadline, int | float) and deadline < taken_at:
                continue  # its caller has gone: nobody would read the answer
            version = request.meta.get("version")
            groups[version if isinstance(version, int) and version > 0 else self.stable].append(request)
        release = (self.alias, self.holder)
        if not groups:  # every caller has gone
            self.queue.answer((), release=release)
        for n, (version, requests) in enumerate(groups.items()):
            replies = self._answer(version, requests, taken_at)
            last = n == len(groups) - 1  # the batch is done once its last reply is out: its taken list goes with it
            self.queue.answer(((reply.request_id, reply.body) for reply in replies), release=release if last else None)
            self._record(version, replies, len(taken) if n == 0 else 0)
        self.answered += sum(len(r) for r in groups.values())
        self.batches += 1

    def _answer(self, version: int, requests: list[Request], taken_at: float) -> list[Reply]:
        loaded = self.models.get(version)
        if sorted(self.models.loaded) != self.beacon.entry["versions"]:  # a version loaded on demand
            self.beacon.update(versions=sorted(self.models.loaded), backend=self.models.backends())
        if isinstance(loaded, str):
            return [error_reply(r, loaded, 503) for r in requests]
        try:
            return detect(loaded, requests, taken_at)
        except Exception as err:  # one bad batch must not take the replica down: its callers get 500 and it goes on
            log.exception("serving %s v%d failed a batch", self.alias, version)
            return [error_reply(r, f"the replica failed this batch: {type(err).__name__}: {err}"[:300], 500)
                    for r in requests]  # fmt: skip

    def _record(self, version: int, replies: list[Reply], batch_size: int) -> None:
        done = self.clock.now()
        try:
            self.stats.record(self.alias, self.name, version, latencies_ms=[r.latency_ms(done) for r in replies],
                              detections=[r.detections for r in replies if not r.error],
                              confidences=[c for r in replies for c in r.confidences],
                              errors=sum(1 for r in replies if r.error), batch_size=batch_size, at=done)  # fmt: skip
        except YoloqError as err:  # figures, not the answers: they are delivered already
            log.warning("serving figures of %s v%d not recorded: %s", self.alias, version, err)

    def _drain(self, why: AttemptInterrupted) -> None:
        self.beacon.update(state="draining")
        with contextlib.suppress(YoloqError):
            self.control.note("serve-drained", f"{why}: stopped taking requests after answering {self.answered} in "
                              f"{self.batches} batches; what is queued goes to the other replicas",
                              answered=self.answered)  # fmt: skip


def run_serve(spec: ServeSpec, control: AttemptControl, workdir: Path, device: str, *, handed_at: float | None = None,
              ready: Callable[[], None] = lambda: None) -> dict[str, Any]:  # fmt: skip
    """Serve ``spec.alias`` until the job is preempted or cancelled (then drain and raise: the attempt ends as such).
    ``handed_at``: when the attempt was handed over (the cold start's origin); ``ready``: called once it serves (the
    job process's "work started" marker: a preempt request now drains it instead of killing it)."""
    return Replica(spec, control, workdir, device, handed_at=handed_at, ready=ready).run()
