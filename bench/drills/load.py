"""Drill 7, load: 10,000 probe jobs (1,000 in --quick) across five tiers and four teams queued on a one-GPU
simulated fleet (one probe runs, the rest wait; two teams' critical jobs are held for approval), with the API and
Flower up. Measured as the queue grows: submit rate through ``Client.submit`` (and, as baseline, plain Celery
``apply_async`` of a no-op to a queue of its own on the same Redis), status latency (in-process ``Client.status``,
``GET /api/v1/status``, ``/api/v1/queues``, ``/metrics``, the ``/status`` page; ``yoloq status --json`` at the
end), Redis ``used_memory`` per queued job, Flower's pages. Then nothing may be lost: the registry holds every job
submitted, each in the state its admission gave it, and every queued or running job's current attempt is in the
broker exactly once (waiting in its queue or unacked), with no message for anything else."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections import Counter
from typing import Any, cast

from bench.drills import surfaces
from bench.drills.outcome import Outcome
from bench.drills.surfaces import Surfaces, percentiles
from bench.harness.plain_tasks import QUEUE as PLAIN_QUEUE
from bench.harness.plain_tasks import create_plain_app
from bench.harness.stack import yoloq_fleet
from infra.registry import RedisRegistry
from routing.tiers import TIERS, all_queues
from tasks.specs import ProbeSpec
from tasks.states import JobState
from workers.stack import Services
from yoloq.client import Client

GPUS = "0:A100:40"  # one simulated GPU: one probe holds it, every other job waits
TEAMS = ("vision", "edge", "qa", "research")
PRE_APPROVED = ("vision", "edge")  # the other teams' critical jobs are held for approval, outside the queues
STEPS = 10  # status latency is measured at each tenth of the load
SAMPLES = 5  # calls per view per step
BOUND_STATUS_S = 1.0  # p99 of every status view, at full depth
BOUND_FLOWER_S = 5.0  # each Flower page
BOUND_BYTES_PER_JOB = 16 * 1024  # Redis memory per queued job (record, history, indexes, message)
MIN_SUBMIT_RATE = 50.0  # jobs/s through Client.submit, one thread
VIEWS = ("/api/v1/status", "/api/v1/queues", "/metrics", "/status")


def _spec(n: int) -> ProbeSpec:
    """Job n of the load: tiers round-robin, teams by fives, each a one-hour probe (it never finishes here)."""
    return ProbeSpec(seconds=3600, tier=TIERS[n % len(TIERS)], team=TEAMS[(n // len(TIERS)) % len(TEAMS)])


def _used_memory(client: Client) -> int:
    return int(cast("dict[str, Any]", client.registry.client.info("memory"))["used_memory"])


def _time_views(client: Client, api: Surfaces) -> dict[str, list[float]]:
    """SAMPLES timed calls of each status view: in-process and over HTTP (a non-200 is a failed sample)."""
    out: dict[str, list[float]] = {"Client.status": [], **{v: [] for v in VIEWS}}
    for _ in range(SAMPLES):
        started = time.perf_counter()
        client.status()
        out["Client.status"].append(time.perf_counter() - started)
        for view in VIEWS:
            answer = api.get(view)
            out[view].append(answer.seconds if answer.status == 200 else float("inf"))
    return out


def _submit_all(client: Client, api: Surfaces, total: int) -> tuple[list[str], list[float], list[dict[str, Any]]]:
    """Submit ``total`` jobs in STEPS chunks; after each, time the status views. Returns job ids, per-chunk submit
    seconds and the per-step latency rows."""
    ids: list[str] = []
    chunk_s: list[float] = []
    steps: list[dict[str, Any]] = []
    chunk = max(1, total // STEPS)
    while len(ids) < total:
        started = time.perf_counter()
        for n in range(len(ids), min(total, len(ids) + chunk)):
            ids.append(client.submit(_spec(n)).job_id)
        chunk_s.append(time.perf_counter() - started)
        timed = _time_views(client, api)
        steps.append({"jobs": len(ids), **{k: percentiles(v) for k, v in timed.items()}})
    return ids, chunk_s, steps


def _plain_rate(services: Services, total: int) -> dict[str, float]:
    """Plain Celery: ``apply_async`` of the baseline no-op ``total`` times to its own queue (nobody consumes it),
    timed; its Redis memory per message; the queue is deleted afterwards."""
    app, noop = create_plain_app(services.settings)
    client = Client(services.settings)
    before = _used_memory(client)
    started = time.perf_counter()
    for n in range(total):
        noop.apply_async(args=(f"load-{n}",))
    seconds = time.perf_counter() - started
    per_message = (_used_memory(client) - before) / total
    depth = cast(int, client.registry.client.llen(PLAIN_QUEUE))
    client.registry.client.delete(PLAIN_QUEUE)
    app.close()
    return {"jobs_per_s": round(total / seconds, 1), "bytes_per_message": round(per_message), "queued": depth}


def _broker_ids(client: Client) -> Counter[str]:
    """Task id of every message waiting in a yoloq queue or held unacked, counted (a duplicate shows as 2)."""
    redis = client.registry.client
    pipe = redis.pipeline(transaction=False)
    for queue in all_queues():
        pipe.lrange(queue, 0, -1)
    found: Counter[str] = Counter()
    for items in pipe.execute():
        found.update(json.loads(raw)["headers"]["id"] for raw in items)
    for raw in cast("list[str]", redis.hvals("unacked")):
        found[json.loads(raw)[0]["headers"]["id"]] += 1
    return found


def _expected_state(n: int) -> set[JobState]:
    """What admission gives job n: held when critical for a team without pre-approval, else queued (or running)."""
    spec = _spec(n)
    if spec.tier is TIERS[0] and spec.team not in PRE_APPROVED:
        return {JobState.HELD}
    return {JobState.QUEUED, JobState.RUNNING}


def check_nothing_lost(outcome: Outcome, client: Client, ids: list[str]) -> dict[str, int]:
    """Every job in the registry in its expected state, each live attempt in the broker exactly once, nothing
    else there; returns the count per state. ``outcome.lost`` counts jobs missing or without their message."""
    registry: RedisRegistry = client.registry
    registered = cast(int, registry.client.zcard("yoloq:jobs"))
    outcome.check(registered == len(ids), f"registry holds {registered} jobs, {len(ids)} were submitted")
    records = {r.job_id: r for r in registry.many(ids)}
    in_broker = _broker_ids(client)
    states: Counter[str] = Counter()
    lost = wrong = 0
    for n, job_id in enumerate(ids):
        record = records.get(job_id)
        if record is None:
            lost += 1
            continue
        states[record.state.value] += 1
        wrong += record.state not in _expected_state(n)
        live = record.state in (JobState.QUEUED, JobState.RUNNING)
        copies = in_broker.pop(record.attempts[-1].task_id, 0) if record.attempts else 0
        lost += live and copies == 0
        outcome.duplicated += max(0, copies - 1)
        outcome.check(live or copies == 0, f"{record.state.value} job {job_id} still has a message in the broker")
    outcome.lost += lost
    outcome.check(lost == 0, f"{lost} submitted jobs missing from the registry or from the broker")
    outcome.check(wrong == 0, f"{wrong} jobs not in the state their admission gives them")
    outcome.check(not in_broker, f"{len(in_broker)} messages in the broker for no queued job")
    outcome.check(states["running"] <= 1, f"{states['running']} jobs running on one GPU")
    return dict(states)


def _depth_consistent(outcome: Outcome, client: Client, states: dict[str, int]) -> None:
    """The views agree with the registry: depth (waiting + unacked) = queued + running jobs; waiting = queued (less
    one a worker has just taken)."""
    live = states.get("queued", 0) + states.get("running", 0)
    view = client.queues()["total"]
    waiting, queued = sum(client.status()["queues"].values()), states.get("queued", 0)
    outcome.check(view == live, f"/api/v1/queues total {view} != {live} queued and running jobs")
    outcome.check(waiting in (queued, queued - 1), f"status: {waiting} waiting for {queued} queued jobs")


def _cli_status(services: Services, runs: int = 3) -> list[float]:
    """Seconds of whole ``yoloq status --json`` processes at full depth (start-up included)."""
    out = []
    for _ in range(runs):
        started = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "yoloq", "status", "--json"], env=services.env(),
                              capture_output=True, timeout=120, check=False)  # fmt: skip
        out.append(time.perf_counter() - started if done.returncode == 0 else float("inf"))
    return out


def _flower(outcome: Outcome, api: Surfaces) -> dict[str, float]:
    """Flower's dashboard, worker list and broker page answer 200 within BOUND_FLOWER_S each."""
    out = {}
    for path in ("/", "/api/workers", "/broker"):
        answer = api.flower_get(path, timeout_s=60)
        out[path] = round(answer.seconds, 3)
        ok = answer.status == 200 and answer.seconds <= BOUND_FLOWER_S
        outcome.check(ok, f"Flower {path}: {answer.status} in {answer.seconds:.1f} s (bound {BOUND_FLOWER_S} s)")
    return out


