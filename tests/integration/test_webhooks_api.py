"""Managing webhooks: the real `yoloq webhook` command and a real `yoloq api` process (team keys, scopes), against the
session's Redis and a real receiver that checks the test event's signature."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from infra.redis_client import connect
from tests.fleet import yoloq_cli
from tests.integration.test_api import TOKEN, Api, serving_api
from tests.webhook_receiver import Receiver, serving_receiver

pytestmark = pytest.mark.integration

ADMIN = f"Bearer {TOKEN}"


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with serving_receiver() as recv:
        yield recv


@pytest.fixture
def api(services: Any, fleet: Any) -> Iterator[Api]:
    with serving_api(services, "api-webhooks") as client:
        yield client


def _key(services: Any, name: str, team: str, scope: str) -> str:
    done = yoloq_cli(services, "key", "create", name, "--team", team, "--scope", scope)
    assert done.returncode == 0, done.stderr
    return f"Bearer {done.stdout.strip()}"


def _stored(services: Any) -> dict[str, str]:
    return connect(services.settings.redis_url).hgetall("yoloq:webhooks")


def test_cli_adds_shows_the_secret_once_lists_masked_tests_and_removes(services, fleet, receiver: Receiver) -> None:
    # Given a webhook added by the CLI for team vision
    added = yoloq_cli(services, "webhook", "add", "--team", "vision", "--url", receiver.url + "/cli", "--events",
                      "succeeded,failed")  # fmt: skip
    assert added.returncode == 0, added.stderr
    secret = added.stdout.strip()
    assert secret.startswith("whsec_") and "shown once" in added.stderr
    receiver.secrets["/cli"] = secret
    # Then lists mask the secret and show the filter and state
    listed = json.loads(yoloq_cli(services, "webhook", "list", "--json").stdout)
    [entry] = listed["webhooks"]
    assert (entry["team"], entry["events"], entry["state"]) == ("vision", ["succeeded", "failed"], "active")
    assert secret not in json.dumps(listed) and entry["secret"].endswith("…")
    assert secret not in yoloq_cli(services, "webhook", "list").stdout
    # When it is tested, the receiver gets a signed test event
    tested = json.loads(yoloq_cli(services, "webhook", "test", entry["id"], "--json").stdout)
    assert tested["ok"] and receiver.seen[-1]["id"] == tested["event_id"] and receiver.seen[-1]["signed"]
    # And once removed it is gone; removing it again says so
    assert yoloq_cli(services, "webhook", "rm", entry["id"]).returncode == 0
    again = yoloq_cli(services, "webhook", "rm", entry["id"])
    assert again.returncode == 1 and again.stderr.startswith("yoloq: error: no webhook") and not _stored(services)


@pytest.mark.parametrize(
    ("args", "reason"),
    [
        (["--team", "vision", "--url", "file:///etc/passwd"], "must start with http:// or https://"),
        (["--team", "vision", "--url", "http://u:p@h/x"], "must not hold credentials"),
        (["--team", "Vision!", "--url", "http://h/x"], "team 'Vision!' must be"),
        (["--team", "vision", "--url", "http://h/x", "--events", "started,exploded"], "unknown event(s) exploded"),
        (["--url", "http://h/x"], "give a team or a job, not both"),
        (["--team", "vision", "--job", "j1", "--url", "http://h/x"], "give a team or a job, not both"),
        (["--job", "j-none", "--url", "http://h/x"], "no job 'j-none'"),
    ],
)
def test_cli_refuses_bad_subscriptions_in_one_line_and_stores_nothing(services, fleet, args, reason) -> None:
    done = yoloq_cli(services, "webhook", "add", *args)
    assert done.returncode == 1 and reason in done.stderr and len(done.stderr.strip().splitlines()) == 1
    assert not _stored(services)


def test_http_webhooks_are_managed_per_team(services, api: Api, receiver: Receiver) -> None:
    vision, risk = _key(services, "ci-vision", "vision", "submit"), _key(services, "ops-risk", "risk", "operate")
    detect = _key(services, "camera", "vision", "detect")
    body = {"url": receiver.url + "/http", "team": "vision", "events": ["started"]}
    # A detect key may not; a key of another team may not: 403, nothing stored
    assert api.call("POST", "/api/v1/webhooks", body, auth=detect)[0] == 403
    code, doc = api.call("POST", "/api/v1/webhooks", body, auth=risk)
    assert (code, doc) == (403, {"error": "key 'ops-risk' acts for team risk, not for team vision"})
    assert not _stored(services)
    # A submit key of the team adds it and gets the secret once
    code, mine = api.call("POST", "/api/v1/webhooks", body, auth=vision)
    assert code == 201 and mine["secret"].startswith("whsec_") and mine["owner"] == "vision"
    receiver.secrets["/http"] = mine["secret"]
    # A bad URL is a 400 with the reason; an unknown id a 404
    bad = api.call("POST", "/api/v1/webhooks", {**body, "url": "gopher://x"}, auth=vision)
    assert bad[0] == 400 and "http:// or https://" in bad[1]["error"]
    assert api.call("POST", "/api/v1/webhooks/wh_000000000000/test", {}, auth=vision)[0] == 404
    # Lists show a team its own webhooks only (the admin every team's), never a secret
    code, risk_list = api.call("GET", "/api/v1/webhooks", auth=risk)
    assert (code, risk_list) == (200, [])
    code, listed = api.call("GET", "/api/v1/webhooks", auth=vision)
    assert [e["id"] for e in listed] == [mine["id"]] and mine["secret"] not in json.dumps(listed)
    assert [e["id"] for e in api.call("GET", "/api/v1/webhooks", auth=ADMIN)[1]] == [mine["id"]]
    # Another team can neither test nor remove it; its own team can
    assert api.call("POST", f"/api/v1/webhooks/{mine['id']}/test", {}, auth=risk)[0] == 403
    assert api.call("DELETE", f"/api/v1/webhooks/{mine['id']}", auth=risk)[0] == 403
    code, tested = api.call("POST", f"/api/v1/webhooks/{mine['id']}/test", {}, auth=vision)
    assert code == 200 and tested["ok"] and receiver.seen[-1]["signed"]
    assert api.call("DELETE", f"/api/v1/webhooks/{mine['id']}", auth=vision) == (200, {"id": mine["id"],
                                                                                     "removed": True})  # fmt: skip
    assert not _stored(services)


def test_http_job_webhook_belongs_to_the_jobs_team(services, api: Api) -> None:
    vision = _key(services, "ci-vision", "vision", "submit")
    code, job = api.call("POST", "/api/v1/jobs", {"kind": "probe", "seconds": 0, "team": "risk"}, auth=ADMIN)
    assert code == 201
    body = {"url": "http://127.0.0.1:9/x", "job_id": job["job_id"]}
    assert api.call("POST", "/api/v1/webhooks", body, auth=vision)[0] == 403  # risk's job
    code, added = api.call("POST", "/api/v1/webhooks", body, auth=ADMIN)
    assert code == 201 and added["owner"] == "risk" and added["team"] is None
    missing = api.call("POST", "/api/v1/webhooks", {**body, "job_id": "j-missing"}, auth=ADMIN)
    assert missing[0] == 400 and "no job" in missing[1]["error"]
