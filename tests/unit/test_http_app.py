"""The HTTP app in-process (FastAPI's TestClient over a fake Client): the gate (auth before any body is read, basic
auth for reads only, scopes and teams of API keys, the size cap, JSON by default), typed JSON errors, lenient tiers,
and the generated OpenAPI."""

from __future__ import annotations

import base64
from types import SimpleNamespace
from typing import Any

import pytest
from fastapi.testclient import TestClient

from routing.access import Principal
from routing.tiers import Tier
from tasks.admission import Promoted
from tasks.errors import BrokerUnavailable, InvalidTransition, JobNotFound
from tasks.specs import JobSpec
from tasks.states import JobState
from yoloq.http.app import make_app
from yoloq.http.gate import MAX_BODY_BYTES

pytestmark = pytest.mark.unit

TOKEN = "t0ken"
BEARER = {"Authorization": f"Bearer {TOKEN}"}
BASIC = {"Authorization": "Basic " + base64.b64encode(f"ops:{TOKEN}".encode()).decode()}
PROBE = b'{"kind": "probe", "seconds": 1, "tier": "low", "team": "vision"}'
# Keys the fake store knows (the real one, infra/api_keys.py, is tested against Redis in test_api_keys.py).
KEYS = {
    "k-submit-vision": Principal("alice", "vision", frozenset({"submit"})),
    "k-operate-risk": Principal("bob", "risk", frozenset({"operate"})),
    "k-approve-all": Principal("carol", "*", frozenset({"approve"})),
}


def _bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def _no_redis(secret: str) -> Principal | None:
    raise BrokerUnavailable("cannot reach Redis at redis://x")


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

    def submit(self, spec: JobSpec, *, remote: bool = False, by: str = "") -> Handle:
        assert remote, "the API submits as a remote caller"
        self.calls.append(("submit", spec, by))
        return Handle(spec)

    def job(self, job_id: str) -> SimpleNamespace:
        self._known(job_id)
        return SimpleNamespace(team="vision")

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

    def promote(self, job_id: str, tier: Tier, by: str) -> Promoted:
        self._known(job_id)
        self.calls.append(("promote", job_id, tier, by))
        return Promoted(tier, f"yoloq.{tier.value}.8g")

    def freeze(self, job_id: str, frozen: bool, by: str) -> None:
        self.calls.append(("freeze", job_id, frozen, by))

    def approve(self, job_id: str, by: str) -> None:
        raise InvalidTransition(f"job {job_id} is not held")

    def queues(self) -> dict[str, Any]:
        return {"tiers": {}, "total": 0}


@pytest.fixture
def fake() -> FakeClient:
    return FakeClient()


@pytest.fixture
def http(fake: FakeClient) -> TestClient:
    return TestClient(make_app(fake, TOKEN, KEYS.get), raise_server_exceptions=False)  # type: ignore[arg-type]


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
    assert promoted.json() == {"job_id": "j-1", "action": "promote", "result": {
        "tier": "critical", "queue": "yoloq.critical.8g", "pending_tier": None, "note": ""}}  # fmt: skip
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


def test_each_key_does_what_its_scopes_allow_for_its_own_team(http: TestClient, fake: FakeClient) -> None:
    """Issue 15 item 8: the scope is checked before the body is read, the team against the spec's or the job's."""
    alice, bob, carol = (_bearer(k) for k in KEYS)
    created = http.post("/api/v1/jobs", content=PROBE, headers=alice)
    assert created.status_code == 201 and fake.calls[-1][2] == "key:alice"  # signed with the key's name
    other_team = http.post("/api/v1/jobs", content=PROBE.replace(b"vision", b"risk"), headers=alice)
    assert other_team.status_code == 403 and "acts for team vision, not for team risk" in other_team.json()["error"]
    assert http.post("/api/v1/jobs/j-1/freeze", headers=alice).json() == {
        "error": "key 'alice' may not freeze: that needs the admin or operate scope"}  # fmt: skip
    assert http.post("/api/v1/jobs/j-1/cancel", headers=alice).status_code == 200  # its own team's job
    assert http.post("/api/v1/jobs/j-1/cancel", headers=bob).status_code == 403  # j-1 is vision's, bob acts for risk
    assert http.post("/api/v1/jobs", content=b"x" * (MAX_BODY_BYTES + 1), headers=bob).status_code == 403  # unread
    assert http.post("/api/v1/jobs/j-1/promote", json={"tier": "high"}, headers=carol).status_code == 403
    assert http.post("/api/v1/jobs/j-1/approve", headers=carol).status_code == 409  # allowed; the fake says not held
    assert [c[0] for c in fake.calls] == ["submit", "cancel"]  # the refused requests changed nothing
    for key in (alice, bob, carol):  # any key may read
        assert http.get("/api/v1/queues", headers=key).status_code == 200
    assert http.get("/api/v1/queues", headers=_bearer("k-unknown")).status_code == 401


def test_the_status_page_takes_any_key_as_its_basic_password(http: TestClient) -> None:
    basic = {"Authorization": "Basic " + base64.b64encode(b"anyone:k-submit-vision").decode()}
    assert http.get("/status", headers=basic).status_code == 200
    assert http.post("/api/v1/jobs/j-1/cancel", headers=basic).status_code == 401  # basic auth never writes


def test_a_key_that_cannot_be_checked_is_a_503_and_the_admin_token_still_works(fake: FakeClient) -> None:
    app = TestClient(make_app(fake, TOKEN, _no_redis), raise_server_exceptions=False)  # type: ignore[arg-type]
    refused = app.get("/api/v1/queues", headers=_bearer("yq_0123456789ab_" + "x" * 43))
    assert refused.status_code == 503 and refused.json()["error"].startswith("cannot check the API key")
    assert app.get("/api/v1/queues", headers=BEARER).status_code == 200


def test_only_an_admin_key_manages_keys_reads_included(http: TestClient) -> None:
    """A key list maps every tenant, and a key that may create keys may grant itself anything: every /api/v1/keys
    route is admin's, refused to any other key before a route (or Redis) is reached."""
    asks = [("GET", "/api/v1/keys"), ("POST", "/api/v1/keys"), ("DELETE", "/api/v1/keys/alice"),
            ("PUT", "/api/v1/keys/alice/limit"), ("DELETE", "/api/v1/keys/alice/limit"),
            ("GET", "/api/v1/keys/")]  # fmt: skip
    for key in KEYS:
        for method, path in asks:
            body = {"name": "x", "team": "*", "scopes": ["admin"]}
            answer = http.request(method, path, headers=_bearer(key), json=body)
            assert answer.status_code == 403, (key, method, path)
            assert "that needs the admin scope" in answer.json()["error"]
