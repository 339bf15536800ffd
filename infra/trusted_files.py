"""The trust ledger in Redis: which model files yoloq may unpickle, and the sha256 each must have (tasks/trust.py).

One hash, ``yoloq:trusted-files``: location (``s3://bucket/key`` or an absolute local path) → JSON
``{location, sha256, size, source, by, at}``. yoloq writes a record when it uploads a checkpoint or trained weights
(not audited: one per checkpoint), and an operator writes one with ``yoloq weights trust`` (audited: actor, location
and sha256 in the audit stream, in the same MULTI as the record). Revocations are audited the same way.

Redis, not S3 object metadata: whoever can write the bucket can write its metadata too.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

import redis

from infra import audit
from infra.redis_client import redis_errors
from tasks.records import Event, iso, utc_now
from tasks.trust import TrustedFile

TRUSTED_KEY = "yoloq:trusted-files"


class TrustedFiles:
    """Read and change the ledger (the real :class:`tasks.trust.TrustLedger`)."""

    def __init__(self, client: redis.Redis, url: str = "") -> None:
        self._r, self._url = client, url

    def lookup(self, location: str) -> TrustedFile | None:
        """The record of a location, or None (a malformed record is none: nothing is loaded on its word)."""
        with redis_errors(self._url):
            raw = self._r.hget(TRUSTED_KEY, location)
        return TrustedFile.from_json(str(raw)) if raw is not None else None

    def record(self, entry: TrustedFile, audited: bool = False) -> None:
        """Record (or replace) a location's sha256; ``audited`` adds the audit entry in the same transaction."""
        pipe = self._r.pipeline(transaction=True)
        pipe.hset(TRUSTED_KEY, entry.location, entry.to_json())
        if audited:
            event = Event(at=entry.at, type="weights-trusted", reason=f"{entry.location} sha256 {entry.sha256}",
                          by=entry.by, location=entry.location, sha256=entry.sha256)  # fmt: skip
            audit.add(pipe, "", event)
        with redis_errors(self._url):
            pipe.execute()

    def forget(self, locations: Sequence[str], by: str = "", audited: bool = False) -> None:
        """Drop records (a rotated checkpoint; ``audited``: an operator's revocation)."""
        if not locations:
            return
        pipe = self._r.pipeline(transaction=True)
        pipe.hdel(TRUSTED_KEY, *locations)
        if audited:
            for location in locations:
                audit.add(pipe, "", Event(at=iso(utc_now()), type="weights-revoked", reason=location, by=by,
                                          location=location))  # fmt: skip
        with redis_errors(self._url):
            pipe.execute()

    def entries(self) -> list[TrustedFile]:
        """Every record, sorted by location (``yoloq weights list``)."""
        with redis_errors(self._url):
            raw = cast("dict[str, str]", self._r.hgetall(TRUSTED_KEY))
        parsed = (TrustedFile.from_json(text) for text in raw.values())
        return sorted((entry for entry in parsed if entry is not None), key=lambda e: e.location)
