"""The trust ledger's upkeep against real Redis and SeaweedFS: checkpoint GC forgets the record of every object it
deletes (and of yoloq's own objects gone for over an hour) but never an operator's import; ``yoloq weights revoke``
finds a record by the name ``weights trust`` gave it, a relative path included."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest

from infra.s3 import S3Store
from infra.trusted_files import TrustedFiles
from routing.retention import Retention
from tasks import housekeeping
from tasks.checkpoints import CheckpointStore
from tasks.records import iso, utc_now
from tasks.specs import ProbeSpec
from tasks.trust import TrustedFile
from tests.fleet import clean_redis

pytestmark = pytest.mark.integration


def _publish(store: S3Store, ledger: TrustedFiles, job_id: str, tmp_path: Path, count: int) -> CheckpointStore:
    """``count`` checkpoints published the way a job does, each recorded in the real ledger."""
    checkpoints = CheckpointStore(store, job_id, ledger=ledger)
    for n in range(count):
        local = tmp_path / f"{job_id}-{n}.pt"
        local.write_bytes(b"checkpoint %d of %s" % (n, job_id.encode()))
        checkpoints.publish(local, epoch=n, batch=0, verify=lambda _: None)
    return checkpoints


def _planted_record(store: S3Store, ledger: TrustedFiles, key: str, source: str, age: timedelta) -> str:
    """A record of ``key`` written ``age`` ago by ``source``, with no object behind it."""
    uri = store.uri(key)
    ledger.record(TrustedFile(uri, "0" * 64, 1, source, "test", iso(utc_now() - age)))
    return uri


def test_checkpoint_gc_forgets_the_records_of_what_it_deletes(services, client, tmp_path):
    # Given a live job with 5 checkpoints published (the job already forgot the 2 it rotated out) and 2 leftovers
    # that a crash left recorded; a job finished 40 days ago and one finished today, each with a checkpoint and
    # trained weights; and records of objects that are gone: yoloq's old ones, a fresh one, an operator's import
    clean_redis(services)
    store, ledger = S3Store(services.settings), client.trusted_files
    live = client.submit(ProbeSpec(seconds=1, tier="batch", team="ops")).job_id
    kept_live = {store.uri(k) for k in _publish(store, ledger, live, tmp_path, 5).manifest()["kept"]}
    leftovers = set()
    for n in (1, 2):
        key = f"jobs/{live}/checkpoints/00000{n}-e{n - 1}-b0.pt"
        store.put_bytes(key, b"x")
        leftovers.add(_planted_record(store, ledger, key, "checkpoint", timedelta(0)))
    assert {e.location for e in ledger.entries()} == kept_live | leftovers
    finished = {}
    for job_id in (client.submit(ProbeSpec(seconds=1, tier="batch", team="ops")).job_id for _ in range(2)):
        client.cancel(job_id)
        checkpoints = _publish(store, ledger, job_id, tmp_path, 1)
        (tmp_path / "best.pt").write_bytes(b"weights of " + job_id.encode())
        result = checkpoints.publish_result("best.pt", tmp_path / "best.pt")
        finished[job_id] = {store.uri(k) for k in checkpoints.manifest()["kept"]} | {result}
    old, recent = finished
    client.rt.registry.update(old, {"finished_at": iso(utc_now() - timedelta(days=40))})
    gone = "jobs/j00000000000000000/checkpoints/000009-e8-b0.pt"
    stale = _planted_record(store, ledger, gone, "checkpoint", timedelta(hours=2))
    stale_result = _planted_record(store, ledger, "jobs/j00000000000000001/results/best.pt", "trained",
                                   timedelta(days=3))  # fmt: skip
    fresh = _planted_record(store, ledger, "jobs/j00000000000000002/checkpoints/000001-e0-b0.pt", "checkpoint",
                            timedelta(minutes=5))  # fmt: skip
    imported = _planted_record(store, ledger, "jobs/j00000000000000003/results/best.pt", "operator", timedelta(days=3))
    elsewhere = _planted_record(store, ledger, "models/m.pt", "trained", timedelta(days=3))
    # When checkpoint GC runs (keep 3, finished jobs for 30 days)
    summary = housekeeping.collect_garbage(client.rt.registry, store, Retention(3, 30), utc_now())
    # Then the objects it deleted have no record left: the leftovers and everything of the old finished job
    assert {store.uri(k) for k, _, _ in store.list_objects(f"jobs/{live}/checkpoints/") if "manifest" not in k} == (
        kept_live
    )
    assert not store.list_objects(f"jobs/{old}/")
    remaining = {e.location for e in ledger.entries()}
    assert not remaining & (leftovers | finished[old]), remaining & (leftovers | finished[old])
    # And yoloq's records of objects long gone went too, while a fresh one (its upload may postdate the listing),
    # an operator's import and a record outside jobs/ stayed, as did every record of what is still stored
    assert stale not in remaining and stale_result not in remaining and summary["orphaned_records"] == 2
    assert remaining == kept_live | finished[recent] | {fresh, imported, elsewhere}


def _cli(services, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """The real ``yoloq`` command, run from ``cwd`` (relative paths are the point)."""
    return subprocess.run([sys.executable, "-m", "yoloq", *args], capture_output=True, text=True, timeout=60,
                          env=services.env(), cwd=cwd, check=False)  # fmt: skip


def test_weights_revoke_resolves_a_path_as_weights_trust_does(services, client, tmp_path):
    # Given weights an operator trusted by a relative path (recorded under the absolute one)
    clean_redis(services)
    (tmp_path / "x.pt").write_bytes(b"operator weights")
    trusted = _cli(services, tmp_path, "weights", "trust", "./x.pt", "--json")
    assert trusted.returncode == 0, trusted.stderr
    location = json.loads(trusted.stdout)["location"]
    assert location == str((tmp_path / "x.pt").resolve())
    # When the operator revokes it by the same relative path (the file deleted meanwhile: revoking must still work)
    (tmp_path / "x.pt").unlink()
    revoked = _cli(services, tmp_path, "weights", "revoke", "./x.pt")
    # Then the record is gone, audited under its recorded name
    assert revoked.returncode == 0, revoked.stderr
    assert revoked.stdout.strip() == f"revoked {location}"
    assert client.trusted_files.lookup(location) is None
    entry = next(e for e in client.audit(limit=20) if e["type"].startswith("weights-"))
    assert (entry["type"], entry["location"]) == ("weights-revoked", location)
    # And a location with no record is still refused with one line, changing nothing
    again = _cli(services, tmp_path, "weights", "revoke", "./x.pt")
    assert again.returncode != 0 and "is not a recorded weights file" in again.stderr
    assert "Traceback" not in again.stderr
