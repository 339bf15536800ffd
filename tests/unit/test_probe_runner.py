"""tasks/runner.py run_probe against the in-memory store: checkpoints every step, resumes, refuses corruption."""

from __future__ import annotations

import pytest

from infra.fakes import MemoryStore
from tasks import runner
from tasks.errors import CheckpointError, Preempted
from tasks.specs import ProbeSpec

pytestmark = pytest.mark.unit


class FakeControl:
    """Records what the body reports; raises Preempted after ``stop_after`` checks."""

    def __init__(self, stop_after: int | None = None) -> None:
        self.job_id, self.store = "j1", MemoryStore()
        self.progress_log: list[dict] = []
        self.checkpoints: list[str] = []
        self.checks, self.stop_after = 0, stop_after

    def progress(self, **values):
        self.progress_log.append(values)

    def checkpoint_saved(self, uri):
        self.checkpoints.append(uri)

    def check(self):
        self.checks += 1
        if self.stop_after is not None and self.checks > self.stop_after:
            raise Preempted("preempt requested")


@pytest.fixture(autouse=True)
def instant_steps(monkeypatch):
    monkeypatch.setattr(runner, "STEP_S", 0.0)


def test_probe_checkpoints_each_step_and_resumes_where_it_stopped():
    control = FakeControl(stop_after=2)
    with pytest.raises(Preempted):
        runner.run_probe(ProbeSpec(team="a", seconds=5), control)
    assert control.store.get_json(runner.probe_checkpoint_key("j1")) == {"step": 2}
    assert control.checkpoints == ["s3://mem/jobs/j1/probe/checkpoint.json"] * 2
    control.stop_after = None
    result = runner.run_probe(ProbeSpec(team="a", seconds=5), control)
    assert result == {"steps": 5, "resumed_from": 2}
    assert control.progress_log[-1] == {"step": 5, "steps": 5}


def test_zero_second_probe_does_nothing_and_reads_nothing():
    control = FakeControl()
    control.store.put_json(runner.probe_checkpoint_key("j1"), "garbage")
    assert runner.run_probe(ProbeSpec(team="a", seconds=0), control) == {"steps": 0, "resumed_from": 0}


@pytest.mark.parametrize("saved", ["garbage", {"step": "3"}, {"step": 99}, {"step": -1}, {}])
def test_corrupt_checkpoint_is_refused_not_trusted(saved):
    control = FakeControl()
    control.store.put_json(runner.probe_checkpoint_key("j1"), saved)
    with pytest.raises(CheckpointError, match="corrupt"):
        runner.run_probe(ProbeSpec(team="a", seconds=5), control)
