"""routing/resend.py: a queued job whose message is nowhere is resent only after two sweeps and the grace."""

from __future__ import annotations

import pytest

from routing.resend import Waiting, unsent

pytestmark = pytest.mark.unit

NOW, GRACE = 1_000.0, 30.0


def _w(job: str, task: str, age_s: float) -> Waiting:
    return Waiting(job_id=job, task_id=task, since_ts=NOW - age_s)


@pytest.mark.parametrize(
    ("waiting", "in_broker", "suspects", "resend", "next_suspects"),
    [
        # message present: nothing to do, and a present job stops being a suspect
        ([_w("j1", "t1", 60)], {"t1"}, frozenset({"j1"}), [], frozenset()),
        # missing for the first time: suspected, not resent
        ([_w("j1", "t1", 60)], set(), frozenset(), [], frozenset({"j1"})),
        # missing twice in a row: resent, no longer a suspect
        ([_w("j1", "t1", 60)], set(), frozenset({"j1"}), ["j1"], frozenset()),
        # younger than the grace (a publish may be in flight): neither
        ([_w("j1", "t1", 5)], set(), frozenset({"j1"}), [], frozenset()),
        # exactly at the grace counts as old enough
        ([_w("j1", "t1", GRACE)], set(), frozenset({"j1"}), ["j1"], frozenset()),
        # the broker holds an older attempt's task, not the current one: still missing
        ([_w("j1", "t2", 60)], {"t1"}, frozenset({"j1"}), ["j1"], frozenset()),
        # a suspect that left the queued state (started, cancelled) is forgotten
        ([], set(), frozenset({"j1"}), [], frozenset()),
        # several: sorted, each on its own sweep count
        (
            [_w("j3", "t3", 60), _w("j1", "t1", 60), _w("j2", "t2", 60), _w("j4", "t4", 60)],
            {"t4"},
            frozenset({"j1", "j3", "j4"}),
            ["j1", "j3"],
            frozenset({"j2"}),
        ),
    ],
    ids=["present", "first-miss", "second-miss", "young", "at-grace", "stale-task", "gone", "several"],
)
def test_unsent(waiting, in_broker, suspects, resend, next_suspects) -> None:  # type: ignore[no-untyped-def]
    assert unsent(waiting, in_broker, suspects, NOW, GRACE) == (resend, next_suspects)
