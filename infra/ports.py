"""Protocols the job bodies are written against, so they run on real adapters and in-memory fakes alike."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol


class ObjectStore(Protocol):
    """Where checkpoints and results live (S3 in production, a dict in unit tests)."""

    bucket: str

    def uri(self, key: str) -> str:
        """The s3:// URI of a key."""

    def put_bytes(self, key: str, data: bytes) -> None:
        """Write one object atomically."""

    def get_bytes(self, key: str) -> bytes | None:
        """Read one object, None when absent."""

    def put_json(self, key: str, value: Any) -> None:
        """Write a JSON document."""

    def get_json(self, key: str) -> Any:
        """Read a JSON document, None when absent."""

    def put_file(self, key: str, path: Path) -> int:
        """Upload a local file (multipart when large); returns the size the store reports afterwards."""

    def get_file(self, key: str, path: Path, bucket: str | None = None) -> bool:
        """Download one object to ``path``; False when it does not exist."""

    def delete(self, key: str) -> None:
        """Remove one object (absent is fine)."""

    def list_objects(self, prefix: str, bucket: str | None = None) -> list[tuple[str, int, str]]:
        """(key, size, etag) of every object under ``prefix``, sorted by key."""
