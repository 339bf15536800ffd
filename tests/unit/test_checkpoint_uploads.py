"""Checkpoint uploads ride out an S3 outage (issue 17 item 4, found by the s3 drill): before, the first refused
upload left the Ultralytics callback as a StorageError and failed the whole training job. Now training goes on while
a thread retries with backoff, the newest staged checkpoint wins, and the manifest only ever names uploaded objects.
"""

from __future__ import annotations

import random
import threading
import time
from pathlib import Path
from typing import Any, cast

import pytest

from infra.fakes import MemoryStore
from tasks.checkpoint_uploads import Backoff, Done, Publisher, with_retries
from tasks.checkpoints import CheckpointStore
from tasks.errors import CheckpointError, StorageError
from tasks.runner import Control
from tasks.train_session import TrainSession
from tests.unit.test_train_session import FakeControl, _epoch_trainer, ok

pytestmark = pytest.mark.unit

FAST = Backoff(first_s=0.005, factor=2.0, max_s=0.02, give_up_s=0.5)


class FlakyStore(MemoryStore):
    """A MemoryStore that refuses every request while ``down`` is set, as S3 does while it is unreachable; and
    checks at every write that the manifest names only objects that exist."""

    def __init__(self) -> None:
        super().__init__()
        self.down = threading.Event()
        self.refused = 0
        self.dangling: list[str] = []

    def _gate(self) -> None:
        if self.down.is_set():
            self.refused += 1
            raise StorageError("S3 put on mem failed: Could not connect to the endpoint URL (test)")

    def put_bytes(self, key: str, data: bytes) -> None:
        self._gate()
        super().put_bytes(key, data)
        manifest = self.get_json("jobs/j1/checkpoints/manifest.json") if key.endswith("manifest.json") else None
        for entry in (manifest or {}).get("entries", {}).values():
            if entry["key"] not in self.objects:
                self.dangling.append(entry["key"])

    def get_bytes(self, key: str) -> bytes | None:
        self._gate()
        return super().get_bytes(key)

    def put_file(self, key: str, path: Path) -> int:
        self._gate()
        return super().put_file(key, path)

    def delete(self, key: str) -> None:
        self._gate()
        super().delete(key)


def test_with_retries_waits_out_an_outage_with_growing_delays() -> None:
    calls, waits = [0], list[float]()

    def flaky() -> str:
        calls[0] += 1
        if calls[0] < 5:
            raise StorageError("S3 get failed: connection refused (test)")
        return "ok"

    assert with_retries(flaky, "test", Backoff(first_s=1, max_s=4, give_up_s=60), sleep=waits.append) == "ok"
    assert calls[0] == 5 and len(waits) == 4
    assert all(0 <= w <= cap for w, cap in zip(waits, [1, 2, 4, 4], strict=True))


def test_with_retries_gives_up_after_its_budget_and_never_retries_a_bad_checkpoint() -> None:
    def down() -> None:
        raise StorageError("S3 get failed: connection refused (test)")

    with pytest.raises(StorageError, match="connection refused"):
        with_retries(down, "test", FAST)
    tries = [0]

    def corrupt() -> None:
        tries[0] += 1
        raise CheckpointError("sha256 mismatch")

    with pytest.raises(CheckpointError):
        with_retries(corrupt, "test", FAST)
    assert tries == [1]


def test_backoff_grows_to_its_cap_with_jitter() -> None:
    delays = Backoff(first_s=0.5, factor=2, max_s=15).delays(random.Random(1))
    caps = [0.5, 1, 2, 4, 8, 15, 15]
    assert all(0 <= next(delays) <= cap for cap in caps)


def _staged(tmp_path: Path, n: int) -> Path:
    path = tmp_path / "last.pt"
    path.write_bytes(f"checkpoint {n}".encode())
    return path


def test_staging_returns_at_once_during_an_outage_and_the_newest_arrives_when_s3_is_back(tmp_path: Path) -> None:
    # Given S3 unreachable, and a publisher on a job's checkpoints
    store = FlakyStore()
    store.down.set()
    done: list[Done] = []
    publisher = Publisher(CheckpointStore(store, "j1"), ok, done.append, FAST)
    # When three epochs' checkpoints are staged during the outage (each returns at once: training goes on)
    for n in range(3):
        publisher.stage(_staged(tmp_path, n), (n + 1, 0, f"epoch {n + 1} done"), [{"epoch": n}], None)
    assert not publisher.flush(0.2), "nothing can reach S3 yet"
    assert store.refused > 0 and not store.objects
    # Then when S3 returns, the newest one is published (the older ones are superseded, never half-written)
    store.down.clear()
    assert publisher.flush(5)
    manifest = store.get_json("jobs/j1/checkpoints/manifest.json")
    assert manifest["newest"]["epoch"] == 3 and store.objects[manifest["newest"]["key"]] == b"checkpoint 2"
    assert [d.staged.epoch for d in done][-1] == 3 and done[-1].failed > 0
    assert store.get_json("jobs/j1/results/metrics.json") == [{"epoch": 2}]
    assert store.dangling == [], "the manifest named an object that was not in the store"
    assert not list(tmp_path.glob("*.staged-*")), "every staged copy is removed"


def test_a_superseded_checkpoint_keeps_its_improved_best_pt(tmp_path: Path) -> None:
    store = FlakyStore()
    store.down.set()
    publisher = Publisher(CheckpointStore(store, "j1"), ok, lambda _: None, FAST)
    best = tmp_path / "best.pt"
    best.write_bytes(b"best of epoch 1")
    publisher.stage(_staged(tmp_path, 0), (1, 0, "epoch 1 done"), [], best)
    publisher.stage(_staged(tmp_path, 1), (2, 0, "epoch 2 done"), [], None)
    store.down.clear()
    assert publisher.flush(5)
    assert store.objects["jobs/j1/results/best.pt"] == b"best of epoch 1"


def test_an_epoch_checkpoint_during_an_outage_no_longer_fails_training(tmp_path: Path) -> None:
    # Given a training attempt whose S3 is unreachable
    control = FakeControl()
    store = FlakyStore()
    control.store = store
    session = TrainSession(control=cast(Control, control), checkpoints=CheckpointStore(store, "j1"), verify=ok,
                           save_period=1, threads=1)  # fmt: skip
    store.down.set()
    # When an epoch ends and is checkpointed: no StorageError reaches the trainer (before the fix it did)
    session.on_model_save(_epoch_trainer(tmp_path, 0, epochs=5, best=True))
    session.on_model_save(_epoch_trainer(tmp_path, 1, epochs=5, best=False))
    assert control.saved == []
    refused, deadline = store.refused, time.monotonic() + 10
    while store.refused < refused + 2:  # the uploader has tried since epoch 2 was staged, and been refused
        assert time.monotonic() < deadline, "the uploader never tried again"
        time.sleep(0.01)
    # Then once S3 is back the newest checkpoint and the best weights arrive, and the job's history says it waited
    store.down.clear()
    assert session.flush(10)
    newest: dict[str, Any] = store.get_json("jobs/j1/checkpoints/manifest.json")["newest"]
    assert newest["epoch"] == 2 and control.saved == [f"s3://mem/{newest['key']}"]
    assert store.objects["jobs/j1/results/best.pt"] == b"best-0"
    assert "failed tries" in control.notes[-1][1] and store.dangling == []
