"""The ``yoloq`` command: a thin click shell over :class:`yoloq.client.Client` and the worker/stack loops.

Every read command has ``--json`` (one JSON document on stdout). Errors go to stderr as one line,
``yoloq: error: <reason>``, with exit code 1 (2 for usage errors): never a traceback.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from yoloq.cli.api import api_cmd
from yoloq.cli.autoscale import autoscaler_cmd
from yoloq.cli.beat import beat_cmd, cordon_cmd, uncordon_cmd
from yoloq.cli.dataset import dataset_group
from yoloq.cli.flower import flower_cmd
from yoloq.cli.ops import (
    ACTOR,
    approve_cmd,
    audit_cmd,
    freeze_cmd,
    promote_cmd,
    quota_group,
    sla_cmd,
    supervisor_cmd,
    unfreeze_cmd,
)
from yoloq.cli.submit import submit_group
from routing.tiers import TIERS, parse_tier
from tasks.errors import YoloqError
from tasks.states import JobState
from yoloq.client import Client


def emit(document: Any, as_json: bool, text: str) -> None:
    """Print JSON for machines or a short text for people."""
    click.echo(json.dumps(document, indent=2, sort_keys=True, default=str) if as_json else text)


@click.group()
def cli() -> None:
    """yoloq: priority-routed, preemptive YOLO jobs on a shared GPU fleet."""


cli.add_command(submit_group)
cli.add_command(dataset_group)
for _command in (supervisor_cmd, freeze_cmd, unfreeze_cmd, sla_cmd, approve_cmd, quota_group, promote_cmd, audit_cmd):
    cli.add_command(_command)
cli.add_command(beat_cmd)
cli.add_command(cordon_cmd)
cli.add_command(uncordon_cmd)
cli.add_command(flower_cmd)
cli.add_command(api_cmd)
cli.add_command(autoscaler_cmd)


@cli.command("job")
@click.argument("job_id")
@click.option("--json", "as_json", is_flag=True, help="Print the record as JSON.")
def job_cmd(job_id: str, as_json: bool) -> None:
    """Show one job: state, attempts, progress, history."""
    record = Client().job(job_id)
    lines = [f"{record.job_id}  {record.kind}  {record.tier.value}  {record.team}  {record.state.value}"]
    lines += [f"  {e.at}  {e.type:<18} {e.reason}" for e in record.events]
    emit(record.model_dump(mode="json"), as_json, "\n".join(lines))


@cli.command("jobs")
@click.option("--state", type=click.Choice([s.value for s in JobState]))
@click.option("--tier", type=click.Choice([t.value for t in TIERS]))
@click.option("--limit", type=click.IntRange(1, 10_000), default=100)
@click.option("--json", "as_json", is_flag=True)
def jobs_cmd(state: str | None, tier: str | None, limit: int, as_json: bool) -> None:
    """List jobs, newest first."""
    records = Client().jobs(JobState(state) if state else None, parse_tier(tier) if tier else None, limit)
    rows = [f"{r.job_id}  {r.kind:<7} {r.tier.value:<8} {r.team:<12} {r.state.value:<10} {r.progress}" for r in records]
    emit([r.model_dump(mode="json") for r in records], as_json, "\n".join(rows) or "no jobs")


@cli.command("status")
@click.option("--json", "as_json", is_flag=True)
def status_cmd(as_json: bool) -> None:
    """Queue depth per tier, workers and GPUs, running jobs, SLA."""
    doc = Client().status()
    text = "\n".join(
        ["queues: " + "  ".join(f"{t}={n}" for t, n in doc["queues"].items())]
        + [f"gpu {g.get('index')} {g.get('name')} {g.get('memory_mib')} MiB on {g.get('node')}" for g in doc["gpus"]]
        + [f"running {r['job_id']} {r['tier']} on {r['worker']} {r['progress']}" for r in doc["running"]]
    )
    emit(doc, as_json, text)


@cli.command("cancel")
@click.argument("job_id")
@click.option("--json", "as_json", is_flag=True)
def cancel_cmd(job_id: str, as_json: bool) -> None:
    """Cancel a job (a running one stops at its next step)."""
    state = Client().cancel(job_id, by=ACTOR)
    emit({"job_id": job_id, "state": state.value}, as_json, f"{job_id}: {state.value}")


@cli.command("preempt")
@click.argument("job_id")
@click.option("--reason", default="operator request")
@click.option("--json", "as_json", is_flag=True)
def preempt_cmd(job_id: str, reason: str, as_json: bool) -> None:
    """Ask a running job to checkpoint, yield its GPU and requeue."""
    Client().preempt(job_id, reason=reason, by=ACTOR)
    emit({"job_id": job_id, "preempt": "requested"}, as_json, f"{job_id}: preempt requested")


@cli.command("worker")
@click.option("--gpu", "gpu", type=click.IntRange(0), required=True, help="Device index to pin this worker to.")
def worker_cmd(gpu: int) -> None:
    """Run one Celery worker pinned to GPU I (refused if that GPU already has a live worker)."""
    from infra.settings import load_settings
    from workers.launch import run_worker

    run_worker(load_settings(), gpu)


@cli.command("up")
@click.option("--gpus", default=None, help="Simulated inventory, e.g. 0:T4:16,1:A100:40 (default: YOLOQ_GPUS or NVML).")
def up_cmd(gpus: str | None) -> None:
    """Run Redis, S3 and one worker per GPU in the foreground; Ctrl-C stops everything."""
    from workers.stack import run_up

    run_up(gpus)


@cli.command("demo")
def demo_cmd() -> None:
    """Run the local stack on two simulated GPUs through a narrated scenario (what `make demo` runs)."""
    from workers.demo import run_demo

    sys.exit(run_demo())


def main() -> None:
    """Entry point of the console script: YoloqError → one line on stderr, exit 1."""
    try:
        cli.main(standalone_mode=False)
    except click.exceptions.Abort:
        sys.exit(130)
    except click.ClickException as err:
        err.show()
        sys.exit(err.exit_code)
    except YoloqError as err:
        click.echo(f"yoloq: error: {err}", err=True)
        sys.exit(1)
