"""``yoloq api``: serve the HTTP API, the status page and ``/metrics`` until SIGTERM/SIGINT."""

from __future__ import annotations

import asyncio
import signal

import click

from infra.api import make_app
from infra.settings import load_settings
from tasks.errors import ConfigError
from yoloq.client import Client


async def _serve(client: Client, token: str, host: str, port: int) -> None:
    server = make_app(client, token).listen(port, address=host, xheaders=False)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    click.echo(f"yoloq api on http://{host}:{port} (status page /status, metrics /metrics)", err=True)
    await stop.wait()
    server.stop()


@click.command("api")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind (0.0.0.0 in a container).")
@click.option("--port", type=click.IntRange(1, 65535), default=8000, show_default=True)
def api_cmd(host: str, port: int) -> None:
    """Serve the HTTP API (jobs, fleet views, /metrics, the status page); every route but /healthz needs the token."""
    settings = load_settings()
    token = settings.api_token.get_secret_value()
    if not token:
        raise ConfigError("yoloq api needs YOLOQ_API_TOKEN: every route but /healthz requires it")
    asyncio.run(_serve(Client(settings), token, host, port))
