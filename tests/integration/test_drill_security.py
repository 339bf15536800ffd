"""The security drill's checks (bench/drills/security_kit.py) see what they look for, and what the drill found stays
fixed: the embedded Redis's password no longer travels in its argv."""

from __future__ import annotations

import stat
import sys
from pathlib import Path
from typing import Any

import pytest

from bench.drills import security_kit
from bench.drills.offline_child import local
from bench.drills.security_kit import Started
from infra.local_redis import start_redis
from infra.processes import ManagedProcess

pytestmark = pytest.mark.integration


def test_the_embedded_redis_gets_its_password_from_a_private_file_not_argv(tmp_path: Path) -> None:
    """Drill security: ``redis-server --requirepass <password>`` put the password in argv (readable through ps and
    /proc by every local user until the server renamed its process, and kept by process accounting)."""
    with Started() as started:
        redis = start_redis("", tmp_path, prefer_configured=False)
    try:
        password = redis.url.split(":")[2].split("@")[0]
        assert security_kit.argv_leaks(started, {"redis password": password}) == []
        assert any("redis-server" in program for program, _, _ in started.seen)
        (config,) = list((tmp_path / "redis").rglob("redis.conf"))
        assert stat.S_IMODE(config.stat().st_mode) == 0o600 and f"requirepass {password}" in config.read_text()
    finally:
        redis.stop()


def test_argv_and_environment_leaks_are_seen(tmp_path: Path) -> None:
    secret = "s3cr3t-" + "x" * 12
    with Started() as started:
        proc = ManagedProcess("echo", [sys.executable, "-c", "pass", f"--password={secret}"], tmp_path / "a.log",
                              {"YOLOQ_API_TOKEN": secret, "LEAKY_TOKEN": secret})  # fmt: skip
        proc.proc.wait(30)
        proc.stop()
    leaks = security_kit.argv_leaks(started, {"API token": secret})
    name = Path(sys.executable).name
    assert leaks == sorted([f"API token in the argv of {name}", f"API token in {name}'s $LEAKY_TOKEN"])


def test_secrets_in_logs_are_found(tmp_path: Path) -> None:
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "api.log").write_text("refused key yq_abc\nconnected to redis://:hunter2hunter2@x\n")
    assert security_kit.log_leaks(tmp_path, {"redis password": "hunter2hunter2", "API token": "nope" * 4}) == (
        1, ["redis password in logs/api.log"])  # fmt: skip


def test_the_source_holds_no_literal_credential() -> None:
    files, findings = security_kit.scan_code()
    assert files > 100 and findings == []
    pattern = security_kit.LITERALS["password in a Redis URL"]
    assert pattern.search('url = "redis://:hunter2@127.0.0.1:6379/0"')
    assert not pattern.search("YOLOQ_REDIS_URL=redis://:...@127.0.0.1:40211/0")


@pytest.mark.parametrize(("event", "target", "is_local"), [
    ("socket.connect", "127.0.0.1", True), ("socket.connect", "/tmp/redis.sock", True),
    ("socket.getaddrinfo", "localhost", True), ("socket.getaddrinfo", "None", True),
    ("socket.getaddrinfo", "github.com", False), ("socket.connect", "1.1.1.1", False),
    ("urllib.Request", "http://127.0.0.1:8333/x", True), ("urllib.Request", "https://ultralytics.com/x", False),
])  # fmt: skip
def test_audited_targets_are_judged(event: str, target: str, is_local: bool, services: Any) -> None:
    assert local(event, target) is is_local
