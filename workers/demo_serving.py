"""The demo's serving act: a trained model goes online with nobody touching it, a critical retrain preempts low work,
deploys itself as a canary, the canary's figures are compared with the stable version's, and it is promoted.

Everything goes through the public surfaces: jobs through the Client, detect requests and the promotion through the
HTTP API with per-tenant keys (a detect-only key for the camera line, an operate key for the release manager).
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from infra.api_keys import ApiKeys
from tasks.records import JobRecord
from tasks.specs import ProbeSpec, TrainSpec
from tasks.states import TERMINAL, JobState
from workers.stack import Services
from yoloq.client import Client

ALIAS = "defects@prod"


class Http:
    """The stack's API with one key: JSON calls and raw-image detect requests."""

    def __init__(self, base: str, key: str) -> None:
        self.base, self.key = base, key
        self.limited = 0  # 429 answers seen (then waited out)

    def call(self, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None) -> Any:
        """One request; the decoded JSON answer (an HTTP error raises with its JSON error)."""
        sent = {"Authorization": f"Bearer {self.key}", **(headers or {})}
        request = urllib.request.Request(self.base + path, data=body, method=method, headers=sent)  # noqa: S310
        try:
            with urllib.request.urlopen(request, timeout=60) as response:  # noqa: S310 - our own http:// URL
                return json.load(response)
        except urllib.error.HTTPError as err:
            raise RuntimeError(f"{method} {path}: HTTP {err.code} {err.read()[:300]!r}") from None

    def detect(self, image: bytes, key: str) -> dict[str, Any]:
        """A camera's request: a JPEG body, sticky to a canary side by its ``X-Request-Key``; over the key's rate
        (429) it waits the ``Retry-After`` the API gave, as a well-behaved client does."""
        headers = {"Authorization": f"Bearer {self.key}", "Content-Type": "image/jpeg", "X-Request-Key": key}
        while True:
            url = f"{self.base}/v1/models/{ALIAS}/detect?conf=0.05"  # a 3-epoch demo model is unsure of itself
            request = urllib.request.Request(url, data=image, method="POST", headers=headers)  # noqa: S310
            try:
                with urllib.request.urlopen(request, timeout=60) as response:  # noqa: S310 - our own http:// URL
                    return dict(json.load(response))
            except urllib.error.HTTPError as err:
                if err.code != 429:
                    raise RuntimeError(f"detect: HTTP {err.code} {err.read()[:300]!r}") from None
                self.limited += 1
                time.sleep(float(err.headers.get("Retry-After", "1")))


def _poll(check: Callable[[], Any], what: str, say: Callable[[str], None], timeout_s: float = 180) -> Any:
    say(f"  … waiting for {what}")
    deadline = time.monotonic() + timeout_s
    while not (found := check()):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not after {timeout_s:.0f} s")
        time.sleep(0.2)
    return found


def _traffic(http: Http, images: list[bytes], n: int) -> list[dict[str, Any]]:
    """``n`` requests from 8 camera threads, each with its own request key (the canary split is per key)."""
    with ThreadPoolExecutor(8) as pool:
        return list(pool.map(lambda i: http.detect(images[i % len(images)], f"camera-{i}"), range(n)))


def _ready(admin: Http) -> Callable[[], bool]:
    return lambda: admin.call("GET", "/api/v1/deployments")["deployments"].get(ALIAS, {}).get("ready", 0) >= 1


def _versions(admin: Http, say: Callable[[str], None]) -> None:
    row = admin.call("GET", "/api/v1/deployments")["deployments"][ALIAS]
    for version, f in row["versions"].items():
        say(
            f"    v{version}: {f['share']:g} % of traffic, {f['requests']} requests, p50 {f['p50_ms']} ms, "
            f"p99 {f['p99_ms']} ms, {f['mean_detections']} detections/image, confidence {f['mean_confidence']}"
        )
    say(f"    batch sizes the replica ran: {row['batch_sizes']}; cold start {row['cold_start_s']} s")


def serving_act(services: Services, client: Client, nightly: JobRecord, data: Path,
                say: Callable[[str], None]) -> list[JobRecord]:  # fmt: skip
    """Act 4 (after the nightly training of Act 2 finished with ``deploy=defects``)."""
    api, token = services.surfaces["api"][1], services.settings.api_token.get_secret_value()
    keys = ApiKeys(client.registry.client, client.registry.url)
    admin = Http(api, token)
    camera = Http(api, keys.create("line-3-cameras", "vision", ["detect"], "demo"))
    release = Http(api, keys.create("release-manager", "vision", ["operate"], "demo"))
    deployed = (nightly.result or {}).get("deployed", {})
    map50 = deployed.get("metrics", {}).get("map50", 0)
    say(
        f"Act 4: the nightly training was a pipeline (--deploy defects): it registered defects "
        f"v{deployed.get('version')} (validation mAP50 {map50:.3f}), pointed {ALIAS} at it and created a"
    )
    say("  scale-to-zero deployment; the supervisor's serving scaler started a replica job (ONNX Runtime, warmed up).")
    client.serve(ALIAS, 1, max_replicas=1, by="demo")  # two GPUs here: the A100 stays free for training
    say("  The operator caps it at one replica on this small fleet (`yoloq serve defects --max 1`): the A100 stays")
    say("  for training.")
    _poll(_ready(admin), "a ready replica of defects@prod", say)
    images = [p.read_bytes() for p in sorted((data / "images" / "val").glob("*.jpg"))]
    answers = _traffic(camera, images, 40)
    say(f"  40 camera requests with a detect-only key: versions {dict(Counter(a['version'] for a in answers))}, "
        f"e.g. {answers[0]['detections'][:1]} in {answers[0]['timings_ms']} ms")  # fmt: skip
    say("  A new defect type: a critical retrain (--deploy defects --canary 25) arrives while a low job holds")
    say("  the A100.")
    low = client.submit(ProbeSpec(seconds=120, tier="low", team="vision", memory_gb=30, name="low-batch"))
    _poll(lambda: low.refresh().state is JobState.RUNNING, "the low job to hold the A100", say)
    retrain = client.submit(TrainSpec(data=str(data), epochs=2, imgsz=64, batch=4, workers=0, save_period=1,
                                      tier="critical", team="vision", memory_gb=30, name="defect-retrain",
                                      deploy="defects", canary=25.0))  # fmt: skip
    record = _poll(lambda: (r := retrain.refresh()).state in TERMINAL and r, "the retrain pipeline", say, 300)
    say(f"  the supervisor preempted {low.job_id} for it; retrain {record.state.value}: {record.result['deployed']}")
    answers = _traffic(camera, images, 200)
    split = dict(Counter(a["version"] for a in answers))
    say(f"  200 requests from 200 camera keys: {split} (a 25 % canary, sticky per key); {camera.limited} times the")
    say("  line went over its rate (50/s, burst 100) and waited the Retry-After the API gave (429)")
    _versions(admin, say)
    promoted = release.call("POST", "/api/v1/models/defects/aliases/prod/promote")
    say(f"  the release manager promotes the canary (operate key): {ALIAS} -> v{promoted['version']}")
    answers = _traffic(camera, images, 20)
    say(f"  20 more requests: versions {dict(Counter(a['version'] for a in answers))}")
    client.cancel(low.job_id, by="demo")
    return [record]
