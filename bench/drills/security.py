"""Drill 9, security review as checks on a real stack (one simulated H200 worker, whose queues are all 30 of yoloq's,
beat with its ops worker, the API, Flower):

(a) JSON only: a pickled Celery message, whose unpickling would create a file, is published to every yoloq queue and
    the ops queue; each must be consumed and refused (the worker logs kombu's ContentDisallowed), no file may appear,
    and the workers live on. The message is the bytes an attacker with broker access would write (``pickled_message``:
    kombu's Redis envelope around a pickled Celery body); nothing of yoloq, not even a baseline, serializes or accepts
    pickle, so plain Celery's behaviour is stated, not run: with ``accept_content`` including pickle it unpickles the
    body on receipt, before any task code.
(b) Secrets from settings only: no literal credential and no credential read from the environment in the source; no
    secret in the argv of any process the stack starts (audited on ``subprocess.Popen``, and /proc of every live
    child), none outside ``YOLOQ_*`` settings in their environment, no API token or Flower password in a job
    process's environment, no secret in any log file after failed and successful logins, a job and the pickles.
(c) Every surface behind auth: API routes, the status page, /metrics, /openapi.json and Flower's pages answer 401
    without credentials and with wrong ones, 200 with the right ones. Same run, Flower as Celery ships it: open.
(d) No network for Ultralytics: a real tiny training job through a stack started in a network namespace holding only
    loopback, every Python process audited (socket.connect, getaddrinfo, ...): it succeeds, nothing names another
    host. Beside it, Ultralytics' own ``train`` there without yoloq's offline settings: the control (its calls to
    one.one.one.one, dns.google and github.com show that the hook sees them).
``jobs``: checks made; ``lost``: pickles executed or surfaces answering without credentials."""

from __future__ import annotations

import base64
import json
import pickle
import sys
import time
import uuid
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from bench.drills import security_kit, surfaces
from bench.drills.outcome import Outcome
from bench.drills.security_kit import Started
from bench.drills.surfaces import Surfaces, basic, call
from bench.harness.stack import poll, yoloq_fleet
from infra.processes import ManagedProcess, free_port
from routing.tiers import OPS_QUEUE, all_queues
from tasks.states import JobState
from workers.stack import Services
from yoloq.client import Client

GPUS = "0:H200:141"  # one worker consuming every size class: all 30 yoloq queues
API_PATHS = ["/api/v1/status", "/api/v1/queues", "/api/v1/jobs", "/api/v1/audit", "/api/v1/sla", "/metrics",
             "/status", "/openapi.json", "/api/v1/models", "/api/v1/deployments"]  # fmt: skip
FLOWER_PATHS = ["/", "/workers", "/tasks", "/broker", "/api/workers", "/api/tasks", "/metrics"]
REFUSED = (401, 403)
PLAIN_PICKLE = (
    "not run (no pickle consumer anywhere in yoloq's code): Celery with accept_content including pickle "
    "unpickles a message on receipt, before any task code, so the payload's code runs"
)
SECRET_CHECKS = 5  # source, argv of started processes, live command lines, a job's environment, logs


