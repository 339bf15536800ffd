"""routing/retention.py: what checkpoint GC deletes, given a listing, registry facts, manifests and ``now``."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from routing.retention import (
    Deletion,
    JobFacts,
    Manifest,
    Retention,
    checkpoint_seq,
    group_by_job,
    job_of,
    plan,
    submitted_at,
)

pytestmark = pytest.mark.unit

NOW = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)
POLICY = Retention(keep_last=3, finished_days=30)


def job_id(at: datetime, tail: str = "abcdef") -> str:
    return f"j{int(at.timestamp() * 1000):011x}{tail}"


OLD = job_id(NOW - timedelta(days=60))
YOUNG = job_id(NOW - timedelta(days=2), "123456")


def ckpt(job: str, seq: int, epoch: int = 0, batch: int = 0) -> str:
    return f"jobs/{job}/checkpoints/{seq:06d}-e{epoch}-b{batch}.pt"


def files(job: str) -> list[str]:
    """What a finished training job leaves in S3 besides checkpoints."""
    return [f"jobs/{job}/checkpoints/manifest.json", f"jobs/{job}/results/best.pt", f"jobs/{job}/attempts/t1.log"]


@pytest.mark.parametrize(
    ("key", "job", "seq"),
    [
        ("jobs/j1/checkpoints/000007-e3-b0.pt", "j1", 7),
        ("jobs/j1/checkpoints/000001-e-1-b4.pt", "j1", 1),  # inside epoch 0: epoch -1 on resume
        ("jobs/j1/checkpoints/1234567-e0-b0.pt", "j1", 1234567),  # past 999999 the number just grows
        ("jobs/j1/checkpoints/manifest.json", "j1", None),
        ("jobs/j1/checkpoints/000007-e3-b0.pt.upload", "j1", None),
        ("jobs/j1/results/best.pt", "j1", None),
        ("jobs/j1/probe/checkpoint.json", "j1", None),
        ("jobs/j1", None, None),  # no object under a job folder
        ("jobs//x", None, None),
        ("engines/abc/t4.engine", None, None),
        ("reports/sla/2026/03/10/120000.json", None, None),
    ],
)
def test_keys(key: str, job: str | None, seq: int | None) -> None:
    assert job_of(key) == job
    assert checkpoint_seq(key) == seq


def test_submitted_at_reads_the_id() -> None:
    assert submitted_at(OLD) == NOW - timedelta(days=60)
    assert submitted_at("j123") is None
    assert submitted_at("not-an-id") is None


def test_group_by_job_skips_other_prefixes() -> None:
    assert group_by_job(["jobs/a/x", "engines/e", "jobs/b/y", "jobs/a/z"]) == {"a": ["jobs/a/x", "jobs/a/z"],
                                                                                "b": ["jobs/b/y"]}  # fmt: skip


def test_a_job_finished_long_ago_loses_everything() -> None:
    # Given a job that finished 31 days ago and one that finished 29 days ago
    keys = [*files("jold"), ckpt("jold", 1), *files("jnew"), ckpt("jnew", 1)]
    jobs = {"jold": JobFacts(True, NOW - timedelta(days=31)), "jnew": JobFacts(True, NOW - timedelta(days=29))}
    # When GC plans
    out = plan(keys, jobs, {}, NOW, POLICY)
    # Then every object of the old one goes, with the reason, and nothing of the recent one
    assert [d.key for d in out] == sorted([*files("jold"), ckpt("jold", 1)])
    assert {d.reason for d in out} == {f"finished {(NOW - timedelta(days=31)).isoformat()}"}


def test_running_and_unfinished_jobs_keep_everything_but_old_checkpoints() -> None:
    # Given a running job that is 60 days old (finished_at unset) and a "finished" record without a time
    keys = [*files("jrun"), *files("jodd")]
    jobs = {"jrun": JobFacts(False, None), "jodd": JobFacts(True, None)}
    # Then nothing is deleted
    assert plan(keys, jobs, {}, NOW, POLICY) == []


def test_checkpoints_beyond_the_last_k_go_but_never_what_the_manifest_names_or_an_upload_in_flight() -> None:
    # Given checkpoints 1..9: the manifest (seq 8) names 8, 7, 6 and, as `previous` after a crash, 2; 9 is in flight
    keys = [ckpt("jr", n) for n in range(1, 10)] + files("jr")
    manifest = Manifest(seq=8, referenced=frozenset({ckpt("jr", 8), ckpt("jr", 7), ckpt("jr", 6), ckpt("jr", 2)}))
    # When GC keeps the newest 3
    out = plan(keys, {"jr": JobFacts(False)}, {"jr": manifest}, NOW, POLICY)
    # Then 1, 3, 4 and 5 go: 9, 8, 7 are the newest three, 6 and 2 are named, manifest and results stay
    assert out == [Deletion(ckpt("jr", n), "checkpoint beyond the newest 3") for n in (1, 3, 4, 5)]


def test_keep_last_larger_than_the_publisher_keeps_more() -> None:
    keys = [ckpt("jr", n) for n in range(1, 7)]
    manifest = Manifest(seq=6, referenced=frozenset({ckpt("jr", 6)}))
    out = plan(keys, {"jr": JobFacts(False)}, {"jr": manifest}, NOW, Retention(keep_last=5))
    assert [d.key for d in out] == [ckpt("jr", 1)]


def test_without_a_manifest_nothing_is_trimmed() -> None:
    keys = [ckpt("jr", n) for n in range(1, 7)]
    assert plan(keys, {"jr": JobFacts(False)}, {}, NOW, POLICY) == []


def test_unknown_prefixes_go_only_when_their_id_is_old() -> None:
    # Given objects of jobs the registry no longer knows: one 60 days old, one 2 days old, one without a readable id
    keys = [*files(OLD), *files(YOUNG), "jobs/manual-upload/thing.bin"]
    # When GC plans (no registry facts for any of them)
    out = plan(keys, {}, {}, NOW, POLICY)
    # Then only the old job's objects go
    assert [d.key for d in out] == sorted(files(OLD))
    assert out[0].reason.startswith("no registry record; submitted 2026-01-09")


def test_finished_days_is_the_policy() -> None:
    keys = files("ja")
    jobs = {"ja": JobFacts(True, NOW - timedelta(days=3))}
    assert plan(keys, jobs, {}, NOW, Retention(finished_days=7)) == []
    assert len(plan(keys, jobs, {}, NOW, Retention(finished_days=2))) == 3
