"""Serving figures in Redis (docs/serving.md): per model version, what a canary is judged on (requests, errors,
latency percentiles, detections and confidence per request); per alias, the dynamic batcher's histogram and the
replicas' cold starts.

Keys: ``yoloq:serve:stats:{name}:{version}`` (hash of counters ``requests errors detections conf_sum
latency_ms_sum``, and ``answered_at``: when it last answered a request), ``yoloq:serve:lat:{name}:{version}`` (the
newest :data:`LATENCIES` latencies in ms), ``yoloq:serve:batches:{alias}`` (batch size → count) and
``yoloq:serve:cold:{alias}`` (the newest :data:`COLD_STARTS` cold starts in s); what scalers read is per alias
(``yoloq:serve:load:{alias}``: ``requests`` and ``answered_at``; ``yoloq:serve:alias-lat:{alias}``: its newest
latencies, each ``{answered at}:{ms}`` on the shared clock),
so two aliases that serve one version each scale on their own traffic. Replicas write once per batch and
version in one round trip; the CLI, the API (:meth:`ServeStats.describe`: beside the registry's versions) and the
autoscaler read. Percentiles come from a window of recent requests, not from all time, so a version that got slow
shows it within a couple of thousand requests.
"""

from __future__ import annotations

import math
import time
from typing import Any, cast

import redis

from infra.model_registry import ModelRegistry, model_name
from infra.redis_client import redis_errors
from tasks.model_records import split_alias

LATENCIES = 2048
COLD_STARTS = 100


def stats_key(name: str, version: int) -> str:
    """A version's counters."""
    return f"yoloq:serve:stats:{name}:{version}"


def latency_key(name: str, version: int) -> str:
    """A version's newest request latencies (ms), newest first."""
    return f"yoloq:serve:lat:{name}:{version}"


def batches_key(alias: str) -> str:
    """An alias's batch size histogram."""
    return f"yoloq:serve:batches:{alias}"


def load_key(alias: str) -> str:
    """An alias's request counter and when it last answered (what its scalers read)."""
    return f"yoloq:serve:load:{alias}"


def alias_latency_key(alias: str) -> str:
    """An alias's newest request latencies (``{answered at}:{ms}``), newest first, whatever version answered."""
    return f"yoloq:serve:alias-lat:{alias}"  # not ``alat``: readers of before stamps parse that as bare ms


def cold_key(alias: str) -> str:
    """An alias's newest cold starts (s), newest first."""
    return f"yoloq:serve:cold:{alias}"


