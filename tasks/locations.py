"""Where a job may read from, decided at the door (submit) rather than on a GPU worker.

A location (a train job's ``data``, an infer job's ``source``, a weights file's ``model``) is either

- ``s3://BUCKET/KEY``: a bucket name as S3 spells them (3-63 of ``a-z 0-9 . -``) and a key with no ``..`` segment;
- a local path: resolved to an absolute path (workers do not share the submitter's working directory). When data
  roots are configured (``YOLOQ_DATA_ROOTS``, comma-separated absolute folders) the resolved path must lie under one
  of them; a path outside them is refused *without* saying whether it exists. A remote caller (the HTTP API) may
  name local paths only under configured roots: the host's files are not the caller's to probe.

Anything else (``file://``, ``http://169.254.169.254/…``, ``s3:///x``) is refused. Errors are :class:`SpecRejected`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from tasks.errors import ConfigError, SpecRejected

_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
MAX_KEY_BYTES = 1024  # S3's own limit


@dataclass(frozen=True)
class Locations:
    """The door's rules: the data roots (none: any local path for a local caller) and whether the caller is remote."""

    roots: tuple[Path, ...] = ()
    remote: bool = False

    @classmethod
    def from_setting(cls, data_roots: str, remote: bool = False) -> Locations:
        """Parse ``YOLOQ_DATA_ROOTS``; a relative root is a configuration mistake, refused by name."""
        roots = tuple(Path(p.strip()) for p in data_roots.split(",") if p.strip())
        if any(not root.is_absolute() for root in roots):
            raise ConfigError(f"YOLOQ_DATA_ROOTS must list absolute folders, got {data_roots!r}")
        return cls(tuple(root.resolve() for root in roots), remote)

    def check(self, field: str, location: str, must_exist: bool = True) -> str:
        """The location as the job will carry it (local paths absolute), or SpecRejected naming the field."""
        if not location.isprintable():  # a newline forges log lines; S3 refuses control characters itself
            raise SpecRejected(f"invalid job spec: {field}: {shown(location)} holds a control or format character")
        scheme, sep, rest = location.partition("://")
        if sep:
            if scheme != "s3":
                raise SpecRejected(
                    f"invalid job spec: {field}: only s3:// and local paths are allowed, not {scheme[:40]}://"
                )
            return _s3(field, rest, location)
        return self._local(field, location, must_exist)

    def _local(self, field: str, location: str, must_exist: bool) -> str:
        if self.remote and not self.roots:
            raise SpecRejected(f"invalid job spec: {field}: local paths need YOLOQ_DATA_ROOTS on the API server; "
                               "use s3://bucket/key")  # fmt: skip
        unusable = SpecRejected(f"invalid job spec: {field}: {shown(location)} is not a usable path")
        try:
            resolved = Path(location).expanduser().resolve()
        except (OSError, RuntimeError, ValueError):  # a loop, an unknown ~user: not a path a job can use
            raise unusable from None
        if self.roots and not any(resolved.is_relative_to(root) for root in self.roots):
            raise SpecRejected(f"invalid job spec: {field}: {shown(location)} is not under a data root "
                               "(YOLOQ_DATA_ROOTS)")  # fmt: skip
        try:
            found = resolved.exists()
        except OSError:  # a name too long: said only for a path inside the roots, like "does not exist"
            raise unusable from None
        if must_exist and not found:
            raise SpecRejected(f"invalid job spec: {field}: path {shown(location)} does not exist")
        return str(resolved)


def shown(location: str, limit: int = 120) -> str:
    """A location as an error quotes it: its start only, so that a refusal stays one short line."""
    return repr(location) if len(location) <= limit else f"{location[:limit]!r}… ({len(location)} characters)"


def _s3(field: str, rest: str, location: str) -> str:
    bucket, _, key = rest.partition("/")
    if not _BUCKET.match(bucket):
        raise SpecRejected(f"invalid job spec: {field}: {shown(location)} names no valid bucket (s3://bucket/key)")
    if len(key.encode("utf-8", "surrogatepass")) > MAX_KEY_BYTES:
        raise SpecRejected(f"invalid job spec: {field}: {shown(location)}: an S3 key is at most {MAX_KEY_BYTES} bytes")
    if ".." in PurePosixPath(key).parts:
        raise SpecRejected(f"invalid job spec: {field}: {shown(location)} has a '..' segment")
    return location
