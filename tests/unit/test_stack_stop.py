"""`Services.stop` stops every child at once, and Redis/S3 only after everything that needs them.

The time an idle `yoloq up` takes to exit is a measurement (it prints it in tests/integration/test_up.py); what this
proves without a clock is the shape that makes it short: no child's stop waits for another's."""

from __future__ import annotations

import threading
from typing import Any, cast

from workers.stack import Services


class Child:
    """A managed process whose stop only returns once every other child's stop has begun (a barrier): stopping them
    one after the other breaks the barrier instead of deadlocking."""

    def __init__(self, name: str, barrier: threading.Barrier, log: list[str]) -> None:
        self.name, self.barrier, self.log = name, barrier, log

    def stop(self, grace_s: float = 10.0) -> int:
        self.barrier.wait()
        self.log.append(f"stopped {self.name}")
        return 0

    def warm_stop(self, grace_s: float = 30.0) -> int:
        return self.stop(grace_s)


class Store:
    """Redis or S3: records when it is stopped."""

    def __init__(self, name: str, log: list[str]) -> None:
        self.name, self.log = name, log

    def stop(self) -> None:
        self.log.append(f"stopped {self.name}")


def _services() -> tuple[Services, list[str]]:
    log: list[str] = []
    barrier = threading.Barrier(6, timeout=10)  # stopped one by one, the first child waits 10 s and breaks it
    workers = {i: Child(f"worker{i}", barrier, log) for i in (0, 1, 2)}
    surfaces = {n: (Child(n, barrier, log), "") for n in ("api", "flower")}
    services = Services(
        settings=cast(Any, None),
        redis=cast(Any, Store("redis", log)),
        s3=cast(Any, Store("s3", log)),
        workers=cast(Any, workers),
        supervisors=cast(Any, [Child("supervisor", barrier, log)]),
        surfaces=cast(Any, surfaces),
    )
    return services, log


def test_every_child_is_stopped_at_once_and_the_stores_last() -> None:
    services, log = _services()
    services.stop()
    assert sorted(log[:6]) == sorted(
        ["stopped worker0", "stopped worker1", "stopped worker2", "stopped api", "stopped flower", "stopped supervisor"]
    )
    assert sorted(log[6:]) == ["stopped redis", "stopped s3"]
    assert (services.workers, services.supervisors, services.surfaces) == ({}, [], {})
