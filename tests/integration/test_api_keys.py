"""Issue 15 item 8, who may do what: per-team API keys with scopes, created and revoked by the real `yoloq key`
command, used against a real `yoloq api` process on the session's Redis; and promotion under the admission rules
(demotion, approval, four-eyes) from the HTTP API and the CLI alike, checked with the real supervisor's decisions."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from infra.redis_client import connect
from tasks.errors import NotAllowed
from tasks.states import JobState
from tests.fleet import poll, yoloq_cli
from tests.integration.test_api import TOKEN, Api, serving_api
from yoloq.client import Client

pytestmark = pytest.mark.integration

ADMIN = f"Bearer {TOKEN}"


@pytest.fixture
def api(services: Any, fleet: Any) -> Iterator[Api]:
    """A real `yoloq api` (YOLOQ_API_TOKEN is the admin key) on a clean registry (the fleet fixture wipes it)."""
    with serving_api(services, "api-keys") as client:
        yield client


@pytest.fixture
def make_key(services: Any) -> Callable[..., str]:
    """`yoloq key create NAME --team T --scope S...` → "Bearer <key>" (the key is printed once, on stdout)."""

    def create(name: str, team: str, *scopes: str) -> str:
        args = [arg for scope in scopes for arg in ("--scope", scope)]
        done = yoloq_cli(services, "key", "create", name, "--team", team, *args)
        assert done.returncode == 0, done.stderr
        assert "shown once" in done.stderr
        return f"Bearer {done.stdout.strip()}"

    return create


def _probe(tier: str, team: str, seconds: int = 0) -> dict[str, Any]:
    return {"kind": "probe", "seconds": seconds, "tier": tier, "team": team}


def test_a_team_key_submits_and_cancels_only_for_its_team(api: Api, make_key: Any, client: Any, services: Any):
    # Given a submit key for team vision, and a job of team risk (submitted with the admin key)
    vision = make_key("ci-vision", "vision", "submit")
    code, theirs = api.call("POST", "/api/v1/jobs", _probe("low", "risk"), auth=ADMIN)
    assert code == 201
    before = len(client.jobs(limit=1000))
    # When the vision key submits for team risk, or cancels risk's job, or freezes its own: 403, nothing changes
    code, doc = api.call("POST", "/api/v1/jobs", _probe("low", "risk"), auth=vision)
    assert (code, doc) == (403, {"error": "key 'ci-vision' acts for team vision, not for team risk"})
    code, doc = api.call("POST", f"/api/v1/jobs/{theirs['job_id']}/cancel", {}, auth=vision)
    assert code == 403 and client.job(theirs["job_id"]).state is JobState.QUEUED
    assert len(client.jobs(limit=1000)) == before
    # And for its own team it submits and cancels, each signed with the key's name
    code, mine = api.call("POST", "/api/v1/jobs", _probe("low", "vision"), auth=vision)
    assert code == 201 and client.job(mine["job_id"]).submitted_by == "key:ci-vision"
    assert api.call("POST", f"/api/v1/jobs/{mine['job_id']}/freeze", {}, auth=vision)[0] == 403  # needs operate
    assert api.call("POST", f"/api/v1/jobs/{mine['job_id']}/cancel", {}, auth=vision)[0] == 200
    assert client.audit(job_id=mine["job_id"])[0]["by"] == "key:ci-vision"
    # And any key reads every team's jobs
    assert api.call("GET", f"/api/v1/jobs/{theirs['job_id']}", auth=vision)[0] == 200


def test_keys_are_shown_once_stored_hashed_and_revoked_for_the_next_request(api: Api, make_key: Any, services: Any):
    key = make_key("dashboard", "*", "submit")
    secret = key.removeprefix("Bearer ")
    listed = yoloq_cli(services, "key", "list", "--json")
    entries = json.loads(listed.stdout)
    assert [(e["name"], e["team"], e["scopes"], e["created_by"].split(":")[0]) for e in entries] == [
        ("dashboard", "*", ["submit"], "cli")]  # fmt: skip
    stored = " ".join(connect(services.settings.redis_url).hvals("yoloq:api-keys"))
    assert secret not in listed.stdout and secret.split("_", 2)[2] not in stored  # only its sha256 is kept
    # The status page takes the key as its basic-auth password
    basic = "Basic " + base64.b64encode(f"me:{secret}".encode()).decode()
    assert api.call("GET", "/status", auth=basic)[0] == 200
    assert api.call("GET", "/api/v1/queues", auth=key)[0] == 200
    # When it is revoked, the very next request is refused (no cache, no restart)
    assert yoloq_cli(services, "key", "revoke", "dashboard").returncode == 0
    assert api.call("GET", "/api/v1/queues", auth=key)[0] == 401
    assert api.call("GET", "/status", auth=basic)[0] == 401
    # Both changes are in the audit log, with who made them
    audit = json.loads(yoloq_cli(services, "audit", "--limit", "2", "--json").stdout)
    assert [(e["type"], e["reason"]) for e in audit] == [
        ("key-revoked", "key dashboard"), ("key-created", "key dashboard: team *, scopes submit")]  # fmt: skip
    # And a second revoke, or a key no rule allows, is a one-line error that changes nothing
    again = yoloq_cli(services, "key", "revoke", "dashboard")
    assert again.returncode == 1
    assert again.stderr == "yoloq: error: no API key named 'dashboard' (yoloq key list shows them)\n"
    bad = yoloq_cli(services, "key", "create", "root2", "--team", "vision", "--scope", "admin")
    assert bad.returncode == 1 and "an admin key acts for every team" in bad.stderr
    assert json.loads(yoloq_cli(services, "key", "list", "--json").stdout) == []


def test_nobody_approves_their_own_critical_job(api: Api, make_key: Any, client: Any):
    """The attack: the one token's holder submitted a critical job and approved it (the audit said only `api`)."""
    # Given critical jobs of team risk (not pre-approved), held for approval: one by the admin key, one by alice
    alice = make_key("alice", "risk", "submit", "approve")
    bob = make_key("bob", "*", "approve")
    by_admin = api.call("POST", "/api/v1/jobs", _probe("critical", "risk"), auth=ADMIN)[1]
    by_alice = api.call("POST", "/api/v1/jobs", _probe("critical", "risk"), auth=alice)[1]
    assert by_admin["state"] == by_alice["state"] == "held"
    # When each submitter approves its own job: 403, and the job stays held, unapproved
    for job, who in ((by_admin, ADMIN), (by_alice, alice)):
        code, doc = api.call("POST", f"/api/v1/jobs/{job['job_id']}/approve", {}, auth=who)
        assert code == 403 and doc["error"].startswith("four-eyes: key:"), doc
        record = client.job(job["job_id"])
        assert record.state is JobState.HELD and not record.approved
    # Then another key approves them, and the audit names each key
    assert api.call("POST", f"/api/v1/jobs/{by_alice['job_id']}/approve", {}, auth=bob)[0] == 200
    assert api.call("POST", f"/api/v1/jobs/{by_admin['job_id']}/approve", {}, auth=alice)[0] == 200
    assert client.audit(job_id=by_alice["job_id"])[0]["by"] == "key:bob"
    assert client.audit(job_id=by_admin["job_id"])[0]["by"] == "key:alice"
    # And a key without the approve scope cannot approve at all
    ops = make_key("ops-risk", "risk", "operate")
    assert api.call("POST", f"/api/v1/jobs/{by_alice['job_id']}/approve", {}, auth=ops)[0] == 403


