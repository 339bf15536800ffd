"""`yoloq flower`: real Flower on the workers' broker, basic auth on every page and /metrics, history kept."""

from __future__ import annotations

import ast
import json
import re
import secrets
import sys
import urllib.error
import urllib.parse
import urllib.request
from base64 import b64encode
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

import celeryconfig
from infra.processes import ManagedProcess, free_port
from tasks.specs import ProbeSpec
from tasks.states import JobState
from tests.fleet import poll, yoloq_cli

pytestmark = pytest.mark.integration

PASSWORD = secrets.token_urlsafe(16)
CREDENTIALS = f"ops:{PASSWORD}"
WRONG = [f"ops:{PASSWORD}x", f"intruder:{PASSWORD}", "ops:"]
CONTROLS = ["/api/task/revoke/00000000-0000-0000-0000-000000000000", "/api/worker/pool/grow/gpu0@nowhere"]
PROTECTED = ["/", "/workers", "/tasks", "/broker", "/api/workers", "/api/tasks", "/api/task/types", "/metrics"]
# Proxies from the environment must not see (or answer for) a loopback server.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def http_get(port: int, path: str, credentials: str | None = None, method: str = "GET") -> tuple[int, str]:
    """Status and body of a request (GET unless told) to the local Flower, with optional basic auth."""
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method)
    if credentials is not None:
        request.add_header("Authorization", "Basic " + b64encode(credentials.encode()).decode())
    try:
        with _OPENER.open(request, timeout=15) as response:
            return response.status, response.read().decode(errors="replace")
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode(errors="replace")


@dataclass
class FlowerServer:
    """One `yoloq flower` child process on a free port, with its own YOLOQ_HOME (where its history is kept)."""

    proc: ManagedProcess
    port: int

    def get(self, path: str, credentials: str | None = CREDENTIALS, method: str = "GET") -> tuple[int, str]:
        """A request with the right credentials unless told otherwise."""
        return http_get(self.port, path, credentials, method)

    def wait_up(self) -> None:
        """Block until Flower answers its (open) health check."""

        def up() -> bool:
            assert self.proc.alive(), f"flower exited:\n{self.proc.tail(40)}"
            try:
                return http_get(self.port, "/healthcheck")[0] == 200
            except OSError:
                return False

        poll(up, 60, "flower to answer", interval_s=0.2)

    def api_tasks(self) -> dict[str, dict]:
        """Flower's task list (/api/tasks), by task id."""
        status, body = self.get("/api/tasks")
        assert status == 200, body
        return json.loads(body)


@dataclass
class FlowerStarter:
    """Starts `yoloq flower` processes for one test and stops every one of them afterwards."""

    env: dict[str, str]
    home: Path
    started: list[FlowerServer] = field(default_factory=list)

    def start(self) -> FlowerServer:
        """Start Flower on a free port and wait until it answers."""
        port = free_port()
        argv = [sys.executable, "-m", "yoloq", "flower", "--port", str(port)]
        proc = ManagedProcess("flower", argv, self.home / "logs" / "flower.log", env=self.env)
        server = FlowerServer(proc, port)
        self.started.append(server)
        server.wait_up()
        return server

    def stop_all(self) -> None:
        """Stop every Flower this test started."""
        for server in self.started:
            server.proc.stop(15)


@pytest.fixture
def flower(services, tmp_path) -> Iterator[FlowerStarter]:
    """A starter for Flower processes that use the session's Redis and a fresh YOLOQ_HOME."""
    home = tmp_path / "home"
    starter = FlowerStarter(services.env(YOLOQ_HOME=str(home), YOLOQ_FLOWER_BASIC_AUTH=CREDENTIALS), home)
    yield starter
    starter.stop_all()


def _sees_worker_events(server: FlowerServer) -> bool:
    """True once Flower has a worker's heartbeat: its event receiver is bound, so no task event is missed."""
    status, body = server.get("/metrics")
    return status == 200 and re.search(r'^flower_worker_online\{worker="gpu0@[^"]+"\} 1\.0$', body, re.M) is not None


def _workers(server: FlowerServer) -> dict[str, dict]:
    """Workers as Flower's API lists them (asking them over the broker's control channel)."""
    status, body = server.get("/api/workers?refresh=1")
    assert status == 200, body
    return json.loads(body)


def _job_task(server: FlowerServer, task_id: str) -> dict | None:
    """The job's task as Flower lists it, once Flower knows it succeeded."""
    task = server.api_tasks().get(task_id)
    return task if task and task.get("state") == "SUCCESS" else None


@pytest.mark.parametrize("value", ["", "s3cr3t-no-colon", ":s3cr3t", "admin:", " admin:s3cr3t"])
def test_flower_refuses_to_start_without_valid_basic_auth(services, tmp_path, value):
    # Given no, or a malformed, YOLOQ_FLOWER_BASIC_AUTH
    env = services.env(YOLOQ_HOME=str(tmp_path), YOLOQ_FLOWER_BASIC_AUTH=value)
    # When an operator starts Flower
    result = yoloq_cli(services, "flower", "--port", str(free_port()), env=env)
    # Then it refuses with one line naming the variable, exit code 2, without echoing the secret
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("yoloq: error: ") and result.stderr.count("\n") == 1, result.stderr
    assert "YOLOQ_FLOWER_BASIC_AUTH" in result.stderr
    assert "s3cr3t" not in result.stderr + result.stdout
    assert not (tmp_path / "flower").exists()


