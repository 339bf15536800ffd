"""Quota policy speed: borrowing admission, reclaim and credit scoring (``routing.borrowing``, ``routing.credit``)
against the plain quota check of ``routing.admission`` as the same-run baseline.

Scenario (seeded): 50 teams × 5 tiers with quotas, half of them lending; 1,000 held jobs to release; 1,000 borrowed
jobs of which the lenders want some back; 50 teams with 100 strikes each.

Run: ``.venv/bin/python -m bench.quotas``; writes bench/results/quotas.{json,md}.
"""

from __future__ import annotations

import json
import random
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from routing import admission, borrowing
from routing.admission import AdmissionRules
from routing.borrowing import Borrowed, Ledger
from routing.credit import CreditPolicy, Strike, assess_all
from routing.tiers import Tier

RESULTS = Path(__file__).resolve().parent / "results"
TEAMS = [f"team{i:02d}" for i in range(50)]


def _world(seed: int = 7) -> tuple[AdmissionRules, Ledger, list[Any], list[Borrowed]]:
    rng = random.Random(seed)
    quotas = {(t, tier): rng.randint(0, 8) for t in TEAMS for tier in Tier}
    lend = {key: rng.randint(1, 4) for key in quotas if rng.random() < 0.5}
    own = {key: rng.randint(0, n + 2) for key, n in quotas.items()}
    lent = {key: rng.randint(0, n) for key, n in lend.items()}
    held = [(f"h{i}", rng.choice(TEAMS), rng.choice(list(Tier)), float(i), None) for i in range(1000)]
    borrowed = [Borrowed(f"b{i}", rng.choice(TEAMS), rng.choice(TEAMS), rng.choice(list(Tier)), rng.random() < 0.7,
                         rng.random() < 0.02, rng.uniform(0, 600), float(i)) for i in range(1000)]  # fmt: skip
    return AdmissionRules(quotas, lend=lend), Ledger(own, lent), held, borrowed


def _time(fn: Callable[[], object], reps: int) -> dict[str, float]:
    runs = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        runs.append((time.perf_counter() - start) * 1000)
    return {"median_ms": round(statistics.median(runs), 3), "max_ms": round(max(runs), 3)}


def main() -> dict[str, Any]:
    """Measure each rule and write the results."""
    rules, ledger, held, borrowed = _world()
    team, tier = "team03", Tier.HIGH
    usage = dict(ledger.own)
    strikes = {t: [Strike(float(i * 3600), "cancelled", f"{t}-{i}") for i in range(100)] for t in TEAMS}
    results = {
        "admit_plain_x1000": _time(lambda: [admission.admit(team, tier, None, 9, rules) for _ in range(1000)], 20),
        "admit_borrowing_x1000": _time(
            lambda: [borrowing.admit(team, tier, None, rules, ledger) for _ in range(1000)], 20
        ),
        "release_order_plain_1000_held": _time(lambda: admission.release_order(held, usage, rules), 20),
        "release_plan_borrowing_1000_held": _time(lambda: borrowing.release_plan(held, ledger, rules), 20),
        "reclaims_1000_borrowed": _time(lambda: borrowing.reclaims(rules, ledger, borrowed), 20),
        "credit_assess_50_teams_x100_strikes": _time(
            lambda: assess_all(strikes, frozenset(), 100 * 3600.0, CreditPolicy()), 20
        ),
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "quotas.json").write_text(json.dumps(results, indent=2) + "\n")
    rows = [f"| {name} | {r['median_ms']} | {r['max_ms']} |" for name, r in results.items()]
    (RESULTS / "quotas.md").write_text("# Quota policy speed (bench/quotas.py)\n\n| case | median ms | max ms |\n"
                                       "|---|---|---|\n" + "\n".join(rows) + "\n")  # fmt: skip
    return results


if __name__ == "__main__":
    print(json.dumps(main(), indent=2))