def test_a_demoted_team_cannot_promote_its_job_to_critical(api: Api, client: Any, services: Any):
    """The attack: `quota demote abusers; submit --tier low --team abusers; promote ID --tier critical` ran the job
    at critical 0.9 s later. Now it goes no higher than high, through the HTTP API and the CLI alike."""
    assert yoloq_cli(services, "quota", "demote", "abusers").returncode == 0
    try:
        via_http = api.call("POST", "/api/v1/jobs", _probe("low", "abusers"), auth=ADMIN)[1]
        via_cli = json.loads(yoloq_cli(services, "submit", "probe", "--tier", "low", "--team", "abusers",
                                       "--json").stdout)  # fmt: skip
        code, doc = api.call("POST", f"/api/v1/jobs/{via_http['job_id']}/promote", {"tier": "critical"}, auth=ADMIN)
        assert code == 200 and doc["result"]["tier"] == "high" and "demoted" in doc["result"]["note"]
        done = yoloq_cli(services, "promote", via_cli["job_id"], "--tier", "critical", "--json")
        assert done.returncode == 0 and json.loads(done.stdout)["tier"] == "high", done.stderr
        for job_id in (via_http["job_id"], via_cli["job_id"]):
            record = client.job(job_id)
            assert (record.tier.value, record.queue.split(".")[1]) == ("high", "high")
            assert "team abusers is demoted" in record.events[-1].reason
    finally:
        yoloq_cli(services, "quota", "demote", "abusers", "--undo")


