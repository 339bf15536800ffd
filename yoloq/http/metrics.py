"""``/metrics``: the Prometheus text format, read from Redis at each scrape, behind the same token as the rest."""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter, Request, Response
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

from infra.prometheus import YoloqCollector
from yoloq.client import Client
from yoloq.http.openapi import errors

router = APIRouter(tags=["metrics"], responses=errors())


def collector_registry(client: Client) -> CollectorRegistry:
    """The application's one registry: a collector that reads Redis and the fleet views at each scrape."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(YoloqCollector(client.registry.client, lambda: _views(client)))
    return registry


@router.get("/metrics", response_class=Response)
def scrape(request: Request) -> Response:
    """The whole exposition."""
    return Response(generate_latest(request.app.state.metrics), media_type=CONTENT_TYPE_LATEST)


def _views(client: Client) -> dict[str, Any]:
    now = time.time()
    from yoloq.serving_view import deployments

    serving = deployments(client.registry.client, client.registry.url)
    return {"queues": client.queues(now), "status": client.status(now), "serving": serving}
