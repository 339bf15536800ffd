"""Issue 15 item 7, against the real stack: one message published to a tier queue's exchange lands in that queue
only (bindings an older version left in Redis included); a job process inherits none of its worker's secrets, warm
or cold; and the stack's home holds nothing its owner's group or others can read."""

from __future__ import annotations

import os
import secrets
import stat
import sys
from pathlib import Path
from typing import Any

import pytest
from kombu import Connection, Exchange, Producer, Queue

from infra.processes import ManagedProcess
from infra.queues import BINDING_TABLES, depths, own_binding
from infra.redis_client import connect
from infra.s3 import S3Store
from infra.settings import Settings
from routing.tiers import OPS_QUEUE, SIZE_CLASSES, Tier, all_queues, queue_name
from tasks.app import create_app
from tasks.specs import ProbeSpec, TrainSpec
from tasks.states import JobState
from tasks.synth import SynthConfig, synthesize
from tests.fleet import Fleet, poll
from workers.stack import Services, start_services, write_stack_file
from yoloq.client import Client

pytestmark = pytest.mark.integration

QUEUES = (*all_queues(), OPS_QUEUE)
DEFAULT_QUEUE = queue_name(Tier.MEDIUM, SIZE_CLASSES[0])  # yoloq.medium.8g: Celery's default exchange was named so


def _declare_as_before(url: str) -> None:
    """What a version before per-queue exchanges left in Redis: every queue bound to the default exchange with the
    default queue's routing key (a bare ``Queue(name)`` in celeryconfig)."""
    default = Exchange(DEFAULT_QUEUE, type="direct")
    with Connection(url) as conn:
        for name in QUEUES:
            Queue(name, default, routing_key=DEFAULT_QUEUE)(conn.default_channel).declare()


def _landed(client: Any, publish: Any) -> dict[str, int]:
    """The queues whose lists grew while ``publish()`` ran, and by how much."""
    before = depths(client, QUEUES)
    publish()
    after = depths(client, QUEUES)
    return {name: after[name] - before[name] for name in QUEUES if after[name] != before[name]}


def test_one_publish_to_a_queue_exchange_lands_in_that_queue_only(services, fleet):
    url = services.settings.redis_url
    redis = connect(url)
    # Given the bindings an older version left, then a worker of this one started (and stopped: nothing consumes)
    _declare_as_before(url)
    fleet.start("0:T4:16")
    fleet.stop()
    app = create_app(services.settings)
    with Connection(url) as conn:
        for queue in app.amqp.queues.values():  # as any Celery client declares a queue before it sends to it
            queue(conn.default_channel).declare()
        producer = Producer(conn.default_channel, serializer="json")
        # When a non-Celery producer publishes one message to a queue's exchange, as Flower's apply-task could
        for name in (
            DEFAULT_QUEUE,
            queue_name(Tier.CRITICAL, SIZE_CLASSES[-1]),
            queue_name(Tier.BATCH, SIZE_CLASSES[0]),
        ):
            landed = _landed(redis, lambda n=name: producer.publish({"probe": n}, exchange=n, routing_key=n))
            # Then it is in that queue's list and no other
            assert landed == {name: 1}, name
    # And each exchange's binding table holds its own queue only
    for name in QUEUES:
        for table in BINDING_TABLES:
            assert redis.smembers(table.format(name)) == {own_binding(name)}, table.format(name)
    # And Celery's own sending (the anonymous exchange, routing key = queue) still reaches exactly its queue
    high = queue_name(Tier.HIGH, SIZE_CLASSES[1])
    assert _landed(redis, lambda: app.send_task("yoloq.probe", kwargs={"job_id": "none"}, queue=high)) == {high: 1}


TOKEN, FLOWER_PASSWORD, SOME_SECRET = (secrets.token_urlsafe(32) for _ in range(3))


def _worker_with_secrets(services: Services, fleet: Fleet, gpus: str, **extra: str) -> ManagedProcess:
    """A real worker whose environment holds the API token, Flower's password and an unrelated secret."""
    env = services.env(YOLOQ_GPUS=gpus, YOLOQ_API_TOKEN=TOKEN, YOLOQ_FLOWER_BASIC_AUTH=f"ops:{FLOWER_PASSWORD}",
                       SOME_SECRET=SOME_SECRET, **extra)  # fmt: skip
    argv = [sys.executable, "-m", "yoloq", "worker", "--gpu", "0"]
    proc = ManagedProcess("worker-gpu0", argv, services.settings.home / "logs" / "worker-secrets.log", env=env)
    services.workers[0] = proc  # stopped by the fleet fixture
    fleet.wait_ready(0)
    return proc


