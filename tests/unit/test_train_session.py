"""tasks/train_session.py with fake trainers: the resumed epoch skips the batches already trained, a preempt
request at a batch boundary writes a mid-epoch checkpoint, and epoch saves publish on schedule."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import numpy as np
import pytest

from infra.fakes import MemoryStore
from tasks import train_session
from tasks.checkpoints import CheckpointStore
from tasks.errors import Cancelled, Preempted
from tasks.runner import Control
from tasks.train_session import Resume, SkipFirst, TrainSession

pytestmark = pytest.mark.unit


class FakeLoader:
    """A train loader: ``n`` batches per epoch, a reset() counter, an attribute to delegate, and a pull count."""

    def __init__(self, n: int) -> None:
        self.n, self.resets, self.pulled = n, 0, 0
        self.dataset = "the-dataset"

    def __len__(self) -> int:
        return self.n

    def __iter__(self) -> Iterator[int]:
        for i in range(self.n):
            self.pulled += 1
            yield i

    def reset(self) -> None:
        self.resets += 1


class FakeControl:
    """Records what the callbacks report; check() raises ``stop`` when set."""

    def __init__(self, stop: Exception | None = None) -> None:
        self.job_id, self.store = "j1", MemoryStore()
        self.stop = stop
        self.checks = 0
        self.progress_log: list[dict[str, Any]] = []
        self.saved: list[str] = []
        self.notes: list[tuple[str, str]] = []

    def progress(self, **values: Any) -> None:
        self.progress_log.append(values)

    def check(self) -> None:
        self.checks += 1
        if self.stop is not None:
            raise self.stop

    def checkpoint_saved(self, uri: str) -> None:
        self.saved.append(uri)

    def note(self, kind: str, reason: str, **fields: Any) -> None:
        self.notes.append((kind, reason))


def ok(path: Path) -> None:
    """Accept every checkpoint."""


def _session(control: FakeControl | None = None, resume: Resume | None = None, save_period: int = 1,
             abandon: Any = None) -> TrainSession:  # fmt: skip
    control = control or FakeControl()
    session = TrainSession(
        control=cast(Control, control),
        checkpoints=CheckpointStore(control.store, control.job_id),
        verify=ok,
        save_period=save_period,
        threads=1,
        resume=resume or Resume(),
        abandon=abandon,
    )
    session.register(SimpleNamespace(add_callback=lambda name, fn: None))
    return session


def _trainer(loader: Any, epoch: int = 0, epochs: int = 10) -> SimpleNamespace:
    return SimpleNamespace(epoch=epoch, epochs=epochs, train_loader=loader)


# --- SkipFirst ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("n", "skip", "expected"),
    [
        (10, 3, 7),
        (10, 0, 10),
        (10, 9, 1),
        (10, 10, 0),
        (10, 12, 0),
        (1, 0, 1),
    ],
)
def test_skip_first_yields_only_the_remaining_batches(n: int, skip: int, expected: int) -> None:
    loader = FakeLoader(n)
    got = list(SkipFirst(loader, skip))
    # The resumed epoch trains len - skip batches (positions skip..len-1): it takes the loader's next ones rather
    # than loading and discarding ``skip`` batches; on_train_epoch_start resets the loader afterwards.
    assert got == list(range(expected))
    assert loader.pulled <= expected + 1, "no batch is loaded just to be thrown away (one look-ahead at most)"


def test_skip_first_keeps_the_epoch_length_and_delegates_attributes() -> None:
    loader = FakeLoader(10)
    wrapped = SkipFirst(loader, 4)
    assert len(wrapped) == 10, "the trainer's batches-per-epoch does not change"
    assert wrapped.dataset == "the-dataset"
    assert wrapped.inner is loader
    wrapped.reset()
    assert loader.resets == 1
    with pytest.raises(AttributeError):
        _ = wrapped.no_such_attribute


# --- on_train_epoch_start -------------------------------------------------------------------------------------------


def test_only_the_resumed_epoch_is_wrapped_and_the_loader_is_restored_after() -> None:
    loader = FakeLoader(10)
    session = _session(resume=Resume(epoch=2, batch=3))
    trainer = _trainer(loader, epoch=1)

    session.on_train_epoch_start(trainer)  # an earlier epoch (never happens on resume, but must not wrap)
    assert trainer.train_loader is loader
    assert session.batch == 0

    trainer.epoch = 2
    session.on_train_epoch_start(trainer)
    assert isinstance(trainer.train_loader, SkipFirst)
    assert trainer.train_loader.inner is loader
    assert session.batch == 3, "progress counts from the batches already done"
    assert list(trainer.train_loader) == list(range(7))
    assert loader.resets == 0

    trainer.epoch = 3
    session.on_train_epoch_start(trainer)
    assert trainer.train_loader is loader
    assert loader.resets == 1, "the persistent iterator is realigned once"
    assert session.batch == 0

    trainer.epoch = 4
    session.on_train_epoch_start(trainer)
    assert trainer.train_loader is loader
    assert loader.resets == 1


@pytest.mark.parametrize("resume", [Resume(), Resume(epoch=2, batch=0)], ids=["fresh", "epoch-boundary"])
def test_a_resume_at_an_epoch_boundary_never_wraps(resume: Resume) -> None:
    loader = FakeLoader(10)
    session = _session(resume=resume)
    trainer = _trainer(loader)
    for epoch in range(4):
        trainer.epoch = epoch
        session.on_train_epoch_start(trainer)
        assert trainer.train_loader is loader
        assert session.batch == 0
    assert loader.resets == 0


# --- on_train_batch_end ---------------------------------------------------------------------------------------------


@pytest.fixture
def saves(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    calls: list[Any] = []
    monkeypatch.setattr(TrainSession, "save_mid_epoch", lambda self, trainer, **_: calls.append((self.batch, trainer)))
    return calls


def test_preempt_mid_epoch_saves_then_raises(saves: list[Any]) -> None:
    control = FakeControl(stop=Preempted("preempt requested"))
    session = _session(control)
    trainer = _trainer(FakeLoader(10))
    session.on_train_epoch_start(trainer)
    with pytest.raises(Preempted):
        session.on_train_batch_end(trainer)
    assert saves == [(1, trainer)]
    assert session.batch == 1


def test_preempt_at_the_last_batch_waits_for_the_epoch_end(saves: list[Any]) -> None:
    control = FakeControl(stop=Preempted("preempt requested"))
    session = _session(control)
    trainer = _trainer(FakeLoader(10))
    session.on_train_epoch_start(trainer)
    session.batch = 9
    session.on_train_batch_end(trainer)  # batch 10 of 10: no check, no save, no raise
    assert saves == []
    assert control.checks == 0


def test_preempt_during_the_epochs_validation_saves_one_batch_back_then_raises(saves: list[Any]) -> None:
    control = FakeControl()
    session = _session(control)
    trainer = _trainer(FakeLoader(10))
    session.on_train_epoch_start(trainer)
    for _ in trainer.train_loader:
        session.on_train_batch_end(trainer)
    session.on_val_batch_end(SimpleNamespace(training=True))  # no request: validation goes on
    control.stop = Preempted("preempt requested")
    with pytest.raises(Preempted):
        session.on_val_batch_end(SimpleNamespace(training=True))
    assert saves == [(9, trainer)], "the resume trains the epoch's last batch again, then validates"


@pytest.mark.parametrize("where", ["before the epoch ends", "final evaluation", "next epoch"])
def test_validation_outside_an_epoch_end_ignores_requests(saves: list[Any], where: str) -> None:
    control = FakeControl()
    session = _session(control)
    trainer = _trainer(FakeLoader(3))
    session.on_train_epoch_start(trainer)
    if where != "before the epoch ends":
        for _ in trainer.train_loader:
            session.on_train_batch_end(trainer)
    if where == "next epoch":
        trainer.epoch = 1
        session.on_train_epoch_start(trainer)
    control.stop, checks = Preempted("preempt requested"), control.checks
    session.on_val_batch_end(SimpleNamespace(training=where != "final evaluation"))
    assert (saves, control.checks) == ([], checks)


def test_the_resumed_epochs_last_batch_is_counted_from_the_resume_point(saves: list[Any]) -> None:
    control = FakeControl()
    session = _session(control, resume=Resume(epoch=0, batch=6))
    trainer = _trainer(FakeLoader(10))
    session.on_train_epoch_start(trainer)
    for _ in trainer.train_loader:
        session.on_train_batch_end(trainer)
    assert session.batch == 10
    assert control.checks == 3, "batches 7, 8 and 9 check; batch 10 ends the epoch"
    last = control.progress_log[-1]
    assert (last["epoch"], last["epochs"], last["batch"], last["batches"]) == (0, 10, 10, 10)
    control.stop = Preempted("now")
    trainer.epoch = 1
    session.on_train_epoch_start(trainer)
    with pytest.raises(Preempted):
        session.on_train_batch_end(trainer)
    assert [batch for batch, _ in saves] == [1]


def test_cancel_stops_without_a_checkpoint(saves: list[Any]) -> None:
    session = _session(FakeControl(stop=Cancelled("cancelled")))
    trainer = _trainer(FakeLoader(10))
    session.on_train_epoch_start(trainer)
    with pytest.raises(Cancelled):
        session.on_train_batch_end(trainer)
    assert saves == []


def test_no_request_no_save(saves: list[Any]) -> None:
    control = FakeControl()
    session = _session(control)
    trainer = _trainer(FakeLoader(5))
    session.on_train_epoch_start(trainer)
    for _ in range(5):
        session.on_train_batch_end(trainer)
    assert saves == []
    assert (session.batch, session.batches_run, control.checks) == (5, 5, 4)


@pytest.mark.parametrize(("every_s", "reported"), [(0.0, [1, 2, 3, 4]), (1e12, [4])], ids=["unthrottled", "throttled"])
def test_progress_is_throttled_but_the_epochs_last_batch_is_always_reported(
    monkeypatch: pytest.MonkeyPatch, every_s: float, reported: list[int]
) -> None:
    monkeypatch.setattr(train_session, "PROGRESS_EVERY_S", every_s)
    control = FakeControl()
    session = _session(control)
    trainer = _trainer(FakeLoader(4), epoch=2, epochs=5)
    session.on_train_epoch_start(trainer)
    for _ in range(4):
        session.on_train_batch_end(trainer)
    assert [p["batch"] for p in control.progress_log] == reported
    assert all((p["epoch"], p["epochs"], p["batches"]) == (2, 5, 4) for p in control.progress_log)


# --- save_mid_epoch and publish -------------------------------------------------------------------------------------


class FakeTrainer:
    """Just enough of an Ultralytics trainer for save_mid_epoch: save_model writes last.pt and best."""

    def __init__(self, wdir: Path, grads: list[np.ndarray | None], epoch: int = 3, fail_save: bool = False) -> None:
        self.wdir, self.epoch, self.epochs = wdir, epoch, 10
        self.last, self.best, self.save_period = wdir / "last.pt", wdir / "best.pt", 5
        self.train_loader = FakeLoader(10)
        self.model = SimpleNamespace(parameters=lambda: [SimpleNamespace(grad=g) for g in grads])
        self.ema = SimpleNamespace(update_attr=self._update_attr)
        self.fail_save = fail_save
        self.steps = 0
        self.ema_updates: list[list[str]] = []
        self.saved_as: list[tuple[int, Path, int]] = []

    def _update_attr(self, model: Any, include: list[str]) -> None:
        self.ema_updates.append(include)

    def optimizer_step(self) -> None:
        self.steps += 1

    def save_model(self) -> None:
        self.saved_as.append((self.epoch, self.best, self.save_period))
        Path(self.best).write_bytes(b"discard")
        if self.fail_save:
            raise OSError("disk full")
        self.last.write_bytes(f"checkpoint epoch={self.epoch}".encode())


@pytest.mark.parametrize(
    ("grads", "steps"),
    [
        ([None, None], 0),
        ([np.zeros(3), None], 0),
        ([np.zeros(3), np.array([0.0, 0.1])], 1),
    ],
    ids=["no-grads", "zero-grads", "pending-grads"],
)
def test_save_mid_epoch_writes_a_checkpoint_that_reenters_the_epoch(
    tmp_path: Path, grads: list[np.ndarray | None], steps: int
) -> None:
    control = FakeControl()
    session = _session(control)
    trainer = FakeTrainer(tmp_path, grads, epoch=3)
    session.batch = 4
    session.save_mid_epoch(trainer)
    assert trainer.steps == steps, "accumulated gradients are folded in, and only then"
    assert trainer.ema_updates and "args" in trainer.ema_updates[0]
    # Saved as if epoch 3 had not started (so a resume re-enters it), never as a new best, never as a period save.
    assert trainer.saved_as == [(2, tmp_path / "mid-epoch-discard.pt", -1)]
    assert (trainer.epoch, trainer.best, trainer.save_period) == (3, tmp_path / "best.pt", 5)
    assert not (tmp_path / "mid-epoch-discard.pt").exists()
    manifest = control.store.get_json("jobs/j1/checkpoints/manifest.json")
    assert manifest["newest"]["key"] == "jobs/j1/checkpoints/000001-e3-b4.pt"
    assert control.store.objects[manifest["newest"]["key"]] == b"checkpoint epoch=2"
    assert control.saved == ["s3://mem/jobs/j1/checkpoints/000001-e3-b4.pt"]
    assert control.notes[0][0] == "checkpoint"
    assert control.notes[0][1].startswith("preempted mid-epoch: jobs/j1/checkpoints/000001-e3-b4.pt")


def test_a_failed_mid_epoch_save_restores_the_trainer(tmp_path: Path) -> None:
    control = FakeControl()
    session = _session(control)
    trainer = FakeTrainer(tmp_path, [None], epoch=3, fail_save=True)
    with pytest.raises(OSError, match="disk full"):
        session.save_mid_epoch(trainer)
    assert (trainer.epoch, trainer.best, trainer.save_period) == (3, tmp_path / "best.pt", 5)
    assert not (tmp_path / "mid-epoch-discard.pt").exists()
    assert control.store.get_json("jobs/j1/checkpoints/manifest.json") is None


def _epoch_trainer(tmp_path: Path, epoch: int, epochs: int, best: bool) -> SimpleNamespace:
    (tmp_path / "last.pt").write_bytes(f"last-{epoch}".encode())
    (tmp_path / "best.pt").write_bytes(f"best-{epoch}".encode())
    return SimpleNamespace(
        epoch=epoch,
        epochs=epochs,
        last=tmp_path / "last.pt",
        best=tmp_path / "best.pt",
        tloss=np.array([1.5, 0.5]),
        label_loss_items=lambda tloss, prefix: {f"{prefix}/box_loss": tloss[0], f"{prefix}/cls_loss": tloss[1]},
        metrics={"metrics/mAP50(B)": np.float32(0.25)},
        fitness=0.3,
        best_fitness=0.3 if best else 0.9,
    )


def test_on_model_save_publishes_every_save_period_and_the_last_epoch(tmp_path: Path) -> None:
    control = FakeControl()
    session = _session(control, save_period=2)
    published = []
    for epoch in range(5):
        trainer = _epoch_trainer(tmp_path, epoch, epochs=5, best=epoch == 1)
        session.on_model_save(trainer)
        assert session.flush(5), "uploaded from the publisher's thread: waited for here"
        published.append(len(control.saved))
    assert published == [0, 1, 1, 2, 3], "after epochs 2 and 4 (the period) and 5 (the last)"
    assert [row["epoch"] for row in session.history] == [0, 1, 2, 3, 4]
    assert session.history[0] == {"epoch": 0, "train/box_loss": 1.5, "train/cls_loss": 0.5, "metrics/mAP50(B)": 0.25}
    store = control.store
    assert store.objects["jobs/j1/results/best.pt"] == b"best-1", "best.pt is uploaded when it changed"
    assert store.get_json("jobs/j1/results/metrics.json") == session.history
    newest = store.get_json("jobs/j1/checkpoints/manifest.json")["newest"]
    assert (newest["epoch"], newest["batch"]) == (5, 0)


def test_an_epoch_is_recorded_once(tmp_path: Path) -> None:
    session = _session()
    trainer = _epoch_trainer(tmp_path, 0, epochs=5, best=False)
    session.record_epoch(trainer)
    session.record_epoch(trainer)
    assert [row["epoch"] for row in session.history] == [0]


def test_register_attaches_every_callback() -> None:
    session = _session()
    added: list[tuple[str, Any]] = []
    session.register(SimpleNamespace(add_callback=lambda name, fn: added.append((name, fn))))
    assert [name for name, _ in added] == [
        "on_train_start",
        "on_train_epoch_start",
        "on_train_batch_end",
        "on_val_start",
        "on_val_batch_end",
        "on_val_end",
        "on_model_save",
    ]
    assert all(fn == getattr(session, name) for name, fn in added)
    assert session._watch is None, "no abandon hook (no process to end): on_val_batch_end obeys instead"


# --- the validation watch (a process that can be abandoned) -------------------------------------------------------


class Abandoned:
    """The job process's abandon hook: records the request and the thread it came from."""

    def __init__(self) -> None:
        self.calls: list[tuple[Exception, str]] = []
        self.done = threading.Event()

    def __call__(self, request: Exception) -> None:
        self.calls.append((request, threading.current_thread().name))
        self.done.set()


