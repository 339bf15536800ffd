"""``yoloq model register|list|show|alias|canary|promote|rollback``: the model registry (docs/serving.md).

A version is registered once, its artefacts uploaded to S3 with their sha256; an alias (``name@label``, a bare name
is ``name@prod``) points at a stable version and optionally sends a share of its requests to a canary. Every change
is in the audit log with who made it. ``show`` adds each version's serving figures (requests, errors, p50/p99,
detections and confidence per request), which is what a canary is judged on.
"""

from __future__ import annotations

import ast
import tempfile
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

import click

from yoloq.cli import session
from yoloq.cli.jobs import emit
from yoloq.cli.session import ACTOR

if TYPE_CHECKING:
    from infra.model_registry import ModelRegistry
    from infra.ports import ObjectStore
    from infra.serve_stats import ServeStats
    from tasks.model_records import AliasState, ArtefactKind


def _registry() -> tuple[ModelRegistry, ServeStats]:
    from infra.model_registry import ModelRegistry
    from infra.serve_stats import ServeStats

    client = session.client()
    redis_client, url = client.registry.client, client.settings.redis_url
    return ModelRegistry(redis_client, url), ServeStats(redis_client, url)


def _local(location: str, store: ObjectStore, folder: Path) -> Path:
    """A local file for ``location``: a path as is, an ``s3://`` object downloaded into ``folder``."""
    from tasks.errors import SpecRejected

    if not location.startswith("s3://"):
        path = Path(location)
        if not path.is_file():
            raise SpecRejected(f"{location} is not a file")
        return path
    bucket, _, key = location.removeprefix("s3://").partition("/")
    target = folder / PurePosixPath(key).name
    if not key or not store.get_file(key, target, bucket=bucket):
        raise SpecRejected(f"{location} does not exist")
    return target


def _literal(text: str | None) -> Any:
    """A Python literal from ONNX metadata (Ultralytics writes ``str(dict)``), never evaluated as code."""
    try:
        return ast.literal_eval(text) if text else None
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        return None


def onnx_facts(path: Path) -> tuple[dict[int, str], int | None]:
    """The class names and input size an ONNX export carries (Ultralytics' ``names`` and ``imgsz`` metadata; the
    input's static shape when ``imgsz`` is missing), so a version says what it detects without anyone retyping it."""
    import onnxruntime

    from tasks.errors import SpecRejected

    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3
    try:
        model = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as err:  # onnxruntime's own error types (Fail, InvalidGraph, InvalidProtobuf ...)
        raise SpecRejected(f"{path.name} is not an ONNX model onnxruntime loads: {str(err).splitlines()[0]}") from None
    meta = model.get_modelmeta().custom_metadata_map
    names = _literal(meta.get("names"))
    if not isinstance(names, dict) or not names:
        raise SpecRejected(f"{path.name} has no class names in its metadata (export it with Ultralytics)")
    size = _literal(meta.get("imgsz"))
    if size is None:
        size = [d for d in model.get_inputs()[0].shape[-2:] if isinstance(d, int)] or None
    if isinstance(size, list | tuple):
        size = max(size) if size and all(isinstance(d, int) for d in size) else None
    return {int(k): str(v) for k, v in names.items()}, size if isinstance(size, int) else None


def _alias_text(state: AliasState) -> str:
    canary = f", canary v{state.canary.version} at {state.canary.share:g} %" if state.canary else ""
    back = f", before: {', '.join(f'v{v}' for v in state.history)}" if state.history else ""
    return f"{state.alias} → v{state.version}{canary}{back} (by {state.updated_by} at {state.updated_at})"


def _show_text(doc: dict[str, Any]) -> str:
    lines = []
    for v in doc["versions"]:
        scores = " ".join(f"{k}={x:.4g}" for k, x in v["metrics"].items()) or "no metrics"
        s = v["serving"]
        lines.append(f"v{v['version']}  {scores}  {len(v['classes'])} classes @{v['imgsz']}  {v['created_at']} by "
                     f"{v['created_by']}  requests={s['requests']} errors={s['errors']} p50={s['p50_ms']} ms "
                     f"p99={s['p99_ms']} ms detections/req={s['mean_detections']} "
                     f"conf={s['mean_confidence']}")  # fmt: skip
    for a in doc["aliases"]:
        canary = f", canary v{a['canary']['version']} at {a['canary']['share']:g} %" if a["canary"] else ""
        batches = " ".join(f"{size}×{n}" for size, n in a["serving"]["batch_sizes"].items()) or "none"
        cold = ", ".join(f"{s:g} s" for s in a["serving"]["cold_starts_s"][:3]) or "none"
        lines.append(f"{a['alias']} → v{a['version']}{canary}  batches: {batches}  cold starts: {cold}")
    return "\n".join(lines)


@click.group("model")
def model_group() -> None:
    """The model registry: versions in S3, aliases with a canary split, serving figures."""


