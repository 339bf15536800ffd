"""The trust rule for pickled files (issue 15 item 1b): yoloq unpickles only weights it wrote or an operator imported.

Unpickling runs whatever code the file names (``__reduce__``): a ``.pt`` planted in the bucket and named in an export
job ran ``os.system`` on a worker. So any model file that Ultralytics or torch would unpickle (anything but a model
yaml or an ONNX graph) needs a *record* in the trust ledger: its location and sha256
(:mod:`infra.trusted_files`, Redis). yoloq writes the record when it uploads a checkpoint or trained weights. An
operator writes it when importing a file with ``yoloq weights trust`` (audited, with actor and sha256). The ledger is
the authority. S3 object metadata and the checkpoint manifest are not, because anyone who can write to the bucket
can also write those.

There are two checks:

- **at submit** (:func:`check_spec`): a spec that names weights whose location has no record is
  :class:`~tasks.errors.SpecRejected` before anything is registered;
- **at load**, on the worker (:func:`trusted_copy` for the weights a job names; :func:`verified` for checkpoints and
  results): the file is copied into the attempt's private folder, and that copy is hashed and loaded only when the
  hash is the recorded one. A file changed after it was recorded is refused and never loaded. Models are built from
  such a copy only, through :func:`open_model`, whose :data:`TrustedPath` argument mypy checks.

ONNX graphs are protobuf, not pickles, so they need no record, but their size stays under ``YOLOQ_ONNX_MAX_MIB``.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path, PurePosixPath
from typing import Any, NewType, Protocol

from infra.ports import ObjectStore
from tasks.errors import JobFailed, SpecRejected, YoloqError
from tasks.records import iso, utc_now

# A local file whose bytes were hashed against the ledger (or a model yaml, or a size-checked ONNX graph): loadable.
TrustedPath = NewType("TrustedPath", Path)
FREE_SUFFIXES = (".yaml", ".yml")  # Ultralytics reads model yamls with yaml.safe_load: nothing to unpickle
ONNX_SUFFIX = ".onnx"
DEFAULT_ONNX_MAX_BYTES = 1024 * 2**20
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class TrustedFile:
    """One ledger record: the location, what it must hash to, and who vouched for it, when and why."""

    location: str
    sha256: str
    size: int
    source: str  # "checkpoint" | "trained" (yoloq wrote it) | "operator" (imported with yoloq weights trust)
    by: str
    at: str

    def to_json(self) -> str:
        """The record as stored in the ledger."""
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> TrustedFile | None:
        """Parse a stored record; a malformed one counts as no record (nothing is loaded on its word)."""
        try:
            data = json.loads(text)
            return cls(**{k: data[k] for k in ("location", "sha256", "size", "source", "by", "at")})
        except (ValueError, TypeError, KeyError):
            return None


class TrustLedger(Protocol):
    """Where the records live (Redis in production, :class:`MemoryLedger` in tests and offline runs)."""

    def lookup(self, location: str) -> TrustedFile | None:
        """The record of a location, or None."""

    def record(self, entry: TrustedFile, audited: bool = False) -> None:
        """Record (or replace) a location's sha256; ``audited``: also write an audit entry (operator imports)."""

    def forget(self, locations: Sequence[str], by: str = "", audited: bool = False) -> None:
        """Drop records (rotated checkpoints, an operator's revocation)."""


class MemoryLedger:
    """A dict ledger: a process that records and loads its own files (unit tests, the offline check) needs no Redis."""

    def __init__(self) -> None:
        self.entries: dict[str, TrustedFile] = {}

    def lookup(self, location: str) -> TrustedFile | None:
        """The record of a location, or None."""
        return self.entries.get(location)

    def record(self, entry: TrustedFile, audited: bool = False) -> None:
        """Record (or replace) a location's sha256."""
        self.entries[entry.location] = entry

    def forget(self, locations: Sequence[str], by: str = "", audited: bool = False) -> None:
        """Drop records."""
        for location in locations:
            self.entries.pop(location, None)


@dataclass(frozen=True)
class Trust:
    """What a job body needs to load model files safely: the ledger and the ONNX size cap (settings)."""

    ledger: TrustLedger
    onnx_max_bytes: int = DEFAULT_ONNX_MAX_BYTES


def sha256_of(path: Path) -> str:
    """Hex sha256 of a file, streamed (checkpoints reach hundreds of MB)."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _suffix(location: str) -> str:
    return PurePosixPath(location).suffix.lower()


def needs_trust(model: str) -> bool:
    """Whether loading ``model`` may unpickle it: anything but a model yaml or an ONNX graph (fail closed: ``.pt``,
    ``.pth``, no suffix, whatever Ultralytics would hand to torch.load)."""
    return _suffix(model) not in (*FREE_SUFFIXES, ONNX_SUFFIX)


def untrusted(location: str) -> str:
    """The one-line reason a location without a record is refused, with what to do about it."""
    hint = "" if "/" in location else " (name weights by their s3:// URI or path, or a model yaml such as yolov8n.yaml)"
    if len(location) > 200:  # quoting all of it would not help anyone (specs cap a location at 4096 characters)
        return f"{location[:120]!r}… ({len(location)} characters) is not a trusted weights file{hint}"
    return (f"{location!r} is not a trusted weights file: yoloq did not write it and no operator imported it; "
            f"`yoloq weights trust {location}` it first{hint}")  # fmt: skip


def check_spec(spec: object, ledger: TrustLedger) -> None:
    """At submit: a spec's ``model`` that would be unpickled must have a record, or SpecRejected (nothing written)."""
    model = getattr(spec, "model", None)
    if isinstance(model, str) and needs_trust(model) and ledger.lookup(model) is None:
        raise SpecRejected(f"invalid job spec: model: {untrusted(model)}")


