"""``yoloq weights trust|list|revoke``: the operator's side of the trust rule for pickled files (tasks/trust.py).

yoloq records the sha256 of every checkpoint and trained weights file it writes. Any other ``.pt``/``.pth`` a job
names must be imported here first: the file is hashed, and its location and sha256 are recorded (audited, with the
actor). Workers load it only while its content still has that hash.
"""

from __future__ import annotations

import json
from dataclasses import asdict

import click

from yoloq.cli import session
from yoloq.cli.session import ACTOR


@click.group("weights")
def weights_group() -> None:
    """Which weights files jobs may load: yoloq's own, and those an operator vouched for."""


@weights_group.command("trust")
@click.argument("location")
@click.option("--sha256", "sha256", default=None, metavar="HEX",
              help="Refuse unless the file has exactly this sha256 (e.g. the publisher's checksum).")  # fmt: skip
@click.option("--json", "as_json", is_flag=True)
def trust_cmd(location: str, sha256: str | None, as_json: bool) -> None:
    """Let jobs load the weights at LOCATION (s3://bucket/key or a path) as they are now; audited."""
    entry = session.client().trust_weights(location, sha256, by=ACTOR)
    click.echo(json.dumps(asdict(entry)) if as_json else f"trusted {entry.location} sha256 {entry.sha256}")


@weights_group.command("list")
@click.option("--json", "as_json", is_flag=True)
def list_cmd(as_json: bool) -> None:
    """Every recorded weights file: location, sha256, who recorded it and why (operator, checkpoint, trained)."""
    entries = session.client().trusted_files.entries()
    if as_json:
        click.echo(json.dumps([asdict(e) for e in entries], indent=2))
        return
    for e in entries:
        click.echo(f"{e.at}  {e.source:<10} {e.by:<24} {e.sha256[:16]}  {e.location}")


@weights_group.command("revoke")
@click.argument("location")
def revoke_cmd(location: str) -> None:
    """Stop jobs from loading LOCATION (queued jobs that name it fail at load); audited."""
    client = session.client()
    ledger = client.trusted_files
    recorded = next((where for where in _spellings(location, client.settings.data_roots) if ledger.lookup(where)), None)
    if recorded is None:
        raise click.ClickException(f"{location} is not a recorded weights file (see yoloq weights list)")
    ledger.forget([recorded], by=ACTOR, audited=True)
    click.echo(f"revoked {recorded}")


def _spellings(location: str, data_roots: str) -> list[str]:
    """Where LOCATION's record may sit: as ``weights trust`` and submit record it (a local path made absolute), then
    as typed (a file since deleted or moved outside the data roots can still be revoked by its recorded name)."""
    from tasks.errors import YoloqError
    from tasks.locations import Locations

    try:
        resolved = Locations.from_setting(data_roots).check("weights", location, must_exist=False)
    except YoloqError:
        return [location]
    return [resolved] if resolved == location else [resolved, location]
