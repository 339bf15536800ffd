"""Adapters a worker process needs, built once per process from settings (after the pool forks)."""

from __future__ import annotations

import functools
from dataclasses import dataclass

from infra.celery_control import CeleryDispatch
from infra.leases import Leases
from infra.redis_client import connect
from infra.registry import RedisRegistry
from infra.s3 import S3Store
from infra.settings import Settings, load_settings


@dataclass(frozen=True)
class Runtime:
    """Settings plus the registry, leases, object store and dispatcher, all on one Redis connection pool."""

    settings: Settings
    registry: RedisRegistry
    leases: Leases
    store: S3Store
    dispatch: CeleryDispatch


def build_runtime(settings: Settings, dispatch: CeleryDispatch) -> Runtime:
    """Wire the adapters for ``settings``."""
    client = connect(settings.redis_url, settings.broker_timeout_s)
    return Runtime(
        settings=settings,
        registry=RedisRegistry(client, settings.redis_url),
        leases=Leases(client, settings.redis_url),
        store=S3Store(settings),
        dispatch=dispatch,
    )


@functools.cache
def worker_runtime() -> Runtime:
    """The runtime of this worker process (created lazily in the pool child, never before the fork)."""
    from tasks.app import app

    return build_runtime(load_settings(), CeleryDispatch(app))
