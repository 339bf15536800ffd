"""Quota borrowing and reclaim (routing/borrowing.py), table-driven: who lends, what is held, what is taken back."""

from __future__ import annotations

import pytest

from routing.admission import AdmissionRules
from routing.borrowing import Borrowed, Ledger, Reclaim, admit, lender_for, reclaim_order, reclaims, release_plan
from routing.tiers import Tier

pytestmark = pytest.mark.unit

C, H, L = Tier.CRITICAL, Tier.HIGH, Tier.LOW
RULES = AdmissionRules(
    quotas={("vision", H): 4, ("risk", H): 2, ("ops", H): 3, ("lab", H): 0, ("vision", L): 1},
    lend={("vision", H): 2, ("risk", H): 2, ("ops", H): 0, ("vision", L): 1},
)


@pytest.mark.parametrize(
    ("team", "own", "lent", "expected"),
    [
        ({"lab"}, {}, {}, "vision"),  # vision has 4 spare, risk 2: most spare first
        ({"lab"}, {("vision", H): 3}, {}, "risk"),  # vision 1 spare, risk 2
        ({"lab"}, {("vision", H): 2}, {}, "risk"),  # both 2 spare: by name
        ({"lab"}, {}, {("vision", H): 2}, "risk"),  # vision lent its limit
        ({"lab"}, {("vision", H): 4, ("risk", H): 2}, {}, ""),  # nobody has spare quota
        ({"lab"}, {("vision", H): 2, ("risk", H): 1}, {("vision", H): 2, ("risk", H): 1}, ""),  # spare all lent out
        ({"vision"}, {("vision", H): 4}, {}, "risk"),  # never from itself
        ({"lab"}, {("risk", H): 2, ("vision", H): 4}, {}, ""),  # ops has spare but lends nothing
    ],
)
def test_lender_for(team, own, lent, expected):
    assert lender_for(next(iter(team)), H, RULES, Ledger(own, lent)) == expected


@pytest.mark.parametrize(
    ("team", "tier", "approved", "own", "lent", "held", "lender", "reason"),
    [
        ("vision", H, None, {("vision", H): 3}, {}, False, "", ""),  # under its own quota
        ("lab", H, None, {}, {}, False, "vision",
         "borrowed from team vision: team lab has 0 of 0 high-tier GPUs in use; vision now lends 1 of at most 2"),
        ("lab", H, None, {("vision", H): 4, ("risk", H): 2}, {}, True, "",
         "over quota: team lab has 0 of 0 high-tier GPUs in use; no team lends unused quota at this tier"),
        ("vision", L, None, {("vision", L): 1}, {}, True, "",  # the only lender at low is itself
         "over quota: team vision has 1 of 1 low-tier GPUs in use; no team lends unused quota at this tier"),
        ("lab", C, None, {}, {}, True, "", "awaiting approval: critical jobs need `yoloq approve`"),  # approval first
        ("other", H, None, {("other", H): 99}, {}, False, "", ""),  # no quota: unlimited, nothing to borrow
    ],
)  # fmt: skip
def test_admit_borrows_when_over_its_own_quota(team, tier, approved, own, lent, held, lender, reason):
    verdict = admit(team, tier, approved, RULES, Ledger(own, lent))
    assert (verdict.held, verdict.borrowed_from, verdict.reason) == (held, lender, reason)


def test_release_plan_counts_each_loan_for_the_next_release():
    rules = AdmissionRules(quotas={("vision", H): 2, ("lab", H): 0}, lend={("vision", H): 1})
    held = [("b", "lab", H, 2.0, None), ("a", "lab", H, 1.0, None), ("v", "vision", H, 3.0, None)]
    plan = release_plan(held, Ledger({("vision", H): 0}), rules)
    # the oldest lab job borrows vision's one lendable GPU; the next finds the limit reached; vision's own job goes
    assert [(job, v.borrowed_from) for job, v in plan] == [("a", "vision"), ("v", "")]


def test_ledger_admitted_and_spare():
    ledger = Ledger().admitted("lab", H, "vision").admitted("vision", H, "")
    assert (ledger.own, ledger.lent) == ({("vision", H): 1}, {("vision", H): 1})
    assert ledger.spare("vision", H, RULES) == 2 and ledger.spare("nobody", H, RULES) == 0


def _b(job_id: str, *, lender: str = "vision", running: bool = False, frozen: bool = False, lost: float = 0.0,
       at: float = 0.0, tier: Tier = H) -> Borrowed:  # fmt: skip
    return Borrowed(job_id, "lab", lender, tier, running, frozen, lost, at)


RECLAIM_RULES = AdmissionRules(quotas={("vision", H): 2, ("risk", H): 1}, lend={("vision", H): 2, ("risk", H): 0})


