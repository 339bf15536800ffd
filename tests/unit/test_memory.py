"""routing/memory.py against every row measured on an H100 (tests/unit/data, copied from shared/data)."""

from __future__ import annotations

import csv
import itertools
import math
from pathlib import Path

import pytest

from routing import memory

pytestmark = pytest.mark.unit

# A copy of shared/data/gpu-train-memory-h100.csv kept in the repo, so a fresh clone (CI) has it; a missing file
# fails at collection (FileNotFoundError), it never skips.
TABLE = Path(__file__).parent / "data" / "gpu-train-memory-h100.csv"
SCALES = "nsmlx"


def _rows() -> list[dict[str, str]]:
    with TABLE.open(newline="") as fh:
        return list(csv.DictReader(line for line in fh if not line.startswith("#")))


ROWS = _rows()
AMP_ROWS = [r for r in ROWS if r["amp"] == "true"]
FP32_ROWS = [r for r in ROWS if r["amp"] == "false"]


def _row_id(row: dict[str, str]) -> str:
    return f"{row['model']}-{row['imgsz']}-b{row['batch']}-{'amp' if row['amp'] == 'true' else 'fp32'}"


def _estimate(row: dict[str, str]) -> int:
    return memory.train_mib(f"{row['model']}.yaml", int(row["imgsz"]), int(row["batch"]), amp=row["amp"] == "true")


# --- the measured table ---------------------------------------------------------------------------------------------


def test_the_measured_table_is_complete() -> None:
    assert len(ROWS) == 34
    assert {r["amp"] for r in ROWS} == {"true", "false"}
    assert len(AMP_ROWS) == 30
    assert len(FP32_ROWS) == 4
    assert {r["model"] for r in AMP_ROWS} == {f"yolov8{s}" for s in SCALES}
    assert {(r["imgsz"], r["batch"]) for r in AMP_ROWS} == {(i, b) for i in ("320", "640") for b in ("8", "16", "32")}
    assert all(float(r["peak_reserved_mb"]) > 0 for r in ROWS)


@pytest.mark.parametrize("row", ROWS, ids=_row_id)
def test_estimate_never_below_the_measured_peak(row: dict[str, str]) -> None:
    assert _estimate(row) >= float(row["peak_reserved_mb"])


@pytest.mark.parametrize("row", ROWS, ids=_row_id)
def test_estimate_never_below_the_measured_allocation(row: dict[str, str]) -> None:
    assert _estimate(row) >= float(row["peak_alloc_mb"])


@pytest.mark.parametrize("row", AMP_ROWS, ids=_row_id)
def test_amp_estimate_is_useful_not_a_huge_constant(row: dict[str, str]) -> None:
    assert _estimate(row) <= 1.6 * float(row["peak_reserved_mb"])


@pytest.mark.parametrize("row", FP32_ROWS, ids=_row_id)
def test_fp32_estimate_is_useful_not_a_huge_constant(row: dict[str, str]) -> None:
    assert _estimate(row) <= 1.6 * float(row["peak_reserved_mb"])


# --- parse_variant --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "parsed"),
    [
        ("yolov8n.yaml", ("yolov8", "n")),
        ("yolov8s.yaml", ("yolov8", "s")),
        ("yolov8m.pt", ("yolov8", "m")),
        ("yolov8l.yaml", ("yolov8", "l")),
        ("yolov8x.pt", ("yolov8", "x")),
        ("yolo11n.yaml", ("yolo11", "n")),
        ("yolo11s.pt", ("yolo11", "s")),
        ("yolo11x.yaml", ("yolo11", "x")),
        ("yolov8n", ("yolov8", "n")),
        ("YOLOv8M.yaml", ("yolov8", "m")),
        ("YOLO11L.PT", ("yolo11", "l")),
        ("/models/yolov8l.pt", ("yolov8", "l")),
        ("models/v2/yolo11m.yaml", ("yolo11", "m")),
        ("s3://bucket/weights/yolov8s.pt", ("yolov8", "s")),
        ("resnet50.yaml", None),
        ("yolov8q.yaml", None),
        ("yolov9n.yaml", None),
        ("yolov5s.pt", None),
        ("yolo11.yaml", None),
        ("yolov8.yaml", None),
        ("yolov8nn.yaml", None),
        ("yolov8n.onnx", None),
        ("yolov8n.yml", None),
        ("yolov8n.yaml.bak", None),
        ("my-yolov8n.yaml", None),
        ("yolov8n-seg.yaml", None),
        ("yolov8n.pt/", None),
        ("best.pt", None),
        ("", None),
    ],
)
def test_parse_variant(name: str, parsed: tuple[str, str] | None) -> None:
    assert memory.parse_variant(name) == parsed


