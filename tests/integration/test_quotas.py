"""Issue 18 items 4 and 9 end to end, on real Redis, real probe workers and a real supervisor: quota borrowing and
its reclaim by checkpoint-preemption, team default tiers, and credit scores that demote and restore a team."""

from __future__ import annotations

import json
import time

import pytest

from infra.admission_rules import AdmissionStore
from infra.credit_store import CreditStore
from infra.queues import depths
from routing.credit import CreditPolicy
from routing.tiers import Tier
from tasks import admission, borrowing, credit
from tasks.specs import ProbeSpec
from tasks.states import JobState
from tests.fleet import poll, stop_supervisors, yoloq_cli
from tests.integration.test_api import serving_api

pytestmark = pytest.mark.integration

FAST = ("--interval", "0.2", "--leader-ttl", "3")
DAY = 86400.0


@pytest.fixture
def supervised(services):
    yield lambda: services.start_supervisor(*FAST)
    stop_supervisors(services)


def _usage(services, team: str, tier: str) -> dict:
    shown = json.loads(yoloq_cli(services, "quota", "show", "--json").stdout)
    return next(u for u in shown["usage"] if (u["team"], u["tier"]) == (team, tier))


def _step(client, job_id: str) -> int:
    return int(client.job(job_id).progress.get("step", 0))


def test_a_loan_is_reclaimed_by_checkpoint_preemption_when_the_lender_needs_it(fleet, client, services, supervised):
    # Given one GPU; risk has 1 high-tier GPU and lends it; lab has none of its own
    fleet.start("0:A100:40")
    supervised()
    assert yoloq_cli(services, "quota", "set", "risk", "--tier", "high", "--gpus", "1", "--lend", "1").returncode == 0
    assert yoloq_cli(services, "quota", "set", "lab", "--tier", "high", "--gpus", "0").returncode == 0
    # When lab submits high-tier work, it runs on risk's unused quota, and says so
    borrower = client.submit(ProbeSpec(seconds=30, tier="high", team="lab", memory_gb=8))
    assert borrower.state is JobState.QUEUED
    record = borrower.refresh()
    assert record.borrowed_from == "risk" and "borrowed from team risk" in record.events[0].reason
    poll(lambda: _step(client, borrower.job_id) >= 2, 60, "the borrower running")
    # And its 24 h preemption budget is spent (an operator preempted it once)
    client.preempt(borrower.job_id, by="test")
    poll(lambda: len(client.job(borrower.job_id).preemptions) == 1 and client.job(borrower.job_id).state is
         JobState.RUNNING, 60, "the borrower resumed after its first preemption")  # fmt: skip
    assert (_usage(services, "risk", "high")["lent"], _usage(services, "lab", "high")["borrowed"]) == (1, 1)
    # When the lender submits work of its own at that tier
    lender = client.submit(ProbeSpec(seconds=1, tier="high", team="risk", memory_gb=8))
    assert lender.state is JobState.QUEUED and lender.refresh().borrowed_from is None
    # Then the borrower gives the loan back (checkpoint, back to held), the lender's job runs
    done = lender.wait(timeout_s=60)
    assert done.state is JobState.SUCCEEDED
    # And the borrower is admitted again on the same loan once the lender's job ends, resumes and finishes
    final = borrower.wait(timeout_s=90)
    assert final.state is JobState.SUCCEEDED and len(final.preemptions) == 2
    kinds = [(e.type, e.state.value if e.state else None) for e in final.events if e.type in (
        "reclaimed", "preempted", "released")]  # fmt: skip
    assert kinds[-3:] == [("reclaimed", None), ("preempted", "held"), ("released", "queued")]
    reclaim = next(e for e in final.events if e.type == "reclaimed")
    assert reclaim.by == "supervisor" and reclaim.reason.startswith("reclaim: team risk needs its quota back")
    released = [e for e in final.events if e.type == "released"][-1]
    assert "borrowed from team risk" in released.reason and released.at >= done.finished_at
    assert final.result and final.result["resumed_from"] >= 2
    # And the audit log has the reclaim, by the supervisor
    audit = client.audit(job_id=borrower.job_id)
    assert ("reclaimed", "supervisor") in [(e["type"], e["by"]) for e in audit]


