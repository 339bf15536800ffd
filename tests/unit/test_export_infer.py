"""tasks/export_runner.py and tasks/infer_runner.py, the parts that need no model: engine cache keys, model
fetching, the triage and loading that refuse non-images, oversized files and hostile headers with a reason, the
detections' JSON-lines shards (tasks/infer_results.py), and a whole infer job preempted and resumed on a stand-in
detector: nothing redone, nothing written twice."""

from __future__ import annotations

import hashlib
import struct
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from infra.fakes import MemoryStore
from tasks import infer_results, infer_runner
from tasks.detectors import choose
from tasks.errors import DatasetError, JobFailed, Preempted, SpecRejected, StorageError
from tasks.export_runner import engine_cache_key, fetch_model
from tasks.infer_results import ShardWriter, read_detections, shard_keys
from tasks.infer_runner import _batches, _load, _onnx_model, _source_files, _triage, input_stride, run_infer
from tasks.postprocess import Prepared
from tasks.specs import InferSpec
from tasks.trust import MemoryLedger, Trust, TrustedFile, TrustedPath
from tests.images import encoded, png, png_bomb, tiff

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


def _control(store: MemoryStore | None = None, ledger: MemoryLedger | None = None) -> SimpleNamespace:
    return SimpleNamespace(job_id="j1", store=store or MemoryStore(), trust=Trust(ledger or MemoryLedger()))


def test_fetch_model_passes_a_local_model_yaml_through(tmp_path: Path) -> None:
    assert fetch_model("yolov8n.yaml", _control(), tmp_path) == Path("yolov8n.yaml")


def test_fetch_model_downloads_recorded_weights_from_another_bucket_and_checks_the_copy(tmp_path: Path) -> None:
    store, ledger = MemoryStore(), MemoryLedger()
    store.other_buckets["models"] = {"team/v3/best.pt": b"weights"}
    ledger.record(TrustedFile("s3://models/team/v3/best.pt", hashlib.sha256(b"weights").hexdigest(), 7, "operator",
                              "cli:ops", "2026-01-01T00:00:00.000Z"))  # fmt: skip
    path = fetch_model("s3://models/team/v3/best.pt", _control(store, ledger), tmp_path)
    assert path == tmp_path / "model" / "best.pt"
    assert path.read_bytes() == b"weights"


def test_fetch_model_refuses_weights_nobody_recorded_before_fetching_them(tmp_path: Path) -> None:
    store = MemoryStore()
    store.other_buckets["models"] = {"planted/evil.pt": b"pickle"}
    with pytest.raises(JobFailed, match="is not a trusted weights file"):
        fetch_model("s3://models/planted/evil.pt", _control(store), tmp_path)
    assert not (tmp_path / "model").exists()


def test_fetch_model_names_a_missing_model(tmp_path: Path) -> None:
    with pytest.raises(JobFailed, match=r"model s3://models/nope.onnx does not exist"):
        fetch_model("s3://models/nope.onnx", _control(), tmp_path)


# --- infer triage: content and header decide, before any decode (issue 15 item 10) ---------------------------------


def _file(root: Path, name: str, size: int = 10) -> Path:
    path = root / name
    path.write_bytes(b"x" * size)
    return path


def _image(root: Path, name: str, data: bytes) -> Path:
    path = root / name
    path.write_bytes(data)
    return path


