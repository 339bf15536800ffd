"""A worker's reading of its own device's health: NVML for real GPUs, injected values for simulated ones.

The reading's fields are those of :class:`routing.health.GpuReading` (temperature, uncorrectable ECC errors,
retired pages pending, row-remap failure, XIDs since the last reading, or the NVML error that prevented reading).
NVML is safe in a worker's main process (BRIEF §5: unlike CUDA, it survives the pool's forks); ``pynvml`` is imported
lazily as in :mod:`infra.nvml`. XIDs arrive only through an NVML event set, which this reader keeps open between
readings and drains without waiting.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from infra.cordon import CordonStore

HEALTHY: dict[str, Any] = {
    "temperature_c": 40.0, "ecc_uncorrected": 0, "retired_pages_pending": False, "remapped_rows_failure": False,
    "xids": [],
}  # fmt: skip


class SimulatedHealth:
    """A ``YOLOQ_GPUS`` device: healthy, unless a drill injected a fault for it in Redis."""

    def __init__(self, cordons: CordonStore, host: str, index: int) -> None:
        self._cordons, self._host, self._index = cordons, host, index

    def read(self) -> dict[str, Any]:
        """Healthy values overlaid with the injected fault."""
        return {**HEALTHY, **self._cordons.injected_fault(self._host, self._index)}


class NvmlHealth:
    """One real device through NVML, initialised on first use and kept open for its XID event set."""

    def __init__(self, index: int) -> None:
        self.index = index
        self._nvml: Any = None
        self._handle: Any = None
        self._events: Any = None

    def read(self) -> dict[str, Any]:
        """The device's health now; an NVML failure becomes ``nvml_error`` (a lost GPU reads as unhealthy)."""
        try:
            import pynvml
        except ImportError:
            return {"nvml_error": "nvidia-ml-py is not installed in this worker"}
        try:
            return self._read(pynvml)
        except pynvml.NVMLError as err:
            self._handle = None  # re-open next time: the device may come back after a reset
            return {"nvml_error": str(err)}

    def _open(self, nv: Any) -> None:
        nv.nvmlInit()
        self._nvml, self._handle = nv, nv.nvmlDeviceGetHandleByIndex(self.index)
        try:
            self._events = nv.nvmlEventSetCreate()
            nv.nvmlDeviceRegisterEvents(self._handle, nv.nvmlEventTypeXidCriticalError, self._events)
        except nv.NVMLError:
            self._events = None  # no event support (some VMs and MIG): XIDs go unread, the rest still counts

    def _read(self, nv: Any) -> dict[str, Any]:
        if self._handle is None:
            self._open(nv)
        handle = self._handle
        remapped = _optional(nv, lambda: nv.nvmlDeviceGetRemappedRows(handle))
        pending = _optional(nv, lambda: nv.nvmlDeviceGetRetiredPagesPendingStatus(handle))
        return {
            "temperature_c": float(nv.nvmlDeviceGetTemperature(handle, nv.NVML_TEMPERATURE_GPU)),
            "ecc_uncorrected": _optional(nv, lambda: int(nv.nvmlDeviceGetTotalEccErrors(
                handle, nv.NVML_MEMORY_ERROR_TYPE_UNCORRECTED, nv.NVML_VOLATILE_ECC))),
            "retired_pages_pending": None if pending is None else bool(pending),
            "remapped_rows_failure": None if remapped is None else bool(remapped[3]),
            "xids": self._drain_xids(nv),
        }  # fmt: skip

    def _drain_xids(self, nv: Any) -> list[int]:
        """XIDs of this device reported since the last reading (the wait returns at once when there are none)."""
        xids: list[int] = []
        while self._events is not None and len(xids) < 100:
            try:
                data = nv.nvmlEventSetWait_v2(self._events, 0)
            except nv.NVMLError as err:
                if getattr(err, "value", None) != nv.NVML_ERROR_TIMEOUT:
                    raise
                break
            if data.eventType == nv.nvmlEventTypeXidCriticalError:
                xids.append(int(data.eventData))
        return xids


def _optional(nv: Any, call: Callable[[], Any]) -> Any:
    """A reading the device may not support (no ECC on consumer cards, no row remapping before Ampere): None."""
    try:
        return call()
    except nv.NVMLError as err:
        unsupported = {nv.NVML_ERROR_NOT_SUPPORTED, nv.NVML_ERROR_NO_PERMISSION, nv.NVML_ERROR_FUNCTION_NOT_FOUND}
        if getattr(err, "value", None) in unsupported:
            return None
        raise
