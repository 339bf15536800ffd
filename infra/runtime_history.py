"""Runtime history in Redis: what finished training jobs measured (seconds per batch) and how far the runtime
predictions were off, both capped lists of JSON rows; the error also feeds a Prometheus histogram (infra.metrics).

Keys: ``yoloq:runtime:samples`` (the newest :data:`MAX_SAMPLES` runs: model, data, imgsz, batch, GPU model, batches per
epoch, seconds per batch) and ``yoloq:runtime:errors`` (the newest :data:`MAX_ERRORS` finished jobs: predicted and
actual seconds, the prediction's source). Rows are appended right, read oldest first.
"""

from __future__ import annotations

import json
from typing import Any, cast

import redis

from infra import metrics
from infra.redis_client import redis_errors

SAMPLES_KEY = "yoloq:runtime:samples"
ERRORS_KEY = "yoloq:runtime:errors"
MAX_SAMPLES = 2000
MAX_ERRORS = 1000


class RuntimeHistory:
    """The two capped lists, read whole (a few hundred KiB at most) and appended one row at a time."""

    def __init__(self, client: redis.Redis, url: str = "") -> None:
        self._r, self._url = client, url

    def samples(self) -> list[dict[str, Any]]:
        """Every kept run, oldest first (what the runtime estimate reads)."""
        return self._read(SAMPLES_KEY)

    def errors(self) -> list[dict[str, Any]]:
        """Every kept prediction error, oldest first."""
        return self._read(ERRORS_KEY)

    def record(self, sample: dict[str, Any] | None, error: dict[str, Any]) -> None:
        """Append one finished job's measurement (None for jobs that measure no batches) and its prediction error, in
        one round trip; ``error`` holds ``predicted_s`` and ``actual_s`` (> 0)."""
        ratio = abs(float(error["predicted_s"]) - float(error["actual_s"])) / float(error["actual_s"])
        with redis_errors(self._url):
            pipe = self._r.pipeline(transaction=False)
            if sample is not None:
                pipe.rpush(SAMPLES_KEY, json.dumps(sample, sort_keys=True))
                pipe.ltrim(SAMPLES_KEY, -MAX_SAMPLES, -1)
            pipe.rpush(ERRORS_KEY, json.dumps({**error, "error_ratio": round(ratio, 4)}, sort_keys=True))
            pipe.ltrim(ERRORS_KEY, -MAX_ERRORS, -1)
            metrics.observe(pipe, "runtime_prediction_error_ratio", "", ratio)
            pipe.execute()

    def _read(self, key: str) -> list[dict[str, Any]]:
        with redis_errors(self._url):
            rows = cast(list[str], self._r.lrange(key, 0, -1))
        out = []
        for raw in rows:
            try:
                row = json.loads(raw)
            except ValueError:
                continue  # a row nobody of ours wrote: skipped, never fatal
            if isinstance(row, dict):
                out.append(row)
        return out
