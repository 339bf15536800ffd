"""`yoloq up`: embedded Redis + S3 + workers in the foreground, found by other shells, stopped cleanly by SIGTERM."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import urllib.request

import pytest

from tests.fleet import poll, yoloq_cli

pytestmark = pytest.mark.integration


def test_up_serves_other_shells_and_stops_everything_on_sigterm(services, tmp_path):
    # Given no Redis answers at the configured URL
    home = tmp_path / "home"
    base = {k: v for k, v in services.env().items() if not k.startswith("YOLOQ_")}
    up_env = {**base, "YOLOQ_HOME": str(home), "YOLOQ_REDIS_URL": "redis://127.0.0.1:1/0"}
    up = subprocess.Popen([sys.executable, "-m", "yoloq", "up", "--gpus", "0:T4:16"], env=up_env,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)  # fmt: skip
    try:
        # When another shell (same YOLOQ_HOME, no URL) submits a probe once the stack is up
        shell = {**base, "YOLOQ_HOME": str(home)}

        def ready() -> dict | None:
            result = yoloq_cli(services, "status", "--json", env=shell)
            doc = json.loads(result.stdout) if result.returncode == 0 else None
            return doc if doc and doc["gpus"] and doc["workers"] else None

        status = poll(ready, 90, "yoloq up to serve a worker", interval_s=0.5)
        assert status["gpus"][0]["name"] == "T4"
        submitted = json.loads(yoloq_cli(services, "submit", "probe", "--seconds", "1", "--team", "a", "--json",
                                         env=shell).stdout)  # fmt: skip

        def finished() -> bool:
            job = json.loads(yoloq_cli(services, "job", submitted["job_id"], "--json", env=shell).stdout)
            return job["state"] == "succeeded"

        poll(finished, 60, "the probe to succeed", interval_s=0.3)
        # And the API (status page) answers with the token `up` generated and published in stack.env
        env_file = dict(line.split("=", 1) for line in (home / "stack.env").read_text().splitlines())
        api_log = home / "logs" / "api.log"
        url = poll(lambda: api_log.exists() and re.search(r"http://127\.0\.0\.1:\d+", api_log.read_text()), 30,
                   "the API to listen").group(0)  # fmt: skip
        token = env_file["YOLOQ_API_TOKEN"]
        request = urllib.request.Request(f"{url}/api/v1/queues", headers={"Authorization": f"Bearer {token}"})
        with urllib.request.urlopen(request, timeout=10) as response:
            assert json.load(response)["total"] == 0
        assert env_file["YOLOQ_FLOWER_BASIC_AUTH"].startswith("ops:")
        beat_log = home / "logs" / "beat.log"
        poll(lambda: beat_log.exists() and "beat" in beat_log.read_text().lower(), 30, "beat to start")
    finally:
        # Then SIGTERM stops workers, S3 and the embedded Redis, and removes the stack file
        up.send_signal(signal.SIGTERM)
        out, _ = up.communicate(timeout=60)
    assert up.returncode == 0, out
    assert "status http://127.0.0.1:" in out and "flower http://127.0.0.1:" in out
    assert not (home / "stack.env").exists()
    leftovers = subprocess.run(["pgrep", "-f", str(home)], capture_output=True, text=True, check=False)
    assert leftovers.stdout == "", f"processes left behind: {leftovers.stdout}"
