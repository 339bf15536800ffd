"""The train job body: dataset → newest valid checkpoint → Ultralytics training with our callbacks → results in S3.

Runs inside the job process (``tasks.job_process``), never in the Celery pool child: a non-daemonic process may use
DataLoader workers (4.7× faster on a GPU, BRIEF §5) and its exit frees the GPU at once. It talks to the world only
through ``control`` (registry progress, preempt flag, events) and ``control.store`` (S3), so it also runs offline
against in-memory adapters.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from tasks import datasets, label_cache
from tasks.checkpoint_uploads import DEFAULT, with_retries
from tasks.checkpoints import CheckpointStore, Fetched
from tasks.errors import Cancelled, CheckpointError, Preempted
from tasks.runner import Control
from tasks.specs import TrainSpec
from tasks.train_session import Resume, TrainSession
from tasks.trust import TrustedPath, open_model, trusted_copy


@dataclass(frozen=True)
class JobEnv:
    """Where an attempt may write and how much of the machine it may use."""

    workdir: Path
    cache: Path
    threads: int = 2
    keep: int = 3
    device: str = "cpu"
    first_batch: Callable[[], None] | None = None  # called at the first trained batch (tasks.job_process)
    abandon: Callable[[Preempted | Cancelled], None] | None = None  # record an outcome and exit (tasks.job_process)


def verify_checkpoint(path: Path) -> None:
    """A checkpoint is usable when torch can load it and it holds the EMA weights and an epoch counter."""
    import torch

    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)  # our own bucket's Ultralytics format
    except Exception as err:  # torch raises many unrelated types for a damaged file
        raise CheckpointError(f"{path.name} does not load: {type(err).__name__}: {err}".splitlines()[0]) from None
    if not isinstance(ckpt, dict) or "epoch" not in ckpt or (ckpt.get("ema") or ckpt.get("model")) is None:
        raise CheckpointError(f"{path.name} is not a resumable Ultralytics checkpoint")


def warm_label_cache(dataset: datasets.LocalDataset) -> None:
    """Build Ultralytics' label ``.cache`` files under a lock, so concurrent jobs on one dataset never race on them."""
    from ultralytics.data.dataset import YOLODataset
    from ultralytics.data.utils import check_det_dataset

    with datasets.locked(dataset.root / ".yoloq-labels.lock"):
        data = check_det_dataset(str(dataset.data_yaml))
        for split in ("train", "val"):
            paths = data[split] if isinstance(data[split], list) else [data[split]]
            for img_path in paths:
                YOLODataset(img_path=str(img_path), data=data, task="detect", augment=False)


def _trainer_class() -> type:
    from ultralytics.models.yolo.detect import DetectionTrainer

    class PreemptibleTrainer(DetectionTrainer):  # type: ignore[misc]
        """Ultralytics' trainer, able to resume a checkpoint taken inside the first epoch (epoch counter -1)."""

        def resume_training(self, ckpt: Any) -> None:
            if ckpt is None or not self.resume or ckpt.get("epoch", -1) >= 0:
                super().resume_training(ckpt)
                return
            self._load_checkpoint_state(ckpt)
            self.start_epoch = 0

    return PreemptibleTrainer


def _start_point(control: Control, ckpts: CheckpointStore, env: JobEnv) -> Fetched:
    target = env.workdir / "resume"
    target.mkdir(parents=True, exist_ok=True)
    fetched = with_retries(lambda: ckpts.fetch(target, verify_checkpoint), "fetching the newest checkpoint")
    for note in fetched.skipped:
        control.note("checkpoint-fallback", f"skipped checkpoint {note}")
    if fetched.ref is not None:
        control.note(
            "resume", f"resuming from {fetched.ref.key} at epoch {fetched.ref.epoch}, batch {fetched.ref.batch}"
        )
    elif fetched.skipped:
        control.note("restart", "no valid checkpoint left: training restarts from scratch")
    return fetched


def _train_args(spec: TrainSpec, data_yaml: Path, env: JobEnv, resume: Path | None) -> dict[str, Any]:
    common = {"data": str(data_yaml), "save_dir": str(env.workdir / "run"), "workers": spec.workers,
              "device": env.device, "plots": False, "exist_ok": True, "verbose": False}  # fmt: skip
    if resume is not None:
        # A path, not True: Model.train() refuses resume=True for a checkpoint taken inside the first epoch.
        return {**common, "resume": str(resume)}
    return {**common, "epochs": spec.epochs, "imgsz": spec.imgsz, "batch": spec.batch, "amp": spec.amp,
            "save_period": -1, "val": True}  # fmt: skip


