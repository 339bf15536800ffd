"""``make demo`` / ``yoloq demo``: the local stack on two simulated GPUs, narrating a real scenario.

Low-tier work fills the fleet; jobs of every tier queue up and start in strict tier order; a critical job arrives
while a real YOLO training job holds the GPU it needs; the supervisor (a child process, as in ``yoloq up``) preempts
the training, which checkpoints mid-epoch to S3; the critical job runs, and the training resumes from
its mid-epoch checkpoint and finishes, with no batch trained twice. That training was a pipeline: its model is
registered, served by a replica the supervisor starts, and then replaced by a critical retrain's canary that is
compared and promoted (workers/demo_serving.py).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
import urllib.request
from pathlib import Path

from infra.processes import ManagedProcess
from infra.settings import Settings, load_settings
from routing.tiers import TIERS
from tasks.records import JobRecord, parse_iso
from tasks.specs import ProbeSpec, TrainSpec
from tasks.states import JobState
from tasks.synth import SynthConfig, synthesize
from workers.demo_serving import serving_act
from workers.stack import Services, start_services, with_credentials, write_stack_file
from yoloq.client import Client, JobHandle

GPUS = "0:T4:16,1:A100:40,2:A100:40,3:A100:40"  # 0 and 1 run fixed workers; 2 and 3 are the autoscaler's


def say(text: str) -> None:
    """One line of narration, flushed at once."""
    print(f"[{time.strftime('%H:%M:%S')}] {text}", flush=True)


def _progress(record: JobRecord) -> str:
    p = record.progress
    if "epochs" in p:
        return f"epoch {int(p.get('epoch', 0)) + 1}/{p['epochs']}, batch {p.get('batch', 0)}/{p.get('batches', '?')}"
    return f"step {p['step']}/{p['steps']}" if "steps" in p else record.state.value


def _wait(handle: JobHandle, states: set[JobState], what: str, timeout_s: float = 120) -> JobRecord:
    """Wait for a job, showing its progress every 2 s while it changes (a long wait is never silent)."""
    say(f"  … waiting for {what}")
    deadline, shown, last = time.monotonic() + timeout_s, "", time.monotonic()
    while True:
        record = handle.refresh()
        if record.state in states:
            return record
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: still {record.state.value} after {timeout_s:.0f} s")
        now_shown = f"{record.state.value}, {_progress(record)}"
        if now_shown != shown and time.monotonic() - last >= 2:
            say(f"    {handle.job_id}: {now_shown}")
            shown, last = now_shown, time.monotonic()
        time.sleep(0.1)


def _start(settings: Settings, settings_home: Path) -> Services:
    explicit = "redis_url" in settings.model_fields_set
    settings = with_credentials(settings.model_copy(update={"home": settings_home, "gpus": GPUS}))
    services = start_services(settings, prefer_configured_redis=explicit)
    for index in (0, 1):
        services.start_worker(index)
    services.start_supervisor("--interval", "0.5")
    services.start_surface("api", 8000)
    services.start_surface("flower", 5555)
    client = Client(services.settings)
    deadline = time.monotonic() + 60
    while len([w for w in client.status()["workers"] if w.get("heartbeat_at")]) < 2:
        if time.monotonic() > deadline:
            raise TimeoutError("workers did not start; see logs in " + str(settings_home / "logs"))
        time.sleep(0.2)
    return services


def _strict_order(client: Client) -> list[JobRecord]:
    say("Act 1: both GPUs busy with low-tier probes; then one 20 GB job of every tier, which only the A100 fits,")
    say("  is queued, batch first. The supervisor preempts the A100's low probe for the critical one; the rest")
    say("  wait their turn in strict tier order.")
    fill = [client.submit(ProbeSpec(seconds=4, tier="low", team="vision", memory_gb=g, name="fill")) for g in (2, 20)]
    for handle in fill:
        _wait(handle, {JobState.RUNNING}, f"{handle.job_id} to start")
    # One consumer (the A100) makes start order equal dequeue order; across two GPUs freeing together it is a race.
    waiting = [
        client.submit(ProbeSpec(seconds=1, tier=t, team="vision", memory_gb=20, name=f"{t}-probe"))
        for t in reversed(TIERS)
    ]
    say(f"  queue depth per tier: {client.status()['queues']}")
    done = [_wait(h, {JobState.SUCCEEDED}, f"{h.tier} probe") for h in fill + waiting]
    order = [r.tier.value for r in sorted(done[2:], key=lambda r: parse_iso(r.started_at or ""))]
    say(f"  they started in this order: {' > '.join(order)}")
    return done


def _preemption(client: Client, home: Path) -> list[JobRecord]:
    say("Act 2: a low-tier YOLO training job (yolov8n from its yaml, synthetic shapes) trains on the A100;")
    say("  a critical 30 GB job arrives and needs that GPU.")
    data = synthesize(home / "shapes", SynthConfig(images=48, imgsz=64, classes=3))
    spec = TrainSpec(data=str(data.parent), epochs=3, imgsz=64, batch=4, workers=0, save_period=1, tier="low",
                     team="vision", memory_gb=30, name="nightly-train", deploy="defects")  # fmt: skip
    victim = client.submit(spec)
    _wait(victim, {JobState.RUNNING}, "the training job to start")
    p = victim.refresh().progress
    while (int(p.get("epoch", 0)), int(p.get("batch", 0))) < (1, 3):
        time.sleep(0.1)
        p = victim.refresh().progress
    say(f"  training is in epoch {p['epoch']}, batch {p['batch']}/{p['batches']}")
    urgent = client.submit(ProbeSpec(seconds=2, tier="critical", team="vision", memory_gb=30, name="new-defect"))
    say(f"  critical job {urgent.job_id} waits in {urgent.queue}; the supervisor picks a victim")
    records = [
        _wait(urgent, {JobState.SUCCEEDED}, "the critical job"),
        _wait(victim, {JobState.SUCCEEDED}, "the training job to resume and finish"),
    ]
    for event in records[1].events:
        if event.type in {"preempt-requested", "checkpoint", "stopped", "resume"}:
            say(f"  {event.type}: {event.reason}")
    result = records[1].result or {}
    say(f"  batches trained after the resume: {result.get('batches_this_attempt')}; weights {result.get('best')}")
    return records


def _surfaces(services: Services) -> None:
    """Where operators look: the status page (its queue view fetched once to show it answers) and Flower."""
    api = services.surfaces["api"][1]
    token = services.settings.api_token.get_secret_value()
    request = urllib.request.Request(f"{api}/api/v1/queues", headers={"Authorization": f"Bearer {token}"})  # noqa: S310 - our own http:// URL
    deadline = time.monotonic() + 30
    while True:
        try:
            with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310 - our own http:// URL
                total = json.load(response)["total"]
            break
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
    say(f"Status page {api}/status (any user, password = the API token in {services.settings.home / 'stack.env'});"
        f" its queue view answers: {total} jobs queued")  # fmt: skip
    say(f"Flower {services.surfaces['flower'][1]} (user:password = YOLOQ_FLOWER_BASIC_AUTH in the same file)")


def _burst(services: Services, client: Client) -> list[JobRecord]:
    say("Act 3: a burst of 6 low-tier 30 GB jobs; the autoscaler owns GPUs 2 and 3 (no workers yet) and starts")
    say("  workers there while the burst waits, then stops them once they are idle (down delay 3 s).")
    argv = [sys.executable, "-m", "yoloq", "autoscaler", "--devices", "2,3", "--interval", "0.5", "--down-delay", "3"]
    log = services.settings.home / "logs" / "autoscaler.log"
    scaler = ManagedProcess("autoscaler", argv, log, services.env())
    try:
        started = time.monotonic()
        burst = [client.submit(ProbeSpec(seconds=2, tier="low", team="vision", memory_gb=30, name="burst")) for _ in
                 range(6)]  # fmt: skip
        records = [_wait(h, {JobState.SUCCEEDED}, f"burst job {n + 1} of 6") for n, h in enumerate(burst)]
        say(f"  the burst ran on GPUs {sorted({r.gpu or '?' for r in records})} in {time.monotonic() - started:.1f} s")
        deadline = time.monotonic() + 60
        while len(client.status()["workers"]) > 2 and time.monotonic() < deadline:
            time.sleep(0.2)
        for line in log.read_text().splitlines():
            if "worker for GPU" in line:
                say(f"  autoscaler {line}")
    finally:
        scaler.stop(30)
    return records


def _summary(records: list[JobRecord]) -> None:
    say("Summary")
    print(f"  {'job':<20} {'name':<14} {'tier':<9} {'gpu':<4} {'attempts':<9} {'wait s':>7} {'state':<10}")
    for r in records:
        wait = parse_iso(r.started_at or r.submitted_at) - parse_iso(r.submitted_at)
        print(f"  {r.job_id:<20} {r.name or '':<14} {r.tier.value:<9} {r.gpu or '-':<4} {len(r.attempts):<9} "
              f"{wait.total_seconds():>7.2f} {r.state.value:<10}")  # fmt: skip


def run_demo() -> int:
    """Run the scenario end to end; exit code 0 when every job succeeded."""
    settings = load_settings(use_stack_file=False)
    home = settings.home / "demo" / str(os.getpid())
    say(f"Starting Redis, SeaweedFS S3, the API, Flower and workers for GPUs 0 and 1 of {GPUS}; state and logs in "
        f"{home} ...")  # fmt: skip
    services = _start(settings, home)
    try:
        client = Client(services.settings)
        say(f"Stack up: S3 {services.s3.endpoint}; `yoloq status --json` shows {len(client.status()['gpus'])} GPUs")
        write_stack_file(services.settings)
        _surfaces(services)
        client.preapprove("vision")
        say("Team vision is on call: its critical jobs need no per-job approval (`yoloq quota preapprove vision`)")
        ordered, preempted = _strict_order(client), _preemption(client, home)
        records = ordered + preempted + _burst(services, client)
        records += serving_act(services, client, preempted[1], home / "shapes", say)
        _summary(records)
        return 0 if all(r.state is JobState.SUCCEEDED for r in records) else 1
    finally:
        say("Stopping the stack ...")
        services.stop()
        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(run_demo())
