"""How long a job will run, and how long a running one has left (pure): the input of queue ETAs and of preemption.

A training job's runtime is ``epochs × ceil(images / batch)`` batches times the seconds one batch takes, and the
seconds per batch depend on the model, the image size, the batch and the GPU. yoloq records, for every training job
that succeeds, its measured seconds per batch (wall time of all its attempts, start-up, validation and checkpoints
included, over the batches it trained) and its dataset's size. The estimate takes the first of (the *fallback
chain*, each step named in ``source``):

1. ``spec``: a probe runs exactly its declared ``seconds``.
2. ``history``: the median seconds per batch of earlier runs of the same model, image size and batch (on the same
   GPU model when the job's GPU is known), times the job's batches.
3. ``declared``: the job's own ``expected_minutes``.
4. ``history-scaled``: runs of the same model at any image size, batch or GPU, as seconds per image scaled by
   ``(imgsz / 640)²`` (compute grows with pixels), times the job's images.
5. ``default``: a per-model seconds-per-image guess for training (:data:`DEFAULT_S_PER_IMAGE`, at 640), a fixed
   guess for inference and export (:data:`DEFAULT_S`).
A serving replica runs until it is stopped: it has no expected runtime (None, ``source`` says so).

The dataset's size comes from history of the same ``data`` location; unknown, it is taken as the median size of the
data sets in the history (:data:`DEFAULT_IMAGES` without history) and ``source`` says "dataset size assumed".
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

from routing.sla import percentile

REF_IMGSZ = 640
DEFAULT_IMAGES = 1000
# Seconds per image at imgsz 640 on a data-centre GPU with AMP, per model scale (n..x): a guess used only without
# any history, roughly Ultralytics' published A100 training throughput; the first finished job replaces it.
DEFAULT_S_PER_IMAGE = {"n": 0.004, "s": 0.006, "m": 0.012, "l": 0.018, "x": 0.028}
DEFAULT_S = {"train": 3600.0, "infer": 600.0, "export": 300.0, "probe": 60.0}


@dataclass(frozen=True, slots=True)
class Shape:
    """What a job's runtime depends on, read from its spec (``model`` like ``yolov8n``; ``gpu`` the GPU model name
    once known, None while it waits)."""

    kind: str
    model: str = ""
    data: str = ""
    imgsz: int = REF_IMGSZ
    batch: int = 16
    epochs: int = 1
    gpu: str | None = None
    declared_s: float | None = None
    fixed_s: float | None = None


@dataclass(frozen=True, slots=True)
class Sample:
    """One finished training job: its shape, the GPU model it ran on, its batches per epoch and seconds per batch."""

    model: str
    data: str
    imgsz: int
    batch: int
    gpu: str
    batches_per_epoch: int
    s_per_batch: float


@dataclass(frozen=True, slots=True)
class Estimate:
    """Expected runtime in seconds (None: runs until stopped) and which step of the fallback chain gave it."""

    seconds: float | None
    source: str


def images_of(shape: Shape, history: Sequence[Sample]) -> int | None:
    """The dataset's size as the newest earlier run on the same data saw it (batches per epoch × its batch)."""
    seen = [s for s in history if s.data == shape.data and shape.data]
    return seen[-1].batches_per_epoch * seen[-1].batch if seen else None


def _scale(model: str) -> str:
    return model[-1] if model and model[-1] in DEFAULT_S_PER_IMAGE else "n"


def _pixels(imgsz: int) -> float:
    return (imgsz / REF_IMGSZ) ** 2


def _exact(shape: Shape, history: Sequence[Sample]) -> list[float]:
    return [
        s.s_per_batch
        for s in history
        if (s.model, s.imgsz, s.batch) == (shape.model, shape.imgsz, shape.batch) and shape.gpu in (None, s.gpu)
    ]


def _per_image(shape: Shape, history: Sequence[Sample]) -> list[float]:
    """Seconds per image at 640 of every earlier run of the same model."""
    return [s.s_per_batch / s.batch / _pixels(s.imgsz) for s in history if s.model == shape.model]


def expected(shape: Shape, history: Sequence[Sample]) -> Estimate:
    """The job's expected runtime by the fallback chain in the module docstring."""
    if shape.kind == "serve":
        return Estimate(None, "serve: a replica runs until it is stopped")
    if shape.fixed_s is not None:
        return Estimate(shape.fixed_s, "spec: a probe runs its declared seconds")
    if shape.kind == "train":
        return _train(shape, history)
    if shape.declared_s is not None:
        return Estimate(shape.declared_s, "declared: expected_minutes")
    return Estimate(DEFAULT_S.get(shape.kind, DEFAULT_S["train"]), f"default: {shape.kind} job")


def _train(shape: Shape, history: Sequence[Sample]) -> Estimate:
    """Steps 2-5 of the chain for a training job."""
    known = images_of(shape, history)
    typical = round(statistics.median(s.batches_per_epoch * s.batch for s in history)) if history else DEFAULT_IMAGES
    images = known if known is not None else typical
    note = "" if known is not None else f"; dataset size assumed {images} images"
    batches = shape.epochs * math.ceil(images / shape.batch)
    if exact := _exact(shape, history):
        median = statistics.median(exact)
        return Estimate(median * batches, f"history: {len(exact)} runs of {_key(shape)}, {median:.3g} s/batch{note}")
    if shape.declared_s is not None:
        return Estimate(shape.declared_s, "declared: expected_minutes")
    if per_image := _per_image(shape, history):
        s_img = statistics.median(per_image) * _pixels(shape.imgsz)
        why = f"history-scaled: {len(per_image)} runs of {shape.model} at other sizes"
    else:
        s_img = DEFAULT_S_PER_IMAGE[_scale(shape.model)] * _pixels(shape.imgsz)
        why = f"default: no history for {shape.model or 'this model'}"
    return Estimate(s_img * shape.epochs * images, f"{why}, {s_img:.3g} s/image{note}")


def _key(shape: Shape) -> str:
    on = f" on {shape.gpu}" if shape.gpu else ""
    return f"{shape.model} imgsz {shape.imgsz} batch {shape.batch}{on}"


def remaining(expected_s: float | None, done: float, elapsed_s: float) -> float:
    """Seconds left of a running job: the expectation's share left, blended with the progress rate as the job
    advances (weight = fraction done), so early on the history speaks and near the end the job's own pace does.

    ``done`` is the fraction of work done (0..1), ``elapsed_s`` the time this attempt has run. Without an
    expectation: the progress rate alone, or ten times the elapsed time while nothing is done (the old rule)."""
    done = min(max(done, 0.0), 1.0)
    by_pace = elapsed_s * (1 - done) / done if done > 0 else None
    if expected_s is None:
        return by_pace if by_pace is not None else max(elapsed_s, 1.0) * 10
    by_plan = expected_s * (1 - done)
    if by_pace is None:
        return by_plan
    return (1 - done) * by_plan + done * by_pace


def error_summary(rows: Sequence[tuple[str, float]]) -> dict[str, object]:
    """How far finished jobs' runtime predictions were off: count and p50/p95 of ``|predicted - actual| / actual``,
    overall and per source (the first word of the fallback step), from ``(source, ratio)`` rows."""
    by_source: dict[str, list[float]] = {}
    for source, ratio in rows:
        by_source.setdefault(source, []).append(ratio)
    every = [ratio for _, ratio in rows]
    return {
        "count": len(every),
        "error_p50": percentile(every, 0.50),
        "error_p95": percentile(every, 0.95),
        "by_source": {s: {"count": len(v), "error_p50": percentile(v, 0.50)} for s, v in sorted(by_source.items())},
    }