def run_train(spec: TrainSpec, control: Control, env: JobEnv) -> dict[str, Any]:
    """Train (or resume) to completion; Preempted/Cancelled propagate from the callbacks."""
    from tasks.offline import settle_ultralytics

    settle_ultralytics()
    label_cache.install()  # before any dataset is built: a planted labels/*.cache must not unpickle
    dataset = datasets.resolve(spec.data, control.store, env.cache, env.workdir)
    warm_label_cache(dataset)
    ckpts = CheckpointStore(control.store, control.job_id, env.keep, ledger=control.trust.ledger)
    start = _start_point(control, ckpts, env)
    resume = Resume(start.ref.epoch, start.ref.batch) if start.ref else Resume()
    metrics = ckpts.results_key("metrics.json")
    history = with_retries(lambda: control.store.get_json(metrics), "reading metrics.json") if start.ref else None
    session = TrainSession(control, ckpts, verify_checkpoint, spec.save_period, env.threads, resume=resume,
                           first_batch=env.first_batch, abandon=env.abandon,
                           history=[r for r in history or [] if r.get("epoch", 1 << 30) < resume.epoch])  # fmt: skip
    if start.path is not None and resume.epoch >= spec.epochs and not resume.batch:
        # Every epoch was trained and published: the attempt died after its last checkpoint, while it validated or
        # wrote its results. Ultralytics refuses to resume a finished run, so write the results from that checkpoint.
        control.note("trained", f"all {spec.epochs} epochs were trained by an earlier attempt: writing the results")
        _final_weights(start.path, env.workdir / "run" / "weights")
        return _results(spec, control, ckpts, session, env)
    model = open_model(start.path or trusted_copy(spec.model, control.store, control.trust, env.workdir))
    session.register(model)
    model.train(trainer=_trainer_class(), **_train_args(spec, dataset.data_yaml, env, start.path))
    session.flush(DEFAULT.give_up_s)  # the last epoch's checkpoint, still uploading if S3 was out
    return _results(spec, control, ckpts, session, env)


def _final_weights(checkpoint: TrustedPath, weights: Path) -> None:
    """A finished run's last checkpoint as Ultralytics leaves its final ``last.pt``: the optimizer stripped."""
    from ultralytics.utils.torch_utils import strip_optimizer

    weights.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(checkpoint, weights / "last.pt")
    strip_optimizer(weights / "last.pt")


def _earlier_best(control: Control, ckpts: CheckpointStore, best: Path) -> None:
    """The best epoch was trained by an earlier attempt: fetch its weights (checked against their record) and strip
    the optimizer; weights that fail the check are left out, and the job's history says why."""
    from ultralytics.utils.torch_utils import strip_optimizer

    try:
        fetched = ckpts.fetch_result("best.pt", best)
    except CheckpointError as err:
        control.note("weights-refused", f"best.pt of an earlier attempt not used: {err}")
        return
    if fetched is not None:
        strip_optimizer(fetched)


def _results(spec: TrainSpec, control: Control, ckpts: CheckpointStore, session: TrainSession,
             env: JobEnv) -> dict[str, Any]:  # fmt: skip
    """Upload the final stripped weights, best.pt (both recorded as trusted), the metrics history and an ONNX export."""
    weights = env.workdir / "run" / "weights"
    store, uris = control.store, {}
    best = weights / "best.pt"
    if not best.exists():
        _earlier_best(control, ckpts, best)
    # best.pt and last.pt were written by this attempt's trainer in its private folder, or checked just above.
    final = TrustedPath(best if best.exists() else weights / "last.pt")
    for name, path in (("best.pt", best), ("last.pt", weights / "last.pt")):
        if path.exists():
            uris[name.removesuffix(".pt")] = with_retries(partial(ckpts.publish_result, name, path), f"upload {name}")
    with_retries(partial(store.put_json, ckpts.results_key("metrics.json"), session.history), "upload metrics")
    onnx = Path(open_model(final).export(format="onnx", imgsz=spec.imgsz, dynamic=True, simplify=False,
                                         device=env.device))  # fmt: skip
    with_retries(partial(store.put_file, ckpts.results_key("model.onnx"), onnx), "upload model.onnx")
    uris |= {
        "metrics": store.uri(ckpts.results_key("metrics.json")),
        "onnx": store.uri(ckpts.results_key("model.onnx")),
    }
    last = session.history[-1] if session.history else {}
    return {**uris, "epochs": len(session.history), "batches_this_attempt": session.batches_run, "final_metrics": last}
