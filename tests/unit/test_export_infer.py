"""tasks/export_runner.py and tasks/infer_runner.py, the parts that need no model: engine cache keys, model
fetching, and the triage that refuses non-images and oversized files with a reason."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from infra.fakes import MemoryStore
from tasks import infer_runner
from tasks.detectors import choose
from tasks.errors import DatasetError, JobFailed, SpecRejected
from tasks.export_runner import engine_cache_key, fetch_model
from tasks.infer_runner import IMAGE_SUFFIXES, _source_files, _triage
from tasks.specs import InferSpec

pytestmark = pytest.mark.unit

SHA = "ab" * 32
BASE: dict[str, Any] = {
    "weights_sha256": SHA,
    "gpu_name": "NVIDIA H100 80GB HBM3",
    "capability": (9, 0),
    "trt_version": "10.3.0",
}


# --- engine cache key -----------------------------------------------------------------------------------------------


def test_engine_cache_key_layout() -> None:
    assert engine_cache_key(**BASE) == f"engines/{SHA[:16]}/NVIDIA_H100_80GB_HBM3-sm90-trt10.3.0.engine"


@pytest.mark.parametrize(
    "change",
    [
        {"weights_sha256": "cd" * 32},
        {"gpu_name": "NVIDIA A100-SXM4-40GB"},
        {"gpu_name": "NVIDIA H100 PCIe"},
        {"capability": (8, 0)},
        {"capability": (8, 9)},
        {"trt_version": "10.4.0"},
    ],
    ids=["weights", "gpu-model", "gpu-variant", "capability-major", "capability-minor", "tensorrt"],
)
def test_engine_cache_key_changes_with_everything_an_engine_depends_on(change: dict[str, Any]) -> None:
    assert engine_cache_key(**{**BASE, **change}) != engine_cache_key(**BASE)


def test_engine_cache_keys_of_a_grid_are_all_distinct() -> None:
    keys = {
        engine_cache_key(sha, gpu, cap, trt)
        for sha in ("aa" * 32, "bb" * 32)
        for gpu in ("NVIDIA H100 80GB HBM3", "NVIDIA A100-SXM4-80GB", "Tesla T4")
        for cap in ((7, 5), (8, 0), (9, 0))
        for trt in ("10.3.0", "10.4.1")
    }
    assert len(keys) == 2 * 3 * 3 * 2


@pytest.mark.parametrize(
    ("gpu_name", "safe"),
    [
        ("NVIDIA H100 80GB HBM3", "NVIDIA_H100_80GB_HBM3"),
        ("NVIDIA RTX A6000/A40 mixed", "NVIDIA_RTX_A6000_A40_mixed"),
        ("a/../../b", "a_.._.._b"),
        ("Tesla T4", "Tesla_T4"),
    ],
)
def test_engine_cache_key_sanitises_the_gpu_name(gpu_name: str, safe: str) -> None:
    key = engine_cache_key(SHA, gpu_name, (9, 0), "10.3.0")
    assert key == f"engines/{SHA[:16]}/{safe}-sm90-trt10.3.0.engine"
    assert " " not in key
    assert key.count("/") == 2, "the GPU name never adds a path level"


# --- fetch_model ----------------------------------------------------------------------------------------------------


def _control(store: MemoryStore | None = None) -> SimpleNamespace:
    return SimpleNamespace(job_id="j1", store=store or MemoryStore())


@pytest.mark.parametrize("model", ["yolov8n.yaml", "/weights/best.pt", "runs/x.onnx"])
def test_fetch_model_passes_local_paths_through(tmp_path: Path, model: str) -> None:
    assert fetch_model(model, _control(), tmp_path) == Path(model)


def test_fetch_model_downloads_from_another_bucket(tmp_path: Path) -> None:
    store = MemoryStore()
    store.other_buckets["models"] = {"team/v3/best.pt": b"weights"}
    path = fetch_model("s3://models/team/v3/best.pt", _control(store), tmp_path)
    assert path == tmp_path / "best.pt"
    assert path.read_bytes() == b"weights"


def test_fetch_model_names_a_missing_model(tmp_path: Path) -> None:
    with pytest.raises(JobFailed, match=r"model s3://models/nope.pt does not exist"):
        fetch_model("s3://models/nope.pt", _control(), tmp_path)


# --- infer triage ---------------------------------------------------------------------------------------------------


def _file(root: Path, name: str, size: int = 10) -> Path:
    path = root / name
    path.write_bytes(b"x" * size)
    return path


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("notes.txt", "not an image file (.txt)"),
        ("weights.pt", "not an image file (.pt)"),
        ("archive.tar.gz", "not an image file (.gz)"),
        ("README", "not an image file (no suffix)"),
        ("photo.jpg.exe", "not an image file (.exe)"),
    ],
)
def test_triage_refuses_non_images_with_a_reason(tmp_path: Path, name: str, reason: str) -> None:
    inputs = _triage([_file(tmp_path, name)])
    assert inputs.images == []
    assert inputs.refused == [{"file": name, "reason": reason}]


@pytest.mark.parametrize("name", ["a.jpg", "b.JPEG", "c.png", "d.Bmp", "e.webp", "f.tif", "g.TIFF"])
def test_triage_accepts_image_suffixes_in_any_case(tmp_path: Path, name: str) -> None:
    path = _file(tmp_path, name)
    assert _triage([path]).images == [path]


def test_image_suffixes_are_lowercase() -> None:
    assert all(s == s.lower() and s.startswith(".") for s in IMAGE_SUFFIXES)


def test_triage_refuses_oversized_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(infer_runner, "MAX_BYTES", 3 * 2**20)
    at_limit = _file(tmp_path, "ok.jpg", 3 * 2**20)
    over = _file(tmp_path, "big.png", 3 * 2**20 + 1)
    inputs = _triage([at_limit, over])
    assert inputs.images == [at_limit]
    assert inputs.refused == [{"file": "big.png", "reason": "larger than 3 MiB"}]


def test_triage_keeps_order_and_sorts_every_file_into_one_list(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(infer_runner, "MAX_BYTES", 100)
    files = [
        _file(tmp_path, "1.jpg"),
        _file(tmp_path, "2.txt"),
        _file(tmp_path, "3.png", 101),
        _file(tmp_path, "4.webp"),
    ]
    inputs = _triage(files)
    assert inputs.images == [files[0], files[3]]
    assert [r["file"] for r in inputs.refused] == ["2.txt", "3.png"]
    assert inputs.refused[1]["reason"].startswith("larger than")


# --- infer sources --------------------------------------------------------------------------------------------------


def _spec(source: str) -> InferSpec:
    return InferSpec(kind="infer", model="m.onnx", source=source, team="vision")


def test_local_source_lists_every_file_recursively(tmp_path: Path) -> None:
    (tmp_path / "in" / "sub").mkdir(parents=True)
    files = [_file(tmp_path / "in", "b.jpg"), _file(tmp_path / "in" / "sub", "a.png"), _file(tmp_path / "in", "c.txt")]
    assert _source_files(_spec(str(tmp_path / "in")), _control(), tmp_path / "work") == sorted(files)


def test_a_local_source_that_is_not_a_folder_is_refused(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="is not a folder"):
        _source_files(_spec(str(tmp_path / "missing")), _control(), tmp_path / "work")


def test_s3_source_is_downloaded_skipping_folder_markers(tmp_path: Path) -> None:
    store = MemoryStore()
    store.other_buckets["imgs"] = {"batch/": b"", "batch/a.jpg": b"a", "batch/sub/": b"", "batch/sub/b.png": b"b"}
    files = _source_files(_spec("s3://imgs/batch"), _control(store), tmp_path)
    assert files == [tmp_path / "input" / "a.jpg", tmp_path / "input" / "sub" / "b.png"]
    assert [f.read_bytes() for f in files] == [b"a", b"b"]


def test_an_s3_source_key_that_would_escape_the_workdir_is_refused(tmp_path: Path) -> None:
    store = MemoryStore()
    store.other_buckets["imgs"] = {"batch/../../escaped.jpg": b"evil"}
    with pytest.raises(DatasetError, match="outside the local copy"):
        _source_files(_spec("s3://imgs/batch/"), _control(store), tmp_path / "a" / "b")
    assert list(tmp_path.rglob("escaped.jpg")) == []


def test_an_empty_s3_source_is_refused(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="does not exist or is empty"):
        _source_files(_spec("s3://imgs/none/"), _control(), tmp_path)


@pytest.mark.parametrize(
    ("backend", "model", "device", "expected"),
    [
        ("auto", "best.pt", "0", "torch"),  # a GPU and PyTorch weights: FP16 on the GPU
        ("auto", "best.pt", "cpu", "onnx"),  # no GPU: ONNX Runtime on the CPU (faster than torch there)
        ("auto", "model.onnx", "0", "onnx"),  # ONNX weights run on ONNX Runtime
        ("onnx", "best.pt", "0", "onnx"),  # asked for
        ("torch", "best.pt", "cpu", "torch"),  # asked for (FP32 on the CPU)
    ],
)
def test_the_detector_is_chosen_by_device_and_weights(backend: str, model: str, device: str, expected: str) -> None:
    assert choose(backend, Path(model), device) == expected


def test_the_torch_backend_needs_pytorch_weights() -> None:
    with pytest.raises(SpecRejected, match=r"backend torch needs PyTorch weights \(.pt\), got model.onnx"):
        choose("torch", Path("model.onnx"), "0")