@pytest.mark.parametrize(
    ("own", "lent", "borrowed", "expected"),
    [
        # the lender uses none of its own quota: nothing to take back
        ({}, {("vision", H): 2}, [_b("x"), _b("y")], []),
        # it admitted one job of its own over 2 lent: one loan back, a queued job before a running one
        ({("vision", H): 1}, {("vision", H): 2}, [_b("r", running=True), _b("q")], ["q"]),
        # both running: least work lost first
        ({("vision", H): 1}, {("vision", H): 2}, [_b("r1", running=True, lost=50), _b("r2", running=True, lost=5)],
         ["r2"]),
        # equal work lost: the most recent loan first, then job id
        ({("vision", H): 1}, {("vision", H): 2}, [_b("old", at=1.0), _b("new", at=9.0)], ["new"]),
        ({("vision", H): 2}, {("vision", H): 2}, [_b("b"), _b("a")], ["a", "b"]),
        # a frozen borrower is protected: the next one goes
        ({("vision", H): 1}, {("vision", H): 2}, [_b("f", frozen=True), _b("g", running=True)], ["g"]),
        # a lending limit lowered below what is lent: the excess goes back
        ({}, {("risk", H): 1}, [_b("k", lender="risk")], ["k"]),
    ],
)  # fmt: skip
def test_reclaims(own, lent, borrowed, expected):
    done = reclaims(RECLAIM_RULES, Ledger(own, lent), borrowed)
    assert [r.job_id for r in done] == expected


def test_reclaim_reasons_name_the_lender_and_why():
    done = reclaims(RECLAIM_RULES, Ledger({("vision", H): 1}, {("vision", H): 2, ("risk", H): 1}),
                    [_b("q", running=True), _b("k", lender="risk")])  # fmt: skip
    assert done == [
        Reclaim("k", "risk", False, "reclaim: team risk needs its quota back (lent 1 high-tier GPUs and now lends at "
                "most 0); team lab's job gives its loan back"),
        Reclaim("q", "vision", True, "reclaim: team vision needs its quota back (uses 1 of its 2 high-tier GPUs and "
                "lent 2); team lab's job gives its loan back"),
    ]  # fmt: skip


def test_reclaim_order_is_total():
    jobs = [_b("b", running=True, lost=1), _b("a", running=True, lost=1), _b("c"), _b("d", running=True, lost=0)]
    assert [j.job_id for j in sorted(jobs, key=reclaim_order)] == ["c", "d", "a", "b"]


# --- quotas count GPUs: a gang of K takes K of its team's (or a lender's) GPUs ---
def test_a_gang_needs_k_gpus_of_quota_on_its_own_or_from_one_lender() -> None:
    from routing.admission import admit as plain_admit

    rules = AdmissionRules(quotas={("vision", H): 4, ("lab", H): 1, ("risk", H): 4}, lend={("risk", H): 2})
    # own quota: 2 of 4 in use, a gang of 2 fits, a gang of 3 does not (plain admission says so too)
    assert not admit("vision", H, None, rules, Ledger(own={("vision", H): 2}), gpus=2).held
    held = plain_admit("vision", H, None, 2, AdmissionRules(quotas={("vision", H): 4}), gpus=3)
    assert held.held and held.reason.endswith("has 2 of 4 high-tier GPUs in use; this job needs 3")
    # lab (quota 1, idle) borrows a gang of 2 from risk (lends up to 2), never a gang of 3
    verdict = admit("lab", H, None, rules, Ledger(), gpus=2)
    assert (verdict.held, verdict.borrowed_from) == (
        False,
        "risk",
    ) and "risk now lends 2 of at most 2" in verdict.reason
    assert admit("lab", H, None, rules, Ledger(), gpus=3).held
    assert lender_for("lab", H, rules, Ledger(own={("risk", H): 3}), gpus=2) == ""  # risk has 1 spare only


def test_releases_count_a_gang_as_k_and_reclaims_free_k_at_once() -> None:
    rules = AdmissionRules(quotas={("vision", H): 3})
    held = [("g", "vision", H, 1.0, None), ("j", "vision", H, 2.0, None), ("k", "vision", H, 3.0, None)]
    assert [j for j, _ in release_plan(held, Ledger(), rules, {"g": 2})] == ["g", "j"]
    assert [j for j, _ in release_plan(held, Ledger(), rules)] == ["g", "j", "k"]
    # risk lent 3 GPUs (a gang of 2 and a single job) and needs 2 back: the gang alone is enough
    ledger = Ledger(own={("risk", H): 1}, lent={("risk", H): 3})
    rules = AdmissionRules(quotas={("risk", H): 2}, lend={("risk", H): 3})
    loans = [
        Borrowed("gang", "lab", "risk", H, borrowed_at=9.0, gpus=2),
        Borrowed("one", "lab", "risk", H, borrowed_at=5.0),
    ]
    assert [r.job_id for r in reclaims(rules, ledger, loans)] == ["gang"]
    # a single job borrowed later goes first (rule 3's order) and frees only 1 of the 2: the gang goes too
    later = [
        Borrowed("gang", "lab", "risk", H, borrowed_at=1.0, gpus=2),
        Borrowed("one", "lab", "risk", H, borrowed_at=5.0),
    ]
    assert [r.job_id for r in reclaims(rules, ledger, later)] == ["one", "gang"]
