"""Drill 8, hostile input: Hypothesis-generated hostile job specs (tests/hostile_inputs.py: one thing wrong each, so
each must be refused) through ``Client.submit`` and ``POST /api/v1/jobs`` of a real stack (a one-GPU fleet, the API,
data roots configured), plus raw bodies (deep nesting, not JSON, not UTF-8, over the cap) and hostile path
parameters (traversal in job, model and deployment names); hostile schedule files through ``tasks.schedule_file``
and a sample through ``yoloq beat --check``; a sample of hostile ``yoloq submit`` command lines as processes. Every
input must be refused with a typed one-line error (SpecRejected / ScheduleFileError in process, a 4xx JSON
``{"error"}`` over HTTP, exit 1 or 2 with one stderr line and no traceback from the CLI), never a 5xx, and Redis must
hold the same keys and values afterwards. Then hostile Celery messages (unknown task, wrong arguments, unknown or
traversing job ids, a body that is not JSON) reach the worker, which must stay up and still run a probe.
``jobs``: inputs tried; ``lost``: inputs accepted or answered with a 5xx. The schemathesis and upload fuzzers of the
API (tests/integration/test_openapi_fuzz.py, test_detect_fuzz.py) run at full size and are reported as they ran."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

from hypothesis import HealthCheck, Phase, given, seed, settings

from bench.drills import hostile_kit
from bench.drills.hostile_kit import Tally, keyspace
from bench.drills.outcome import Outcome
from bench.drills.surfaces import Surfaces, call
from bench.harness.stack import poll, yoloq_fleet
from tasks.errors import SpecRejected, YoloqError
from tasks.schedule_file import ScheduleFileError, check_submittable, load
from tests import hostile_inputs as hostile
from workers.stack import Services
from yoloq.client import Client

SEED = 17
SIZES = {True: {"client": 150, "http": 150, "schedules": 100, "beat": 4, "cli": 6},
         False: {"client": 2000, "http": 2000, "schedules": 1000, "beat": 30, "cli": 60}}  # fmt: skip
RAW_BODIES: dict[str, bytes] = {
    "nested 100k deep": b"[" * 100_000 + b"]" * 100_000,
    "object 50k deep": b'{"a":' * 50_000 + b"1" + b"}" * 50_000,
    "not JSON": b"kind=probe&team=vision",
    "not UTF-8": b'{"kind":"probe","team":"\xff\xfe"}',
    "integer of 5,000 digits": b'{"kind":"probe","team":"vision","seconds":' + b"9" * 5000 + b"}",
    "over the 1 MiB cap": json.dumps({"kind": "probe", "team": "vision", "name": "n" * (2 << 20)}).encode(),
    "empty": b"",
}
PATH_PARAMS = ["..%2F..%2Fetc%2Fpasswd", "..", "%2e%2e", "a%00b", "j" * 5000, "%0d%0aX-Injected:%201", "~root",
               "%2Fetc%2Fpasswd", "%E2%80%AEevil"]  # fmt: skip
ROUTES = ["/api/v1/jobs/{}", "/api/v1/models/{}", "/api/v1/deployments/{}", "/api/v1/jobs/{}/cancel"]


def _hypothesis(examples: int) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """Settings for a drill's generation: fixed seed, no database, no shrinking (every outcome is counted)."""
    return settings(max_examples=examples, deadline=None, database=None, phases=[Phase.explicit, Phase.generate],
                    suppress_health_check=list(HealthCheck), print_blob=False)  # fmt: skip


def seed_registry(client: Client) -> None:
    """Something for refused inputs to leave alone: a held job (its record, history, indexes, the audit stream) and
    a quota."""
    from routing.tiers import Tier

    client.quota("seeded", Tier.LOW, 3)
    held = client.submit({"kind": "probe", "team": "seeded", "tier": "critical", "seconds": 1})
    assert held.state.value == "held", held.state


