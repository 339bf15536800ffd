"""Admission rules (routing/admission.py): approval, quotas, demotion, release order — table-driven."""

from __future__ import annotations

import pytest

from routing.admission import (
    AdmissionRules,
    Promotion,
    admit,
    covers,
    nothing_to_approve,
    promotion,
    release_order,
    self_approval,
    tier_for,
)
from routing.tiers import Tier

pytestmark = pytest.mark.unit

C, H, L = Tier.CRITICAL, Tier.HIGH, Tier.LOW
RULES = AdmissionRules(quotas={("vision", H): 2, ("vision", L): 0}, demoted=frozenset({"intern"}),
                       pre_approved=frozenset({"oncall"}))  # fmt: skip


@pytest.mark.parametrize(
    ("team", "tier", "approved", "usage", "held", "reason"),
    [
        ("vision", C, None, 0, True, "awaiting approval: critical jobs need `yoloq approve`"),
        ("vision", C, C, 0, False, ""),
        # an approval is for a tier: one given at high says nothing about critical (issue 15 item 8 follow-up)
        ("vision", C, H, 0, True, "awaiting approval: critical jobs need `yoloq approve`"),
        ("oncall", C, None, 0, False, ""),  # pre-approved team
        ("vision", H, None, 1, False, ""),
        ("vision", H, None, 2, True, "over quota: team vision has 2 of 2 high-tier GPUs in use"),
        ("vision", H, C, 2, True, "over quota: team vision has 2 of 2 high-tier GPUs in use"),  # approval ≠ quota
        ("vision", L, None, 0, True, "over quota: team vision has 0 of 0 low-tier GPUs in use"),
        ("other", H, None, 99, False, ""),  # no quota set: unlimited
        ("vision", Tier.MEDIUM, None, 99, False, ""),
    ],
)
def test_admit(team, tier, approved, usage, held, reason):
    verdict = admit(team, tier, approved, usage, RULES)
    assert (verdict.held, verdict.reason, verdict.tier) == (held, reason, tier)


@pytest.mark.parametrize(
    ("team", "tier", "expected"),
    [("intern", C, H), ("intern", L, L), ("vision", C, C)],
)
def test_demoted_team_runs_critical_work_at_high(team, tier, expected):
    assert tier_for(team, tier, RULES)[0] is expected
    assert ("demoted" in tier_for(team, tier, RULES)[1]) is (expected is not tier)


def test_release_order_is_oldest_first_and_counts_each_release():
    held = [("j3", "vision", H, 3.0, None), ("j1", "vision", H, 1.0, None), ("j2", "vision", H, 2.0, None),
            ("c1", "vision", C, 0.5, None), ("c2", "vision", C, 0.6, C), ("c3", "vision", C, 0.4, H)]  # fmt: skip
    # one high-tier slot free (usage 1 of 2): only the oldest high job goes; the critical ones not approved for
    # critical stay (c3 was approved at high, then promoted)
    assert release_order(held, {("vision", H): 1}, RULES) == ["c2", "j1"]
    assert release_order(held, {("vision", H): 0}, RULES) == ["c2", "j1", "j2"]
    assert release_order(held, {("vision", H): 2}, RULES) == ["c2"]


@pytest.mark.parametrize(
    ("team", "target", "approved", "held", "usage", "expected"),
    [
        # a demoted team's job stops at high, as its critical submissions do (issue 15 item 8)
        ("intern", C, None, False, {}, Promotion(H, "team intern is demoted: critical work runs at high")),
        # critical needs approval: the promotion waits for it (never applied unapproved)
        ("vision", C, None, False, {}, Promotion(C, awaits_approval=True)),
        ("vision", C, H, False, {}, Promotion(C, awaits_approval=True)),  # approved at high only: not for critical
        ("vision", C, C, False, {}, Promotion(C)),
        ("oncall", C, None, False, {}, Promotion(C)),  # pre-approved team
        # quota at the new tier, the job itself not counted
        ("vision", H, None, False, {H: 1}, Promotion(H)),
        (
            "vision",
            H,
            None,
            False,
            {H: 2},
            Promotion(H, refused="over quota: team vision has 2 of 2 high-tier GPUs in use"),
        ),
        # a held job's tier changes now: its release checks approval and quota like any held job's
        ("vision", C, None, True, {}, Promotion(C)),
        ("vision", H, None, True, {H: 9}, Promotion(H)),
    ],
)
def test_promotion_obeys_the_rules_of_a_submission(team, target, approved, held, usage, expected):
    assert promotion(team, target, approved=approved, held=held, usage=usage, rules=RULES) == expected


@pytest.mark.parametrize(
    ("approver", "requesters", "refused"),
    [
        ("key:alice", {"key:alice", ""}, True),  # approving one's own submission or promotion: four-eyes
        ("key:bob", {"key:alice", ""}, False),
        ("", {""}, False),  # nobody recorded (an old job): nothing to compare
    ],
)
def test_self_approval_is_refused(approver, requesters, refused):
    reason = self_approval(approver, requesters)
    assert bool(reason) is refused and (not refused or reason.startswith(f"four-eyes: {approver} submitted"))


@pytest.mark.parametrize(
    ("approved", "tier", "covered"),
    [(None, C, False), (None, L, False), (C, C, True), (C, H, True), (H, H, True), (H, C, False), (L, H, False)],
)
def test_an_approval_covers_its_tier_and_below_never_above(approved, tier, covered):
    assert covers(approved, tier) is covered


@pytest.mark.parametrize(
    ("team", "tier", "approved", "reason"),
    [
        ("vision", C, None, ""),  # held for approval: approvable
        ("vision", C, H, ""),  # approved at high only: critical still needs it
        ("vision", H, None, "only critical work needs approval, and this job is held at high"),  # held over quota
        ("vision", C, C, "it is already approved for critical"),
        ("oncall", C, None, "team oncall is pre-approved for critical work"),
    ],
)
def test_a_job_that_needs_no_approval_has_nothing_to_approve(team, tier, approved, reason):
    assert nothing_to_approve(team, tier, approved, RULES) == reason
