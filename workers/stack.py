"""The local stack: Redis + S3 + one worker per (real or simulated) GPU, started and stopped as one.

Used by ``yoloq up`` (foreground, Ctrl-C/SIGTERM stops everything), the demo and the test session. Children run in
their own process groups with a parent-death signal, so nothing outlives the stack, even after ``kill -9``. The
home is 0700 and everything the stack writes there is its owner's alone (folders 0700, files 0600): the AOF, the S3
volumes, the stack file and the logs hold the registry, job data and keys.
"""

from __future__ import annotations

import secrets
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from infra import stack_file
from infra.inventory import discover
from infra.local_redis import RedisService, start_redis
from infra.local_s3 import S3Service, start_s3
from infra.ports import GpuInfo
from infra.presence import GpuClaims
from infra.processes import ManagedProcess, free_port, private_dir, private_umask
from infra.redis_client import connect, mask
from infra.settings import Settings, environ_for, load_settings, process_environ
from tasks.errors import ConfigError

READY_TIMEOUT_S = 120.0  # how long `up` waits for every GPU's worker to consume before saying which still start


@dataclass
class Services:
    """Running Redis and S3 plus the settings that point at them."""

    settings: Settings
    redis: RedisService
    s3: S3Service
    workers: dict[int, ManagedProcess] = field(default_factory=dict)
    supervisors: list[ManagedProcess] = field(default_factory=list)
    surfaces: dict[str, tuple[ManagedProcess, str]] = field(default_factory=dict)  # api, flower → (process, URL)

    def env(self, **extra: str) -> dict[str, str]:
        """Environment for a child process (worker, CLI) that must use these services."""
        base = {k: v for k, v in process_environ().items() if not k.startswith("YOLOQ_")}
        return {**base, **environ_for(self.settings), **extra}

    def start_worker(
        self, index: int, gpus: str | None = None, cpus: str | None = None, share: bool = False
    ) -> ManagedProcess:
        """Start ``yoloq worker --gpu index`` as a child process (``gpus`` overrides the simulated inventory;
        ``cpus`` pins it and its jobs to those CPUs, as a device of its own would keep it apart from its neighbours)."""
        log = self.settings.home / "logs" / f"worker-gpu{index}.log"
        argv = [sys.executable, "-m", "yoloq", "worker", "--gpu", str(index), *(["--share"] if share else [])]
        argv = ["taskset", "-c", cpus, *argv] if cpus else argv
        extra = {"YOLOQ_GPUS": gpus} if gpus is not None else {}
        proc = ManagedProcess(f"worker-gpu{index}", argv, log, env=self.env(**extra))
        self.workers[index] = proc
        return proc

    def start_supervisor(self, *args: str) -> ManagedProcess:
        """Start ``yoloq supervisor`` as a child process (more than one: leader plus standbys)."""
        n = len(self.supervisors)
        log = self.settings.home / "logs" / f"supervisor{n}.log"
        proc = ManagedProcess(f"supervisor{n}", [sys.executable, "-m", "yoloq", "supervisor", *args], log, self.env())
        self.supervisors.append(proc)
        return proc

    def start_surface(self, name: str, port: int) -> str:
        """Start ``yoloq api`` or ``yoloq flower`` on ``port`` (another free one when taken); returns its URL."""
        port = port if _port_free(port) else free_port()
        log = self.settings.home / "logs" / f"{name}.log"
        proc = ManagedProcess(name, [sys.executable, "-m", "yoloq", name, "--port", str(port)], log, self.env())
        url = f"http://127.0.0.1:{port}"
        self.surfaces[name] = (proc, url)
        return url

    def start_beat(self) -> ManagedProcess:
        """Start ``yoloq beat`` (built-in schedules plus YOLOQ_SCHEDULE_FILE) as a child; stopped with the rest."""
        log = self.settings.home / "logs" / "beat.log"
        proc = ManagedProcess("beat", [sys.executable, "-m", "yoloq", "beat"], log, self.env())
        self.surfaces["beat"] = (proc, "")
        return proc

    def start_notifier(self) -> ManagedProcess:
        """Start ``yoloq notifier`` (delivers webhooks: docs/notifications.md) as a child; stopped with the rest."""
        log = self.settings.home / "logs" / "notifier.log"
        proc = ManagedProcess("notifier", [sys.executable, "-m", "yoloq", "notifier"], log, self.env())
        self.surfaces["notifier"] = (proc, "")
        return proc

    def stop_workers(self, grace_s: float = 30.0) -> None:
        """Warm-stop every worker at once (SIGTERM to each main process only: its running job is preempted and
        requeued first; a group-wide SIGTERM would kill a probe's pool child mid-step and strand its job)."""
        all_at_once([partial(p.warm_stop, grace_s) for p in self.workers.values()])
        self.workers.clear()

    def stop(self) -> None:
        """Stop every process at once: workers warm (a running job checkpoints to S3 and is requeued in Redis),
        supervisors, beat, API and Flower; then S3 and Redis together, once nothing needs them.

        One after the other this took 8.3-8.9 s with no job running (each Celery process spends 1-2 s in its warm
        shutdown, the supervisor up to its interval); at once the slowest one sets the pace. A supervisor that gets
        SIGTERM never starts another tick, so it makes no new preemptions while the workers stop."""
        stoppers: list[Callable[[], object]] = [partial(p.stop, 10) for p in self.supervisors]
        stoppers += [partial(p.stop, 10) for p, _ in self.surfaces.values()]
        all_at_once([*stoppers, self.stop_workers])
        self.supervisors.clear()
        self.surfaces.clear()
        all_at_once([self.s3.stop, self.redis.stop])


