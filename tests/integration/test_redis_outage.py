"""Issue 15 item 2: a Redis outage longer than the claim TTL must not let a GPU be booked twice.

Redis is frozen for real (``kill -STOP`` on the session's redis-server, then ``kill -CONT``): every client's calls
hang, keys whose TTL passed are gone when it answers again, as after a network partition or a long fork.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import defaultdict

import pytest

from infra.presence import GpuClaims, Renewal
from infra.processes import ManagedProcess
from infra.redis_client import connect
from infra.settings import Settings
from tasks.attempt import AttemptControl, Where, run_attempt
from tasks.records import JobRecord, parse_iso
from tasks.specs import JobSpec, ProbeSpec
from tasks.states import JobState
from tests.fleet import poll, stopped
from workers.presence import ClaimKeeper
from yoloq.client import Client

pytestmark = pytest.mark.integration

FREEZE_S = 30.0  # the outage: 6x the session's claim TTL (5 s), 10x its lease TTL (3 s)
MARGIN_S = 3.0  # a thawed Redis and worker catching up on a loaded 2-core box (scheduling, not the protocol)


def claim_back_within_s(settings: Settings) -> float:
    """How long a thawed worker may take to be listed again. The first renewal after the thaw (at most one renewal
    interval, TTL/3, later) writes the claim back: "within one heartbeat", as the issue asks. On a loaded 2-core box
    every process catches up at once after a 30 s freeze, so the bound is the claim TTL plus one renewal interval
    plus a small margin: it still fails a worker that never takes its claim back, without turning the protocol's
    bound into a race against the scheduler."""
    return settings.worker_ttl_s + settings.worker_ttl_s / 3 + MARGIN_S


def overlaps(records: list[JobRecord]) -> list[str]:
    """Attempts whose [started_at, ended_at] intersects an earlier one's on the same GPU, from the attempt log."""
    spans: dict[str | None, list[tuple[float, float, str]]] = defaultdict(list)
    for record in records:
        for a in record.attempts:
            if a.started_at:
                end = parse_iso(a.ended_at).timestamp() if a.ended_at else float("inf")
                spans[a.gpu].append((parse_iso(a.started_at).timestamp(), end, f"{record.job_id}#{a.n}"))
    found = []
    for gpu, runs in spans.items():
        latest = (float("-inf"), float("-inf"), "")  # the attempt that ends last among those started so far
        for run in sorted(runs):
            if run[0] < latest[1]:
                found.append(f"GPU {gpu}: {run[2]} started while {latest[2]} ran")
            latest = max(latest, run, key=lambda r: r[1])
    return found


def run_second_worker(fleet, index: int, timeout_s: float = 60) -> tuple[int | None, str]:
    """Start another ``yoloq worker --gpu index`` and return its exit code and output once it exits; fail the test
    if it is accepted instead (a claim of its own appears in Redis)."""
    log = fleet.services.settings.home / "logs" / f"second-worker-gpu{index}-{time.time_ns()}.log"
    argv = [sys.executable, "-m", "yoloq", "worker", "--gpu", str(index)]
    proc = ManagedProcess("second-worker", argv, log, env=fleet.services.env(YOLOQ_GPUS=fleet.gpus))
    try:
        accepted = lambda: any(w.get("pid") == proc.pid for w in fleet.claims.live())  # noqa: E731
        poll(lambda: not proc.alive() or accepted(), timeout_s, f"the second worker for GPU {index} to exit")
        assert not accepted(), f"a second worker for GPU {index} was accepted:\n{proc.tail(20)}"
        proc.proc.wait(10)
    finally:
        proc.stop(5)
    return proc.proc.returncode, log.read_text()


def listed(status: dict) -> set[tuple[str, int, int]]:
    """(node, pid, GPU index) of every worker ``status`` lists together with its GPU."""
    gpus = {g["node"]: g["index"] for g in status["gpus"]}
    return {(w["node"], w["pid"], gpus[w["node"]]) for w in status["workers"] if w["node"] in gpus}


def test_after_a_redis_freeze_every_worker_has_its_gpu_back_and_no_gpu_ran_two_jobs(fleet, client, services):
    # Given two GPUs busy with probes and more queued behind them
    fleet.start("0:A100:40,1:A100:40")
    host = socket.gethostname()
    expected = {(f"gpu{i}@{host}", proc.pid, i) for i, proc in services.workers.items()}
    assert listed(client.status()) == expected
    jobs = [client.submit(ProbeSpec(seconds=4, tier="low", team="ops")) for _ in range(6)]
    poll(lambda: len(client.status()["running"]) == 2, 30, "two probes running")
    # When Redis is frozen for longer than the claim TTL (every claim and lease expires meanwhile), then thawed
    assert services.redis.process is not None
    with stopped(services.redis.process.pid):
        time.sleep(FREEZE_S)  # the outage itself, not a wait for something to happen
    # Then within one claim TTL and one renewal the same worker processes are listed with their GPUs
    poll(lambda: listed(client.status()) == expected, claim_back_within_s(services.settings),
         "every worker and GPU listed")  # fmt: skip
    assert {(w["node"], w["pid"]) for w in fleet.ready_nodes().values()} == {(n, p) for n, p, _ in expected}
    # And a second worker for GPU 0 is still refused, naming the live owner
    code, output = run_second_worker(fleet, 0)
    assert code == 1 and f"already has a live worker on this host: pid {services.workers[0].pid} " in output
    # And the fleet still works: the interrupted probes resume, the queued and new ones run, every one succeeds
    jobs += [client.submit(ProbeSpec(seconds=1, tier="low", team="ops")) for _ in range(2)]
    records = [job.wait(timeout_s=120) for job in jobs]
    assert [r.state for r in records] == [JobState.SUCCEEDED] * len(records), [r.events[-2:] for r in records]
    assert sum(len(r.attempts) > 1 for r in records) == 2  # the two cut off by the outage, resumed
    # And by the attempt log, no two attempts ever ran on one GPU at the same time
    assert all(a.ended_at for r in records for a in r.attempts if a.started_at)
    assert overlaps(records) == []


