"""Regressions for bugs found in review: each test fails on the code before its fix."""

from __future__ import annotations

import os
import stat

import pytest

from infra.inventory import parse_simulated
from infra.settings import Settings, load_settings
from tasks.errors import ConfigError, SpecRejected
from tasks.specs import parse_spec
from workers.stack import write_stack_file

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("text", ["0:T4:nan", "0:T4:inf", "0:T4:0.0001"])
def test_non_finite_or_tiny_simulated_memory_is_a_config_error(text):
    with pytest.raises(ConfigError, match="YOLOQ_GPUS"):
        parse_simulated(text)


@pytest.mark.parametrize("kind", [{"kind": "probe"}, {"kind": "infer", "model": "yolov8n.pt", "source": "/i"}])
def test_memory_override_below_128_mib_is_rejected_not_ignored(kind):
    with pytest.raises(SpecRejected, match="memory_gb"):
        parse_spec({**kind, "team": "a", "memory_gb": 0.0005})


def test_lowercase_setting_is_reported_not_silently_read(monkeypatch, tmp_path):
    for key in list(os.environ):
        if key.upper().startswith("YOLOQ_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("yoloq_redis_url", "redis://typo:1/0")
    with pytest.raises(ConfigError, match="unknown setting\\(s\\) yoloq_redis_url"):
        load_settings()


def test_stack_file_is_private_even_when_it_existed_before(tmp_path):
    path = tmp_path / "stack.env"
    path.write_text("old\n")
    path.chmod(0o644)
    write_stack_file(Settings(home=tmp_path, s3_secret_key="s3cr3t"))
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert "YOLOQ_S3_SECRET_KEY=s3cr3t" in path.read_text()
