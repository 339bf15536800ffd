"""The ``yoloq`` command: the root group and the entry point; each command group lives in its own module.

Every read command has ``--json`` (one JSON document on stdout). Errors go to stderr as one line,
``yoloq: error: <reason>``, with exit code 1 (2 for usage errors): never a traceback.

Start-up is part of the contract (``bench/cli.py``): this module and the command modules import only click at the
top; each command imports what it uses when it runs, so ``yoloq --help`` never loads Redis, Celery or pydantic.
"""

from __future__ import annotations

import sys

import click

from yoloq.cli import api, autoscale, beat, dataset, flower, jobs, ops, stack, submit


@click.group()
def cli() -> None:
    """yoloq: priority-routed, preemptive YOLO jobs on a shared GPU fleet."""


for _command in (
    submit.submit_group,
    *jobs.COMMANDS,
    *ops.COMMANDS,
    *beat.COMMANDS,
    dataset.dataset_group,
    *stack.COMMANDS,
    flower.flower_cmd,
    api.api_cmd,
    autoscale.autoscaler_cmd,
):
    cli.add_command(_command)


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
