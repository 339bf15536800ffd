"""tasks/expected_runtime.py: specs read into runtime shapes, a finished job's measurement, and remaining time."""

from __future__ import annotations

import math
from typing import Any

import pytest

from routing.runtime_estimate import Sample, Shape
from routing.tiers import Tier
from tasks.errors import SpecRejected
from tasks.expected_runtime import done_fraction, measurement, remaining_s, run_seconds, samples, shape_of
from tasks.records import Attempt, JobRecord
from tasks.specs import ProbeSpec, TrainSpec, parse_spec
from tasks.states import JobState

pytestmark = pytest.mark.unit

T0 = "2026-01-01T00:00:00.000Z"


def record(spec: dict[str, Any], progress: dict[str, Any], attempts: list[tuple[str, str | None]]) -> JobRecord:
    """A job whose attempts ran between the given (start, end) times."""
    tried = [Attempt(n=i, task_id=f"t{i}", queue="yoloq.low.8g", created_at=T0, started_at=s, ended_at=e)
             for i, (s, e) in enumerate(attempts, 1)]  # fmt: skip
    return JobRecord(
        job_id="j1", kind=str(spec["kind"]), name=None, tier=Tier.LOW, team="t", state=JobState.RUNNING,
        queue="yoloq.low.8g", memory_mib=8192, spec=spec, attempts=tried, preemptions=[], worker="gpu0@h", gpu="0",
        progress=progress, checkpoint=None, submitted_at=T0, started_at=T0, finished_at=None, heartbeat_at=T0,
        result=None, error=None, events=[],
    )  # fmt: skip


TRAIN = TrainSpec(team="t", data="s3://d", model="yolov8s.yaml", epochs=4, imgsz=320, batch=8, expected_minutes=90.0)


@pytest.mark.parametrize(
    ("spec", "shape"),
    [
        (TRAIN.model_dump(mode="json"), Shape("train", "yolov8s", "s3://d", 320, 8, 4, None, 5400.0, None)),
        (ProbeSpec(team="t", seconds=30).model_dump(mode="json"), Shape("probe", fixed_s=30.0)),
        ({"kind": "export", "model": "weights.pt"}, Shape("export")),
        ({}, Shape("")),
    ],
)
def test_shape_of_reads_the_stored_spec(spec: dict[str, Any], shape: Shape) -> None:
    assert shape_of(spec) == shape


def test_shape_of_carries_the_gpu_model() -> None:
    assert shape_of(TRAIN.model_dump(mode="json"), "H100").gpu == "H100"


def test_samples_skip_malformed_rows() -> None:
    good = {"model": "yolov8n", "data": "d", "imgsz": 640, "batch": 16, "gpu": "A100", "batches_per_epoch": 10,
            "s_per_batch": 0.2}  # fmt: skip
    rows = [good, {**good, "imgsz": "x"}, {"model": "yolov8n"}, {**good, "s_per_batch": 0.0}, {**good, "batch": 0}]
    assert samples(rows) == [Sample("yolov8n", "d", 640, 16, "A100", 10, 0.2)]


@pytest.mark.parametrize(
    ("progress", "done"),
    [
        ({}, 0.0),
        ({"epoch": 1, "epochs": 4, "batch": 5, "batches": 10}, 0.375),
        ({"step": 3, "steps": 12}, 0.25),
        ({"step": 3, "steps": 0}, 3.0),  # clamped later by routing.runtime_estimate.remaining
    ],
)
def test_done_fraction(progress: dict[str, Any], done: float) -> None:
    assert done_fraction(progress) == pytest.approx(done)


def test_a_finished_training_job_measures_seconds_per_batch_over_every_attempt() -> None:
    # Given two attempts of 100 s and 60 s (a preemption between them) over 4 epochs of 10 batches
    tried = [(T0, "2026-01-01T00:01:40.000Z"), ("2026-01-01T00:02:00.000Z", "2026-01-01T00:03:00.000Z")]
    done = record(TRAIN.model_dump(mode="json"), {"epoch": 3, "epochs": 4, "batch": 9, "batches": 10}, tried)
    assert run_seconds(done) == 160.0
    row = measurement(done, "A100")
    assert row is not None and row["s_per_batch"] == pytest.approx(160.0 / 40)
    assert (row["model"], row["imgsz"], row["batch"], row["batches_per_epoch"], row["gpu"]) == (
        "yolov8s",
        320,
        8,
        10,
        "A100",
    )


@pytest.mark.parametrize(
    ("spec", "progress", "attempts"),
    [
        (ProbeSpec(team="t").model_dump(mode="json"), {"step": 10, "steps": 10}, [(T0, "2026-01-01T00:00:10.000Z")]),
        (TRAIN.model_dump(mode="json"), {}, [(T0, "2026-01-01T00:00:10.000Z")]),  # no batches known
        (TRAIN.model_dump(mode="json"), {"batches": 10}, [(T0, None)]),  # never ended
        ({**TRAIN.model_dump(mode="json"), "model": "weights.pt"}, {"batches": 10}, [(T0, "2026-01-01T00:00:10.000Z")]),
    ],
)
def test_no_measurement_without_batches_time_or_a_known_model(
    spec: dict[str, Any], progress: dict[str, Any], attempts: list[tuple[str, str | None]]
) -> None:
    assert measurement(record(spec, progress, attempts), "A100") is None


def test_remaining_uses_the_expectation_and_serving_never_ends() -> None:
    # A probe of 100 s, a quarter done after 30 s of its attempt: 0.75 × 75 (plan) + 0.25 × 90 (pace)
    probe = record(ProbeSpec(team="t", seconds=100).model_dump(mode="json"), {"step": 25, "steps": 100}, [(T0, None)])
    start = 1767225600.0  # T0
    assert remaining_s(probe, [], start + 30) == pytest.approx(0.75 * 75 + 0.25 * 90)
    waiting = record(ProbeSpec(team="t", seconds=100).model_dump(mode="json"), {}, [])
    assert remaining_s(waiting, [], start) == 100.0
    serve = record({"kind": "serve"}, {}, [(T0, None)]).model_copy(update={"kind": "serve"})
    assert math.isinf(remaining_s(serve, [], start))


@pytest.mark.parametrize("minutes", [0, -1.0, "90", 30 * 24 * 60 + 1, True])
def test_expected_minutes_is_positive_bounded_and_a_number(minutes: Any) -> None:
    with pytest.raises(SpecRejected, match="expected_minutes"):
        parse_spec({"kind": "probe", "team": "t", "expected_minutes": minutes})


def test_expected_minutes_is_accepted_on_every_kind() -> None:
    assert (
        parse_spec(
            {"kind": "infer", "team": "t", "model": "m.pt", "source": "s", "expected_minutes": 5}
        ).expected_minutes
        == 5
    )


def test_the_supervisor_weighs_a_victim_by_the_same_remaining_time() -> None:
    # A 100 s probe that has run 30 s without progress yet (starting): 100 s left, not ten times the elapsed 30 s
    from workers.supervisor import _running

    start = 1767225600.0  # T0
    starting = record(ProbeSpec(team="t", seconds=100).model_dump(mode="json"), {}, [(T0, None)])
    assert _running(starting, False, start + 30).remaining_s == 100.0
    halfway = record(ProbeSpec(team="t", seconds=100).model_dump(mode="json"), {"step": 50, "steps": 100}, [(T0, None)])
    assert _running(halfway, False, start + 50).remaining_s == remaining_s(halfway, [], start + 50) == 50.0
