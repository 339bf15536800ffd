"""``python -m bench.harness.traced_worker I``: ``yoloq worker --gpu I`` with a mark at every step of an attempt.

Profiling only (bench/profile_dispatch.py): wraps the attempt's steps at runtime, in the worker parent before the
pool forks, so the children inherit the wrappers. Marks are keyed by job id (attempt steps) or task id (signals).
"""

from __future__ import annotations

import os
import sys
from typing import Any

import tasks.attempt
import tasks.probe
from bench.harness.trace import install_signals, open_trace, wrap
from infra.leases import Leases
from infra.registry import RedisRegistry
from infra.settings import load_settings
from tasks import lifecycle


def install(path: str) -> None:
    """Wrap the claim, the attempt, the body, the outcome write and the heartbeat thread's start and join."""
    mark = open_trace(path)
    install_signals(mark)

    def job_arg(_rt: Any, job_id: str, *_: Any, **__: Any) -> str:
        return job_id

    wrap(tasks.probe, "run_attempt", mark, "attempt", job_arg)
    wrap(tasks.probe, "run_probe", mark, "body", lambda _spec, control: control.job_id)
    wrap(lifecycle, "record_start", mark, "claim", lambda _registry, job_id, *_, **__: job_id)
    wrap(lifecycle, "end_attempt", mark, "end", lambda _registry, job_id, *_, **__: job_id)
    wrap(tasks.attempt, "_outcome", mark, "outcome", lambda _rt, record, *_: record.job_id)
    wrap(tasks.attempt, "AttemptControl", mark, "control", lambda _rt, record, _task: record.job_id)
    wrap(RedisRegistry, "record_time_to_start", mark, "tts", lambda _self, record: record.job_id)
    wrap(Leases, "release", mark, "release", lambda _self, job_id, *_: job_id)


def main() -> None:
    """Install the marks, then become the worker exactly as ``yoloq worker --gpu I`` does."""
    install(os.environ["BENCH_TRACE"])
    from workers.launch import run_worker

    run_worker(load_settings(), int(sys.argv[1]))


if __name__ == "__main__":
    main()
