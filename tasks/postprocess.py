"""YOLO detection pre- and post-processing in NumPy: letterbox in, decode + NMS out (the ONNX graph has no NMS).

Every step is Ultralytics ``predict()``'s own (8.4: ``LetterBox``, ``non_max_suppression``, ``scale_boxes``), so a
model gives the same boxes through yoloq as through ``YOLO(model).predict()`` (tests/integration/
test_predict_parity.py): the resized side is ``max(round(side × gain), 1)`` and boxes map back with that side's own
ratio; padding splits ``round(d/2 ∓ 0.1)``; a class score must be *over* ``conf``; NMS is per class (offset
:data:`MAX_WH`), IoU :data:`IOU`, at most :data:`MAX_NMS` candidates and :data:`MAX_DET` detections. With ``stride``
a model that takes any multiple of it (a dynamic ONNX graph, PyTorch weights) gets ``predict()``'s minimal rectangle
instead of the full square; :func:`batch` stacks images of one such shape, and squares up a mix.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np

IOU = 0.7
MAX_DET = 300
MAX_NMS = 30_000  # candidates NMS looks at, best first
MAX_WH = 7680.0  # per-class NMS in one pass: class c's boxes move by c × MAX_WH
PAD = 114


@dataclass(frozen=True)
class Prepared:
    """A letterboxed CHW float tensor and how to map its boxes back to the original image (``shape``: h, w)."""

    tensor: np.ndarray
    gain: float
    pad: tuple[float, float]
    shape: tuple[int, int]

    def scale(self) -> tuple[float, float]:
        """The x and y ratios the image was resized by: each side was rounded on its own, as Ultralytics does."""
        h, w = self.shape
        return max(round(w * self.gain), 1) / w, max(round(h * self.gain), 1) / h


def _split(pad: float) -> tuple[int, int]:
    """Padding before and after, as Ultralytics' LetterBox rounds an odd total (the extra pixel goes after)."""
    return round(pad / 2 - 0.1), round(pad / 2 + 0.1)


def letterbox(image: np.ndarray, size: int, stride: int | None = None) -> Prepared:
    """Resize keeping the aspect ratio, pad to ``size``² (or, with ``stride``, to the smallest multiple of it that
    holds the image, as ``predict()`` feeds a dynamic model), BGR→RGB, HWC→CHW, scale to [0, 1]."""
    import cv2

    h, w = image.shape[:2]
    gain = min(size / h, size / w)
    nh, nw = max(round(h * gain), 1), max(round(w * gain), 1)
    resized = cv2.resize(image, (nw, nh), interpolation=cv2.INTER_LINEAR) if (nh, nw) != (h, w) else image
    dh, dw = size - nh, size - nw
    if stride:
        dh, dw = dh % stride, dw % stride
    (top, bottom), (left, right) = _split(dh), _split(dw)
    canvas = np.full((nh + top + bottom, nw + left + right, 3), PAD, dtype=np.uint8)
    canvas[top : top + nh, left : left + nw] = resized
    tensor = np.ascontiguousarray(canvas[:, :, ::-1].transpose(2, 0, 1)).astype(np.float32)  # 5x faster than
    tensor /= 255.0  # converting the strided view, and the same bits
    return Prepared(tensor, gain, (left, top), (h, w))


def square(prep: Prepared, size: int) -> Prepared:
    """A minimal-rectangle letterbox padded out to ``size``²: exactly what ``letterbox(image, size)`` gives."""
    _, th, tw = prep.tensor.shape
    (top, bottom), (left, right) = _split(size - th), _split(size - tw)
    if top == bottom == left == right == 0:
        return prep
    tensor = np.pad(prep.tensor, ((0, 0), (top, bottom), (left, right)), constant_values=np.float32(PAD / 255.0))
    return replace(prep, tensor=tensor, pad=(prep.pad[0] + left, prep.pad[1] + top))


def batch(prepared: list[Prepared], size: int) -> tuple[np.ndarray, list[Prepared]]:
    """One input blob for a batch: the images as letterboxed when their tensors have one shape (so each image gets
    the input ``predict()`` gives it alone), else every one padded out to the square (as ``predict()`` does a batch of
    mixed shapes)."""
    if len({p.tensor.shape for p in prepared}) > 1:
        prepared = [square(p, size) for p in prepared]
    return np.stack([p.tensor for p in prepared]), prepared


def nms(boxes: np.ndarray, scores: np.ndarray, iou: float = IOU) -> list[int]:
    """Greedy non-maximum suppression over xyxy boxes (torchvision's rule: IoU over ``iou`` goes); indices kept,
    best first."""
    order = np.argsort(-scores, kind="stable")
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    keep: list[int] = []
    while order.size and len(keep) < MAX_DET:
        best, rest = int(order[0]), order[1:]
        keep.append(best)
        xy1 = np.maximum(boxes[best, :2], boxes[rest, :2])
        xy2 = np.minimum(boxes[best, 2:], boxes[rest, 2:])
        inter = np.prod(np.clip(xy2 - xy1, 0, None), axis=1)
        overlap = inter / (areas[best] + areas[rest] - inter + 1e-9)
        order = rest[overlap <= iou]
    return keep


def decode(raw: np.ndarray, prep: Prepared, conf: float, names: dict[int, str]) -> list[dict[str, Any]]:
    """One image's (4 + classes, anchors) output → detections in original pixel coordinates, best first."""
    preds = raw.T
    scores_all = preds[:, 4:]
    classes = scores_all.argmax(axis=1)
    scores = scores_all[np.arange(len(preds)), classes]
    mask = scores > conf
    if not mask.any():
        return []
    xywh, scores, classes = preds[mask, :4], scores[mask], classes[mask]
    if len(scores) > MAX_NMS:
        top = np.argsort(-scores, kind="stable")[:MAX_NMS]
        xywh, scores, classes = xywh[top], scores[top], classes[top]
    boxes = np.concatenate([xywh[:, :2] - xywh[:, 2:] / 2, xywh[:, :2] + xywh[:, 2:] / 2], axis=1)
    keep = nms(boxes + classes[:, None].astype(np.float32) * MAX_WH, scores)
    sx, sy = prep.scale()
    boxes = (boxes[keep] - np.array([*prep.pad, *prep.pad])) / np.array([sx, sy, sx, sy])
    h, w = prep.shape
    boxes = boxes.clip(0, [w, h, w, h])
    return [
        {"cls": int(c), "name": names.get(int(c), str(int(c))), "conf": round(float(s), 4),
         "box": [round(float(v), 1) for v in b]}
        for b, s, c in zip(boxes, scores[keep], classes[keep], strict=True)
    ]  # fmt: skip
