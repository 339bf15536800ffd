"""Celery remote control for GPU health: ask workers to read their devices, and tell one to stop consuming now.

NVML can only read the devices of its own host, and beat may run anywhere, so the health check asks every GPU worker
through a remote-control broadcast (``yoloq_gpu_health``, answered in the worker's main process) instead of reading
devices itself. ``stop_consuming`` is Celery's ``cancel_consumer`` for each of a worker's queues: it takes effect at
once, and the cordon flag in Redis (``infra.cordon``) makes it survive a restart.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from celery import Celery
from celery.worker.control import control_command
from kombu.exceptions import OperationalError

from tasks.errors import BrokerUnavailable

HEALTH_COMMAND = "yoloq_gpu_health"


def register_health_command(read: Callable[[], dict[str, Any]]) -> None:
    """Answer ``yoloq_gpu_health`` in this worker process with ``{"reading": read()}`` (GPU workers only)."""

    def yoloq_gpu_health(state: Any, **_: Any) -> dict[str, Any]:
        """Read this worker's GPU health (NVML, or a simulated device's injected fault)."""
        return {"reading": read()}

    control_command(name=HEALTH_COMMAND)(yoloq_gpu_health)


class FleetControl:
    """Health probes and consumer control over the broker; broker errors become BrokerUnavailable."""

    def __init__(self, app: Celery) -> None:
        self._app = app

    def probe_health(self, nodes: list[str], timeout_s: float = 3.0) -> dict[str, dict[str, Any]]:
        """Each named worker's reading; a worker that does not answer within ``timeout_s`` is left out."""
        if not nodes:
            return {}
        try:
            replies = self._app.control.broadcast(
                HEALTH_COMMAND, destination=nodes, reply=True, timeout=timeout_s, limit=len(nodes)
            )
        except (OperationalError, OSError) as err:
            raise BrokerUnavailable(f"cannot ask workers for GPU health: {err}") from None
        out: dict[str, dict[str, Any]] = {}
        for reply in replies or []:
            for node, answer in reply.items():
                if isinstance(answer, dict) and isinstance(answer.get("reading"), dict):
                    out[str(node)] = answer["reading"]
        return out

    def stop_consuming(self, node: str, queues: list[str]) -> None:
        """Make one worker stop taking messages from its queues now (its running job is left alone)."""
        try:
            for queue in queues:
                self._app.control.cancel_consumer(queue, destination=[node])
        except (OperationalError, OSError) as err:
            raise BrokerUnavailable(f"cannot tell {node} to stop consuming: {err}") from None
