"""In-memory implementations of yoloq's ports, for unit tests that need no network."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any


class MemoryStore:
    """A dict-backed object store with the same surface as :class:`infra.s3.S3Store`."""

    def __init__(self, bucket: str = "mem") -> None:
        self.bucket = bucket
        self.objects: dict[str, bytes] = {}
        self.other_buckets: dict[str, dict[str, bytes]] = {}

    def uri(self, key: str) -> str:
        """The s3:// URI of a key, as the real store would give it."""
        return f"s3://{self.bucket}/{key}"

    def ensure_bucket(self) -> None:
        """Nothing to create in memory."""

    def put_bytes(self, key: str, data: bytes) -> None:
        """Store a copy of ``data``."""
        self.objects[key] = bytes(data)

    def get_bytes(self, key: str) -> bytes | None:
        """The stored bytes, or None."""
        return self.objects.get(key)

    def put_json(self, key: str, value: Any) -> None:
        """Store a JSON document."""
        self.put_bytes(key, json.dumps(value, sort_keys=True).encode())

    def get_json(self, key: str) -> Any:
        """Read a JSON document, or None."""
        data = self.get_bytes(key)
        return None if data is None else json.loads(data)

    def put_file(self, key: str, path: Path) -> int:
        """Store the file's bytes; returns their size."""
        self.objects[key] = path.read_bytes()
        return len(self.objects[key])

    def get_file(self, key: str, path: Path, bucket: str | None = None) -> bool:
        """Write the object to ``path``; False when absent."""
        data = self._bucket(bucket).get(key)
        if data is None:
            return False
        path.write_bytes(data)
        return True

    def delete(self, key: str) -> None:
        """Forget one object."""
        self.objects.pop(key, None)

    def list_objects(self, prefix: str, bucket: str | None = None) -> list[tuple[str, int, str]]:
        """(key, size, md5 etag) under ``prefix``, sorted."""
        objects = self._bucket(bucket)
        return sorted(
            (k, len(v), hashlib.md5(v, usedforsecurity=False).hexdigest())
            for k, v in objects.items()
            if k.startswith(prefix)
        )

    def _bucket(self, bucket: str | None) -> dict[str, bytes]:
        return self.objects if bucket in (None, self.bucket) else self.other_buckets.setdefault(str(bucket), {})
