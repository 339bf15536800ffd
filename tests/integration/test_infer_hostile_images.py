"""Issue 15 item 10: an infer job over hostile images, run by a real worker process on the real S3.

Each hostile file is refused from its magic bytes and header before anything decodes it: one ``refused`` entry with
its reason, never a failed job or a worker out of memory. Before the fix, the 69-byte PNG that claims 3.6 Gpx raised
an uncaught ``cv2.error`` (the job failed), the bomb inflated before it was refused, and the text file named ``.png``
was refused only because it did not decode.
"""

from __future__ import annotations

import numpy as np
import pytest

from infra.s3 import S3Store
from tasks.infer_results import detections_prefix, read_detections
from tasks.specs import InferSpec, ProbeSpec
from tasks.states import JobState
from tests.images import encoded, png, png_bomb

pytestmark = pytest.mark.integration

NOT_AN_IMAGE = "not an image (the content is not PNG, JPEG, BMP, WebP or TIFF)"


def _tiny_detector() -> bytes:
    """An ONNX "detector" (365 bytes) that finds one 20x20 box of class 0 at the centre of any 64x64 input: what
    reaches the model shows up as a detection, without exporting a YOLO model."""
    from onnx import TensorProto, helper, numpy_helper

    images = helper.make_tensor_value_info("images", TensorProto.FLOAT, ["batch", 3, 64, 64])
    output = helper.make_tensor_value_info("output0", TensorProto.FLOAT, ["batch", 5, 1])
    nodes = [
        helper.make_node("GlobalAveragePool", ["images"], ["pooled"]),
        helper.make_node("Conv", ["pooled", "w", "b"], ["raw"]),
        helper.make_node("Reshape", ["raw", "shape"], ["output0"]),
    ]
    weights = [
        numpy_helper.from_array(np.zeros((5, 3, 1, 1), np.float32), "w"),
        numpy_helper.from_array(np.array([32, 32, 20, 20, 0.9], np.float32), "b"),  # cx, cy, w, h, score
        numpy_helper.from_array(np.array([-1, 5, 1], np.int64), "shape"),
    ]
    graph = helper.make_graph(nodes, "tiny", [images], [output], weights)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    helper.set_model_props(model, {"names": "{0: 'defect'}"})
    return bytes(model.SerializeToString())


def test_hostile_images_are_refused_entries_and_the_good_ones_are_detected(fleet, client, services, tmp_path):
    # Given, in S3, a tiny detector and a source of two honest images among hostile files
    store = S3Store(services.settings)
    files = {
        "png-named.jpg": encoded(".png", 48, 32),  # a PNG whose name says JPEG: read as PNG
        "photo.jpeg": encoded(".jpg", 40, 40),
        "claims-3600mpx.png": png(60000, 60000, b"\x78\x9c\x03\x00\x00\x00\x00\x01"),  # 65 bytes
        "bomb.png": png_bomb(12000, 12000),  # ~140 KB on disk, 144 Mpx (432 MB as BGR) once inflated
        "truncated.jpg": encoded(".jpg", 64, 64)[:2700],  # half its scan is missing
        "notes.png": b"meeting notes, not a picture\n",
    }
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
        store.put_file(f"hostile-infer/source/{name}", tmp_path / name)
    (tmp_path / "tiny.onnx").write_bytes(_tiny_detector())
    store.put_file("hostile-infer/tiny.onnx", tmp_path / "tiny.onnx")
    fleet.start("0:A100:40")
    bucket = services.settings.s3_bucket
    spec = InferSpec(model=f"s3://{bucket}/hostile-infer/tiny.onnx", source=f"s3://{bucket}/hostile-infer/source/",
                     imgsz=64, batch=4, conf=0.5, team="vision", memory_gb=2)  # fmt: skip
    # When a real worker runs the infer job over them
    record = client.submit(spec).wait(timeout_s=120)
    # Then the job succeeds, each hostile file is one refused entry with its reason, each honest one has detections
    assert record.state is JobState.SUCCEEDED, (record.error, record.events[-1])
    assert {r["file"]: r["reason"] for r in record.result["refused"]} == {
        "claims-3600mpx.png": "60000x60000 PNG is 3600 megapixels, over the 64 megapixel limit",
        "bomb.png": "12000x12000 PNG is 144 megapixels, over the 64 megapixel limit",
        "truncated.jpg": "truncated JPEG (no end-of-image marker)",
        "notes.png": NOT_AN_IMAGE,
    }
    assert record.result["images"] == 2
    found = read_detections(store, detections_prefix(record.job_id))
    assert set(found) == {"png-named.jpg", "photo.jpeg"}
    for dets in found.values():
        assert [(d["name"], d["conf"]) for d in dets] == [("defect", 0.9)], found
    # And the worker that ran it serves the next job
    assert client.submit(ProbeSpec(seconds=0, team="vision")).wait(timeout_s=30).state is JobState.SUCCEEDED
