"""Gangs in the running system: what holding K GPUs together costs a job's start, and what backfill wins back.

Real worker processes on one simulated host of 4 GPUs and a real supervisor (``--interval 0.2``), one run:

1. Submit→start (registry ``started_at`` − ``submitted_at``) of a 2-GPU probe gang vs a 1-GPU probe on an idle
   fleet, N of each, alternated, closed loop (each waited to its end; after a gang, until its hold is released and
   its GPUs' workers take tier-queue work again). The gang's figure includes by design the settle time
   (``workers.gangs.SETTLE_S``: longer than a held GPU's worker takes to stop consuming its tier queues); it is split
   into submit→held, held→handed over (event ``gang-started``) and handed over→started.
2. Backfill on a reservation: two GPUs busy with fillers that outlast the phase, one with a probe of ``LONG_S``, one
   idle; a 2-GPU gang reserves the idle GPU and the long probe's, due when that probe ends. Once the hold has
   settled, ``SHORTS`` one-GPU probes arrive. Phase ``backfill``: probes of ``SHORT_S`` (each expected to end before
   the reservation is due: lent the idle reserved GPU one after the other). Phase ``no-lending``: probes of
   ``LONG_S`` + 10 s (none can end in time: never lent). For each: the loans that ran before the gang started, and
   the idle reserved GPU-seconds between the hold and the gang's start (both held GPUs; time no attempt used).
   The probes arrive only once the hold has settled (one taken by the reserved GPU's worker before its cordon watch
   stopped its tier queues is given back 2.5 s later: not what this phase measures; ``given back`` counts any).

Every job is the same tier (low): no preemption plays a part. Writes bench/results/gangs.{json,md}.
Run: ``.venv/bin/python -m bench.gangs [--n 10]``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if __package__ in (None, ""):  # run as `python bench/gangs.py`
    sys.path.insert(0, str(ROOT))

from bench.harness.report import machine, write_results  # noqa: E402
from bench.harness.stack import poll, yoloq_fleet  # noqa: E402
from infra.gang_holds import GANGS_KEY  # noqa: E402
from infra.redis_client import connect  # noqa: E402
from routing.sla import percentile  # noqa: E402
from tasks.records import JobRecord, parse_iso  # noqa: E402
from tasks.specs import ProbeSpec  # noqa: E402
from tasks.states import TERMINAL, JobState  # noqa: E402
from workers.cordon import CHECK_INTERVAL_S  # noqa: E402
from workers.gangs import SETTLE_S  # noqa: E402
from yoloq.client import Client, JobHandle  # noqa: E402

GPUS = "0:A100:40,1:A100:40,2:A100:40,3:A100:40"
SUPERVISOR = ("--interval", "0.2", "--leader-ttl", "3")
N, PROBE_S = 10, 1
LONG_S, SHORT_S, SHORTS = 30, 3, 12
FILL_S = LONG_S + 40  # the other two GPUs stay busy for the whole phase: nothing but the reserved GPU can take a job


def _probe(seconds: int, gpus: int = 1) -> ProbeSpec:
    return ProbeSpec(seconds=seconds, tier="low", team="bench", gpus=gpus)


def _ts(value: str | None) -> float:
    return parse_iso(value).timestamp() if value else float("nan")


def _event_at(record: JobRecord, kind: str) -> float | None:
    return next((_ts(e.at) for e in record.events if e.type == kind), None)


def _stats(samples: list[float]) -> dict[str, Any]:
    return {"n": len(samples), "p50_s": round(statistics.median(samples), 3),
            "p95_s": round(percentile(samples, 0.95) or 0.0, 3), "max_s": round(max(samples), 3),
            "samples_s": [round(x, 3) for x in samples]}  # fmt: skip


def _idle(client: Client) -> None:
    """Wait until no GPU is held and every worker's cordon watch has seen it (one check interval and a half)."""
    redis = client.registry.client
    poll(lambda: not redis.hlen(GANGS_KEY), 0.05, 60, "release of every gang hold")
    time.sleep(CHECK_INTERVAL_S * 1.5)


def _done(handle: JobHandle, timeout_s: float = 120) -> JobRecord:
    record = handle.wait(timeout_s=timeout_s, poll_s=0.05)
    if record.state is not JobState.SUCCEEDED or not record.started_at:
        raise RuntimeError(f"job {record.job_id} ended {record.state.value}: {record.error}")
    return record


