"""Admission with real workers and a real supervisor: approval for critical work, team quotas, demoted teams."""

from __future__ import annotations

import json
import time

import pytest

from infra.fleet_ceiling import FleetCeiling
from routing.tiers import Tier
from tasks.errors import SpecRejected
from tasks.specs import ProbeSpec
from tasks.states import JobState
from tests.fleet import poll, stop_supervisors, yoloq_cli
from yoloq.client import Client

pytestmark = pytest.mark.integration


@pytest.fixture
def supervised(fleet, services):
    yield lambda: services.start_supervisor("--interval", "0.2", "--leader-ttl", "3")
    stop_supervisors(services)
    yoloq_cli(services, "quota", "set", "risk", "--tier", "low")
    yoloq_cli(services, "quota", "demote", "interns", "--undo")


def test_unapproved_critical_job_stays_held_until_approved(fleet, client, services, supervised):
    fleet.start("0:A100:40")
    supervised()
    urgent = client.submit(ProbeSpec(seconds=0, tier="critical", team="risk"))
    assert urgent.state is JobState.HELD
    # While other work flows through the supervisor and the worker, it stays held with its reason
    assert client.submit(ProbeSpec(seconds=1, tier="low", team="risk")).wait(timeout_s=30).state is JobState.SUCCEEDED
    record = urgent.refresh()
    assert record.state is JobState.HELD and "awaiting approval" in record.events[0].reason
    # When an operator approves it, the supervisor releases it and it runs
    assert yoloq_cli(services, "approve", urgent.job_id).returncode == 0
    done = urgent.wait(timeout_s=30)
    assert done.state is JobState.SUCCEEDED
    assert [e.type for e in done.events][:4] == ["submitted", "approved", "released", "started"]
    # The audit log has the three decisions, newest first, with who took them
    audit = json.loads(yoloq_cli(services, "audit", "--job", urgent.job_id, "--json").stdout)
    assert [(e["type"], e["by"].split(":")[0]) for e in audit] == [
        ("released", "supervisor"), ("approved", "cli"), ("submitted", "admission")]  # fmt: skip
    assert all(e["job_id"] == urgent.job_id for e in audit) and "awaiting approval" in audit[-1]["reason"]


def test_over_quota_job_is_held_and_starts_when_the_quota_frees(fleet, client, services, supervised):
    fleet.start("0:A100:40,1:A100:40")
    assert yoloq_cli(services, "quota", "set", "risk", "--tier", "low", "--gpus", "1").returncode == 0
    shown = json.loads(yoloq_cli(services, "quota", "show", "--json").stdout)
    assert {"team": "risk", "tier": "low", "gpus": 1} in shown["quotas"]
    newest = json.loads(yoloq_cli(services, "audit", "--limit", "1", "--json").stdout)
    assert [(e["type"], e["job_id"], e["reason"]) for e in newest] == [
        ("quota-set", None, "team risk, tier low: at most 1 GPUs")]  # fmt: skip
    supervised()
    first = client.submit(ProbeSpec(seconds=2, tier="low", team="risk"))
    second = client.submit(ProbeSpec(seconds=0, tier="low", team="risk"))
    assert (first.state, second.state) == (JobState.QUEUED, JobState.HELD)
    assert "over quota: team risk has 1 of 1 low-tier GPUs in use" in second.refresh().events[0].reason
    # A second GPU is free, yet the held job waits for its team's running job to finish
    a, b = first.wait(timeout_s=30), second.wait(timeout_s=30)
    assert a.state is JobState.SUCCEEDED and b.state is JobState.SUCCEEDED
    assert b.started_at > a.finished_at


def test_demoted_team_critical_submission_runs_at_high_without_approval(fleet, client, services, supervised):
    fleet.start("0:A100:40")
    assert yoloq_cli(services, "quota", "demote", "interns").returncode == 0
    handle = client.submit(ProbeSpec(seconds=0, tier="critical", team="interns"))
    assert (handle.state, handle.tier) == (JobState.QUEUED, "high") and handle.queue.startswith("yoloq.high.")
    record = handle.wait(timeout_s=30)
    assert record.state is JobState.SUCCEEDED and "demoted" in record.events[0].reason


