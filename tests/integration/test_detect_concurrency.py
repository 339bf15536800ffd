"""The detect route waits for its replica without a thread: a real `yoloq api` on the session's Redis, a deployment
with no replica, and 150 detect requests waiting at once while the job routes and liveness still answer.

On the old handler (a plain ``def`` that BLPOPped on FastAPI's pool of 40 threads) the 40 first requests took every
thread for the whole replica timeout: ``/api/v1/status`` answered only after they timed out, and the other 110
requests queued behind them."""

from __future__ import annotations

import asyncio
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI

from infra.redis_client import connect
from infra.serve_queue import Request, requests_key
from tests.fleet import poll
from tests.integration.test_api import serving_api
from tests.integration.test_detect_api import ALIAS, JPEG, deploy, post
from yoloq.http.detect import Serving, install, lifespan

pytestmark = pytest.mark.integration

WAITING = 150
POOL_THREADS = 40  # anyio's default thread limit: FastAPI runs every plain-function handler on it
TIMEOUT_S = 8.0
SETTINGS = {"YOLOQ_DETECT_TIMEOUT_S": str(TIMEOUT_S), "YOLOQ_DETECT_RATE": "1000", "YOLOQ_DETECT_BURST": "1000"}


@pytest.fixture
def redis(binary_redis: Any) -> Any:
    """The session's Redis as bytes, wiped before and after the test (tests/conftest.py)."""
    return binary_redis


def first_deadline(redis: Any) -> float:
    """The earliest deadline (epoch s) of the requests waiting in the deployment's list: when the first times out."""
    waiting = [Request.decode(raw) for raw in redis.lrange(requests_key(ALIAS), 0, -1)]
    return min(float(r.meta["deadline"]) for r in waiting if r is not None)


def test_waiting_detect_requests_hold_no_thread(services: Any, redis: Any, tmp_path: Path) -> None:
    # Given a deployment with no replica and an API with an 8 s replica timeout
    deploy(services, tmp_path)
    with serving_api(services, "detect-concurrency", SETTINGS) as api, ThreadPoolExecutor(WAITING) as pool:
        # When 150 detect requests arrive at once (none can be answered)
        calls = [pool.submit(post, api, JPEG) for _ in range(WAITING)]
        # and at least as many are waiting as the pool has threads (the old handler held every one of them now)
        poll(lambda: redis.llen(requests_key(ALIAS)) >= POOL_THREADS, TIMEOUT_S, f"{POOL_THREADS} requests waiting")
        deadline = first_deadline(redis)
        # Then the job routes and liveness answer before the first detect request times out
        status, doc = api.call("GET", "/api/v1/status")
        status_at = time.time()
        with urllib.request.urlopen(api.base + "/healthz", timeout=TIMEOUT_S) as response:
            health = response.status
        health_at = time.time()
        assert (status, health) == (200, 200) and "queues" in doc, doc
        assert status_at < deadline and health_at < deadline, (deadline - status_at, deadline - health_at)
        assert not any(call.done() for call in calls)  # the detect requests were all still waiting meanwhile
        # And all 150 wait at once, before the first times out (the old handler let in 40 at a time)
        poll(lambda: redis.llen(requests_key(ALIAS)) == WAITING, max(deadline - time.time(), 0.1), "150 waiting")
        assert time.time() < deadline and not any(call.done() for call in calls)
        # And each ends with the JSON 503 once the timeout has passed
        answers = [call.result()[:2] for call in calls]
    assert answers == [(503, {"error": f"no replica of {ALIAS} answered within 8 s; retry later"})] * WAITING
    assert time.time() >= deadline
    # The server ran the app's lifespan, which closes the async client (tested below)
    log = (services.settings.home / "logs" / "detect-concurrency.log").read_text()
    assert "Application shutdown complete" in log


def test_the_reply_client_lives_in_its_loop_and_closes_on_shutdown(services: Any, redis: Any) -> None:
    app = FastAPI(lifespan=lifespan)
    install(app, services.settings, connect(services.settings.redis_url))
    serving = app.state.serving
    assert isinstance(serving, Serving)

    def clients() -> int:
        return len(redis.client_list())

    before = clients()

    async def serve_one_wait() -> None:
        async with lifespan(app):
            waiter = serving.replies()
            assert serving.replies() is waiter  # one client per loop, built on first use
            assert await waiter.wait_reply("nobody", 0.05) is None
            assert clients() == before + 1  # its connection, open while the app runs

    asyncio.run(serve_one_wait())
    poll(lambda: clients() == before, 5, "the reply client's connection to close")