def _no_decoder(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any decode from here on fails the test: what is refused must be refused from its header."""
    import cv2

    def refuse(*_: object) -> None:
        raise AssertionError("a decoder ran")

    monkeypatch.setattr(cv2, "imdecode", refuse)


NOT_AN_IMAGE = "not an image (the content is not PNG, JPEG, BMP, WebP or TIFF)"


def test_triage_reads_the_type_from_the_content_not_the_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _no_decoder(monkeypatch)
    png_as_jpg = _image(tmp_path, "photo.jpg", encoded(".png"))
    jpeg_without_suffix = _image(tmp_path, "README", encoded(".jpg"))
    text_as_png = _image(tmp_path, "notes.png", b"just some notes\n")
    labels = _image(tmp_path, "labels.txt", b"0 0.5 0.5 0.1 0.1\n")
    empty = _image(tmp_path, "empty.jpg", b"")
    inputs = _triage([png_as_jpg, jpeg_without_suffix, text_as_png, labels, empty], 64)
    assert inputs.images == [png_as_jpg, jpeg_without_suffix]
    assert inputs.refused == [
        {"file": "notes.png", "reason": NOT_AN_IMAGE},
        {"file": "labels.txt", "reason": NOT_AN_IMAGE},
        {"file": "empty.jpg", "reason": "not an image (an empty file)"},
    ]


@pytest.mark.parametrize(
    ("data", "imgsz", "reason"),
    [
        (png(60000, 60000), 640, "60000x60000 PNG is 3600 megapixels, over the 64 megapixel limit"),
        (png_bomb(9000, 9000), 640, "9000x9000 PNG is 81 megapixels, over the 64 megapixel limit"),
        (
            tiff(64, 64, extra={322: (4, 1, struct.pack("<I", 8192)), 323: (4, 1, struct.pack("<I", 16384))}),
            640,
            "64x64 TIFF has 8192x16384 tiles, over the 64 megapixel limit",
        ),
        (png(5000, 1), 64, "5000x1 PNG is too thin to letterbox to 64 pixels"),
        (png(1, 200), 64, "1x200 PNG is too thin to letterbox to 64 pixels"),
        (b"\xff\xd8\xff\xda\x00\x08", 640, "unreadable JPEG header: image data before any frame header"),
    ],
    ids=["claims-3.6-gigapixels", "decompression-bomb", "tiff-tile-bomb", "too-wide", "too-tall", "unreadable"],
)
def test_triage_refuses_from_the_header_what_would_not_fit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, data: bytes, imgsz: int, reason: str
) -> None:
    _no_decoder(monkeypatch)
    inputs = _triage([_image(tmp_path, "hostile.png", data)], imgsz)
    assert inputs.images == []
    assert inputs.refused == [{"file": "hostile.png", "reason": reason}]


def test_triage_accepts_an_image_at_the_limits(tmp_path: Path) -> None:
    at_limit = _image(tmp_path, "wide.png", png(8000, 8000))  # exactly 64 megapixels
    thin = _image(tmp_path, "thin.png", png(1000, 10))  # 64 x 0.64 rounds up to 1 pixel
    assert _triage([at_limit, thin], 64).images == [at_limit, thin]


def test_triage_refuses_oversized_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(infer_runner, "MAX_BYTES", 3 * 2**20)
    image = encoded(".png")
    at_limit = _image(tmp_path, "ok.jpg", image + bytes(3 * 2**20 - len(image)))
    over = _image(tmp_path, "big.png", image + bytes(3 * 2**20 + 1 - len(image)))
    inputs = _triage([at_limit, over], 64)
    assert inputs.images == [at_limit]
    assert inputs.refused == [{"file": "big.png", "reason": "larger than 3 MiB"}]


def test_triage_keeps_order_and_sorts_every_file_into_one_list(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(infer_runner, "MAX_BYTES", 1000)
    files = [
        _image(tmp_path, "1.jpg", encoded(".jpg", 8, 8)),
        _file(tmp_path, "2.txt"),
        _file(tmp_path, "3.png", 1001),
        _image(tmp_path, "4.webp", encoded(".webp", 8, 8)),
    ]
    inputs = _triage(files, 64)
    assert inputs.images == [files[0], files[3]]
    assert [r["file"] for r in inputs.refused] == ["2.txt", "3.png"]
    assert inputs.refused[1]["reason"].startswith("larger than")


# --- infer loading: the bytes checked are the bytes decoded, and a decode that fails is one reason -------------------


def test_load_letterboxes_a_png_named_jpg(tmp_path: Path) -> None:
    loaded = _load(_image(tmp_path, "photo.jpg", encoded(".png", 48, 32)), 64)
    assert isinstance(loaded, Prepared)
    assert loaded.tensor.shape == (3, 64, 64) and loaded.shape == (32, 48)


def test_load_refuses_a_truncated_jpeg_before_decoding_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = encoded(".jpg", 64, 64)
    _no_decoder(monkeypatch)
    assert _load(_image(tmp_path, "cut.jpg", data[: len(data) // 2]), 64) == "truncated JPEG (no end-of-image marker)"


def test_load_refuses_a_body_that_does_not_decode(tmp_path: Path) -> None:
    garbage = _image(tmp_path, "bad.png", png(16, 16, b"not zlib at all"))
    assert _load(garbage, 64) == "does not decode as PNG"


def test_load_turns_a_decoder_error_into_a_reason(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # With the limit lifted, OpenCV's own check on 3.6 Gpx raises cv2.error: the guard makes it one refused file
    monkeypatch.setattr(infer_runner, "MAX_PIXELS", 10**10)
    reason = _load(_image(tmp_path, "huge.png", png(60000, 60000)), 640)
    assert isinstance(reason, str) and reason.startswith("does not decode as PNG ("), reason


def test_load_checks_again_the_bytes_it_decodes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A file replaced after triage (a local source folder is the user's) is judged on what is read now
    path = _image(tmp_path, "swapped.png", encoded(".png"))
    assert _triage([path], 64).images == [path]
    path.write_bytes(png(60000, 60000))
    _no_decoder(monkeypatch)
    assert _load(path, 640) == "60000x60000 PNG is 3600 megapixels, over the 64 megapixel limit"
    monkeypatch.setattr(infer_runner, "MAX_BYTES", 10)
    assert _load(path, 640) == "larger than 0 MiB"


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
        ("auto", "BEST.PT", "0", "torch"),  # suffixes compare as tasks.trust reads them: case-blind
    ],
)
def test_the_detector_is_chosen_by_device_and_weights(backend: str, model: str, device: str, expected: str) -> None:
    assert choose(backend, Path(model), device) == expected


def test_the_torch_backend_needs_pytorch_weights() -> None:
    with pytest.raises(SpecRejected, match=r"backend torch needs PyTorch weights \(.pt\), got model.onnx"):
        choose("torch", Path("model.onnx"), "0")


def test_an_onnx_graph_is_run_as_is_whatever_the_case_of_its_suffix() -> None:
    """tasks.trust lets ``m.ONNX`` through as a graph (no record); exporting it as if it were weights failed the job."""
    graph = TrustedPath(Path("m.ONNX"))
    assert _onnx_model(graph, _spec("/imgs")) == graph


# --- detections in JSON-lines shards (item 7: no S3 PUT per image) -------------------------------------------------

PREFIX = "jobs/j1/results/detections/"


def _dets(n: int) -> list[dict[str, Any]]:
    return [{"cls": 0, "name": "a", "conf": 0.5, "box": [0.0, 0.0, float(n), 1.0]}]


def test_shards_hold_a_fixed_number_of_images_and_read_back_by_image(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(infer_results, "SHARD_IMAGES", 3)
    store = MemoryStore()
    writer = ShardWriter(store, PREFIX)
    for index in range(7):
        writer.add(f"sub/{index}.jpg", _dets(index))
    assert len(store.objects) <= 2  # two full shards handed to the uploader; the seventh image is still held
    writer.close()
    keys = shard_keys(store, PREFIX)
    assert [k.removeprefix(PREFIX)[:10] for k in keys] == ["part-00000", "part-00001", "part-00002"]
    assert keys == writer.written and all(k.endswith(f"-{writer.token}.jsonl") for k in keys)
    assert [len(store.objects[k].splitlines()) for k in keys] == [3, 3, 1]
    assert read_detections(store, PREFIX) == {f"sub/{i}.jpg": _dets(i) for i in range(7)}


def test_a_new_writer_knows_what_is_done_and_numbers_on_with_its_own_token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(infer_results, "SHARD_IMAGES", 2)
    store = MemoryStore()
    first = ShardWriter(store, PREFIX)
    for name in ("a.jpg", "b.jpg", "c.jpg"):
        first.add(name, _dets(1))
    first.close()
    store.put_bytes(PREFIX + "notes.txt", b"not a shard")
    second = ShardWriter(store, PREFIX)
    assert second.done == {"a.jpg", "b.jpg", "c.jpg"} and second.token != first.token
    second.add("d.jpg", _dets(2))
    second.close()
    assert second.written == [f"{PREFIX}part-00002-{second.token}.jsonl"]


def test_readers_keep_the_first_line_of_an_image_two_attempts_wrote() -> None:
    store = MemoryStore()
    store.put_bytes(PREFIX + "part-00000-aaaa.jsonl", b'{"image":"x.jpg","detections":[]}\n')
    store.put_bytes(PREFIX + "part-00001-bbbb.jsonl", b'{"image":"x.jpg","detections":[{"cls":1}]}\n\n')
    assert read_detections(store, PREFIX) == {"x.jpg": []}


def test_a_shard_is_written_when_it_is_old_enough(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(infer_results, "SHARD_S", 0.0)
    store = MemoryStore()
    writer = ShardWriter(store, PREFIX)
    writer.add("a.jpg", [])
    writer.add("b.jpg", [])
    writer.close()
    assert len(shard_keys(store, PREFIX)) == 2


def test_an_upload_error_fails_the_writer_when_it_closes() -> None:
    class Broken(MemoryStore):
        def put_bytes(self, key: str, data: bytes) -> None:
            raise StorageError(f"S3 put {key} failed")

    writer = ShardWriter(Broken(), PREFIX)
    writer.add("a.jpg", [])
    with pytest.raises(StorageError, match="part-00000"):
        writer.close()


# --- the infer job's batches and a preempted job resumed -------------------------------------------------------------


class _Detector:
    """Stands in for ONNX Runtime: one class-0 box per image, as wide as the image is bright; records each batch's
    shape."""

    name, names, batch, stride = "stand-in", {0: "thing"}, 4, 32

    def __init__(self) -> None:
        self.runs: list[tuple[int, ...]] = []

    def raw(self, blob: Any) -> Any:
        import numpy as np

        self.runs.append(blob.shape)
        out = np.zeros((len(blob), 5, 1), dtype=np.float32)
        out[:, :, 0] = [[8, 8, 4 + float(image.mean()) * 4, 4, 0.9] for image in blob]
        return out


def _job_control(store: MemoryStore, stop_after: int | None) -> SimpleNamespace:
    checks = []

    def check() -> None:
        checks.append(1)
        if stop_after is not None and len(checks) > stop_after:
            raise Preempted("preempt requested")

    return SimpleNamespace(job_id="j1", store=store, trust=None, check=check, progress=lambda **_: None,
                           note=lambda *_, **__: None)  # fmt: skip


def _folder(root: Path, count: int) -> Path:
    import cv2
    import numpy as np

    (root / "sub").mkdir(parents=True)
    for index in range(count):
        grey = np.full((16 + index % 3 * 8, 32, 3), index * 8, dtype=np.uint8)  # three shapes, one brightness each
        cv2.imwrite(str(root / ("sub" if index % 2 else ".") / f"{index:02d}.png"), grey)
    (root / "sub" / "00.png").write_bytes(b"same stem as ./00.png, but not an image")
    return root


def test_a_preempted_infer_job_resumes_without_redoing_or_repeating_an_image(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source, store = _folder(tmp_path / "src", 22), MemoryStore()
    detector = _Detector()
    monkeypatch.setattr(infer_runner, "_detector", lambda *_: detector)
    spec = InferSpec(model="m.onnx", source=str(source), imgsz=64, batch=4, conf=0.5, team="vision")
    # Given an attempt preempted after three batches
    with pytest.raises(Preempted):
        run_infer(spec, _job_control(store, stop_after=3), tmp_path / "w1", tmp_path / "cache")
    first = read_detections(store, PREFIX)
    assert len(first) == 12 and len(shard_keys(store, PREFIX)) == 1  # what it ran is written before it yields
    ran_first = sum(shape[0] for shape in detector.runs)
    # When the next attempt runs the same job
    result = run_infer(spec, _job_control(store, stop_after=None), tmp_path / "w2", tmp_path / "cache")
    # Then it ran only the rest, and every image is in exactly one shard line with its own detections
    assert ran_first + sum(shape[0] for shape in detector.runs[3:]) == 22 == ran_first + 22 - result["resumed_after"]
    lines = [line for key in shard_keys(store, PREFIX) for line in store.objects[key].decode().splitlines()]
    assert len(lines) == 22 and result["images"] == 22 and result["shards"] == 2
    found = read_detections(store, PREFIX)
    assert set(found) == {f"sub/{i:02d}.png" if i % 2 else f"{i:02d}.png" for i in range(22)}  # sub/00.png: refused
    assert all([d["name"] for d in dets] == ["thing"] for dets in found.values())
    assert result["refused"] == [{"file": "00.png", "reason": NOT_AN_IMAGE}]
    assert result["detections"] == f"s3://mem/{PREFIX}"
    # And each batch held one letterboxed shape (a minimal rectangle per shape, never squared up)
    assert {shape[2:] for shape in detector.runs} == {(32, 64), (64, 64)}


def test_batches_group_images_by_shape_and_hold_few(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    source = _folder(tmp_path / "src", 30)
    files = sorted(p for p in source.rglob("*.png") if p != source / "sub" / "00.png")
    spec = InferSpec(model="m.onnx", source=str(source), imgsz=64, batch=4, conf=0.5, team="vision")
    monkeypatch.setattr(infer_runner, "HELD", 1)  # at most one batch's worth waits: a partial batch goes early
    refused: list[dict[str, str]] = []
    groups = list(_batches([(p.name, p) for p in files], spec, 32, 4, refused))
    assert sum(len(g) for g in groups) == 30 and not refused
    assert all(len({p.tensor.shape for _, p in g}) == 1 and len(g) <= 4 for g in groups)
    assert any(len(g) < 4 for g in groups[:-3])


def test_the_input_stride_follows_the_model(tmp_path: Path) -> None:
    def session(shape: list[Any], meta: dict[str, str]) -> SimpleNamespace:
        return SimpleNamespace(session=SimpleNamespace(
            get_inputs=lambda: [SimpleNamespace(shape=shape)],
            get_modelmeta=lambda: SimpleNamespace(custom_metadata_map=meta)))  # fmt: skip

    assert input_stride(session(["batch", 3, "height", "width"], {"stride": "64"})) == 64  # a dynamic P6 export
    assert input_stride(session(["batch", 3, "height", "width"], {})) == 32
    assert input_stride(session([1, 3, 640, 640], {"stride": "32"})) is None  # a fixed shape: the square
    assert input_stride(SimpleNamespace(net=SimpleNamespace(stride=[8.0, 16.0, 32.0]))) == 32  # PyTorch weights
