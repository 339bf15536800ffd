"""GPU health: the verdict (routing/health.py), the NVML and simulated readers, and the worker's cordon watch."""

from __future__ import annotations

import sys
import types
from typing import Any

import pytest

from infra.nvml_health import HEALTHY, NvmlHealth, SimulatedHealth
from routing.health import GpuReading, HealthLimits, verdict
from tasks.errors import BrokerUnavailable, YoloqError
from workers.cordon import CordonWatch
from yoloq.cli.beat import parse_device

pytestmark = pytest.mark.unit

LIMITS = HealthLimits()


@pytest.mark.parametrize(
    ("reading", "reasons"),
    [
        (HEALTHY, []),
        ({}, []),  # a device that reports nothing is not condemned
        ({"temperature_c": 89.9}, []),
        ({"temperature_c": 90}, ["temperature 90 °C ≥ 90 °C"]),
        ({"ecc_uncorrected": 0}, []),
        ({"ecc_uncorrected": 2}, ["2 uncorrectable ECC errors"]),
        ({"retired_pages_pending": True}, ["retired memory pages pending a reset"]),
        ({"retired_pages_pending": None, "remapped_rows_failure": None}, []),
        ({"remapped_rows_failure": True}, ["memory row remapping failed"]),
        ({"xids": [13, 31, 43]}, []),  # application faults: the job's, not the device's
        ({"xids": [79, 13, 48, 79]}, ["hardware XID 48, 79"]),
        ({"nvml_error": "GPU is lost"}, ["NVML cannot read the device: GPU is lost"]),
        ({"nvml_error": "GPU is lost", "temperature_c": 95, "extra": 1},
         ["NVML cannot read the device: GPU is lost", "temperature 95 °C ≥ 90 °C"]),
    ],
)  # fmt: skip
def test_verdict(reading: dict[str, Any], reasons: list[str]) -> None:
    assert verdict(GpuReading.model_validate(reading), LIMITS) == reasons


def test_limits_are_configurable() -> None:
    limits = HealthLimits(max_temperature_c=80, max_uncorrected_ecc=5)
    assert verdict(GpuReading(temperature_c=85, ecc_uncorrected=5), limits) == ["temperature 85 °C ≥ 80 °C"]


class FakeCordons:
    def __init__(self, fault: dict[str, Any] | None = None, flag: dict[str, Any] | None = None) -> None:
        self.fault, self.flag, self.fail = fault or {}, flag, False

    def injected_fault(self, host: str, index: int) -> dict[str, Any]:
        return self.fault

    def get(self, host: str, index: int) -> dict[str, Any] | None:
        if self.fail:
            raise BrokerUnavailable("down")
        return self.flag


def test_simulated_device_is_healthy_until_a_fault_is_injected() -> None:
    store = FakeCordons()
    reader = SimulatedHealth(store, "h", 0)  # type: ignore[arg-type]
    assert verdict(GpuReading.model_validate(reader.read()), LIMITS) == []
    store.fault = {"ecc_uncorrected": 3}
    assert reader.read()["ecc_uncorrected"] == 3
    assert verdict(GpuReading.model_validate(reader.read()), LIMITS) == ["3 uncorrectable ECC errors"]


class NvmlFailure(Exception):
    """pynvml.NVMLError: carries NVML's return code as ``value``."""

    def __init__(self, value: int) -> None:
        super().__init__(f"NVML error {value}")
        self.value = value


class FakeNvml:
    """Enough of pynvml for the reader; ``behaviour`` sets each reading (``x``) or its error code (``x_error``)."""

    NVMLError = NvmlFailure
    NVML_ERROR_NOT_SUPPORTED, NVML_ERROR_NO_PERMISSION, NVML_ERROR_FUNCTION_NOT_FOUND = 3, 4, 13
    NVML_ERROR_TIMEOUT, NVML_TEMPERATURE_GPU, NVML_MEMORY_ERROR_TYPE_UNCORRECTED, NVML_VOLATILE_ECC = 10, 0, 1, 0
    nvmlEventTypeXidCriticalError = 8

    def __init__(self, **behaviour: Any) -> None:
        self.behaviour, self.events, self.inits = behaviour, list(behaviour.get("xids", [])), 0

    def _answer(self, name: str, default: Any) -> Any:
        if (error := self.behaviour.get(f"{name}_error")) is not None:
            raise NvmlFailure(error)
        return self.behaviour.get(name, default)

    def nvmlInit(self) -> None:
        self.inits += 1

    def nvmlDeviceGetHandleByIndex(self, index: int) -> str:
        return f"handle{index}"

    def nvmlEventSetCreate(self) -> str:
        return "events"

    def nvmlDeviceRegisterEvents(self, *_: Any) -> None:
        self._answer("register", None)

    def nvmlEventSetWait_v2(self, _events: Any, timeout_ms: int) -> Any:
        assert timeout_ms == 0  # never blocks the worker's event loop
        self._answer("wait", None)
        if not self.events:
            raise NvmlFailure(self.NVML_ERROR_TIMEOUT)
        return types.SimpleNamespace(eventType=8, eventData=self.events.pop(0))

    def nvmlDeviceGetTemperature(self, *_: Any) -> Any:
        return self._answer("temperature", 45)

    def nvmlDeviceGetTotalEccErrors(self, *_: Any) -> Any:
        return self._answer("ecc", 0)

    def nvmlDeviceGetRetiredPagesPendingStatus(self, *_: Any) -> Any:
        return self._answer("pending", 0)

    def nvmlDeviceGetRemappedRows(self, *_: Any) -> Any:
        return self._answer("remapped", (0, 0, 0, 0))