def test_a_promotion_to_critical_waits_for_someone_elses_approval(api: Api, make_key: Any, client: Any, fleet: Any,
                                                                   services: Any):  # fmt: skip
    # Given one GPU busy with a low job, and a low job of team risk queued behind it
    fleet.start("0:A100:40")
    busy = client.submit(_probe("low", "vision", seconds=60))
    busy.wait({JobState.RUNNING}, timeout_s=30)
    submitter, operator = make_key("risk-ci", "risk", "submit"), make_key("risk-ops", "risk", "operate", "approve")
    job_id = api.call("POST", "/api/v1/jobs", _probe("low", "risk"), auth=submitter)[1]["job_id"]
    try:
        # When an operator key promotes it to critical: the promotion waits, the job stays low, nothing is preempted
        code, doc = api.call("POST", f"/api/v1/jobs/{job_id}/promote", {"tier": "critical"}, auth=operator)
        assert code == 200 and (doc["result"]["tier"], doc["result"]["pending_tier"]) == ("low", "critical")
        record = client.job(job_id)
        assert (record.tier.value, record.pending_tier, record.state) == ("low", "critical", JobState.QUEUED)
        assert "would preempt" not in yoloq_cli(services, "supervisor", "--dry-run", "--once").stdout
        # Then neither the key that promoted it nor the one that submitted it may approve it
        code, doc = api.call("POST", f"/api/v1/jobs/{job_id}/approve", {}, auth=operator)
        assert code == 403 and doc["error"].startswith("four-eyes: key:risk-ops"), doc
        assert client.job(job_id).tier.value == "low"
        # And another approver's approval applies it: critical now, and the supervisor makes room for it
        assert yoloq_cli(services, "approve", job_id).returncode == 0
        record = client.job(job_id)
        assert (record.tier.value, record.pending_tier, record.approved) == ("critical", None, True)
        assert f"would preempt {busy.job_id}" in yoloq_cli(services, "supervisor", "--dry-run", "--once").stdout
    finally:
        client.cancel(busy.job_id)
        client.cancel(job_id)


def _supervisor_tick(services: Any) -> str:
    """One tick of the real supervisor (it releases held jobs); a short lease, so the next tick may lead again."""
    done = yoloq_cli(services, "supervisor", "--once", "--interval", "0.5", "--leader-ttl", "1")
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_an_approval_is_for_a_tier_and_never_carries_to_critical(api: Api, make_key: Any, client: Any,
                                                                  services: Any):  # fmt: skip
    """Review of item 8: a job held over quota at high was approved by another key (it looked harmless), its submitter
    promoted it to critical, and the untiered `approved` flag released it at critical with nobody asked."""
    submitter, approver = make_key("risk-ci", "risk", "submit", "operate"), make_key("risk-lead", "risk", "approve")
    assert yoloq_cli(services, "quota", "set", "risk", "--tier", "high", "--gpus", "0").returncode == 0
    job_id = api.call("POST", "/api/v1/jobs", _probe("high", "risk"), auth=submitter)[1]["job_id"]
    try:
        assert client.job(job_id).state is JobState.HELD and "over quota" in client.job(job_id).events[0].reason
        # When another key approves it at high: nothing needs approval there, so nothing is approved (409)
        code, doc = api.call("POST", f"/api/v1/jobs/{job_id}/approve", {}, auth=approver)
        assert (code, doc) == (409, {"error": f"job {job_id} has nothing to approve: only critical work needs "
                                              "approval, and this job is held at high"})  # fmt: skip
        record = client.job(job_id)
        assert (record.approved_tier, record.approved, [e.type for e in record.events]) == (None, False, ["submitted"])
        # And its submitter promotes it to critical, and the quota that held it is lifted
        code, doc = api.call("POST", f"/api/v1/jobs/{job_id}/promote", {"tier": "critical"}, auth=submitter)
        assert code == 200 and doc["result"]["tier"] == "critical", doc
        assert yoloq_cli(services, "quota", "set", "risk", "--tier", "high").returncode == 0
        # Then the real supervisor does not release it: at critical it awaits an approval for critical
        assert f"released held job {job_id}" not in _supervisor_tick(services)
        record = client.job(job_id)
        assert (record.state, record.tier.value, record.approved) == (JobState.HELD, "critical", False)
        # And once another key approves it for critical, the supervisor releases it
        assert api.call("POST", f"/api/v1/jobs/{job_id}/approve", {}, auth=approver)[0] == 200
        assert client.job(job_id).approved_tier.value == "critical"
        poll(lambda: f"released held job {job_id}" in _supervisor_tick(services), 30, "the approved job's release")
        assert client.job(job_id).state is JobState.QUEUED
    finally:
        yoloq_cli(services, "quota", "set", "risk", "--tier", "high")
        client.cancel(job_id)


