"""Admission rules (routing/admission.py): approval, quotas, demotion, release order — table-driven."""

from __future__ import annotations

import pytest

from routing.admission import AdmissionRules, Promotion, admit, promotion, release_order, self_approval, tier_for
from routing.tiers import Tier

pytestmark = pytest.mark.unit

C, H, L = Tier.CRITICAL, Tier.HIGH, Tier.LOW
RULES = AdmissionRules(quotas={("vision", H): 2, ("vision", L): 0}, demoted=frozenset({"intern"}),
                       pre_approved=frozenset({"oncall"}))  # fmt: skip


@pytest.mark.parametrize(
    ("team", "tier", "approved", "usage", "held", "reason"),
    [
        ("vision", C, False, 0, True, "awaiting approval: critical jobs need `yoloq approve`"),
        ("vision", C, True, 0, False, ""),
        ("oncall", C, False, 0, False, ""),  # pre-approved team
        ("vision", H, False, 1, False, ""),
        ("vision", H, False, 2, True, "over quota: team vision has 2 of 2 high-tier GPUs in use"),
        ("vision", L, False, 0, True, "over quota: team vision has 0 of 0 low-tier GPUs in use"),
        ("other", H, False, 99, False, ""),  # no quota set: unlimited
        ("vision", Tier.MEDIUM, False, 99, False, ""),
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
    held = [("j3", "vision", H, 3.0, False), ("j1", "vision", H, 1.0, False), ("j2", "vision", H, 2.0, False),
            ("c1", "vision", C, 0.5, False), ("c2", "vision", C, 0.6, True)]  # fmt: skip
    # one high-tier slot free (usage 1 of 2): only the oldest high job goes; the unapproved critical stays
    assert release_order(held, {("vision", H): 1}, RULES) == ["c2", "j1"]
    assert release_order(held, {("vision", H): 0}, RULES) == ["c2", "j1", "j2"]
    assert release_order(held, {("vision", H): 2}, RULES) == ["c2"]


@pytest.mark.parametrize(
    ("team", "target", "approved", "held", "usage", "expected"),
    [
        # a demoted team's job stops at high, as its critical submissions do (issue 15 item 8)
        ("intern", C, False, False, {}, Promotion(H, "team intern is demoted: critical work runs at high")),
        # critical needs approval: the promotion waits for it (never applied unapproved)
        ("vision", C, False, False, {}, Promotion(C, awaits_approval=True)),
        ("vision", C, True, False, {}, Promotion(C)),
        ("oncall", C, False, False, {}, Promotion(C)),  # pre-approved team
        # quota at the new tier, the job itself not counted
        ("vision", H, False, False, {H: 1}, Promotion(H)),
        (
            "vision",
            H,
            False,
            False,
            {H: 2},
            Promotion(H, refused="over quota: team vision has 2 of 2 high-tier GPUs in use"),
        ),
        # a held job's tier changes now: its release checks approval and quota like any held job's
        ("vision", C, False, True, {}, Promotion(C)),
        ("vision", H, False, True, {H: 9}, Promotion(H)),
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
