"""GPU memory a job needs, derived from model variant, image size and batch (BRIEF §2).

Model: ``need = (base + per_image × batch × (imgsz/640)²) × MARGIN``, × ``FP32_FACTOR`` without AMP.
``base`` and ``per_image`` are least-squares fits to the peak *reserved* memory measured on an H100
(``shared/data/gpu-train-memory-h100.csv``: AMP, n/s/m/l/x, batch 8/16/32, imgsz 320/640). The worst row is
1.17 × its fit (v8x, 640, batch 16), so MARGIN = 1.2 keeps every estimate at or above the measured peak; the
FP32 rows need at most 1.79 × the AMP estimate (v8n), so FP32_FACTOR = 2.0. tests/unit/test_memory.py checks
every row of the table.
YOLO11 variants use the v8 coefficients of the same scale until measured. Inference and export are not yet
measured on a GPU: they use a conservative fraction of the training model (documented in docs/memory-model.md).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

MARGIN = 1.2
FP32_FACTOR = 2.0
INFER_FACTOR = 0.5
EXPORT_MIB = 2_048

_VARIANT = re.compile(r"^(?P<family>yolov8|yolo11)(?P<scale>[nsmlx])(?:\.(?:yaml|pt))?$")


@dataclass(frozen=True, slots=True)
class Coefficients:
    """Fitted terms for one model scale, in MiB."""

    base_mib: float
    per_image_mib: float


COEFFICIENTS: dict[str, Coefficients] = {
    "n": Coefficients(283.0, 124.3),
    "s": Coefficients(623.0, 215.4),
    "m": Coefficients(1332.0, 355.2),
    "l": Coefficients(2328.0, 527.2),
    "x": Coefficients(3461.0, 726.4),
}


def parse_variant(model: str) -> tuple[str, str] | None:
    """``("yolov8", "n")`` for ``yolov8n.yaml``/``.pt``; None when the name is not a known YOLO variant."""
    match = _VARIANT.match(model.rsplit("/", 1)[-1].lower())
    if match is None:
        return None
    return match["family"], match["scale"]


def _scale_of(model: str) -> Coefficients:
    parsed = parse_variant(model)
    if parsed is None:
        raise ValueError(f"{model!r} is not a YOLO variant (expected e.g. yolov8n.yaml, yolo11s.pt)")
    return COEFFICIENTS[parsed[1]]


def _raw_mib(model: str, imgsz: int, batch: int) -> float:
    if imgsz <= 0 or batch <= 0:
        raise ValueError(f"imgsz and batch must be positive, got imgsz={imgsz} batch={batch}")
    coef = _scale_of(model)
    return coef.base_mib + coef.per_image_mib * batch * (imgsz / 640) ** 2


def train_mib(model: str, imgsz: int, batch: int, amp: bool = True) -> int:
    """Memory a training job reserves at peak, so placement never puts it on a GPU it would OOM."""
    need = _raw_mib(model, imgsz, batch) * MARGIN
    return math.ceil(need * (1.0 if amp else FP32_FACTOR))


def infer_mib(model: str, imgsz: int, batch: int) -> int:
    """Memory of batched FP16 inference: no gradients or optimizer, a fraction of training."""
    return math.ceil(_raw_mib(model, imgsz, batch) * MARGIN * INFER_FACTOR)


def export_mib(model: str) -> int:
    """Memory of an export (ONNX/TensorRT build): one image through the model plus the builder's workspace."""
    return math.ceil(_raw_mib(model, 640, 1) * MARGIN) + EXPORT_MIB
