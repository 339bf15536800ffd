"""``yoloq beat`` against real Redis, SeaweedFS and worker processes: one send per slot with two beats, checkpoint
GC, the SLA report, and a GPU cordoned by the health check that stops (and, uncordoned, resumes) taking jobs."""

from __future__ import annotations

import json
import socket
import sys
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml

from bench.harness.stack import active_queues
from infra.beat_state import BeatState
from infra.cordon import FAULT_PREFIX, CordonStore
from infra.processes import ManagedProcess
from infra.redis_client import connect
from infra.s3 import S3Store
from tasks import housekeeping
from tasks.app import create_app
from tasks.checkpoints import CheckpointStore
from tasks.records import iso, parse_iso, utc_now
from tasks.specs import ProbeSpec
from tasks.states import JobState
from tests.fleet import clean_redis, poll, yoloq_cli

pytestmark = pytest.mark.integration

QUIET = {"checkpoint_gc": {"enabled": False}, "sla_report": {"enabled": False}, "gpu_health": {"enabled": False}}


@pytest.fixture
def beats(services, tmp_path) -> Iterator:
    """Start ``yoloq beat`` processes on a schedule (a dict written as YAML); all stopped after the test."""
    started: list[ManagedProcess] = []
    ops = connect(services.settings.redis_url)

    def start(schedule: dict) -> ManagedProcess:
        path = tmp_path / "schedule.yaml"
        path.write_text(yaml.safe_dump(schedule))
        log = services.settings.home / "logs" / f"beat-{tmp_path.name}-{len(started)}.log"
        proc = ManagedProcess(f"beat{len(started)}", [sys.executable, "-m", "yoloq", "beat", "--schedule", str(path)],
                              log, services.env())  # fmt: skip
        started.append(proc)
        return proc

    ops.delete("yoloq.ops")  # no maintenance message of an earlier test may run in this one
    yield start
    for proc in started:
        proc.stop(15)
    ops.delete("yoloq.ops")


def _log(proc: ManagedProcess) -> str:
    return proc.log_path.read_text(errors="replace") if proc.log_path.exists() else ""


def _scheduled_slots(client, name: str) -> list[str]:
    """The slot named in the ``scheduled`` event of every job the schedule entry ``name`` submitted (a job whose
    event is not written yet, a millisecond after it was registered, is left for the next look)."""
    slots = []
    for record in client.jobs(limit=10_000):
        reasons = [e.reason for e in record.events if e.type == "scheduled"] if record.name == name else []
        assert len(reasons) <= 1, record.events
        slots += [reason.rsplit("slot ", 1)[1] for reason in reasons]
    return slots


