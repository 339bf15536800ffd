"""Found by the crash drill (issue 17): a training job whose worker died after its last epoch's checkpoint was
published, while it validated or wrote its results, failed for good on its next attempt: Ultralytics refuses to resume
a finished run ("training to 6 epochs is finished, nothing to resume"). The next attempt now writes the results.

A child process (this module run as ``python -m tests.integration.test_drill_train_finished WORKDIR``, prepared
offline as a yoloq job process is) trains one epoch through the real train job body, then runs a second attempt on
the same object store, as the attempt that follows one killed right after that last checkpoint does.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.integration


class _Control:
    """An attempt's control on in-memory adapters: one object store and one trust ledger for both attempts."""

    job_id = "finished"

    def __init__(self) -> None:
        from infra.fakes import MemoryStore
        from tasks.trust import MemoryLedger, Trust

        self.store = MemoryStore()
        self.trust = Trust(MemoryLedger())
        self.notes: list[tuple[str, str]] = []

    def progress(self, **values: float) -> None: ...
    def checkpoint_saved(self, uri: str) -> None: ...
    def check(self) -> None: ...

    def note(self, kind: str, reason: str, **fields: Any) -> None:
        self.notes.append((kind, reason))


def two_attempts(work: Path) -> dict[str, Any]:
    """Train to the end, then run the job body again on the same store (runs in the child)."""
    from tasks.offline import prepare_environment

    prepare_environment(work / "config", threads=2)
    from tasks.specs import TrainSpec
    from tasks.synth import SynthConfig, synthesize
    from tasks.train_runner import JobEnv, run_train

    data = synthesize(work / "data", SynthConfig(images=16, imgsz=64))
    spec = TrainSpec(data=str(data), epochs=1, imgsz=64, batch=4, workers=0, save_period=1, team="drill")
    control = _Control()
    first = run_train(spec, control, JobEnv(workdir=work / "first", cache=work / "cache"))
    control.store.delete("jobs/finished/results/model.onnx")  # as if the first attempt died before writing it
    seen = len(control.notes)
    second = run_train(spec, control, JobEnv(workdir=work / "second", cache=work / "cache"))
    return {"first": first, "second": second, "notes": control.notes[seen:],
            "onnx": control.store.get_bytes("jobs/finished/results/model.onnx") is not None}  # fmt: skip


def test_an_attempt_after_the_last_checkpoint_writes_the_results_without_training(tmp_path: Path) -> None:
    # Given a training job whose last epoch's checkpoint is published, when another attempt of it runs
    done = subprocess.run([sys.executable, "-m", "tests.integration.test_drill_train_finished", str(tmp_path)],
                          cwd=ROOT, capture_output=True, text=True, timeout=600, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    found = json.loads(done.stdout.strip().splitlines()[-1])
    # Then it trains nothing, says why, and writes the same results the first attempt wrote
    second, kinds = found["second"], [kind for kind, _ in found["notes"]]
    assert second["batches_this_attempt"] == 0 and second["epochs"] == found["first"]["epochs"] == 1
    assert kinds[:2] == ["resume", "trained"] and "e1-b0" in found["notes"][0][1]
    assert found["onnx"] and {"best", "last", "metrics", "onnx"} <= set(second)
    assert second["final_metrics"] == found["first"]["final_metrics"]


if __name__ == "__main__":
    print(json.dumps(two_attempts(Path(sys.argv[1]))))
