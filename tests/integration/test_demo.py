"""`make demo` stays true: the narrated scenario runs end to end against its own stack and leaves nothing behind."""

from __future__ import annotations

import subprocess
import sys

import pytest

pytestmark = pytest.mark.integration


def test_demo_runs_end_to_end(tmp_path):
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "YOLOQ_HOME": str(tmp_path / "home")}
    result = subprocess.run([sys.executable, "-m", "yoloq", "demo"], capture_output=True, text=True, timeout=300,
                            env=env, check=False)  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "they started in this order: critical > high > medium > low > batch" in result.stdout
    assert "preempt-requested: critical job" in result.stdout and "first in victim order" in result.stdout
    # the victim's own checkpoint, or (a request during the epoch's save) that epoch's
    stops = ("checkpoint: preempted mid-epoch", "checkpoint: preempted during validation",
             "checkpoint: preempted after epoch", "stopped: preempt obeyed right after epoch")  # fmt: skip
    assert any(stop in result.stdout for stop in stops), result.stdout[-3000:]
    assert "resume: resuming from" in result.stdout
    assert "start worker for GPU 2" in result.stdout and "start worker for GPU 3" in result.stdout
    assert "stop worker for GPU 2" in result.stdout and "stop worker for GPU 3" in result.stdout
    assert "Status page http://127.0.0.1:" in result.stdout and "its queue view answers" in result.stdout
    assert "Summary" in result.stdout and result.stdout.count(" succeeded") >= 15
    leftovers = subprocess.run(["pgrep", "-f", str(tmp_path)], capture_output=True, text=True, check=False)
    assert leftovers.stdout == "", f"processes left behind: {leftovers.stdout}"