def test_a_second_worker_is_refused_while_the_owner_lives_even_with_its_redis_claim_gone(fleet, services):
    # Given a live worker on GPU 0 that renews nothing (paused), and its Redis claim gone
    fleet.start("0:A100:40")
    owner = services.workers[0].pid
    with stopped(owner):
        connect(services.settings.redis_url).delete(f"yoloq:gpu:{socket.gethostname()}:0")
        # When a second worker for GPU 0 starts
        code, output = run_second_worker(fleet, 0)
    # Then it is refused with one line naming the owner's pid (the host-local lock, whatever Redis says)
    assert code == 1 and "Traceback" not in output, output
    last = output.strip().splitlines()[-1]
    assert last.startswith(f"yoloq: error: GPU 0 (SIM-0-A100) already has a live worker on this host: pid {owner} ")
    # And the owner, thawed, takes its claim back within one claim TTL and one renewal
    poll(lambda: [w["pid"] for w in fleet.ready_nodes().values()] == [owner], claim_back_within_s(services.settings),
         "the owner's claim back")  # fmt: skip


def test_an_attempt_cut_off_by_an_outage_records_its_end_before_its_worker_moves_on(fleet, client, services):
    """Its worker takes its next job when the attempt returns: had it returned with its end unrecorded, the log
    would show the next job on the same GPU while this one still 'ran' (until recovery noticed)."""
    # Given a probe's attempt running (in this process, as a pool child runs it), with no other worker or sweeper
    handle = client.submit(ProbeSpec(seconds=5, tier="low", team="ops"))
    task_id = client.job(handle.job_id).attempts[-1].task_id
    assert services.redis.process is not None
    redis_pid, thaw_after_s = services.redis.process.pid, 3 * services.settings.broker_timeout_s

    def body(spec: JobSpec, control: AttemptControl) -> dict[str, object]:
        # When Redis freezes mid-job, and the job's next call to it fails (as a probe's next step does)
        os.kill(redis_pid, signal.SIGSTOP)
        threading.Timer(thaw_after_s, os.kill, (redis_pid, signal.SIGCONT)).start()
        control.check()
        raise AssertionError("control.check() reached a frozen Redis")

    try:
        outcome = run_attempt(client.rt, handle.job_id, task_id, Where(f"outage@{socket.gethostname()}", "7"), body)
    finally:
        os.kill(redis_pid, signal.SIGCONT)
    # Then the attempt returned only once its end was recorded, and the job waits to resume rather than failed
    record = client.job(handle.job_id)
    assert outcome == "preempted" and record.state is JobState.QUEUED
    assert record.attempts[0].outcome == "preempted" and record.attempts[0].ended_at is not None
    assert record.preemptions[0].reason.startswith("Redis unreachable: ")
    client.cancel(handle.job_id)


def test_the_claim_keeper_takes_back_an_expired_or_dead_claim_and_stops_rather_than_share_with_a_live_one(services):
    # Given a claim kept by a keeper (in this process; no worker, so no job recovery) and the raw Redis key
    url, host = services.settings.redis_url, "keeper-test"
    claims, raw, key = GpuClaims(connect(url), url), connect(url), f"yoloq:gpu:{host}:3"
    record = {"node": f"gpu3@{host}", "host": host, "pid": os.getpid(), "heartbeat_at": "2026-01-01T00:00:00Z"}
    stops: list[str] = []
    token = claims.claim(host, 3, record, ttl_s=5)
    keeper = ClaimKeeper(claims, services.settings, (host, 3, token), record, on_lost=lambda: stops.append("stop"),
                         utilization=lambda index: 0.456)  # fmt: skip
    try:
        assert keeper.tick() is Renewal.RENEWED
        # ... carrying its GPU's utilisation, which claim readers (the serving scaler, status, /metrics) get back
        mine = [c for c in claims.live() if c.get("host") == host]
        assert [c["utilization"] for c in mine] == [0.46]
        assert [g["utilization"] for g in Client(services.settings).status()["gpus"] if g["host"] == host] == [0.46]
        # When the key expired (an outage longer than the TTL), Then the next renewal writes it back whole
        raw.delete(key)
        assert keeper.tick() is Renewal.RETAKEN
        assert raw.hget(key, "owner") == token and raw.hget(key, "node") == f"gpu3@{host}" and raw.pttl(key) > 0
        # When a process that has exited holds it, Then it is taken over and this worker keeps running
        exited = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                                text=True, check=True).stdout.strip()  # fmt: skip
        raw.hset(key, mapping={"owner": "rival", "pid": exited, "node": f"gpu3@{host}-rival"})
        assert keeper.tick() is Renewal.LOST and raw.hget(key, "owner") == token and stops == []
        # When a live process holds it, Then this worker stops rather than share the device, and leaves it alone
        raw.hset(key, mapping={"owner": "rival", "pid": str(os.getppid()), "node": f"gpu3@{host}-rival"})
        assert keeper.tick() is Renewal.LOST and stops == ["stop"] and raw.hget(key, "owner") == "rival"
    finally:
        raw.delete(key)
