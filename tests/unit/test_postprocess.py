"""tasks/postprocess.py: letterbox geometry (square and minimal rectangle), batching, greedy NMS, and decoding raw
YOLO output back to image pixels, each by Ultralytics ``predict()``'s own rules (tests/integration/
test_predict_parity.py compares the whole path with ``predict()`` itself)."""

from __future__ import annotations

import numpy as np
import pytest

from tasks import postprocess
from tasks.postprocess import MAX_WH, PAD, Prepared, batch, decode, letterbox, nms, square

pytestmark = pytest.mark.unit

BLUE_BGR = (255, 0, 0)


def _image(h: int, w: int, bgr: tuple[int, int, int] = BLUE_BGR) -> np.ndarray:
    image = np.empty((h, w, 3), dtype=np.uint8)
    image[:] = bgr
    return image


# --- letterbox ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("h", "w", "size", "gain", "pad", "inner"),
    [
        (100, 200, 64, 0.32, (0, 16), (32, 64)),  # wide: padded top and bottom
        (300, 100, 96, 0.32, (32, 0), (96, 32)),  # tall: padded left and right
        (64, 64, 64, 1.0, (0, 0), (64, 64)),  # already the right size: no resize, no pad
        (16, 32, 64, 2.0, (0, 16), (32, 64)),  # small images are scaled up
        (50, 100, 63, 0.63, (0, 15), (32, 63)),  # odd padding: the extra row goes to the bottom
    ],
    ids=["wide", "tall", "square", "upscale", "odd-pad"],
)
def test_letterbox_geometry(
    h: int, w: int, size: int, gain: float, pad: tuple[int, int], inner: tuple[int, int]
) -> None:
    prep = letterbox(_image(h, w), size)
    assert prep.tensor.shape == (3, size, size)
    assert prep.tensor.dtype == np.float32
    assert prep.tensor.flags["C_CONTIGUOUS"]
    assert prep.gain == pytest.approx(gain)
    assert prep.pad == pad
    assert prep.shape == (h, w)
    left, top = pad
    nh, nw = inner
    # The image occupies exactly [top:top+nh, left:left+nw]; everything else is the grey pad.
    blue = prep.tensor[2]
    content = np.zeros((size, size), dtype=bool)
    content[top : top + nh, left : left + nw] = True
    assert np.allclose(blue[content], 1.0)
    assert np.allclose(prep.tensor[:, ~content], PAD / 255.0)


def test_letterbox_converts_bgr_to_rgb_chw_in_unit_range() -> None:
    prep = letterbox(_image(8, 8, bgr=(10, 128, 250)), 8)
    r, g, b = (prep.tensor[c, 0, 0] for c in range(3))
    assert (r, g, b) == pytest.approx((250 / 255, 128 / 255, 10 / 255))
    assert prep.tensor.min() >= 0.0 and prep.tensor.max() <= 1.0


@pytest.mark.parametrize(
    ("h", "w", "size", "shape", "pad"),
    [
        (100, 200, 64, (32, 64), (0, 0)),  # wide: no padding at all, 64 x 32 is a multiple of the stride
        (300, 100, 96, (96, 32), (0, 0)),  # tall
        (133, 61, 64, (64, 32), (1, 0)),  # 29 columns padded to 32: one left, two right (Ultralytics' rounding)
        (37, 45, 64, (64, 64), (0, 5)),  # 53 rows padded to 64 (11 is under the stride): five above, six below
        (64, 64, 64, (64, 64), (0, 0)),  # square: the rectangle is the square
    ],
    ids=["wide", "tall", "odd-columns", "small", "square"],
)
def test_letterbox_to_a_stride_pads_to_the_smallest_rectangle(
    h: int, w: int, size: int, shape: tuple[int, int], pad: tuple[int, int]
) -> None:
    prep = letterbox(_image(h, w), size, stride=32)
    assert prep.tensor.shape == (3, *shape)
    assert prep.pad == pad and prep.shape == (h, w)
    assert prep.tensor.flags["C_CONTIGUOUS"]


@pytest.mark.parametrize(("h", "w"), [(100, 200), (133, 61), (37, 45), (64, 64), (1000, 10), (7, 300)])
def test_a_rectangle_squared_up_is_the_square_letterbox(h: int, w: int) -> None:
    image = np.random.default_rng(h * w).integers(0, 256, size=(h, w, 3), dtype=np.uint8)
    squared, direct = square(letterbox(image, 64, stride=32), 64), letterbox(image, 64)
    assert squared.pad == direct.pad and squared.gain == direct.gain
    assert np.array_equal(squared.tensor, direct.tensor)


