"""The pipeline's last stages (``submit train --deploy ALIAS``): register → gate → move the alias → make sure it is
served. Runs in the job process right after training succeeds, so it survives preemption and crashes like the job:
each stage is idempotent (a version is registered once per source job; the alias is moved at most once per job, and
only if it does not point at that version already; a deployment is created only if none exists), so a re-run attempt
finishes what an earlier one started and never does a stage twice.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from infra.audit import AuditLog
from infra.deployments import Deployments
from infra.model_registry import ModelRegistry
from tasks.attempt import AttemptControl
from tasks.errors import ModelNotFound
from tasks.model_records import AliasState, Deployment, ModelVersion, split_alias
from tasks.records import iso, utc_now
from tasks.specs import TrainSpec
from tasks.trust import TrustedPath, open_model

MAP50, MAP50_95 = "metrics/mAP50(B)", "metrics/mAP50-95(B)"


def best_metrics(history: list[dict[str, Any]]) -> dict[str, float]:
    """The validation figures of the epoch best.pt comes from (Ultralytics' fitness: 0.1 mAP50 + 0.9 mAP50-95)."""
    scored = [row for row in history if MAP50 in row and MAP50_95 in row]
    if not scored:
        return {}
    best = max(scored, key=lambda row: 0.1 * float(row[MAP50]) + 0.9 * float(row[MAP50_95]))
    return {"map50": float(best[MAP50]), "map50_95": float(best[MAP50_95]), "epoch": float(best["epoch"])}


def gate(spec: TrainSpec, metrics: dict[str, float]) -> str | None:
    """Why the version must not be deployed (the ``--min-map50`` gate), or None when it may."""
    if spec.min_map50 is None:
        return None
    map50 = metrics.get("map50")
    if map50 is None:
        return f"no validation mAP50 recorded, and the gate asks for {spec.min_map50:g}"
    if map50 < spec.min_map50:
        return f"validation mAP50 {map50:.4f} is below the gate {spec.min_map50:g}"
    return None


MOVES_SEEN = 2000  # audit entries a re-run reads back for its own earlier move (a re-run follows within minutes)


def moved_before(audit: AuditLog, alias: str, by: str) -> bool:
    """Whether this pipeline already moved the alias (an earlier attempt that crashed before recording its end): the
    move and its audit entry are one Redis step, so the entry is the proof, and an operator's later move stands."""
    moves = ("model-alias-set", "model-canary-set")
    return any(e.get("type") in moves and e.get("by") == by and e.get("alias") == alias
               for e in audit.entries(MOVES_SEEN))  # fmt: skip


def served_share(state: AliasState, version: int) -> float:
    """The % of the alias's requests ``version`` answers (0: it is not one of the alias's versions)."""
    canary = state.canary
    if canary is not None and canary.version == version:
        return canary.share
    return (100.0 - (canary.share if canary else 0.0)) if state.version == version else 0.0


def _move_alias(models: ModelRegistry, audit: AuditLog, spec: TrainSpec, version: int, by: str) -> AliasState:
    """Point the alias at ``version`` (stable, or canary at ``spec.canary`` %) unless it already does or this
    pipeline moved it once already (an operator may have moved it since: that stands)."""
    assert spec.deploy is not None
    try:
        state = models.alias(spec.deploy)
    except ModelNotFound:
        return models.set_alias(spec.deploy, version, by)  # the first version has nothing to be a canary beside
    if state.version == version or (state.canary is not None and state.canary.version == version):
        return state
    if moved_before(audit, state.alias, by):
        return state
    if spec.canary is None:
        return models.set_alias(spec.deploy, version, by)
    return models.set_canary(spec.deploy, version, spec.canary, by)


def _ensure_served(deployments: Deployments, spec: TrainSpec, by: str) -> bool:
    """Create a scale-to-zero deployment for the alias when none exists; True when it created one."""
    assert spec.deploy is not None
    if deployments.get(spec.deploy) is not None:
        return False
    now = iso(utc_now())
    deployment = Deployment(alias=spec.deploy, team=spec.team, replicas=1, min_replicas=0, created_at=now,
                            created_by=by)  # fmt: skip
    deployments.put(deployment, by, f"created by the pipeline of {by.removeprefix('job:')}")
    return True


def _register(
    control: AttemptControl, spec: TrainSpec, files: dict[str, Path], metrics: dict[str, float]
) -> ModelVersion:
    name, _ = split_alias(spec.deploy or "")
    model = open_model(TrustedPath(files["weights"]))  # this attempt's own best.pt (tasks.train_runner)
    classes = {int(k): str(v) for k, v in dict(model.names).items()}
    models = ModelRegistry(control.rt.registry.client, control.rt.settings.redis_url)
    return models.register(name, {"onnx": files["onnx"], "weights": files["weights"]}, control.store,
                           classes=classes, imgsz=spec.imgsz, metrics=metrics, source_job=control.job_id,
                           by=f"job:{control.job_id}")  # fmt: skip


def _trained_files(control: AttemptControl, workdir: Path) -> tuple[dict[str, Path], list[dict[str, Any]]]:
    """What training left in this attempt's folder (best.pt, else last.pt, and its ONNX export) and the epoch
    history it published (tasks.train_runner._results)."""
    weights = workdir / "run" / "weights"
    final = weights / "best.pt" if (weights / "best.pt").exists() else weights / "last.pt"
    history = control.store.get_json(f"jobs/{control.job_id}/results/metrics.json")
    return {"weights": final, "onnx": final.with_suffix(".onnx")}, history if isinstance(history, list) else []


def deploy_trained(spec: TrainSpec, control: AttemptControl, result: dict[str, Any], workdir: Path) -> dict[str, Any]:
    """Register the trained model, apply the gate, move the alias and make sure it is served; the job's result
    gains ``deployed`` saying what happened (each step also in the job's history)."""
    by = f"job:{control.job_id}"
    files, history = _trained_files(control, workdir)
    metrics = best_metrics(history)
    version = _register(control, spec, files, metrics)
    control.note("model-registered", f"registered {version.name} v{version.version} ({metrics or 'no metrics'})",
                 version=version.version)  # fmt: skip
    doc: dict[str, Any] = {"alias": spec.deploy, "version": version.version, "metrics": metrics}
    if (why := gate(spec, metrics)) is not None:
        control.note("deploy-gated", f"{spec.deploy} not moved to v{version.version}: {why}")
        return {**result, "deployed": {**doc, "gated": why}}
    client, url = control.rt.registry.client, control.rt.settings.redis_url
    state = _move_alias(ModelRegistry(client, url), AuditLog(client, url), spec, version.version, by)
    share = served_share(state, version.version)
    if share > 0:
        control.note("deployed", f"{spec.deploy} serves v{version.version} to {share:g} % of requests")
    else:
        control.note("deployed", f"{spec.deploy} was moved to v{version.version} by this pipeline, then by "
                                 f"{state.updated_by}: left as it is")  # fmt: skip
    created = _ensure_served(Deployments(control.rt.registry.client, control.rt.settings.redis_url), spec, by)
    return {**result, "deployed": {**doc, "share": share, "deployment_created": created}}
