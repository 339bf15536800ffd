"""The export job body: weights (local path, ``s3://`` URI or a model yaml) → ONNX, or a TensorRT engine on a GPU.

ONNX exports carry a dynamic batch axis (batched inference needs it) and no NMS (yoloq's infer job does NMS).
TensorRT is imported lazily and only on a GPU worker whose image ships it; engines are cached in S3 under a key of
(GPU model, compute capability, TensorRT version, weights sha256), because an engine only runs where it was built.
Weights are loaded only from the private copy :func:`tasks.trust.trusted_copy` checked (the trust rule).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tasks.errors import JobFailed
from tasks.runner import Control
from tasks.specs import ExportSpec
from tasks.trust import TrustedPath, open_model, sha256_of, trusted_copy


def fetch_model(model: str, control: Control, workdir: Path) -> TrustedPath:
    """The model a spec names, ready to load: a local yaml as is, anything else as a checked private copy."""
    return trusted_copy(model, control.store, control.trust, workdir)


def engine_cache_key(weights_sha256: str, gpu_name: str, capability: tuple[int, int], trt_version: str) -> str:
    """Where a built engine is cached: it is valid only for this GPU model, compute capability and TensorRT."""
    safe = gpu_name.replace(" ", "_").replace("/", "_")
    return f"engines/{weights_sha256[:16]}/{safe}-sm{capability[0]}{capability[1]}-trt{trt_version}.engine"


def _engine_environment() -> tuple[str, tuple[int, int], str]:
    """(GPU name, compute capability, TensorRT version), or JobFailed when this worker cannot build engines."""
    try:
        import tensorrt
    except ImportError:
        raise JobFailed("TensorRT engine export needs a GPU worker whose image ships TensorRT") from None
    import torch

    if not torch.cuda.is_available():
        raise JobFailed("TensorRT engine export needs a GPU; this worker has none")
    return torch.cuda.get_device_name(0), torch.cuda.get_device_capability(0), str(tensorrt.__version__)


def run_export(spec: ExportSpec, control: Control, workdir: Path, device: str) -> dict[str, Any]:
    """Export the model and upload the artefact to ``jobs/{id}/results/``; engines are reused from the cache."""
    from tasks.offline import settle_ultralytics

    settle_ultralytics()
    weights = fetch_model(spec.model, control, workdir)
    control.progress(step=0, steps=1)
    if spec.format == "engine":
        name, capability, trt = _engine_environment()
        key = engine_cache_key(sha256_of(weights) if weights.exists() else spec.model, name, capability, trt)
        if not control.store.list_objects(key):
            built = open_model(weights).export(format="engine", imgsz=spec.imgsz, half=spec.half, device=device)
            control.store.put_file(key, Path(built))
        control.progress(step=1, steps=1)
        return {"engine": control.store.uri(key), "cache_key": key}
    exported = Path(open_model(weights).export(format="onnx", imgsz=spec.imgsz, dynamic=True, simplify=False,
                                               half=spec.half and device != "cpu", device=device))  # fmt: skip
    key = f"jobs/{control.job_id}/results/model.onnx"
    size = control.store.put_file(key, exported)
    control.progress(step=1, steps=1)
    return {"onnx": control.store.uri(key), "bytes": size, "sha256": sha256_of(exported)}
