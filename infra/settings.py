"""Typed settings read once from ``YOLOQ_*`` environment variables and the stack file ``yoloq up`` writes.

This is the only module that reads ``os.environ``. Unknown ``YOLOQ_*`` keys are errors, not silently ignored: a
typo such as ``YOLOQ_REDIS_UR`` would otherwise send a whole fleet to the wrong broker.

**Precedence** (one rule, highest first):

1. a *live* stack file, ``$YOLOQ_HOME/stack.env`` (:mod:`infra.stack_file`): every value it holds;
2. ``YOLOQ_*`` environment variables;
3. the defaults below.

Why the running stack beats the environment: the file describes the stack the user started and that still runs:
its Redis, its S3 and keys, its API token and Flower password, its simulated GPUs. Those values were chosen or
generated when it started and mean nothing once it stops (a stopped or killed stack's file is not live and is
ignored). A variable that disagrees with it is a leftover from starting that stack far more often than a wish to
reach another broker: issue 14's user exported ``YOLOQ_REDIS_URL`` to keep ``yoloq up`` off the machine's Redis,
and every later command in that shell talked to the wrong Redis. So the stack wins, and each variable it overrides
is named in one warning line on stderr (values are never printed: they may be secrets). To reach another broker
while a stack runs, point ``YOLOQ_HOME`` at another folder. Processes a stack starts get its values explicitly
(:func:`environ_for`), so for them both sources agree. ``yoloq up`` and the demo read no stack file
(``use_stack_file=False``): they are about to write their own.

Every loaded :class:`Settings` records where each field came from (:attr:`Settings.sources`), and an invalid value
names its source: ``invalid setting YOLOQ_LEASE_TTL_S (from /home/x/.yoloq/stack.env): ...``. Client commands load
through :func:`load_client_settings`, which refuses to guess a broker when there is neither a stack nor a
``YOLOQ_REDIS_URL``.
"""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from infra.stack_file import StackFile, read_stack_file
from routing.egress import Network, networks
from tasks.errors import ConfigError

PREFIX = "YOLOQ_"
ENVIRONMENT = "the environment"  # a source in Settings.sources; the others: a stack file's path, DEFAULT
DEFAULT = "default"
_warned: set[str] = set()  # override warnings already printed by this process (settings load more than once)


def default_home() -> Path:
    """Where yoloq keeps local state (stack file, embedded server data) unless YOLOQ_HOME says otherwise."""
    return Path(os.environ.get(f"{PREFIX}HOME", str(Path.home() / ".yoloq")))


class Settings(BaseModel):
    """Every knob yoloq reads; defaults suit a developer machine, production sets them explicitly."""

    model_config = ConfigDict(extra="forbid", frozen=True)

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
    # Set by `yoloq worker --share`: several jobs share this worker's GPU while their memory fits (docs/placement.md).
    worker_share: bool = False
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
    # Local folders jobs may read from (comma-separated, absolute): empty lets a local caller name any path and the
    # HTTP API none (tasks/locations.py).
    data_roots: str = ""
    # Largest ONNX graph a job may load (MiB). ONNX is protobuf, not a pickle: it needs no trust record, only a cap.
    onnx_max_mib: Annotated[int, Field(ge=1, le=1 << 20)] = 1024
    # Where `yoloq worker` locks its device for its life (infra/device_lock.py), absolute; empty: /tmp/yoloq-locks for
    # real GPUs (host-wide), $YOLOQ_HOME/locks for simulated ones (each stack has its own).
    device_lock_dir: str = ""
    # The name this machine's workers register under (GPU claims gpu:{host}:{index}, node names gpuI@host); empty: the
    # OS host name. For several yoloq hosts on one OS (the host-loss drill) or hosts whose OS names are not unique.
    hostname: Annotated[str, Field(max_length=253, pattern=r"^([A-Za-z0-9][A-Za-z0-9._-]*)?$")] = ""
    # The detect API (docs/serving.md): each tenant's token bucket (requests per second, burst), the largest upload in
    # MiB (the gate cuts a streaming body off there too), the most pixels an image header may declare (millions: a
    # decompression bomb is refused before any decode), how long a request waits for a replica before its 503, and
    # how many requests one API process lets wait at once (each holds a Redis connection; beyond it: 503 at once).
    detect_rate: Annotated[float, Field(gt=0, le=1e6)] = 50.0
    detect_burst: Annotated[int, Field(ge=1, le=1_000_000)] = 100
    detect_max_mib: Annotated[int, Field(ge=1, le=1024)] = 20
    detect_max_mpx: Annotated[float, Field(gt=0, le=1000)] = 40.0
    detect_timeout_s: Annotated[float, Field(gt=0, le=300)] = 30.0
    detect_max_waiting: Annotated[int, Field(ge=1, le=100_000)] = 1024
    # Inside networks webhooks may reach (routing/egress.py), comma-separated CIDRs; empty: public addresses only.
    webhook_allow_private: Annotated[str, Field(max_length=2000)] = ""

    _sources: dict[str, str] = PrivateAttr(default_factory=dict)

    @field_validator("webhook_allow_private")
    @classmethod
    def _networks(cls, value: str) -> str:
        """A typo in an allowed network must fail at load, not open or close egress silently."""
        networks(value)
        return value

    def webhook_networks(self) -> tuple[Network, ...]:
        """The inside networks webhooks may reach (``webhook_allow_private``), parsed."""
        return networks(self.webhook_allow_private)

    @model_validator(mode="before")
    @classmethod
    def _environment(cls, data: Any) -> Any:
        """``YOLOQ_*`` variables fill every field the caller did not pass (the caller's values win). Plain pydantic
        rather than pydantic-settings: that package costs every CLI command ~50 ms of imports for these few lines."""
        if not isinstance(data, dict):
            return data
        env = {
            name: os.environ[PREFIX + name.upper()] for name in cls.model_fields if PREFIX + name.upper() in os.environ
        }
        return {**env, **data}

    def __eq__(self, other: object) -> bool:
        """Equal when the values are, wherever they came from (the recorded sources do not count)."""
        if not isinstance(other, Settings):
            return NotImplemented
        return self.__dict__ == other.__dict__

    def __hash__(self) -> int:
        """Hash of the values, consistent with ``==``."""
        return hash(tuple(self.__dict__.values()))

    def host(self) -> str:
        """This machine's name in GPU claims and worker node names: ``hostname``, else the OS host name."""
        return self.hostname or socket.gethostname()

    @property
    def sources(self) -> dict[str, str]:
        """Where each field came from ("the environment", a stack file's path, "default"), so a command can say
        which file or variable to fix; empty for settings built in code rather than by :func:`load_settings`."""
        return dict(self._sources)


