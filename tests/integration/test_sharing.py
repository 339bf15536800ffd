"""GPU sharing with real workers (``yoloq worker --share``): several jobs on one large GPU while their memory fits,
never beyond it, and a big job alone (docs/placement.md, GPU sharing)."""

from __future__ import annotations

import pytest

from infra.share_ledger import ShareLedger
from routing.sharing import SharePolicy, margin_mib
from tasks.records import JobRecord, parse_iso
from tasks.specs import ProbeSpec
from tasks.states import JobState
from tests.fleet import poll

pytestmark = pytest.mark.integration

CARD_MIB = 80 * 1024


def _probe(seconds: int, gb: float) -> ProbeSpec:
    return ProbeSpec(seconds=seconds, tier="medium", team="ops", memory_gb=gb)


def _runs(records: list[JobRecord]) -> list[tuple[float, float, int, str]]:
    out = []
    for r in records:
        for a in r.attempts:
            if a.started_at and a.ended_at:
                out.append((parse_iso(a.started_at).timestamp(), parse_iso(a.ended_at).timestamp(), r.memory_mib,
                            str(a.gpu)))  # fmt: skip
    return out


def _together(runs: list[tuple[float, float, int, str]], at: float) -> list[int]:
    """The memory of every attempt running at instant ``at``."""
    return [mib for start, end, mib, _ in runs if start <= at < end]


def test_a_shared_gpu_runs_jobs_together_while_their_memory_fits_and_a_big_one_alone(fleet, client):
    # Given one 80 GB GPU whose worker shares it
    fleet.start("0:A100:80", shared=(0,))
    # When four 20 GB jobs and a 70 GB job are submitted
    small = [client.submit(_probe(4, 20)) for _ in range(4)]
    big = client.submit(_probe(2, 70))
    records = [h.wait(timeout_s=120) for h in (*small, big)]
    assert all(r.state is JobState.SUCCEEDED for r in records), [(r.state, r.error) for r in records]
    runs = _runs(records)
    # Then three 20 GB jobs ran at once (3 × 20 + the 4 GiB margin fits 80; a fourth would not)
    peak = max(len(_together(runs, start)) for start, *_ in runs)
    assert peak == 3, runs
    # And at no instant did the jobs on the GPU need more than it has (less the margin when shared), the 70 GB job ran
    # alone, every attempt on GPU 0, and the ledger is empty once they ended
    margin = margin_mib(CARD_MIB, SharePolicy())
    for start, _, mib, gpu in runs:
        together = _together(runs, start)
        assert gpu == "0" and (sum(together) + margin <= CARD_MIB or together == [mib]), (together, runs)
    assert _together(runs, parse_iso(records[-1].attempts[-1].started_at).timestamp()) == [70 * 1024]
    host = str(records[0].worker).split("@")[1]
    poll(lambda: ShareLedger(client.registry.client).tenants(host, 0) == {}, 10, "the ledger to empty")
    # And the worker took only what fitted: a job is given back only when taken before its queues were narrowed
    backs = {r.job_id: [e.reason for e in client.job(r.job_id).events if e.type == "given-back"] for r in records}
    assert max(map(len, backs.values())) <= 2, backs  # without the narrowing: one every second the GPU is full


def test_a_gpu_that_does_not_share_runs_one_job_at_a_time(fleet, client):
    # The same jobs on the same card without --share (the baseline): never two at once
    fleet.start("0:A100:80")
    records = [h.wait(timeout_s=120) for h in [client.submit(_probe(2, 20)) for _ in range(3)]]
    assert all(r.state is JobState.SUCCEEDED for r in records)
    runs = _runs(records)
    assert max(len(_together(runs, start)) for start, *_ in runs) == 1
