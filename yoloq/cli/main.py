"""The ``yoloq`` command: the root group and the entry point; each command group lives in its own module.

Every read command has ``--json`` (one JSON document on stdout). Errors go to stderr as one line,
``yoloq: error: <reason>``, with exit code 1 (2 for usage errors): never a traceback.

Start-up is part of the contract (``bench/cli.py``): a command loads only its own module, command modules import only
click and light pure modules (``routing.tiers``, ``tasks.states``) at the top, and each command imports what it uses
when it runs; ``yoloq --help`` loads every command module (for their one-line help) and still never Redis, Celery
or pydantic (``tests/unit/test_layering.py``).
"""

from __future__ import annotations

import importlib
import sys

import click

# Command name → "module:attribute" under yoloq.cli, loaded on first use.
COMMANDS = {
    "submit": "submit:submit_group",
    **{name: f"jobs:{name}_cmd" for name in ("job", "jobs", "status", "cancel", "preempt")},
    **{name: f"ops:{name}_cmd" for name in ("supervisor", "freeze", "unfreeze", "sla", "approve", "promote", "audit")},
    "quota": "quota:quota_group",
    "judge": "quota:judge_cmd",
    **{name: f"beat:{name}_cmd" for name in ("beat", "cordon", "uncordon")},
    "dataset": "dataset:dataset_group",
    **{name: f"stack:{name}_cmd" for name in ("worker", "up", "demo")},
    "flower": "flower:flower_cmd",
    "api": "api:api_cmd",
    "key": "keys:key_group",
    "autoscaler": "autoscale:autoscaler_cmd",
    "weights": "trust:weights_group",
    "model": "models:model_group",
    "serve": "serve:serve_cmd",
    "replica": "replica:replica_cmd",
    "webhook": "webhooks:webhook_group",
    "notifier": "webhooks:notifier_cmd",
}


class LazyGroup(click.Group):
    """A group whose commands are imported when they are asked for, not when the program starts."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        """Every command name, without importing any."""
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        """Import the command's module now (None for an unknown name: click then says "No such command")."""
        if cmd_name not in COMMANDS:
            return None
        module, attribute = COMMANDS[cmd_name].split(":")
        command: click.Command = getattr(importlib.import_module(f"yoloq.cli.{module}"), attribute)
        return command


@click.group(cls=LazyGroup)
def cli() -> None:
    """yoloq: priority-routed, preemptive YOLO jobs on a shared GPU fleet."""


def main() -> None:
    """Entry point of the console script: YoloqError → one line on stderr, exit 1."""
    from tasks.errors import YoloqError

    try:
        cli.main(standalone_mode=False)
    except click.exceptions.Abort:
        sys.exit(130)
    except click.ClickException as err:
        err.show()
        sys.exit(err.exit_code)
    except YoloqError as err:
        click.echo(f"yoloq: error: {err}", err=True)
        sys.exit(1)
