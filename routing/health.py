"""Whether a GPU is healthy enough to take new work, decided from one reading (pure).

A reading is what a worker reports for its device (NVML, or a simulated device's injected values). Any of these
makes the device unhealthy, and the health check cordons it:

- NVML could not read the device at all (``nvml_error``: e.g. "GPU is lost", XID 79);
- uncorrectable ECC errors since the driver loaded (``ecc_uncorrected`` above ``max_uncorrected_ecc``);
- retired pages waiting for a reset (``retired_pages_pending``) or a failed row remap (``remapped_rows_failure``);
- a hardware XID since the last reading (``xids`` in :data:`HARDWARE_XIDS`; application faults such as XID 13,
  31 or 43 are the job's fault, not the device's, and are ignored);
- a temperature at or above ``max_temperature_c``.

Fields a device does not support are ``None`` and count as healthy.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

# NVIDIA's XID catalogue: memory (48 DBE, 63/64 row remapping, 92 SBE rate, 94/95 contained/uncontained ECC),
# bus and firmware (61/62 internal microcontroller, 74 NVLink, 79 fallen off the bus, 119/120 GSP).
HARDWARE_XIDS = frozenset({48, 61, 62, 63, 64, 74, 79, 92, 94, 95, 119, 120})


class HealthLimits(BaseModel):
    """Thresholds of the health check (configurable in the schedule file's ``builtin.gpu_health``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_temperature_c: Annotated[float, Field(ge=40, le=130)] = 90.0
    max_uncorrected_ecc: Annotated[int, Field(ge=0)] = 0


class GpuReading(BaseModel):
    """One device's health as its worker read it; unknown fields are kept out (a newer worker may send more)."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    temperature_c: float | None = None
    ecc_uncorrected: int | None = None
    retired_pages_pending: bool | None = None
    remapped_rows_failure: bool | None = None
    xids: tuple[int, ...] = ()
    nvml_error: str | None = None


def verdict(reading: GpuReading, limits: HealthLimits) -> list[str]:
    """Every reason the device is unhealthy, in a fixed order; an empty list means healthy."""
    reasons: list[str] = []
    if reading.nvml_error:
        reasons.append(f"NVML cannot read the device: {reading.nvml_error}")
    if reading.ecc_uncorrected is not None and reading.ecc_uncorrected > limits.max_uncorrected_ecc:
        reasons.append(f"{reading.ecc_uncorrected} uncorrectable ECC errors")
    if reading.retired_pages_pending:
        reasons.append("retired memory pages pending a reset")
    if reading.remapped_rows_failure:
        reasons.append("memory row remapping failed")
    hardware = sorted({x for x in reading.xids if x in HARDWARE_XIDS})
    if hardware:
        reasons.append("hardware XID " + ", ".join(str(x) for x in hardware))
    if reading.temperature_c is not None and reading.temperature_c >= limits.max_temperature_c:
        reasons.append(f"temperature {reading.temperature_c:g} °C ≥ {limits.max_temperature_c:g} °C")
    return reasons