def start_latency(client: Client, n: int) -> dict[str, Any]:
    """N one-GPU and N two-GPU probes on the idle fleet, alternated (which goes first swaps every round)."""
    single: list[float] = []
    gang: list[float] = []
    parts: dict[str, list[float]] = {"submit_to_held": [], "held_to_handed": [], "handed_to_started": []}
    for i in range(n):
        for k in (1, 2) if i % 2 == 0 else (2, 1):
            record = _done(client.submit(_probe(PROBE_S, gpus=k)))
            submitted, started = _ts(record.submitted_at), _ts(record.started_at)
            if k == 1:
                single.append(started - submitted)
                continue
            assert len(str(record.attempts[-1].gpu).split(",")) == 2, record.attempts
            held, handed = _event_at(record, "gang-held"), _event_at(record, "gang-started")
            assert held is not None and handed is not None, [e.type for e in record.events]
            gang.append(started - submitted)
            parts["submit_to_held"].append(held - submitted)
            parts["held_to_handed"].append(handed - held)
            parts["handed_to_started"].append(started - handed)
            _idle(client)
    out = {"single": _stats(single), "gang": _stats(gang), "gang_parts": {k: _stats(v) for k, v in parts.items()}}
    out["gang_over_settle_p50_s"] = round(out["gang"]["p50_s"] - SETTLE_S, 3)
    out["ratio_p50"] = round(out["gang"]["p50_s"] / out["single"]["p50_s"], 1)
    out["ratio_p95"] = round(out["gang"]["p95_s"] / out["single"]["p95_s"], 1)
    return out


def _busy_s(records: Iterable[JobRecord], gpu: str, lo: float, hi: float) -> float:
    """Seconds of [lo, hi] during which some attempt ran on ``gpu`` (attempts on one GPU never overlap)."""
    total = 0.0
    for record in records:
        for a in record.attempts:
            if a.started_at and gpu in str(a.gpu).split(","):
                end = _ts(a.ended_at) if a.ended_at else hi
                total += max(0.0, min(end, hi) - max(_ts(a.started_at), lo))
    return total


def _cancel_all(client: Client, handles: list[JobHandle]) -> None:
    for handle in handles:
        if handle.refresh().state not in TERMINAL:
            client.cancel(handle.job_id)
    for handle in handles:
        handle.wait(timeout_s=60, poll_s=0.1)


def drain(client: Client, short_s: int) -> dict[str, Any]:
    """One reservation draining behind a long probe, with one-GPU probes of ``short_s`` arriving once it settled."""
    fillers = [client.submit(_probe(FILL_S)) for _ in range(2)]
    long = client.submit(_probe(LONG_S))
    for handle in (*fillers, long):
        handle.wait({JobState.RUNNING}, timeout_s=60, poll_s=0.05)
    gang = client.submit(_probe(PROBE_S, gpus=2))
    held = poll(lambda: _event_at(gang.refresh(), "gang-held"), 0.05, 30, "the gang's reservation")
    time.sleep(max(0.0, held + SETTLE_S - time.time()))  # arrivals after the hold settled: see the docstring
    arrived = time.time()
    shorts = [client.submit(_probe(short_s)) for _ in range(SHORTS)]
    record = _done(gang, timeout_s=FILL_S + 60)
    start = _ts(record.attempts[-1].started_at)
    others = [h.refresh() for h in (*fillers, long, *shorts)]
    _cancel_all(client, [*fillers, long, *shorts])
    reserved = str(record.attempts[-1].gpu).split(",")
    window = start - held
    busy = {g: _busy_s(others, g, held, start) for g in reserved}
    lent = [r for r in others[3:] if any(e.type == "backfilled" for e in r.events)]
    ran = [r for r in lent if r.started_at and _ts(r.started_at) < start]
    long_gpu = str(others[2].attempts[-1].gpu)
    idle_gpu = next(g for g in reserved if g != long_gpu)
    return {
        "short_s": short_s, "reservation_s": round(window, 2), "reason": next(
            e.reason for e in record.events if e.type == "gang-held"),
        "loans_before_gang": len(ran), "loans_ended_before_gang": sum(
            1 for r in ran if r.attempts[-1].ended_at and _ts(r.attempts[-1].ended_at) <= start),
        "given_back": sum(e.type == "given-back" for r in others for e in r.events),
        "reclaimed": sum(len(r.preemptions) for r in others),
        "idle_reserved_gpu_s": round(sum(window - b for b in busy.values()), 2),
        "idle_s_on_the_idle_gpu": round(window - busy[idle_gpu], 2),
        "idle_s_on_the_idle_gpu_after_arrivals": round(start - arrived - _busy_s(others, idle_gpu, arrived, start), 2),
        "idle_s_on_the_long_probes_gpu": round(window - busy[long_gpu], 2),
        "gang_started_after_long_probe_ended_s": round(start - _ts(others[2].attempts[-1].ended_at), 2),
    }  # fmt: skip


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Both measurements on one fleet and one supervisor; writes bench/results/gangs.{json,md}."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=N, help="probes of each kind for the start latency")
    n = parser.parse_args(argv).n
    with yoloq_fleet(GPUS, prefix="yoloq-gangs-") as stack:
        client = Client(stack.services.settings)
        stack.services.start_supervisor(*SUPERVISOR)
        _done(client.submit(_probe(0, gpus=2)), timeout_s=120)  # warm-up: a leader ticks, each path ran once
        _idle(client)
        latency = start_latency(client, n)
        phases = {"backfill": drain(client, SHORT_S), "no-lending": drain(client, LONG_S + 10)}
        info = machine(connect(stack.services.settings.redis_url))
    doc = {"machine": info, "gpus": GPUS, "supervisor": list(SUPERVISOR), "settle_s": SETTLE_S, "probe_s": PROBE_S,
           "long_s": LONG_S, "shorts": SHORTS, "start": latency, "drain": phases,
           "leaked_pids": stack.leaked}  # fmt: skip
    write_results("gangs", doc, markdown(doc))
    if stack.leaked:
        sys.exit(f"leaked processes: {stack.leaked}")
    return doc


