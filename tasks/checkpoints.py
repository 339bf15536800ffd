"""Checkpoints in S3 behind a per-job manifest: a partial or corrupt upload never becomes ``newest``.

Layout (documented in docs/architecture.md)::

    jobs/{job_id}/checkpoints/manifest.json           {"seq", "newest", "previous", "kept": [...]}
    jobs/{job_id}/checkpoints/{seq:06d}-e{epoch}-b{batch}.pt

Publishing copies the local file first (the trainer rewrites ``last.pt`` in place), checks it is non-empty and
loadable, uploads the copy under a fresh key, checks the size S3 reports, records its sha256 in the trust ledger
(:mod:`tasks.trust`), and only then rewrites the manifest (one PUT, atomic in S3). Fetching tries ``newest``, then
``previous``, then any older kept entry, verifying size, sha256 and loadability; every fallback is reported so the
job's history says which checkpoint it resumed from and why. The manifest's sha256 lives in the bucket, so whoever
can write there can rewrite it: a checkpoint is loaded (unpickled) only when the ledger's record for its key, which
lives in Redis, matches the downloaded copy. Trained weights under ``results/`` follow the same rule
(:meth:`CheckpointStore.publish_result`, :meth:`CheckpointStore.fetch_result`).
"""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from infra.ports import ObjectStore
from tasks.errors import CheckpointError, StorageError
from tasks.records import iso, utc_now
from tasks.trust import MemoryLedger, TrustedFile, TrustedPath, TrustLedger, sha256_of, verified

Verify = Callable[[Path], None]  # raises CheckpointError when the file is not a usable checkpoint
DEFAULT_KEEP = 3


@dataclass(frozen=True)
class CheckpointRef:
    """One published checkpoint: where it is and what it must hash to."""

    key: str
    epoch: int
    batch: int
    sha256: str
    size: int
    at: str

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CheckpointRef:
        """Parse a manifest entry, or raise CheckpointError when it is malformed."""
        try:
            return cls(
                key=str(data["key"]),
                epoch=int(data["epoch"]),
                batch=int(data["batch"]),
                sha256=str(data["sha256"]),
                size=int(data["size"]),
                at=str(data["at"]),
            )
        except (KeyError, TypeError, ValueError) as err:
            raise CheckpointError(f"malformed checkpoint manifest entry {data!r}: {err}") from None


@dataclass(frozen=True)
class Fetched:
    """A verified local checkpoint (None when none is usable) and notes on every newer one that was skipped."""

    path: TrustedPath | None
    ref: CheckpointRef | None
    skipped: tuple[str, ...]


