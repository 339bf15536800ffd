"""Operator-set admission state in Redis: quotas and lending limits per team and tier, demoted teams, pre-approved
teams, default tiers, and the teams their credit score demoted.

``yoloq:quotas`` and ``yoloq:lend`` (hashes ``team:tier`` → GPUs), ``yoloq:demoted``, ``yoloq:pre-approved`` and
``yoloq:credit-demoted`` (sets of team names), ``yoloq:default-tier`` (hash team → tier). Read in one pipelined round
trip on every submission and every supervisor tick.
"""

from __future__ import annotations

import time

import redis

from infra import audit
from infra.redis_client import redis_errors
from routing.admission import AdmissionRules
from routing.names import team_problem
from routing.tiers import Tier
from tasks.errors import InvalidName, SpecRejected
from tasks.records import Event, iso, utc_now

P = "yoloq:"


class AdmissionStore:
    """Read and change the admission rules."""

    def __init__(self, client: redis.Redis, url: str = "", max_age_s: float = 0.0) -> None:
        self._r, self._url, self._max_age_s = client, url, max_age_s
        self._cached: tuple[float, AdmissionRules] | None = None

    def rules(self) -> AdmissionRules:
        """The current rules, in one round trip (or from this process's cache when ``max_age_s`` allows)."""
        if self._cached and time.monotonic() - self._cached[0] < self._max_age_s:
            return self._cached[1]
        with redis_errors(self._url):
            pipe = self._r.pipeline(transaction=False)
            pipe.hgetall(f"{P}quotas")
            pipe.smembers(f"{P}demoted")
            pipe.smembers(f"{P}pre-approved")
            pipe.hgetall(f"{P}lend")
            pipe.hgetall(f"{P}default-tier")
            pipe.smembers(f"{P}credit-demoted")
            quotas, demoted, approved, lend, defaults, credit = pipe.execute()
        rules = AdmissionRules(
            _per_tier(quotas), frozenset(map(str, demoted)), frozenset(map(str, approved)), _per_tier(lend),
            {str(team): Tier(tier) for team, tier in defaults.items()}, frozenset(map(str, credit)),
        )  # fmt: skip
        self._cached = (time.monotonic(), rules)
        return rules

    def set_quota(self, team: str, tier: Tier, gpus: int | None, by: str = "operator") -> None:
        """Limit a team's GPUs at one tier (None removes the limit)."""
        self._checked(team)
        if gpus is not None and gpus < 0:
            raise SpecRejected(f"invalid quota: {gpus} GPUs (0 or more; omit to remove the limit)")
        pipe = self._r.pipeline(transaction=True)
        if gpus is None:
            pipe.hdel(f"{P}quotas", f"{team}:{tier.value}")
        else:
            pipe.hset(f"{P}quotas", f"{team}:{tier.value}", str(gpus))
        limit = "no limit" if gpus is None else f"at most {gpus} GPUs"
        self._apply(pipe, "quota-set", f"team {team}, tier {tier.value}: {limit}", by)

    def set_lend(self, team: str, tier: Tier, gpus: int | None, by: str = "operator") -> None:
        """Let other teams borrow up to ``gpus`` of this team's unused quota at one tier (None or 0: lend nothing)."""
        self._checked(team)
        if gpus is not None and gpus < 0:
            raise SpecRejected(f"invalid lending limit: {gpus} GPUs (0 or more)")
        pipe = self._r.pipeline(transaction=True)
        if not gpus:
            pipe.hdel(f"{P}lend", f"{team}:{tier.value}")
        else:
            pipe.hset(f"{P}lend", f"{team}:{tier.value}", str(gpus))
        self._apply(pipe, "lend-set", f"team {team}, tier {tier.value}: lends at most {gpus or 0} GPUs", by)

    def set_default_tier(self, team: str, tier: Tier | None, by: str = "operator") -> None:
        """The tier a team's submissions get when they name none (None: medium, as for every team)."""
        self._checked(team)
        pipe = self._r.pipeline(transaction=True)
        if tier is None:
            pipe.hdel(f"{P}default-tier", team)
        else:
            pipe.hset(f"{P}default-tier", team, tier.value)
        self._apply(pipe, "default-tier-set", f"team {team}: {tier.value if tier else 'medium (none set)'}", by)

    def set_credit_demoted(self, team: str, demoted: bool, reason: str) -> None:
        """The credit score demoted (or restored) a team: audited ``by: credit`` with the score that decided it."""
        pipe = self._r.pipeline(transaction=True)
        (pipe.sadd if demoted else pipe.srem)(f"{P}credit-demoted", team)
        self._apply(pipe, "credit-demoted" if demoted else "credit-restored", f"team {team}: {reason}", "credit")

    def set_pre_approved(self, team: str, approved: bool, by: str = "operator") -> None:
        """Let a team's critical submissions in without a per-job approval (an on-call team), or stop that."""
        self._checked(team)
        pipe = self._r.pipeline(transaction=True)
        (pipe.sadd if approved else pipe.srem)(f"{P}pre-approved", team)
        self._apply(pipe, "team-preapproved" if approved else "team-preapproval-removed", f"team {team}", by)

    def set_demoted(self, team: str, demoted: bool, by: str = "operator") -> None:
        """Lower (or stop lowering) a team's future critical submissions to high."""
        self._checked(team)
        pipe = self._r.pipeline(transaction=True)
        (pipe.sadd if demoted else pipe.srem)(f"{P}demoted", team)
        self._apply(pipe, "team-demoted" if demoted else "team-demotion-removed", f"team {team}", by)

    @staticmethod
    def _checked(team: str) -> str:
        """A rule for a team no spec can name would be dead weight, and a key with ``:`` would misparse."""
        if problem := team_problem(team):
            raise InvalidName(f"invalid team name: {problem}")
        return team

    def _apply(self, pipe: redis.client.Pipeline, kind: str, what: str, by: str) -> None:
        """Run the change together with its audit entry (one MULTI), and forget the cached rules."""
        audit.add(pipe, "", Event(at=iso(utc_now()), type=kind, reason=what, by=by))
        with redis_errors(self._url):
            pipe.execute()
        self._cached = None


def _per_tier(raw: dict[str, str]) -> dict[tuple[str, Tier], int]:
    """``team:tier`` → GPUs, as the rules key them."""
    parsed = {}
    for key, value in raw.items():
        team, _, tier = str(key).rpartition(":")
        parsed[(team, Tier(tier))] = int(value)
    return parsed
