"""What every CLI command shares: who is acting (for job histories and the audit log) and the Client it talks to."""

from __future__ import annotations

import getpass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from yoloq.client import Client


def _actor() -> str:
    """Who runs this CLI (containers may have no passwd entry)."""
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return "cli"


ACTOR = _actor()


def client() -> Client:
    """The Client of this command (imported when a command runs, so ``yoloq --help`` never loads it), on settings
    that refuse to guess a broker: no running stack and no YOLOQ_REDIS_URL is an error, not the machine's Redis."""
    from infra.settings import load_client_settings
    from yoloq.client import Client

    return Client(load_client_settings())
