"""Who may join a shared GPU (tasks/share_attempt.py over routing.sharing): the alone rule, the margin, four at most."""

from __future__ import annotations

import pytest

from tasks.share_attempt import joins

pytestmark = pytest.mark.unit

CARD = 80 * 1024  # margin: 5 % = 4096 MiB


@pytest.mark.parametrize(
    ("others", "need", "ok"),
    [
        ([], CARD, True),  # alone: the whole card, no margin (the whole-GPU rule)
        ([], CARD + 1, False),
        ([20480, 20480], 20480, True),  # 61440 + 4096 <= 81920
        ([20480, 20480, 20480], 20480, False),  # 81920 + 4096 > 81920
        ([20480], 57344, True),  # exactly up to the margin
        ([20480], 57345, False),
        ([1024, 1024, 1024], 1024, True),  # four tenants
        ([1024, 1024, 1024, 1024], 1024, False),  # a fifth never, however small
    ],
)
def test_a_job_joins_a_shared_gpu_only_while_every_need_and_the_margin_fit(
    others: list[int], need: int, ok: bool
) -> None:
    assert joins(CARD, others, need) is ok