def all_at_once(calls: list[Callable[[], object]]) -> None:
    """Run ``calls`` in parallel threads and return when all are done (each stop mostly waits on a child)."""
    threads = [threading.Thread(target=call, daemon=True) for call in calls]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def start_services(settings: Settings, prefer_configured_redis: bool = True) -> Services:
    """Bring up Redis (configured or embedded) and SeaweedFS S3 in a private home; returns settings that point at
    both."""
    private_dir(settings.home).chmod(0o700)  # a home an earlier version made 0755 too
    with private_umask():  # the folders each service's start creates before its process (with umask 077) runs
        redis = start_redis(settings.redis_url, settings.home, prefer_configured_redis)
        try:
            s3 = start_s3(settings.home, settings.s3_bucket)
        except BaseException:
            redis.stop()
            raise
    pointed = settings.model_copy(update={
        "redis_url": redis.url, "s3_endpoint": s3.endpoint,
        "s3_access_key": s3.access_key, "s3_secret_key": s3.secret_key,
    })  # fmt: skip
    return Services(Settings.model_validate(pointed.model_dump()), redis, s3)


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) != 0


def with_credentials(settings: Settings) -> Settings:
    """Settings with an API token and a Flower password, generated for this stack when none are configured."""
    update: dict[str, str] = {}
    if not settings.api_token.get_secret_value():
        update["api_token"] = secrets.token_urlsafe(24)
    if not settings.flower_basic_auth.get_secret_value():
        update["flower_basic_auth"] = f"ops:{secrets.token_urlsafe(18)}"
    return Settings.model_validate({**settings.model_dump(), **update}) if update else settings


def write_stack_file(settings: Settings) -> Path:
    """Publish the stack's connection settings and simulated inventory (mode 0600, with this process as owner) so
    ``yoloq`` in another shell, a worker included, finds the same stack and the same GPUs."""
    env = environ_for(settings)
    return stack_file.write_stack_file(settings.home, {k: env[k] for k in stack_file.PUBLISHED if k in env})


def _refuse_second_stack(home: Path) -> None:
    """Two stacks in one home would overwrite each other's stack file: refuse while another one runs."""
    found = stack_file.read_stack_file(home)
    if found is not None and found.owner is not None and found.live():
        raise ConfigError(f"a yoloq stack already runs from {home} ({found.describe()}); stop it first, or set "
                          "YOLOQ_HOME to another folder")  # fmt: skip


