"""Serving replicas without a cluster: the ServeSpec a replica job carries, which artefact and detector a version is
served with, the one check that refuses an unrunnable backend, the image decode (EXIF orientation applied), one
version's share of a batch through a stand-in detector, and the bounds ``yoloq serve`` widens."""

from __future__ import annotations

import io
import sys
import types
from pathlib import Path
from typing import Any, cast

import numpy as np
import pytest

from infra.serve_queue import Request
from tasks.errors import JobFailed, SpecRejected
from tasks.model_records import Artefact, ArtefactKind, Deployment, ModelVersion
from tasks.replicas import _bounds, replica_spec
from tasks.serve_models import Loaded, Models, check_backend, decode_image, detect, plan
from tasks.specs import ServeSpec, parse_spec

pytestmark = pytest.mark.unit

SERVE: dict[str, Any] = {"kind": "serve", "alias": "parts", "team": "vision"}
SHA = "ab" * 32


def _version(*kinds: ArtefactKind) -> ModelVersion:
    artefacts = {k: Artefact(uri=f"s3://b/models/parts/v1/{k}", sha256=SHA, bytes=10) for k in kinds}
    return ModelVersion(name="parts", version=1, classes={0: "scratch", 1: "dent"}, imgsz=64, artefacts=artefacts,
                        created_at="2026-01-01T00:00:00.000Z", created_by="test")  # fmt: skip


# --- the spec ---------------------------------------------------------------------------------------------------------


def test_a_serve_spec_has_the_documented_defaults_and_a_canonical_alias() -> None:
    spec = parse_spec(SERVE)
    assert isinstance(spec, ServeSpec)
    assert (spec.alias, spec.max_batch, spec.max_wait_ms, spec.backend) == ("parts@prod", 8, 5.0, "auto")
    assert spec.memory_mib() == 2048
    assert parse_spec({**SERVE, "alias": "parts@canary", "memory_gb": 4.0}).memory_mib() == 4096
    widest = parse_spec({**SERVE, "max_batch": 256, "max_wait_ms": 0, "backend": "engine"})
    assert isinstance(widest, ServeSpec) and (widest.max_batch, widest.max_wait_ms) == (256, 0)


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"max_batch": 0}, "max_batch"),
        ({"max_batch": 257}, "max_batch"),
        ({"max_batch": "8"}, "max_batch"),  # strict: a string is not a number
        ({"max_batch": 8.0}, "max_batch"),
        ({"max_wait_ms": 1001}, "max_wait_ms"),
        ({"max_wait_ms": -1}, "max_wait_ms"),
        ({"backend": "tensorrt"}, "backend"),
        ({"alias": "Parts@prod"}, "alias"),
        ({"alias": "parts@Prod"}, "alias"),
        ({"replicas": 2}, "replicas"),  # a deployment's field, not a replica's
        ({"team": "Vision"}, "team"),
    ],
)
def test_a_bad_serve_spec_is_refused_naming_its_field(changes: dict[str, Any], field: str) -> None:
    with pytest.raises(SpecRejected, match=field):
        parse_spec({**SERVE, **changes})


def test_a_serve_spec_needs_an_alias() -> None:
    with pytest.raises(SpecRejected, match="alias"):
        parse_spec({"kind": "serve", "team": "vision"})


def test_a_deployments_replicas_run_its_settings() -> None:
    deployment = Deployment(alias="parts@prod", team="vision", max_batch=16, max_wait_ms=2.5, backend="onnx",
                            memory_gb=3.0, created_at="2026-01-01T00:00:00.000Z", created_by="test")  # fmt: skip
    spec = replica_spec(deployment)
    assert (spec.alias, spec.team, spec.tier.value, spec.max_batch, spec.max_wait_ms, spec.backend) == (
        "parts@prod", "vision", "high", 16, 2.5, "onnx")  # fmt: skip
    assert spec.memory_mib() == 3072


# --- which artefact, which detector -----------------------------------------------------------------------------------


def test_auto_serves_weights_on_a_gpu_and_the_onnx_graph_on_the_cpu() -> None:
    both = _version("onnx", "weights")
    assert plan(both, "auto", "cpu") == ("onnx", "onnx")
    assert plan(both, "auto", "0") == ("torch", "weights")
    assert plan(_version("onnx"), "auto", "0") == ("onnx", "onnx")  # no weights: ONNX Runtime even on a GPU
    assert plan(_version("weights"), "auto", "cpu") == ("torch", "weights")  # no graph: torch on the CPU
    assert plan(both, "torch", "cpu") == ("torch", "weights")
    assert plan(_version("engine"), "engine", "0") == ("engine", "engine")


@pytest.mark.parametrize(("kinds", "backend"), [(("weights",), "onnx"), (("onnx",), "torch"), (("onnx",), "engine")])
def test_a_version_without_the_backends_artefact_is_refused(kinds: tuple[ArtefactKind, ...], backend: str) -> None:
    with pytest.raises(JobFailed, match=f"no {dict(onnx='onnx', torch='weights', engine='engine')[backend]} artefact"):
        plan(_version(*kinds), backend, "0")