def test_a_thin_image_keeps_one_pixel_and_its_own_scale_per_axis() -> None:
    prep = letterbox(_image(1000, 10), 64)  # 10 x 0.064 = 0.64 columns: one column, as Ultralytics keeps it
    assert prep.pad == (31, 0)
    assert prep.scale() == pytest.approx((1 / 10, 64 / 1000))
    assert np.allclose(prep.tensor[2, :, 31], 1.0) and np.allclose(prep.tensor[2, :, 32], PAD / 255.0)


# --- batch ----------------------------------------------------------------------------------------------------------


def test_a_batch_of_one_shape_keeps_each_rectangle() -> None:
    preps = [letterbox(_image(100, 200, bgr), 64, stride=32) for bgr in [(0, 0, 0), (255, 255, 255)]]
    blob, out = batch(preps, 64)
    assert blob.shape == (2, 3, 32, 64) and out == preps
    assert np.array_equal(blob[1], preps[1].tensor)


def test_a_batch_of_mixed_shapes_is_squared_up() -> None:
    wide, tall = _image(100, 200), _image(133, 61)
    blob, out = batch([letterbox(wide, 64, stride=32), letterbox(tall, 64, stride=32)], 64)
    assert blob.shape == (2, 3, 64, 64)
    assert [p.pad for p in out] == [letterbox(wide, 64).pad, letterbox(tall, 64).pad]
    assert np.array_equal(blob[1], letterbox(tall, 64).tensor)


# --- nms ------------------------------------------------------------------------------------------------------------


def _nms(boxes: list[list[float]], scores: list[float], **kwargs: float) -> list[int]:
    return nms(np.array(boxes, dtype=np.float32), np.array(scores, dtype=np.float32), **kwargs)


@pytest.mark.parametrize(
    ("boxes", "scores", "kwargs", "kept"),
    [
        # disjoint boxes all survive, best score first
        ([[0, 0, 10, 10], [20, 0, 30, 10], [40, 0, 50, 10]], [0.5, 0.9, 0.7], {}, [1, 2, 0]),
        # IoU 0.82 > 0.7: the weaker duplicate goes
        ([[0, 0, 10, 10], [1, 0, 11, 10]], [0.6, 0.8], {}, [1]),
        # IoU 0.33 stays under the default threshold...
        ([[0, 0, 10, 10], [5, 0, 15, 10]], [0.9, 0.8], {}, [0, 1]),
        # ...but not under a stricter one
        ([[0, 0, 10, 10], [5, 0, 15, 10]], [0.9, 0.8], {"iou": 0.3}, [0]),
        # greedy: B is suppressed by A, so C (which only overlaps B) survives
        ([[0, 0, 10, 10], [2, 0, 12, 10], [4, 0, 14, 10]], [0.9, 0.8, 0.7], {"iou": 0.6}, [0, 2]),
        # identical boxes: exactly one survives
        ([[3, 3, 9, 9]] * 4, [0.1, 0.4, 0.3, 0.2], {}, [1]),
        # equal scores keep their order (a stable sort: the same input always gives the same output)
        ([[0, 0, 10, 10], [20, 0, 30, 10], [40, 0, 50, 10]], [0.5, 0.5, 0.5], {}, [0, 1, 2]),
    ],
    ids=["disjoint", "duplicate", "partial-overlap", "strict-iou", "greedy-chain", "identical", "ties"],
)
def test_nms(boxes: list[list[float]], scores: list[float], kwargs: dict[str, float], kept: list[int]) -> None:
    assert _nms(boxes, scores, **kwargs) == kept


def test_nms_of_nothing_is_nothing() -> None:
    assert nms(np.zeros((0, 4), dtype=np.float32), np.zeros(0, dtype=np.float32)) == []


