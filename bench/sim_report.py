"""The simulated day's summary, tables and plot (``bench.simulate``): one row per scheduler, same arrivals."""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

from bench.sim_day import DAY_S, Job
from routing.sla import percentile
from routing.tiers import Tier

SMALL_MIB, BIG_MIB = 24 * 1024, 40 * 1024
# The first table keeps the columns of the earlier runs, so their figures stay comparable.
OLD_COLUMNS = ["scheduler", "critical_p95_wait_min", "high_p95_wait_min", "preemptions_per_job",
               "max_preemptions_one_job", "gpu_utilisation", "low_batch_finished", "finished"]  # fmt: skip
NEW_COLUMNS = ["scheduler", "medium_p95_wait_min", "low_p95_wait_min", "batch_p95_wait_min", "small_p95_wait_min",
               "big_p95_wait_min", "not_started", "work_gpu_h", "loans", "reclaims", "defrag_moves",
               "spread_moves"]  # fmt: skip
GANG_COLUMNS = ["scheduler", "gpu_utilisation", "critical_p95_wait_min", "gang_p95_wait_min", "gangs_started",
                "gangs_finished", "gangs_arrived", "partial_starts", "preemptions_per_job", "low_batch_finished",
                "finished", "loans", "reclaims"]  # fmt: skip


def _p95_min(waits: list[float]) -> float:
    return round((percentile(waits, 0.95) or 0) / 60, 1)


def summarise(kind: str, started: list[Job], waiting: list[Job], busy_s: float,
              counts: dict[str, int]) -> dict[str, Any]:  # fmt: skip
    """One row: waits of the jobs on a GPU or finished at the end of the day, work, preemptions of every job."""
    jobs = started + waiting
    waits = {t: [j.started - j.submitted for j in started if j.tier is t and j.started is not None] for t in Tier}
    by_size = [(j.need_mib, j.started - j.submitted) for j in started if j.started is not None]
    preempts = [len(j.preempted_at) for j in jobs]
    finished = [j for j in jobs if j.finished is not None]
    return {
        "scheduler": kind,
        "critical_p95_wait_min": _p95_min(waits[Tier.CRITICAL]),
        "critical_started": len(waits[Tier.CRITICAL]),
        "high_p95_wait_min": _p95_min(waits[Tier.HIGH]),
        "preemptions_per_job": round(statistics.mean(preempts), 3) if preempts else 0.0,
        "max_preemptions_one_job": max(preempts, default=0),
        "gpu_utilisation": round(busy_s / (DAY_S * 16), 3),
        "low_batch_finished": sum(1 for j in finished if j.tier in (Tier.LOW, Tier.BATCH)),
        "finished": len(finished),
        "medium_p95_wait_min": _p95_min(waits[Tier.MEDIUM]),
        "low_p95_wait_min": _p95_min(waits[Tier.LOW]),
        "batch_p95_wait_min": _p95_min(waits[Tier.BATCH]),
        "small_p95_wait_min": _p95_min([w for need, w in by_size if need <= SMALL_MIB]),
        "big_p95_wait_min": _p95_min([w for need, w in by_size if need >= BIG_MIB]),
        "not_started": sum(1 for j in jobs if j.started is None),
        "work_gpu_h": round(sum(min(j.done_s, j.work_s) * j.width for j in jobs) / 3600, 1),
        "loans": counts.get("loans", 0),
        "reclaims": counts.get("reclaims", 0),
        "defrag_moves": counts.get("defrag_moves", 0),
        "spread_moves": counts.get("spread_moves", 0),
        "gang_p95_wait_min": _p95_min(
            [j.started - j.submitted for j in started if j.width > 1 and j.started is not None]
        ),
        "gangs_started": sum(1 for j in jobs if j.width > 1 and j.started is not None),
        "gangs_finished": sum(1 for j in finished if j.width > 1),
        "gangs_arrived": sum(1 for j in jobs if j.width > 1),
        "partial_starts": counts.get("partial_starts", 0),
        "waits_min": {t.value: [round(w / 60, 1) for w in waits[t]] for t in Tier},
        "small_waits_min": [round(w / 60, 1) for need, w in by_size if need <= SMALL_MIB],
    }


def table(rows: list[dict[str, Any]], cols: list[str]) -> list[str]:
    """A Markdown table of ``cols`` for every row."""
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    return lines + ["| " + " | ".join(str(r[c]) for c in cols) + " |" for r in rows]


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    """Time-to-start CDFs: critical, low, and small jobs (≤ 24 GiB, every tier)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    fig, axes = plt.subplots(1, 3, figsize=(14, 3.8))
    for row in rows:
        series = (row["waits_min"]["critical"], row["waits_min"]["low"], row["small_waits_min"])
        for ax, title, sample in zip(axes, ("critical", "low", "small jobs (≤ 24 GiB)"), series, strict=True):
            waits = sorted(sample)
            ax.plot(waits, [i / max(len(waits), 1) for i in range(len(waits))], label=row["scheduler"])
            ax.set_title(f"{title}: time to start (CDF)")
            ax.set_xlabel("minutes")
            ax.set_xscale("symlog")
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
