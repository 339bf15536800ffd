"""Typed settings read once from ``YOLOQ_*`` environment variables (and the stack file ``yoloq up`` writes).

This is the only module that reads ``os.environ``. Unknown ``YOLOQ_*`` keys are errors, not silently ignored: a
typo such as ``YOLOQ_REDIS_UR`` would otherwise send a whole fleet to the wrong broker.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

from pydantic import Field, SecretStr, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from tasks.errors import ConfigError

PREFIX = "YOLOQ_"


def default_home() -> Path:
    """Where yoloq keeps local state (stack file, embedded server data) unless YOLOQ_HOME says otherwise."""
    return Path(os.environ.get(f"{PREFIX}HOME", str(Path.home() / ".yoloq")))


class Settings(BaseSettings):
    """Every knob yoloq reads; defaults suit a developer machine, production sets them explicitly."""

    model_config = SettingsConfigDict(env_prefix=PREFIX, extra="forbid", frozen=True)

    home: Path = Field(default_factory=default_home)
    redis_url: str = "redis://127.0.0.1:6379/0"
    s3_endpoint: str = "http://127.0.0.1:8333"
    s3_bucket: str = "yoloq"
    s3_region: str = "us-east-1"
    s3_access_key: SecretStr = SecretStr("")
    s3_secret_key: SecretStr = SecretStr("")
    # Simulated inventory for machines without GPUs, e.g. "0:T4:16,1:A100:40" (index:model:GB).
    gpus: str = ""
    # Set by `yoloq worker` for the Celery worker it becomes; users never set it.
    worker_gpu: str = ""
    # Longer than the longest job: an unacked task older than this is redelivered while still running.
    visibility_timeout_s: Annotated[int, Field(ge=3600)] = 7 * 24 * 3600
    lease_ttl_s: Annotated[float, Field(gt=0.5, le=600)] = 15.0
    worker_ttl_s: Annotated[float, Field(gt=0.5, le=600)] = 15.0
    broker_timeout_s: Annotated[float, Field(gt=0, le=60)] = 3.0
    log_level: str = "INFO"
    # Network surfaces (issue #6). Every HTTP route but /healthz needs `Authorization: Bearer <api_token>`; the API
    # refuses to start without one. Flower needs "user:password" basic auth; it refuses to start without it.
    api_token: SecretStr = SecretStr("")
    flower_basic_auth: SecretStr = SecretStr("")
    # Keep one pre-imported job process per GPU worker (tasks/standby.py): ~0.4 GB of RAM for a faster first batch.
    warm_start: bool = True
    # Recurring jobs for `yoloq beat` (YAML or TOML; see docs/operations.md), empty: only the built-in schedules.
    schedule_file: str = ""


def _check_unknown_keys() -> None:
    known = {PREFIX + name.upper() for name in Settings.model_fields}
    # Names are case-sensitive: a lowercase yoloq_redis_url is reported, not silently read or ignored.
    unknown = sorted(k for k in os.environ if k.upper().startswith(PREFIX) and k not in known)
    if unknown:
        raise ConfigError(f"unknown setting(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")


def _stack_file_values(home: Path) -> dict[str, str]:
    """Values `yoloq up` published for clients in other shells; explicit environment variables win."""
    path = home / "stack.env"
    if not path.is_file():
        return {}
    values: dict[str, str] = {}
    for line in path.read_text().splitlines():
        key, sep, value = line.partition("=")
        name = key.strip().removeprefix(PREFIX).lower()
        if sep and key.strip() not in os.environ and name in Settings.model_fields:
            values[name] = value.strip()
    return values


def load_settings(use_stack_file: bool = True) -> Settings:
    """Read and validate settings once per process, failing with ConfigError on anything unknown or invalid."""
    _check_unknown_keys()
    try:
        home = Settings().home
        extra = _stack_file_values(home) if use_stack_file else {}
        return Settings(**extra)  # type: ignore[arg-type]
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ConfigError(f"invalid setting {PREFIX}{where.upper()}: {first['msg']}") from None


def environ_for(settings: Settings) -> dict[str, str]:
    """The ``YOLOQ_*`` variables that hand these settings to a child process."""
    out: dict[str, str] = {}
    for name, value in settings.model_dump().items():
        raw = value.get_secret_value() if isinstance(value, SecretStr) else value
        if raw not in ("", None):
            out[PREFIX + name.upper()] = str(raw)
    return out


def process_environ() -> dict[str, str]:
    """A copy of this process's environment, for launching children with a few variables changed."""
    return dict(os.environ)
