"""Train it and it is online, end to end (issue 16 items 2, 5, 6): a pipeline's model is served by a replica the
supervisor's serving scaler starts, answers detect requests over a real `yoloq api` with a detect-only key, scales
out under load, back in and to zero when idle, and the first request after that brings a replica back."""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from infra.api_keys import ApiKeys
from infra.deployments import Deployments
from infra.redis_client import connect
from tasks.states import JobState
from tests.fleet import poll, small_dataset, small_train
from tests.integration.test_api import serving_api

pytestmark = pytest.mark.integration
ALIAS = "lines@prod"


def _detect(base: str, key: str, image: bytes, timeout_s: float = 90) -> tuple[int, dict[str, Any]]:
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "image/jpeg"}
    request = urllib.request.Request(f"{base}/v1/models/{ALIAS}/detect", data=image, method="POST", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"{}")


def _deployment(services: Any) -> Any:
    return Deployments(connect(services.settings.redis_url)).get(ALIAS)


def _load(base: str, key: str, image: bytes, stop: threading.Event, answers: list[int]) -> None:
    while not stop.is_set():
        answers.append(_detect(base, key, image)[0])


def test_a_trained_model_is_served_scales_with_load_and_wakes_from_zero(fleet, client, services, tmp_path: Path):
    # Given a fleet, a supervisor whose serving scaler stops a surplus replica after 2 s, and an API
    fleet.start("0:A100:40,1:A100:40,2:A100:40")
    services.start_supervisor("--interval", "0.5", "--serve-down-delay", "2")
    data = small_dataset(tmp_path / "data", seed=11)
    image = next((data / "images" / "val").glob("*.jpg")).read_bytes()
    limits = {"YOLOQ_DETECT_TIMEOUT_S": "90", "YOLOQ_DETECT_RATE": "1000", "YOLOQ_DETECT_BURST": "1000"}
    with serving_api(services, env={**services.env(), **limits}) as api:
        key = ApiKeys(connect(services.settings.redis_url)).create("line-1", "vision", ["detect"], "test")
        # When a training pipeline deploys to lines@prod
        record = client.submit(small_train(str(data), deploy=ALIAS)).wait(timeout_s=300)
        assert record.state is JobState.SUCCEEDED, record.events[-1]
        # Then nobody starts a replica by hand: the scaler does, and the model answers detect requests
        poll(lambda: _detect(api.base, key, image)[0] == 200, 120, "the deployed model to answer")
        code, answer = _detect(api.base, key, image)
        assert (code, answer["model"], answer["version"]) == (200, ALIAS, 1)
        # When the load is over what one replica should carry (2 req/s each), it scales out to its maximum
        deployments = Deployments(connect(services.settings.redis_url))
        deployments.put(_deployment(services).model_copy(update={"target_rps_per_replica": 2.0, "max_replicas": 2}),
                        "test", "test: a low target")  # fmt: skip
        stop, answers = threading.Event(), list[int]()
        loaders = [threading.Thread(target=_load, args=(api.base, key, image, stop, answers)) for _ in range(4)]
        for thread in loaders:
            thread.start()
        try:
            poll(lambda: _deployment(services).replicas == 2, 60, "a scale-out to 2 replicas")
            ready = lambda: api.call("GET", "/api/v1/deployments")[1]["deployments"][ALIAS]["ready"]  # noqa: E731
            poll(lambda: ready() == 2, 120, "the second replica to be ready")
        finally:
            stop.set()
            for thread in loaders:
                thread.join(120)
        assert answers and set(answers) == {200}, sorted(set(answers))
        # When the load stops, it scales in one replica at a time and, its minimum being 0, to zero
        poll(lambda: _deployment(services).replicas == 0, 60, "a scale-in to zero")
        poll(lambda: api.call("GET", "/api/v1/deployments")[1]["deployments"][ALIAS]["live"] == [], 60,
             "the replicas to drain and leave")  # fmt: skip
        # Then the first request brings a replica back and is answered (it waits out the cold start)
        started = time.monotonic()
        code, answer = _detect(api.base, key, image)
        assert (code, answer["version"]) == (200, 1), answer
        assert _deployment(services).replicas == 1
        assert time.monotonic() - started < 90
