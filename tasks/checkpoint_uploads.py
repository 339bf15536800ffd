"""Checkpoint uploads that ride out an S3 outage: retried with backoff from a thread while training goes on.

An epoch's checkpoint upload that failed used to fail the whole job: the error left the Ultralytics callback and
ended training. Now the callback stages a copy of ``last.pt`` (and of ``best.pt`` when it improved) and returns; the
:class:`Publisher` thread uploads it through :meth:`CheckpointStore.publish_copy`, retrying a failed S3 request with
exponential backoff (:class:`Backoff`). A newer checkpoint staged while an older one still waits replaces it: a
resume only ever wants the newest. The manifest moves only after its object is uploaded and verified, so it never
names an object that is not in the store, outage or not.

A preemption and the end of training :meth:`~Publisher.flush` the queue (a requeued job must find its newest
checkpoint in S3); a flush that times out leaves the job to resume from the newest checkpoint that did arrive.
:func:`with_retries` is the same backoff for calls that have nothing to go on with meanwhile (fetching the resume
point, uploading the final weights). Only S3 errors are retried: a checkpoint that fails verification is a
:class:`CheckpointError` (itself a StorageError) and is never retried.
"""

from __future__ import annotations

import logging
import random
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TypeVar

from tasks.checkpoints import CheckpointRef, CheckpointStore, Verify
from tasks.errors import CheckpointError, StorageError

log = logging.getLogger("yoloq.checkpoints")
T = TypeVar("T")


@dataclass(frozen=True)
class Backoff:
    """Exponential backoff with full jitter: the n-th wait is uniform in [0, min(max_s, first_s * factor**n)];
    ``give_up_s`` bounds :func:`with_retries` (the publisher itself keeps trying while training goes on)."""

    first_s: float = 0.5
    factor: float = 2.0
    max_s: float = 15.0
    give_up_s: float = 900.0

    def delays(self, rng: random.Random | None = None) -> Iterator[float]:
        """The waits between tries, forever."""
        rng = rng or random.Random()
        n = 0
        while True:
            yield rng.uniform(0, min(self.max_s, self.first_s * self.factor**n))
            n += 1


DEFAULT = Backoff()


def transient(err: BaseException) -> bool:
    """A failed S3 request (worth another try), not a checkpoint found unusable (never worth one)."""
    return isinstance(err, StorageError) and not isinstance(err, CheckpointError)


def with_retries(call: Callable[[], T], what: str, backoff: Backoff = DEFAULT,
                 sleep: Callable[[float], None] = time.sleep) -> T:  # fmt: skip
    """``call()``, tried again after each failed S3 request with backoff until ``backoff.give_up_s`` has passed (then
    its last error is raised): a job waits out an S3 outage instead of failing on its first refused request."""
    started = time.monotonic()
    for tries, delay in enumerate(backoff.delays(), start=1):
        try:
            return call()
        except StorageError as err:
            if not transient(err) or time.monotonic() - started + delay > backoff.give_up_s:
                raise
            if tries == 1 or tries % 10 == 0:
                log.warning("%s failed (try %d), retrying with backoff: %s", what, tries, err)
            sleep(delay)
    raise AssertionError("unreachable: delays() never ends")


@dataclass(frozen=True)
class Staged:
    """One checkpoint waiting for upload: private copies of last.pt (and best.pt when it improved), the metrics
    history at that moment, and why it was taken."""

    checkpoint: Path
    epoch: int
    batch: int
    why: str
    history: list[dict[str, Any]]
    best: Path | None = None
    staged_at: float = field(default_factory=time.monotonic)


@dataclass(frozen=True)
class Done:
    """A staged checkpoint now in the store: its ref, the seconds of the try that got it there, the seconds since it
    was staged, and how many tries failed before."""

    staged: Staged
    ref: CheckpointRef
    upload_s: float
    waited_s: float
    failed: int


Published = Callable[[Done], None]