# --- train_mib ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("scale", SCALES)
@pytest.mark.parametrize(("imgsz", "batch"), [(320, 8), (640, 16), (1280, 4), (32, 1)])
def test_train_formula(scale: str, imgsz: int, batch: int) -> None:
    coef = memory.COEFFICIENTS[scale]
    raw = coef.base_mib + coef.per_image_mib * batch * (imgsz / 640) ** 2
    assert memory.train_mib(f"yolov8{scale}.yaml", imgsz, batch) == math.ceil(raw * memory.MARGIN)
    assert memory.train_mib(f"yolov8{scale}.yaml", imgsz, batch, amp=False) == math.ceil(
        raw * memory.MARGIN * memory.FP32_FACTOR
    )


def test_constants_are_conservative() -> None:
    assert memory.MARGIN >= 1.0
    assert memory.FP32_FACTOR >= 1.0
    assert 0 < memory.INFER_FACTOR < 1
    assert set(memory.COEFFICIENTS) == set(SCALES)


def test_larger_scales_need_more() -> None:
    needs = [memory.train_mib(f"yolov8{s}.yaml", 640, 16) for s in SCALES]
    assert needs == sorted(needs)
    assert len(set(needs)) == len(needs)


@pytest.mark.parametrize("model", [f"{family}{s}.yaml" for family in ("yolov8", "yolo11") for s in SCALES])
@pytest.mark.parametrize("amp", [True, False])
def test_monotonic_in_batch(model: str, amp: bool) -> None:
    for imgsz in (32, 320, 640, 1280):
        needs = [memory.train_mib(model, imgsz, b, amp) for b in range(1, 65)]
        assert all(a <= b for a, b in itertools.pairwise(needs)), imgsz
    strict = [memory.train_mib(model, 640, b, amp) for b in range(1, 65)]
    assert all(a < b for a, b in itertools.pairwise(strict))


@pytest.mark.parametrize("model", [f"yolov8{s}.yaml" for s in SCALES])
@pytest.mark.parametrize("amp", [True, False])
def test_monotonic_in_imgsz(model: str, amp: bool) -> None:
    for batch in (1, 8, 16, 64):
        needs = [memory.train_mib(model, s, batch, amp) for s in range(32, 2049, 32)]
        assert all(a <= b for a, b in itertools.pairwise(needs)), batch
        assert needs[0] < needs[-1]


@pytest.mark.parametrize("model", [f"yolov8{s}.yaml" for s in SCALES])
def test_fp32_needs_more_than_amp(model: str) -> None:
    for imgsz, batch in ((320, 8), (640, 16), (640, 32)):
        assert memory.train_mib(model, imgsz, batch, amp=False) > memory.train_mib(model, imgsz, batch, amp=True)


def test_extension_and_case_do_not_change_the_estimate() -> None:
    base = memory.train_mib("yolov8s.yaml", 640, 16)
    assert memory.train_mib("yolov8s.pt", 640, 16) == base
    assert memory.train_mib("YOLOv8s.YAML", 640, 16) == base
    assert memory.train_mib("runs/exp/yolov8s.pt", 640, 16) == base


@pytest.mark.parametrize(("imgsz", "batch"), [(0, 16), (640, 0), (-32, 8), (640, -1), (0, 0)])
@pytest.mark.parametrize("fn", ["train", "infer"])
def test_rejects_non_positive_sizes(imgsz: int, batch: int, fn: str) -> None:
    call = memory.train_mib if fn == "train" else memory.infer_mib
    with pytest.raises(ValueError, match="must be positive"):
        call("yolov8n.yaml", imgsz, batch)


@pytest.mark.parametrize("model", ["resnet50.yaml", "yolov8q.yaml", "yolov9n.yaml", "best.pt"])
def test_unknown_model_is_rejected(model: str) -> None:
    for call in (
        lambda: memory.train_mib(model, 640, 16),
        lambda: memory.infer_mib(model, 640, 16),
        lambda: memory.export_mib(model),
    ):
        with pytest.raises(ValueError, match="not a YOLO variant") as info:
            call()
        assert repr(model) in str(info.value)


# --- infer_mib / export_mib -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("row", AMP_ROWS, ids=_row_id)
def test_inference_needs_less_than_training(row: dict[str, str]) -> None:
    model, imgsz, batch = f"{row['model']}.pt", int(row["imgsz"]), int(row["batch"])
    assert 0 < memory.infer_mib(model, imgsz, batch) < memory.train_mib(model, imgsz, batch)


def test_inference_grows_with_batch() -> None:
    assert memory.infer_mib("yolov8m.pt", 640, 64) > memory.infer_mib("yolov8m.pt", 640, 8)


@pytest.mark.parametrize("model", [f"{family}{s}.pt" for family in ("yolov8", "yolo11") for s in SCALES])
def test_export_needs_are_positive_and_include_the_builder_workspace(model: str) -> None:
    need = memory.export_mib(model)
    assert need > memory.EXPORT_MIB > 0
    assert need == math.ceil(memory.train_mib(model, 640, 1)) + memory.EXPORT_MIB


def test_export_grows_with_scale() -> None:
    needs = [memory.export_mib(f"yolov8{s}.pt") for s in SCALES]
    assert needs == sorted(needs)
