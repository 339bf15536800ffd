"""``yoloq dataset synth``: write a small YOLO-format dataset of drawn shapes (tests, demo, first steps)."""

from __future__ import annotations

import json
from pathlib import Path

import click


@click.group("dataset")
def dataset_group() -> None:
    """Datasets for training jobs."""


@dataset_group.command("synth")
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
@click.option("--images", type=int, default=64, show_default=True)
@click.option("--imgsz", type=int, default=160, show_default=True)
@click.option("--classes", type=int, default=3, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--json", "as_json", is_flag=True)
def synth_cmd(directory: Path, as_json: bool, **config: int) -> None:
    """Write shapes-on-noise images with labels, a train/val split and data.yaml (same seed, same files)."""
    from tasks.synth import SynthConfig, synthesize

    data_yaml = synthesize(directory, SynthConfig(**config))
    images, imgsz, classes = config["images"], config["imgsz"], config["classes"]
    document = {"data": str(data_yaml), "images": images, "imgsz": imgsz, "classes": classes}
    click.echo(json.dumps(document) if as_json else f"wrote {images} images to {data_yaml.parent}; train with "
               f"`yoloq submit train --data {data_yaml.parent} --imgsz {imgsz}`")  # fmt: skip
