"""tasks/label_cache.py: a label cache as Ultralytics writes it (np.save of a dict of lists and arrays) reads back
whole, and a planted one (a bare pickle, or a .npy whose pickle names a callable) is refused without running."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tasks import label_cache

pytestmark = pytest.mark.unit


class _Planted:
    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self) -> tuple[Any, tuple[str, str]]:
        return open, (self.marker, "w")


def _save(path: Path, value: object) -> Path:
    """What ultralytics.data.utils.save_dataset_cache_file does: np.save, then the .npy renamed to .cache."""
    np.save(str(path.with_suffix(".npy")), value)  # type: ignore[arg-type]
    path.with_suffix(".npy").rename(path)
    return path


def test_a_cache_as_ultralytics_writes_it_reads_back_whole(tmp_path: Path) -> None:
    label = {"im_file": "/d/images/a.jpg", "shape": (64, 48), "cls": np.array([[0.0], [1.0]], dtype=np.float32),
             "bboxes": np.random.default_rng(1).random((2, 4), dtype=np.float32), "segments": [np.zeros((3, 2))],
             "keypoints": None, "normalized": True, "bbox_format": "xywh"}  # fmt: skip
    cache = {"labels": [label], "hash": "abc", "results": (1, 0, 0, 0, 1), "msgs": [], "version": "1.0.3",
             "scale": np.float32(0.5)}  # fmt: skip
    read = label_cache.read(_save(tmp_path / "train.cache", cache))
    assert read.keys() == cache.keys() and read["results"] == (1, 0, 0, 0, 1) and read["scale"] == np.float32(0.5)
    assert np.array_equal(read["labels"][0]["bboxes"], label["bboxes"]) and read["labels"][0]["shape"] == (64, 48)


def test_a_planted_cache_is_refused_and_never_runs(tmp_path: Path) -> None:
    marker = tmp_path / "unpickled"
    bare = tmp_path / "bare.cache"
    bare.write_bytes(pickle.dumps(_Planted(marker)))  # np.load(allow_pickle=True) unpickles this too
    with pytest.raises(ValueError, match="magic string"):
        label_cache.read(bare)
    wrapped = _save(tmp_path / "wrapped.cache", {"labels": [_Planted(marker)]})
    with pytest.raises(pickle.UnpicklingError, match="is not allowed in a label cache"):
        label_cache.read(wrapped)
    with pytest.raises(ValueError, match="not one pickled object"):
        label_cache.read(_save(tmp_path / "plain.cache", np.zeros(3)))
    assert not marker.exists()