def test_a_team_default_tier_applies_when_a_submission_names_none(wiped, services):
    # Given production's default tier is high
    assert yoloq_cli(services, "quota", "default", "prod", "--tier", "high").returncode == 0
    # When it submits without a tier, the job runs at high and its history says why
    cli = yoloq_cli(services, "submit", "probe", "--team", "prod", "--json")
    assert cli.returncode == 0, cli.stderr
    plain = json.loads(cli.stdout)
    assert (plain["tier"], plain["queue"].split(".")[1]) == ("high", "high")
    assert "team prod's default tier is high" in wiped.job(plain["job_id"]).events[0].reason
    # And an explicit tier still wins, another team still gets medium, and the Python API obeys the same rule
    named = json.loads(yoloq_cli(services, "submit", "probe", "--team", "prod", "--tier", "low", "--json").stdout)
    other = json.loads(yoloq_cli(services, "submit", "probe", "--team", "lab", "--json").stdout)
    assert (named["tier"], other["tier"]) == ("low", "medium")
    assert wiped.submit(ProbeSpec(seconds=0, team="prod")).tier == "high"
    assert wiped.submit(ProbeSpec(seconds=0, team="prod", tier="medium")).tier == "medium"
    shown = json.loads(yoloq_cli(services, "quota", "show", "--json").stdout)
    assert shown["default_tiers"] == {"prod": "high"}
    assert "prod: default tier high" in yoloq_cli(services, "quota", "show").stdout.splitlines()
    audit = wiped.audit(limit=20)
    assert ("default-tier-set", "team prod: high") in [(e["type"], e["reason"]) for e in audit]
    # And the HTTP API shows the same document, to a key that may read
    with serving_api(services) as api:
        status, body = api.call("GET", "/api/v1/quotas")
        assert status == 200 and body["default_tiers"] == {"prod": "high"}
        assert api.call("GET", "/api/v1/quotas", auth=None)[0] == 401
    # And removing the default goes back to medium
    assert yoloq_cli(services, "quota", "default", "prod").returncode == 0
    assert wiped.submit(ProbeSpec(seconds=0, team="prod")).tier == "medium"


def test_credit_score_demotes_a_team_and_time_restores_it(wiped, services, supervised):
    client = wiped
    # Given three critical jobs of team wolf awaiting approval: two judged not urgent, one cancelled
    held = [client.submit(ProbeSpec(seconds=0, tier="critical", team="wolf")) for _ in range(3)]
    assert all(h.state is JobState.HELD for h in held)
    for h in held[:2]:
        judged = yoloq_cli(services, "judge", h.job_id, "--non-urgent", "--reason", "routine retrain")
        assert judged.returncode == 0, judged.stderr
    again = yoloq_cli(services, "judge", held[0].job_id, "--non-urgent")
    assert again.returncode == 1 and "already judged non-urgent" in again.stderr
    client.cancel(held[2].job_id, by="test")
    low = client.submit(ProbeSpec(seconds=0, tier="low", team="wolf"))
    refused = yoloq_cli(services, "judge", low.job_id, "--non-urgent")
    assert refused.returncode == 1 and "only critical jobs" in refused.stderr
    # When the supervisor sweeps the history (25 + 25 + 10 off 100: 40, under 50)
    supervised()

    def demoted() -> list:
        return [e for e in client.audit(limit=50) if e["type"] == "credit-demoted"]

    entry = poll(demoted, 30, "the credit demotion")[0]
    assert entry["by"] == "credit" and entry["reason"] == "team wolf: credit score 40 fell below 50 (3 strikes)"
    # Then the team's critical work runs at high, without approval, and says why (once the client rereads its rules)
    poll(lambda: "wolf" in client.submit_rules.rules().credit_demoted, 5, "the client to reread the rules")
    urgent = client.submit(ProbeSpec(seconds=0, tier="critical", team="wolf"))
    assert (urgent.state, urgent.tier) == (JobState.QUEUED, "high")
    assert "demoted by its credit score" in urgent.refresh().events[0].reason
    shown = json.loads(yoloq_cli(services, "quota", "show", "--json").stdout)
    assert {"team": "wolf", "score": 40.0, "demoted": True} in shown["credit"] and shown["credit_demoted"] == ["wolf"]
    assert [e.type for e in client.job(held[0].job_id).events][-1] == "judged-non-urgent"
    # And 12 days on (past 7 × log2 3 ≈ 11.1 days) the sweep restores it, audited by credit
    stop_supervisors(services)
    store = AdmissionStore(client.registry.client)
    later = time.time() + 12 * DAY
    verdicts = credit.sweep(client.registry, store, CreditStore(client.registry.client), later, CreditPolicy())
    assert [(v.team, v.change) for v in verdicts] == [("wolf", "restore")]
    restored = [e for e in client.audit(limit=5) if e["type"] == "credit-restored"]
    assert restored[0]["by"] == "credit" and "recovered to 80" in restored[0]["reason"]
    assert store.rules().credit_demoted == frozenset()
    # (a client rereads the rules at most once a second: RULES_MAX_AGE_S)
    poll(lambda: client.submit_rules.rules().credit_demoted == frozenset(), 5, "the client to reread the rules")
    assert client.submit(ProbeSpec(seconds=0, tier="critical", team="wolf")).state is JobState.HELD