@model_group.command("register")
@click.argument("name")
@click.option("--onnx", "onnx", required=True, metavar="PATH_OR_S3", help="The ONNX export (classes, imgsz inside).")
@click.option("--weights", default=None, metavar="PATH_OR_S3", help="The .pt weights (the torch backend's).")
@click.option("--imgsz", type=click.IntRange(1, 16384), default=None, help="Input size, when the ONNX lacks it.")
@click.option("--map50", type=float, default=None, help="Validation mAP50, recorded with the version.")
@click.option("--map50-95", "map50_95", type=float, default=None, help="Validation mAP50-95.")
@click.option("--json", "as_json", is_flag=True)
def register_cmd(name: str, onnx: str, as_json: bool, **given: Any) -> None:
    """Register NAME's next version from an ONNX export (and its weights); prints the version."""
    from infra.model_registry import model_name
    from infra.s3 import S3Store
    from tasks.errors import SpecRejected

    name = model_name(name)
    models, _ = _registry()
    store = S3Store(session.client().settings)
    metrics = {k: float(given[k]) for k in ("map50", "map50_95") if given[k] is not None}
    sources: list[tuple[ArtefactKind, str | None]] = [("onnx", onnx), ("weights", given["weights"])]
    files: dict[ArtefactKind, Path] = {}
    with tempfile.TemporaryDirectory(prefix="yoloq-model-") as tmp:
        for kind, location in sources:
            if location is not None:
                (Path(tmp) / kind).mkdir()
                files[kind] = _local(location, store, Path(tmp) / kind)
        classes, found = onnx_facts(files["onnx"])
        size = given["imgsz"] or found
        if size is None:
            raise SpecRejected(f"{onnx} does not say its input size; give --imgsz")
        version = models.register(name, files, store, classes=classes, imgsz=size, metrics=metrics, by=ACTOR)
    emit(version.model_dump(mode="json"), as_json, f"registered {name} v{version.version}")


@model_group.command("list")
@click.option("--json", "as_json", is_flag=True)
def list_cmd(as_json: bool) -> None:
    """Every model: its newest version, how many it has, and its aliases."""
    rows = _registry()[0].catalog()
    text = [f"{r['name']:<24} v{r['latest']:<4} {r['versions']} version(s)  "
            + "  ".join(f"{a['alias']}→v{a['version']}" for a in r["aliases"]) for r in rows]  # fmt: skip
    emit(rows, as_json, "\n".join(text) or "no models")


@model_group.command("show")
@click.argument("ref", metavar="NAME[@LABEL]")
@click.option("--json", "as_json", is_flag=True)
def show_cmd(ref: str, as_json: bool) -> None:
    """A model's versions (metrics, artefacts, serving figures) and aliases; NAME@LABEL: that alias's versions."""
    models, stats = _registry()
    doc = stats.describe(models, ref)
    emit(doc, as_json, _show_text(doc))


@model_group.command("alias")
@click.argument("ref", metavar="NAME@LABEL")
@click.argument("version", type=int)
@click.option("--json", "as_json", is_flag=True)
def alias_cmd(ref: str, version: int, as_json: bool) -> None:
    """Point NAME@LABEL at VERSION (the version before it is kept for rollback); audited."""
    state = _registry()[0].set_alias(ref, version, by=ACTOR)
    emit(state.model_dump(mode="json"), as_json, _alias_text(state))


@model_group.command("canary")
@click.argument("ref", metavar="NAME@LABEL")
@click.argument("version", type=int)
@click.option("--share", type=float, required=True, metavar="PCT", help="Percent of requests (0 removes it).")
@click.option("--json", "as_json", is_flag=True)
def canary_cmd(ref: str, version: int, share: float, as_json: bool) -> None:
    """Send PCT % of NAME@LABEL's requests to VERSION (a client's routing key keeps its version); audited."""
    state = _registry()[0].set_canary(ref, version, share, by=ACTOR)
    emit(state.model_dump(mode="json"), as_json, _alias_text(state))


@model_group.command("promote")
@click.argument("ref", metavar="NAME@LABEL")
@click.option("--json", "as_json", is_flag=True)
def promote_cmd(ref: str, as_json: bool) -> None:
    """Make NAME@LABEL's canary its stable version; audited."""
    state = _registry()[0].promote(ref, by=ACTOR)
    emit(state.model_dump(mode="json"), as_json, _alias_text(state))


@model_group.command("rollback")
@click.argument("ref", metavar="NAME@LABEL")
@click.option("--json", "as_json", is_flag=True)
def rollback_cmd(ref: str, as_json: bool) -> None:
    """Point NAME@LABEL back at its previous stable version, dropping any canary; audited."""
    state = _registry()[0].rollback(ref, by=ACTOR)
    emit(state.model_dump(mode="json"), as_json, _alias_text(state))
