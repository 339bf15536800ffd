"""``yoloq serve``: serve an alias with replica jobs (``kind: serve``), stop serving it, or list what is served.

``yoloq serve ALIAS --replicas N --team T [--tier high] [--min N] [--max N] [--max-batch 8] [--max-wait-ms 5]
[--backend auto]`` writes the alias's deployment (docs/serving.md) and submits or cancels replica jobs until it has N;
options left out keep the deployment's current values. ``--external`` marks it scaled by something else (KEDA
scaling ``yoloq replica`` pods, infra/k8s/serving.yaml): yoloq then runs no replica job for it (cancelling any it
had) and its serving scaler leaves it alone; ``--scaled-by-yoloq`` hands it back. ``--stop`` cancels its replicas
(each drains: it answers what it took, the rest of the queue waits for the others) and drops the deployment.
``--list`` shows every deployment with its replica jobs and live replicas (state, versions, cold start), pods too.
"""

from __future__ import annotations

from typing import Any

import click

from routing.tiers import TIERS
from yoloq.cli import session
from yoloq.cli.jobs import emit
from yoloq.cli.session import ACTOR


def _seen(r: dict[str, Any]) -> str:
    where = f"{r['worker']} gpu {r['gpu']}" if r.get("gpu") is not None else str(r["worker"])
    return f"{r['state']} v{r['versions']} {r['backend']} on {where}, cold start {r['cold_start_s']} s"


def _list_text(rows: list[dict[str, Any]]) -> str:
    lines = []
    for row in rows:
        d = row["deployment"]
        wanted = ("scaled externally" if d.get("scaler") == "external" else
                  f"{d['replicas']} replica(s) wanted ({d['min_replicas']}-{d['max_replicas']})")  # fmt: skip
        lines.append(f"{d['alias']}  team {d['team']}  {d['tier']}  {wanted}  batch {d['max_batch']} / "
                     f"{d['max_wait_ms']:g} ms  {d['backend']}")  # fmt: skip
        live = {r["job_id"]: r for r in row["live"]}
        for job in row["jobs"]:
            r = live.pop(job["job_id"], None)
            lines.append(f"  {job['job_id']}  {job['state']:<10} {_seen(r) if r else 'not serving yet'}")
        lines.extend(f"  {job_id}  {'':<10} {_seen(r)}" for job_id, r in live.items())  # pods (yoloq replica)
    return "\n".join(lines) or "no deployments"


def _serve_text(doc: dict[str, Any]) -> str:
    d = doc["deployment"]
    parts = [f"{d['alias']}: {d['replicas']} replica(s) ({len(doc['replicas'])} job(s))"]
    if d.get("scaler") == "external":
        parts = [f"{d['alias']}: scaled externally, no replica jobs (run `yoloq replica {d['alias']}` pods)"]
    if doc["submitted"]:
        parts.append(f"submitted {', '.join(doc['submitted'])}")
    if doc["cancelled"]:
        parts.append(f"cancelled {', '.join(doc['cancelled'])} (they drain)")
    return "; ".join(parts)


@click.command("serve")
@click.argument("alias", required=False, metavar="NAME[@LABEL]")
@click.option("--replicas", type=click.IntRange(0, 64), default=None, help="Replica jobs wanted now [default: 1].")
@click.option("--team", default=None, help="The team the replicas run for (needed for a new deployment).")
@click.option("--tier", type=click.Choice([t.value for t in TIERS]), default=None, help="[default: high]")
@click.option("--min", "min_replicas", type=click.IntRange(0, 64), default=None, help="Autoscaler's floor.")
@click.option("--max", "max_replicas", type=click.IntRange(1, 64), default=None, help="Autoscaler's ceiling.")
@click.option("--max-batch", type=click.IntRange(1, 256), default=None, help="Requests per batch [default: 8].")
@click.option("--max-wait-ms", type=click.FloatRange(0, 1000), default=None, help="Batch wait [default: 5].")
@click.option("--backend", type=click.Choice(["auto", "onnx", "torch", "engine"]), default=None)
@click.option("--memory-gb", type=click.FloatRange(0.125, 192), default=None, help="GPU memory per replica.")
@click.option("--external", "scaler", flag_value="external", default=None,
              help="Replicas are `yoloq replica` pods something else scales (KEDA): yoloq submits none.")  # fmt: skip
@click.option("--scaled-by-yoloq", "scaler", flag_value="yoloq", help="Hand an --external deployment back.")
@click.option("--stop", is_flag=True, help="Cancel the alias's replicas (they drain) and drop its deployment.")
@click.option("--list", "list_all", is_flag=True, help="Show every deployment and its replicas.")
@click.option("--json", "as_json", is_flag=True)
def serve_cmd(alias: str | None, replicas: int | None, stop: bool, list_all: bool, as_json: bool,
              **fields: Any) -> None:  # fmt: skip
    """Serve NAME[@LABEL] (a bare name is NAME@prod) with replica jobs; --external, --stop, --list."""
    if list_all:
        if alias or stop:
            raise click.UsageError("--list takes no alias and no --stop")
        from tasks.replicas import overview

        rows = overview(session.client().rt)
        emit(rows, as_json, _list_text(rows))
        return
    if not alias:
        raise click.UsageError("give an alias (NAME[@LABEL]), or --list")
    client = session.client()
    if stop:
        if replicas is not None or any(v is not None for v in fields.values()):
            raise click.UsageError("--stop takes no other option")
        done = client.stop_serving(alias, by=ACTOR)
        text = f"{done['alias']}: cancelled {len(done['cancelled'])} replica(s) (they drain); deployment dropped"
        emit(done, as_json, text)
        return
    doc = client.serve(alias, replicas, by=ACTOR, **fields)
    emit(doc, as_json, _serve_text(doc))
