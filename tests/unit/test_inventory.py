"""infra/inventory.py: the simulated inventory grammar (YOLOQ_GPUS) and device lookup."""

from __future__ import annotations

import pytest

from infra.inventory import device, discover, parse_simulated
from infra.ports import GpuInfo
from tasks.errors import ConfigError, GpuUnavailable, YoloqError

pytestmark = pytest.mark.unit


def _triples(gpus: tuple[GpuInfo, ...]) -> list[tuple[int, str, int]]:
    return [(g.index, g.name, g.memory_mib) for g in gpus]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0:T4:16,1:A100:40", [(0, "T4", 16_384), (1, "A100", 40_960)]),
        (" 0 : T4 : 16 , 1:A100:40 ", [(0, "T4", 16_384), (1, "A100", 40_960)]),
        ("\t0:T4:16,\n1:A100:40\n", [(0, "T4", 16_384), (1, "A100", 40_960)]),
        ("1:A100:40,0:T4:16", [(0, "T4", 16_384), (1, "A100", 40_960)]),  # sorted by index
        ("0:T4:16,", [(0, "T4", 16_384)]),  # trailing comma
        (",0:T4:16,,", [(0, "T4", 16_384)]),
        ("0:L4:24", [(0, "L4", 24_576)]),
        ("0:T4:15.5", [(0, "T4", 15_872)]),  # fractional GB
        ("3:H100:80,7:H200:141", [(3, "H100", 81_920), (7, "H200", 144_384)]),  # indices need not be dense
        ("0:RTX 4090:24", [(0, "RTX 4090", 24_576)]),
        ("", []),
        ("   ", []),
        (" , ,", []),
    ],
)
def test_parse_simulated(text: str, expected: list[tuple[int, str, int]]) -> None:
    assert _triples(parse_simulated(text)) == expected


def test_simulated_devices_are_marked_and_named() -> None:
    gpus = parse_simulated("0:T4:16,1:A100:40")
    assert all(g.simulated and g.healthy for g in gpus)
    assert [g.uuid for g in gpus] == ["SIM-0-T4", "SIM-1-A100"]
    assert gpus[0].as_dict() == {
        "index": 0,
        "name": "T4",
        "memory_mib": 16_384,
        "uuid": "SIM-0-T4",
        "compute_capability": "",
        "healthy": True,
        "simulated": True,
    }


@pytest.mark.parametrize(
    "item",
    [
        "0",
        "0:T4",
        "T4:16",
        "x:T4:16",
        "0.5:T4:16",
        "0:T4:big",
        "0:T4:16GB",
        "0:T4:16:9",
        "-1:T4:16",
        "0::16",
        "0: :16",
        "0:T4:0",
        "0:T4:-8",
        ":T4:16",
    ],
)
def test_malformed_item_is_a_config_error_naming_it(item: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_simulated(f"1:A100:40,{item}")
    message = str(info.value)
    assert message.startswith("YOLOQ_GPUS item ")
    assert repr(item.strip()) in message
    assert "index:model:GB" in message
    assert isinstance(info.value, YoloqError)


@pytest.mark.parametrize("text", ["0:T4:16,0:A100:40", "1:T4:16,0:L4:24,1:T4:16", " 2:A:8 , 2:A:8 "])
def test_duplicate_index_is_a_config_error(text: str) -> None:
    with pytest.raises(ConfigError, match="repeats a device index"):
        parse_simulated(text)


def test_discover_uses_the_simulated_inventory_when_configured() -> None:
    gpus = discover(" 0:L4:24 ")
    assert _triples(gpus) == [(0, "L4", 24_576)]
    assert gpus[0].simulated


def test_discover_propagates_config_errors() -> None:
    with pytest.raises(ConfigError):
        discover("0:T4")


# --- device ---------------------------------------------------------------------------------------------------------

GPUS = parse_simulated("0:T4:16,1:A100:40,4:H100:80")


@pytest.mark.parametrize(("index", "name"), [(0, "T4"), (1, "A100"), (4, "H100")])
def test_device_lookup(index: int, name: str) -> None:
    gpu = device(GPUS, index)
    assert (gpu.index, gpu.name) == (index, name)


@pytest.mark.parametrize("index", [2, 3, 5, -1])
def test_missing_device_names_what_exists(index: int) -> None:
    with pytest.raises(GpuUnavailable) as info:
        device(GPUS, index)
    assert str(info.value).startswith(f"no GPU {index} on this host (devices: 0, 1, 4;")
    assert "YOLOQ_GPUS" in str(info.value)


def test_no_devices_at_all() -> None:
    with pytest.raises(GpuUnavailable, match=r"no GPU 0 on this host \(devices: none;"):
        device((), 0)