def percentile(values: list[float], q: float) -> float | None:
    """The nearest-rank ``q`` percentile (0-100) of ``values``; None for none."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(math.ceil(q / 100 * len(ordered)) - 1, 0)]


def _stamped(entry: str) -> tuple[float, float]:
    """An alias latency entry as (answered at, ms)."""
    at, _, ms = entry.partition(":")
    return float(at), float(ms)


class ServeStats:
    """Write (replicas) and read (CLI, API, autoscaler) the serving figures."""

    def __init__(self, client: redis.Redis, url: str = "") -> None:
        self._r, self._url = client, url

    def record(
        self,
        alias: str,
        name: str,
        version: int,
        *,
        latencies_ms: list[float],
        detections: list[int],
        confidences: list[float],
        errors: int,
        batch_size: int,
        at: float | None = None,
    ) -> None:
        """Count one batch's requests that ``version`` answered, in one round trip. ``latencies_ms``: one per answered
        request, errors included (``requests`` grows by its length); ``detections``: each request's detection count;
        ``confidences``: every detection's confidence of those requests; ``errors``: how many of them failed.
        ``batch_size``: the whole batch's size for the histogram; a batch that mixes versions is recorded once per
        version, so pass 0 in every call after the first (0 counts nothing). ``at``: when they were answered, on the
        clock every host shares (a replica passes its Redis clock; this host's clock by default)."""
        pipe = self._r.pipeline(transaction=True)  # a reader sees a batch counted and listed together, or neither
        key = stats_key(name, version)
        pipe.hincrby(key, "requests", len(latencies_ms))
        pipe.hincrby(key, "errors", errors)
        pipe.hincrby(key, "detections", sum(detections))
        pipe.hincrbyfloat(key, "conf_sum", math.fsum(confidences))
        pipe.hincrbyfloat(key, "latency_ms_sum", math.fsum(latencies_ms))
        if latencies_ms:
            now, values = f"{time.time() if at is None else at:.3f}", [f"{ms:.3f}" for ms in latencies_ms]
            pipe.hset(key, "answered_at", now)  # when its p99 was last fed (is it traffic now?)
            pipe.lpush(latency_key(name, version), *values)
            pipe.ltrim(latency_key(name, version), 0, LATENCIES - 1)
            pipe.hincrby(load_key(alias), "requests", len(values))
            pipe.hset(load_key(alias), "answered_at", now)
            pipe.lpush(alias_latency_key(alias), *[f"{now}:{ms}" for ms in values])
            pipe.ltrim(alias_latency_key(alias), 0, LATENCIES - 1)
        if batch_size > 0:
            pipe.hincrby(batches_key(alias), str(batch_size), 1)
        with redis_errors(self._url):
            pipe.execute()

    def record_cold_start(self, alias: str, seconds: float) -> None:
        """A replica of ``alias`` became ready ``seconds`` after it was dequeued (what scale-from-zero costs)."""
        pipe = self._r.pipeline(transaction=False)
        pipe.lpush(cold_key(alias), f"{seconds:.3f}")
        pipe.ltrim(cold_key(alias), 0, COLD_STARTS - 1)
        with redis_errors(self._url):
            pipe.execute()

    def version(self, name: str, version: int) -> dict[str, Any]:
        """A version's ``requests, errors, p50_ms, p99_ms, mean_detections, mean_confidence`` (the means over the
        requests that succeeded and over their detections; None where there is nothing to average yet)."""
        pipe = self._r.pipeline(transaction=False)
        pipe.hgetall(stats_key(name, version))
        pipe.lrange(latency_key(name, version), 0, LATENCIES - 1)
        with redis_errors(self._url):
            counters, recent = cast("tuple[dict[str, str], list[str]]", tuple(pipe.execute()))
        requests, errors = int(counters.get("requests", 0)), int(counters.get("errors", 0))
        detections, conf_sum = int(counters.get("detections", 0)), float(counters.get("conf_sum", 0))
        latencies = [float(ms) for ms in recent]
        answered = requests - errors
        return {
            "requests": requests,
            "errors": errors,
            "p50_ms": percentile(latencies, 50),
            "p99_ms": percentile(latencies, 99),
            "mean_detections": round(detections / answered, 4) if answered > 0 else None,
            "mean_confidence": round(conf_sum / detections, 4) if detections > 0 else None,
        }

    def alias_load(
        self, alias: str, since_requests: int | None = None, since_at: float | None = None
    ) -> dict[str, Any]:
        """What scales ``alias``: ``requests`` it answered (all versions), the ``p99_ms`` of its newest requests, how
        many that p99 ``counted``, and ``answered_at`` (epoch s of its last answer, or None): its own traffic, not its
        versions' over all aliases. ``since_requests``: only those answered after its ``requests`` counter read that
        (the autoscaler judges the replicas it has now); ``since_at``: only those answered at or after that time on
        the shared clock (a stateless reader's window: KEDA's view, /metrics)."""
        pipe = self._r.pipeline(transaction=True)  # the counter and the list of one moment
        pipe.hgetall(load_key(alias))
        pipe.lrange(alias_latency_key(alias), 0, LATENCIES - 1)
        with redis_errors(self._url):
            counters, raw = cast("tuple[dict[str, str], list[str]]", tuple(pipe.execute()))
        answered_at, requests = counters.get("answered_at"), int(counters.get("requests", 0))
        recent = [_stamped(entry) for entry in raw]  # newest first
        if since_requests is not None:
            recent = recent[: max(requests - since_requests, 0)]
        if since_at is not None:
            recent = [(at, ms) for at, ms in recent if at >= since_at]
        return {"requests": requests, "p99_ms": percentile([ms for _, ms in recent], 99), "counted": len(recent),
                "answered_at": float(answered_at) if answered_at else None}  # fmt: skip

    def answered_at(self, name: str, version: int) -> float | None:
        """When ``version`` last answered a request (epoch s, the replica's clock), or None: a p99 of requests long
        gone must not keep an autoscaler (KEDA) scaling on it."""
        with redis_errors(self._url):
            raw = cast("str | None", self._r.hget(stats_key(name, version), "answered_at"))
        return float(raw) if raw else None

    def batch_sizes(self, alias: str) -> dict[int, int]:
        """How many batches of each size the replicas of ``alias`` ran, by size."""
        with redis_errors(self._url):
            raw = cast("dict[str, str]", self._r.hgetall(batches_key(alias)))
        return {int(size): int(count) for size, count in sorted(raw.items(), key=lambda item: int(item[0]))}

    def cold_starts(self, alias: str) -> list[float]:
        """The newest cold starts of ``alias``'s replicas (s), newest first."""
        with redis_errors(self._url):
            raw = cast("list[str]", self._r.lrange(cold_key(alias), 0, COLD_STARTS - 1))
        return [float(s) for s in raw]

    def describe(self, models: ModelRegistry, ref: str) -> dict[str, Any]:
        """A model's versions (metrics, artefacts and these figures) and its aliases (with their batch sizes and
        newest cold starts); for ``name@label``, that alias and the versions it serves: what ``yoloq model show`` and
        ``GET /api/v1/models/{name}`` print."""
        if "@" in ref:
            aliases = [models.alias(ref)]
            name = split_alias(ref)[0]
            versions = [models.version(name, v) for v in aliases[0].versions()]
        else:
            name = model_name(ref)
            versions, aliases = models.versions(name), models.aliases(name)
        shown = [{**v.model_dump(mode="json"), "serving": self.version(name, v.version)} for v in versions]
        served = [{**a.model_dump(mode="json"), "serving": {"batch_sizes": self.batch_sizes(a.alias),
                   "cold_starts_s": self.cold_starts(a.alias)[:10]}} for a in aliases]  # fmt: skip
        return {"name": name, "versions": shown, "aliases": served}
