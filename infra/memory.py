"""In-memory implementations of yoloq's ports, for unit tests that need no network."""

from __future__ import annotations

import json
from typing import Any


class MemoryStore:
    """A dict-backed object store with the same surface as :class:`infra.s3.S3Store`."""

    def __init__(self, bucket: str = "mem") -> None:
        self.bucket = bucket
        self.objects: dict[str, bytes] = {}

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
