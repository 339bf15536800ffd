"""Reading and steering jobs: ``yoloq job``, ``jobs``, ``status``, ``cancel``, ``preempt``."""

from __future__ import annotations

import json
from typing import Any

import click

from routing.tiers import TIERS, Tier
from tasks.states import JobState
from yoloq.cli import session
from yoloq.cli.session import ACTOR


def emit(document: Any, as_json: bool, text: str) -> None:
    """Print JSON for machines or a short text for people."""
    click.echo(json.dumps(document, indent=2, sort_keys=True, default=str) if as_json else text)


@click.command("job")
@click.argument("job_id")
@click.option("--json", "as_json", is_flag=True, help="Print the record as JSON.")
def job_cmd(job_id: str, as_json: bool) -> None:
    """Show one job: state, where it stands (queue position, ETA, expected runtime), attempts, progress, history."""
    from yoloq.standing import job_document

    client = session.client()
    record = client.job(job_id)
    doc = job_document(client, record)
    lines = [f"{record.job_id}  {record.kind}  {record.tier.value}  {record.team}  {record.state.value}"]
    lines += standing_text(doc)
    lines += [f"  {e.at}  {e.type:<18} {e.reason}" for e in record.events]
    emit(doc, as_json, "\n".join(lines))


def standing_text(doc: dict[str, Any]) -> list[str]:
    """Where the job stands, for people: its place in line and start ETA while queued, its expected runtime."""
    lines = []
    if doc.get("queue_position") is not None:
        lines.append(f"  position {doc['queue_position']} in line, starts about {doc['eta_start']}")
    elif doc.get("queue_note"):
        lines.append(f"  no start estimate: {doc['queue_note']}")
    if doc.get("expected_runtime_s") is not None:
        lines.append(f"  expected runtime {doc['expected_runtime_s']:.0f} s ({doc['expected_runtime_source']})")
    return lines


@click.command("jobs")
@click.option("--state", type=click.Choice([s.value for s in JobState]))
@click.option("--tier", type=click.Choice([t.value for t in TIERS]))
@click.option("--limit", type=click.IntRange(1, 10_000), default=100)
@click.option("--json", "as_json", is_flag=True)
def jobs_cmd(state: str | None, tier: str | None, limit: int, as_json: bool) -> None:
    """List jobs, newest first."""
    records = session.client().jobs(JobState(state) if state else None, Tier(tier) if tier else None, limit)
    rows = [f"{r.job_id}  {r.kind:<7} {r.tier.value:<8} {r.team:<12} {r.state.value:<10} {r.progress}" for r in records]
    emit([r.model_dump(mode="json") for r in records], as_json, "\n".join(rows) or "no jobs")


@click.command("status")
@click.option("--json", "as_json", is_flag=True)
def status_cmd(as_json: bool) -> None:
    """Queue depth per tier, workers and GPUs, running jobs, SLA."""
    doc = session.client().status()
    emit(doc, as_json, status_text(doc))


def status_text(doc: dict[str, Any]) -> str:
    """The human ``yoloq status``: queues, GPUs, running jobs and each tier's SLA (the same facts as ``--json``)."""
    lines = ["queues: " + "  ".join(f"{t}={n}" for t, n in doc["queues"].items())]
    for g in doc["gpus"]:
        cordoned = f"  cordoned: {g['cordoned']}" if g.get("cordoned") else ""
        lines.append(f"gpu {g.get('index')} {g.get('name')} {g.get('memory_mib')} MiB on {g.get('node')}{cordoned}")
    lines += [f"running {r['job_id']} {r['tier']} on {r['worker']} {r['progress']}" for r in doc["running"]]
    for tier, s in doc.get("sla", {}).items():
        if s.get("count") or s.get("waiting_past_target"):
            verdict = "meets" if s.get("compliant") else "misses"
            late = f", {s['waiting_past_target']} waiting past it" if s.get("waiting_past_target") else ""
            lines.append(f"sla {tier}: {s['count']} started, p95 {s['p95_s']} s{late}, {verdict} its target")
    if not doc["gpus"]:
        lines.append("no live GPU workers")
    return "\n".join(lines)


@click.command("cancel")
@click.argument("job_id")
@click.option("--json", "as_json", is_flag=True)
def cancel_cmd(job_id: str, as_json: bool) -> None:
    """Cancel a job (a running one stops at its next step)."""
    state = session.client().cancel(job_id, by=ACTOR)
    stopping = state is JobState.RUNNING or state is JobState.PREEMPTING
    text = f"{job_id}: cancel requested; it stops at its next step" if stopping else f"{job_id}: {state.value}"
    emit({"job_id": job_id, "state": state.value, "cancel": "requested" if stopping else "done"}, as_json, text)


@click.command("preempt")
@click.argument("job_id")
@click.option("--reason", default="operator request")
@click.option("--json", "as_json", is_flag=True)
def preempt_cmd(job_id: str, reason: str, as_json: bool) -> None:
    """Ask a running job to checkpoint, yield its GPU and requeue."""
    session.client().preempt(job_id, reason=reason, by=ACTOR)
    emit({"job_id": job_id, "preempt": "requested"}, as_json, f"{job_id}: preempt requested")
