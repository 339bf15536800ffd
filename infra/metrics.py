"""Prometheus metrics: counters and histograms kept in Redis (every process adds, none owns them), exposed by the
API's ``/metrics`` through a collector that reads Redis at scrape time.

Keeping them in Redis makes them survive restarts and lets short-lived processes (job processes, CLI) count too;
each observation is one pipelined round trip. Names are the contract of infra/grafana and infra/k8s:
``yoloq_queue_depth{tier}``, ``yoloq_queue_oldest_wait_seconds{tier}``, ``yoloq_time_to_start_seconds{tier}``
(histogram), ``yoloq_preemptions_total{reason}``, ``yoloq_checkpoint_upload_seconds`` (histogram),
``yoloq_checkpoint_upload_bytes_total``, ``yoloq_gpu_memory_total_bytes{gpu,host}``,
``yoloq_gpu_memory_used_bytes{gpu,host}``, ``yoloq_gpu_utilization_ratio{gpu,host}`` (NVML's figures, or on a
simulated GPU its job's reserved memory and 1/0 busy/idle), ``yoloq_workers{state}``,
``yoloq_autoscaler_decisions_total{action}``, ``yoloq_sla_compliance_ratio{tier}``,
``yoloq_runtime_prediction_error_ratio`` (histogram of finished jobs' ``|predicted - actual| / actual`` runtime),
``yoloq_webhook_deliveries_total{outcome}`` (delivered, retried, given_up, dead, dropped: workers.notifier).

This module only writes them (no prometheus_client import: every submit passes through here); the exposition is
``infra/prometheus.py``.
"""

from __future__ import annotations

import json
from typing import Any

P = "yoloq:metrics:"
TTS_BUCKETS = (1.0, 5.0, 30.0, 60.0, 300.0, 900.0, 1800.0, 3600.0, 4 * 3600.0, 24 * 3600.0)
UPLOAD_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
# |predicted - actual| / actual runtime of finished jobs (infra.runtime_history)
ERROR_BUCKETS = (0.05, 0.1, 0.2, 0.3, 0.5, 1.0, 2.0, 5.0)
HISTOGRAMS = {
    "time_to_start_seconds": TTS_BUCKETS,
    "checkpoint_upload_seconds": UPLOAD_BUCKETS,
    "runtime_prediction_error_ratio": ERROR_BUCKETS,
}


def labels_key(name: str) -> str:
    """The set of label values a histogram has been observed under: a scrape reads those keys, never a SCAN of the
    keyspace (with 10,000 queued jobs each scrape took 0.3 s scanning for a handful of keys)."""
    return f"{P}hist-labels:{name}"


def observe(pipe: Any, name: str, label: str, value: float) -> None:
    """Queue one histogram observation (cumulative bucket counts, sum, count) on a pipeline or client."""
    key = f"{P}hist:{name}:{label}"
    pipe.sadd(labels_key(name), label)
    for bound in HISTOGRAMS[name]:
        if value <= bound:
            pipe.hincrby(key, f"le:{bound:g}", 1)
    pipe.hincrby(key, "count", 1)
    pipe.hincrbyfloat(key, "sum", value)


def count(pipe: Any, name: str, label: str, amount: float = 1.0) -> None:
    """Queue one counter increment (``label`` is the counter's one label value, "" for none)."""
    pipe.hincrbyfloat(f"{P}counter:{name}", label, amount)


def preemption_reason(by: str, reason: str) -> str:
    """The label of a preemption: who asked (supervisor, SLA urgency, defragmentation, operator, recovery)."""
    if by == "supervisor" and reason.startswith("defragmentation") and ": moved to" in reason:
        return "defrag"  # a move; a defragmentation's requeue is a preemption for priority like any other
    if by == "supervisor":
        return "sla-urgent" if "(SLA-urgent)" in reason else "priority"
    return by if by in {"recovery", "shutdown"} else "operator"


def decode(raw: str) -> Any:
    """JSON-decode a stored value, or give it back as it is."""
    try:
        return json.loads(raw)
    except ValueError:
        return raw
