"""`yoloq supervisor` refuses an interval the leader lease cannot outlive, before it connects to anything."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from yoloq.cli.ops import supervisor_cmd

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("args", [["--interval", "6"], ["--interval", "0"], ["--interval", "3", "--leader-ttl", "5"]])
def test_an_interval_over_half_the_leader_ttl_is_refused(args: list[str]) -> None:
    result = CliRunner().invoke(supervisor_cmd, args)
    assert result.exit_code == 2
    assert "--interval" in result.output and "half of --leader-ttl" in result.output
