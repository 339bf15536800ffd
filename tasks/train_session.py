"""The Ultralytics callbacks of one training attempt: progress, periodic checkpoints, cooperative preemption.

Preemption never uses ``trainer.stop = True`` (it strips the optimizer and a resume silently starts over). When the
job's flag is set, ``on_train_batch_end`` flushes any accumulated gradients into an optimizer step, writes a
**mid-epoch** resumable checkpoint (epoch counter one back, so the resume re-enters this epoch), publishes it with the
number of batches already done, and raises :class:`~tasks.errors.Preempted`. The resumed attempt skips exactly those
batches of the interrupted epoch (:class:`SkipFirst`), so no batch is trained twice and none is lost.

A request that arrives after the epoch's last batch is honoured during its validation, which on a small dataset can
take longer than many batches: the checkpoint then records one batch fewer than were trained, so the resumed attempt
trains that epoch's last batch once more (one batch redone, not a validation waited for). With an ``abandon`` hook
(the job process's "record this outcome and exit") a :class:`~tasks.val_watch.ValidationWatch` thread acts at once,
mid-batch; without one, ``on_val_batch_end`` does, at the end of the validation batch. A request that arrives while
the epoch's own checkpoint is saved or published is honoured right after it (``on_model_save``): that checkpoint is
already exact, so nothing more is trained or written.

Checkpoints are published from a thread (:mod:`tasks.checkpoint_uploads`): an epoch's save stages a copy and training
goes on while it uploads, an S3 outage included (retried with backoff; the newest staged copy wins). A preemption
waits for its checkpoint to reach S3 (:data:`PREEMPT_FLUSH_S` at most) before it yields.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tasks.checkpoint_uploads import Done, Publisher
from tasks.checkpoints import CheckpointStore, Verify
from tasks.errors import Cancelled, Preempted
from tasks.runner import Control
from tasks.val_watch import ValidationWatch

PROGRESS_EVERY_S = 0.5
# How long a preempted attempt waits for its checkpoint to reach S3 before it yields anyway (and the job resumes from
# the newest one that did): under the supervisor's grace period (60 s), after which it would be terminated.
PREEMPT_FLUSH_S = 40.0


class SkipFirst:
    """A train loader that yields only the last ``len - skip`` batches of one epoch (the resumed one)."""

    def __init__(self, loader: Any, skip: int) -> None:
        self._loader, self._skip = loader, skip

    def __getattr__(self, name: str) -> Any:
        return getattr(self._loader, name)

    def __len__(self) -> int:
        return len(self._loader)

    def __iter__(self) -> Iterator[Any]:
        remaining = len(self._loader) - self._skip
        for n, batch in enumerate(self._loader):
            if n >= remaining:
                break
            yield batch

    @property
    def inner(self) -> Any:
        """The wrapped loader, restored after the resumed epoch."""
        return self._loader


@dataclass
class Resume:
    """Where an attempt starts: epoch to run next (0-based) and batches of it already done."""

    epoch: int = 0
    batch: int = 0


@dataclass
class TrainSession:
    """State shared by the callbacks of one attempt; every method is an Ultralytics callback."""

    control: Control
    checkpoints: CheckpointStore
    verify: Verify
    save_period: int
    threads: int
    resume: Resume = field(default_factory=Resume)
    history: list[dict[str, Any]] = field(default_factory=list)
    batch: int = 0
    batches_run: int = 0
    best_dirty: bool = False
    latest: dict[str, float] = field(default_factory=dict)  # last epoch's headline metrics, shown in progress
    first_batch: Callable[[], None] | None = None  # called once, at this attempt's first trained batch
    abandon: Callable[[Preempted | Cancelled], None] | None = None  # record the outcome and end the process
    _watch: ValidationWatch | None = None
    _last_progress: float = 0.0
    _epoch_end_of: Any = None  # the trainer, between an epoch's last batch and the next epoch's start
    _publisher: Publisher | None = None  # uploads checkpoints from a thread (started at the first one)

    def register(self, model: Any) -> None:
        """Attach every callback to a ``YOLO`` model before ``train()``."""
        for name in ("on_train_start", "on_train_epoch_start", "on_train_batch_end", "on_val_start",
                     "on_val_batch_end", "on_val_end", "on_model_save"):  # fmt: skip
            model.add_callback(name, getattr(self, name))
        if self.abandon is not None:
            self._watch = ValidationWatch(self.control.check, self._stop_in_validation)

    def on_train_start(self, trainer: Any) -> None:
        """Ultralytics pins torch to one thread on small machines; use the threads this worker was given."""
        import torch

        torch.set_num_threads(self.threads)

    def on_train_epoch_start(self, trainer: Any) -> None:
        """Skip the batches the previous attempt already trained in its interrupted epoch; restore afterwards."""
        loader = trainer.train_loader
        if isinstance(loader, SkipFirst):
            trainer.train_loader = loader.inner
            trainer.train_loader.reset()  # realign the persistent iterator to epoch boundaries
        self.batch, self._epoch_end_of = 0, None
        if self.resume.batch and trainer.epoch == self.resume.epoch:
            trainer.train_loader = SkipFirst(trainer.train_loader, self.resume.batch)
            self.batch = self.resume.batch

    def on_train_batch_end(self, trainer: Any) -> None:
        """Publish progress (throttled) and obey a preempt or cancel request at this batch boundary."""
        self.batch += 1
        self.batches_run += 1
        if self.batches_run == 1 and self.first_batch is not None:
            self.first_batch()  # the job process marks that a preempt request now checkpoints, and records the event
        nb = len(trainer.train_loader)
        now = time.monotonic()
        if now - self._last_progress >= PROGRESS_EVERY_S or self.batch == nb:
            self._last_progress = now
            self.control.progress(epoch=trainer.epoch, epochs=trainer.epochs, batch=self.batch, batches=nb,
                                  **self.latest)  # fmt: skip
        if self.batch >= nb:
            self._epoch_end_of = trainer
            return  # the epoch is done; a request is honoured during its validation (or at the next batch)
        try:
            self.control.check()
        except Preempted:
            self.save_mid_epoch(trainer)
            raise

    def on_val_start(self, validator: Any) -> None:
        """Watch for requests from a thread while the epoch validates (when this process can be abandoned)."""
        if self._watch is not None and self._epoch_end_of is not None and getattr(validator, "training", False):
            self._watch.begin()

    def on_val_end(self, validator: Any) -> None:
        """Validation is over: stop watching before the epoch's own save (waits out a request being acted on)."""
        if self._watch is not None:
            self._watch.end()

    def _stop_in_validation(self, request: Preempted | Cancelled) -> None:
        """From the watch thread: checkpoint one batch back (a preempt), then let the job process record and exit."""
        trainer = self._epoch_end_of
        if isinstance(request, Preempted) and trainer is not None:
            self.batch = len(trainer.train_loader) - 1
            self.save_mid_epoch(trainer, why="preempted during validation (abandoned mid-batch)")
        assert self.abandon is not None
        self.abandon(request)

    def on_val_batch_end(self, validator: Any) -> None:
        """Obey a preempt or cancel request during an epoch's validation instead of waiting for it to finish."""
        trainer = self._epoch_end_of
        if trainer is None or not getattr(validator, "training", False) or self._watch is not None:
            return  # not the validation inside training (e.g. final evaluation of best.pt), or the watch obeys
        try:
            self.control.check()
        except Preempted:
            self.batch = len(trainer.train_loader) - 1  # re-enter the epoch to train its last batch again
            self.save_mid_epoch(trainer, why="preempted during validation")
            raise

    def save_mid_epoch(self, trainer: Any, why: str = "preempted mid-epoch") -> None:
        """Write and publish a resumable checkpoint that re-enters the current epoch after ``self.batch`` batches."""
        if _grads_pending(trainer):
            trainer.optimizer_step()  # fold accumulated gradients in: a smaller last step beats losing them
        # Ultralytics copies the train args onto the EMA only at epoch end; a resume reads them from there.
        trainer.ema.update_attr(trainer.model, include=["yaml", "nc", "args", "names", "stride", "class_weights"])
        best, period = trainer.best, trainer.save_period
        trainer.best, trainer.save_period = trainer.wdir / "mid-epoch-discard.pt", -1
        trainer.epoch -= 1
        try:
            trainer.save_model()
        finally:
            trainer.epoch += 1
            trainer.best, trainer.save_period = best, period
            (trainer.wdir / "mid-epoch-discard.pt").unlink(missing_ok=True)
        self.publish(trainer, epoch=trainer.epoch, batch=self.batch, why=why, wait=True)

    def on_model_save(self, trainer: Any) -> None:
        """After each epoch's save: record its metrics, note a new best, publish every ``save_period`` epochs."""
        self.record_epoch(trainer)
        if trainer.best_fitness == trainer.fitness:
            self.best_dirty = True
        done = trainer.epoch + 1
        published = done % self.save_period == 0 or done >= trainer.epochs
        if published:
            self.publish(trainer, epoch=done, batch=0, why=f"epoch {done} done")
        if done >= trainer.epochs:
            return  # the last epoch: finishing beats a resume that would only run the final evaluation
        try:
            self.control.check()
        except Preempted:
            if not published:  # last.pt was just saved at this very point: publish it, train nothing more
                self.publish(trainer, epoch=done, batch=0, why=f"preempted after epoch {done}", wait=True)
            else:
                self.flush(PREEMPT_FLUSH_S)
                self.control.note("stopped", f"preempt obeyed right after epoch {done}'s checkpoint: nothing to add")
            raise

    def publish(self, trainer: Any, epoch: int, batch: int, why: str, wait: bool = False) -> None:
        """Stage last.pt (and best.pt when it changed) for upload and go on training (an S3 outage is retried with
        backoff meanwhile: tasks.checkpoint_uploads); with ``wait`` (a preemption) return once it is in S3."""
        best = Path(trainer.best) if self.best_dirty and Path(trainer.best).exists() else None
        self.best_dirty = False
        if self._publisher is None:
            self._publisher = Publisher(self.checkpoints, self.verify, self._published)
        self._publisher.stage(Path(trainer.last), (epoch, batch, why), self.history, best)
        if wait:
            self.flush(PREEMPT_FLUSH_S)

    def flush(self, timeout_s: float) -> bool:
        """Wait until every staged checkpoint is in S3; False (and a note in the job's history) after ``timeout_s``."""
        if self._publisher is None or self._publisher.flush(timeout_s):
            return True
        self.control.note("checkpoint-delayed", f"the newest checkpoint did not reach S3 within {timeout_s:.0f} s; "
                          "a resume starts from the newest one that did")  # fmt: skip
        return False

    def _published(self, done: Done) -> None:
        """From the publisher's thread: point the job at its newest checkpoint and record the upload."""
        ref, retried = done.ref, f" after {done.failed} failed tries over {done.waited_s:.1f} s" if done.failed else ""
        self.control.checkpoint_saved(self.checkpoints.store.uri(ref.key))
        self.control.note(
            "checkpoint",
            f"{done.staged.why}: {ref.key} ({ref.size / 1e6:.1f} MB, epoch {ref.epoch}, batch {ref.batch}) in "
            f"{done.upload_s:.2f} s{retried}",
            bytes=ref.size, publish_s=round(done.upload_s, 3), **({"failed_tries": done.failed} if done.failed else {}),
        )  # fmt: skip

    def record_epoch(self, trainer: Any) -> None:
        """Append this epoch's losses and validation metrics to the job's history (once per epoch)."""
        if any(row["epoch"] == trainer.epoch for row in self.history):
            return
        losses = trainer.label_loss_items(trainer.tloss, prefix="train") if trainer.tloss is not None else {}
        row = {"epoch": trainer.epoch, **_floats(losses), **_floats(trainer.metrics)}
        self.history.append(row)
        headline = {"map50": "metrics/mAP50(B)", "map50_95": "metrics/mAP50-95(B)", "box_loss": "train/box_loss"}
        self.latest = {name: row[key] for name, key in headline.items() if key in row}


def _floats(values: dict[str, Any]) -> dict[str, float]:
    return {str(k): round(float(v), 6) for k, v in values.items()}


def _grads_pending(trainer: Any) -> bool:
    """Whether backward() has accumulated gradients that no optimizer step has applied yet."""
    return any(p.grad is not None and bool(p.grad.any()) for p in trainer.model.parameters())
