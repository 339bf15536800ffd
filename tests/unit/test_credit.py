"""Credit score (routing/credit.py): strikes fade with a half-life, demotion and restoration have hysteresis."""

from __future__ import annotations

import math

import pytest

from routing.admission import AdmissionRules, submitted_tier, tier_for
from routing.credit import Assessment, CreditPolicy, Strike, assess, assess_all, score, strike_kind
from routing.tiers import Tier

pytestmark = pytest.mark.unit

DAY = 86400.0
P = CreditPolicy()


def _strikes(kind: str, n: int, at: float = 0.0) -> list[Strike]:
    return [Strike(at, kind, f"j{i}") for i in range(n)]


@pytest.mark.parametrize(
    ("strikes", "now", "expected"),
    [
        ([], 0.0, 100.0),
        (_strikes("cancelled", 1), 0.0, 90.0),
        (_strikes("cancelled", 1), 7 * DAY, 95.0),  # one half-life later a strike weighs half
        (_strikes("non-urgent", 2) + _strikes("never-approved", 1), 0.0, 40.0),
        (_strikes("cancelled", 11), 0.0, 0.0),  # never below 0
        (_strikes("cancelled", 1, at=10.0), 0.0, 90.0),  # a strike from a clock slightly ahead counts in full
        (_strikes("unknown", 3), 0.0, 100.0),  # a kind without a weight costs nothing
    ],
)
def test_score(strikes, now, expected):
    assert score(strikes, now, P) == expected


@pytest.mark.parametrize(
    ("strikes", "demoted", "now", "expected"),
    [
        # five cancels in a day leave 50: not below the line; six demote
        (_strikes("cancelled", 5), False, 0.0, Assessment("t", 50.0, False)),
        (_strikes("cancelled", 6), False, 0.0,
         Assessment("t", 40.0, True, "demote", "credit score 40 fell below 50 (6 strikes)")),
        # hysteresis: a demoted team at 60 stays demoted; at 80 it is restored
        (_strikes("cancelled", 4), True, 0.0, Assessment("t", 60.0, True)),
        (_strikes("cancelled", 2), True, 0.0,
         Assessment("t", 80.0, False, "restore", "credit score 80 recovered to 80")),
        (_strikes("cancelled", 4), False, 0.0, Assessment("t", 60.0, False)),
    ],
)  # fmt: skip
def test_assess_with_hysteresis(strikes, demoted, now, expected):
    assert assess("t", strikes, demoted, now, P) == expected


def test_a_demoted_team_recovers_after_about_eleven_days():
    strikes = _strikes("non-urgent", 2) + _strikes("cancelled", 1)  # score 40
    back = 7 * math.log2(3) * DAY
    assert assess("t", strikes, True, back - 3600, P).change == ""
    assert assess("t", strikes, True, back + 3600, P).change == "restore"


def test_assess_all_covers_teams_with_strikes_or_a_credit_demotion():
    result = assess_all({"b": _strikes("cancelled", 6)}, frozenset({"a"}), 0.0, P)
    assert [(a.team, a.change) for a in result] == [("a", "restore"), ("b", "demote")]
    assert P.horizon_s() == 70 * DAY


@pytest.mark.parametrize(
    ("tier", "cancelled", "approved", "awaited", "expected"),
    [
        (Tier.CRITICAL, True, False, True, "never-approved"),
        (Tier.CRITICAL, True, True, True, "cancelled"),
        (Tier.CRITICAL, True, False, False, "cancelled"),  # pre-approved team: admitted without approval
        (Tier.CRITICAL, False, False, True, ""),
        (Tier.HIGH, True, False, False, ""),
    ],
)
def test_strike_kind(tier, cancelled, approved, awaited, expected):
    assert strike_kind(tier, cancelled=cancelled, approved=approved, awaited_approval=awaited) == expected


RULES = AdmissionRules(default_tier={"prod": Tier.HIGH}, credit_demoted=frozenset({"wolf"}),
                       demoted=frozenset({"intern"}))  # fmt: skip


@pytest.mark.parametrize(
    ("team", "tier", "expected"),
    [
        ("prod", None, (Tier.HIGH, "team prod's default tier is high")),
        ("prod", Tier.LOW, (Tier.LOW, "")),  # an explicit tier wins
        ("other", None, (Tier.MEDIUM, "")),
    ],
)
def test_submitted_tier(team, tier, expected):
    assert submitted_tier(team, tier, RULES) == expected


@pytest.mark.parametrize(
    ("team", "expected"),
    [
        ("wolf", (Tier.HIGH, "team wolf is demoted by its credit score: critical work runs at high")),
        ("intern", (Tier.HIGH, "team intern is demoted: critical work runs at high")),
        ("prod", (Tier.CRITICAL, "")),
    ],
)
def test_credit_demotion_lowers_critical_work(team, expected):
    assert tier_for(team, Tier.CRITICAL, RULES) == expected