def test_a_demotion_voids_the_approval_so_promoting_back_asks_again(api: Api, make_key: Any, client: Any,
                                                                    services: Any):  # fmt: skip
    """The flag was reused for queued jobs too: approved once at critical, demoted by an operator, then promoted back
    to critical by its submitter without anyone approving it again."""
    submitter, approver = make_key("risk-ci", "risk", "submit", "operate"), make_key("risk-lead", "risk", "approve")
    job_id = api.call("POST", "/api/v1/jobs", _probe("critical", "risk"), auth=submitter)[1]["job_id"]
    try:
        assert api.call("POST", f"/api/v1/jobs/{job_id}/approve", {}, auth=approver)[0] == 200
        poll(lambda: f"released held job {job_id}" in _supervisor_tick(services), 30, "the approved job's release")
        # When an operator demotes the queued job to high: its approval (for critical) is void
        code, doc = api.call("POST", f"/api/v1/jobs/{job_id}/promote", {"tier": "high"}, auth=ADMIN)
        assert code == 200 and doc["result"]["tier"] == "high", doc
        assert not client.job(job_id).approved and client.job(job_id).approved_tier is None
        # Then its submitter's promotion back to critical waits for a new approval: the job stays at high
        code, doc = api.call("POST", f"/api/v1/jobs/{job_id}/promote", {"tier": "critical"}, auth=submitter)
        assert code == 200 and (doc["result"]["tier"], doc["result"]["pending_tier"]) == ("high", "critical"), doc
        record = client.job(job_id)
        assert (record.state, record.tier.value, record.queue.split(".")[1]) == (JobState.QUEUED, "high", "high")
    finally:
        client.cancel(job_id)


def test_four_eyes_holds_for_python_callers_and_the_audit_names_the_promoter(api: Api, make_key: Any, client: Any,
                                                                             services: Any):  # fmt: skip
    """The Client signed submissions "" and approvals "operator", so a Python caller approved its own critical job;
    and the `promoted` event named the approver instead of whoever asked for the promotion."""
    held = client.submit(_probe("critical", "risk"))
    assert held.state is JobState.HELD
    # When the same Python caller approves it: four-eyes refuses, the job stays held, unapproved
    with pytest.raises(NotAllowed, match=f"^four-eyes: {client.actor} submitted or promoted this job"):
        client.approve(held.job_id)
    assert not client.job(held.job_id).approved and client.job(held.job_id).submitted_by == client.actor
    # And another caller's approval is accepted and named
    Client(services.settings, actor="python:lead").approve(held.job_id)
    assert client.audit(job_id=held.job_id)[0]["by"] == "python:lead"
    # When a key asks for a promotion to critical and another approves it, `promoted` names the one who asked
    asker = make_key("risk-ops", "risk", "operate")
    queued = api.call("POST", "/api/v1/jobs", _probe("low", "risk"), auth=ADMIN)[1]["job_id"]
    try:
        assert api.call("POST", f"/api/v1/jobs/{queued}/promote", {"tier": "critical"}, auth=asker)[0] == 200
        client.approve(queued)
        events = [(e.type, e.by) for e in client.job(queued).events]
        assert events[-2:] == [("approved", client.actor), ("promoted", "key:risk-ops")]
        assert f"approved by {client.actor}" in client.job(queued).events[-1].reason
    finally:
        client.cancel(held.job_id)
        client.cancel(queued)


