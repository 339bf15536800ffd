"""What checkpoint garbage collection deletes from S3, decided from a listing and ``now`` (pure).

Rules, in order, for the objects under ``jobs/{job_id}/``:

1. A job that finished (succeeded, failed, cancelled) more than ``finished_days`` ago loses every object.
2. A prefix whose job is not in the registry at all loses every object once its id is older than ``finished_days``
   (ids start with their submit time in milliseconds); a prefix without a readable id is never touched.
3. Otherwise only checkpoint files (``checkpoints/{seq:06d}-e{E}-b{B}.pt``) are trimmed: the ``keep_last`` newest
   stay, and so does anything the manifest names (``newest``, ``previous``, ``kept``: a resume falls back through
   them) or numbers above the manifest's ``seq`` (an upload in flight, published when the manifest is rewritten).
   The checkpoint publisher already keeps 3 (``tasks.checkpoints.DEFAULT_KEEP``); this collects what a crash between
   upload and manifest left behind.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

JOBS_PREFIX = "jobs/"
_CHECKPOINT = re.compile(r"^jobs/[^/]+/checkpoints/(\d{6,})-e-?\d+-b\d+\.pt$")
_JOB_ID = re.compile(r"^j([0-9a-f]{11})[0-9a-f]{6}$")


@dataclass(frozen=True, slots=True)
class Retention:
    """How much to keep: the newest ``keep_last`` checkpoints per job, finished jobs for ``finished_days``."""

    keep_last: int = 3
    finished_days: float = 30.0


@dataclass(frozen=True, slots=True)
class JobFacts:
    """What the registry says about a job: whether it finished, and when."""

    finished: bool
    finished_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class Manifest:
    """The checkpoint manifest of a job: its sequence number and every key it references."""

    seq: int
    referenced: frozenset[str]


@dataclass(frozen=True, slots=True)
class Deletion:
    """One object to delete, and why."""

    key: str
    reason: str


def job_of(key: str) -> str | None:
    """The job id of an object key under ``jobs/``, or None."""
    if not key.startswith(JOBS_PREFIX):
        return None
    job_id, sep, _ = key[len(JOBS_PREFIX) :].partition("/")
    return job_id if sep and job_id else None


def checkpoint_seq(key: str) -> int | None:
    """The sequence number of a checkpoint file's key, or None for any other object."""
    match = _CHECKPOINT.match(key)
    return int(match.group(1)) if match else None


def submitted_at(job_id: str) -> datetime | None:
    """When a job was submitted, read from its id (``j`` + 11 hex digits of epoch ms + 6 random), or None."""
    match = _JOB_ID.match(job_id)
    return datetime.fromtimestamp(int(match.group(1), 16) / 1000, UTC) if match else None


def group_by_job(keys: Iterable[str]) -> dict[str, list[str]]:
    """Object keys per job id (keys outside ``jobs/{id}/`` are left out)."""
    out: dict[str, list[str]] = {}
    for key in keys:
        job_id = job_of(key)
        if job_id is not None:
            out.setdefault(job_id, []).append(key)
    return out


def _expired(job_id: str, facts: JobFacts | None, cutoff: datetime) -> str | None:
    """Why every object of the job goes, or None when the job's objects stay."""
    if facts is None:
        born = submitted_at(job_id)
        return f"no registry record; submitted {born.isoformat()}" if born is not None and born < cutoff else None
    if facts.finished and facts.finished_at is not None and facts.finished_at < cutoff:
        return f"finished {facts.finished_at.isoformat()}"
    return None


def _trim(keys: list[str], manifest: Manifest | None, keep_last: int) -> list[Deletion]:
    """Checkpoint files beyond the newest ``keep_last`` that the manifest neither names nor is about to."""
    numbered = sorted(((seq, k) for k in keys if (seq := checkpoint_seq(k)) is not None), reverse=True)
    seq = manifest.seq if manifest is not None else 0
    named = manifest.referenced if manifest is not None else frozenset()
    return [
        Deletion(key, f"checkpoint beyond the newest {keep_last}")
        for n, key in numbered[keep_last:]
        if key not in named and n <= seq
    ]


def plan(
    keys: Iterable[str],
    jobs: Mapping[str, JobFacts],
    manifests: Mapping[str, Manifest],
    now: datetime,
    policy: Retention,
) -> list[Deletion]:
    """Every object to delete, ordered by key; ``jobs`` lacks ids the registry does not know."""
    cutoff = now - timedelta(days=policy.finished_days)
    out: list[Deletion] = []
    for job_id, job_keys in sorted(group_by_job(keys).items()):
        reason = _expired(job_id, jobs.get(job_id), cutoff)
        if reason is not None:
            out += [Deletion(k, reason) for k in sorted(job_keys)]
        else:
            out += _trim(job_keys, manifests.get(job_id), policy.keep_last)
    return sorted(out, key=lambda d: d.key)
