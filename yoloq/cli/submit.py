"""``yoloq submit train|infer|export|probe``: options map one-to-one onto the spec fields."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import click

from yoloq.cli import session

F = Callable[..., Any]


def _common(func: F) -> F:
    """Options every kind shares."""
    for option in reversed([
        click.option("--tier", default=None,
                     help="critical|high|medium|low|batch  [default: the team's default tier, else medium]"),
        click.option("--team", required=True, help="Team that owns the job (quotas, approvals)."),
        click.option("--name", default=None, help="Free-text label."),
        click.option("--memory-gb", type=float, default=None, help="Override the estimated GPU memory need."),
        click.option("--expected-minutes", type=float, default=None,
                     help="How long you expect it to run: its ETA's runtime until history of the same shape exists."),
        click.option("--json", "as_json", is_flag=True, help="Print {job_id, state, tier, queue} as JSON."),
    ]):  # fmt: skip
        func = option(func)
    return func


def _send(kind: str, as_json: bool, fields: dict[str, Any]) -> None:
    spec = {"kind": kind, **{k: v for k, v in fields.items() if v is not None}}
    handle = session.client().submit(spec, by=session.ACTOR)
    doc = handle.as_dict()
    click.echo(json.dumps(doc) if as_json else f"{doc['job_id']} {doc['state']} on {doc['queue']}")


@click.group("submit")
def submit_group() -> None:
    """Submit a job."""


@submit_group.command("train")
@click.option("--data", required=True, help="Dataset: a data.yaml / folder, or an s3:// prefix.")
@click.option("--model", default="yolov8n.yaml", show_default=True)
@click.option("--epochs", type=int, default=10, show_default=True)
@click.option("--imgsz", type=int, default=640, show_default=True)
@click.option("--batch", type=int, default=16, show_default=True)
@click.option("--save-period", type=int, default=None, help="Publish a checkpoint to S3 every N epochs.")
@click.option("--workers", type=int, default=None, help="DataLoader worker processes.")
@click.option("--deploy", default=None, help="On success register the model and point this alias (NAME[@LABEL]) at it.")
@click.option("--canary", type=float, default=None, help="With --deploy: serve the new version to PCT % of requests.")
@click.option("--min-map50", type=float, default=None, help="With --deploy: deploy only if validation mAP50 >= X.")
@click.option("--gpus", type=int, default=None, help="Whole GPUs of one host, held together (a gang; default 1).")
@_common
def train(as_json: bool, **fields: Any) -> None:
    """Train a YOLO model."""
    _send("train", as_json, fields)


@submit_group.command("infer")
@click.option("--model", required=True)
@click.option("--source", required=True, help="Folder or s3:// prefix of images.")
@click.option("--imgsz", type=int, default=None)
@click.option("--batch", type=int, default=None)
@click.option("--conf", type=float, default=None, help="Minimum confidence of a detection.")
@click.option("--backend", type=click.Choice(["auto", "onnx", "torch"]), default=None,
              help="auto: torch FP16 on a GPU for .pt weights, else ONNX Runtime on the CPU.")  # fmt: skip
@_common
def infer(as_json: bool, **fields: Any) -> None:
    """Run batch inference over a folder of images."""
    _send("infer", as_json, fields)


@submit_group.command("export")
@click.option("--model", required=True)
@click.option("--format", "format_", type=click.Choice(["onnx", "engine"]), default="onnx", show_default=True)
@click.option("--imgsz", type=int, default=None)
@_common
def export(as_json: bool, format_: str, **fields: Any) -> None:
    """Export weights to ONNX or a TensorRT engine."""
    _send("export", as_json, {**fields, "format": format_})


@submit_group.command("probe")
@click.option("--seconds", type=int, default=10, show_default=True)
@click.option("--gpus", type=int, default=None, help="Whole GPUs of one host, held together (a gang; default 1).")
@_common
def probe(as_json: bool, **fields: Any) -> None:
    """Hold a GPU slot for N seconds in 1 s steps (smoke tests, drills, benchmarks)."""
    _send("probe", as_json, fields)