def fuzz_client(client: Client, examples: int, roots: tuple[Path, ...], tally: Tally) -> None:
    """Hostile specs through the Python Client (the CLI's and the API's path): SpecRejected, one line."""

    @seed(SEED)
    @_hypothesis(examples)
    @given(spec=hostile.hostile_specs(roots=roots))
    def one(spec: Any) -> None:
        try:
            handle = client.submit(spec)
        except SpecRejected as err:
            tally.refused_with(str(err), spec)
        except YoloqError as err:
            tally.unclear.append(f"{type(err).__name__}: {str(err)[:200]} for {hostile_kit.shown(spec)}")
        except Exception as err:  # a crash is the finding
            tally.crashes.append(f"{type(err).__name__}: {str(err)[:200]} for {hostile_kit.shown(spec)}")
        else:
            tally.accepted.append(f"{handle.job_id} from {hostile_kit.shown(spec)}")

    one()


def fuzz_http(api: Surfaces, examples: int, roots: tuple[Path, ...], tally: Tally) -> None:
    """The same specs over HTTP (a remote caller), then raw bodies and hostile path parameters: 4xx JSON only."""

    @seed(SEED)
    @_hypothesis(examples)
    @given(spec=hostile.hostile_specs(roots=roots))
    def one(spec: Any) -> None:
        try:
            answer = call(api.api + "/api/v1/jobs", "POST", api.bearer, json.dumps(spec).encode(), timeout_s=60)
        except OSError as err:  # no answer at all is a finding too
            tally.crashes.append(f"no answer ({err}) for {hostile_kit.shown(spec)}")
            tally.tried += 1
            return
        tally.answered(answer, spec)

    one()
    for label, body in RAW_BODIES.items():
        tally.answered(call(api.api + "/api/v1/jobs", "POST", api.bearer, body, timeout_s=60), label)
    for route in ROUTES:
        for param in PATH_PARAMS:
            method = "POST" if route.endswith("cancel") else "GET"
            path = route.format(param)
            tally.answered(call(api.api + path, method, api.bearer, b"" if method == "POST" else None), path)


def fuzz_schedules(examples: int, sample: int, tally: Tally, cli: Tally, env: dict[str, str]) -> None:
    """Hostile schedule files loaded in process (ScheduleFileError, one line); the first ``sample`` of them also
    through ``yoloq beat --check`` (exit 1/2, one line, no traceback)."""
    kept: list[tuple[str, bytes]] = []
    with tempfile.TemporaryDirectory(prefix="yoloq-hostile-schedules-") as tmp:

        @seed(SEED)
        @_hypothesis(examples)
        @given(document=hostile.hostile_schedules())
        def one(document: tuple[str, bytes]) -> None:
            path = Path(tmp) / f"schedule{document[0]}"
            path.write_bytes(document[1])
            try:
                check_submittable(load(path))
            except ScheduleFileError as err:
                tally.refused_with(str(err).replace(str(path), "FILE"), document)
                if len(kept) < sample:
                    kept.append(document)
            except Exception as err:
                tally.crashes.append(f"{type(err).__name__}: {str(err)[:200]} for {hostile_kit.shown(document)}")
            else:
                tally.accepted.append(f"schedule {hostile_kit.shown(document)}")

        one()
        for n, (suffix, content) in enumerate(kept):
            path = Path(tmp) / f"sample{n}{suffix}"
            path.write_bytes(content)
            cli.ran(["beat", "--check", "--schedule", str(path)], env)
    tally.check(not Path("/tmp/yoloq-hostile-yaml").exists(), "a YAML tag in a schedule file ran a command")


def fuzz_cli(sample: int, roots: tuple[Path, ...], tally: Tally, env: dict[str, str]) -> None:
    """A sample of hostile ``yoloq submit`` command lines, each a whole process."""
    drawn: list[list[str]] = []

    @seed(SEED)
    @_hypothesis(sample)
    @given(args=hostile.cli_args(roots=roots))
    def one(args: list[str]) -> None:
        drawn.append(args)

    one()
    for args in drawn:
        tally.ran(args, env)


