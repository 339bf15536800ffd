"""Plain Ultralytics training in a process of its own: the baseline that yoloq's figures are compared with.

``python -m bench.gpu.plain_train OUT.json MODEL DATA_YAML IMGSZ BATCH EPOCHS WORKERS DEVICE SCRATCH``

The same offline environment as a yoloq job process (``tasks.offline``: no downloads, no integrations) and nothing
else of yoloq: no callbacks of ours, no registry, no S3. A batch-end callback records (time, epoch, batches done)
so that images/s is computed exactly as for a yoloq job (bench.gpu.results.images_per_s); the peaks come from torch
(``max_memory_reserved``/``allocated``, what shared/data's table holds) and from NVML (this process's whole use,
CUDA context included: what another job on the GPU actually loses).
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
MIB = 1024 * 1024


def _callbacks(samples: list[list[float]]) -> dict[str, Any]:
    state = {"batch": 0}

    def epoch_start(trainer: Any) -> None:
        state["batch"] = 0

    def batch_end(trainer: Any) -> None:
        state["batch"] += 1
        samples.append([time.time(), 1, int(trainer.epoch), state["batch"]])

    return {"on_train_epoch_start": epoch_start, "on_train_batch_end": batch_end}


def _torch_peaks(device: str) -> dict[str, Any]:
    import torch

    if device == "cpu" or not torch.cuda.is_available():
        return {"peak_reserved_mib": None, "peak_alloc_mib": None, "torch": torch.__version__}
    return {
        "peak_reserved_mib": round(torch.cuda.max_memory_reserved() / MIB, 1),
        "peak_alloc_mib": round(torch.cuda.max_memory_allocated() / MIB, 1),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "gpu": torch.cuda.get_device_name(0),
    }


def train(args: list[str]) -> dict[str, Any]:
    """Train once with the given sizes; samples, wall time and memory peaks."""
    model, data, imgsz, batch, epochs, workers, device, scratch = args
    sys.path.insert(0, str(ROOT))
    from bench.gpu.nvml import Nvml, PeakSampler
    from tasks.offline import prepare_environment

    prepare_environment(Path(scratch) / "ultralytics-config", threads=len(os.sched_getaffinity(0)))
    from tasks.offline import settle_ultralytics

    settle_ultralytics()
    from ultralytics import YOLO

    samples: list[list[float]] = []
    yolo = YOLO(model)
    for name, callback in _callbacks(samples).items():
        yolo.add_callback(name, callback)
    nvml = Nvml() if device != "cpu" else None
    sampler = PeakSampler(nvml, pid=os.getpid()) if nvml is not None else None
    started = time.time()
    with sampler.running() if sampler is not None else contextlib.nullcontext():
        yolo.train(data=data, imgsz=int(imgsz), batch=int(batch), epochs=int(epochs), workers=int(workers),
                   device=device, save_dir=str(Path(scratch) / "run"), exist_ok=True, plots=False, val=True,
                   verbose=False, amp=True)  # fmt: skip
    wall = time.time() - started
    return {
        "model": model, "imgsz": int(imgsz), "batch": int(batch), "epochs": int(epochs), "workers": int(workers),
        "device": device, "train_call_s": round(wall, 3), "samples": samples,
        "nvml_pid_peak_mib": sampler.pid_peak_mib if sampler else None,
        "nvml_device_peak_mib": sampler.device_peak_mib if sampler else None, **_torch_peaks(device),
    }  # fmt: skip


def main(argv: list[str]) -> None:
    """Write the document to ``argv[0]``."""
    doc = train(argv[1:])
    Path(argv[0]).write_text(json.dumps(doc))


if __name__ == "__main__":
    main(sys.argv[1:])
    sys.stdout.flush()
    os._exit(0)  # skip DataLoader/CUDA teardown: the document is written