def test_the_engine_backend_needs_tensorrt_on_the_worker(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # as on a worker whose image lacks it: the import fails
    with pytest.raises(SpecRejected, match="TensorRT"):
        check_backend("engine")
    for backend in ("auto", "onnx", "torch"):
        check_backend(backend)  # nothing to check: they run everywhere


# --- decoding and one version's batch ---------------------------------------------------------------------------------


def _exif_jpeg(width: int, height: int, orientation: int) -> bytes:
    from PIL import Image

    pixels = np.zeros((height, width, 3), dtype=np.uint8)
    pixels[:, : width // 4] = 255  # a white band on the stored image's left
    exif = Image.Exif()
    exif[0x0112] = orientation
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, "JPEG", exif=exif.tobytes(), quality=95)
    return out.getvalue()


def test_an_exif_rotated_jpeg_decodes_as_it_is_displayed() -> None:
    # Given a 64x32 JPEG whose EXIF says "rotate 90° clockwise to display" (orientation 6)
    data = _exif_jpeg(64, 32, 6)
    image = decode_image(data)
    # Then the pixels are the displayed ones: 32 wide, 64 high, the band now along the top
    assert image is not None and image.shape == (64, 32, 3)
    assert image[:12].mean() > 200 and image[20:].mean() < 30
    assert decode_image(_exif_jpeg(64, 32, 1)).shape == (32, 64, 3)  # type: ignore[union-attr]


@pytest.mark.parametrize("data", [b"", b"\xff\xd8\xff not really a jpeg", b"GIF89a" + bytes(30)])
def test_bytes_that_do_not_decode_are_none(data: bytes) -> None:
    assert decode_image(data) is None


class _Centre:
    """A stand-in detector: one box in the middle of each input, a quarter of its size, class 1 at 0.9."""

    name, batch = "stub", 2

    def __init__(self) -> None:
        self.names: dict[int, str] = {}
        self.calls: list[tuple[int, ...]] = []

    def raw(self, blob: np.ndarray) -> np.ndarray:
        self.calls.append(blob.shape)
        n, _, h, w = blob.shape
        out = np.zeros((n, 6, 1), dtype=np.float32)
        out[:, :4, 0] = [w / 2, h / 2, w / 4, h / 4]
        out[:, 5, 0] = 0.9
        return out


def _request(rid: str, image: bytes, conf: float = 0.25) -> Request:
    return Request({"id": rid, "version": 1, "conf": conf, "deadline": 2e9, "enq": 100.0}, image)


def test_one_versions_requests_run_together_and_an_undecodable_image_gets_422() -> None:
    import cv2

    ok, png = cv2.imencode(".png", np.full((32, 64, 3), 90, dtype=np.uint8))  # 64 wide, 32 high
    assert ok
    stub = _Centre()
    loaded = Loaded(_version("onnx"), stub, None, 0.0)
    requests = [_request("a", png.tobytes()), _request("bad", b"\xff\xd8 cut"), _request("b", png.tobytes()),
                _request("shy", png.tobytes(), conf=0.95)]  # fmt: skip
    replies = {r.request_id: r for r in detect(loaded, requests, taken_at=100.25)}
    # The bad one is answered 422 and the others still run, two per detector call (its batch), full square inputs
    assert replies["bad"].body == {"id": "bad", "error": "the image does not decode", "status": 422}
    assert replies["bad"].error and stub.calls == [(2, 3, 64, 64), (1, 3, 64, 64)]
    body = replies["a"].body
    assert body["version"] == 1 and body["batch"] == 2 and body["timings_ms"]["queue"] == 250.0
    # The box is in the original image's pixels: the middle of a 64x32 image, 16 px square; named by the registry
    assert body["detections"] == [{"box": [24.0, 8.0, 40.0, 24.0], "class_id": 1, "class_name": "dent",
                                   "confidence": 0.9}]  # fmt: skip
    assert replies["a"].detections == 1 and replies["a"].confidences == [pytest.approx(0.9)]
    assert replies["shy"].body["detections"] == [] and replies["shy"].body["batch"] == 1  # its own conf, 0.95
    assert replies["a"].latency_ms(101.0) == 1000.0


# --- yoloq serve's bounds ---------------------------------------------------------------------------------------------


def test_replicas_widen_the_bounds_left_out_and_contradictory_bounds_are_refused() -> None:
    base = Deployment(alias="parts@prod", team="vision", created_at="2026-01-01T00:00:00.000Z", created_by="t")
    assert _bounds(base, 6, {}) == {"replicas": 6, "min_replicas": 1, "max_replicas": 6}
    assert _bounds(base, 0, {}) == {"replicas": 0, "min_replicas": 0, "max_replicas": 4}
    assert _bounds(base, None, {"max_replicas": 2}) == {"replicas": 1, "min_replicas": 1, "max_replicas": 2}
    with pytest.raises(SpecRejected, match="within --min 3 and --max 4"):
        _bounds(base, 2, {"min_replicas": 3})


def test_an_unloaded_version_leaves_no_copy_on_disk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A replica that follows canary changes for days must not fill its (pod's) disk with old versions."""
    import tasks.serve_models as serve_models

    notes: list[str] = []
    control: Any = types.SimpleNamespace(note=lambda kind, reason, **_: notes.append(kind))
    models = Models(cast(Any, None), "parts", control, tmp_path, backend="onnx", device="cpu", max_batch=8)
    for version in (1, 2):
        (tmp_path / f"v{version}").mkdir()
        (tmp_path / f"v{version}" / "model.onnx").write_bytes(b"graph")
        models.loaded[version] = cast(Any, types.SimpleNamespace(last_used=0.0))
    monkeypatch.setattr(serve_models.time, "monotonic", lambda: serve_models.UNLOAD_IDLE_S + 1.0)
    monkeypatch.setattr(models, "get", lambda version: models.loaded[version])
    models.sync([2])  # the alias now names v2 only, and v1 has been idle long enough
    assert list(models.loaded) == [2] and not (tmp_path / "v1").exists() and (tmp_path / "v2" / "model.onnx").exists()
