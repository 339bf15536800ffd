"""Real GPU inventory through NVML (``nvidia-ml-py`` provides ``import pynvml``).

NVML is safe in a process that later forks (BRIEF §5), unlike any CUDA call, so the worker launcher uses it and
never touches torch.cuda. ``pynvml`` is imported lazily: machines without the ``gpu`` extra or a driver get an
empty inventory, not an ImportError.
"""

from __future__ import annotations

from typing import Any

from infra.ports import GpuInfo


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _health(pynvml: Any, handle: Any) -> bool:
    """Unhealthy when uncorrectable ECC errors are pending; devices without ECC count as healthy."""
    try:
        pending = pynvml.nvmlDeviceGetRetiredPagesPendingStatus(handle)
    except pynvml.NVMLError:
        return True
    return not bool(pending)


def devices() -> tuple[GpuInfo, ...]:
    """Every device NVML reports, or an empty tuple when NVML or the driver is missing."""
    try:
        import pynvml
    except ImportError:
        return ()
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError:
        return ()
    try:
        out = []
        for index in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            major, minor = pynvml.nvmlDeviceGetCudaComputeCapability(handle)
            out.append(
                GpuInfo(
                    index=index,
                    name=_text(pynvml.nvmlDeviceGetName(handle)),
                    memory_mib=int(pynvml.nvmlDeviceGetMemoryInfo(handle).total) // (1024 * 1024),
                    uuid=_text(pynvml.nvmlDeviceGetUUID(handle)),
                    compute_capability=f"{major}.{minor}",
                    healthy=_health(pynvml, handle),
                )
            )
        return tuple(out)
    finally:
        pynvml.nvmlShutdown()
