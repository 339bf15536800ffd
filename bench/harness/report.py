"""Percentiles, machine facts and the Markdown table of the dispatch benchmark; writing any bench's results."""

from __future__ import annotations

import contextlib
import json
import math
import os
import platform
import statistics
import time
from importlib.metadata import version
from pathlib import Path
from typing import Any

import celery
import redis

STATS = ("p50", "p95", "p99", "mean")


def summary(samples: list[float]) -> dict[str, float]:
    """Nearest-rank p50/p95/p99 and the mean, in milliseconds."""
    ordered = sorted(samples)

    def pick(q: float) -> float:
        return ordered[max(0, math.ceil(q * len(ordered)) - 1)] * 1000

    return {"p50": pick(0.50), "p95": pick(0.95), "p99": pick(0.99), "mean": statistics.fmean(ordered) * 1000}


def ratios(ours: dict[str, float], theirs: dict[str, float]) -> dict[str, float]:
    """ours / theirs per statistic."""
    return {k: ours[k] / theirs[k] for k in STATS}


def machine(client: redis.Redis) -> dict[str, Any]:
    """What the figures were measured on."""
    model = ""
    with contextlib.suppress(OSError):
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        model = next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")), "")
    return {
        "nproc": os.cpu_count(),
        "cpu": model,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "celery": celery.__version__,
        "kombu": version("kombu"),
        "redis_server": str(client.info("server").get("redis_version", "?")),
        "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def markdown(doc: dict[str, Any]) -> str:
    """The results as a Markdown table with the verdict against the targets."""
    m, lat, sub = doc["machine"], doc["latency_ms"], doc["submit_call_ms"]
    ratio, ok = doc["ratio"], doc["meets_targets"]
    rows = [
        f"| {k} | {lat['yoloq'][k]:.2f} | {lat['plain'][k]:.2f} | {ratio[k]:.2f}× | {lat['plain_exact'][k]:.2f} "
        f"| {sub['yoloq'][k]:.2f} | {sub['plain'][k]:.2f} |"
        for k in STATS
    ]
    lines = [
        f"Submit→start latency, {doc['n']} no-op jobs each, closed loop, interleaved in blocks of {doc['block']}, "
        f"same Redis {m['redis_server']}, one prefork worker each (c=1, prefetch 1, acks_late, -O fair, -E).",
        f"{m['at']}, {m['nproc']} cores ({m['cpu']}), Python {m['python']}, Celery {m['celery']}.",
        "",
        "| | yoloq ms | plain Celery ms | ratio | plain, exact clock ms | yoloq submit() ms | plain apply_async ms |",
        "|---|---|---|---|---|---|---|",
        *rows,
        "",
        f"Targets: p50 ≤ {doc['targets']['p50']}× ({ratio['p50']:.2f}×, {'met' if ok['p50'] else 'MISSED'}), "
        f"p99 ≤ {doc['targets']['p99']}× ({ratio['p99']:.2f}×, {'met' if ok['p99'] else 'MISSED'}).",
        "",
        f"Both latency columns use yoloq's `started_at` resolution (ISO, truncated to 1 ms) plus 0.5 ms; "
        f"'plain, exact clock' is the baseline at full clock resolution, a check on that correction. "
        f"Poll interval {doc['poll_ms']} ms for both.",
    ]
    return "\n".join(lines) + "\n"


RESULTS = Path(__file__).resolve().parents[1] / "results"


def write_results(name: str, doc: dict[str, Any], lines: list[str]) -> None:
    """A bench's figures as bench/results/NAME.json and its table as NAME.md (printed too)."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(doc, indent=2))
    (RESULTS / f"{name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
