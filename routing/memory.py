"""GPU memory a job needs, from model variant, image size and batch, so placement never OOMs a GPU (BRIEF §2, §5).

The estimate is the peak memory PyTorch's caching allocator *reserves* while Ultralytics trains one job (what
``torch.cuda.max_memory_reserved()`` reports), in MiB. With ``r = imgsz / 640`` (imgsz rounded up to the stride
Ultralytics trains at), ``B`` the batch and ``f = 1`` with AMP, ``FP32_FACTOR`` without::

    need = ceil(MARGIN × (FIXED_MIB                                   fixed workspace, any model
                          + WEIGHTS_MIB_PER_MPARAM × params           weights, gradients, optimizer state, EMA
                          + r² × per_image × B × f                    activations: linear in batch × pixels
                          + r² × cache_per_image × min(B, KNEE)))     allocator cache and cuDNN workspaces

* Activations grow with batch × imgsz²; ``per_image`` is at least the slope of the measured *allocated* peak
  (least squares over the scale's 6 AMP rows), so beyond the measured batches the estimate grows at least as fast
  as the memory the tensors really take.
* The reserved peak grows faster than that up to batch 16 and slower after it, at every scale and both image sizes
  (batch 8 → 16 → 32 is × 1.46–1.95, then × 1.35–1.62): the allocator's cached blocks and cuDNN's workspaces stop
  growing at about 16 images. ``cache_per_image × min(B, KNEE_BATCH)`` is that term; it never shrinks.
* Without AMP the per-image activations take ``FP32_FACTOR`` = 2.125 × the memory (4-byte instead of 2-byte
  tensors, larger FP32 workspaces); the fixed, weight and cache terms are the same.
* ``MARGIN`` = 1.01 is a small safety margin on top of a fit that is already never below a measured peak.

The coefficients are fitted to ``shared/data/gpu-train-memory-h100.csv`` (copied to ``tests/unit/data``: one H100,
AMP n/s/m/l/x × batch 8/16/32 × imgsz 320/640, plus 4 FP32 rows) by a linear program: least total over-reservation
subject to fit ≥ peak and estimate ≤ 1.14 × peak on all 34 rows, then rounded to whole MiB (the worst row moved
from +14.1 % to +14.4 %). Every row is +1.0 % … +14.4 % (docs/architecture.md "Memory model" has the table;
tests/unit/test_memory.py checks every row). The CUDA context
(hundreds of MiB, visible to NVML, not to torch) is outside this figure; placement adds ``CUDA_CONTEXT_MIB`` to it
(:func:`placement_mib`, used by tasks.specs), so a job whose torch peak just fits a card does not OOM on it.
YOLO11 variants use the YOLOv8 coefficients
of the same scale until measured (YOLO11 has fewer parameters at every scale). Inference and export are not yet
measured on a GPU: they use a conservative fraction of the training estimate.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

MARGIN = 1.01
FP32_FACTOR = 2.125
FIXED_MIB = 29.0
WEIGHTS_MIB_PER_MPARAM = 39.0
KNEE_BATCH = 16
STRIDE = 32
INFER_FACTOR = 0.5
EXPORT_MIB = 2_048
# The CUDA context a job process creates (NVML sees it, torch does not): added when a job is placed, not part of the
# torch-peak estimate above (BRIEF §5 measured 300-500 MiB on an H100).
CUDA_CONTEXT_MIB = 512

_VARIANT = re.compile(r"^(?P<family>yolov8|yolo11)(?P<scale>[nsmlx])(?:\.(?:yaml|pt))?$")


@dataclass(frozen=True, slots=True)
class Coefficients:
    """One model scale: its parameter count (millions) and its per-image terms at imgsz 640 (MiB)."""

    params_m: float
    per_image_mib: float
    cache_per_image_mib: float

    @property
    def base_mib(self) -> float:
        """The batch-independent part (fixed workspace, weights and optimizer), so callers can show the split."""
        return FIXED_MIB + WEIGHTS_MIB_PER_MPARAM * self.params_m


# params: the YOLOv8 model summaries (3 157 200 … 68 229 648); per_image ≥ the allocated slope of the table
# (109.5, 192.6, 330.8, 501.9, 622.5 MiB per 640² image).
COEFFICIENTS: dict[str, Coefficients] = {
    "n": Coefficients(3.157, 126.0, 31.0),
    "s": Coefficients(11.166, 193.0, 64.0),
    "m": Coefficients(25.902, 331.0, 95.0),
    "l": Coefficients(43.692, 502.0, 167.0),
    "x": Coefficients(68.230, 623.0, 312.0),
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


def trained_imgsz(imgsz: int) -> int:
    """The image size Ultralytics actually trains at (rounded up to the stride), which is what memory follows."""
    return -(-imgsz // STRIDE) * STRIDE


def fit_mib(model: str, imgsz: int, batch: int, amp: bool = True) -> float:
    """The fitted peak before the safety margin, so a bench can report the model's own error."""
    if imgsz <= 0 or batch <= 0:
        raise ValueError(f"imgsz and batch must be positive, got imgsz={imgsz} batch={batch}")
    coef = _scale_of(model)
    area = (trained_imgsz(imgsz) / 640) ** 2
    activations = coef.per_image_mib * batch * (1.0 if amp else FP32_FACTOR)
    cache = coef.cache_per_image_mib * min(batch, KNEE_BATCH)
    return coef.base_mib + area * (activations + cache)


def train_mib(model: str, imgsz: int, batch: int, amp: bool = True) -> int:
    """Memory a training job reserves at peak, so placement never puts it on a GPU it would OOM."""
    return math.ceil(fit_mib(model, imgsz, batch, amp) * MARGIN)


def infer_mib(model: str, imgsz: int, batch: int) -> int:
    """Memory of batched FP16 inference: no gradients or optimizer, a fraction of training."""
    return math.ceil(fit_mib(model, imgsz, batch) * MARGIN * INFER_FACTOR)


def placement_mib(estimate_mib: int) -> int:
    """What placement reserves on a GPU for an estimated job: its torch peak plus the CUDA context."""
    return estimate_mib + CUDA_CONTEXT_MIB


def export_mib(model: str) -> int:
    """Memory of an export (ONNX/TensorRT build): one image through the model plus the builder's workspace."""
    return train_mib(model, 640, 1) + EXPORT_MIB
