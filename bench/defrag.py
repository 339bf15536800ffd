"""Defragmentation in the running system: how long a job blocked by memory scattered over shared GPUs waits with the
supervisor's defragmenter and without it (``yoloq supervisor --no-defrag``), in one run.

Two simulated 80 GB GPUs, a worker process each with ``--share``. Each round, with no supervisor yet: GPU 0 takes two
24 GB low probes and GPU 1 one (placed with cordons), each of ``LOW_S``; then a supervisor starts (with or without
the defragmenter, alternating round by round) and a 55 GB medium probe of ``BIG_S`` arrives. It fits neither GPU (27
and 51.5 GB of room, a shared GPU keeping a 4 GB margin), though 78.5 GB are free in all. Measured per round: the big
job's submit→start (registry ``started_at`` − ``submitted_at``); with the defragmenter, also the moved job's gap (its
attempt's end on one GPU to its next start on the other) and the jobs moved or requeued. Every probe ends before the
next round. Writes bench/results/defrag.{json,md}. Run: ``.venv/bin/python -m bench.defrag [--n 3]``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if __package__ in (None, ""):  # run as `python bench/defrag.py`
    sys.path.insert(0, str(ROOT))

from bench.harness.report import machine, write_results  # noqa: E402
from bench.harness.stack import BenchStack, active_queues, poll, yoloq_fleet  # noqa: E402
from infra.cordon import CordonStore  # noqa: E402
from infra.redis_client import connect  # noqa: E402
from tasks.app import create_app  # noqa: E402
from tasks.records import JobRecord, parse_iso  # noqa: E402
from tasks.specs import ProbeSpec  # noqa: E402
from tasks.states import JobState  # noqa: E402
from yoloq.client import Client, JobHandle  # noqa: E402

GPUS = "0:A100:80,1:A100:80"
SUPERVISOR = ("--interval", "0.2", "--leader-ttl", "3")
N, LOW_S, BIG_S, LOW_GB, BIG_GB = 3, 30, 3, 24, 55


def _probe(seconds: int, gb: float, tier: str) -> ProbeSpec:
    return ProbeSpec(seconds=seconds, tier=tier, team="bench", memory_gb=gb)


def _ts(value: str | None) -> float:
    return parse_iso(value).timestamp() if value else float("nan")


def _done(handle: JobHandle, timeout_s: float = 180) -> JobRecord:
    record = handle.wait(timeout_s=timeout_s, poll_s=0.05)
    if record.state is not JobState.SUCCEEDED or not record.started_at:
        raise RuntimeError(f"job {record.job_id} ended {record.state.value}: {record.error}")
    return record


def _only(stack: BenchStack, client: Client, index: int, jobs: int) -> list[JobHandle]:
    """Submit ``jobs`` low probes while every GPU but ``index`` is cordoned: they all land on GPU ``index``."""
    host, app = stack.services.settings.host(), create_app(stack.services.settings)
    cordons = CordonStore(client.registry.client)
    other = 1 - index
    cordons.cordon(host, other, "bench: placing the low jobs", "bench", "now")
    poll(lambda: active_queues(app, f"gpu{other}@{host}") == [], 0.1, 30, f"GPU {other}'s worker to stop")
    handles = [client.submit(_probe(LOW_S, LOW_GB, "low")) for _ in range(jobs)]
    for handle in handles:
        running = poll(lambda h=handle: (r := h.refresh()).state is JobState.RUNNING and r, 0.05, 30, "a low job")
        assert running.gpu == str(index), running.gpu
    cordons.uncordon(host, other, "bench", "now")
    poll(lambda: active_queues(app, f"gpu{other}@{host}"), 0.1, 30, f"GPU {other}'s worker to take work again")
    return handles


def round_(stack: BenchStack, client: Client, defrag: bool) -> dict[str, Any]:
    """One scattered fleet, one blocked 55 GB job; the supervisor started for this round only."""
    lows = [*_only(stack, client, 0, 2), *_only(stack, client, 1, 1)]
    sup = stack.services.start_supervisor(*SUPERVISOR, *(() if defrag else ("--no-defrag",)))
    try:
        big = _done(client.submit(_probe(BIG_S, BIG_GB, "medium")))
        done = [_done(h) for h in lows]
    finally:
        sup.stop(10)
        stack.services.supervisors.remove(sup)
    moved = [r for r in done if len(r.attempts) > 1]
    gaps = [_ts(r.attempts[1].started_at) - _ts(r.attempts[0].ended_at) for r in moved]
    return {"defrag": defrag, "big_wait_s": round(_ts(big.started_at) - _ts(big.submitted_at), 3),
            "big_gpu": big.attempts[-1].gpu, "moved": sum(bool(getattr(r.preemptions[-1], "moved_to", ""))
                                                          for r in moved),
            "requeued": sum(not getattr(r.preemptions[-1], "moved_to", "") for r in moved),
            "moved_gap_s": [round(g, 3) for g in gaps]}  # fmt: skip


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Rounds alternating with and without the defragmenter on one fleet; writes bench/results/defrag.{json,md}."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=N, help="rounds of each mode")
    n = parser.parse_args(argv).n
    with yoloq_fleet(GPUS, prefix="yoloq-defrag-", shared=(0, 1)) as stack:
        client = Client(stack.services.settings)
        rounds = [round_(stack, client, defrag=i % 2 == 0) for i in range(2 * n)]
        info = machine(connect(stack.services.settings.redis_url))
    on, off = ([r for r in rounds if r["defrag"] is mode] for mode in (True, False))
    gaps = [g for r in on for g in r["moved_gap_s"]]
    summary = {
        "defrag_wait_p50_s": statistics.median(r["big_wait_s"] for r in on),
        "no_defrag_wait_p50_s": statistics.median(r["big_wait_s"] for r in off),
        "moved_gap_p50_s": statistics.median(gaps) if gaps else None,
    }
    summary["wait_ratio_p50"] = round(summary["no_defrag_wait_p50_s"] / summary["defrag_wait_p50_s"], 1)
    doc = {"machine": info, "gpus": GPUS, "supervisor": list(SUPERVISOR), "low_s": LOW_S, "big_s": BIG_S,
           "low_gb": LOW_GB, "big_gb": BIG_GB, "rounds": rounds, "summary": summary,
           "leaked_pids": stack.leaked}  # fmt: skip
    write_results("defrag", doc, markdown(doc))
    if stack.leaked:
        sys.exit(f"leaked processes: {stack.leaked}")
    return doc


def markdown(doc: dict[str, Any]) -> list[str]:
    """The rounds and what they were measured on."""
    m, s = doc["machine"], doc["summary"]
    rows = [f"| {i + 1} | {'defragmenter' if r['defrag'] else '--no-defrag'} | {r['big_wait_s']:.2f} | "
            f"{r['big_gpu']} | {r['moved']} | {r['requeued']} | "
            f"{', '.join(f'{g:.2f}' for g in r['moved_gap_s']) or '-'} |"
            for i, r in enumerate(doc["rounds"])]  # fmt: skip
    return [
        "# Defragmentation in the running system (bench/defrag.py)",
        "",
        "Two simulated 80 GB GPUs shared (`--share`), a worker process each, a supervisor "
        f"`{' '.join(doc['supervisor'])}` started per round; {m['at']}, {m['nproc']} cores ({m['cpu']}), "
        f"Python {m['python']}.",
        "",
        f"Each round: GPU 0 runs two {doc['low_gb']} GB low probes, GPU 1 one, each of {doc['low_s']} s; then a "
        f"{doc['big_gb']} GB medium probe of {doc['big_s']} s arrives, which fits neither GPU though the room exists "
        "in all. Big job wait = registry started_at − submitted_at; moved job's gap = its attempt's end on GPU 1 to "
        "its start on GPU 0.",
        "",
        "| round | supervisor | big job wait s | its GPU | jobs moved | jobs requeued | moved job's gap s |",
        "|---|---|---|---|---|---|---|",
        *rows,
        "",
        f"Big job wait p50: {s['defrag_wait_p50_s']:.2f} s with the defragmenter, {s['no_defrag_wait_p50_s']:.2f} s "
        f"without ({s['wait_ratio_p50']}× longer); the moved job's gap p50: {s['moved_gap_p50_s']} s.",
    ]


if __name__ == "__main__":
    main()
