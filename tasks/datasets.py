"""Datasets by URI: a local folder / data.yaml, or an ``s3://bucket/prefix/`` holding one.

S3 datasets are fetched once per worker into ``{cache}/datasets/{uri-hash}-{version}/`` where the version hashes the
listing (keys, sizes, ETags): a changed dataset gets a new directory, an unchanged one is reused by every job. The
fetch runs under an exclusive file lock and lands by rename, so concurrent jobs never see half a copy. Every attempt
gets its own data.yaml with an absolute ``path`` (Ultralytics resolves a relative one against its own datasets dir).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from infra.ports import ObjectStore
from tasks.errors import DatasetError

REQUIRED = ("train", "val", "names")


@dataclass(frozen=True)
class LocalDataset:
    """A dataset ready to train on: its root directory and the data.yaml this attempt passes to Ultralytics."""

    root: Path
    data_yaml: Path
    uri: str


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """An exclusive advisory lock on ``path`` (created if needed), shared by every process of this machine."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def split_s3(uri: str) -> tuple[str, str]:
    """``s3://bucket/prefix/`` → (bucket, "prefix/"); a URI without a bucket is a DatasetError."""
    rest = uri.removeprefix("s3://")
    bucket, _, prefix = rest.partition("/")
    if not bucket:
        raise DatasetError(f"dataset URI {uri!r} names no bucket")
    return bucket, (prefix.rstrip("/") + "/") if prefix else ""


def key_path(uri: str, prefix: str, key: str) -> str | None:
    """Where ``key`` lands under a local copy of ``uri``: None for a folder marker (``dir/``, which S3 consoles
    create), DatasetError for a key that would land outside the copy (``..`` or a leading ``/``)."""
    rel = key[len(prefix) :]
    if not rel or rel.endswith("/"):
        return None
    if rel.startswith("/") or ".." in Path(rel).parts:
        raise DatasetError(f"{uri}: object {key!r} would be written outside the local copy")
    return rel


def read_data_yaml(path: Path) -> dict[str, Any]:
    """Parse and check a data.yaml: it must be a mapping with train, val and names."""
    if not path.is_file():
        raise DatasetError(f"dataset has no data.yaml at {path}")
    try:
        doc = yaml.safe_load(path.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        raise DatasetError(f"malformed data.yaml {path}: {str(err).splitlines()[0]}") from None
    if not isinstance(doc, dict):
        raise DatasetError(f"malformed data.yaml {path}: expected a mapping")
    missing = [key for key in REQUIRED if key not in doc]
    if missing:
        raise DatasetError(f"malformed data.yaml {path}: missing {', '.join(missing)}")
    return doc


def _entries(split: Any) -> list[str]:
    """A split's folders or list files as data.yaml may write them: one, a list, or none (an empty test split)."""
    if split in (None, ""):
        return []
    return [str(entry) for entry in split] if isinstance(split, list) else [str(split)]


def _materialise(source_yaml: Path, uri: str, workdir: Path, fetched: bool = False) -> LocalDataset:
    """Write this attempt's data.yaml with an absolute root and check that the splits exist."""
    doc = read_data_yaml(source_yaml)
    # A fetched copy lives where we put it, whatever path the uploader's data.yaml names.
    root = source_yaml.parent if fetched else Path(str(doc.get("path") or source_yaml.parent))
    root = root if root.is_absolute() else (source_yaml.parent / root)
    root = root.resolve()
    for split in ("train", "val", "test"):
        for entry in _entries(doc.get(split)):
            where = (root / str(entry)).resolve()
            if not where.is_relative_to(root):  # `../../etc`, `/home/x`: a split outside the dataset's own folder
                raise DatasetError(f"dataset {uri}: {split} split {entry!r} is outside the dataset's folder")
            if not where.exists():
                raise DatasetError(f"dataset {uri}: {split} split {entry!r} not found under {root}")
    # Ultralytics runs a data.yaml's `download` (a bash line or Python source) when a split is missing: a dataset is
    # data, never code, so the key never reaches it.
    doc.pop("download", None)
    doc["path"] = str(root)
    workdir.mkdir(parents=True, exist_ok=True)
    out = workdir / "data.yaml"
    out.write_text(yaml.safe_dump(doc, sort_keys=False))
    return LocalDataset(root=root, data_yaml=out, uri=uri)


def _version(listing: list[tuple[str, int, str]]) -> str:
    digest = hashlib.sha256()
    for key, size, etag in listing:
        digest.update(f"{key}\0{size}\0{etag}\n".encode())
    return digest.hexdigest()[:16]


def fetch_s3(uri: str, store: ObjectStore, cache: Path) -> Path:
    """Copy an S3 dataset into the local cache once per content version; returns the cached root."""
    bucket, prefix = split_s3(uri)
    listing = store.list_objects(prefix, bucket=bucket)
    if not any(key.endswith("data.yaml") and key[len(prefix) :] == "data.yaml" for key, _, _ in listing):
        raise DatasetError(f"dataset {uri} does not exist or has no data.yaml at its top")
    name = hashlib.sha256(f"s3://{bucket}/{prefix}".encode()).hexdigest()[:12] + "-" + _version(listing)
    final = cache / "datasets" / name
    with locked(cache / "datasets" / f"{name}.lock"):
        if (final / ".complete").exists():
            return final
        partial = cache / "datasets" / f"{name}.partial"
        shutil.rmtree(partial, ignore_errors=True)
        for key, _, _ in listing:
            rel = key_path(uri, prefix, key)
            if rel is None:
                continue
            target = partial / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            if not store.get_file(key, target, bucket=bucket):
                raise DatasetError(f"dataset {uri}: {key} vanished while fetching")
        (partial / ".complete").write_text(uri + "\n")
        shutil.rmtree(final, ignore_errors=True)
        partial.rename(final)
    return final


def _local_yaml(data: str) -> Path:
    path = Path(data).expanduser()
    if not path.exists():
        raise DatasetError(f"dataset {data} does not exist")
    return path / "data.yaml" if path.is_dir() else path


def resolve(data: str, store: ObjectStore, cache: Path, workdir: Path) -> LocalDataset:
    """Turn a TrainSpec's ``data`` into a local dataset and a per-attempt data.yaml, fetching S3 data if needed."""
    if data.startswith("s3://"):
        root = fetch_s3(data, store, cache)
        return _materialise(root / "data.yaml", data, workdir, fetched=True)
    return _materialise(_local_yaml(data), data, workdir)