class Payload:
    """Unpickling this creates ``path`` (a visible, harmless effect): what a hostile pickle would do instead."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self) -> tuple[Any, tuple[str, str]]:
        return (open, (self.path, "w"))


def pickled_message(task: str, queue: str, payload: object) -> bytes:
    """A Celery protocol 2 task message for ``task`` whose body is ``pickle.dumps`` of its arguments, in kombu's Redis
    envelope: what an attacker who can write to the broker would push (no producer is configured for pickle)."""
    task_id = uuid.uuid4().hex
    body = pickle.dumps(((payload,), {}, {"callbacks": None, "errbacks": None, "chain": None, "chord": None}))
    headers = {"lang": "py", "task": task, "id": task_id, "root_id": task_id, "parent_id": None, "group": None,
               "retries": 0, "argsrepr": "()", "kwargsrepr": "{}", "origin": "drill"}  # fmt: skip
    delivery = {"exchange": "", "routing_key": queue}
    properties = {"correlation_id": task_id, "delivery_mode": 2, "priority": 0, "body_encoding": "base64",
                  "delivery_info": delivery, "delivery_tag": uuid.uuid4().hex}  # fmt: skip
    kind = {"content-encoding": "binary", "content-type": "application/x-python-serialize"}
    envelope = {"body": base64.b64encode(body).decode(), **kind, "headers": headers, "properties": properties}
    return json.dumps(envelope).encode()


def publish_pickles(redis: Any, task: str, queues: list[str], marks: Path) -> dict[str, Path]:
    """One pickled task message per queue, pushed as raw bytes where kombu publishes; the file each would create."""
    out = {}
    for queue in queues:
        out[queue] = marks / f"executed-{queue}"
        redis.lpush(queue, pickled_message(task, queue, Payload(out[queue])))
    return out


def _drained(client: Client, queues: list[str]) -> bool:
    redis = client.registry.client
    return not any(redis.llen(q) for q in queues) and not redis.hlen("unacked")


def json_only(outcome: Outcome, services: Services, marks: Path) -> dict[str, Any]:
    """(a): every queue gets a pickle; each is refused, logged, never run."""
    queues = [*all_queues(), OPS_QUEUE]
    client = Client(services.settings)
    files = publish_pickles(client.registry.client, "yoloq.probe", queues, marks)
    try:
        poll(lambda: _drained(client, queues), 0.2, 60)
    except TimeoutError:
        outcome.problems.append(
            f"pickled messages still queued after 60 s: {[q for q in queues if client.registry.client.llen(q)]}"
        )
    executed = sorted(q for q, path in files.items() if path.exists())
    outcome.lost += len(executed)
    outcome.check(not executed, f"a pickled message was unpickled (code ran) from {executed}")
    logs = [p for p in (services.settings.home / "logs").glob("*.log") if "worker" in p.name or "beat" in p.name]
    refusals = sum(p.read_text(errors="replace").count("Refusing to deserialize untrusted content") for p in logs)
    outcome.check(refusals >= len(queues), f"{refusals} refusals logged for {len(queues)} pickled messages")
    alive = all(p.alive() for p in services.workers.values()) and services.surfaces["beat"][0].alive()
    outcome.check(alive, "a worker or beat died on a pickled message")
    return {"queues": len(queues), "refused_and_logged": refusals, "executed": len(executed)}


def refusals(api: Surfaces) -> tuple[int, list[str]]:
    """(c): each protected path without credentials and with wrong ones: 401/403; with the right ones: 200."""
    checks, failures = 0, []
    wrong_pair = basic(f"ops:{'x' * 20}")
    cases = [
        (api.api + p, auth, right)
        for p in API_PATHS
        for auth, right in ((None, False), ("Bearer wrong-" + "t" * 32, False), (wrong_pair, False), (api.bearer, True))
    ]
    cases += [(api.api + "/api/v1/jobs", None, False)]
    cases += [(api.flower + p, auth, right) for p in FLOWER_PATHS for auth, right in
              ((None, False), (wrong_pair, False), (basic(api.flower_pair), True))]  # fmt: skip
    for url, auth, right in cases:
        answer = call(url, auth=auth, timeout_s=30)
        checks += 1
        if (answer.status == 200) != right or (not right and answer.status not in REFUSED):
            failures.append(f"{url.split('//', 1)[1]} {'with' if auth else 'without'} credentials: {answer.status}")
    post = call(api.api + "/api/v1/jobs", "POST", None, b'{"kind": "probe", "team": "vision"}')
    checks += 1
    if post.status not in REFUSED:
        failures.append(f"POST /api/v1/jobs without credentials: {post.status}")
    return checks, failures


def plain_flower(services: Services) -> dict[str, int]:
    """Flower as Celery ships it (no auth flag) on the same broker: what it answers to nobody."""
    port = free_port()
    argv = [sys.executable, "-m", "celery", "-A", "bench.harness.plain_tasks", "flower", f"--port={port}",
            "--address=127.0.0.1"]  # fmt: skip
    flower = ManagedProcess("plain-flower", argv, services.settings.home / "logs" / "plain-flower.log",
                            services.env(PYTHONPATH=str(security_kit.ROOT)))  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        poll(lambda: _answers(base + "/healthcheck"), 0.2, 60)
        return {path: call(base + path, timeout_s=30).status for path in ("/", "/metrics", "/api/workers")}
    finally:
        flower.stop(10)


def _answers(url: str) -> bool:
    try:
        return call(url, timeout_s=2).status == 200
    except OSError:
        return False


def secrets_checks(outcome: Outcome, services: Services, started: Started, client: Client) -> dict[str, Any]:
    """(b): the source, the argv and environments of what runs, a running job's environment, every log."""
    secrets = security_kit.secrets_of(services)
    outcome.check(len(secrets) == 4, f"expected 4 secrets, found {sorted(secrets)}")
    files, literal = security_kit.scan_code()
    outcome.check(not literal, f"credentials in the source: {literal[:5]}")
    handle = client.submit({"kind": "probe", "team": "vision", "tier": "low", "seconds": 30})
    handle.wait({JobState.RUNNING}, timeout_s=60)
    procs, jobs, live = security_kit.live_leaks(secrets, ("API token", "Flower password"))
    client.cancel(handle.job_id)
    outcome.check(jobs >= 1, "no job process was running to inspect")
    argv = security_kit.argv_leaks(started, secrets)
    outcome.check(not argv and not live, f"secrets visible in processes: {[*argv, *live][:6]}")
    logged, in_logs = security_kit.log_leaks(services.settings.home, secrets)
    outcome.check(not in_logs, f"secrets in logs: {in_logs[:6]}")
    return {"source_files": files, "processes_started": len(started.seen), "processes_inspected": procs,
            "job_processes_inspected": jobs, "log_files": logged}  # fmt: skip


