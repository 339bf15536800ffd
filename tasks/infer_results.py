"""Where an infer job's detections go: JSON-lines shards in S3, written off the critical path, read back to resume.

``jobs/{id}/results/detections/part-NNNNN-TTTTTTTT.jsonl``: one ``{"image", "detections"}`` object per line, ``image``
the file's path relative to the source (``NNNNN`` counts on across attempts, ``TTTTTTTT`` is the attempt's own
token so two attempts never write the same key). A shard is one PUT, so it is there whole or not at all: an image in
a shard is done and a resumed attempt skips it; one that was not in a shard yet is run again (at most one shard's
worth: :data:`SHARD_IMAGES` images or :data:`SHARD_S` seconds, nothing when the attempt stops cooperatively, since it
writes what it holds first). An image is in one shard, except after a lost lease let two attempts overlap: readers
(:func:`read_detections`) keep its first line. Writing one JSON per image cost 44 % of the job's loop (bench/infer.py).
"""

from __future__ import annotations

import json
import re
import secrets
import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from infra.ports import ObjectStore

SHARD_IMAGES = 1024  # images per shard, at most
SHARD_S = 30.0  # a shard is written at least this often, so a kill -9 loses no more than this much work
IN_FLIGHT = 2  # shard uploads the job runs ahead of before it waits
PART = re.compile(r"part-(\d{5,})-[0-9a-f]+\.jsonl$")

Detections = list[dict[str, Any]]


def detections_prefix(job_id: str) -> str:
    """The S3 prefix of a job's shards (documented layout, docs/architecture.md)."""
    return f"jobs/{job_id}/results/detections/"


def shard_keys(store: ObjectStore, prefix: str) -> list[str]:
    """The shards under ``prefix``, oldest first (a folder marker or anything else there is not a shard)."""
    found = [(int(m.group(1)), key) for key, _, _ in store.list_objects(prefix) if (m := PART.search(key))]
    return [key for _, key in sorted(found)]


def _lines(store: ObjectStore, key: str) -> list[dict[str, Any]]:
    data = store.get_bytes(key) or b""
    return [json.loads(line) for line in data.splitlines() if line.strip()]


def read_detections(store: ObjectStore, prefix: str) -> dict[str, Detections]:
    """Every image's detections under ``prefix``, by its path relative to the source (first line wins)."""
    out: dict[str, Detections] = {}
    for key in shard_keys(store, prefix):
        for line in _lines(store, key):
            out.setdefault(str(line["image"]), list(line["detections"]))
    return out


class ShardWriter:
    """Collects one line per image and PUTs a shard every :data:`SHARD_IMAGES` images or :data:`SHARD_S` seconds from
    a background thread; the job waits only when :data:`IN_FLIGHT` shards are still uploading."""

    def __init__(self, store: ObjectStore, prefix: str) -> None:
        self.store, self.prefix = store, prefix
        existing = shard_keys(store, prefix)
        self.done: set[str] = {str(line["image"]) for key in existing for line in _lines(store, key)}
        match = PART.search(existing[-1]) if existing else None
        self.next = int(match.group(1)) + 1 if match else 0
        self.token = secrets.token_hex(4)
        self.lines: list[dict[str, Any]] = []
        self.opened = 0.0
        self.written: list[str] = []
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="shards")
        self._pending: list[Future[None]] = []

    def add(self, image: str, detections: Detections) -> None:
        """One image's detections; a full or old enough shard goes to the uploader."""
        if not self.lines:
            self.opened = time.monotonic()
        self.lines.append({"image": image, "detections": detections})
        if len(self.lines) >= SHARD_IMAGES or time.monotonic() - self.opened >= SHARD_S:
            self.flush()

    def flush(self) -> None:
        """Hand what is held to the uploader (nothing held, nothing written); an upload error surfaces here."""
        if self.lines:
            key = f"{self.prefix}part-{self.next:05d}-{self.token}.jsonl"
            self._pending.append(self._pool.submit(self._put, key, self.lines))
            self.written.append(key)
            self.next, self.lines = self.next + 1, []
        while len(self._pending) > IN_FLIGHT:
            self._pending.pop(0).result()

    def close(self) -> None:
        """Write what is held and wait for every upload: afterwards each image added is in S3."""
        try:
            self.flush()
            while self._pending:
                self._pending.pop(0).result()
        finally:
            self._pool.shutdown(wait=True)

    def _put(self, key: str, lines: list[dict[str, Any]]) -> None:
        self.store.put_bytes(key, "".join(json.dumps(line, separators=(",", ":")) + "\n" for line in lines).encode())