class CheckpointStore:
    """The checkpoints of one job in an object store; a single writer per job is guaranteed by the job's lease.

    Without a ``ledger`` it trusts only what this very object published (unit tests; readers of the manifest)."""

    def __init__(
        self, store: ObjectStore, job_id: str, keep: int = DEFAULT_KEEP, ledger: TrustLedger | None = None
    ) -> None:
        self.store, self.job_id, self.keep = store, job_id, max(2, keep)
        self.ledger: TrustLedger = ledger if ledger is not None else MemoryLedger()
        self.prefix = f"jobs/{job_id}/checkpoints/"
        self.manifest_key = self.prefix + "manifest.json"

    def results_key(self, name: str) -> str:
        """Where a result artefact of this job lives (``jobs/{id}/results/{name}``)."""
        return f"jobs/{self.job_id}/results/{name}"

    def manifest(self) -> dict[str, Any]:
        """The manifest as stored, or an empty one; a manifest that is not a JSON object is a CheckpointError."""
        try:
            data = self.store.get_json(self.manifest_key)
        except ValueError as err:
            raise CheckpointError(f"checkpoint manifest of {self.job_id} is not JSON: {err}") from None
        if data is None:
            return {"seq": 0, "newest": None, "previous": None, "kept": []}
        if not isinstance(data, dict):
            raise CheckpointError(f"checkpoint manifest of {self.job_id} is not an object")
        return data

    def publish(self, local: Path, epoch: int, batch: int, verify: Verify) -> CheckpointRef:
        """Upload ``local`` as the newest checkpoint; the manifest moves only after the upload is verified."""
        copy = local.with_name(local.name + ".upload")
        shutil.copyfile(local, copy)
        try:
            return self.publish_copy(copy, epoch, batch, verify)
        finally:
            copy.unlink(missing_ok=True)

    def publish_copy(self, copy: Path, epoch: int, batch: int, verify: Verify) -> CheckpointRef:
        """:meth:`publish` for a private copy nobody writes to any more (the caller removes it); safe to call again
        after a failure: each call uploads under the manifest's next key, and only a finished one moves it."""
        size = copy.stat().st_size
        if size == 0:
            raise CheckpointError(f"refusing to publish empty checkpoint {copy}")
        verify(copy)
        digest = sha256_of(copy)
        manifest = self.manifest()
        seq = int(manifest.get("seq", 0)) + 1
        key = f"{self.prefix}{seq:06d}-e{epoch}-b{batch}.pt"
        stored = self.store.put_file(key, copy)
        if stored != size:
            raise CheckpointError(f"upload of {key} stored {stored} bytes, expected {size}")
        ref = CheckpointRef(key=key, epoch=epoch, batch=batch, sha256=digest, size=size, at=iso(utc_now()))
        self._trust(key, digest, size, "checkpoint", ref.at)  # before the manifest names it: never unrecorded
        self._advance(manifest, seq, ref)
        return ref

    def _trust(self, key: str, digest: str, size: int, source: str, at: str) -> None:
        self.ledger.record(TrustedFile(self.store.uri(key), digest, size, source, f"job {self.job_id}", at))

    def publish_result(self, name: str, local: Path) -> str:
        """Upload trained weights to ``results/{name}`` and record their sha256, so that a later attempt or an export
        job may load them; returns their URI. The trainer writes them only between callbacks, and were it to change
        them mid-upload the record would merely refuse the object (it fails safe)."""
        digest, size, key = sha256_of(local), local.stat().st_size, self.results_key(name)
        stored = self.store.put_file(key, local)
        if stored != size:
            raise CheckpointError(f"upload of {key} stored {stored} bytes, expected {size}")
        self._trust(key, digest, size, "trained", iso(utc_now()))
        return self.store.uri(key)

    def fetch_result(self, name: str, target: Path) -> TrustedPath | None:
        """Download ``results/{name}`` when it exists, checked against its record (CheckpointError when it fails)."""
        uri = self.store.uri(self.results_key(name))
        if self.ledger.lookup(uri) is None or not self.store.get_file(self.results_key(name), target):
            return None
        try:
            return verified(target, uri, self.ledger, CheckpointError)
        except CheckpointError:
            target.unlink(missing_ok=True)
            raise

    def _advance(self, manifest: dict[str, Any], seq: int, ref: CheckpointRef) -> None:
        kept = [ref.key] + [k for k in manifest.get("kept", []) if isinstance(k, str)]
        entries = manifest.get("entries", {})
        entries = {k: v for k, v in entries.items() if k in kept[: self.keep]} if isinstance(entries, dict) else {}
        entries[ref.key] = asdict(ref)
        self.store.put_json(
            self.manifest_key,
            {"seq": seq, "newest": asdict(ref), "previous": manifest.get("newest"), "kept": kept[: self.keep],
             "entries": entries},
        )  # fmt: skip
        for old in kept[self.keep :]:
            with contextlib.suppress(StorageError):  # the manifest has moved on; checkpoint GC removes a leftover
                self.store.delete(old)
        self.ledger.forget([self.store.uri(old) for old in kept[self.keep :]])

    def candidates(self) -> list[CheckpointRef]:
        """Newest first: the manifest's newest, previous, then older kept entries (duplicates removed)."""
        manifest = self.manifest()
        raw = [manifest.get("newest"), manifest.get("previous")]
        entries = manifest.get("entries", {})
        if isinstance(entries, dict):
            raw += [entries.get(k) for k in manifest.get("kept", []) if isinstance(k, str)]
        seen: set[str] = set()
        refs = []
        for item in raw:
            if isinstance(item, dict) and item.get("key") not in seen:
                ref = CheckpointRef.from_dict(item)
                seen.add(ref.key)
                refs.append(ref)
        return refs

    def fetch(self, dest: Path, verify: Verify) -> Fetched:
        """Download the newest checkpoint that verifies; with none usable the job restarts, and the notes say why."""
        skipped: list[str] = []
        for ref in self.candidates():
            target = dest / Path(ref.key).name
            try:
                self._download(ref, target, verify)
            except CheckpointError as err:
                target.unlink(missing_ok=True)
                skipped.append(f"{ref.key}: {err}")
                continue
            return Fetched(path=TrustedPath(target), ref=ref, skipped=tuple(skipped))
        return Fetched(path=None, ref=None, skipped=tuple(skipped))

    def _download(self, ref: CheckpointRef, target: Path, verify: Verify) -> None:
        uri = self.store.uri(ref.key)
        if self.ledger.lookup(uri) is None:  # never even downloaded
            raise CheckpointError("yoloq has no record of writing it: refused, not loaded")
        if not self.store.get_file(ref.key, target):
            raise CheckpointError("missing from the store")
        size = target.stat().st_size
        if size != ref.size:
            raise CheckpointError(f"size {size} != recorded {ref.size}")
        digest = sha256_of(target)
        if digest != ref.sha256:
            raise CheckpointError("sha256 mismatch")
        # The manifest is the bucket's word; the ledger's record decides, before verify() unpickles the file.
        verify(verified(target, uri, self.ledger, CheckpointError, digest))
