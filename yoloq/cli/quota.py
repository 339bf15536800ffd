"""``yoloq quota …`` (quotas, lending limits, default tiers, demotion, pre-approval, the view of all of them with
credit scores) and ``yoloq judge ID --non-urgent`` (a strike against a team's credit score)."""

from __future__ import annotations

import json
from typing import Any

import click

from routing.tiers import Tier
from yoloq.cli import session
from yoloq.cli.session import ACTOR

TIERS = click.Choice([t.value for t in Tier])


@click.group("quota")
def quota_group() -> None:
    """Per-team GPU quotas per tier, lending, default tiers, demoted teams and credit scores."""


@quota_group.command("set")
@click.argument("team")
@click.option("--tier", required=True, type=TIERS)
@click.option("--gpus", type=click.IntRange(0), default=None, help="Omit (without --lend) to remove the limit.")
@click.option("--lend", type=click.IntRange(0), default=None,
              help="Others may borrow up to this many of TEAM's unused GPUs at TIER (0: lend none).")  # fmt: skip
def quota_set(team: str, tier: str, gpus: int | None, lend: int | None) -> None:
    """Limit TEAM's queued + running jobs at TIER (jobs beyond it are held, or borrow another team's unused quota);
    with --lend, set how much of it others may borrow (--lend alone leaves the quota as it is)."""
    client = session.client()
    if gpus is not None or lend is None:
        client.quota(team, Tier(tier), gpus, by=ACTOR)
    if lend is not None:
        client.lend(team, Tier(tier), lend, by=ACTOR)
    said = [] if gpus is None and lend is not None else ["no limit" if gpus is None else f"{gpus} GPUs"]
    click.echo(f"{team} {tier}: " + ", ".join(said + ([f"lends at most {lend}"] if lend is not None else [])))


@quota_group.command("default")
@click.argument("team")
@click.option("--tier", type=TIERS, default=None, help="Omit to go back to medium.")
def quota_default(team: str, tier: str | None) -> None:
    """The tier TEAM's submissions get when they name none (an explicit --tier still wins)."""
    session.client().default_tier(team, Tier(tier) if tier else None, by=ACTOR)
    click.echo(f"{team}: submissions without a tier run at {tier or 'medium'}")


@quota_group.command("demote")
@click.argument("team")
@click.option("--undo", is_flag=True, help="Stop demoting the team.")
def quota_demote(team: str, undo: bool) -> None:
    """Run TEAM's future critical submissions at high."""
    session.client().demote(team, not undo, by=ACTOR)
    click.echo(f"{team}: critical submissions run at {'critical' if undo else 'high'}")


@quota_group.command("preapprove")
@click.argument("team")
@click.option("--undo", is_flag=True, help="Require per-job approval again.")
def quota_preapprove(team: str, undo: bool) -> None:
    """Let TEAM's critical submissions in without `yoloq approve` (an on-call team)."""
    session.client().preapprove(team, not undo, by=ACTOR)
    click.echo(f"{team}: critical submissions {'need approval' if undo else 'pre-approved'}")


def _lines(doc: dict[str, Any]) -> list[str]:
    rows = [f"{u['team']} {u['tier']}: nominal {'-' if u['nominal'] is None else u['nominal']}, "
            f"lends at most {u['lend']}, in use {u['own']} own + {u['borrowed']} borrowed, {u['lent']} lent"
            for u in doc["usage"]]  # fmt: skip
    rows += [f"{team}: default tier {tier}" for team, tier in doc["default_tiers"].items()]
    rows += [f"{c['team']}: credit {c['score']:g}{' (demoted)' if c['demoted'] else ''}" for c in doc["credit"]]
    return [*rows, f"demoted: {doc['demoted']}", f"pre-approved: {doc['pre_approved']}"]


@quota_group.command("show")
@click.option("--json", "as_json", is_flag=True)
def quota_show(as_json: bool) -> None:
    """Quotas with what each team uses, borrows and lends; default tiers; credit scores; demoted teams."""
    doc = session.client().admission_rules()
    click.echo(json.dumps(doc, indent=2) if as_json else "\n".join(_lines(doc)))


@click.command("judge")
@click.argument("job_id")
@click.option("--non-urgent", is_flag=True, required=True, help="The job was not urgent (the only judgement).")
@click.option("--reason", default="", help="Why, for the job's history and the audit log.")
@click.option("--json", "as_json", is_flag=True)
def judge_cmd(job_id: str, non_urgent: bool, reason: str, as_json: bool) -> None:
    """Judge a critical job not urgent: a strike against its team's credit score (audited)."""
    session.client().judge(job_id, reason, by=ACTOR)
    click.echo(json.dumps({"job_id": job_id, "judged": "non-urgent"}) if as_json else f"{job_id}: judged non-urgent")
