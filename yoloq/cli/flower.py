"""``yoloq flower``: Flower on the workers' broker, refused without basic auth (an open Flower can revoke any task)."""

from __future__ import annotations

from typing import IO, TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    from pydantic import SecretStr

AUTH_VARIABLE = "YOLOQ_FLOWER_BASIC_AUTH"


class FlowerRefused(click.ClickException):
    """A refusal to start: one line on stderr, exit code 2, like a usage error."""

    exit_code = 2

    def show(self, file: IO[Any] | None = None) -> None:
        """``yoloq: error: <reason>``, the format of every other yoloq error, instead of click's usage banner."""
        click.echo(f"yoloq: error: {self.format_message()}", err=True, file=file)


def basic_auth_pair(secret: SecretStr) -> str:
    """The ``user:password`` pair to require; empty or malformed values are refused without being echoed."""
    value = secret.get_secret_value()
    if not value:
        raise FlowerRefused(f"Flower needs basic auth: set {AUTH_VARIABLE}=user:password")
    user, sep, password = value.partition(":")
    if not (sep and user.strip() and password.strip()) or value != value.strip():
        raise FlowerRefused(f"{AUTH_VARIABLE} must be user:password with a non-empty user and password")
    return value


@click.command("flower")
@click.option("--port", type=click.IntRange(0, 65535), default=5555, show_default=True, help="0 picks a free port.")
@click.option("--address", default="127.0.0.1", show_default=True, help="Interface to bind (0.0.0.0 in a container).")
@click.option(
    "--allow-control", is_flag=True, help="Enable Flower's revoke/pool/consumer/apply buttons (bypass yoloq)."
)
def flower_cmd(port: int, address: str, allow_control: bool) -> None:
    """Run Flower on yoloq's broker: basic auth on every page and /metrics, history kept across restarts."""
    import logging

    from infra.settings import load_settings

    settings = load_settings()
    credentials = basic_auth_pair(settings.flower_basic_auth)
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if settings.log_level.upper() != "DEBUG":
        # Not a line per page load or scrape; refused requests (401) are warnings and stay visible.
        logging.getLogger("tornado.access").setLevel(logging.WARNING)
    from infra.flower_app import build, serve

    serve(build(settings, credentials, port=port, address=address, allow_control=allow_control))
