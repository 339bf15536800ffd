"""Adapters a worker process needs, built once per process from settings (after the pool forks)."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import TYPE_CHECKING

from infra.leases import Leases
from infra.redis_client import connect
from infra.registry import RedisRegistry
from infra.settings import Settings, load_settings

if TYPE_CHECKING:  # Celery and boto3 cost ~0.3 s to import: a process that reads only the registry never pays it
    from infra.celery_control import CeleryDispatch
    from infra.s3 import S3Store


@dataclass(frozen=True)
class Runtime:
    """Settings plus the registry, leases, object store and dispatcher, all on one Redis connection pool."""

    settings: Settings
    registry: RedisRegistry
    leases: Leases
    store: S3Store
    dispatch: CeleryDispatch


def build_runtime(settings: Settings, dispatch: CeleryDispatch, registry: RedisRegistry | None = None) -> Runtime:
    """Wire the adapters for ``settings`` (one Redis pool; pass ``registry`` to share a pool built already)."""
    from infra.s3 import S3Store

    if registry is None:
        registry = RedisRegistry(connect(settings.redis_url, settings.broker_timeout_s), settings.redis_url)
    client = registry.client
    return Runtime(
        settings=settings,
        registry=registry,
        leases=Leases(client, settings.redis_url),
        store=S3Store(settings),
        dispatch=dispatch,
    )


@functools.cache
def worker_runtime() -> Runtime:
    """The runtime of this worker process (created lazily in the pool child, never before the fork)."""
    from infra.celery_control import CeleryDispatch
    from tasks.app import app

    return build_runtime(load_settings(), CeleryDispatch(app))
