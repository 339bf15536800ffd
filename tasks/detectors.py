"""The two ways an infer job runs a model over a batch of letterboxed images, with one output contract.

* :class:`OnnxDetector`: ONNX Runtime on the CPU (no torch in the hot path; 2.3× ``predict()`` on .pt here, BRIEF §5).
* :class:`TorchDetector`: the Ultralytics ``DetectionModel`` itself, in FP16 on a GPU (``half`` only on CUDA), fed the
  same letterboxed tensors; its raw output has the ONNX export's layout ``(batch, 4 + classes, anchors)``, so both go
  through the same NumPy decode and NMS (:mod:`tasks.postprocess`) and write identical JSON.

``choose`` picks: ``torch`` when the job process has a GPU and the model is PyTorch weights (or ``backend`` says so),
else ``onnx`` (a ``.pt`` model is exported to ONNX first).
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Protocol

import numpy as np

from tasks.errors import SpecRejected
from tasks.trust import TrustedPath, open_model


class Detector(Protocol):
    """Raw model output for a stacked batch of letterboxed CHW float32 images in [0, 1]."""

    name: str
    names: dict[int, str]
    batch: int

    def raw(self, blob: np.ndarray) -> np.ndarray:
        """``(batch, 4 + classes, anchors)`` float32, boxes as centre x, y, width, height in letterbox pixels."""


class OnnxDetector:
    """ONNX Runtime, CPU provider; the batch size is the model's fixed one or the job's (dynamic axis)."""

    name = "onnx-cpu"

    def __init__(self, model: Path, batch: int) -> None:
        import onnxruntime as ort

        self.session = ort.InferenceSession(str(model), ort.SessionOptions(), providers=["CPUExecutionProvider"])
        meta = self.session.get_modelmeta().custom_metadata_map
        self.names: dict[int, str] = ast.literal_eval(meta["names"]) if "names" in meta else {}
        fixed = self.session.get_inputs()[0].shape[0]
        self.batch = fixed if isinstance(fixed, int) else batch
        self._input = self.session.get_inputs()[0].name

    def raw(self, blob: np.ndarray) -> np.ndarray:
        """One ONNX Runtime call."""
        return np.asarray(self.session.run(None, {self._input: blob})[0], dtype=np.float32)


class TorchDetector:
    """The PyTorch model on ``device`` (FP16 on CUDA, FP32 on the CPU), weights loaded once per job from the copy the
    trust rule checked (:data:`tasks.trust.TrustedPath`)."""

    def __init__(self, model: TrustedPath, batch: int, device: str) -> None:
        import torch

        self.torch = torch
        self.device = torch.device("cpu" if device == "cpu" else f"cuda:{device}")
        self.half = self.device.type == "cuda"
        net = open_model(model).model
        if net is None or not hasattr(net, "names"):
            raise SpecRejected(f"{model.name} is not a detection model")
        self.names = {int(k): str(v) for k, v in dict(net.names).items()}
        net = net.to(self.device).eval()
        self.net = net.half() if self.half else net.float()
        self.batch = batch
        self.name = "torch-fp16-cuda" if self.half else "torch-fp32-cpu"

    def raw(self, blob: np.ndarray) -> np.ndarray:
        """One forward pass under inference mode; the output back on the host as float32."""
        torch = self.torch
        with torch.inference_mode():
            x = torch.from_numpy(blob).to(self.device, non_blocking=True)
            out = self.net(x.half() if self.half else x)
            first = out[0] if isinstance(out, (list, tuple)) else out
            return np.asarray(first.float().cpu().numpy(), dtype=np.float32)


def choose(backend: str, model: Path, device: str) -> str:
    """Which detector an infer job uses (see the module docstring)."""
    if backend != "auto":
        if backend == "torch" and model.suffix.lower() != ".pt":
            raise SpecRejected(f"backend torch needs PyTorch weights (.pt), got {model.name}")
        return backend
    return "torch" if device != "cpu" and model.suffix.lower() == ".pt" else "onnx"
