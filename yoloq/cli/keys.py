"""``yoloq key create|list|revoke|limit``: the HTTP API's per-team keys with scopes (``routing.access`` says what each
scope allows) and, per key, its detect rate limit. A key is shown once, when it is created; Redis keeps only its hash.
Every change is in the audit log."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import click

from routing.access import ALL_TEAMS, SCOPES
from yoloq.cli import session
from yoloq.cli.session import ACTOR

if TYPE_CHECKING:
    from infra.api_keys import ApiKeys
    from infra.rate_limit import RateLimiter


def _keys() -> ApiKeys:
    from infra.api_keys import ApiKeys

    client = session.client()
    return ApiKeys(client.registry.client, client.settings.redis_url)


def _limiter() -> RateLimiter:
    from infra.rate_limit import RateLimiter

    client = session.client()
    settings = client.settings
    return RateLimiter(client.registry.client, settings.detect_rate, settings.detect_burst, settings.redis_url)


@click.group("key")
def key_group() -> None:
    """API keys for the HTTP API: per team, with scopes (submit, operate, approve, detect, admin)."""


@key_group.command("create")
@click.argument("name")
@click.option("--team", required=True, help=f"The team the key acts for ('{ALL_TEAMS}': every team).")
@click.option("--scope", "scopes", multiple=True, required=True, type=click.Choice(SCOPES),
              help="What the key may do; repeat for several.")  # fmt: skip
@click.option("--json", "as_json", is_flag=True, help="Print {name, team, scopes, key} as JSON.")
def create_cmd(name: str, team: str, scopes: tuple[str, ...], as_json: bool) -> None:
    """Create a key and print it: the only time it is shown (Redis keeps its sha256)."""
    secret = _keys().create(name, team, list(scopes), by=ACTOR)
    if as_json:
        click.echo(json.dumps({"name": name, "team": team, "scopes": sorted(set(scopes)), "key": secret}))
        return
    click.echo(secret)
    click.echo(f"key {name} (team {team}, scopes {','.join(sorted(set(scopes)))}): shown once, store it now", err=True)


@key_group.command("list")
@click.option("--json", "as_json", is_flag=True)
def list_cmd(as_json: bool) -> None:
    """Every key's name, id, team, scopes and who created it when; never a secret."""
    from yoloq.key_view import listed

    entries = listed(_keys(), _limiter())
    if as_json:
        click.echo(json.dumps(entries, indent=2))
        return
    for e in entries:
        limit = e["detect_limit"]
        click.echo(f"{e['name']:<24} yq_{e['id']}_…  team={e['team']:<12} scopes={','.join(e['scopes']):<28} "
                   f"detect {limit['rate']:g}/s burst {limit['burst']}{'' if limit['own'] else ' (default)'}  "
                   f"created {e['created_at']} by {e['created_by']}")  # fmt: skip


@key_group.command("revoke")
@click.argument("name")
def revoke_cmd(name: str) -> None:
    """Delete a key: the API refuses it from the next request on (no restart, no cache)."""
    _keys().revoke(name, by=ACTOR)
    click.echo(f"key {name}: revoked")


@key_group.command("limit")
@click.argument("name")
@click.option("--rate", type=click.FloatRange(min=0, min_open=True), help="Detect requests per second.")
@click.option("--burst", type=click.IntRange(min=1), help="Requests it may send at once after a quiet spell.")
@click.option("--default", "default", is_flag=True, help="Back to YOLOQ_DETECT_RATE / YOLOQ_DETECT_BURST.")
def limit_cmd(name: str, rate: float | None, burst: int | None, default: bool) -> None:
    """Give one key (a tenant) its own detect rate limit, from the next request of every API process on."""
    from tasks.errors import KeyNotFound, SpecRejected
    from yoloq.key_view import set_limit

    if default == (rate is not None or burst is not None):
        raise click.UsageError("give --rate and --burst, or --default")
    try:
        limit = set_limit(_keys(), _limiter(), name, rate, burst, by=ACTOR)
    except (KeyNotFound, SpecRejected) as err:
        raise click.UsageError(str(err)) from None
    default_note = "" if limit["own"] else " (default)"
    click.echo(f"key {name}: detect limited to {limit['rate']:g}/s, burst {limit['burst']}{default_note}")
