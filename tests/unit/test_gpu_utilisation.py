"""GPU utilisation feeds the serving scaler (issue 16 item 6): NVML's reading (infra/nvml.py), the claim heartbeat
that carries it (workers/presence.py) and the scaler that averages it over a deployment's replicas
(workers/serving.py) and asks for one more replica above 70 %."""

from __future__ import annotations

import sys
import types
from pathlib import Path
from typing import Any

import pytest

from infra import nvml
from infra.presence import Renewal
from infra.settings import Settings
from tests.scaler_fakes import Fakes, deployment_of, make_scaler
from tests.unit.test_gpu_health import NvmlFailure
from workers.presence import ClaimKeeper
from workers.serving import replicas_gpu_util

pytestmark = pytest.mark.unit


class FakeNvml:
    """Enough of pynvml for :func:`infra.nvml.utilization`; ``errors`` maps a call to the NVML code it fails with."""

    NVMLError = NvmlFailure
    NVML_ERROR_UNINITIALIZED, NVML_ERROR_NOT_SUPPORTED, NVML_ERROR_DRIVER_NOT_LOADED = 1, 3, 9

    def __init__(self, busy: dict[int, int], **errors: int) -> None:
        self.busy, self.errors, self.inits, self.shutdowns = busy, errors, 0, 0

    def _fail(self, call: str) -> None:
        if (code := self.errors.pop(call, None)) is not None:
            raise NvmlFailure(code)

    def nvmlInit(self) -> None:
        self._fail("init")
        self.inits += 1

    def nvmlShutdown(self) -> None:
        self.shutdowns += 1

    def nvmlDeviceGetHandleByIndex(self, index: int) -> int:
        self._fail("handle")
        return index

    def nvmlDeviceGetUtilizationRates(self, handle: int) -> Any:
        self._fail("rates")
        return types.SimpleNamespace(gpu=self.busy[handle], memory=10)


@pytest.fixture
def fake_nvml(monkeypatch: pytest.MonkeyPatch) -> FakeNvml:
    """A fresh NVML session over a fake pynvml whose device 0 is 63 % busy and device 1 idle."""
    monkeypatch.setattr(nvml, "_SESSION", nvml._Session())
    fake = FakeNvml({0: 63, 1: 0})
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    return fake


def test_utilisation_is_nvmls_gpu_rate_as_a_fraction_read_under_one_init(fake_nvml: FakeNvml) -> None:
    assert [nvml.utilization(0), nvml.utilization(1), nvml.utilization(0)] == [0.63, 0.0, 0.63]
    assert (fake_nvml.inits, fake_nvml.shutdowns) == (1, 0)


def test_no_figure_without_pynvml_or_a_driver_and_the_init_is_retried(
    monkeypatch: pytest.MonkeyPatch, fake_nvml: FakeNvml
) -> None:
    fake_nvml.errors["init"] = FakeNvml.NVML_ERROR_DRIVER_NOT_LOADED
    assert nvml.utilization(0) is None
    assert nvml.utilization(0) == 0.63 and fake_nvml.inits == 1
    monkeypatch.setitem(sys.modules, "pynvml", None)
    assert nvml.utilization(0) is None


def test_an_unsupported_reading_is_no_figure_and_keeps_the_session(fake_nvml: FakeNvml) -> None:
    # Given a MIG instance or a VM that reports no utilisation
    fake_nvml.errors["rates"] = FakeNvml.NVML_ERROR_NOT_SUPPORTED
    assert nvml.utilization(0) is None
    assert nvml.utilization(0) == 0.63 and fake_nvml.inits == 1


def test_a_session_shut_down_under_it_is_opened_again(fake_nvml: FakeNvml) -> None:
    assert nvml.utilization(0) == 0.63
    fake_nvml.errors["handle"] = FakeNvml.NVML_ERROR_UNINITIALIZED
    assert nvml.utilization(0) is None
    assert nvml.utilization(0) == 0.63 and fake_nvml.inits == 2