def test_every_flower_page_and_metrics_need_basic_auth(flower):
    # Given a running Flower
    server = flower.start()
    # When clients come without credentials or with wrong ones
    # Then every page, the API and /metrics answer 401
    for path in PROTECTED:
        assert server.get(path, credentials=None)[0] == 401, path
        for wrong in WRONG:
            assert server.get(path, credentials=wrong)[0] == 401, (path, wrong)
    # And with the right credentials the UI, the API and the Prometheus page answer
    for path in ("/", "/api/workers", "/api/tasks"):
        status, body = server.get(path)
        assert status == 200, (path, body[:500])
    status, body = server.get("/metrics")
    assert status == 200 and "# TYPE flower_events_total counter" in body
    # And Flower's controls (they bypass yoloq's registry) are refused even with the right credentials
    for path in CONTROLS:
        assert server.get(path, credentials=None, method="POST")[0] == 401, path
        status, body = server.get(path, method="POST")
        assert (status, body) == (403, "Read only mode is enabled"), path
    # And the password is in neither its command line nor its log
    cmdline = Path(f"/proc/{server.proc.pid}/cmdline").read_bytes().decode(errors="replace")
    assert PASSWORD not in cmdline
    assert PASSWORD not in server.proc.log_path.read_text(errors="replace")


def test_non_ascii_credentials_are_checked_not_crashed_on(services, tmp_path):
    # Given a Flower whose operator chose a non-ASCII password
    password = "pässwörd-" + secrets.token_hex(8)
    home = tmp_path / "home"
    starter = FlowerStarter(services.env(YOLOQ_HOME=str(home), YOLOQ_FLOWER_BASIC_AUTH=f"ops:{password}"), home)
    try:
        server = starter.start()
        # When clients come with wrong non-ASCII passwords, or ones that are not even UTF-8
        wrong = [f"ops:{password}ß", "ops:日本語", f"öps:{password}"]
        for credentials in wrong:
            assert server.get("/api/workers", credentials=credentials)[0] == 401, credentials
        raw = "Basic " + b64encode(b"ops:\xff\xfe").decode()
        request = urllib.request.Request(f"http://127.0.0.1:{server.port}/api/workers", headers={"Authorization": raw})
        with pytest.raises(urllib.error.HTTPError) as refused:
            _OPENER.open(request, timeout=15)
        assert refused.value.code == 401
        # Then each is a 401 (never a 500), and the right non-ASCII password is let in
        assert server.get("/api/workers", credentials=f"ops:{password}")[0] == 200
        lower = "basic " + b64encode(f"ops:{password}".encode()).decode()  # auth schemes are case-insensitive
        request = urllib.request.Request(
            f"http://127.0.0.1:{server.port}/api/workers", headers={"Authorization": lower}
        )
        with _OPENER.open(request, timeout=15) as response:
            assert response.status == 200
        assert server.get("/api/workers", credentials=CREDENTIALS)[0] == 401
        assert "Traceback" not in server.proc.log_path.read_text(errors="replace")
    finally:
        starter.stop_all()


def test_flower_uses_the_workers_broker_transport_options(services, flower):
    # Given the transport options every worker and client uses
    expected = celeryconfig.from_settings(services.settings)["broker_transport_options"]
    # When Flower starts
    server = flower.start()
    # Then it reports exactly those (identical options are what keeps control and queue lengths working)
    logged = poll(lambda: re.search(r"broker transport options (\{.*\})$", server.proc.tail(40), re.M), 10, "log")
    assert json.loads(logged.group(1)) == json.loads(json.dumps(expected))


def test_flower_lists_jobs_with_id_tier_and_team_and_keeps_them_across_restart(fleet, client, flower):
    # Given a worker and a Flower that receives its events
    fleet.start("0:T4:16")
    server = flower.start()
    poll(lambda: _sees_worker_events(server), 30, "flower to receive the worker's heartbeat", interval_s=0.5)
    # When a probe job runs through the worker
    handle = client.submit(ProbeSpec(seconds=0, tier="low", team="vision"))
    record = handle.wait(timeout_s=60)
    assert record.state is JobState.SUCCEEDED
    task_id = record.attempts[-1].task_id
    # Then Flower lists its task, with the job id, tier and team in the kwargs
    task = poll(lambda: _job_task(server, task_id), 30, "flower to list the succeeded task", interval_s=0.3)
    assert task["name"] == "yoloq.probe"
    assert task["worker"].startswith("gpu0@")
    assert ast.literal_eval(task["kwargs"]) == {"job_id": handle.job_id, "tier": "low", "team": "vision"}
    assert ast.literal_eval(task["result"]) == "succeeded"  # the attempt's outcome (a preempted one says so)
    # And the task list's search finds an operator's job by its id
    for query in (f"kwargs:job_id={handle.job_id}", f"kwargs:job_id={handle.job_id} kwargs:team=vision"):
        status, body = server.get("/api/tasks?" + urllib.parse.urlencode({"search": query}))
        assert status == 200 and list(json.loads(body)) == [task_id], (query, body)
    assert server.get("/api/tasks?search=kwargs:team=nobody")[1] == "{}"
    # And the workers API lists the worker (control commands reach it over the same broker options)
    poll(lambda: any(name.startswith("gpu0@") for name in _workers(server)), 30, "flower to list the worker")
    # When Flower is restarted (SIGTERM, then a new process on the same YOLOQ_HOME)
    assert server.proc.stop(30) == 0, server.proc.tail(40)
    restarted = flower.start()
    # Then the task is still listed, from the persistent history (no new event about it can have arrived)
    kept = restarted.api_tasks().get(task_id)
    assert kept is not None and kept["state"] == "SUCCESS"
    assert ast.literal_eval(kept["kwargs"])["job_id"] == handle.job_id
    assert (flower.home / "flower").is_dir()
