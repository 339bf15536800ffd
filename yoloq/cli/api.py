"""``yoloq api``: serve the HTTP API, the status page and ``/metrics`` with uvicorn until SIGTERM/SIGINT."""

from __future__ import annotations

import click

MIN_TOKEN_CHARS = 32


@click.command("api")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind (0.0.0.0 in a container).")
@click.option("--port", type=click.IntRange(1, 65535), default=8000, show_default=True)
def api_cmd(host: str, port: int) -> None:
    """Serve the HTTP API (jobs, fleet views, /metrics, the status page); every route but /healthz needs the token."""
    import logging

    import uvicorn

    from infra.settings import load_settings
    from tasks.errors import ConfigError
    from yoloq.client import Client
    from yoloq.http.app import make_app

    settings = load_settings()
    token = settings.api_token.get_secret_value()
    if not token:
        raise ConfigError("yoloq api needs YOLOQ_API_TOKEN: every route but /healthz requires it")
    if len(token) < MIN_TOKEN_CHARS:  # the one credential of every route: guessable is as bad as none
        raise ConfigError(f"YOLOQ_API_TOKEN is {len(token)} characters; use at least {MIN_TOKEN_CHARS} "
                          "(e.g. python -c 'import secrets; print(secrets.token_urlsafe(32))')")  # fmt: skip
    level = logging.getLevelName(settings.log_level.upper())  # uvicorn knows fewer names ("WARN") than logging
    if not isinstance(level, int):
        raise ConfigError(f"YOLOQ_LOG_LEVEL={settings.log_level!r} is not a logging level (e.g. INFO, WARNING)")
    app = make_app(Client(settings), token)
    config = uvicorn.Config(
        app, host=host, port=port, lifespan="on", proxy_headers=False, server_header=False, access_log=False,
        log_level=level, timeout_graceful_shutdown=5,
    )  # fmt: skip
    click.echo(f"yoloq api on http://{host}:{port} (status page /status, metrics /metrics)", err=True)
    uvicorn.Server(config).run()