def read_with(monkeypatch: pytest.MonkeyPatch, reader: NvmlHealth | None = None, **behaviour: Any) -> dict[str, Any]:
    monkeypatch.setitem(sys.modules, "pynvml", FakeNvml(**behaviour))
    return (reader or NvmlHealth(0)).read()


def test_nvml_reading_of_a_healthy_device(monkeypatch: pytest.MonkeyPatch) -> None:
    assert read_with(monkeypatch) == {"temperature_c": 45.0, "ecc_uncorrected": 0, "retired_pages_pending": False,
                                      "remapped_rows_failure": False, "xids": []}  # fmt: skip


def test_nvml_reading_of_a_failing_device(monkeypatch: pytest.MonkeyPatch) -> None:
    reading = read_with(monkeypatch, temperature=93, ecc=7, pending=1, remapped=(0, 2, 0, 1), xids=[48, 13])
    assert reading == {"temperature_c": 93.0, "ecc_uncorrected": 7, "retired_pages_pending": True,
                       "remapped_rows_failure": True, "xids": [48, 13]}  # fmt: skip
    assert len(verdict(GpuReading.model_validate(reading), LIMITS)) == 5


def test_unsupported_readings_are_none_and_count_as_healthy(monkeypatch: pytest.MonkeyPatch) -> None:
    # Given a consumer card: no ECC, no page retirement, no row remapping, no XID events
    reading = read_with(monkeypatch, ecc_error=3, pending_error=4, remapped_error=13, register_error=3)
    assert reading == {"temperature_c": 45.0, "ecc_uncorrected": None, "retired_pages_pending": None,
                       "remapped_rows_failure": None, "xids": []}  # fmt: skip
    assert verdict(GpuReading.model_validate(reading), LIMITS) == []


def test_a_lost_gpu_reads_as_an_nvml_error_and_is_reopened_next_time(monkeypatch: pytest.MonkeyPatch) -> None:
    reader = NvmlHealth(0)
    assert read_with(monkeypatch, reader, ecc_error=15) == {"nvml_error": "NVML error 15"}
    assert read_with(monkeypatch, reader, temperature_error=15) == {"nvml_error": "NVML error 15"}
    monkeypatch.setitem(sys.modules, "pynvml", nv := FakeNvml())
    reader.read()
    assert nv.inits == 1


def test_nvml_is_opened_once_and_xids_are_drained_between_readings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", nv := FakeNvml(xids=[79]))
    reader = NvmlHealth(0)
    assert reader.read()["xids"] == [79]
    assert reader.read()["xids"] == []
    assert nv.inits == 1


def test_an_event_wait_failure_other_than_timeout_is_an_nvml_error(monkeypatch: pytest.MonkeyPatch) -> None:
    assert read_with(monkeypatch, wait_error=15) == {"nvml_error": "NVML error 15"}


def test_without_pynvml_the_reading_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", None)
    assert NvmlHealth(0).read() == {"nvml_error": "nvidia-ml-py is not installed in this worker"}


class FakeConsumer:
    """What CordonWatch uses of Celery's consumer: the queues it consumes, in order, and call_soon."""

    def __init__(self, queues: list[str]) -> None:
        self.consuming = list(queues)
        self.task_consumer = self
        self.soon: list[Any] = []

    @property
    def queues(self) -> list[types.SimpleNamespace]:
        return [types.SimpleNamespace(name=q) for q in self.consuming]

    def cancel_task_queue(self, queue: str) -> None:
        self.consuming.remove(queue)

    def add_task_queue(self, queue: str) -> None:
        if queue not in self.consuming:
            self.consuming.append(queue)

    def call_soon(self, fn: Any, *args: Any) -> None:
        self.soon.append((fn, args))

    def run_soon(self) -> None:
        while self.soon:
            fn, args = self.soon.pop(0)
            fn(*args)


