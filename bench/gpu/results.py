"""Pure arithmetic of the GPU validation (issue #8): fail-soft steps, throughput from progress samples, verdicts.

Nothing here touches a GPU, a process or the network, so every figure the device run reports is computed by code
that the CPU suite tests (tests/unit/test_gpu_validation.py). A step's document is plain JSON; a step that raises
is recorded with its error and the run goes on (the device is lent for minutes: one failure must not cost the rest).
"""

from __future__ import annotations

import re
import time
import traceback
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

# (wall time s, attempt number, epoch, batches done in that epoch): what a progress poll or a callback observes.
Sample = tuple[float, int, int, int]

CHECKPOINT_REASON = re.compile(r"\(([\d.]+) MB, epoch (\d+), batch (\d+)\) in ([\d.]+) s")
RESUME_REASON = re.compile(r"at epoch (\d+), batch (\d+)")


def run_step(
    name: str, body: Callable[[], dict[str, Any]], clock: Callable[[], float] = time.monotonic
) -> dict[str, Any]:
    """Run one step; its document on success, or its error (type, message, traceback tail) on any exception."""
    started = clock()
    try:
        doc = body()
    except Exception as err:  # fail soft: every step is recorded, whatever broke
        tail = traceback.format_exc().strip().splitlines()[-12:]
        return {"step": name, "status": "failed", "seconds": round(clock() - started, 3),
                "error": f"{type(err).__name__}: {err}".splitlines()[0][:500], "traceback": tail}  # fmt: skip
    return {"step": name, "status": doc.pop("status", "ok"), "seconds": round(clock() - started, 3), **doc}


def skipped(name: str, why: str) -> dict[str, Any]:
    """The document of a step that cannot run here (e.g. it needs CUDA and this is the CPU dry run)."""
    return {"step": name, "status": "skipped", "seconds": 0.0, "reason": why}


def epoch_spans(samples: Iterable[Sample], skip_epochs: int) -> list[tuple[float, int]]:
    """Per (attempt, epoch) past the first ``skip_epochs``: (seconds, batches) from its first to its last sample.

    The first observed batch of an epoch is the reference point, so the DataLoader restart and validation between
    epochs never count; both yoloq (registry progress) and plain Ultralytics (a batch callback) are measured so.
    """
    first: dict[tuple[int, int], tuple[float, int]] = {}
    last: dict[tuple[int, int], tuple[float, int]] = {}
    for at, attempt, epoch, batch in samples:
        if epoch < skip_epochs:
            continue
        key = (attempt, epoch)
        first.setdefault(key, (at, batch))
        last[key] = (at, batch)
    spans = []
    for key, (t0, b0) in first.items():
        t1, b1 = last[key]
        if b1 > b0 and t1 > t0:
            spans.append((t1 - t0, b1 - b0))
    return spans


def images_per_s(samples: Iterable[Sample], batch: int, skip_epochs: int) -> float | None:
    """Training images/s over whole measured epochs (Σ batches × batch / Σ seconds); None without two samples."""
    spans = epoch_spans(samples, skip_epochs)
    seconds = sum(s for s, _ in spans)
    return round(sum(b for _, b in spans) * batch / seconds, 1) if seconds > 0 else None


def ratio(ours: float | None, theirs: float | None) -> float | None:
    """ours ÷ theirs, rounded; None when either side is missing or the baseline is zero."""
    if ours is None or not theirs:
        return None
    return round(ours / theirs, 3)


def verdict(ok: bool | None) -> str:
    """``pass`` / ``FAIL`` / ``not measured`` (None: the figure could not be taken in this run)."""
    return "not measured" if ok is None else ("pass" if ok else "FAIL")


def at_least(value: float | None, bound: float) -> bool | None:
    """value ≥ bound, or None when the value was not measured."""
    return None if value is None else value >= bound


def at_most(value: float | None, bound: float | None) -> bool | None:
    """value ≤ bound, or None when either was not measured."""
    return None if value is None or bound is None else value <= bound


@dataclass(frozen=True)
class CheckpointNote:
    """What a job's ``checkpoint`` event says: size, the (epoch, batch) it resumes at, and its publish time."""

    mb: float
    epoch: int
    batch: int
    publish_s: float


def parse_checkpoint(reason: str) -> CheckpointNote | None:
    """Parse ``... (29.1 MB, epoch 1, batch 12) in 0.41 s`` (tasks/train_session.py); None if it does not match."""
    found = CHECKPOINT_REASON.search(reason)
    if found is None:
        return None
    return CheckpointNote(float(found[1]), int(found[2]), int(found[3]), float(found[4]))


def parse_resume(reason: str) -> tuple[int, int] | None:
    """(epoch, batch) of a ``resume`` event (``resuming from KEY at epoch E, batch B``)."""
    found = RESUME_REASON.search(reason)
    return (int(found[1]), int(found[2])) if found else None


def batches_redone(batches_per_epoch: int, epochs: int, resumed_at: tuple[int, int], resumed_batches: int) -> int:
    """Batches the resumed attempt trained beyond what was left: 0 = none twice, none skipped (negative = skipped)."""
    epoch, batch = resumed_at
    left = batches_per_epoch * epochs - (epoch * batches_per_epoch + batch)
    return resumed_batches - left


def summary(steps: list[dict[str, Any]]) -> dict[str, Any]:
    """One line per step (status, seconds, its verdicts) and the run's overall state."""
    rows = {}
    for doc in steps:
        row = {"status": doc["status"], "seconds": doc.get("seconds")}
        if "verdicts" in doc:
            row["verdicts"] = doc["verdicts"]
        if doc["status"] != "ok":
            row["why"] = doc.get("error") or doc.get("reason")
        rows[doc["step"]] = row
    verdicts = [v for r in rows.values() for v in r.get("verdicts", {}).values()]
    return {
        "steps": rows,
        "failed_steps": sorted(k for k, r in rows.items() if r["status"] == "failed"),
        "verdicts_failed": sum(v == "FAIL" for v in verdicts),
        "verdicts_passed": sum(v == "pass" for v in verdicts),
        "verdicts_not_measured": sum(v == "not measured" for v in verdicts),
    }
