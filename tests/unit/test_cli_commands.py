"""The CLI's lazy command table is complete and honest: every entry loads a click command of that name, every
command a module defines is reachable, and running one command loads only its own module."""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path

import click
import pytest

from yoloq.cli.main import COMMANDS, cli

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
MODULES = sorted({target.split(":")[0] for target in COMMANDS.values()})


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_each_entry_loads_the_command_of_that_name(name: str) -> None:
    command = cli.get_command(click.Context(cli), name)
    assert isinstance(command, click.Command) and command.name == name


@pytest.mark.parametrize("module", MODULES)
def test_every_top_level_command_a_module_defines_is_listed(module: str) -> None:
    loaded = importlib.import_module(f"yoloq.cli.{module}")
    commands = [obj for obj in vars(loaded).values() if isinstance(obj, click.Command)]
    nested = {id(sub) for group in commands if isinstance(group, click.Group) for sub in group.commands.values()}
    top_level = {c.name for c in commands if id(c) not in nested}
    assert top_level <= set(COMMANDS), f"yoloq.cli.{module} defines commands missing from COMMANDS"


def test_unknown_command_is_a_usage_error() -> None:
    assert cli.get_command(click.Context(cli), "explode") is None
    argv = [sys.executable, "-m", "yoloq", "explode"]
    done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, check=False)
    assert done.returncode == 2 and "No such command 'explode'" in done.stderr


def test_running_one_command_loads_only_its_module() -> None:
    probe = (
        "import sys\nfrom yoloq.cli.main import cli\n"
        "try:\n    cli.main(['dataset', '--help'], standalone_mode=False)\nexcept SystemExit:\n    pass\n"
        "print(','.join(sorted(m for m in sys.modules if m.startswith('yoloq.cli.'))))\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True)
    assert done.stdout.strip().splitlines()[-1] == "yoloq.cli.dataset,yoloq.cli.main"


def test_api_refuses_a_log_level_logging_does_not_know(tmp_path: Path) -> None:
    env = {"PATH": "/usr/bin:/bin", "YOLOQ_HOME": str(tmp_path), "YOLOQ_API_TOKEN": "x" * 32, "YOLOQ_LOG_LEVEL": "LOUD"}
    argv = [sys.executable, "-m", "yoloq", "api", "--port", "1"]
    done = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, check=False, timeout=60)
    assert done.returncode == 1
    assert done.stderr == "yoloq: error: YOLOQ_LOG_LEVEL='LOUD' is not a logging level (e.g. INFO, WARNING)\n"


def test_a_broker_url_redis_cannot_read_is_one_line(tmp_path: Path) -> None:
    env = {"PATH": "/usr/bin:/bin", "YOLOQ_HOME": str(tmp_path), "YOLOQ_REDIS_URL": "notaurl"}
    done = subprocess.run([sys.executable, "-m", "yoloq", "status"], cwd=ROOT, env=env, capture_output=True, text=True,
                          check=False, timeout=60)  # fmt: skip
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr.startswith("yoloq: error: invalid Redis URL 'notaurl' (YOLOQ_REDIS_URL): ")
    assert len(done.stderr.splitlines()) == 1


def test_api_refuses_a_short_token(tmp_path: Path) -> None:
    env = {"PATH": "/usr/bin:/bin", "YOLOQ_HOME": str(tmp_path), "YOLOQ_API_TOKEN": "x" * 31}
    argv = [sys.executable, "-m", "yoloq", "api", "--port", "1"]
    done = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, check=False, timeout=60)
    assert done.returncode == 1
    assert done.stderr.startswith("yoloq: error: YOLOQ_API_TOKEN is 31 characters; use at least 32")
