"""routing/runtime_estimate.py: the fallback chain of expected runtimes and the remaining-time blend, as tables."""

from __future__ import annotations

import math

import pytest

from routing.runtime_estimate import DEFAULT_IMAGES, Sample, Shape, error_summary, expected, images_of, remaining

pytestmark = pytest.mark.unit

# Two runs of yolov8n @640 b16 on data D (100 batches per epoch = 1600 images) on an A100 at 0.1 and 0.3 s/batch,
# one on an H100 at 0.05, and one yolov8s @320 b32 on another data set at 0.2 s/batch (0.2/32/0.25 = 0.025 s/img@640).
N_A100 = [
    Sample("yolov8n", "s3://d", 640, 16, "A100", 100, 0.1),
    Sample("yolov8n", "s3://d", 640, 16, "A100", 100, 0.3),
]
N_H100 = Sample("yolov8n", "s3://d", 640, 16, "H100", 100, 0.05)
S_320 = Sample("yolov8s", "s3://e", 320, 32, "A100", 50, 0.2)
HISTORY = [*N_A100, N_H100, S_320]


def train(**kw: object) -> Shape:
    base: dict[str, object] = {"kind": "train", "model": "yolov8n", "data": "s3://d", "imgsz": 640, "batch": 16,
                               "epochs": 10}  # fmt: skip
    return Shape(**{**base, **kw})  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("shape", "history", "seconds", "source"),
    [
        # 1. a probe: exactly its seconds, history or not
        (Shape("probe", fixed_s=42.0), HISTORY, 42.0, "spec:"),
        # serving: never ends
        (Shape("serve"), HISTORY, None, "serve:"),
        # other kinds: declared, else a fixed default
        (Shape("infer", declared_s=120.0), HISTORY, 120.0, "declared:"),
        (Shape("export"), HISTORY, 300.0, "default: export"),
        (Shape("mystery"), [], 3600.0, "default: mystery"),
        # 2. history, any GPU while waiting: median of 0.1, 0.3, 0.05 = 0.1 s/batch × 10 epochs × 100 batches
        (train(), HISTORY, 100.0, "history: 3 runs of yolov8n imgsz 640 batch 16,"),
        # ... on a known GPU only that GPU's runs: median(0.1, 0.3) = 0.2
        (train(gpu="A100"), HISTORY, 200.0, "history: 2 runs of yolov8n imgsz 640 batch 16 on A100"),
        # history beats a declaration
        (train(declared_s=5.0), HISTORY, 100.0, "history:"),
        # batch 32 on the same data: 1600 images → 50 batches; no exact run → 3. declared
        (train(batch=32, declared_s=900.0), HISTORY, 900.0, "declared:"),
        # 4. scaled: same model, other batch: per image @640 median(0.1/16, 0.3/16, 0.05/16) = 0.00625 × 1600 × 10
        (train(batch=32), HISTORY, 100.0, "history-scaled: 3 runs of yolov8n"),
        # ... at imgsz 320: a quarter of the pixels
        (train(batch=32, imgsz=320), HISTORY, 25.0, "history-scaled:"),
        # yolov8s on unseen data: 0.025 s/img × 1600 images (the median data set seen) × 2 epochs
        (train(model="yolov8s", data="s3://new", epochs=2), HISTORY, 80.0, "dataset size assumed 1600 images"),
        # 5. default: yolov8m 0.012 s/img × 1600 images (known from D) × 10 epochs
        (train(model="yolov8m"), HISTORY, 192.0, "default: no history for yolov8m"),
        # an unknown scale falls back to n's figure; no data known either
        (train(model="", data=""), [], 0.004 * DEFAULT_IMAGES * 10, "default: no history for this model"),
    ],
)
def test_expected_follows_the_fallback_chain(
    shape: Shape, history: list[Sample], seconds: float | None, source: str
) -> None:
    got = expected(shape, history)
    assert got.seconds == pytest.approx(seconds) if seconds is not None else got.seconds is None
    assert got.source.startswith(source) or source in got.source, got.source


def test_exact_history_uses_the_job_batches_from_its_dataset_size() -> None:
    # 1600 images / batch 16 = 100 batches per epoch; 3 epochs at the exact key's 0.1 s/batch median
    assert expected(train(epochs=3), HISTORY).seconds == pytest.approx(30.0)
    assert "assumed" not in expected(train(epochs=3), HISTORY).source


@pytest.mark.parametrize(
    ("data", "images"),
    [("s3://d", 1600), ("s3://e", 1600), ("s3://zzz", None), ("", None)],
)
def test_images_of_reads_the_newest_run_on_the_same_data(data: str, images: int | None) -> None:
    assert images_of(train(data=data), HISTORY) == images


@pytest.mark.parametrize(
    ("expected_s", "done", "elapsed_s", "left"),
    [
        (None, 0.0, 0.0, 10.0),  # nothing known: ten times the elapsed time, at least 1 s
        (None, 0.0, 30.0, 300.0),
        (None, 0.5, 100.0, 100.0),  # pace: half done in 100 s
        (1000.0, 0.0, 50.0, 1000.0),  # not started training yet: the whole expectation
        (1000.0, 0.5, 100.0, 0.5 * 500.0 + 0.5 * 100.0),  # blend half plan, half pace
        (1000.0, 1.0, 100.0, 0.0),
        (1000.0, 1.5, 100.0, 0.0),  # clamped
        (1000.0, -1.0, 100.0, 1000.0),  # clamped
        (100.0, 0.25, 10.0, 0.75 * 75.0 + 0.25 * 30.0),
    ],
)
def test_remaining_blends_plan_and_pace(expected_s: float | None, done: float, elapsed_s: float, left: float) -> None:
    assert remaining(expected_s, done, elapsed_s) == pytest.approx(left)
    assert not math.isnan(remaining(expected_s, done, elapsed_s))


def test_error_summary_overall_and_per_source() -> None:
    rows = [("history", 0.1), ("history", 0.3), ("spec", 0.0), ("default", 2.0)]
    assert error_summary(rows) == {
        "count": 4,
        "error_p50": 0.1,
        "error_p95": 2.0,
        "by_source": {
            "default": {"count": 1, "error_p50": 2.0},
            "history": {"count": 2, "error_p50": 0.1},
            "spec": {"count": 1, "error_p50": 0.0},
        },
    }
    assert error_summary([]) == {"count": 0, "error_p50": None, "error_p95": None, "by_source": {}}