def _bounds(outcome: Outcome, steps: list[dict[str, Any]], cli_s: list[float], per_job: float, rate: float) -> None:
    last = steps[-1]
    for view in ("Client.status", *VIEWS):
        p99 = last[view]["p99_ms"] / 1000
        outcome.check(p99 <= BOUND_STATUS_S, f"{view} p99 {p99:.2f} s at {last['jobs']} jobs (bound {BOUND_STATUS_S})")
    outcome.check(max(cli_s) <= 2 * BOUND_STATUS_S, f"yoloq status --json took {max(cli_s):.2f} s at full depth")
    outcome.check(per_job <= BOUND_BYTES_PER_JOB, f"{per_job:.0f} bytes of Redis per queued job")
    outcome.check(rate >= MIN_SUBMIT_RATE, f"submit rate {rate:.0f} jobs/s under {MIN_SUBMIT_RATE}")


def run(quick: bool) -> Outcome:
    """Queue the load, measure as it grows, check nothing is lost."""
    total = 1_000 if quick else 10_000
    outcome = Outcome(name="load", faults=f"{total} queued probe jobs, 5 tiers x 4 teams, 1 GPU", jobs=total,
                      command=f"python -m bench.drills {'--quick ' if quick else ''}load")  # fmt: skip
    with yoloq_fleet(GPUS, prefix="yoloq-drill-load-") as stack:
        api = surfaces.start(stack.services)
        client = Client(stack.services.settings)
        for team in PRE_APPROVED:
            client.preapprove(team)
        empty = _time_views(client, api)
        before = _used_memory(client)
        ids, chunk_s, steps = _submit_all(client, api, total)
        per_job = (_used_memory(client) - before) / total
        rate = total / sum(chunk_s)
        states = check_nothing_lost(outcome, client, ids)
        _depth_consistent(outcome, client, states)
        cli_s = _cli_status(stack.services)
        flower = _flower(outcome, api)
        outcome.baseline = {"plain Celery apply_async": _plain_rate(stack.services, total)}
        _bounds(outcome, steps, cli_s, per_job, rate)
    outcome.check(not stack.leaked, f"processes outlived the stack: {stack.leaked}")
    outcome.figures = {
        "submit_jobs_per_s": round(rate, 1), "submit_jobs_per_s_by_tenth": [round(chunk / s, 1) for s in chunk_s
                                                                           for chunk in [total // STEPS]],
        "redis_bytes_per_job": round(per_job), "states": states, "status_empty": {k: percentiles(v)
                                                                                   for k, v in empty.items()},
        "status_by_depth": steps, "yoloq_status_json_s": [round(s, 3) for s in cli_s], "flower_s": flower,
    }  # fmt: skip
    return outcome