QUEUES = ("yoloq.critical.16g", "yoloq.critical.8g", "yoloq.high.16g", "yoloq.high.8g")


def test_cordon_watch_stops_and_restores_queues_in_their_order() -> None:
    # Given a worker consuming its queues in tier order
    store = FakeCordons()
    watch = CordonWatch(store, "h", 0, QUEUES)  # type: ignore[arg-type]
    consumer = FakeConsumer(list(QUEUES))
    watch.tick(consumer)
    assert consumer.soon == []  # not cordoned, nothing applied: no work for the event loop
    # When its device is cordoned, and the health check's cancel_consumer already removed one queue
    store.flag = {"reason": "2 uncorrectable ECC errors", "by": "gpu-health"}
    consumer.cancel_task_queue("yoloq.high.16g")
    watch.tick(consumer)
    consumer.run_soon()
    # Then it consumes nothing
    assert consumer.consuming == [] and watch.applied
    # When it is uncordoned
    store.flag = None
    watch.tick(consumer)
    consumer.run_soon()
    # Then every queue is back, in the original (strict tier) order
    assert consumer.consuming == list(QUEUES) and not watch.applied


def test_uncordon_restores_order_even_if_an_operator_re_added_a_queue_meanwhile() -> None:
    store = FakeCordons(flag={"reason": "x"})
    watch = CordonWatch(store, "h", 0, QUEUES)  # type: ignore[arg-type]
    consumer = FakeConsumer(list(QUEUES))
    watch.apply(consumer, watch.flag())
    consumer.add_task_queue("yoloq.high.8g")
    watch.apply(consumer, None)
    assert consumer.consuming == list(QUEUES)


def test_cordon_watch_keeps_its_state_when_redis_is_down() -> None:
    store = FakeCordons(flag={"reason": "x"})
    watch = CordonWatch(store, "h", 0, QUEUES)  # type: ignore[arg-type]
    consumer = FakeConsumer(list(QUEUES))
    store.fail = True
    assert watch.flag() is None  # never cordoned before: keep consuming
    watch.apply(consumer, {"reason": "x"})
    assert watch.flag() == {"reason": "unknown"}  # cordoned before: stay cordoned


@pytest.mark.parametrize(
    ("text", "device"),
    [("gpu-node-3:1", ("gpu-node-3", 1)), ("gpu2@host.example", ("host.example", 2)), ("a:b:3", ("a:b", 3))],
)
def test_parse_device(text: str, device: tuple[str, int]) -> None:
    assert parse_device(text) == device


def test_parse_device_rejects_other_text() -> None:
    import click

    with pytest.raises(click.BadParameter, match="neither HOST:INDEX nor gpuINDEX@HOST"):
        parse_device("node7")


def test_a_job_taken_on_a_held_gpu_waits_out_one_cordon_check_before_it_is_given_back() -> None:
    from tasks.gang_attempt import GIVE_BACK_AFTER_S
    from workers.cordon import CHECK_INTERVAL_S

    assert GIVE_BACK_AFTER_S > CHECK_INTERVAL_S


def test_a_shared_gpu_consumes_only_the_queues_its_free_memory_can_take_and_a_cordon_still_wins() -> None:
    # Given a shared GPU's watch whose free memory takes only the 8g classes now
    store, fits = FakeCordons(), [("yoloq.critical.8g", "yoloq.high.8g")]
    watch = CordonWatch(store, "h", 0, QUEUES)  # type: ignore[arg-type]
    watch.room = lambda: fits[0]
    consumer = FakeConsumer(list(QUEUES))
    watch.tick(consumer)
    consumer.run_soon()
    assert consumer.consuming == ["yoloq.critical.8g", "yoloq.high.8g"]
    # When its tenants leave, every queue comes back in -Q order
    fits[0] = QUEUES
    watch.tick(consumer)
    consumer.run_soon()
    assert consumer.consuming == list(QUEUES)
    # When it is cordoned nothing is consumed whatever fits; once uncordoned the room applies again
    store.flag = {"reason": "x", "by": "ops"}
    fits[0] = ("yoloq.high.8g",)
    watch.tick(consumer)
    consumer.run_soon()
    assert consumer.consuming == []
    store.flag = None
    for _ in range(2):
        watch.tick(consumer)
        consumer.run_soon()
    assert consumer.consuming == ["yoloq.high.8g"]
    # And a failing read of the tenants keeps what it consumes
    watch.room = lambda: (_ for _ in ()).throw(YoloqError("redis down"))
    watch.tick(consumer)
    assert consumer.consuming == ["yoloq.high.8g"]
