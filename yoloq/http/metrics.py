"""``/metrics``: the Prometheus text format, read from Redis at each scrape, behind the same token as the rest."""

from __future__ import annotations

import threading
import time
from typing import Any

from fastapi import APIRouter, Request, Response
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

from infra.prometheus import YoloqCollector
from yoloq.client import Client

router = APIRouter(tags=["metrics"])
_LOCK = threading.Lock()


@router.get("/metrics", response_class=Response)
def scrape(request: Request) -> Response:
    """The whole exposition; one collector registry per application, built at the first scrape."""
    with _LOCK:
        registry = getattr(request.app.state, "metrics", None)
        if registry is None:
            registry = request.app.state.metrics = _registry(request.app.state.client)
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)


def _registry(client: Client) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(YoloqCollector(client.registry.client, lambda: _views(client)))
    return registry


def _views(client: Client) -> dict[str, Any]:
    now = time.time()
    return {"queues": client.queues(now), "status": client.status(now)}
