"""yoloq: priority-routed, preemptive scheduling of YOLO jobs on a shared GPU fleet.

``from yoloq import Client, TrainSpec`` is the public API; everything else lives in the top-level packages
``tasks``, ``workers``, ``routing`` and ``infra`` and may change without notice.
"""

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
    Preempted,
    ServiceError,
    SpecRejected,
    StorageError,
    YoloqError,
)
from tasks.records import Attempt, Event, JobRecord
from tasks.specs import ExportSpec, InferSpec, JobSpec, ProbeSpec, TrainSpec, parse_spec
from tasks.states import JobState
from yoloq.client import Client, JobHandle

__version__ = "0.1.0"

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
    "Preempted",
    "ProbeSpec",
    "ServiceError",
    "Settings",
    "SpecRejected",
    "StorageError",
    "Tier",
    "TrainSpec",
    "YoloqError",
    "__version__",
    "load_settings",
    "parse_spec",
]