def test_a_queued_borrower_goes_back_to_held_at_once_and_borrows_again_later(wiped):
    client = wiped
    # Given no worker (every job stays queued): lab borrows risk's one lendable low-tier GPU
    client.quota("risk", Tier.LOW, 1, by="test")
    client.lend("risk", Tier.LOW, 1, by="test")
    client.quota("lab", Tier.LOW, 0, by="test")
    borrower = client.submit(ProbeSpec(seconds=0, tier="low", team="lab"))
    second = client.submit(ProbeSpec(seconds=0, tier="low", team="lab"))
    assert (borrower.state, second.state) == (JobState.QUEUED, JobState.HELD)
    assert "no team lends unused quota" in second.refresh().events[0].reason
    queue = borrower.refresh().queue
    assert depths(client.registry.client, (queue,))[queue] == 1
    # When the lender submits its own job, the supervisor's reclaim holds the queued borrower and withdraws its message
    lender = client.submit(ProbeSpec(seconds=0, tier="low", team="risk"))
    store = AdmissionStore(client.registry.client)
    plan, loans = borrowing.plan(client.registry, store, time.time())
    assert loans and [r.job_id for r in plan] == [borrower.job_id]
    assert borrowing.apply(client.rt, plan[0])
    record = borrower.refresh()
    assert (record.state, record.borrowed_from) == (JobState.HELD, None)
    assert record.events[-1].type == "reclaimed" and record.events[-1].by == "supervisor"
    assert depths(client.registry.client, (queue,))[queue] == 1  # the lender's message only
    assert borrowing.plan(client.registry, store, time.time())[0] == []  # reclaimed once, not twice
    # And when the lender's job ends, the oldest held borrower is released on the loan again, and only it
    client.cancel(lender.job_id, by="test")
    assert admission.release_held(client.registry, client.dispatch, store) == [borrower.job_id]
    again = borrower.refresh()
    assert (again.state, again.borrowed_from) == (JobState.QUEUED, "risk")
    assert "borrowed from team risk" in again.events[-1].reason and second.refresh().state is JobState.HELD


def test_a_gang_counts_each_of_its_gpus_against_its_teams_quota(wiped, services):
    # Given team lab may use 3 high-tier GPUs and already has one job queued
    client = wiped
    assert yoloq_cli(services, "quota", "set", "lab", "--tier", "high", "--gpus", "3").returncode == 0
    assert client.submit(ProbeSpec(seconds=0, tier="high", team="lab")).state is JobState.QUEUED
    # Then a gang of 3 is held (1 + 3 > 3) and says why, while a gang of 2 fits (1 + 2 = 3)
    big = client.submit(ProbeSpec(seconds=0, tier="high", team="lab", gpus=3))
    assert big.state is JobState.HELD
    assert "has 1 of 3 high-tier GPUs in use; this job needs 3" in big.refresh().events[0].reason
    assert client.submit(ProbeSpec(seconds=0, tier="high", team="lab", gpus=2)).state is JobState.QUEUED
    # And now the team is full: even a one-GPU job waits
    assert client.submit(ProbeSpec(seconds=0, tier="high", team="lab")).state is JobState.HELD
