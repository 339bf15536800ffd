"""The CLI contract (BRIEF §4) and bad input: clear one-line errors, non-zero exit, nothing registered or queued."""

from __future__ import annotations

import json

import pytest

from infra.queues import depths
from infra.redis_client import connect
from routing.tiers import all_queues
from tasks.errors import BrokerUnavailable, SpecRejected
from tasks.states import JobState
from tests.fleet import yoloq_cli
from yoloq.client import Client

pytestmark = pytest.mark.integration

BAD_SUBMISSIONS = [
    (["probe", "--tier", "urgent", "--team", "a"], "unknown tier 'urgent'"),
    (["train", "--data", "{data}", "--epochs", "-1", "--team", "a"], "epochs"),
    (["train", "--data", "{data}", "--model", "resnet50.yaml", "--team", "a"], "not a YOLO variant"),
    (["train", "--data", "/nonexistent/data.yaml", "--team", "a"], "does not exist"),
    (["probe", "--seconds", "-5", "--team", "a"], "seconds"),
    (["probe", "--team", "Bad Team!"], "team"),
    (["probe", "--team", "a", "--memory-gb", "500"], "memory_gb"),
]


def _nothing_changed(services) -> None:
    client = connect(services.settings.redis_url)
    assert client.zcard("yoloq:jobs") == 0
    assert sum(depths(client, all_queues()).values()) == 0


@pytest.mark.parametrize(("args", "reason"), BAD_SUBMISSIONS)
def test_bad_submission_is_rejected_with_one_line_and_changes_nothing(fleet, tmp_path, args, reason):
    data = tmp_path / "data.yaml"
    data.write_text("path: .\n")
    result = yoloq_cli(fleet.services, "submit", *[a.format(data=data) for a in args])
    assert result.returncode == 1, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("yoloq: error: ") and reason in lines[0]
    _nothing_changed(fleet.services)


def test_unknown_field_is_rejected_by_api_and_cli(fleet, client):
    with pytest.raises(SpecRejected, match="Extra inputs are not permitted"):
        client.submit({"kind": "probe", "team": "a", "gpu_count": 2})
    result = yoloq_cli(fleet.services, "submit", "probe", "--team", "a", "--gpu-count", "2")
    assert result.returncode == 2 and "No such option" in result.stderr
    _nothing_changed(fleet.services)


def test_unreachable_broker_is_a_clear_error_not_a_traceback(services, tmp_path):
    env = {**services.env(), "YOLOQ_REDIS_URL": "redis://127.0.0.1:1/0", "YOLOQ_HOME": str(tmp_path)}
    result = yoloq_cli(services, "submit", "probe", "--team", "a", env=env)
    assert result.returncode == 1
    assert "cannot reach Redis at redis://127.0.0.1:1/0" in result.stderr and "Traceback" not in result.stderr
    settings = services.settings.model_copy(update={"redis_url": "redis://127.0.0.1:1/0"})
    with pytest.raises(BrokerUnavailable):
        Client(settings).submit({"kind": "probe", "team": "a"})


def test_unknown_setting_is_refused(services, tmp_path):
    env = {**services.env(), "YOLOQ_REDIS_ULR": "redis://x", "YOLOQ_HOME": str(tmp_path)}
    result = yoloq_cli(services, "jobs", env=env)
    assert result.returncode == 1 and "unknown setting(s) YOLOQ_REDIS_ULR" in result.stderr


def test_json_documents_match_the_contract(fleet):
    fleet.start("0:A100:40")
    submitted = json.loads(yoloq_cli(fleet.services, "submit", "probe", "--seconds", "1", "--tier", "high",
                                     "--team", "vision", "--json").stdout)  # fmt: skip
    assert submitted.keys() == {"job_id", "state", "tier", "queue"}
    assert (submitted["state"], submitted["tier"], submitted["queue"]) == ("queued", "high", "yoloq.high.8g")
    Client(fleet.services.settings).job(submitted["job_id"])
    from tests.fleet import poll

    def finished() -> dict | None:
        doc = json.loads(yoloq_cli(fleet.services, "job", submitted["job_id"], "--json").stdout)
        return doc if doc["state"] == JobState.SUCCEEDED.value else None

    job = poll(finished, 30, "probe to finish")
    required = {"job_id", "kind", "tier", "team", "state", "attempts", "preemptions", "worker", "gpu", "progress",
                "checkpoint", "submitted_at", "started_at", "finished_at", "result", "events"}  # fmt: skip
    assert required <= job.keys()
    assert job["progress"] == {"step": 1, "steps": 1} and job["gpu"] == "0"
    assert job["submitted_at"].endswith("Z") and job["attempts"][0]["task_id"]
    listed = json.loads(yoloq_cli(fleet.services, "jobs", "--state", "succeeded", "--json").stdout)
    assert [j["job_id"] for j in listed] == [submitted["job_id"]]
    status = json.loads(yoloq_cli(fleet.services, "status", "--json").stdout)
    assert {"queues", "workers", "gpus", "running", "sla"} <= status.keys()
    assert status["gpus"][0]["name"] == "A100" and status["sla"]["high"]["count"] == 1
    sla = json.loads(yoloq_cli(fleet.services, "sla", "--json").stdout)
    assert sla["high"]["count"] == 1 and sla["high"]["compliant"] is True and sla["critical"]["target_s"] == 1800
    human = yoloq_cli(fleet.services, "status").stdout
    assert "gpu 0 A100" in human and "sla high: 1 started" in human and "meets its target" in human


def test_without_a_stack_or_a_broker_url_a_command_says_so(services, tmp_path):
    """No stack file and no YOLOQ_REDIS_URL: never the machine's Redis on 6379 with an answer of "no jobs"."""
    env = {k: v for k, v in services.env().items() if k != "YOLOQ_REDIS_URL"} | {"YOLOQ_HOME": str(tmp_path)}
    for args in (["status"], ["jobs", "--json"], ["submit", "probe", "--team", "a"], ["cordon", "--list"]):
        result = yoloq_cli(services, *args, env=env)
        assert result.returncode == 1 and result.stdout == "", args
        assert result.stderr.startswith(f"yoloq: error: no yoloq stack found: {tmp_path}/stack.env does not exist")


def test_cancel_of_a_running_job_says_the_cancel_was_requested(fleet):
    fleet.start("0:A100:40")
    client = Client(fleet.services.settings)
    handle = client.submit({"kind": "probe", "seconds": 60, "tier": "low", "team": "vision"})
    handle.wait({JobState.RUNNING}, timeout_s=30)
    result = yoloq_cli(fleet.services, "cancel", handle.job_id)
    assert result.returncode == 0
    assert result.stdout.strip() == f"{handle.job_id}: cancel requested; it stops at its next step"
    assert handle.wait(timeout_s=30).state is JobState.CANCELLED