def test_two_beats_send_each_slot_exactly_once(services, client, beats):
    # Given two beats with one entry that submits a probe every 2 s
    clean_redis(services)
    job = {"kind": "probe", "seconds": 0, "tier": "batch", "team": "ops"}
    schedule = {"schedules": {"probe-2s": {"every": 2, "job": job}}, "builtin": QUIET}
    pair = [beats(schedule), beats(schedule)]
    # When both have handled the entry at least once (sent it, or found the slot already sent)
    poll(lambda: all("schedule:probe-2s slot" in _log(p) for p in pair), 90, "both beats ticking")
    assert all(p.alive() for p in pair), [p.tail() for p in pair]
    first = (int(time.time()) // 2 + 1) * 2  # the first slot that starts with both beats surely running
    last = first + 2 * 5
    poll(lambda: any(s >= _iso_slot(last + 4) for s in _scheduled_slots(client, "probe-2s")), 60, "six more slots")
    # Then every slot from `first` to `last` produced exactly one job: no slot twice, no slot skipped
    counted = Counter(s for s in _scheduled_slots(client, "probe-2s") if _iso_slot(first) <= s <= _iso_slot(last))
    assert counted == Counter({_iso_slot(t): 1 for t in range(first, last + 1, 2)}), counted
    # And both beats tried every slot (the loser logs who won it): the lock, not an idle beat, kept the count at one
    assert all(p.alive() for p in pair)
    losses = [
        line for p in pair for line in _log(p).splitlines() if "schedule:probe-2s slot" in line and "already" in line
    ]
    assert len({line.split(" slot ")[1].split()[0] for line in losses} & set(counted)) == len(counted)


def _iso_slot(epoch_s: int) -> str:
    return datetime.fromtimestamp(epoch_s, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _old_job_id(days: float) -> str:
    at = utc_now() - timedelta(days=days)
    return f"j{int(at.timestamp() * 1000):011x}0a0b0c"


def _publish(store: S3Store, job_id: str, tmp_path: Path, count: int) -> CheckpointStore:
    checkpoints = CheckpointStore(store, job_id)
    for n in range(count):
        local = tmp_path / f"{job_id}-{n}.pt"
        local.write_bytes(b"checkpoint %d" % n)
        checkpoints.publish(local, epoch=n, batch=0, verify=lambda _: None)
    return checkpoints


def _keys(store: S3Store, job_id: str) -> set[str]:
    return {key for key, _, _ in store.list_objects(f"jobs/{job_id}/")}


def test_checkpoint_gc_keeps_the_last_k_and_deletes_old_finished_jobs(services, client, beats, tmp_path):
    # Given a queued job whose last 3 checkpoints are in its manifest, plus 2 older ones a crash left behind and
    # an upload in flight; a job cancelled 40 days ago; one cancelled today; an unknown 40-day-old prefix
    clean_redis(services)
    store = S3Store(services.settings)
    live = client.submit(ProbeSpec(seconds=1, tier="batch", team="ops")).job_id
    manifest = _publish(store, live, tmp_path, 5).manifest()
    leftovers = [f"jobs/{live}/checkpoints/00000{n}-e{n - 1}-b0.pt" for n in (1, 2)]
    in_flight = f"jobs/{live}/checkpoints/000006-e5-b0.pt"
    for key in [*leftovers, in_flight]:
        store.put_bytes(key, b"x")
    old, recent = (client.submit(ProbeSpec(seconds=1, tier="batch", team="ops")).job_id for _ in range(2))
    for job_id in (old, recent):
        client.cancel(job_id)
        _publish(store, job_id, tmp_path, 1)
        store.put_bytes(f"jobs/{job_id}/results/best.pt", b"w")
    client.rt.registry.update(old, {"finished_at": iso(utc_now() - timedelta(days=40))})
    orphan, young_orphan = _old_job_id(40), _old_job_id(1)
    for job_id in (orphan, young_orphan):
        store.put_bytes(f"jobs/{job_id}/results/best.pt", b"w")
    kept_live = {*manifest["kept"], in_flight, f"jobs/{live}/checkpoints/manifest.json"}
    # When a beat runs checkpoint GC (keep 3, finished jobs for 30 days) and the SLA report
    gc = {"every": 1, "keep_last": 3, "finished_days": 30}
    beats({"builtin": {**QUIET, "checkpoint_gc": gc, "sla_report": {"every": 1}}})
    poll(lambda: not _keys(store, old) and not _keys(store, orphan), 90, "GC of the old job and the orphan")
    poll(lambda: _keys(store, live) == kept_live, 30, f"leftover checkpoints of {live} deleted")
    # Then exactly the old finished job, the old orphan and the leftovers went; everything else stayed
    assert len(manifest["kept"]) == 3
    assert _keys(store, recent) == {f"jobs/{recent}/checkpoints/manifest.json", f"jobs/{recent}/results/best.pt",
                                    *CheckpointStore(store, recent).manifest()["kept"]}  # fmt: skip
    assert _keys(store, young_orphan) == {f"jobs/{young_orphan}/results/best.pt"}
    assert CheckpointStore(store, live).candidates()[0].key == manifest["newest"]["key"]
    # And the SLA report reached Redis and S3
    poll(lambda: BeatState(client.rt.registry.client).sla_reports(), 30, "an SLA report in Redis")
    assert store.list_objects(housekeeping.SLA_PREFIX)


def test_sla_report_is_what_yoloq_sla_says(services, client):
    # Given jobs that started (their time to start is recorded)
    clean_redis(services)
    registry, store = client.rt.registry, S3Store(services.settings)
    state = BeatState(registry.client, services.settings.redis_url)
    for handle in [client.submit(ProbeSpec(seconds=1, tier=t, team="ops")) for t in ("critical", "low")]:
        client.rt.registry.update(handle.job_id, {"started_at": iso(utc_now())})
        registry.record_time_to_start(registry.get(handle.job_id))
    # When the report runs
    now = utc_now()
    doc = housekeeping.sla_report(registry, store, state, 24 * 3600, now)
    # Then it holds the same per-tier numbers as `yoloq sla`, in Redis and in S3
    assert doc["tiers"] == client.sla(now.timestamp())
    assert doc["tiers"]["critical"]["count"] == 1 and doc["compliant"]
    assert state.sla_reports(1) == [json.loads(json.dumps(doc))]
    assert store.get_json(f"{housekeeping.SLA_PREFIX}{now:%Y/%m/%d/%H%M%S}.json") == json.loads(json.dumps(doc))


def test_unhealthy_gpu_is_cordoned_and_its_worker_takes_no_jobs_until_uncordoned(services, fleet, client, beats):
    # Given a simulated GPU worker that consumes its queues, and a beat checking GPU health every second
    fleet.start("0:T4:16")
    host, node = socket.gethostname(), f"gpu0@{socket.gethostname()}"
    app = create_app(services.settings)
    queues = poll(lambda: active_queues(app, node), 30, "the worker's queues")
    beats({"builtin": {**QUIET, "gpu_health": {"every": 1}}})
    cordons = CordonStore(client.rt.registry.client)
    # When the device starts reporting uncorrectable ECC errors
    client.rt.registry.client.set(f"{FAULT_PREFIX}{host}:0", json.dumps({"ecc_uncorrected": 2}))
    flag = poll(lambda: cordons.get(host, 0), 60, "the health check to cordon GPU 0")
    # Then it is cordoned with the reason, and its worker stops consuming
    assert flag["reason"] == "2 uncorrectable ECC errors" and flag["by"] == "gpu-health"
    poll(lambda: active_queues(app, node) == [], 30, "the worker to cancel its consumers")
    job = client.submit(ProbeSpec(seconds=0, tier="critical", team="ops"))
    _stays(client, job.job_id, JobState.QUEUED, seconds=4)
    # And a restarted worker still takes nothing (the flag is in Redis, not in the worker's memory)
    fleet.kill9(0)
    fleet.restart(0)
    poll(lambda: active_queues(app, node) == [], 30, "the restarted worker to consume nothing")
    _stays(client, job.job_id, JobState.QUEUED, seconds=3)
    # When the fault is repaired (the health check reads the device healthy again) and an operator uncordons it
    client.rt.registry.client.delete(f"{FAULT_PREFIX}{host}:0")
    state = BeatState(client.rt.registry.client)
    poll(lambda: [d["unhealthy"] for d in (state.last_health() or {}).get("devices", [])] == [[]], 30, "healthy")
    done = yoloq_cli(services, "uncordon", f"{host}:0", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"host": host, "index": 0, "cordoned": False, "was_cordoned": True}
    # Then the worker consumes its queues again, in their order, and runs the waiting job
    assert job.wait(timeout_s=60).state is JobState.SUCCEEDED
    assert active_queues(app, node) == queues
    assert [e["type"] for e in client.audit(limit=10) if e["type"] in ("cordoned", "uncordoned")] == [
        "uncordoned", "cordoned"]  # fmt: skip


def _stays(client, job_id: str, state: JobState, seconds: float) -> None:
    """The job is still in ``state`` at every look for ``seconds`` (a worker that took it would start it at once)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert client.job(job_id).state is state
        time.sleep(0.2)


def test_cordon_cli_lists_and_refuses_bad_devices(services):
    clean_redis(services)
    done = yoloq_cli(services, "cordon", "nodeA:3", "--reason", "fan replaced", "--json")
    assert json.loads(done.stdout) == {"host": "nodeA", "index": 3, "cordoned": True, "already": False}
    listed = json.loads(yoloq_cli(services, "cordon", "--list", "--json").stdout)
    assert [(f["host"], f["index"], f["reason"]) for f in listed] == [("nodeA", 3, "fan replaced")]
    assert parse_iso(listed[0]["at"]) <= utc_now()
    again = yoloq_cli(services, "cordon", "gpu3@nodeA", "--json")
    assert json.loads(again.stdout)["already"] is True
    bad = yoloq_cli(services, "uncordon", "nodeA")
    assert bad.returncode == 2 and "neither HOST:INDEX nor gpuINDEX@HOST" in bad.stderr
    clean_redis(services)


def test_a_scheduled_submission_names_its_slot_and_a_refused_one_is_one_line(services, client, tmp_path, caplog):
    # Given a schedule entry whose dataset vanished after beat started, and one that is fine
    clean_redis(services)
    gone = {"kind": "train", "data": str(tmp_path / "gone"), "team": "ops", "name": "nightly"}
    probe = {"kind": "probe", "seconds": 0, "team": "ops", "name": "smoke"}
    # When their slots fire
    refused = housekeeping.submit_scheduled(client.rt, "nightly", gone, "2026-03-10T02:00:00Z", utc_now())
    sent = housekeeping.submit_scheduled(client.rt, "smoke", probe, "2026-03-10T02:00:00Z", utc_now())
    # Then the refusal registers nothing and is one line; the accepted job's history names schedule and slot
    assert refused["error"].startswith("invalid job spec: data: path") and "job_id" not in refused
    assert "schedule nightly slot 2026-03-10T02:00:00Z: not submitted: invalid job spec" in caplog.text
    assert [r.job_id for r in client.jobs()] == [sent["job_id"]]
    events = client.job(sent["job_id"]).events
    assert [(e.type, e.reason, e.by) for e in events if e.type == "scheduled"] == [
        ("scheduled", "schedule 'smoke', slot 2026-03-10T02:00:00Z", "beat")]  # fmt: skip
