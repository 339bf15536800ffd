"""Synthetic YOLO-format datasets: filled shapes on noise, one class per shape and colour, deterministic by seed.

Tests, the demo and benchmarks train on these because nothing may be downloaded here. Layout::

    DIR/data.yaml                  path: DIR (absolute), train: images/train, val: images/val, names: {...}
    DIR/images/{train,val}/NNNNN.jpg
    DIR/labels/{train,val}/NNNNN.txt   "cls cx cy w h" normalised, one line per object
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml
from PIL import Image, ImageDraw

from tasks.errors import SpecRejected

PALETTE = [(230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48), (145, 30, 180)]
SHAPES = ("rectangle", "ellipse", "triangle")


@dataclass(frozen=True)
class SynthConfig:
    """What to generate; ``val_fraction`` of the images go to the validation split."""

    images: int = 64
    imgsz: int = 160
    classes: int = 3
    seed: int = 0
    val_fraction: float = 0.25
    max_objects: int = 3

    def check(self) -> None:
        """Reject sizes that would make an unusable dataset, before anything is written."""
        if self.images < 2:
            raise SpecRejected("dataset synth: --images must be at least 2 (one train, one val)")
        if not 32 <= self.imgsz <= 4096:
            raise SpecRejected("dataset synth: --imgsz must be between 32 and 4096")
        if not 1 <= self.classes <= len(SHAPES) * len(PALETTE):
            raise SpecRejected(f"dataset synth: --classes must be between 1 and {len(SHAPES) * len(PALETTE)}")


def class_name(index: int) -> str:
    """Human-readable name of a synthetic class: its shape and colour index."""
    return f"{SHAPES[index % len(SHAPES)]}-{index // len(SHAPES)}"


def _draw_object(draw: ImageDraw.ImageDraw, rng: np.random.Generator, cls: int, size: int) -> list[float]:
    w, h = (int(v) for v in rng.integers(size // 8, size // 2, size=2))
    x0, y0 = int(rng.integers(0, size - w)), int(rng.integers(0, size - h))
    box = (x0, y0, x0 + w, y0 + h)
    colour = PALETTE[(cls // len(SHAPES)) % len(PALETTE)]
    shape = SHAPES[cls % len(SHAPES)]
    if shape == "rectangle":
        draw.rectangle(box, fill=colour)
    elif shape == "ellipse":
        draw.ellipse(box, fill=colour)
    else:
        draw.polygon([(x0 + w / 2, y0), (x0, y0 + h), (x0 + w, y0 + h)], fill=colour)
    return [cls, (x0 + w / 2) / size, (y0 + h / 2) / size, w / size, h / size]


def _write_image(root: Path, split: str, index: int, cfg: SynthConfig, rng: np.random.Generator) -> None:
    noise = rng.integers(0, 80, size=(cfg.imgsz, cfg.imgsz, 3), dtype=np.uint8)
    image = Image.fromarray(noise, "RGB")
    draw = ImageDraw.Draw(image)
    rows = [_draw_object(draw, rng, int(rng.integers(0, cfg.classes)), cfg.imgsz) for _ in range(_count(rng, cfg))]
    image.save(root / "images" / split / f"{index:05d}.jpg", quality=90)
    lines = [f"{int(r[0])} {r[1]:.6f} {r[2]:.6f} {r[3]:.6f} {r[4]:.6f}" for r in rows]
    (root / "labels" / split / f"{index:05d}.txt").write_text("\n".join(lines) + "\n")


def _count(rng: np.random.Generator, cfg: SynthConfig) -> int:
    return int(rng.integers(1, cfg.max_objects + 1))


def synthesize(root: Path, cfg: SynthConfig) -> Path:
    """Write the dataset under ``root`` and return its data.yaml (same seed, same bytes)."""
    cfg.check()
    root = root.expanduser().resolve()
    rng = np.random.default_rng(cfg.seed)
    n_val = max(1, round(cfg.images * cfg.val_fraction))
    for split in ("train", "val"):
        (root / "images" / split).mkdir(parents=True, exist_ok=True)
        (root / "labels" / split).mkdir(parents=True, exist_ok=True)
    for index in range(cfg.images):
        _write_image(root, "val" if index < n_val else "train", index, cfg, rng)
    data_yaml = root / "data.yaml"
    names = {i: class_name(i) for i in range(cfg.classes)}
    doc = {"path": str(root), "train": "images/train", "val": "images/val", "names": names}
    data_yaml.write_text(yaml.safe_dump(doc, sort_keys=False))
    return data_yaml
