"""NVML readings for the GPU validation: the device's facts, who holds a CUDA context, memory used over time.

NVML never creates a CUDA context (BRIEF §5: safe before a fork), so the validation driver reads the GPU this way and
never through torch. Every reading degrades to ``None`` where NVML or its driver is missing (the CPU dry run): the
step then records "not measured" instead of failing.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

MIB = 1024 * 1024


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class Nvml:
    """One NVML session for the driver process (init once, shut down at exit)."""

    def __init__(self) -> None:
        self.lib: Any = None
        self.why = ""
        try:
            import pynvml

            pynvml.nvmlInit()
        except Exception as err:  # ImportError, NVMLError_LibraryNotFound, DriverNotLoaded ...
            self.why = f"NVML unavailable: {type(err).__name__}: {err}"
            return
        self.lib = pynvml

    @property
    def ok(self) -> bool:
        """True when NVML answers on this machine."""
        return self.lib is not None

    def close(self) -> None:
        """Shut NVML down (idempotent)."""
        if self.lib is not None:
            with contextlib.suppress(Exception):
                self.lib.nvmlShutdown()
            self.lib = None

    def count(self) -> int:
        """Devices NVML sees (0 without NVML)."""
        return int(self.lib.nvmlDeviceGetCount()) if self.ok else 0

    def _handle(self, index: int) -> Any:
        return self.lib.nvmlDeviceGetHandleByIndex(index)

    def _try(self, call: str, *args: Any) -> Any:
        """An optional reading (temperature, power, ECC ...): None where the device does not support it."""
        try:
            return getattr(self.lib, call)(*args)
        except Exception:  # NVMLError_NotSupported and friends
            return None

    def device(self, index: int = 0) -> dict[str, Any] | None:
        """Everything the issue asks NVML for, straight from the driver (the reference for ``status --json``)."""
        if not self.ok:
            return None
        handle, lib = self._handle(index), self.lib
        mem = lib.nvmlDeviceGetMemoryInfo(handle)
        major, minor = lib.nvmlDeviceGetCudaComputeCapability(handle)
        mig = self._try("nvmlDeviceGetMigMode", handle)
        ecc = self._try("nvmlDeviceGetEccMode", handle)
        power = self._try("nvmlDeviceGetPowerUsage", handle)
        cuda = self._try("nvmlSystemGetCudaDriverVersion")
        return {
            "index": index, "name": _text(lib.nvmlDeviceGetName(handle)), "uuid": _text(lib.nvmlDeviceGetUUID(handle)),
            "memory_total_mib": int(mem.total) // MIB, "memory_used_mib": int(mem.used) // MIB,
            "compute_capability": f"{major}.{minor}", "driver": _text(lib.nvmlSystemGetDriverVersion()),
            "cuda_driver": f"{cuda // 1000}.{cuda % 1000 // 10}" if cuda else None,
            "mig_mode": list(mig) if mig is not None else None, "ecc_mode": list(ecc) if ecc is not None else None,
            "temperature_c": self._try("nvmlDeviceGetTemperature", handle, 0),
            "power_w": round(power / 1000, 1) if power is not None else None,
            "retired_pages_pending": self._try("nvmlDeviceGetRetiredPagesPendingStatus", handle),
            "processes": self.processes(index),
        }  # fmt: skip

    def used_mib(self, index: int = 0) -> int | None:
        """Memory in use on the device (all processes), MiB."""
        if not self.ok:
            return None
        return int(self.lib.nvmlDeviceGetMemoryInfo(self._handle(index)).used) // MIB

    def processes(self, index: int = 0) -> dict[int, int] | None:
        """pid → MiB of every process holding a CUDA context on the device (compute and graphics)."""
        if not self.ok:
            return None
        handle, out = self._handle(index), {}
        for call in ("nvmlDeviceGetComputeRunningProcesses", "nvmlDeviceGetGraphicsRunningProcesses"):
            for proc in self._try(call, handle) or []:
                used = proc.usedGpuMemory
                out[int(proc.pid)] = int(used) // MIB if isinstance(used, int) else 0
        return out


def libcuda_mapped(pid: int) -> bool | None:
    """Whether the process has the CUDA driver library loaded (a hint of CUDA use); None if it is gone."""
    try:
        return "libcuda.so" in Path(f"/proc/{pid}/maps").read_text()
    except OSError:
        return None


class PeakSampler:
    """Samples device memory (and one pid's) every ``interval_s`` in a thread; keeps the peaks."""

    def __init__(self, nvml: Nvml, index: int = 0, pid: int | None = None, interval_s: float = 0.05) -> None:
        self.nvml, self.index, self.pid, self.interval_s = nvml, index, pid, interval_s
        self.device_peak_mib: int | None = None
        self.pid_peak_mib: int | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="nvml-peak", daemon=True)

    def _sample(self) -> None:
        used = self.nvml.used_mib(self.index)
        if used is not None:
            self.device_peak_mib = max(used, self.device_peak_mib or 0)
        if self.pid is not None and (procs := self.nvml.processes(self.index)) and self.pid in procs:
            self.pid_peak_mib = max(procs[self.pid], self.pid_peak_mib or 0)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._sample()

    @contextlib.contextmanager
    def running(self) -> Iterator[PeakSampler]:
        """Sample while the block runs (no-op without NVML)."""
        if self.nvml.ok:
            self._thread.start()
        try:
            yield self
        finally:
            self._stop.set()
            if self._thread.is_alive():
                self._thread.join(2)


def wait_released(nvml: Nvml, pid: int, index: int = 0, timeout_s: float = 120, poll_s: float = 0.005) -> float | None:
    """time.time() at which ``pid`` no longer holds memory on the device; None without NVML."""
    if not nvml.ok:
        return None
    deadline = time.monotonic() + timeout_s
    while (procs := nvml.processes(index)) is not None and pid in procs:
        if time.monotonic() > deadline:
            raise TimeoutError(f"pid {pid} still holds GPU memory {timeout_s:.0f}s later")
        time.sleep(poll_s)
    return time.time()
