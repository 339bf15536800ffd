"""Test session fixtures: real Redis and SeaweedFS started by the session itself, real worker processes.

Integration tests never skip: if a service cannot start, the session errors with the service's log.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from infra.model_registry import ModelRegistry
from infra.redis_client import connect
from infra.serve_queue import ServeQueue
from infra.settings import Settings
from tests.fleet import Fleet, clean_redis, stop_supervisors
from tests.serving import train_parts
from workers.stack import Services, start_services
from yoloq.client import Client

# The session's webhook receivers listen on loopback, which webhooks may not reach unless an operator allows it
# (routing/egress.py); every Settings and child process of the session inherits this. test_notifier proves the refusal.
os.environ.setdefault("YOLOQ_WEBHOOK_ALLOW_PRIVATE", "127.0.0.0/8")


@pytest.fixture(scope="session")
def services(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Services]:
    """An embedded Redis (always ours: tests must not touch a developer's Redis) and a SeaweedFS S3."""
    home = tmp_path_factory.mktemp("yoloq-home")
    svc = start_services(Settings(home=home, lease_ttl_s=3.0, worker_ttl_s=5.0), prefer_configured_redis=False)
    yield svc
    svc.stop()


@pytest.fixture
def fleet(services: Services) -> Iterator[Fleet]:
    """Start workers on a simulated inventory; stopped and the registry wiped after the test. A supervisor the test
    started (``services.start_supervisor``) is stopped first: left running, it kept placing gangs and scaling the
    deployments of the tests after it."""
    clean_redis(services)
    started = Fleet(services)
    yield started
    stop_supervisors(services)
    started.stop()
    clean_redis(services)


@pytest.fixture
def binary_redis(services: Services) -> Iterator[Any]:
    """A binary Redis client (the serving queue carries image bytes) on a registry wiped before and after the test."""
    clean_redis(services)
    client = connect(services.settings.redis_url, binary=True)
    yield client
    client.close()
    clean_redis(services)


@pytest.fixture
def client(services: Services) -> Iterator[Client]:
    """A client pointed at the session's services."""
    yield Client(services.settings)


@pytest.fixture
def wiped(services: Services) -> Iterator[Client]:
    """A client on a registry wiped before and after the test (no worker: every job stays queued or held)."""
    clean_redis(services)
    yield Client(services.settings)
    clean_redis(services)


@pytest.fixture
def supervised(fleet: Fleet, services: Services) -> Iterator[Callable[..., Any]]:
    """Start a supervisor that ticks every 0.2 s (extra arguments: its options); every one started is stopped after."""
    yield lambda *args: services.start_supervisor("--interval", "0.2", "--leader-ttl", "3", *args)
    stop_supervisors(services)


@pytest.fixture(scope="session")
def trained(services: Services, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One tiny model trained by a real job, once per session for every serving test (``tests.serving``)."""
    return train_parts(services, tmp_path_factory.mktemp("served"))


@pytest.fixture
def models(services: Services) -> ModelRegistry:
    """The model registry on the session's Redis."""
    return ModelRegistry(connect(services.settings.redis_url), services.settings.redis_url)


@pytest.fixture
def queue(services: Services) -> Iterator[ServeQueue]:
    """Both ends of the detect transport on the session's Redis (a reply may be waited for up to 60 s)."""
    client = connect(services.settings.redis_url, binary=True, read_timeout_s=60)
    yield ServeQueue(client, services.settings.redis_url)
    client.close()