def test_critical_jobs_waiting_past_the_target_count_as_misses_before_they_start(client):
    """Issue 15 item 9b: one critical job held and one queued for over 30 min left `yoloq sla` compliant."""
    later = time.time() + 31 * 60  # the SLA as it will read in 31 minutes if nothing starts them

    def late() -> int:
        return int(client.sla(later)["critical"]["waiting_past_target"])

    before = late()
    # Given a critical job held for approval and one queued that no worker takes (no fleet runs)
    held = client.submit(ProbeSpec(seconds=0, tier="critical", team="risk"))
    client.preapprove("oncall", True, by="test")
    try:
        fresh = Client(client.settings)  # a long-lived client rereads the admission rules at most once a second
        queued = fresh.submit(ProbeSpec(seconds=0, tier="critical", team="oncall", memory_gb=100))
    finally:
        client.preapprove("oncall", False, by="test")
    assert (held.state, queued.state) == (JobState.HELD, JobState.QUEUED)
    # Then, 31 minutes on, both are misses already, and the tier's share within target counts them
    assert late() == before + 2
    # And once they are cancelled they no longer wait
    client.cancel(held.job_id)
    client.cancel(queued.job_id)
    assert late() == before


def test_a_job_no_gpu_of_the_fleet_can_hold_is_refused_at_the_door_or_told_why_it_waits(
    fleet, client, services, supervised
):
    """Issue 15 items 5 and 9c: memory_gb=100 on a 40 GB fleet sat queued forever, with another job's reason."""
    # Given a job submitted while nothing is known of the fleet (no supervisor, no worker): it is accepted
    early = client.submit(ProbeSpec(seconds=0, tier="medium", team="vision", memory_gb=100))
    assert early.state is JobState.QUEUED
    # When a 40 GB fleet and its supervisor come up
    fleet.start("0:A100:40")
    supervised()

    def told() -> list[str]:
        return [e.reason for e in early.refresh().events if e.type == "unplaceable"]

    poll(told, 30, "the supervisor to say why the job waits")
    # Then the waiting job is told, in its own history, that no GPU can hold it and why
    assert told()[0] == (
        "no GPU can hold it: needs 102400 MiB of GPU memory; the largest GPU seen in the fleet in the last 24 h has"
        " 40960 MiB"
    )
    # And a new one is refused at the door, through the Client and the CLI alike, and nothing is registered
    before = len(client.jobs(limit=1000))
    with pytest.raises(SpecRejected, match="no GPU can hold it: needs 102400 MiB"):
        client.submit(ProbeSpec(seconds=0, tier="medium", team="vision", memory_gb=100))
    cli = yoloq_cli(services, "submit", "probe", "--team", "vision", "--memory-gb", "100")
    assert cli.returncode == 1 and "no GPU can hold it" in cli.stderr and cli.stderr.count("\n") == 1
    assert len(client.jobs(limit=1000)) == before
    # And a job the fleet can hold still goes through, and the supervisor told the waiting job only once
    assert client.submit(ProbeSpec(seconds=0, team="vision", memory_gb=30)).wait(timeout_s=30).state is (
        JobState.SUCCEEDED
    )
    assert len(told()) == 1
    # And a bigger GPU seen an hour ago (an autoscaled pool now at zero) still counts: its jobs are let in to wait
    FleetCeiling(client.registry.client).saw([143_360], time.time() - 3600)
    assert client.submit(ProbeSpec(seconds=0, team="vision", memory_gb=100)).state is JobState.QUEUED
    client.cancel(early.job_id)


def test_quota_rules_for_a_team_no_spec_can_name_are_refused(client, services):
    """Issue 15 item 5: a quota for a team named "Bad Team" was stored."""
    before = client.admission_rules()
    for args in (["set", "Bad Team", "--tier", "low", "--gpus", "1"], ["demote", "x:y"], ["preapprove", "Ops\n"]):
        result = yoloq_cli(services, "quota", *args)
        assert result.returncode == 1, (args, result.stderr)
        assert result.stderr.startswith("yoloq: error: invalid team name: ") and result.stderr.count("\n") == 1
    with pytest.raises(SpecRejected, match="invalid quota"):
        client.quota("risk", Tier.LOW, -1, by="test")
    assert client.admission_rules() == before
