"""The real inventory: what yoloq reads from NVML is complete and agrees with NVML read directly."""

from __future__ import annotations

from bench.gpu.inventory import against_nvml, entry_problems
from bench.gpu.nvml import Nvml
from infra import nvml as yoloq_nvml
from infra.inventory import discover
from tests.gpu.device import marks

pytestmark = marks()


def test_every_device_has_name_memory_uuid_capability_and_health(nvml: Nvml) -> None:
    # Given the devices yoloq's adapter reports
    gpus = yoloq_nvml.devices()

    # Then each one is complete, real, and the same as NVML says directly
    assert len(gpus) == nvml.count() > 0
    for gpu in gpus:
        assert entry_problems(gpu.as_dict(), real=True) == []
        agreement = against_nvml(gpu.as_dict(), nvml.device(gpu.index))
        assert agreement is not None and all(agreement.values()), agreement


def test_no_simulation_configured_means_the_nvml_inventory() -> None:
    assert discover("") == yoloq_nvml.devices()
