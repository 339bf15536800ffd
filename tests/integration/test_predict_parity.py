"""Issue 16 item 3: yoloq finds what Ultralytics ``predict()`` finds, on the same ONNX model, images and confidence.

A child process (this module run as ``python -m tests.integration.test_predict_parity WORKDIR``, prepared offline as
a yoloq job process is) trains a yolov8n for a few seconds on a synthetic dataset, exports it to ONNX with dynamic
axes and with a fixed shape, writes a large, a tall and a small image beside the square validation images, and saves
what ``YOLO(onnx).predict()`` returns for each image alone, for all of them in one batch, and on the fixed-shape model.
The test runs yoloq's own path in its own process (``tasks.postprocess`` letterbox/batch/decode on
``tasks.detectors.OnnxDetector``, then the whole infer job body) and wants, image by image: the same number of
detections, the same classes, boxes within 1 px, scores within 1e-3.

What it pins: ``predict()`` feeds a dynamic model each image's minimal rectangle, not the square (the tall image's
boxes moved 3.5 px); boxes map back with each axis's own rounded ratio (the large one's moved 2.5 px); a batch of
mixed shapes is squared up; a fixed-shape model gets the square.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
IMGSZ, EPOCHS, LOW, HIGH = 64, 30, 0.001, 0.1
LEVELS = ("low", "high")  # the confidences compared: LOW, and HIGH or lower where the trained model scores lower
Found = list[list[float]]  # [cls, conf, x1, y1, x2, y2] per detection

pytestmark = pytest.mark.integration


# --- the Ultralytics side, in a child process ------------------------------------------------------------------------


def _read(path: str | Path) -> Any:
    import cv2

    image = cv2.imread(str(path))
    assert image is not None, path
    return image


def _extra_images(work: Path, val: list[Path]) -> list[Path]:
    """A non-square image ten times imgsz, a tall one of two stacked images, and one smaller than imgsz."""
    import cv2
    import numpy as np

    first, second = _read(val[1]), _read(val[2])
    images = {
        "large.jpg": cv2.resize(second, (640, 635)),  # 63.5 rows letterboxed: 64, so y scales by 64/635, not 0.1
        "tall.png": cv2.resize(np.vstack([first, second]), (61, 133)),
        "small.jpg": cv2.resize(second, (45, 37)),
    }
    for name, image in images.items():
        cv2.imwrite(str(work / name), image)
    return [work / name for name in images]


def _found(results: list[Any]) -> list[Found]:
    return [[[int(c), float(s), *map(float, b)] for b, s, c in
             zip(r.boxes.xyxy.numpy(), r.boxes.conf.numpy(), r.boxes.cls.numpy(), strict=True)]
            for r in results]  # fmt: skip


def ultralytics_side(work: Path) -> dict[str, Any]:
    """Train, export both ways, and record ``predict()``'s detections (runs in the child)."""
    from tasks.offline import prepare_environment

    prepare_environment(work / "config", threads=2)
    from tasks.offline import settle_ultralytics
    from tasks.synth import SynthConfig, synthesize

    data_yaml = synthesize(work / "data", SynthConfig(images=64, imgsz=IMGSZ, classes=2, seed=5))
    from ultralytics import YOLO

    settle_ultralytics()
    YOLO("yolov8n.yaml").train(data=str(data_yaml), epochs=EPOCHS, imgsz=IMGSZ, batch=8, workers=0, warmup_epochs=0,
                               project=str(work / "runs"), name="parity", val=False, plots=False,
                               amp=False)  # fmt: skip
    weights = work / "runs" / "parity" / "weights" / "last.pt"
    exported = {}
    for kind, dynamic_axes in (("dynamic", True), ("fixed", False)):  # both exports write weights/last.onnx
        onnx = YOLO(str(weights)).export(format="onnx", imgsz=IMGSZ, dynamic=dynamic_axes, simplify=False)
        exported[kind] = str(Path(onnx).rename(work / f"{kind}.onnx"))
    val = sorted((data_yaml.parent / "images" / "val").glob("*.jpg"))
    paths = [str(p) for p in [*val, *_extra_images(work, val)]]
    model, static = YOLO(exported["dynamic"], task="detect"), YOLO(exported["fixed"], task="detect")
    doc: dict[str, Any] = {**exported, "images": paths, "conf": {"low": LOW}}
    for level in LEVELS:
        conf = doc["conf"][level] if level == "low" else _high(doc["alone@low"])
        doc["conf"][level] = conf
        doc[f"alone@{level}"] = [_found(model.predict(p, imgsz=IMGSZ, conf=conf, verbose=False))[0] for p in paths]
        doc[f"batch@{level}"] = _found(model.predict(paths, imgsz=IMGSZ, conf=conf, batch=len(paths), verbose=False))
        doc[f"fixed@{level}"] = [_found(static.predict(p, imgsz=IMGSZ, conf=conf, verbose=False))[0] for p in paths]
    return doc


def _high(found: list[Found]) -> float:
    """HIGH, or lower when fewer than 3 images have a box scoring that much: a model trained for seconds scores lower
    on some CPUs (an AMD box's found boxes over 0.1 in one image only), and the comparison needs boxes on both sides.
    Halfway down to the third-best image's best score keeps a margin from every box at the line."""
    best = sorted((max((d[1] for d in image), default=0.0) for image in found), reverse=True)
    third = best[2] if len(best) > 2 else 0.0
    return HIGH if third >= HIGH else round(third / 2, 6)