def test_an_admin_manages_keys_over_http_and_nobody_else_can(api: Api, make_key: Any, services: Any):
    """Keys and their detect limits through /api/v1/keys, as `yoloq key` does: the key is shown once, works from the
    next request, is listed without its secret, and a revoke ends it and its limit; other keys may not even list."""
    ops = make_key("ops-all", "*", "submit", "operate", "approve")
    # An admin creates a key for team vision; the answer carries the key, once
    code, made = api.call("POST", "/api/v1/keys", {"name": "line-9", "team": "vision", "scopes": ["detect", "submit"]},
                          auth=ADMIN)  # fmt: skip
    assert code == 201 and (made["name"], made["team"], made["scopes"]) == ("line-9", "vision", ["submit", "detect"])
    line9 = f"Bearer {made['key']}"
    assert api.call("POST", "/api/v1/jobs", _probe("low", "vision"), auth=line9)[0] == 201  # it works at once
    # Its own detect limit, then the list: no secret, no hash, the limit shown as its own
    code, limit = api.call("PUT", "/api/v1/keys/line-9/limit", {"rate": 0.5, "burst": 3}, auth=ADMIN)
    assert (code, limit) == (200, {"name": "line-9", "rate": 0.5, "burst": 3, "own": True})
    code, listed = api.call("GET", "/api/v1/keys", auth=ADMIN)
    mine = next(e for e in listed if e["name"] == "line-9")
    assert code == 200 and mine["detect_limit"] == {"rate": 0.5, "burst": 3, "own": True}
    assert made["key"].split("_", 2)[2] not in json.dumps(listed) and "sha256" not in mine
    # Nobody but an admin lists, creates, limits or revokes, even a key with every other scope for every team
    for method, path, body in (("GET", "/api/v1/keys", None), ("POST", "/api/v1/keys", {"name": "mine", "team": "*",
                               "scopes": ["admin"]}), ("PUT", "/api/v1/keys/line-9/limit", {"rate": 99, "burst": 99}),
                               ("DELETE", "/api/v1/keys/line-9", None)):  # fmt: skip
        for who in (ops, line9):
            assert api.call(method, path, body, auth=who)[0] == 403, (method, path)
    # Bad asks are typed errors that change nothing
    assert api.call("POST", "/api/v1/keys", {"name": "line-9", "team": "vision", "scopes": ["detect"]},
                    auth=ADMIN)[0] == 409  # fmt: skip
    assert api.call("POST", "/api/v1/keys", {"name": "x1", "team": "vision", "scopes": ["admin"]}, auth=ADMIN)[0] == 400
    assert api.call("POST", "/api/v1/keys", {"name": "x2", "team": "vision", "scopes": ["root"]}, auth=ADMIN)[0] == 400
    code, doc = api.call(
        "POST", "/api/v1/keys", {"name": "x3", "team": "vision", "scopes": ["r" * 100_000]}, auth=ADMIN
    )
    assert code == 400 and len(doc["error"]) < 300  # one short line, not the body echoed back
    assert api.call("PUT", "/api/v1/keys/nobody/limit", {"rate": 1, "burst": 1}, auth=ADMIN)[0] == 404
    assert api.call("PUT", "/api/v1/keys/line-9/limit", {"rate": 0, "burst": 1}, auth=ADMIN)[0] == 400
    assert [e["name"] for e in api.call("GET", "/api/v1/keys", auth=ADMIN)[1]] == ["line-9", "ops-all"]
    # A revoke refuses the key from the next request on and drops its limit; a second revoke is a 404
    assert api.call("DELETE", "/api/v1/keys/line-9", auth=ADMIN) == (200, {"name": "line-9", "revoked": True})
    assert api.call("POST", "/api/v1/jobs", _probe("low", "vision"), auth=line9)[0] == 401
    assert connect(services.settings.redis_url).hget("yoloq:ratelimit-rules", "line-9") is None
    assert api.call("DELETE", "/api/v1/keys/line-9", auth=ADMIN)[0] == 404
    # Each change is audited with the key that made it
    audit = json.loads(yoloq_cli(services, "audit", "--limit", "3", "--json").stdout)
    assert [(e["type"], e["by"]) for e in audit] == [
        ("key-revoked", "key:admin"), ("rate-limit-set", "key:admin"), ("key-created", "key:admin")]  # fmt: skip
