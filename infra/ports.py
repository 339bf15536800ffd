"""Protocols the job bodies are written against, so they run on real adapters and in-memory fakes alike."""

from __future__ import annotations

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
