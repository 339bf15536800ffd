"""Operator commands around preemption: ``yoloq supervisor [--dry-run]``, ``yoloq freeze`` / ``unfreeze``."""

from __future__ import annotations

import json
import signal
import threading
import time
from typing import Any

import click

from yoloq.client import Client


@click.command("supervisor")
@click.option("--dry-run", is_flag=True, help="Print each decision with its reason; apply none.")
@click.option("--interval", "interval_s", type=float, default=1.0, show_default=True, help="Seconds between ticks.")
@click.option("--grace", "grace_s", type=float, default=60.0, show_default=True,
              help="Seconds a victim has to checkpoint before it is terminated.")  # fmt: skip
@click.option("--leader-ttl", "leader_ttl_s", type=float, default=10.0, show_default=True,
              help="Seconds a dead leader holds the lease before a standby takes over.")  # fmt: skip
@click.option("--once", is_flag=True, help="Run one tick and exit (with --dry-run: what would happen now).")
def supervisor_cmd(dry_run: bool, once: bool, **timing: float) -> None:
    """Decide and apply preemptions; run two or more, only the leader acts (leader lease in Redis)."""
    from infra.settings import load_settings
    from workers.supervisor import Options, build_supervisor

    def say(text: str) -> None:
        click.echo(f"[{time.strftime('%H:%M:%S')}] {text}")

    sup = build_supervisor(load_settings(), Options(dry_run=dry_run, **timing), say)
    if once:
        sup.tick()
        return
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    say(f"supervisor {sup.leader.identity} started ({'dry run' if dry_run else 'acting when leader'})")
    sup.run(stop)


def _flag(job_id: str, frozen: bool, as_json: bool) -> None:
    Client().freeze(job_id, frozen, by="cli")
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
    """Time-to-start percentiles per tier (last 24 h) and whether each tier meets its target."""
    doc = Client().sla()
    rows = [f"{tier:<9} n={s['count']} p50={s['p50_s']} p95={s['p95_s']} within target={s['within_target']} "
            f"compliant={s['compliant']}" for tier, s in doc.items()]  # fmt: skip
    click.echo(json.dumps(doc, indent=2) if as_json else "\n".join(rows))
