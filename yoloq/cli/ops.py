"""Operator commands around preemption: ``yoloq supervisor [--dry-run]``, ``yoloq freeze`` / ``unfreeze``."""

from __future__ import annotations

import json
import signal
import threading
import time
from typing import Any

import click

from routing.tiers import Tier
from yoloq.cli import session
from yoloq.cli.session import ACTOR


@click.command("supervisor")
@click.option("--dry-run", is_flag=True, help="Print each decision with its reason; apply none.")
@click.option("--interval", "interval_s", type=float, default=1.0, show_default=True,
              help="Most seconds between ticks (a job that starts waiting wakes it at once).")  # fmt: skip
@click.option("--grace", "grace_s", type=float, default=60.0, show_default=True,
              help="Seconds a victim has to checkpoint before it is terminated.")  # fmt: skip
@click.option("--leader-ttl", "leader_ttl_s", type=float, default=10.0, show_default=True,
              help="Seconds a dead leader holds the lease before a standby takes over.")  # fmt: skip
@click.option(
    "--resend-grace",
    "resend_grace_s",
    type=click.FloatRange(min=1.0),
    default=30.0,
    show_default=True,
    help="Seconds a queued job's message may be missing (on two sweeps) before it is published again.",
)
@click.option("--serve-down-delay", "serve_down_delay_s", type=click.FloatRange(min=0.0), default=60.0,
              show_default=True, help="Seconds of surplus before a deployment loses a replica.")  # fmt: skip
@click.option("--no-defrag", "no_defrag", is_flag=True,
              help="Never move or requeue shared GPUs' jobs to make room for a blocked one.")  # fmt: skip
@click.option("--once", is_flag=True, help="Run one tick and exit (with --dry-run: what would happen now).")
def supervisor_cmd(dry_run: bool, once: bool, no_defrag: bool, **timing: float) -> None:
    """Decide and apply preemptions; run two or more, only the leader acts (leader lease in Redis)."""
    from infra.settings import load_settings
    from workers.supervisor import Options, build_supervisor

    def say(text: str) -> None:
        click.echo(f"[{time.strftime('%H:%M:%S')}] {text}")

    if not 0 < timing["interval_s"] <= timing["leader_ttl_s"] / 2:
        raise click.BadParameter("must be > 0 and at most half of --leader-ttl (the leader renews its lease each tick)",
                                 param_hint="--interval")  # fmt: skip
    sup = build_supervisor(load_settings(), Options(dry_run=dry_run, defrag=not no_defrag, **timing), say)
    if once:
        sup.tick()
        return
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    say(f"supervisor {sup.leader.identity} started ({'dry run' if dry_run else 'acting when leader'})")
    sup.run(stop)


def _flag(job_id: str, frozen: bool, as_json: bool) -> None:
    session.client().freeze(job_id, frozen, by=ACTOR)
    doc: dict[str, Any] = {"job_id": job_id, "frozen": frozen}
    click.echo(json.dumps(doc) if as_json else f"{job_id}: {'frozen' if frozen else 'unfrozen'}")


@click.command("freeze")
@click.argument("job_id")
@click.option("--json", "as_json", is_flag=True)
def freeze_cmd(job_id: str, as_json: bool) -> None:
    """Never choose this job as a preemption victim."""
    _flag(job_id, True, as_json)


@click.command("unfreeze")
@click.argument("job_id")
@click.option("--json", "as_json", is_flag=True)
def unfreeze_cmd(job_id: str, as_json: bool) -> None:
    """Make this job a possible preemption victim again."""
    _flag(job_id, False, as_json)


@click.command("sla")
@click.option("--json", "as_json", is_flag=True)
def sla_cmd(as_json: bool) -> None:
    """Time-to-start percentiles per tier (last 24 h) and whether each tier meets its target, and how far finished
    jobs' runtime predictions were off."""
    from yoloq.standing import prediction_report

    client = session.client()
    doc = client.sla()
    rows = [f"{tier:<9} n={s['count']} waiting past target={s['waiting_past_target']} p50={s['p50_s']} "
            f"p95={s['p95_s']} within target={s['within_target']} compliant={s['compliant']}"
            for tier, s in doc.items()]  # fmt: skip
    runtime = prediction_report(client)  # how far finished jobs' expected runtimes were off (docs/eta.md)
    rows.append(
        f"runtime predictions: n={runtime['count']} error p50={runtime['error_p50']} p95={runtime['error_p95']}"
    )
    click.echo(json.dumps({**doc, "runtime_prediction": runtime}, indent=2) if as_json else "\n".join(rows))


@click.command("promote")
@click.argument("job_id")
@click.option("--tier", required=True, type=click.Choice([t.value for t in Tier]))
@click.option("--json", "as_json", is_flag=True)
def promote_cmd(job_id: str, tier: str, as_json: bool) -> None:
    """Move a job to another tier under the admission rules: a demoted team's job stops at high, and a promotion to
    critical may wait for someone else's `yoloq approve` (the job keeps its tier meanwhile)."""
    done = session.client().promote(job_id, Tier(tier), by=ACTOR)
    doc = {"job_id": job_id, **done.as_dict()}
    waits = f"; {done.pending_tier.value} awaits approval by someone else" if done.pending_tier else ""
    line = f"{job_id}: {done.tier.value} ({done.queue}){waits}" + (f" ({done.note})" if done.note else "")
    click.echo(json.dumps(doc) if as_json else line)


@click.command("approve")
@click.argument("job_id")
@click.option("--json", "as_json", is_flag=True)
def approve_cmd(job_id: str, as_json: bool) -> None:
    """Approve a held critical job or a promotion to critical that someone else submitted or asked for."""
    session.client().approve(job_id, by=ACTOR)
    click.echo(json.dumps({"job_id": job_id, "approved": True}) if as_json else f"{job_id}: approved")


@click.command("audit")
@click.option("--job", "job_id", default=None, help="Only the decisions about this job.")
@click.option("--limit", type=click.IntRange(1, 10_000), default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True)
def audit_cmd(job_id: str | None, limit: int, as_json: bool) -> None:
    """Who decided what, newest first: preemptions, promotions, freezes, approvals, holds, quota changes."""
    entries = session.client().audit(limit=limit, job_id=job_id)
    if as_json:
        click.echo(json.dumps(entries, indent=2))
        return
    for e in entries:
        click.echo(f"{e.get('at', '?')}  {e.get('by') or '-':<16} {e.get('type', '?'):<18} "
                   f"{e.get('job_id') or '-':<34} {e.get('reason', '')}")  # fmt: skip