def markdown(doc: dict[str, Any]) -> list[str]:
    """The two tables and what they were measured on."""
    m, lat, parts = doc["machine"], doc["start"], doc["start"]["gang_parts"]
    named = [("1-GPU probe", lat["single"]), ("2-GPU gang", lat["gang"])]
    named += [(f"gang: {k.replace('_', ' ')}", v) for k, v in parts.items()]
    rows = [f"| {name} | {v['n']} | {v['p50_s']:.3f} | {v['p95_s']:.3f} | {v['max_s']:.3f} |" for name, v in named]
    drains = [f"| {name} ({p['short_s']} s probes) | {p['reservation_s']:.1f} | {p['loans_before_gang']} | "
              f"{p['idle_reserved_gpu_s']:.1f} | {p['idle_s_on_the_idle_gpu']:.1f} | "
              f"{p['idle_s_on_the_idle_gpu_after_arrivals']:.1f} | {p['given_back']} | "
              f"{p['reclaimed']} |" for name, p in doc["drain"].items()]  # fmt: skip
    return [
        "# Gangs in the running system (bench/gangs.py)",
        "",
        f"One simulated host of 4 GPUs, a worker process each, a supervisor `{' '.join(doc['supervisor'])}`; "
        f"{m['at']}, {m['nproc']} cores ({m['cpu']}), Python {m['python']}.",
        "",
        f"Submit→start on an idle fleet (registry started_at − submitted_at), {doc['probe_s']} s probes, alternated. "
        f"The gang's figure includes the {doc['settle_s']} s settle by design (a held GPU's worker must have stopped "
        "taking tier-queue jobs before the gang starts there).",
        "",
        "| job | n | p50 s | p95 s | max s |",
        "|---|---|---|---|---|",
        *rows,
        "",
        f"Gang ÷ single: p50 {lat['ratio_p50']}×, p95 {lat['ratio_p95']}×; the gang's p50 less the settle: "
        f"{lat['gang_over_settle_p50_s']:.3f} s (a supervisor tick after the settle, the move, the worker's pick-up).",
        "",
        f"A 2-GPU gang reserving an idle GPU and one busy with a {doc['long_s']} s probe (the other two GPUs busy "
        f"throughout); {doc['shorts']} one-GPU probes arrive once the hold has settled. Idle reserved GPU-seconds: "
        "both held GPUs, from the hold to the gang's start, minus what any attempt used.",
        "",
        "| phase | hold → gang start s | loans run before the gang | idle reserved GPU-s | of which the idle GPU "
        "| idle GPU after the arrivals s | given back | loans reclaimed |",
        "|---|---|---|---|---|---|---|---|",
        *drains,
    ]


if __name__ == "__main__":
    main()
