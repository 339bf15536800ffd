"""The Prometheus exposition of yoloq's metrics: a collector that reads the Redis-kept series (``infra/metrics.py``)
plus live views (queues, workers, GPUs, SLA) at each scrape. Only the HTTP API's ``/metrics`` imports it."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, cast

import redis
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from infra.metrics import HISTOGRAMS, P, labels_key
from routing.tiers import TIERS


class YoloqCollector(Collector):
    """Reads the Redis-kept series plus live views (queues, workers, SLA) at each scrape."""

    def __init__(self, client: redis.Redis, views: Callable[[], dict[str, Any]]) -> None:
        self._r, self._views = client, views

    def collect(self) -> Iterator[Metric]:
        """One scrape: views first (queue depth, workers, GPUs, SLA), then the stored counters and histograms."""
        view = self._views()
        yield from _queue_metrics(view["queues"])
        yield from _fleet_metrics(view["status"])
        yield from _serving_metrics(view.get("serving", {}).get("deployments", {}))
        yield from self._histograms()
        yield from self._counters()

    def _series(self, name: str) -> dict[str, dict[str, str]]:
        """Each label's stored histogram: the labels recorded with the observations, plus those a version that did
        not record them wrote (tiers, or none); two round trips, whatever else the keyspace holds."""
        known = {t.value for t in TIERS} if "start" in name else {""}
        found = sorted(known | {str(m) for m in cast(set[str], self._r.smembers(labels_key(name)))})
        pipe = self._r.pipeline(transaction=False)
        for label in found:
            pipe.hgetall(f"{P}hist:{name}:{label}")
        return {label: raw for label, raw in zip(found, pipe.execute(), strict=True) if raw}

    def _histograms(self) -> Iterator[Metric]:
        for name, bounds in HISTOGRAMS.items():
            family = HistogramMetricFamily(f"yoloq_{name}", _HELP[name], labels=["tier"] if "start" in name else [])
            for label, stored in self._series(name).items():
                raw = {str(k): float(v) for k, v in stored.items()}
                buckets = [(f"{b:g}", raw.get(f"le:{b:g}", 0.0)) for b in bounds] + [("+Inf", raw.get("count", 0.0))]
                family.add_metric([label] if "start" in name else [], buckets, raw.get("sum", 0.0))
            yield family

    def _counters(self) -> Iterator[Metric]:
        named = (("preemptions", "reason"), ("autoscaler_decisions", "action"), ("resends", "tier"),
                 ("webhook_deliveries", "outcome"))  # fmt: skip
        for name, label in named:
            family = CounterMetricFamily(f"yoloq_{name}", _HELP[name], labels=[label])
            for value, total in sorted(cast(dict[str, str], self._r.hgetall(f"{P}counter:{name}")).items()):
                family.add_metric([str(value)], float(total))
            yield family
        uploaded = cast(str | None, self._r.hget(f"{P}counter:checkpoint_upload_bytes", ""))
        yield CounterMetricFamily("yoloq_checkpoint_upload_bytes", _HELP["bytes"], value=float(uploaded or 0))


def _queue_metrics(queues: dict[str, Any]) -> Iterator[Metric]:
    depth = GaugeMetricFamily("yoloq_queue_depth", _HELP["depth"], labels=["tier"])
    oldest = GaugeMetricFamily("yoloq_queue_oldest_wait_seconds", _HELP["oldest"], labels=["tier"])
    for tier, row in queues["tiers"].items():
        depth.add_metric([tier], row["depth"])
        oldest.add_metric([tier], row["oldest_wait_s"])
    yield depth
    yield oldest


def _fleet_metrics(status: dict[str, Any]) -> Iterator[Metric]:
    busy = {str(r.get("worker")) for r in status["running"]}
    workers = GaugeMetricFamily("yoloq_workers", _HELP["workers"], labels=["state"])
    nodes = [str(w.get("node")) for w in status["workers"]]
    workers.add_metric(["busy"], sum(1 for n in nodes if n in busy))
    workers.add_metric(["idle"], sum(1 for n in nodes if n not in busy))
    yield workers
    total = GaugeMetricFamily("yoloq_gpu_memory_total_bytes", _HELP["mem_total"], labels=["gpu", "host"])
    used = GaugeMetricFamily("yoloq_gpu_memory_used_bytes", _HELP["mem_used"], labels=["gpu", "host"])
    util = GaugeMetricFamily("yoloq_gpu_utilization_ratio", _HELP["util"], labels=["gpu", "host"])
    jobs = {str(r.get("worker")): r for r in status["running"]}
    for gpu in status["gpus"]:
        labels = [str(gpu.get("node")), str(gpu.get("host"))]
        total.add_metric(labels, float(gpu.get("memory_mib", 0)) * 2**20)
        job = jobs.get(str(gpu.get("node")))
        # NVML devices report their own usage; a simulated one reports what its job reserved, fully busy or idle.
        used_mib = gpu.get("used_mib", float(job.get("memory_mib", 0)) if job else 0.0)
        used.add_metric(labels, float(used_mib) * 2**20)
        util.add_metric(labels, float(gpu.get("utilization", 1.0 if job else 0.0)))
    yield from (total, used, util)
    sla = GaugeMetricFamily("yoloq_sla_compliance_ratio", _HELP["sla"], labels=["tier"])
    for tier, row in status["sla"].items():
        if isinstance(row, dict) and row.get("within_target") is not None:
            sla.add_metric([tier], float(row["within_target"]))
    yield sla


def _serving_metrics(deployments: dict[str, Any]) -> Iterator[Metric]:
    """Per deployment: what an HPA or KEDA scales on (queue, replicas, p99) and per version the canary comparison."""
    gauges = {name: GaugeMetricFamily(f"yoloq_serve_{name}", _HELP[f"serve_{name}"], labels=["alias"])
              for name in ("queued", "replicas_desired", "replicas_ready", "p99_ms", "cold_start_seconds")}  # fmt: skip
    per_version = {name: GaugeMetricFamily(f"yoloq_serve_version_{name}", _HELP[f"serve_v_{name}"],
                                           labels=["alias", "version"])
                   for name in ("share", "p50_ms", "p99_ms", "mean_detections", "mean_confidence")}  # fmt: skip
    requests = CounterMetricFamily("yoloq_serve_requests", _HELP["serve_requests"], labels=["alias", "version"])
    errors = CounterMetricFamily("yoloq_serve_errors", _HELP["serve_errors"], labels=["alias", "version"])
    batches = CounterMetricFamily("yoloq_serve_batches", _HELP["serve_batches"], labels=["alias", "size"])
    for alias, row in deployments.items():
        figures = {"queued": row["queued"], "replicas_desired": row["replicas"], "replicas_ready": row["ready"],
                   "p99_ms": row["p99_ms"], "cold_start_seconds": row["cold_start_s"]}  # fmt: skip
        for name, value in figures.items():
            if value is not None:
                gauges[name].add_metric([alias], float(value))
        for version, stats in row["versions"].items():
            requests.add_metric([alias, version], float(stats["requests"]))
            errors.add_metric([alias, version], float(stats["errors"]))
            for name, family in per_version.items():
                if stats.get(name) is not None:
                    family.add_metric([alias, version], float(stats[name]))
        for size, count in row["batch_sizes"].items():
            batches.add_metric([alias, size], float(count))
    yield from (*gauges.values(), *per_version.values(), requests, errors, batches)


_HELP = {
    "time_to_start_seconds": "Submit to first start, per tier.",
    "checkpoint_upload_seconds": "Checkpoint copy, verify and upload to S3.",
    "preemptions": "Preemption requests, by who asked.",
    "autoscaler_decisions": "Autoscaler actions (start, stop, drain).",
    "resends": "Queued jobs whose lost message the supervisor published again.",
    "webhook_deliveries": "Webhook delivery attempts by outcome (delivered, retried, given_up, dead, dropped).",
    "bytes": "Checkpoint bytes uploaded to S3.",
    "depth": "Jobs waiting in every queue of the tier plus those held by workers.",
    "oldest": "Wait of the tier's oldest queued job.",
    "workers": "Live GPU workers, busy or idle.",
    "mem_total": "GPU memory per device.",
    "mem_used": "GPU memory in use per device (NVML).",
    "util": "GPU utilisation per device (NVML).",
    "sla": "Share of the tier's jobs that started within its target over the last 24 h.",
    "serve_queued": "Detect requests waiting for a replica of the deployment.",
    "serve_replicas_desired": "Replicas the deployment should run now (the serving scaler's decision).",
    "serve_replicas_ready": "Replicas warmed up and answering.",
    "serve_p99_ms": "p99 latency (ms) of the requests the alias answered in the last minute (absent without any).",
    "serve_cold_start_seconds": "The newest replica's dequeue-to-ready time.",
    "serve_v_share": "Percent of the alias's requests routed to the version (canary split).",
    "serve_v_p50_ms": "p50 latency (ms) of the version's newest requests.",
    "serve_v_p99_ms": "p99 latency (ms) of the version's newest requests.",
    "serve_v_mean_detections": "Mean detections per answered request of the version.",
    "serve_v_mean_confidence": "Mean confidence of the version's detections.",
    "serve_requests": "Detect requests answered by the version (errors included).",
    "serve_errors": "Detect requests of the version that failed (undecodable image, model error).",
    "serve_batches": "Batches the deployment's replicas ran, by batch size (the dynamic batcher's histogram).",
    "runtime_prediction_error_ratio": "Finished jobs' |predicted - actual| / actual runtime (docs/eta.md).",
}