def _hostile_messages(services: Services) -> int:
    """Messages a Redis-holding caller could publish: each must be dropped by the worker, none may stop it."""
    from routing.tiers import Tier, route
    from tasks.app import create_app

    app = create_app(services.settings)
    queue = route(Tier.LOW, 1024).queue
    sends: list[tuple[str, dict[str, Any]]] = [
        ("yoloq.no-such-task", {"job_id": "j1"}),
        ("yoloq.probe", {}),
        ("yoloq.probe", {"job_id": "j-never-registered", "tier": "low", "team": "x"}),
        ("yoloq.probe", {"job_id": "../../../etc/passwd", "tier": "low", "team": "x"}),
        ("yoloq.probe", {"job_id": ["a"], "tier": 5, "team": None}),
        ("yoloq.train", {"job_id": "j" * 100_000, "tier": "low", "team": "x"}),
    ]
    for name, kwargs in sends:
        app.send_task(name, kwargs=kwargs, queue=queue)
    envelope = {"body": "e2JhZA==", "content-type": "application/json", "content-encoding": "utf-8",
                "headers": {"id": "x", "task": "yoloq.probe"}, "properties": {"delivery_tag": "hostile",
                "delivery_info": {"exchange": "", "routing_key": queue}, "body_encoding": "base64"}}  # fmt: skip
    with app.connection_for_write() as conn:  # a body that is not JSON ("{bad") under a JSON label
        cast(Any, conn.default_channel).client.lpush(queue, json.dumps(envelope))
    app.close()
    return len(sends) + 1


def worker_survives(outcome: Outcome, services: Services, client: Client) -> int:
    """Hostile messages are drained, the worker is the same process, and a probe submitted afterwards succeeds."""
    sent = _hostile_messages(services)
    worker = services.workers[0]
    redis = client.registry.client
    from routing.tiers import all_queues

    try:
        poll(lambda: not any(redis.llen(q) for q in all_queues()) and not redis.hlen("unacked"), 0.2, 60)
    except TimeoutError:
        outcome.problems.append("the worker did not drain the hostile messages within 60 s")
    outcome.check(worker.alive(), f"the worker died on hostile messages:\n{worker.tail(20)}")
    handle = client.submit({"kind": "probe", "team": "vision", "tier": "low", "seconds": 0})
    try:
        state = handle.wait(timeout_s=90).state.value
    except TimeoutError as err:
        state = str(err)
    outcome.check(state == "succeeded", f"a probe after the hostile messages: {state}")
    return sent


def reused_suites(outcome: Outcome) -> dict[str, Any]:
    """The API's schemathesis and upload fuzzers, run as they are (their own stack), summarised."""
    started = time.monotonic()
    argv = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/integration/test_openapi_fuzz.py",
            "tests/integration/test_detect_fuzz.py"]  # fmt: skip
    done = subprocess.run(argv, capture_output=True, text=True, timeout=1200, check=False)
    summary = (done.stdout.strip().splitlines() or ["(no output)"])[-1]
    outcome.check(done.returncode == 0, f"schemathesis/upload fuzzers: {summary}")
    return {"exit": done.returncode, "summary": summary, "seconds": round(time.monotonic() - started, 1)}


def run(quick: bool) -> Outcome:
    """Fuzz every door of a real stack; count what got through."""
    size = SIZES[quick]
    outcome = Outcome(name="hostile", faults="hostile specs, bodies, paths, schedule files, CLI lines, messages",
                      jobs=0, command=f"python -m bench.drills {'--quick ' if quick else ''}hostile")  # fmt: skip
    tallies = {name: Tally(name) for name in ("client", "http", "schedule", "cli")}
    with yoloq_fleet("0:A100:40", prefix="yoloq-drill-hostile-") as stack:
        services = stack.services
        roots = (hostile_kit.data_root(services),)
        api = hostile_kit.start_api(services)
        client = Client(services.settings)
        env = services.env()
        redis = client.registry.client
        seed_registry(client)
        before = keyspace(redis)
        fuzz_client(client, size["client"], roots, tallies["client"])
        fuzz_http(api, size["http"], roots, tallies["http"])
        fuzz_schedules(size["schedules"], size["beat"], tallies["schedule"], tallies["cli"], env)
        fuzz_cli(size["cli"], roots, tallies["cli"], env)
        hostile_kit.unchanged(outcome, before, keyspace(redis))
        messages = worker_survives(outcome, services, client)
    outcome.check(not stack.leaked, f"processes outlived the stack: {stack.leaked}")
    for tally in tallies.values():
        tally.report(outcome)
    outcome.jobs = sum(t.tried for t in tallies.values()) + messages
    outcome.figures.update({name: t.figures() for name, t in tallies.items()}, hostile_messages=messages)
    if not quick:
        outcome.figures["schemathesis_and_upload_fuzzers"] = reused_suites(outcome)
    outcome.baseline = {"note": "plain Celery has no admission: whatever apply_async gets is queued and run"}
    return outcome
