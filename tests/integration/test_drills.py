"""Issue 17: every reliability drill at its quick size (``python -m bench.drills --quick NAME``), each on its own
real stack: the fast part of ``make drill`` that ``make test`` runs. A drill passes when nothing was lost or
duplicated and none of its invariants broke; its row (bench/results/drill_NAME_quick.json) says which one did."""

from __future__ import annotations

import pytest

from bench.drills.__main__ import DRILLS, run_one

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("name", list(DRILLS))
def test_the_quick_drill_loses_and_duplicates_nothing(name: str) -> None:
    outcome = run_one(name, quick=True)
    assert outcome.jobs > 0, outcome
    assert (outcome.lost, outcome.duplicated, outcome.problems) == (0, 0, []), outcome
