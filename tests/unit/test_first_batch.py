"""The ``first-batch`` event is recorded when the first batch is trained (issue 14): ahead of the attempt's first
checkpoint, not after the job process has ended. TrainSession calls the job process's hook once, at the first batch."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, cast

import pytest

from tasks.attempt import AttemptControl
from tasks.checkpoints import CheckpointStore
from tasks.errors import BrokerUnavailable
from tasks.job_process import HANDED, WORK_STARTED, _first_batch
from tasks.runner import Control
from tasks.train_session import TrainSession
from tests.unit.test_train_session import FakeControl, FakeLoader, _epoch_trainer, ok

pytestmark = pytest.mark.unit


class RecordingControl(FakeControl):
    """Also keeps each note's fields; ``fail`` makes note() raise as an unreachable Redis would."""

    def __init__(self, fail: bool = False) -> None:
        super().__init__()
        self.fields: list[dict[str, Any]] = []
        self.fail = fail

    def note(self, kind: str, reason: str, **fields: Any) -> None:
        if self.fail:
            raise BrokerUnavailable("cannot reach Redis at redis://x (test)")
        super().note(kind, reason, **fields)
        self.fields.append(fields)


def _session(control: RecordingControl, workdir: Path, warm: bool) -> TrainSession:
    hook = _first_batch(cast(AttemptControl, control), workdir, warm)
    return TrainSession(control=cast(Control, control), checkpoints=CheckpointStore(control.store, control.job_id),
                        verify=ok, save_period=1, threads=1, first_batch=hook)  # fmt: skip


def test_first_batch_is_recorded_at_the_first_batch_ahead_of_the_epochs_checkpoint(tmp_path: Path) -> None:
    # Given an attempt handed to a warm job process 2 s ago, training a 3-batch epoch
    workdir = tmp_path / "attempt"
    workdir.mkdir()
    (workdir / HANDED).write_text(repr(time.time() - 2.0))
    control = RecordingControl()
    session = _session(control, workdir, warm=True)
    trainer = _epoch_trainer(tmp_path, 0, epochs=2, best=False)
    trainer.train_loader = FakeLoader(3)
    session.on_train_epoch_start(trainer)
    # When its first batch is trained
    session.on_train_batch_end(trainer)
    # Then the event is in the history at once, with the hand-over-to-first-batch figure, and the marker is there
    assert [kind for kind, _ in control.notes] == ["first-batch"]
    assert (workdir / WORK_STARTED).exists(), "from now on a preempt request checkpoints instead of killing"
    assert control.fields[0]["warm"] is True
    assert 2.0 <= control.fields[0]["seconds"] < 10
    assert "after the attempt reached a warm (pre-imported) job process" in control.notes[0][1]
    # And when the epoch ends and is checkpointed, the event stays once and ahead of the checkpoint
    session.on_train_batch_end(trainer)
    session.on_train_batch_end(trainer)
    session.on_model_save(trainer)
    assert session.flush(5)  # the checkpoint is uploaded from the publisher's thread
    assert [kind for kind, _ in control.notes] == ["first-batch", "checkpoint"]


def test_a_cold_attempt_without_a_hand_over_time_still_records_it(tmp_path: Path) -> None:
    control = RecordingControl()
    hook = _first_batch(cast(AttemptControl, control), tmp_path, warm=False)
    hook()
    assert control.notes == [("first-batch", "first trained batch in a cold job process")]
    assert control.fields == [{"warm": False}]


def test_an_unrecordable_event_does_not_stop_training(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    hook = _first_batch(cast(AttemptControl, RecordingControl(fail=True)), tmp_path, warm=False)
    hook()  # no exception: the figure is lost, the job is not
    assert (tmp_path / WORK_STARTED).exists()
    assert "first-batch event not recorded: cannot reach Redis" in capsys.readouterr().err