# --- the yoloq side, in the test process -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def predicted(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    work = tmp_path_factory.mktemp("parity")
    argv = [sys.executable, "-m", "tests.integration.test_predict_parity", str(work)]
    done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    doc: dict[str, Any] = json.loads((work / "predicted.json").read_text())
    return doc


def _yoloq(onnx: str, paths: list[str], conf: float, *, together: bool) -> list[Found]:
    """yoloq's path: letterbox (the model's stride) → one batch → ONNX Runtime → decode and NMS."""

    from tasks.detectors import OnnxDetector
    from tasks.infer_runner import input_stride
    from tasks.postprocess import batch, decode, letterbox

    detector = OnnxDetector(Path(onnx), len(paths) if together else 1)
    stride = input_stride(detector)
    groups = [paths] if together else [[p] for p in paths]
    out: list[Found] = []
    for group in groups:
        blob, prepared = batch([letterbox(_read(p), IMGSZ, stride) for p in group], IMGSZ)
        raw = detector.raw(blob)
        for i, prep in enumerate(prepared):
            out.append([[d["cls"], d["conf"], *d["box"]] for d in decode(raw[i], prep, conf, detector.names)])
    return out


def _differences(ours: list[Found], theirs: list[Found], paths: list[str]) -> list[str]:
    """Where the two disagree, image by image: each of predict()'s detections must pair with one of ours of the same
    class, score within 1e-3 and every box side within 1 px."""
    problems = []
    for path, mine, want in zip(paths, ours, theirs, strict=True):
        name, left = Path(path).name, list(mine)
        if len(mine) != len(want):
            problems.append(f"{name}: {len(mine)} detections, predict() {len(want)}")
            continue
        for det in want:
            match = next((d for d in left if d[0] == det[0] and abs(d[1] - det[1]) <= 1e-3
                          and all(abs(a - b) <= 1.0 for a, b in zip(d[2:], det[2:], strict=True))), None)  # fmt: skip
            if match is None:
                problems.append(f"{name}: predict()'s {det} has no counterpart")
            else:
                left.remove(match)
    return problems


@pytest.mark.parametrize("level", LEVELS)
def test_each_image_alone_matches_predict(predicted: dict[str, Any], level: str) -> None:
    paths, theirs, conf = predicted["images"], predicted[f"alone@{level}"], predicted["conf"][level]
    # Given images predict() finds something in (at the lowest confidence: every one of them)
    with_boxes = [len(found) > 0 for found in theirs]
    assert all(with_boxes) if level == "low" else sum(with_boxes) >= 3, (conf, with_boxes)
    assert {Path(p).name for p, found in zip(paths, theirs, strict=True) if found} >= (
        {"large.jpg", "tall.png", "small.jpg"} if level == "low" else set()
    )
    # Then yoloq finds the same, image by image
    assert _differences(_yoloq(predicted["dynamic"], paths, conf, together=False), theirs, paths) == []


@pytest.mark.parametrize("level", LEVELS)
def test_a_batch_of_mixed_shapes_matches_predict(predicted: dict[str, Any], level: str) -> None:
    paths = predicted["images"]
    ours = _yoloq(predicted["dynamic"], paths, predicted["conf"][level], together=True)
    assert _differences(ours, predicted[f"batch@{level}"], paths) == []


def test_a_fixed_shape_model_matches_predict(predicted: dict[str, Any]) -> None:
    paths = predicted["images"]
    ours = _yoloq(predicted["fixed"], paths, LOW, together=False)
    assert _differences(ours, predicted["fixed@low"], paths) == []


def test_the_infer_job_body_writes_what_predict_finds(predicted: dict[str, Any], tmp_path: Path) -> None:
    # Given the images in one folder and the dynamic model, run by the infer job's own body (batches of 4)
    import shutil

    from infra.fakes import MemoryStore
    from tasks.infer_results import detections_prefix, read_detections
    from tasks.infer_runner import run_infer
    from tasks.specs import InferSpec
    from tasks.trust import MemoryLedger, Trust

    source = tmp_path / "images"
    source.mkdir()
    for path in predicted["images"]:
        shutil.copy(path, source / Path(path).name)
    store, conf = MemoryStore(), LOW
    control = SimpleNamespace(job_id="parity", store=store, trust=Trust(MemoryLedger()), check=lambda: None,
                              progress=lambda **_: None, note=lambda *_, **__: None)  # fmt: skip
    spec = InferSpec(model=predicted["dynamic"], source=str(source), imgsz=IMGSZ, batch=4, conf=conf, team="vision")
    result = run_infer(spec, control, tmp_path / "work", tmp_path / "cache")
    # Then every image's detections in the shards are predict()'s for that image alone
    assert result["images"] == len(predicted["images"]) and result["refused"] == []
    found = read_detections(store, detections_prefix("parity"))
    names = [Path(p).name for p in predicted["images"]]
    ours = [[[d["cls"], d["conf"], *d["box"]] for d in found[name]] for name in names]
    assert _differences(ours, predicted["alone@low"], predicted["images"]) == []


if __name__ == "__main__":
    target = Path(sys.argv[1])
    sys.path.insert(0, str(ROOT))
    (target / "predicted.json").write_text(json.dumps(ultralytics_side(target)))