class FakeClaims:
    """GpuClaims.renew as the keeper sees it: each renewal's record, copied."""

    def __init__(self) -> None:
        self.renewals: list[dict[str, Any]] = []

    def renew(self, host: str, index: int, token: str, record: dict[str, Any], ttl_s: float) -> Renewal:
        self.renewals.append(dict(record))
        return Renewal.RENEWED


class Reader:
    """A utilisation reader that answers ``figures`` in turn and remembers which device it was asked about."""

    def __init__(self, *figures: float | None) -> None:
        self.figures, self.asked = list(figures), list[int]()

    def __call__(self, index: int) -> float | None:
        self.asked.append(index)
        return self.figures.pop(0) if len(self.figures) > 1 else self.figures[0]


def _keeper(settings: Settings, **kwargs: Any) -> tuple[ClaimKeeper, FakeClaims]:
    claims = FakeClaims()
    record = {"node": "gpu2@h", "host": "h", "pid": 1}
    return ClaimKeeper(claims, settings, ("h", 2, "tok"), record, **kwargs), claims  # type: ignore[arg-type]


def test_each_renewal_carries_the_devices_utilisation_rounded(tmp_path: Path) -> None:
    reader = Reader(0.876, 0.1, None)
    keeper, claims = _keeper(Settings(home=tmp_path), utilization=reader)
    for _ in range(3):
        assert keeper.tick() is Renewal.RENEWED
    # a figure that became unreadable is written as null: the claim must not keep the last one
    assert [r["utilization"] for r in claims.renewals] == [0.88, 0.1, None] and reader.asked == [2, 2, 2]