def claimed_ready(services: Services, claims: GpuClaims, host: str) -> set[int]:
    """The GPUs whose worker (the process this stack started, not a stale claim) consumes its queues now."""
    pids = {index: proc.pid for index, proc in services.workers.items()}
    ready = set()
    for claim in claims.live():
        index = int(claim.get("gpu", {}).get("index", -1))
        if claim.get("host") == host and claim.get("ready_at") and pids.get(index) == claim.get("pid"):
            ready.add(index)
    return ready


def restart_exited(services: Services) -> None:
    """Start a new worker for every GPU whose worker process has exited."""
    for index, proc in list(services.workers.items()):
        if not proc.alive():
            print(f"worker for GPU {index} exited ({proc.proc.returncode}); restarting", flush=True)
            services.start_worker(index)


def wait_for_workers(services: Services, stop: threading.Event, timeout_s: float) -> list[int]:
    """Wait until every worker has claimed its GPU and consumes (so ``status`` right after lists every GPU);
    returns the GPUs still starting at the deadline, or when ``stop`` is set first."""
    claims = GpuClaims(connect(services.settings.redis_url), services.settings.redis_url)
    host, deadline = services.settings.host(), time.monotonic() + timeout_s
    while True:
        pending = sorted(set(services.workers) - claimed_ready(services, claims, host))
        if not pending or stop.is_set() or time.monotonic() >= deadline:
            return pending
        restart_exited(services)
        stop.wait(0.1)


def _announce(services: Services, inventory: tuple[GpuInfo, ...], urls: tuple[str, str], published: Path) -> None:
    api, flower = urls
    print(f"redis  {mask(services.settings.redis_url)}\ns3     {services.s3.endpoint} bucket {services.s3.bucket}")
    print(
        f"status {api}/status (user any, password: YOLOQ_API_TOKEN in {published})\nflower {flower} "
        f"(YOLOQ_FLOWER_BASIC_AUTH in {published})"
    )
    listed = ", ".join(f"{g.index}:{g.name}:{g.memory_mib}MiB" for g in inventory)
    print(f"gpus   {listed or 'none found by NVML: no workers (simulate with --gpus 0:T4:16,1:A100:40)'}", flush=True)


def _ready_line(inventory: tuple[GpuInfo, ...], pending: list[int], waited_s: float) -> str:
    """``ready  2 of 2 GPU workers consuming`` (or which GPUs are still starting after the wait)."""
    done = len(inventory) - len(pending)
    line = f"ready  {done} of {len(inventory)} GPU workers consuming"
    if pending:
        line += f"; GPU {', '.join(map(str, pending))} still starting after {waited_s:.0f} s (see its worker log)"
    return line


def run_up(gpus: str | None, ready_timeout_s: float = READY_TIMEOUT_S) -> None:
    """Foreground ``yoloq up``: start everything, say ``ready`` once every GPU's worker consumes, stop it all on
    SIGINT/SIGTERM."""
    settings = load_settings(use_stack_file=False)
    if gpus is not None:
        settings = settings.model_copy(update={"gpus": gpus})
    inventory = discover(settings.gpus)
    _refuse_second_stack(settings.home)
    services = start_services(with_credentials(settings))
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    published = write_stack_file(services.settings)
    try:
        for gpu in inventory:
            services.start_worker(gpu.index)
        services.start_supervisor()
        urls = services.start_surface("api", 8000), services.start_surface("flower", 5555)
        services.start_beat()
        services.start_notifier()
        _announce(services, inventory, urls, published)
        started = time.monotonic()
        pending = wait_for_workers(services, stop, ready_timeout_s)
        if not stop.is_set():
            print(f"{_ready_line(inventory, pending, time.monotonic() - started)}\nother shells use {published}; "
                  f"logs in {settings.home / 'logs'}; Ctrl-C stops", flush=True)  # fmt: skip
        while not stop.wait(1.0):
            restart_exited(services)
    finally:
        print("stopping workers (running jobs are preempted and requeued), S3, Redis ...", flush=True)
        services.stop()
        published.unlink(missing_ok=True)