def _validating(session: TrainSession, control: FakeControl, batches: int = 10) -> SimpleNamespace:
    """Train one epoch and start its validation."""
    trainer = _trainer(FakeLoader(batches))
    session.on_train_epoch_start(trainer)
    for _ in trainer.train_loader:
        session.on_train_batch_end(trainer)
    session.on_val_start(SimpleNamespace(training=True))
    return trainer


def test_a_request_during_validation_is_obeyed_mid_batch_from_the_watch(saves: list[Any]) -> None:
    control, abandoned = FakeControl(), Abandoned()
    session = _session(control, abandon=abandoned)
    trainer = _validating(session, control)
    control.stop = Preempted("preempt requested")  # and no validation batch ever ends
    assert abandoned.done.wait(10)
    assert saves == [(9, trainer)], "checkpoint one batch back, as at a batch end"
    assert [(str(r), name) for r, name in abandoned.calls] == [("preempt requested", "validation-watch")]


def test_a_cancel_during_validation_abandons_without_a_checkpoint(saves: list[Any]) -> None:
    control, abandoned = FakeControl(), Abandoned()
    session = _session(control, abandon=abandoned)
    _validating(session, control)
    control.stop = Cancelled("cancel requested")
    assert abandoned.done.wait(10)
    assert saves == [] and isinstance(abandoned.calls[0][0], Cancelled)


