"""Real GPU inventory through NVML (``nvidia-ml-py`` provides ``import pynvml``).

NVML is safe in a process that later forks (BRIEF §5), unlike any CUDA call, so the worker launcher uses it and
never touches torch.cuda. ``pynvml`` is imported lazily: machines without the ``gpu`` extra or a driver get an
empty inventory, not an ImportError.

:func:`utilization` is read every claim renewal (ttl/3) by a worker's main process, so it holds one ``nvmlInit`` for
the process's life instead of an init/shutdown pair per reading: an init opens the driver and enumerates every device
(tens to hundreds of ms without persistence mode), and NVML counts inits, so :func:`devices`' own pair and the health
reader's open session (:mod:`infra.nvml_health`) neither close it nor are closed by it.
"""

from __future__ import annotations

import threading
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


class _Session:
    """One NVML init shared by every :func:`utilization` call of this process, opened on first use."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.open = False


_SESSION = _Session()


def utilization(index: int) -> float | None:
    """How busy device ``index`` was over NVML's last sample period (0-1), for the serving scaler; None without
    pynvml, a driver or a reading (MIG instances and some VMs report none)."""
    try:
        import pynvml
    except ImportError:
        return None
    with _SESSION.lock:
        try:
            if not _SESSION.open:
                pynvml.nvmlInit()
                _SESSION.open = True
            rates = pynvml.nvmlDeviceGetUtilizationRates(pynvml.nvmlDeviceGetHandleByIndex(index))
        except pynvml.NVMLError as err:
            if getattr(err, "value", None) == getattr(pynvml, "NVML_ERROR_UNINITIALIZED", 1):
                _SESSION.open = False  # someone shut NVML down under us: init again next time
            return None
    return float(rates.gpu) / 100