class Publisher:
    """Uploads staged checkpoints from one thread, newest wins, retrying S3 errors with backoff until they arrive."""

    def __init__(self, checkpoints: CheckpointStore, verify: Verify, published: Published,
                 backoff: Backoff = DEFAULT) -> None:  # fmt: skip
        self.checkpoints, self.verify, self.published, self.backoff = checkpoints, verify, published, backoff
        self._cond = threading.Condition()
        self._pending: Staged | None = None
        self._busy = False
        self._n = 0
        self._thread = threading.Thread(target=self._loop, daemon=True, name="checkpoint-publisher")
        self._thread.start()

    def stage(self, last: Path, where: tuple[int, int, str], history: list[dict[str, Any]], best: Path | None) -> None:
        """Copy ``last`` (and ``best``) now, while the trainer is between writes, and queue the copy for upload;
        ``where`` is (epoch, batch, why). A copy still waiting is replaced (its best.pt is kept when this one has
        none)."""
        with self._cond:
            self._n += 1
            n = self._n
        copy = _copy(last, f".staged-{n}")
        best_copy = _copy(best, f".staged-{n}") if best is not None else None
        staged = Staged(copy, *where, history=list(history), best=best_copy)
        with self._cond:
            if self._pending is not None:
                staged = self._supersede(self._pending, staged)
            self._pending = staged
            self._cond.notify_all()

    def flush(self, timeout_s: float) -> bool:
        """Wait until every staged checkpoint is uploaded (True) or ``timeout_s`` passed (False)."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while self._pending is not None or self._busy:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
        return True

    def _supersede(self, old: Staged, new: Staged) -> Staged:
        old.checkpoint.unlink(missing_ok=True)
        if new.best is None and old.best is not None:
            return replace(new, best=old.best)
        if old.best is not None:
            old.best.unlink(missing_ok=True)
        return new

    def _take(self) -> Staged:
        with self._cond:
            while self._pending is None:
                self._cond.wait()
            staged, self._pending, self._busy = self._pending, None, True
            return staged

    def _loop(self) -> None:
        while True:
            staged = self._take()
            try:
                self._upload(staged)
            except Exception:  # the thread must outlive any one checkpoint; the next one is tried as usual
                log.exception("checkpoint (%s) not published", staged.why)
            finally:
                with self._cond:
                    self._busy = False
                    self._cond.notify_all()

    def _upload(self, staged: Staged) -> None:
        """Publish ``staged`` (retrying S3 errors with backoff); a newer staged checkpoint takes its place meanwhile."""
        delays, failed = self.backoff.delays(), 0
        try:
            while True:
                began = time.monotonic()
                try:
                    ref = self.checkpoints.publish_copy(staged.checkpoint, staged.epoch, staged.batch, self.verify)
                    if staged.best is not None:
                        self.checkpoints.publish_result("best.pt", staged.best)
                    self.checkpoints.store.put_json(self.checkpoints.results_key("metrics.json"), staged.history)
                    break
                except StorageError as err:
                    if not transient(err):
                        raise
                    failed += 1
                    if failed == 1 or failed % 10 == 0:
                        log.warning("checkpoint upload failed (try %d), retrying with backoff: %s", failed, err)
                    if (newer := self._wait_or_newer(next(delays))) is not None:
                        staged = self._supersede(staged, newer)
            now = time.monotonic()
            self.published(Done(staged, ref, now - began, now - staged.staged_at, failed))
        finally:
            for path in (staged.checkpoint, staged.best):
                if path is not None:
                    path.unlink(missing_ok=True)

    def _wait_or_newer(self, delay: float) -> Staged | None:
        """Wait ``delay`` seconds, or less when a newer checkpoint is staged (then it is taken and returned)."""
        with self._cond:
            if self._pending is None:
                self._cond.wait(delay)
            newer, self._pending = self._pending, None
            return newer


def _copy(path: Path, suffix: str) -> Path:
    copy = path.with_name(path.name + suffix)
    shutil.copyfile(path, copy)
    return copy
