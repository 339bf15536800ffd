"""Operator commands for schedules and device health: ``yoloq beat``, ``yoloq cordon``, ``yoloq uncordon``."""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING

import click

from yoloq.cli import session
from yoloq.cli.session import ACTOR

if TYPE_CHECKING:
    from infra.cordon import CordonStore

_NODE = re.compile(r"^gpu(\d+)@(.+)$")
_HOST_INDEX = re.compile(r"^(.+):(\d+)$")


@click.command("beat")
@click.option("--schedule", "schedule", default=None, metavar="FILE",
              help="Schedule file (YAML or TOML) of recurring jobs; default: $YOLOQ_SCHEDULE_FILE.")  # fmt: skip
@click.option("--check", is_flag=True, help="Validate the schedule and print its entries; start nothing.")
@click.option("--json", "as_json", is_flag=True, help="With --check: print the entries as JSON.")
def beat_cmd(schedule: str | None, check: bool, as_json: bool) -> None:
    """Run celery beat (built-in schedules plus the schedule file) and its ops worker; run two for failover."""
    from infra.settings import load_settings
    from tasks.records import utc_now
    from tasks.schedule_file import check_submittable, load

    settings = load_settings()
    plan = check_submittable(load(schedule if schedule is not None else settings.schedule_file))
    if check:
        from infra.beat_schedule import describe_plan

        entries = describe_plan(plan, utc_now())
        rows = [f"{e['entry']:<28} {e['when']:<22} next {e['next']}" for e in entries]
        click.echo(json.dumps(entries, indent=2) if as_json else "\n".join(rows))
        return
    from workers.beat import run_beat

    run_beat(settings, plan)


def parse_device(text: str) -> tuple[str, int]:
    """``HOST:INDEX`` or a worker's node name ``gpuINDEX@HOST`` → (host, index)."""
    if match := _NODE.match(text):
        return match.group(2), int(match.group(1))
    if match := _HOST_INDEX.match(text):
        return match.group(1), int(match.group(2))
    raise click.BadParameter(f"{text!r} is neither HOST:INDEX nor gpuINDEX@HOST", param_hint="DEVICE")


def _store() -> CordonStore:
    from infra.cordon import CordonStore

    client = session.client()  # the same settings rules and Redis connection as every other client command
    return CordonStore(client.registry.client, client.settings.redis_url)


@click.command("cordon")
@click.argument("device", required=False)
@click.option("--reason", default="operator request", show_default=True)
@click.option("--list", "listing", is_flag=True, help="Show every cordoned GPU instead.")
@click.option("--json", "as_json", is_flag=True)
def cordon_cmd(device: str | None, reason: str, listing: bool, as_json: bool) -> None:
    """Stop GPU DEVICE (HOST:INDEX or gpuI@HOST) taking new jobs, across worker restarts, until uncordoned."""
    store = _store()
    if listing or device is None:
        flags = store.all()
        rows = [f"{f['host']}:{f['index']}  {f.get('at')}  {f.get('by')}  {f.get('reason')}" for f in flags]
        click.echo(json.dumps(flags, indent=2) if as_json else "\n".join(rows) or "no cordoned GPUs")
        return
    from tasks.records import iso, utc_now

    host, index = parse_device(device)
    new = store.cordon(host, index, reason, by=ACTOR, at=iso(utc_now()))
    doc = {"host": host, "index": index, "cordoned": True, "already": not new}
    text = f"GPU {index} on {host}: {'cordoned' if new else 'already cordoned'}; its worker takes no new jobs"
    click.echo(json.dumps(doc) if as_json else text)


@click.command("uncordon")
@click.argument("device")
@click.option("--json", "as_json", is_flag=True)
def uncordon_cmd(device: str, as_json: bool) -> None:
    """Let GPU DEVICE (HOST:INDEX or gpuI@HOST) take jobs again; its worker resumes consuming within seconds."""
    from tasks.records import iso, utc_now

    host, index = parse_device(device)
    was = _store().uncordon(host, index, by=ACTOR, at=iso(utc_now()))
    doc = {"host": host, "index": index, "cordoned": False, "was_cordoned": was}
    text = f"GPU {index} on {host}: {'uncordoned' if was else 'was not cordoned'}"
    click.echo(json.dumps(doc) if as_json else text)