def verified(
    local: Path, location: str, ledger: TrustLedger, error: type[YoloqError] = JobFailed, digest: str | None = None
) -> TrustedPath:
    """At load: ``local`` (the private copy about to be loaded) hashed against the record of ``location``
    (``digest``: that copy's sha256 when the caller has just computed it)."""
    entry = ledger.lookup(location)
    if entry is None:
        raise error(f"{untrusted(location)}; refused, not loaded")
    digest = digest or sha256_of(local)
    if digest != entry.sha256:
        raise error(
            f"{location} changed after yoloq recorded it (sha256 {digest[:16]}… is not the recorded "
            f"{entry.sha256[:16]}…, {entry.source} by {entry.by} at {entry.at}); refused, not loaded"
        )
    return TrustedPath(local)


def _stored_size(location: str, store: ObjectStore) -> int | None:
    """The size of an ``s3://`` object (None when absent) or of a local file, read before any byte is copied."""
    if not location.startswith("s3://"):
        path = Path(location)
        return path.stat().st_size if path.is_file() else None
    bucket, _, key = location.removeprefix("s3://").partition("/")
    return next((size for found, size, _ in store.list_objects(key, bucket=bucket) if found == key), None)


def _fetch(location: str, store: ObjectStore, workdir: Path) -> Path:
    """A private copy of the file in ``workdir``: what is checked there is what gets loaded."""
    target = workdir / "model" / PurePosixPath(location).name
    target.parent.mkdir(parents=True, exist_ok=True)
    if not location.startswith("s3://"):
        shutil.copyfile(location, target)
        return target
    bucket, _, key = location.removeprefix("s3://").partition("/")
    if not store.get_file(key, target, bucket=bucket):
        raise JobFailed(f"model {location} does not exist")
    return target


def _onnx_copy(location: str, store: ObjectStore, limit: int, workdir: Path) -> TrustedPath:
    """An ONNX graph needs no record, only a size under the limit: checked before the copy and on the copy."""
    size = _stored_size(location, store)
    if size is None:
        raise JobFailed(f"model {location} does not exist")
    if size <= limit:
        local = _fetch(location, store, workdir)
        size = local.stat().st_size
        if size <= limit:
            return TrustedPath(local)
    raise JobFailed(f"model {location} is {size / 2**20:.0f} MiB, over the ONNX limit of {limit // 2**20} MiB "
                    "(YOLOQ_ONNX_MAX_MIB)")  # fmt: skip


def trusted_copy(location: str, store: ObjectStore, trust: Trust, workdir: Path) -> TrustedPath:
    """The one way a job gets the model file it names: a local model yaml as is; anything else as a private copy in
    ``workdir``, checked there: an ONNX graph by its size; anything else by its record, then the copy's sha256."""
    suffix = _suffix(location)
    if suffix in FREE_SUFFIXES:
        return TrustedPath(_fetch(location, store, workdir) if location.startswith("s3://") else Path(location))
    if suffix == ONNX_SUFFIX:
        return _onnx_copy(location, store, trust.onnx_max_bytes, workdir)
    entry = trust.ledger.lookup(location)
    if entry is None:
        raise JobFailed(f"{untrusted(location)}; refused, not loaded")  # not one byte fetched
    size = _stored_size(location, store)
    if size is None:
        raise JobFailed(f"model {location} does not exist")
    if size != entry.size:
        raise JobFailed(f"{location} changed after yoloq recorded it ({size} bytes, recorded {entry.size}); "
                        "refused, not loaded")  # fmt: skip
    return verified(_fetch(location, store, workdir), location, trust.ledger)


def import_weights(
    location: str, store: ObjectStore, ledger: TrustLedger, by: str, expected: str | None = None
) -> TrustedFile:
    """An operator vouches for a weights file: hash it (an ``s3://`` object through a temporary copy), compare with
    ``expected`` when given, and record it with an audit entry; a refusal records nothing."""
    if not needs_trust(location):
        raise SpecRejected(f"{location}: model yamls and ONNX graphs are not pickles, they need no trust")
    if expected is not None and not _SHA256.match(expected.lower()):
        raise SpecRejected(f"--sha256 must be 64 hex digits, got {expected!r}")
    with tempfile.TemporaryDirectory(prefix="yoloq-trust-") as tmp:
        try:
            local = _fetch(location, store, Path(tmp)) if location.startswith("s3://") else Path(location)
            digest, size = sha256_of(local), local.stat().st_size
        except (JobFailed, OSError) as err:
            raise SpecRejected(f"{location} cannot be read: {err}") from None
    if expected is not None and expected.lower() != digest:
        raise SpecRejected(f"{location} has sha256 {digest}, not the expected {expected.lower()}: not trusted")
    entry = TrustedFile(location, digest, size, "operator", by, iso(utc_now()))
    ledger.record(entry, audited=True)
    return entry


def open_model(path: TrustedPath) -> Any:
    """``YOLO(path)``, the only place yoloq builds a model from a file; callers hold a checked :data:`TrustedPath`."""
    from ultralytics import YOLO

    return YOLO(str(path))
