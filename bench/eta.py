"""ETA error on the simulated day: the start time yoloq predicts for a job at submit against when it really starts.

The day is ``bench.simulate``'s seeded arrivals (16 GPUs: 8 × 80 GB, 8 × 40 GB; five tiers; 8–70 GB jobs). Each job
is given a training shape: its memory need picks the model scale (8 GB → yolov8n … 70 GB → yolov8x), it trains one of
six datasets at imgsz 640, batch 16, for the epochs that make up its drawn hours. A run's true seconds per batch is
its scale's base figure, × 1.6 on the 40 GB cards (an older GPU model), × a seeded per-run noise (lognormal, σ 0.1);
each run first spends 1–10 min (seeded) starting (data, model) with no progress.
GPUs take work by the written order (``routing.eta.pick``), event by event; no preemption (the supervisor's
preemptions are not replayed: a later higher-tier job passes waiting ones, which no ETA at submit can foresee).

At each arrival every ETA estimator predicts the new job's start with ``routing.eta.standings`` over the same
snapshot (the same actual schedule: predictions never steer it):
- ``yoloq`` (what ``yoloq job --json`` shows): runtimes from ``routing.runtime_estimate`` over the history of jobs
  finished so far (seconds per batch per model, imgsz, batch and GPU model), running jobs' remaining time blending
  that with their progress;
- ``yoloq+arrival-load``: the same, plus higher-tier work arriving at the last 24 h's rate stretching lower tiers'
  ETAs (``routing.eta.arrival_shares``);
- ``baseline``: what one has without per-shape history: every queued job expected to run the mean runtime of the
  jobs finished so far (1 h before any finished), running jobs' remaining time from their progress pace alone (the
  supervisor's former rule).
Error of one job: ``|predicted wait - actual wait| / max(actual wait, 5 min)`` (a wait under 5 minutes is judged
against 5 minutes). Reported over all jobs that started and over those that waited at least 5 minutes.

Run: ``.venv/bin/python -m bench.eta``; writes bench/results/eta.{json,md}.
"""

from __future__ import annotations

import json
import math
import random
import statistics
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.simulate import DAY_S, arrivals
from routing.eta import Device, Queued, arrival_shares, in_submit_order, pick, standings
from routing.runtime_estimate import Sample, Shape, expected, remaining
from routing.sla import percentile
from routing.tiers import Tier, route, tier_of_queue

ROOT = Path(__file__).resolve().parents[1]
SCALE = {8: "yolov8n", 16: "yolov8s", 24: "yolov8m", 40: "yolov8l", 70: "yolov8x"}
S_PER_BATCH = {"yolov8n": 0.06, "yolov8s": 0.09, "yolov8m": 0.18, "yolov8l": 0.27, "yolov8x": 0.42}  # on the 80 GB card
DATASETS = {f"s3://data/line{i}": n for i, n in enumerate((2_000, 4_000, 8_000, 16_000, 32_000, 64_000))}
GPU_MODEL = {81_920: ("H100", 1.0), 40_960: ("A100", 1.6)}
FLOOR_S = 300.0
SEED = 11
SEEDS = (SEED, 12, 13)
WINDOW_S = 24 * 3600.0


@dataclass
class Job:
    """A job of the day: its shape, its true pace, and what happened to it."""

    job_id: str
    queue: str
    submitted: float
    shape: Shape
    batches: int  # per epoch
    noise: float
    startup_s: float  # no progress while it fetches data and builds the model
    started: float | None = None
    gpu: int | None = None
    ends: float = 0.0
    predicted: dict[str, float | None] | None = None
    runtime_guess: dict[str, float | None] | None = None


