"""``yoloq quota show``: the rules and what each team uses of them (nominal, borrowed, lent), default tiers, and
credit scores, as one JSON document shared by the CLI, the Python API and the HTTP API."""

from __future__ import annotations

from typing import Any

from infra.admission_rules import AdmissionStore
from infra.credit_store import CreditStore
from infra.registry import RedisRegistry
from routing.tiers import Tier
from tasks.admission import ACTIVE


def _bump(counts: dict[tuple[str, Tier], int], key: tuple[str, Tier]) -> None:
    counts[key] = counts.get(key, 0) + 1


def quota_view(registry: RedisRegistry) -> dict[str, Any]:
    """Quotas (as set), per (team, tier) the nominal quota, lending limit, GPUs in use on its own quota, borrowed from
    others and lent to others; default tiers; credit scores and who they demoted."""
    rules = AdmissionStore(registry.client, registry.url).rules()
    records = registry.in_states(ACTIVE)
    keys = set(rules.quotas) | set(rules.lend)
    own: dict[tuple[str, Tier], int] = {}
    borrowed: dict[tuple[str, Tier], int] = {}
    lent: dict[tuple[str, Tier], int] = {}
    for r in records:
        if r.borrowed_from:
            _bump(borrowed, (r.team, r.tier))
            _bump(lent, (r.borrowed_from, r.tier))
        else:
            _bump(own, (r.team, r.tier))
    keys |= set(borrowed) | set(lent)
    usage = [{"team": team, "tier": tier.value, "nominal": rules.quotas.get((team, tier)),
              "lend": rules.lend.get((team, tier), 0), "own": own.get((team, tier), 0),
              "borrowed": borrowed.get((team, tier), 0), "lent": lent.get((team, tier), 0)}
             for team, tier in sorted(keys, key=lambda k: (k[0], k[1].value))]  # fmt: skip
    scores = CreditStore(registry.client, registry.url).scores()
    credit = [{"team": team, "score": score, "demoted": team in rules.credit_demoted}
              for team, score in sorted(scores.items())]  # fmt: skip
    return {
        "quotas": [{"team": team, "tier": tier.value, "gpus": n} for (team, tier), n in sorted(rules.quotas.items())],
        "usage": usage,
        "demoted": sorted(rules.demoted),
        "pre_approved": sorted(rules.pre_approved),
        "default_tiers": {team: tier.value for team, tier in sorted(rules.default_tier.items())},
        "credit": credit,
        "credit_demoted": sorted(rules.credit_demoted),
    }