def test_a_real_gpu_reads_nvml_and_a_simulated_one_reports_nothing(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(nvml, "utilization", reader := Reader(0.5))
    real, real_claims = _keeper(Settings(home=tmp_path))
    real.tick()
    assert real_claims.renewals[-1]["utilization"] == 0.5 and reader.asked == [2]
    simulated, sim_claims = _keeper(Settings(home=tmp_path, gpus="2:T4:16"))
    simulated.tick()
    assert "utilization" not in sim_claims.renewals[-1] and reader.asked == [2]


def test_a_reader_that_raises_never_costs_the_renewal(tmp_path: Path) -> None:
    def broken(index: int) -> float:
        raise AttributeError("old pynvml without nvmlDeviceGetUtilizationRates")

    keeper, claims = _keeper(Settings(home=tmp_path), utilization=broken)
    assert keeper.tick() is Renewal.RENEWED
    assert len(claims.renewals) == 1 and "utilization" not in claims.renewals[0]


REPLICAS = [
    {"job_id": "j1", "worker": "gpu0@a", "state": "ready"},
    {"job_id": "j2", "worker": "gpu1@a", "state": "ready"},
]


@pytest.mark.parametrize(
    ("replicas", "claims", "expected"),
    [
        (REPLICAS, [{"node": "gpu0@a", "utilization": 0.9}, {"node": "gpu1@a", "utilization": 0.5}], 0.7),
        # other workers' GPUs (another deployment's replicas, training) do not count
        (REPLICAS, [{"node": "gpu0@a", "utilization": 0.2}, {"node": "gpu7@b", "utilization": 1.0}], 0.2),
        # a claim without a figure (simulated, MIG, unreadable: null) is left out of the mean, not read as 0
        (REPLICAS, [{"node": "gpu0@a", "utilization": 0.8}, {"node": "gpu1@a", "utilization": None}], 0.8),
        (REPLICAS, [{"node": "gpu0@a"}, {"node": "gpu1@a", "utilization": None}], None),
        (REPLICAS, [{"node": "gpu0@a", "utilization": True}, {"node": "gpu1@a", "utilization": "0.9"}], None),
        (REPLICAS, [{"node": "gpu0@a", "utilization": 1}], 1.0),
        ([], [{"node": "gpu0@a", "utilization": 0.9}], None),
        ([{"job_id": "p", "worker": None}], [{"node": "None", "utilization": 0.9}], None),  # a replica not yet placed
    ],
)
def test_the_deployments_gpu_figure_is_the_mean_over_its_replicas_workers(
    replicas: list[dict[str, Any]], claims: list[dict[str, Any]], expected: float | None
) -> None:
    assert replicas_gpu_util(replicas, claims) == (None if expected is None else pytest.approx(expected))


def test_replicas_over_70_percent_busy_ask_for_one_more_and_only_theirs_count(monkeypatch: pytest.MonkeyPatch) -> None:
    # Given two deployments of two replicas each, no traffic figure: a@prod's GPUs are 90 % busy, b@prod's 50 %
    replicas = {
        "a@prod": REPLICAS,
        "b@prod": [{"job_id": f"j{i}", "worker": f"gpu{i}@a", "state": "ready"} for i in (2, 3)],
    }
    claims = [{"node": f"gpu{i}@a", "utilization": u} for i, u in enumerate((0.9, 0.9, 0.5, 0.5))]
    fakes, said = Fakes([deployment_of("a@prod"), deployment_of("b@prod")], replicas, claims), list[str]()
    # When the scaler ticks
    make_scaler(monkeypatch, fakes, said).tick(1000.0)
    # Then a@prod goes to 3 replicas because of its GPUs, b@prod stays at 2, and the claims were read once
    assert fakes.deployments["a@prod"].replicas == 3 and fakes.scaled == [("a@prod", 3)]
    assert said == ["a@prod: scale out to 3: GPU 90% busy over 70%"] and fakes.deployments["b@prod"].replicas == 2
    assert fakes.claim_reads == 1


def test_without_a_gpu_figure_the_other_signals_decide_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    # Given a simulated fleet: the replicas' claims carry no utilisation
    fakes = Fakes([deployment_of("a@prod")], {"a@prod": REPLICAS}, [{"node": "gpu0@a"}, {"node": "gpu1@a"}])
    scaler = make_scaler(monkeypatch, fakes, [])
    scaler.tick(1000.0)
    assert fakes.deployments["a@prod"].replicas == 2 and fakes.scaled == []
    # ... and a deployment with no live replica does not read the claims at all
    fakes.replicas = {}
    scaler.tick(1001.0)
    assert fakes.claim_reads == 1


def test_a_warming_deployment_is_neither_grown_on_its_cold_latency_nor_shrunk(monkeypatch: pytest.MonkeyPatch) -> None:
    # Given a deployment of 2 (minimum 0) whose second replica is still warming, its GPUs busy and nothing answered
    warming = [REPLICAS[0], {**REPLICAS[1], "state": "warming"}]
    claims = [{"node": "gpu0@a", "utilization": 0.95}, {"node": "gpu1@a", "utilization": 0.95}]
    deployment = deployment_of("a@prod").model_copy(update={"min_replicas": 0})
    fakes, said = Fakes([deployment], {"a@prod": warming}, claims), list[str]()
    scaler = make_scaler(monkeypatch, fakes, said)
    # When the scaler ticks well past its down delay
    for now in (1000.0, 1100.0, 1200.0):
        scaler.tick(now)
    # Then it neither scales out on the busy GPUs nor in on the silence: it waits for the cold start
    assert fakes.deployments["a@prod"].replicas == 2 and fakes.scaled == [] and said == []


def test_a_deployment_stopped_during_the_tick_is_left_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    # Given the scaler read a@prod, then `yoloq serve a@prod --stop` dropped it before the scaler acted
    fakes = Fakes([deployment_of("a@prod")], {"a@prod": REPLICAS}, [])
    scaler = make_scaler(monkeypatch, fakes, [])
    monkeypatch.setattr(fakes, "get", lambda alias: None)
    fakes.jobs["a@prod"] = 0  # its replica jobs were cancelled
    # When the scaler ticks, Then it neither writes the deployment back nor starts replicas for it
    scaler.tick(1000.0)
    assert fakes.scaled == []
