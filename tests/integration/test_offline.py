"""A training job needs no network: it completes with networking disabled and never even tries to connect."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

pytestmark = pytest.mark.integration


def _no_network_prefix() -> list[str]:
    """``unshare -n`` (a network namespace with nothing in it) where this machine allows it."""
    unshare = shutil.which("unshare")
    if unshare and subprocess.run([unshare, "-n", "true"], capture_output=True, check=False).returncode == 0:
        return [unshare, "-n"]
    return []  # the audit hook still proves there was no attempt


def test_training_runs_with_network_disabled_and_makes_no_connection_attempt(tmp_path):
    argv = [*_no_network_prefix(), sys.executable, "-m", "tests.offline_job", str(tmp_path)]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["epochs"] == 1 and report["onnx"].endswith("/results/model.onnx")
    assert report["attempts"] == []
