"""GPU sharing with real workers (``yoloq worker --share``): several jobs on one large GPU while their memory fits,
never beyond it, and a big job alone (docs/placement.md, GPU sharing)."""

from __future__ import annotations

import pytest

from bench.harness.stack import active_queues
from infra.cordon import CordonStore
from infra.share_ledger import ShareLedger
from routing.sharing import SharePolicy, margin_mib
from tasks.app import create_app
from tasks.budget import budget_preemptions
from tasks.records import JobRecord, parse_iso
from tasks.specs import ProbeSpec
from tasks.states import JobState
from tests.fleet import poll

pytestmark = pytest.mark.integration

CARD_MIB = 80 * 1024


def _probe(seconds: int, gb: float, tier: str = "medium") -> ProbeSpec:
    return ProbeSpec(seconds=seconds, tier=tier, team="ops", memory_gb=gb)


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


def _on(client, job_id: str, node_prefix: str) -> bool:
    record = client.job(job_id)
    return record.state is JobState.RUNNING and str(record.worker).startswith(node_prefix)


def test_a_job_blocked_by_scattered_memory_gets_a_gpu_cleared_by_moving_a_small_job(fleet, client, services,
                                                                                     supervised):  # fmt: skip
    # Given two shared 80 GB GPUs: GPU 0 runs two 24 GB low jobs (27 GB left), GPU 1 one (51.5 GB left; each job
    # needs 0.5 GB more for its CUDA context, and a shared GPU keeps a 4 GB margin)
    fleet.start("0:A100:80,1:A100:80", shared=(0, 1))
    host, cordons = services.settings.host(), CordonStore(client.rt.registry.client)
    app = create_app(services.settings)
    cordons.cordon(host, 1, "test: fill GPU 0 first", "test", "now")
    poll(lambda: active_queues(app, f"gpu1@{host}") == [], 30, "GPU 1's worker to stop taking work")
    first = [client.submit(_probe(30, 24, "low")) for _ in range(2)]
    poll(lambda: all(_on(client, h.job_id, "gpu0@") for h in first), 30, "two low jobs on GPU 0")
    cordons.uncordon(host, 1, "test", "now")
    cordons.cordon(host, 0, "test: then GPU 1", "test", "now")
    poll(lambda: active_queues(app, f"gpu0@{host}") == [], 30, "GPU 0's worker to stop taking work")
    third = client.submit(_probe(30, 24, "low"))
    poll(lambda: _on(client, third.job_id, "gpu1@"), 30, "the third low job on GPU 1")
    cordons.uncordon(host, 0, "test", "now")
    supervised()
    # When a 55 GB medium job arrives: it fits neither GPU, though 78.5 GB are free in all
    big = client.submit(_probe(3, 55, "medium"))
    record = big.wait(timeout_s=60)
    # Then the low job of GPU 1 moved to GPU 0 and the big job ran on GPU 1 before any low job ended (30 s each)
    assert record.state is JobState.SUCCEEDED, (record.state, record.error)
    assert record.attempts[-1].gpu == "1" and [e.type for e in record.events if e.type.startswith("defrag")] == [
        "defrag", "defrag-started"], record.events  # fmt: skip
    moved = client.job(third.job_id)
    assert [a.gpu for a in moved.attempts if a.started_at] == ["1", "0"], moved.events
    assert getattr(moved.preemptions[-1], "moved_to", "").endswith(f"{host}.0"), moved.preemptions
    assert budget_preemptions(moved) == []  # a move is not a trip back to the queue: no budget spent
    assert all(len(client.job(h.job_id).attempts) == 1 for h in first)  # the cheapest plan: one move
    # And no GPU ever held more than it has, less the margin, while shared
    done = [h.wait(timeout_s=120) for h in (*first, third)]
    assert all(r.state is JobState.SUCCEEDED for r in done), [(r.state, r.error) for r in done]
    runs = _runs([record, *done])
    assert parse_iso(str(record.attempts[-1].started_at)).timestamp() < min(end for _, end, *_ in _runs(done[:2]))
    margin = margin_mib(CARD_MIB, SharePolicy())
    for gpu in ("0", "1"):
        mine = [r for r in runs if r[3] == gpu]
        for start, _, mib, _ in mine:
            together = _together(mine, start)
            assert sum(together) + margin <= CARD_MIB or together == [mib], (gpu, together)


def test_a_packed_shared_gpu_is_cleared_for_a_higher_tier_job_that_fits_nowhere_else(fleet, client, supervised):
    # Given one shared 80 GB GPU packed with three 24 GB low jobs (2.5 GB left)
    fleet.start("0:A100:80", shared=(0,))
    low = [client.submit(_probe(30, 24, "low")) for _ in range(3)]
    poll(lambda: all(_on(client, h.job_id, "gpu0@") for h in low), 30, "three low jobs on GPU 0")
    supervised()
    # When a 60 GB high job arrives: one victim would not free enough, nor would two
    high = client.submit(_probe(2, 60, "high"))
    record = high.wait(timeout_s=60)
    # Then all three were requeued at once (a preemption each, for the high job), which ran before any low job ended
    assert record.state is JobState.SUCCEEDED, (record.state, record.error)
    done = [h.wait(timeout_s=120) for h in low]
    assert all(r.state is JobState.SUCCEEDED for r in done), [(r.state, r.error) for r in done]
    for r in done:
        (asked,) = [e for e in r.events if e.type == "preempt-requested"]
        assert getattr(asked, "for_job", "") == record.job_id and "requeued back to its queue" in asked.reason
        assert len(budget_preemptions(r)) == 1  # a requeue is a preemption: it spends the budget
    first_ends = [parse_iso(str(r.attempts[0].ended_at)).timestamp() for r in done]
    assert parse_iso(str(record.attempts[-1].started_at)).timestamp() >= max(first_ends)  # alone on the GPU
    assert parse_iso(str(record.attempts[-1].started_at)).timestamp() < min(
        parse_iso(str(r.attempts[0].started_at)).timestamp() + 30 for r in done)  # fmt: skip