def jobs_of_the_day(seed: int) -> list[Job]:
    """The simulated day's arrivals, each given a training shape whose nominal runtime is its drawn work."""
    rng, out = random.Random(seed), []
    for a in arrivals(seed):
        model, data = SCALE[a.need_mib // 1024], rng.choice(sorted(DATASETS))
        batches = math.ceil(DATASETS[data] / 16)
        epochs = max(1, round(a.work_s / (batches * S_PER_BATCH[model])))
        shape = Shape("train", model, data, 640, 16, epochs)
        queue = route(a.tier, a.need_mib).queue
        noise, startup = math.exp(rng.gauss(0, 0.1)), rng.uniform(60, 600)
        out.append(Job(a.job_id, queue, a.submitted, shape, batches, noise, startup))
    return out


class Day:
    """The fleet replayed event by event under the written order, with each estimator's predictions at submit."""

    def __init__(self, jobs: list[Job]) -> None:
        self.jobs, self.now = jobs, 0.0
        self.memory = [81_920] * 8 + [40_960] * 8
        self.on: list[Job | None] = [None] * len(self.memory)
        self.waiting: list[Job] = []
        self.history: list[Sample] = []
        self.finished: list[Job] = []

    def true_runtime(self, job: Job, gpu: int) -> float:
        """Seconds the job takes on that GPU."""
        per_batch = S_PER_BATCH[job.shape.model] * GPU_MODEL[self.memory[gpu]][1] * job.noise
        return job.startup_s + job.shape.epochs * job.batches * per_batch

    def finish_until(self, t: float) -> None:
        """End every job due by ``t``, in order, each freeing its GPU for the waiting work."""
        while True:
            due = [(j.ends, g) for g, j in enumerate(self.on) if j is not None and j.ends <= t]
            if not due:
                return
            ends, gpu = min(due)
            job = self.on[gpu]
            assert job is not None
            self.now, self.on[gpu] = ends, None
            model = GPU_MODEL[self.memory[gpu]][0]
            spb = (ends - (job.started or 0.0)) / (job.shape.epochs * job.batches)
            self.history.append(Sample(job.shape.model, job.shape.data, 640, 16, model, job.batches, spb))
            self.finished.append(job)
            self.dispatch()

    def dispatch(self) -> None:
        """Free GPUs (lowest index first, as the replay orders them) take work by the written order."""
        for gpu, held in enumerate(self.on):
            if held is not None or not self.waiting:
                continue
            queues = in_submit_order([Queued(j.job_id, j.queue, j.submitted, None) for j in self.waiting])
            chosen = pick(self.memory[gpu], {q: js[0].submitted_ts for q, js in queues.items()})
            if chosen is None:
                continue
            job = next(j for j in self.waiting if j.job_id == queues[chosen][0].job_id)
            self.waiting.remove(job)
            job.started, job.gpu, self.on[gpu] = self.now, gpu, job
            job.ends = self.now + self.true_runtime(job, gpu)

    def arrive(self, job: Job, estimators: dict[str, Callable[[Day, Job | None], float | None]]) -> None:
        """Queue the job, predict its start with each estimator, then let free GPUs take work."""
        self.finish_until(job.submitted)
        self.now = job.submitted
        self.waiting.append(job)
        job.predicted = {name: self.predict(job, est) for name, est in estimators.items()}
        job.runtime_guess = {name: est(self, job) for name, est in estimators.items()}
        self.dispatch()

    def predict(self, job: Job, runtime_of: Callable[[Day, Job | None], float | None]) -> float | None:
        """Seconds until ``job`` starts, by replaying the order with ``runtime_of``'s runtimes."""
        devices = [
            Device(str(g), mib, 0.0 if (j := self.on[g]) is None else max(self.left(j, runtime_of), 0.0))
            for g, mib in enumerate(self.memory)
        ]
        queued = [Queued(j.job_id, j.queue, j.submitted, runtime_of(self, j)) for j in self.waiting]
        shares = self.shares() if runtime_of is ours_stretched else None
        return standings(devices, in_submit_order(queued), shares)[job.job_id].eta_start_s

    def shares(self) -> dict[Tier, float]:
        """The higher-tier load each tier sees, from the arrivals of the last 24 h (at least 1 h of window)."""
        since = self.now - WINDOW_S
        recent = [(tier_of_queue(j.queue), ours(self, j) or 0.0) for j in self.jobs if since <= j.submitted <= self.now]
        return arrival_shares(recent, max(min(self.now, WINDOW_S), 3600.0), len(self.memory))

    def left(self, job: Job, runtime_of: Callable[[Day, Job | None], float | None]) -> float:
        """A running job's remaining time as the estimator sees it (progress is exact: batches done so far)."""
        elapsed = self.now - (job.started or 0.0)
        training = job.ends - (job.started or 0.0) - job.startup_s
        done = max(elapsed - job.startup_s, 0.0) / training if training > 0 else 1.0
        if runtime_of is baseline:
            return remaining(None, done, elapsed)
        gpu = GPU_MODEL[self.memory[job.gpu or 0]][0]
        return remaining(expected(_on(job.shape, gpu), self.history).seconds, done, elapsed)


def _on(shape: Shape, gpu: str) -> Shape:
    return Shape(shape.kind, shape.model, shape.data, shape.imgsz, shape.batch, shape.epochs, gpu)


def ours(day: Day, job: Job | None) -> float | None:
    """yoloq: the runtime estimate's fallback chain over the history so far (GPU unknown while waiting)."""
    assert job is not None
    return expected(job.shape, day.history).seconds


def baseline(day: Day, job: Job | None) -> float | None:
    """No per-shape history: the mean runtime of jobs finished so far (1 h before any)."""
    runs = [j.ends - (j.started or 0.0) for j in day.finished]
    return statistics.fmean(runs) if runs else 3600.0


def ours_stretched(day: Day, job: Job | None) -> float | None:
    """yoloq's runtimes, with the arrival stretch on the ETA (chosen by this function's identity in ``predict``)."""
    return ours(day, job)


ESTIMATORS: dict[str, Callable[[Day, Job | None], float | None]] = {
    "yoloq": ours,
    "yoloq+arrival-load": ours_stretched,
    "baseline": baseline,
}


def errors(jobs: list[Job], name: str, waited_only: bool) -> list[float]:
    """Relative ETA errors of one estimator over the jobs that started (and waited, if asked)."""
    out = []
    for j in jobs:
        if j.started is None or j.predicted is None or j.predicted[name] is None:
            continue
        actual, guess = j.started - j.submitted, float(j.predicted[name] or 0.0)
        if waited_only and actual < FLOOR_S:
            continue
        out.append(abs(guess - actual) / max(actual, FLOOR_S))
    return out


def run(seed: int = SEED) -> dict[str, Any]:
    """Replay the day once; summarise each estimator's ETA error on the same schedule."""
    jobs = jobs_of_the_day(seed)
    day = Day(jobs)
    for job in jobs:
        day.arrive(job, ESTIMATORS)
    day.finish_until(DAY_S)
    started = [j for j in jobs if j.started is not None]
    waited = sum(1 for j in started if (j.started or 0) - j.submitted >= FLOOR_S)
    rows: dict[str, Any] = {"seed": seed, "jobs": len(jobs), "started": len(started), "waited_5min": waited}
    for name in ESTIMATORS:
        ran = [
            (float((j.runtime_guess or {})[name] or 0), j.ends - (j.started or 0)) for j in started if j.ends <= DAY_S
        ]
        off = [abs(guess - actual) / actual for guess, actual in ran]
        rows[f"{name}_runtime_p50"], rows[f"{name}_runtime_p95"] = percentile(off, 0.5), percentile(off, 0.95)
        for scope, waited in (("all", False), ("waited", True)):
            errs = errors(jobs, name, waited)
            rows[f"{name}_{scope}_p50"] = percentile(errs, 0.5)
            rows[f"{name}_{scope}_p95"] = percentile(errs, 0.95)
    return rows


def markdown(r: dict[str, Any]) -> list[str]:
    """The results table."""
    head = "| seed | estimator | ETA p50 all | ETA p95 all | ETA p50 waited ≥ 5 min | ETA p95 waited ≥ 5 min "
    lines = [head + "| runtime p50 | runtime p95 |", "|---" * 8 + "|"]
    for name in ESTIMATORS:
        keys = [f"{name}_{s}_{q}" for s in ("all", "waited", "runtime") for q in ("p50", "p95")]
        lines.append(f"| {r['seed']} | {name} | " + " | ".join(f"{100 * r[k]:.1f} %" for k in keys) + " |")
    return lines


def main() -> None:
    """Run the bench on the simulated day (seed 11) and two more seeds; write bench/results/eta.{json,md}."""
    results = [run(seed) for seed in SEEDS]
    out = ROOT / "bench" / "results"
    (out / "eta.json").write_text(json.dumps(results, indent=2) + "\n")
    intro = [f"seed {r['seed']}: {r['jobs']} jobs, {r['started']} started, {r['waited_5min']} waited >= 5 min"
             for r in results]  # fmt: skip
    lines = ["ETA error at submit (|predicted wait - actual wait| / max(actual wait, 5 min)) and runtime error at "
             "submit (|expected - actual| / actual), same schedule for every estimator:", "",
             *(f"- {i}" for i in intro), "", *markdown(results[0])]  # fmt: skip
    for r in results[1:]:
        lines += markdown(r)[2:]
    (out / "eta.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