def _job_processes(worker: ManagedProcess, *argv: str) -> list[int]:
    """Pids of the worker's job processes (its process group) whose command line holds ``argv``."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if not entry.name.isdigit() or os.getpgid(int(entry.name)) != worker.pid:
                continue
            words = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:  # ProcessLookupError included: it exited meanwhile
            continue
        if b"tasks.job_process" in words and all(word.encode() in words for word in argv):
            found.append(int(entry.name))
    return found


def _assert_no_secret_in_environ(pid: int, services: Services) -> None:
    """The environment the job process started with, as the kernel keeps it."""
    raw = Path(f"/proc/{pid}/environ").read_bytes().decode(errors="replace")
    env = dict(item.split("=", 1) for item in raw.split("\0") if "=" in item)
    assert env.get("YOLOQ_REDIS_URL") == services.settings.redis_url  # it is a job process of this stack
    assert env.get("CUDA_VISIBLE_DEVICES") == "0"
    assert not {"YOLOQ_API_TOKEN", "YOLOQ_FLOWER_BASIC_AUTH", "SOME_SECRET"} & set(env), sorted(env)
    for secret in (TOKEN, FLOWER_PASSWORD, SOME_SECRET):
        assert secret not in raw


def test_a_warm_job_process_inherits_none_of_the_workers_secrets(services, fleet):
    # Given a worker whose environment holds secrets a job never needs
    worker = _worker_with_secrets(services, fleet, "0:T4:16")
    # When its pool child starts the warm job process the next attempt will run in
    (standby,) = poll(lambda: _job_processes(worker, "--standby"), 60, "the worker's warm job process")
    # Then that process started without any of them
    _assert_no_secret_in_environ(standby, services)


def test_a_cold_job_process_inherits_none_of_the_workers_secrets(services, fleet, client, tmp_path):
    # Given a worker without warm job processes, whose environment holds secrets a job never needs
    worker = _worker_with_secrets(services, fleet, "0:A100:40", YOLOQ_WARM_START="false")
    data = synthesize(tmp_path / "synth", SynthConfig(images=16, imgsz=64, classes=3))
    # When it runs a training job (long enough to be looked at), in a job process started for it
    handle = client.submit(TrainSpec(data=str(data.parent), model="yolov8n.yaml", epochs=100, imgsz=64, batch=4,
                                     workers=0, tier=Tier.LOW, team="vision", memory_gb=4))  # fmt: skip
    (job,) = poll(lambda: _job_processes(worker, handle.job_id), 120, "the job's job process")
    # Then that process started without any of them
    _assert_no_secret_in_environ(job, services)
    client.cancel(handle.job_id)
    assert handle.wait(timeout_s=120).state is JobState.CANCELLED


def _readable_by_others(home: Path) -> list[str]:
    """Every folder, file or socket under ``home`` (itself included) with a group or other permission bit, but
    SeaweedFS's volume info files: it chmods them 0644 whatever the umask (weed/storage/volume_info), and they hold
    a volume's version and sizes, no object, inside folders this check requires to be 0700."""
    found = []
    for path in (home, *home.rglob("*")):
        mode = path.lstat().st_mode
        if not stat.S_ISLNK(mode) and mode & 0o077 and path.suffix != ".vif":
            found.append(f"{oct(stat.S_IMODE(mode))} {path.relative_to(home.parent)}")
    return found


def test_the_stack_home_holds_nothing_group_or_others_can_read(tmp_path):
    # Given a stack started in a home that does not exist yet
    home = tmp_path / "home"
    stack = start_services(Settings(home=home, lease_ttl_s=3.0, worker_ttl_s=5.0), prefer_configured_redis=False)
    try:
        # When it publishes its stack file, runs a worker (whose warm job process writes its config folder) and a
        # job (the registry's AOF), and stores an object in S3 (a volume)
        write_stack_file(stack.settings)
        stack.start_worker(0, gpus="0:T4:16")
        Fleet(stack).wait_ready(0)
        done = Client(stack.settings).submit(ProbeSpec(seconds=1, tier=Tier.LOW, team="ops")).wait(timeout_s=60)
        assert done.state is JobState.SUCCEEDED
        S3Store(stack.settings).put_json("isolation/probe.json", {"written": True})
        poll(lambda: list((home / "work").glob("standby-*/standby-ready")), 60, "the warm job process's imports")
        # Then nothing in it is group- or other-readable: folders 0700, files and sockets 0600
        assert _readable_by_others(home) == []
        assert stat.S_IMODE(home.stat().st_mode) == 0o700
        assert list(home.glob("redis/*/appendonly.aof")), "the check saw Redis's AOF"
    finally:
        stack.stop()
