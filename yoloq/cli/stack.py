"""Processes of the fleet: ``yoloq worker``, ``yoloq up`` (the local stack) and ``yoloq demo``."""

from __future__ import annotations

import sys

import click


@click.command("worker")
@click.option("--gpu", "gpu", type=click.IntRange(0), required=True, help="Device index to pin this worker to.")
@click.option("--share", is_flag=True, help="Run several jobs on this GPU at once while their memory fits (up to 4).")
def worker_cmd(gpu: int, share: bool) -> None:
    """Run one Celery worker pinned to GPU I (refused if that GPU already has a live worker)."""
    from infra.settings import load_settings
    from workers.launch import run_worker

    run_worker(load_settings(), gpu, share=share)


@click.command("up")
@click.option("--gpus", default=None, help="Simulated inventory, e.g. 0:T4:16,1:A100:40 (default: YOLOQ_GPUS or NVML).")
def up_cmd(gpus: str | None) -> None:
    """Run Redis, S3 and one worker per GPU in the foreground; Ctrl-C stops everything."""
    from workers.stack import run_up

    run_up(gpus)


@click.command("demo")
def demo_cmd() -> None:
    """Run the local stack on two simulated GPUs through a narrated scenario (what `make demo` runs)."""
    from workers.demo import run_demo

    sys.exit(run_demo())
