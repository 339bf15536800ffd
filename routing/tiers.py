"""Tiers, GPU-memory size classes and the Celery queue layout (one queue per tier × size class).

A job goes to exactly one queue, ``yoloq.<tier>.<class>``, where ``<class>`` is the smallest size class whose
bound covers the job's memory need. A GPU consumes every queue whose class bound fits in its memory, in strict
order: highest tier first; inside a tier, the largest class it fits first, so that small jobs stay available to
small GPUs while a big GPU takes the big work only it can run.

Class bounds sit slightly below the nominal card sizes because NVML reports usable memory (a "16 GB" T4 reports
15 360 MiB): a card is always able to run the class named after its nominal size.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

QUEUE_PREFIX = "yoloq"


class Tier(StrEnum):
    """Priority tier of a job; declaration order is priority order (first = most urgent)."""

    CRITICAL = "critical"
    HIGH = "high"
    MEDIUM = "medium"
    LOW = "low"
    BATCH = "batch"


TIERS: tuple[Tier, ...] = tuple(Tier)


@dataclass(frozen=True, slots=True)
class SizeClass:
    """A GPU-memory class: jobs needing at most ``bound_mib`` MiB."""

    name: str
    bound_mib: int


SIZE_CLASSES: tuple[SizeClass, ...] = (
    SizeClass("8g", 7_680),
    SizeClass("16g", 15_360),
    SizeClass("24g", 22_528),
    SizeClass("40g", 39_936),
    SizeClass("80g", 80_896),
    SizeClass("141g", 139_264),
)


@dataclass(frozen=True, slots=True)
class Route:
    """Where a job goes: its tier, size class and the Celery queue name."""

    tier: Tier
    size_class: SizeClass
    queue: str


class NoSizeClass(ValueError):
    """The memory need exceeds the largest size class: no GPU yoloq knows could run it."""


def parse_tier(value: str) -> Tier:
    """Turn user text into a Tier, with an error that lists the valid names."""
    try:
        return Tier(value.strip().lower())
    except ValueError:
        shown = repr(value) if len(value) <= 40 else f"{value[:40]!r}… ({len(value)} characters)"
        raise ValueError(f"unknown tier {shown}; expected one of: {', '.join(TIERS)}") from None


def rank(tier: Tier) -> int:
    """0 for the most urgent tier; lower rank wins."""
    return TIERS.index(tier)


def queue_name(tier: Tier, size_class: SizeClass) -> str:
    """The Celery queue (a Redis list) that holds this tier's jobs of this size class."""
    return f"{QUEUE_PREFIX}.{tier.value}.{size_class.name}"


def size_class_for(need_mib: int) -> SizeClass:
    """Smallest class that covers ``need_mib``, so the job may run on the smallest GPU that fits it."""
    if need_mib <= 0:
        raise ValueError(f"memory need must be positive, got {need_mib} MiB")
    for size_class in SIZE_CLASSES:
        if need_mib <= size_class.bound_mib:
            return size_class
    largest = SIZE_CLASSES[-1]
    raise NoSizeClass(f"needs {need_mib} MiB, more than the largest GPU class {largest.name} ({largest.bound_mib} MiB)")


def route(tier: Tier, need_mib: int, gpus: int = 1) -> Route:
    """The queue a job of this tier and memory need (per GPU) is sent to; a gang of ``gpus`` > 1 waits in its tier's
    gang queue, which no worker consumes: the supervisor places it (docs/placement.md)."""
    size_class = size_class_for(need_mib)
    queue = gang_queue(tier) if gpus > 1 else queue_name(tier, size_class)
    return Route(tier=tier, size_class=size_class, queue=queue)


GANG = "gang"


def gang_queue(tier: Tier) -> str:
    """Where a tier's multi-GPU jobs wait for the supervisor to hold K devices of one host for them."""
    return f"{QUEUE_PREFIX}.{tier.value}.{GANG}"


def gang_queues() -> tuple[str, ...]:
    """Every tier's gang queue, highest tier first (declared like the others, consumed by no worker)."""
    return tuple(gang_queue(tier) for tier in TIERS)


DEVICE_PREFIX = f"{QUEUE_PREFIX}-device."


def device_queue(host: str, index: int) -> str:
    """The queue only one device's worker consumes: where the supervisor moves a gang job it placed there."""
    return f"{DEVICE_PREFIX}{host}.{index}"


def classes_fitting(gpu_mib: int) -> tuple[SizeClass, ...]:
    """Size classes a GPU with ``gpu_mib`` usable MiB can run, largest first."""
    return tuple(sc for sc in reversed(SIZE_CLASSES) if sc.bound_mib <= gpu_mib)


def queues_for_gpu(gpu_mib: int) -> tuple[str, ...]:
    """The queues a GPU consumes, in strict consumption order (tier first, then largest class it fits)."""
    fitting = classes_fitting(gpu_mib)
    return tuple(queue_name(tier, sc) for tier in TIERS for sc in fitting)


OPS_QUEUE = "yoloq.ops"  # celery beat's own housekeeping tasks, consumed by the beat process's worker only


def all_queues() -> tuple[str, ...]:
    """Every queue yoloq declares, highest tier first."""
    return tuple(queue_name(tier, sc) for tier in TIERS for sc in reversed(SIZE_CLASSES))


def tier_of_queue(queue: str) -> Tier:
    """Inverse of :func:`queue_name` for the tier part; used to aggregate depth per tier."""
    prefix, tier, _size = queue.split(".", 2)
    if prefix != QUEUE_PREFIX:
        raise ValueError(f"not a yoloq queue: {queue!r}")
    return Tier(tier)
