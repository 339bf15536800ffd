"""tasks/synth.py: deterministic shapes-on-noise datasets in YOLO format, readable by tasks.datasets."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from tasks.datasets import read_data_yaml, resolve
from tasks.errors import SpecRejected, YoloqError
from tasks.synth import PALETTE, SHAPES, SynthConfig, class_name, synthesize

pytestmark = pytest.mark.unit

SMALL = SynthConfig(images=8, imgsz=32, classes=3, seed=1)


def _files(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` except data.yaml (which names the absolute root), by relative path."""
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name != "data.yaml"
    }


def _labels(root: Path) -> list[list[str]]:
    return [line.split() for p in sorted(root.glob("labels/*/*.txt")) for line in p.read_text().splitlines()]


def test_same_seed_gives_byte_identical_files(tmp_path: Path) -> None:
    a = synthesize(tmp_path / "a", SMALL).parent
    b = synthesize(tmp_path / "b", SMALL).parent
    assert _files(a) == _files(b)
    assert len(_files(a)) == 2 * SMALL.images


def test_rewriting_in_place_gives_the_same_bytes(tmp_path: Path) -> None:
    root = synthesize(tmp_path / "a", SMALL).parent
    before = _files(root) | {"data.yaml": (root / "data.yaml").read_bytes()}
    synthesize(root, SMALL)
    assert _files(root) | {"data.yaml": (root / "data.yaml").read_bytes()} == before


def test_different_seed_gives_different_images_and_labels(tmp_path: Path) -> None:
    a = synthesize(tmp_path / "a", SMALL).parent
    b = synthesize(tmp_path / "b", SynthConfig(images=8, imgsz=32, classes=3, seed=2)).parent
    fa, fb = _files(a), _files(b)
    assert fa.keys() == fb.keys()
    assert all(fa[name] != fb[name] for name in fa if name.endswith(".jpg"))
    assert _labels(a) != _labels(b)


@pytest.mark.parametrize("classes", [1, 2, 5])
def test_label_lines_are_valid_yolo(tmp_path: Path, classes: int) -> None:
    cfg = SynthConfig(images=12, imgsz=48, classes=classes, seed=7, max_objects=4)
    root = synthesize(tmp_path / "ds", cfg).parent
    for label in sorted(root.glob("labels/*/*.txt")):
        lines = label.read_text().splitlines()
        assert 1 <= len(lines) <= cfg.max_objects, label
        for line in lines:
            fields = line.split()
            assert len(fields) == 5, line
            cls, coords = int(fields[0]), [float(v) for v in fields[1:]]
            assert 0 <= cls < classes, line
            assert all(0 < v <= 1 for v in coords), line
            cx, cy, w, h = coords
            # the box lies inside the image (labels carry 6 decimals, hence the tolerance)
            assert cx - w / 2 >= -1e-6 and cx + w / 2 <= 1 + 1e-6, line
            assert cy - h / 2 >= -1e-6 and cy + h / 2 <= 1 + 1e-6, line


def test_every_image_has_its_label_and_the_configured_size(tmp_path: Path) -> None:
    root = synthesize(tmp_path / "ds", SMALL).parent
    for split in ("train", "val"):
        images = sorted(p.stem for p in (root / "images" / split).glob("*.jpg"))
        labels = sorted(p.stem for p in (root / "labels" / split).glob("*.txt"))
        assert images == labels
        for name in images:
            with Image.open(root / "images" / split / f"{name}.jpg") as image:
                assert (image.size, image.mode) == ((SMALL.imgsz, SMALL.imgsz), "RGB")


@pytest.mark.parametrize(
    ("images", "val_fraction", "n_val"),
    [
        (8, 0.25, 2),
        (64, 0.25, 16),
        (10, 0.5, 5),
        (2, 0.25, 1),  # rounds to 0: at least one validation image
        (3, 0.0, 1),
    ],
)
def test_train_val_split_sizes(tmp_path: Path, images: int, val_fraction: float, n_val: int) -> None:
    cfg = SynthConfig(images=images, imgsz=32, val_fraction=val_fraction)
    root = synthesize(tmp_path / "ds", cfg).parent
    val = sorted(p.name for p in (root / "images" / "val").glob("*.jpg"))
    train = sorted(p.name for p in (root / "images" / "train").glob("*.jpg"))
    assert len(val) == n_val
    assert len(train) == images - n_val
    assert set(val).isdisjoint(train)
    assert len(list((root / "labels" / "val").glob("*.txt"))) == n_val


def test_data_yaml_is_readable_by_the_dataset_loader(tmp_path: Path) -> None:
    data_yaml = synthesize(tmp_path / "ds", SMALL)
    assert data_yaml == (tmp_path / "ds" / "data.yaml").resolve()
    doc = read_data_yaml(data_yaml)
    assert doc == {
        "path": str((tmp_path / "ds").resolve()),
        "train": "images/train",
        "val": "images/val",
        "names": {0: "rectangle-0", 1: "ellipse-0", 2: "triangle-0"},
    }


def test_a_synthetic_dataset_resolves_like_a_user_dataset(tmp_path: Path) -> None:
    from infra.fakes import MemoryStore

    root = synthesize(tmp_path / "ds", SMALL).parent
    ds = resolve(str(root), MemoryStore(), tmp_path / "cache", tmp_path / "work")
    assert ds.root == root


def test_relative_root_is_written_as_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    data_yaml = synthesize(Path("rel"), SynthConfig(images=2, imgsz=32))
    assert data_yaml.is_absolute()
    assert read_data_yaml(data_yaml)["path"] == str(tmp_path.resolve() / "rel")


@pytest.mark.parametrize(
    ("index", "name"),
    [(0, "rectangle-0"), (1, "ellipse-0"), (2, "triangle-0"), (3, "rectangle-1"), (17, "triangle-5")],
)
def test_class_name(index: int, name: str) -> None:
    assert class_name(index) == name


def test_every_allowed_class_has_a_distinct_name() -> None:
    top = len(SHAPES) * len(PALETTE)
    assert len({class_name(i) for i in range(top)}) == top


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"images": 1}, "--images must be at least 2"),
        ({"images": 0}, "--images must be at least 2"),
        ({"images": -5}, "--images must be at least 2"),
        ({"imgsz": 31}, "--imgsz must be between 32 and 4096"),
        ({"imgsz": 4097}, "--imgsz must be between 32 and 4096"),
        ({"imgsz": 0}, "--imgsz must be between 32 and 4096"),
        ({"classes": 0}, "--classes must be between 1 and 18"),
        ({"classes": 19}, "--classes must be between 1 and 18"),
    ],
)
def test_check_rejects_unusable_configs(tmp_path: Path, changes: dict[str, int], match: str) -> None:
    cfg = SynthConfig(**changes)
    with pytest.raises(SpecRejected, match=match) as err:
        cfg.check()
    assert isinstance(err.value, YoloqError)
    with pytest.raises(SpecRejected):
        synthesize(tmp_path / "ds", cfg)
    assert not (tmp_path / "ds").exists(), "nothing is written before the check"


@pytest.mark.parametrize(
    "changes",
    [{}, {"images": 2}, {"imgsz": 32}, {"imgsz": 4096}, {"classes": 1}, {"classes": 18}],
    ids=["defaults", "min-images", "min-imgsz", "max-imgsz", "min-classes", "max-classes"],
)
def test_check_accepts_the_bounds(changes: dict[str, int]) -> None:
    SynthConfig(**changes).check()