def _check_unknown_keys() -> None:
    known = {PREFIX + name.upper() for name in Settings.model_fields}
    # Names are case-sensitive: a lowercase yoloq_redis_url is reported, not silently read or ignored.
    unknown = sorted(k for k in os.environ if k.upper().startswith(PREFIX) and k not in known)
    if unknown:
        raise ConfigError(f"unknown setting(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")


def _from_stack(stack: StackFile | None) -> dict[str, str]:
    """The settings a live stack file sets (``home`` excluded: the file was found through it)."""
    if stack is None or not stack.live():
        return {}
    names = {PREFIX + name.upper(): name for name in Settings.model_fields if name != "home"}
    return {names[key]: value for key, value in stack.values.items() if key in names}


def _warn_overridden(stack: StackFile, from_file: dict[str, str]) -> None:
    """One stderr line per environment variable the running stack overrides with a different value."""
    for name, value in from_file.items():
        key = PREFIX + name.upper()
        if key in os.environ and os.environ[key] != value and key not in _warned:
            _warned.add(key)
            print(f"yoloq: warning: {key} from the environment is overridden by the running stack's {stack.path} "
                  f"({stack.describe()}); unset it, or set YOLOQ_HOME to another folder to use another stack",
                  file=sys.stderr)  # fmt: skip


def _source_label(source: str) -> str:
    return f"from {source}" if source != DEFAULT else "default"


def load_settings(use_stack_file: bool = True) -> Settings:
    """Read and validate settings (precedence: live stack file, environment, defaults), failing with ConfigError
    that names the setting and its source on anything unknown or invalid."""
    _check_unknown_keys()
    stack = read_stack_file(default_home()) if use_stack_file else None
    from_file = _from_stack(stack)
    sources = {name: DEFAULT for name in Settings.model_fields}
    sources |= {name: ENVIRONMENT for name in Settings.model_fields if PREFIX + name.upper() in os.environ}
    sources |= {name: str(stack.path) for name in from_file if stack is not None}
    try:
        settings = Settings(**from_file)  # init values beat the environment
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        source = sources.get(where, ENVIRONMENT)
        raise ConfigError(
            f"invalid setting {PREFIX}{where.upper()} ({_source_label(source)}): {first['msg']}"
        ) from None
    if stack is not None:
        _warn_overridden(stack, from_file)
    settings._sources = sources
    return settings


def load_client_settings() -> Settings:
    """Settings for client commands (submit, status, jobs ...): with neither a running stack nor YOLOQ_REDIS_URL,
    the default URL would reach whatever Redis answers on 127.0.0.1:6379, so refuse with a one-line ConfigError."""
    settings = load_settings()
    if settings.sources["redis_url"] != DEFAULT:
        return settings
    stack = read_stack_file(settings.home)
    path = settings.home / "stack.env"
    if stack is None:
        found = f"{path} does not exist"
    elif not stack.live():
        found = f"{path} is stale (its {stack.describe()} is no longer running)"
    else:
        found = f"{path} holds no YOLOQ_REDIS_URL"
    raise ConfigError(f"no yoloq stack found: {found} and YOLOQ_REDIS_URL is not set "
                      f'(start one with "yoloq up", or point YOLOQ_REDIS_URL at your broker)')  # fmt: skip


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
