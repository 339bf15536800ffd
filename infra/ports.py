"""Protocols the job bodies are written against, so they run on real adapters and in-memory fakes alike, and the
plain data that crosses them (a GPU as NVML or the simulated inventory reports it)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
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


@dataclass(frozen=True, slots=True)
class GpuInfo:
    """One device as the scheduler sees it."""

    index: int
    name: str
    memory_mib: int
    uuid: str = ""
    compute_capability: str = ""
    healthy: bool = True
    simulated: bool = False

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form for ``status --json`` and worker presence."""
        return asdict(self)
