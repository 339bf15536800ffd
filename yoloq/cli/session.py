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
    """The Client of this command, imported when a command runs so that ``yoloq --help`` never loads it."""
    from yoloq.client import Client

    return Client()
