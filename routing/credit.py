"""Credit score: teams that cry wolf on the critical tier are demoted automatically, and recover with time (pure).

Each team starts at :data:`FULL` (100). Every **strike** from its history takes a weight off, and each strike's weight
halves every ``half_life_s`` (7 days by default), so the score recovers by itself:

    score = max(0, 100 - sum(weight(kind) * 0.5 ** ((now - at) / half_life_s)))

Strikes (only critical jobs count; :func:`strike_kind` classifies a job's end):
- ``never-approved`` (10): a critical job cancelled while it still awaited an operator's approval;
- ``cancelled`` (10): a critical job cancelled after it was admitted (it held or took a GPU ahead of others);
- ``non-urgent`` (25): an operator judged a critical job not urgent (``yoloq judge ID --non-urgent``).

**Hysteresis**: a team is demoted when its score falls **below** ``demote_below`` (50) and restored only once it is
back **at or above** ``restore_at`` (80), so a team near the line does not flap. A demoted team's critical
submissions run at high (``routing.admission.tier_for``). With the defaults: six cancelled critical jobs in a day, or
two judged non-urgent plus a cancel, demote a team; from a score of 40 it is restored after 7 × log2(3) ≈ 11.1 days.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from routing.tiers import Tier

FULL = 100.0
DEFAULT_WEIGHTS: dict[str, float] = {"never-approved": 10.0, "cancelled": 10.0, "non-urgent": 25.0}


@dataclass(frozen=True, slots=True)
class CreditPolicy:
    """The knobs: how fast strikes fade, where demotion and restoration happen, what each strike costs."""

    half_life_s: float = 7 * 86400.0
    demote_below: float = 50.0
    restore_at: float = 80.0
    weights: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_WEIGHTS))

    def horizon_s(self) -> float:
        """How far back strikes still matter: after 10 half-lives a strike weighs under 0.1 % of itself."""
        return 10 * self.half_life_s


@dataclass(frozen=True, slots=True)
class Strike:
    """One mark against a team: when (seconds, same clock as ``now``), what, and which job."""

    at: float
    kind: str
    job_id: str


@dataclass(frozen=True, slots=True)
class Assessment:
    """A team's score now, whether it is (now) demoted, and the change to apply ("demote", "restore" or "")."""

    team: str
    score: float
    demoted: bool
    change: str = ""
    reason: str = ""


def strike_kind(tier: Tier, *, cancelled: bool, approved: bool, awaited_approval: bool) -> str:
    """The strike a critical job's cancellation earns ("" for any other job): never approved, or cancelled."""
    if tier is not Tier.CRITICAL or not cancelled:
        return ""
    return "never-approved" if awaited_approval and not approved else "cancelled"


def score(strikes: Sequence[Strike], now: float, policy: CreditPolicy) -> float:
    """The team's score at ``now`` (strikes in the future count in full: clocks of two hosts may differ a little)."""
    lost = sum(policy.weights.get(s.kind, 0.0) * 0.5 ** (max(0.0, now - s.at) / policy.half_life_s) for s in strikes)
    return round(max(0.0, FULL - float(lost)), 2)


def assess(team: str, strikes: Sequence[Strike], demoted: bool, now: float, policy: CreditPolicy) -> Assessment:
    """The team's score and state with hysteresis: demote below ``demote_below``, restore at ``restore_at``."""
    value = score(strikes, now, policy)
    if not demoted and value < policy.demote_below:
        why = f"credit score {value:g} fell below {policy.demote_below:g} ({len(strikes)} strikes)"
        return Assessment(team, value, True, "demote", why)
    if demoted and value >= policy.restore_at:
        return Assessment(team, value, False, "restore", f"credit score {value:g} recovered to {policy.restore_at:g}")
    return Assessment(team, value, demoted)


def assess_all(
    strikes: Mapping[str, Sequence[Strike]], demoted: frozenset[str], now: float, policy: CreditPolicy
) -> list[Assessment]:
    """Every team with strikes or a credit demotion, by name."""
    teams = sorted(set(strikes) | demoted)
    return [assess(team, strikes.get(team, ()), team in demoted, now, policy) for team in teams]
