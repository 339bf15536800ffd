"""yoloq: priority-routed, preemptive scheduling of YOLO jobs on a shared GPU fleet.

``from yoloq import Client, TrainSpec`` is the public API; everything else lives in the top-level packages
``tasks``, ``workers``, ``routing`` and ``infra`` and may change without notice.

Names load on first use (PEP 562): ``yoloq.cli`` and ``yoloq.http`` live in this package, and ``yoloq --help`` must not
pay for the Client's Redis, pydantic and settings imports.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from infra.settings import Settings, load_settings
    from routing.tiers import Tier
    from tasks.errors import (
        BrokerUnavailable,
        Cancelled,
        CheckpointError,
        ConfigError,
        GpuUnavailable,
        InvalidTransition,
        JobNotFound,
        ModelNotFound,
        Preempted,
        RateLimited,
        ServiceError,
        ServingUnavailable,
        SpecRejected,
        StorageError,
        UploadRejected,
        YoloqError,
    )
    from tasks.records import Attempt, Event, JobRecord
    from tasks.specs import ExportSpec, InferSpec, JobSpec, ProbeSpec, ServeSpec, TrainSpec, parse_spec
    from tasks.states import JobState
    from yoloq.client import Client, JobHandle

__version__ = "0.1.0"

_ERRORS = ("BrokerUnavailable", "Cancelled", "CheckpointError", "ConfigError", "GpuUnavailable", "InvalidTransition",
           "JobNotFound", "ModelNotFound", "Preempted", "RateLimited", "ServiceError", "ServingUnavailable",
           "SpecRejected", "StorageError", "UploadRejected", "YoloqError")  # fmt: skip
_HOME: dict[str, str] = {
    **dict.fromkeys(("Settings", "load_settings"), "infra.settings"),
    "Tier": "routing.tiers",
    **dict.fromkeys(_ERRORS, "tasks.errors"),
    **dict.fromkeys(("Attempt", "Event", "JobRecord"), "tasks.records"),
    **dict.fromkeys(
        ("ExportSpec", "InferSpec", "JobSpec", "ProbeSpec", "ServeSpec", "TrainSpec", "parse_spec"), "tasks.specs"
    ),
    "JobState": "tasks.states",
    **dict.fromkeys(("Client", "JobHandle"), "yoloq.client"),
}

__all__ = [
    "Attempt",
    "BrokerUnavailable",
    "Cancelled",
    "CheckpointError",
    "Client",
    "ConfigError",
    "Event",
    "ExportSpec",
    "GpuUnavailable",
    "InferSpec",
    "InvalidTransition",
    "JobHandle",
    "JobNotFound",
    "JobRecord",
    "JobSpec",
    "JobState",
    "ModelNotFound",
    "Preempted",
    "ProbeSpec",
    "RateLimited",
    "ServeSpec",
    "ServiceError",
    "ServingUnavailable",
    "Settings",
    "SpecRejected",
    "StorageError",
    "Tier",
    "TrainSpec",
    "UploadRejected",
    "YoloqError",
    "__version__",
    "load_settings",
    "parse_spec",
]


def __getattr__(name: str) -> Any:
    """Import a public name from its home module on first use, then keep it here."""
    if name not in _HOME:
        raise AttributeError(f"module 'yoloq' has no attribute {name!r}")
    value = getattr(importlib.import_module(_HOME[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    """The public names, loaded or not."""
    return sorted({*globals(), *__all__})
