"""YOLO detection pre- and post-processing in NumPy: letterbox in, decode + NMS out (the ONNX graph has no NMS)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

IOU = 0.7
MAX_DET = 300
PAD = 114


@dataclass(frozen=True)
class Prepared:
    """A letterboxed CHW float tensor and how to map its boxes back to the original image."""

    tensor: np.ndarray
    gain: float
    pad: tuple[float, float]
    shape: tuple[int, int]


def letterbox(image: np.ndarray, size: int) -> Prepared:
    """Resize keeping the aspect ratio, pad to ``size``², BGR→RGB, HWC→CHW, scale to [0, 1]."""
    import cv2

    h, w = image.shape[:2]
    gain = min(size / h, size / w)
    nh, nw = round(h * gain), round(w * gain)
    resized = cv2.resize(image, (nw, nh), interpolation=cv2.INTER_LINEAR) if (nh, nw) != (h, w) else image
    top, left = (size - nh) // 2, (size - nw) // 2
    canvas = np.full((size, size, 3), PAD, dtype=np.uint8)
    canvas[top : top + nh, left : left + nw] = resized
    tensor = canvas[:, :, ::-1].transpose(2, 0, 1).astype(np.float32) / 255.0
    return Prepared(np.ascontiguousarray(tensor), gain, (left, top), (h, w))


def nms(boxes: np.ndarray, scores: np.ndarray, iou: float = IOU) -> list[int]:
    """Greedy non-maximum suppression over xyxy boxes; indices kept, best first."""
    order = scores.argsort()[::-1]
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
    """One image's (4 + classes, anchors) output → detections in original pixel coordinates."""
    preds = raw.T
    scores_all = preds[:, 4:]
    classes = scores_all.argmax(axis=1)
    scores = scores_all[np.arange(len(preds)), classes]
    mask = scores >= conf
    if not mask.any():
        return []
    xywh, scores, classes = preds[mask, :4], scores[mask], classes[mask]
    boxes = np.concatenate([xywh[:, :2] - xywh[:, 2:] / 2, xywh[:, :2] + xywh[:, 2:] / 2], axis=1)
    offset = classes[:, None].astype(np.float32) * 4096.0  # per-class NMS in one pass
    keep = nms(boxes + offset, scores)
    boxes = (boxes[keep] - np.array([*prep.pad, *prep.pad])) / prep.gain
    h, w = prep.shape
    boxes = boxes.clip(0, [w, h, w, h])
    return [
        {"cls": int(c), "name": names.get(int(c), str(int(c))), "conf": round(float(s), 4),
         "box": [round(float(v), 1) for v in b]}
        for b, s, c in zip(boxes, scores[keep], classes[keep], strict=True)
    ]  # fmt: skip
