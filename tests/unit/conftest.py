"""Fixtures the unit tests share."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import infra.settings as settings_module
from infra.settings import PREFIX


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No YOLOQ_* from the developer's shell; YOLOQ_HOME points at an empty folder (never ~/.yoloq)."""
    for key in list(os.environ):
        if key.upper().startswith(PREFIX):
            monkeypatch.delenv(key)
    monkeypatch.setenv("YOLOQ_HOME", str(tmp_path))
    monkeypatch.setattr(settings_module, "_warned", set())  # each test sees its own warnings