def network(outcome: Outcome, report: dict[str, Any], how: str) -> dict[str, Any]:
    """(d): the job succeeded with the network removed, audited in every process, and named no other host."""
    outcome.check(report.get("state") == "succeeded", f"training without network: {report}")
    outcome.check(report.get("job_processes", 0) >= 1, "the audit hook saw no job process")
    outcome.check(not report.get("off_host"), f"network calls off this host: {report.get('off_host')}")
    return {"how": how, **{k: report.get(k) for k in ("state", "seconds", "processes", "job_processes",
                                                       "audited_calls", "off_host")}}  # fmt: skip


class Phases:
    """Seconds each part of the drill took (where a slow run spends its time)."""

    def __init__(self) -> None:
        self.spent: dict[str, float] = {}
        self._last = time.monotonic()

    def mark(self, name: str) -> None:
        """The part just finished."""
        now = time.monotonic()
        self.spent[name], self._last = round(now - self._last, 1), now


def run(quick: bool) -> Outcome:
    """All four reviews on one stack; the network one runs meanwhile in its own namespace."""
    outcome = Outcome(name="security", faults="pickles on every queue, no credentials, secrets hunted, no network",
                      jobs=0, command=f"python -m bench.drills {'--quick ' if quick else ''}security")  # fmt: skip
    pool = ThreadPoolExecutor(2)
    offline: Future[tuple[dict[str, Any], str]] = pool.submit(security_kit.offline_run, "yoloq", 500)
    plain_net = pool.submit(security_kit.offline_run, "plain", 300)
    clock = Phases()
    with Started() as started, yoloq_fleet(GPUS, prefix="yoloq-drill-security-") as stack:
        services = stack.services
        api = surfaces.start(services)
        services.start_beat()
        client = Client(services.settings)
        beat = services.surfaces["beat"][0]
        poll(lambda: " ready." in beat.tail(80), 0.2, 60)  # its ops worker consumes yoloq.ops
        marks = services.settings.home / "marks"
        marks.mkdir()
        clock.mark("stack")
        figures: dict[str, Any] = {"json_only": json_only(outcome, services, marks)}
        clock.mark("pickles")
        baseline: dict[str, Any] = {"pickle": PLAIN_PICKLE}
        checks, failures = refusals(api)
        outcome.lost += len(failures)
        outcome.check(not failures, f"answered without the right credentials: {failures[:6]}")
        figures["auth"] = {"checks": checks, "failures": len(failures)}
        clock.mark("auth")
        baseline["flower_without_auth"] = plain_flower(services)
        clock.mark("plain Flower")
        figures["secrets"] = secrets_checks(outcome, services, started, client)
        clock.mark("secrets")
        (yoloq_report, how), (report, _) = offline.result(), plain_net.result()  # ended before the leak check
        clock.mark("network (waited for)")
    figures["seconds"] = clock.spent
    outcome.check(not stack.leaked, f"processes outlived the stack: {stack.leaked}")
    figures["network"] = network(outcome, yoloq_report, how)
    baseline["ultralytics_without_yoloq"] = {k: report.get(k) for k in ("state", "error", "off_host")}
    outcome.check(bool(report.get("off_host")), "the control saw no call either: plain Ultralytics made no network "
                  f"call the audit hook recorded ({report}), so the hook may see nothing")  # fmt: skip
    pool.shutdown()
    outcome.jobs = figures["json_only"]["queues"] + checks + SECRET_CHECKS + 2
    outcome.figures, outcome.baseline = figures, baseline
    return outcome