def test_with_a_watch_the_validation_batch_end_leaves_requests_to_it(saves: list[Any]) -> None:
    control, abandoned = FakeControl(), Abandoned()
    session = _session(control, abandon=abandoned)
    _validating(session, control)
    session.on_val_end(SimpleNamespace(training=True))  # validation over before any request
    control.stop = Preempted("preempt requested")
    session.on_val_batch_end(SimpleNamespace(training=True))
    assert saves == [] and abandoned.calls == []


@pytest.mark.parametrize("where", ["final evaluation", "before the epoch ends"])
def test_the_watch_runs_only_for_an_epochs_validation(saves: list[Any], where: str) -> None:
    control, abandoned = FakeControl(), Abandoned()
    session = _session(control, abandon=abandoned)
    trainer = _trainer(FakeLoader(3))
    session.on_train_epoch_start(trainer)
    if where == "final evaluation":
        for _ in trainer.train_loader:
            session.on_train_batch_end(trainer)
    session.on_val_start(SimpleNamespace(training=where != "final evaluation"))
    assert session._watch is not None and not session._watch.active


# --- a request during the epoch's save ----------------------------------------------------------------------------


@pytest.mark.parametrize(("save_period", "publishes"), [(1, 2), (3, 1)], ids=["just-published", "saved-not-published"])
def test_a_request_during_the_epoch_save_stops_right_after_it(tmp_path: Path, save_period: int, publishes: int) -> None:
    control = FakeControl()
    session = _session(control, save_period=save_period)
    session.on_model_save(_epoch_trainer(tmp_path, 0, epochs=5, best=False))
    assert session.flush(5)  # epoch 1's upload is done (else epoch 2's staged copy replaces it: newest wins)
    control.stop = Preempted("preempt requested")
    with pytest.raises(Preempted):
        session.on_model_save(_epoch_trainer(tmp_path, 1, epochs=5, best=False))
    assert len(control.saved) == publishes, "epoch 2's save is published once, whatever the period"
    stops = [kind for kind, _ in control.notes if kind == "stopped"]
    assert stops == (["stopped"] if save_period == 1 else []), "an already published save is named as the stop"
    newest = control.store.get_json("jobs/j1/checkpoints/manifest.json")["newest"]
    assert (newest["epoch"], newest["batch"]) == (2, 0)
    assert control.store.objects[newest["key"]] == b"last-1"


def test_the_last_epochs_save_ignores_requests(tmp_path: Path) -> None:
    control = FakeControl(stop=Preempted("preempt requested"))
    session = _session(control)
    session.on_model_save(_epoch_trainer(tmp_path, 4, epochs=5, best=False))  # no raise: the job is finishing
    assert control.checks == 0


def test_a_cancel_during_the_epoch_save_publishes_nothing_more(tmp_path: Path) -> None:
    control = FakeControl(stop=Cancelled("cancel requested"))
    session = _session(control, save_period=2)
    with pytest.raises(Cancelled):
        session.on_model_save(_epoch_trainer(tmp_path, 0, epochs=5, best=False))
    assert control.saved == []
