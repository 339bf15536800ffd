"""What the GPU validation runs: the issue's sizes on a GPU, and a tiny CPU dry run that exercises the same code.

The dry run never trains more than yolov8n at imgsz 64 for one epoch (this machine has 2 cores and other work); it
proves the driver, the stack, the measurements and the JSON end to end, not any GPU figure.
"""

from __future__ import annotations

from dataclasses import dataclass

STEPS = ("inventory", "train", "preempt", "warm_start", "memory", "infer", "pytest")


@dataclass(frozen=True)
class Profile:
    """Sizes of every step; ``simulated_gpus`` empty means the real inventory through NVML."""

    name: str
    simulated_gpus: str
    device: str
    imgsz: int
    train_models: tuple[str, ...]
    train_batch: int
    train_epochs: int
    workers: int
    images: int  # the training dataset (train, preempt, warm start)
    preempt_models: tuple[str, ...]
    preempt_batch: int
    preempt_epochs: int
    memory_models: tuple[str, ...]
    memory_batches: tuple[int, ...]
    small_images: int  # the memory and inference dataset
    infer_batches: tuple[int, ...]
    half: bool

    @property
    def skip_epochs(self) -> int:
        """Epochs left out of throughput: the first (cuDNN autotune, allocator growth) when there are others."""
        return 1 if self.train_epochs > 1 else 0

    @property
    def on_gpu(self) -> bool:
        """True for the device run."""
        return self.device != "cpu"


GPU = Profile(
    name="gpu", simulated_gpus="", device="0", imgsz=640,
    train_models=("yolov8n", "yolov8s"), train_batch=32, train_epochs=3, workers=8, images=2048,
    preempt_models=("yolov8n", "yolov8s", "yolov8m"), preempt_batch=16, preempt_epochs=2,
    memory_models=("yolov8n", "yolov8s", "yolov8m"), memory_batches=(16, 32), small_images=512,
    infer_batches=(1, 32), half=True,
)  # fmt: skip

CPU_DRY_RUN = Profile(
    name="cpu-dry-run", simulated_gpus="0:H100:80", device="cpu", imgsz=64,
    train_models=("yolov8n",), train_batch=8, train_epochs=1, workers=2, images=96,
    preempt_models=("yolov8n",), preempt_batch=4, preempt_epochs=1,
    memory_models=(), memory_batches=(), small_images=32,
    infer_batches=(1, 8), half=False,
)  # fmt: skip
