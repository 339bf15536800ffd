"""The GPU inventory of this host: real devices through NVML, or a simulated list from ``YOLOQ_GPUS``.

``YOLOQ_GPUS="0:T4:16,1:A100:40"`` declares device 0 as a 16 GB T4 and device 1 as a 40 GB A100, so machines
without GPUs run the whole scheduler (placement, workers, preemption) unchanged. Simulated memory is nominal GB,
converted to MiB (16 GB → 16 384 MiB), which fits the 16g size class as a real T4 (15 360 MiB usable) does.
"""

from __future__ import annotations

import math

from infra.ports import GpuInfo
from tasks.errors import ConfigError, GpuUnavailable


def parse_simulated(text: str) -> tuple[GpuInfo, ...]:
    """Parse ``index:model:GB`` items; any malformed item is a ConfigError naming it."""
    gpus: list[GpuInfo] = []
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        bits = item.split(":")
        try:
            index, name, gb = int(bits[0]), bits[1].strip(), float(bits[2])
        except (IndexError, ValueError):
            raise ConfigError(f"YOLOQ_GPUS item {item!r} is not index:model:GB (e.g. 0:T4:16)") from None
        if len(bits) != 3 or index < 0 or not name or not math.isfinite(gb) or gb * 1024 < 1:
            raise ConfigError(f"YOLOQ_GPUS item {item!r} is not index:model:GB (e.g. 0:T4:16)")
        gpus.append(GpuInfo(index, name, int(gb * 1024), uuid=f"SIM-{index}-{name}", simulated=True))
    if len({g.index for g in gpus}) != len(gpus):
        raise ConfigError(f"YOLOQ_GPUS repeats a device index: {text!r}")
    return tuple(sorted(gpus, key=lambda g: g.index))


def discover(simulated: str) -> tuple[GpuInfo, ...]:
    """The simulated inventory when configured, else the real one from NVML (empty without a driver)."""
    if simulated.strip():
        return parse_simulated(simulated)
    from infra import nvml

    return nvml.devices()


def device(gpus: tuple[GpuInfo, ...], index: int) -> GpuInfo:
    """The device with this index, or GpuUnavailable listing what exists."""
    for gpu in gpus:
        if gpu.index == index:
            return gpu
    have = ", ".join(str(g.index) for g in gpus) or "none"
    raise GpuUnavailable(f"no GPU {index} on this host (devices: {have}; simulate with YOLOQ_GPUS=0:T4:16)")
