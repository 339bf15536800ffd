"""docker-compose.yml through the real `docker-compose config` (Compose v1, scripts/ensure-compose.sh): it loads,
interpolates and resolves, secrets are mandatory, and a broken file is refused (so the check is not vacuous)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / ".venv-compose" / "bin" / "docker-compose"
SECRETS = {
    "YOLOQ_REDIS_PASSWORD": "test-redis-password",
    "YOLOQ_S3_ACCESS_KEY": "test-access",
    "YOLOQ_S3_SECRET_KEY": "test-secret",
    "YOLOQ_API_TOKEN": "test-token",
    "YOLOQ_FLOWER_BASIC_AUTH": "ops:test",
}


def config(path: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """``docker-compose -f PATH --profile gpu config`` with only ``env`` (no developer's variables leak in)."""
    assert COMPOSE.exists(), "run `bash scripts/ensure-compose.sh` (make test does)"
    clean = {"PATH": os.environ.get("PATH", ""), "HOME": os.environ.get("HOME", "/tmp"), **env}
    return subprocess.run([str(COMPOSE), "-f", str(path), "--profile", "gpu", "config"], env=clean,
                          capture_output=True, text=True, timeout=120, check=False)  # fmt: skip


def test_the_stack_resolves_with_its_secrets_from_the_environment() -> None:
    result = config(ROOT / "docker-compose.yml", SECRETS)
    assert result.returncode == 0, result.stderr
    resolved: dict[str, Any] = yaml.safe_load(result.stdout)
    services = resolved["services"]
    assert {"redis", "s3", "supervisor", "notifier", "beat", "flower", "api", "worker-cpu", "worker-gpu0"} <= set(
        services
    )
    assert "--appendonly" in services["redis"]["command"] and "test-redis-password" in services["redis"]["command"]
    assert services["supervisor"]["environment"]["YOLOQ_REDIS_URL"] == "redis://:test-redis-password@redis:6379/0"
    gpu = services["worker-gpu0"]["deploy"]["resources"]["reservations"]["devices"][0]
    assert gpu["capabilities"] == ["gpu"] and gpu["device_ids"] == ["0"]


@pytest.mark.parametrize("missing", sorted(SECRETS))
def test_every_secret_is_mandatory(missing: str) -> None:
    result = config(ROOT / "docker-compose.yml", {k: v for k, v in SECRETS.items() if k != missing})
    assert result.returncode != 0 and missing in result.stderr, result.stderr


def test_a_broken_file_is_refused(tmp_path: Path) -> None:
    doc = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    doc["services"]["api"]["depends_on"] = {"no-such-service": {"condition": "service_started"}}
    broken = tmp_path / "docker-compose.yml"
    broken.write_text(yaml.safe_dump(doc))
    result = config(broken, SECRETS)
    assert result.returncode != 0 and "no-such-service" in result.stderr, result.stderr