def test_nms_stops_at_max_det(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(postprocess, "MAX_DET", 2)
    boxes = [[i * 20.0, 0.0, i * 20.0 + 10, 10.0] for i in range(5)]
    assert _nms(boxes, [0.1, 0.2, 0.3, 0.4, 0.5]) == [4, 3]


# --- decode ---------------------------------------------------------------------------------------------------------

# A 200x100 (w x h) image letterboxed to 64: gain 0.32, 16 rows of pad above.
PREP = Prepared(tensor=np.zeros((3, 64, 64), dtype=np.float32), gain=0.32, pad=(0, 16), shape=(100, 200))


def _anchor(box_xyxy: tuple[float, float, float, float], scores: list[float]) -> list[float]:
    """One anchor's column: the original-pixel box mapped into the letterbox as xywh, then class scores."""
    x1, y1, x2, y2 = (v * PREP.gain + p for v, p in zip(box_xyxy, [*PREP.pad, *PREP.pad], strict=True))
    return [(x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1, *scores]


def _raw(*anchors: list[float]) -> np.ndarray:
    return np.array(anchors, dtype=np.float32).T  # (4 + classes, anchors)


def test_decode_maps_boxes_back_filters_and_runs_nms_per_class() -> None:
    raw = _raw(
        _anchor((20, 10, 120, 60), [0.90, 0.05]),  # cat
        _anchor((22, 10, 122, 60), [0.80, 0.05]),  # the same cat again, weaker: suppressed
        _anchor((20, 10, 120, 60), [0.05, 0.85]),  # a class-1 object in the same place: kept
        _anchor((150, 70, 190, 95), [0.60, 0.10]),  # another cat elsewhere
        _anchor((100, 20, 140, 40), [0.10, 0.20]),  # under the confidence threshold
    )
    assert raw.shape == (6, 5)
    found = decode(raw, PREP, conf=0.25, names={0: "cat"})
    assert [d["cls"] for d in found] == [0, 1, 0]
    assert [d["name"] for d in found] == ["cat", "1", "cat"], "a class without a name is named by its index"
    assert [d["conf"] for d in found] == pytest.approx([0.9, 0.85, 0.6])
    assert found[0]["box"] == pytest.approx([20, 10, 120, 60], abs=0.11)
    assert found[1]["box"] == pytest.approx([20, 10, 120, 60], abs=0.11)
    assert found[2]["box"] == pytest.approx([150, 70, 190, 95], abs=0.11)
    assert set(found[0]) == {"cls", "name", "conf", "box"}
    assert all(isinstance(v, float) for d in found for v in [d["conf"], *d["box"]])


def test_decode_uses_names() -> None:
    raw = _raw(_anchor((0, 0, 50, 50), [0.1, 0.2, 0.7]))
    assert decode(raw, PREP, 0.5, {0: "a", 1: "b", 2: "c"})[0]["name"] == "c"


@pytest.mark.parametrize(("conf", "count"), [(0.9, 0), (0.875, 0), (0.5, 1), (0.25, 2), (0.0, 3)])
def test_decode_keeps_scores_over_the_confidence_threshold(conf: float, count: int) -> None:
    raw = _raw(  # scores exact in float32, so "> conf" (Ultralytics' rule) is tested at the boundary
        _anchor((0, 0, 10, 10), [0.875]),
        _anchor((50, 0, 60, 10), [0.5]),
        _anchor((100, 0, 110, 10), [0.25]),
    )
    assert len(decode(raw, PREP, conf, {})) == count


def test_decode_looks_at_the_best_max_nms_candidates_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(postprocess, "MAX_NMS", 2)
    raw = _raw(*(_anchor((i * 40.0, 0, i * 40.0 + 10, 10), [0.3 + i / 10]) for i in range(4)))
    assert [d["conf"] for d in decode(raw, PREP, 0.1, {})] == pytest.approx([0.6, 0.5])


def test_decode_maps_each_axis_back_with_its_own_rounded_ratio() -> None:
    # 10 columns x 0.064 = 0.64, kept as 1 column: half of it is 5 original pixels (the single gain would say 7.8)
    prep = letterbox(_image(1000, 10), 64)
    (found,) = decode(_raw([31.25, 16.0, 0.5, 32.0, 0.9]), prep, 0.5, {})
    assert found["box"] == pytest.approx([0.0, 0.0, 5.0, 500.0])


def test_classes_do_not_suppress_each_other_anywhere_in_the_largest_image() -> None:
    prep = Prepared(tensor=np.zeros((3, 4096, 4096), np.float32), gain=1.0, pad=(0, 0), shape=(4096, 4096))
    # class 1 at the left edge, class 0 at the right one: an offset of 4096 per class would overlay them exactly
    raw = _raw([4096.0, 100.0, 200.0, 150.0, 0.9, 0.0], [0.0, 100.0, 200.0, 150.0, 0.0, 0.8])
    assert [d["cls"] for d in decode(raw, prep, 0.5, {})] == [0, 1]
    assert MAX_WH == 7680  # Ultralytics' max_wh


def test_decode_clips_boxes_to_the_original_image() -> None:
    # Centred at the image's top-left corner and spilling into the pad: clipped to (0, 0).
    raw = _raw([0.0, 16.0, 8.0, 8.0, 0.9])
    (found,) = decode(raw, PREP, 0.5, {})
    x1, y1, x2, y2 = found["box"]
    assert (x1, y1) == (0.0, 0.0)
    assert (x2, y2) == pytest.approx((12.5, 12.5), abs=0.11)
    raw = _raw([64.0, 48.0, 8.0, 8.0, 0.9])  # bottom-right corner
    (found,) = decode(raw, PREP, 0.5, {})
    assert found["box"][2:] == [200.0, 100.0]


def test_decode_with_nothing_confident_is_empty() -> None:
    raw = _raw(_anchor((0, 0, 10, 10), [0.1, 0.2]))
    assert decode(raw, PREP, 0.5, {}) == []
