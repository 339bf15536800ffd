"""What the routers share through the application: its one Client (built and prepared by ``make_app``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from fastapi import Request

if TYPE_CHECKING:
    from yoloq.client import Client


def client_of(request: Request) -> Client:
    """The application's Client, typed (``app.state`` is untyped)."""
    client: Client = request.app.state.client
    return client
