"""The HTTP app in-process (FastAPI's TestClient over a fake Client): the gate (auth before any body is read, basic
auth for reads only, the size cap, JSON by default), typed JSON errors, lenient tiers, and the generated OpenAPI."""

from __future__ import annotations

import base64
from types import SimpleNamespace
from typing import Any

import pytest
from fastapi.testclient import TestClient

from routing.tiers import Tier
from tasks.errors import InvalidTransition, JobNotFound
from tasks.specs import JobSpec
from tasks.states import JobState
from yoloq.http.app import make_app
from yoloq.http.gate import MAX_BODY_BYTES

pytestmark = pytest.mark.unit

TOKEN = "t0ken"
BEARER = {"Authorization": f"Bearer {TOKEN}"}
BASIC = {"Authorization": "Basic " + base64.b64encode(f"ops:{TOKEN}".encode()).decode()}
PROBE = b'{"kind": "probe", "seconds": 1, "tier": "low", "team": "vision"}'


class Handle:
    def __init__(self, spec: JobSpec) -> None:
        self.spec = spec

    def as_dict(self) -> dict[str, str]:
        return {"job_id": "j-1", "state": "queued", "tier": self.spec.tier.value, "queue": "yoloq.low.8g"}


class FakeClient:
    """Records what the API asked for; knows one job, j-1."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []
        self.registry = SimpleNamespace(client=None)  # /metrics is not exercised here (tests/integration/test_api.py)

    def prepare(self) -> FakeClient:
        return self

    def submit(self, spec: JobSpec, *, remote: bool = False) -> Handle:
        assert remote, "the API submits as a remote caller"
        self.calls.append(("submit", spec))
        return Handle(spec)

    def jobs(self, state: JobState | None, tier: Tier | None, limit: int) -> list[Any]:
        self.calls.append(("jobs", state, tier, limit))
        return []

    def _known(self, job_id: str) -> None:
        if job_id != "j-1":
            raise JobNotFound(f"no job {job_id}")

    def cancel(self, job_id: str, by: str) -> JobState:
        self._known(job_id)
        self.calls.append(("cancel", job_id, by))
        return JobState.RUNNING

    def promote(self, job_id: str, tier: Tier, by: str) -> str:
        self._known(job_id)
        self.calls.append(("promote", job_id, tier, by))
        return f"yoloq.{tier.value}.8g"

    def approve(self, job_id: str, by: str) -> None:
        raise InvalidTransition(f"job {job_id} is not held")

    def queues(self) -> dict[str, Any]:
        return {"tiers": {}, "total": 0}


@pytest.fixture
def fake() -> FakeClient:
    return FakeClient()


@pytest.fixture
def http(fake: FakeClient) -> TestClient:
    return TestClient(make_app(fake, TOKEN), raise_server_exceptions=False)  # type: ignore[arg-type]


def test_healthz_is_the_only_open_route(http: TestClient) -> None:
    assert http.get("/healthz").json() == {"ok": True}
    for path in ("/api/v1/queues", "/openapi.json", "/status", "/metrics", "/api/v1/no-such", "/api/v1/jobs/"):
        refused = http.get(path)
        assert refused.status_code == 401, path
        assert refused.headers["www-authenticate"] == 'Basic realm="yoloq"'


def test_unauthenticated_bodies_are_refused_before_they_are_read(http: TestClient, fake: FakeClient) -> None:
    assert http.post("/api/v1/jobs", content=b"{not json").status_code == 401
    oversized = http.post("/api/v1/jobs", content=b"x" * (MAX_BODY_BYTES + 1))
    assert oversized.status_code == 401 and fake.calls == []


def test_basic_auth_reads_but_never_writes(http: TestClient, fake: FakeClient) -> None:
    """A browser sends basic auth with cross-site form posts too: a write needs the bearer token."""
    assert http.get("/api/v1/queues", headers=BASIC).status_code == 200
    assert http.post("/api/v1/jobs", content=PROBE, headers={**BASIC, "Content-Type": "text/plain"}).status_code == 401
    assert http.post("/api/v1/jobs/j-1/cancel", headers=BASIC).status_code == 401
    assert fake.calls == []


@pytest.mark.parametrize("content_type", [None, "application/json", "application/x-www-form-urlencoded", "text/plain"])
def test_a_spec_is_read_as_json_whatever_its_default_label(http: TestClient, content_type: str | None) -> None:
    headers = {**BEARER, **({"Content-Type": content_type} if content_type else {})}
    created = http.post("/api/v1/jobs", content=PROBE, headers=headers)
    assert created.status_code == 201 and created.json()["job_id"] == "j-1"


def test_bad_bodies_get_one_line_400s(http: TestClient, fake: FakeClient) -> None:
    cases = {
        b"{not json": "request body is not JSON",
        b"[1, 2]": "request body must be a JSON object",
        b"": "request body must be a JSON object",
        b'{"kind": "probe", "team": "vision", "tier": "urgentest"}': "invalid job spec: probe.tier: unknown tier",
        b'{"kind": "probe", "team": "vision", "gpu_count": 2}': "invalid job spec: probe.gpu_count: Extra inputs",
    }
    for body, reason in cases.items():
        answer = http.post("/api/v1/jobs", content=body, headers=BEARER)
        assert answer.status_code == 400 and answer.json()["error"].startswith(reason), (body, answer.json())
    assert http.post("/api/v1/jobs", content=b"x" * (MAX_BODY_BYTES + 1), headers=BEARER).status_code == 413
    assert fake.calls == []


def test_tiers_are_read_as_users_write_them(http: TestClient, fake: FakeClient) -> None:
    assert http.get("/api/v1/jobs?tier=HIGH", headers=BEARER).status_code == 200
    assert fake.calls[-1] == ("jobs", None, Tier.HIGH, 100)
    promoted = http.post("/api/v1/jobs/j-1/promote", json={"tier": " Critical "}, headers=BEARER)
    assert promoted.json() == {"job_id": "j-1", "action": "promote", "result": "yoloq.critical.8g"}
    assert http.get("/api/v1/jobs?tier=urgentest", headers=BEARER).status_code == 400


def test_typed_errors_map_to_status_codes(http: TestClient) -> None:
    assert http.post("/api/v1/jobs/j-404/cancel", headers=BEARER).json() == {"error": "no job j-404"}
    assert http.post("/api/v1/jobs/j-404/cancel", headers=BEARER).status_code == 404
    assert http.post("/api/v1/jobs/j-1/approve", headers=BEARER).status_code == 409
    assert http.post("/api/v1/jobs/j-1/explode", headers=BEARER).status_code == 404
    assert http.get("/api/v1/jobs/", headers=BEARER).status_code == 404  # no redirect built from the Host header


def test_a_bug_is_a_json_500_not_a_traceback(http: TestClient) -> None:
    answer = http.get("/api/v1/status", headers=BEARER)  # the fake has no status(): AttributeError
    assert answer.status_code == 500 and answer.json() == {"error": "internal error (logged by the API)"}


def test_openapi_describes_the_specs_and_the_credentials(http: TestClient) -> None:
    doc = http.get("/openapi.json", headers=BEARER).json()
    assert {"TrainSpec", "InferSpec", "ExportSpec", "ProbeSpec"} <= set(doc["components"]["schemas"])
    assert {s["type"] for s in doc["components"]["securitySchemes"].values()} == {"http"}
    assert {s["scheme"] for s in doc["components"]["securitySchemes"].values()} == {"bearer", "basic"}


def test_cross_origin_writes_are_refused_whatever_they_carry(http: TestClient, fake: FakeClient) -> None:
    """Issue 15 item 6: a hostile page's POST (its Origin) is refused even with the bearer token."""
    evil = {**BEARER, "Origin": "https://evil.example", "Content-Type": "text/plain"}
    assert http.post("/api/v1/jobs", content=PROBE, headers=evil).status_code == 403
    assert http.post("/api/v1/jobs/j-1/cancel", headers=evil).status_code == 403
    assert fake.calls == []
    own = {**BEARER, "Origin": "http://testserver"}  # the status page's own origin; TestClient's Host is testserver
    assert http.post("/api/v1/jobs/j-1/cancel", headers=own).status_code == 200
    assert http.get("/api/v1/queues", headers={**BEARER, "Origin": "https://evil.example"}).status_code == 200
