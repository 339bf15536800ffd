"""tasks/checkpoints.py against the in-memory store: the manifest only moves after a verified upload, and fetch
falls back past corrupt, truncated or missing checkpoints, saying which it skipped and why."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from infra.fakes import MemoryStore
from tasks.checkpoints import CheckpointRef, CheckpointStore, Fetched, sha256_of
from tasks.errors import CheckpointError

pytestmark = pytest.mark.unit

PREFIX = "jobs/j1/checkpoints/"
MANIFEST = PREFIX + "manifest.json"


def ok(path: Path) -> None:
    """A verify callable that accepts every file."""


def refuse(path: Path) -> None:
    raise CheckpointError("not a torch checkpoint")


class ShortStore(MemoryStore):
    """A store whose upload reports fewer bytes than were sent (a truncated multipart upload)."""

    def put_file(self, key: str, path: Path) -> int:
        return super().put_file(key, path) - 1


class CountingStore(MemoryStore):
    """Counts downloads per key."""

    def __init__(self) -> None:
        super().__init__()
        self.gets: list[str] = []

    def get_file(self, key: str, path: Path, bucket: str | None = None) -> bool:
        self.gets.append(key)
        return super().get_file(key, path, bucket)


def _local(tmp_path: Path, data: bytes, name: str = "last.pt") -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def _publish(ckpts: CheckpointStore, tmp_path: Path, data: bytes, epoch: int, batch: int = 0) -> CheckpointRef:
    return ckpts.publish(_local(tmp_path, data), epoch, batch, ok)


@pytest.fixture
def dest(tmp_path: Path) -> Path:
    out = tmp_path / "fetched"
    out.mkdir()
    return out


# --- publish --------------------------------------------------------------------------------------------------------


def test_publish_uploads_under_a_sequenced_key_and_writes_the_manifest(tmp_path: Path) -> None:
    store = MemoryStore()
    ref = _publish(CheckpointStore(store, "j1"), tmp_path, b"weights-1", epoch=3, batch=7)
    assert ref.key == PREFIX + "000001-e3-b7.pt"
    assert (ref.epoch, ref.batch, ref.size) == (3, 7, len(b"weights-1"))
    assert ref.sha256 == sha256_of(tmp_path / "last.pt")
    assert store.objects[ref.key] == b"weights-1"
    manifest = store.get_json(MANIFEST)
    assert manifest["seq"] == 1
    assert manifest["newest"]["key"] == ref.key
    assert manifest["previous"] is None
    assert manifest["kept"] == [ref.key]
    assert not (tmp_path / "last.pt.upload").exists(), "the upload copy is cleaned up"
    assert (tmp_path / "last.pt").read_bytes() == b"weights-1", "the trainer's file is untouched"


def test_each_publish_advances_newest_and_previous_and_increments_seq(tmp_path: Path) -> None:
    store = MemoryStore()
    ckpts = CheckpointStore(store, "j1")
    refs = [_publish(ckpts, tmp_path, f"w{n}".encode(), epoch=n, batch=n * 10) for n in range(1, 4)]
    assert [r.key for r in refs] == [
        PREFIX + "000001-e1-b10.pt",
        PREFIX + "000002-e2-b20.pt",
        PREFIX + "000003-e3-b30.pt",
    ]
    manifest = store.get_json(MANIFEST)
    assert manifest["seq"] == 3
    assert manifest["newest"]["key"] == refs[2].key
    assert manifest["previous"]["key"] == refs[1].key
    assert manifest["kept"] == [r.key for r in reversed(refs)]


@pytest.mark.parametrize(
    ("keep", "effective"),
    [(1, 2), (2, 2), (3, 3), (5, 5)],
    ids=["keep1-clamped-to-2", "keep2", "keep3", "keep5"],
)
def test_keep_k_deletes_older_checkpoint_objects(tmp_path: Path, keep: int, effective: int) -> None:
    store = MemoryStore()
    ckpts = CheckpointStore(store, "j1", keep=keep)
    refs = [_publish(ckpts, tmp_path, f"w{n}".encode(), epoch=n) for n in range(1, 8)]
    survivors = [r.key for r in reversed(refs)][:effective]
    stored = sorted(k for k in store.objects if k != MANIFEST)
    assert stored == sorted(survivors)
    manifest = store.get_json(MANIFEST)
    assert manifest["kept"] == survivors
    assert sorted(manifest["entries"]) == sorted(survivors)
    assert manifest["previous"]["key"] in store.objects, "previous is never deleted"


def _publish_fails(ckpts: CheckpointStore, local: Path, verify=ok) -> str:
    with pytest.raises(CheckpointError) as err:
        ckpts.publish(local, 9, 0, verify)
    return str(err.value)


def test_empty_local_file_is_refused_and_the_manifest_is_unchanged(tmp_path: Path) -> None:
    store = MemoryStore()
    ckpts = CheckpointStore(store, "j1")
    first = _publish(ckpts, tmp_path, b"good", epoch=1)
    before = dict(store.objects)
    message = _publish_fails(ckpts, _local(tmp_path, b""))
    assert "empty" in message
    assert store.objects == before
    assert store.get_json(MANIFEST)["newest"]["key"] == first.key


def test_a_failing_verify_uploads_nothing_and_leaves_the_manifest(tmp_path: Path) -> None:
    store = MemoryStore()
    ckpts = CheckpointStore(store, "j1")
    first = _publish(ckpts, tmp_path, b"good", epoch=1)
    before = dict(store.objects)
    message = _publish_fails(ckpts, _local(tmp_path, b"not-a-checkpoint"), verify=refuse)
    assert message == "not a torch checkpoint"
    assert store.objects == before
    assert store.get_json(MANIFEST)["newest"]["key"] == first.key
    assert not (tmp_path / "last.pt.upload").exists()


def test_verify_sees_a_copy_not_the_file_the_trainer_rewrites(tmp_path: Path) -> None:
    seen: list[Path] = []
    local = _local(tmp_path, b"weights")
    CheckpointStore(MemoryStore(), "j1").publish(local, 1, 0, seen.append)
    assert seen == [tmp_path / "last.pt.upload"]


def test_an_upload_with_the_wrong_stored_size_never_reaches_the_manifest(tmp_path: Path) -> None:
    store = ShortStore()
    ckpts = CheckpointStore(store, "j1")
    message = _publish_fails(ckpts, _local(tmp_path, b"weights"))
    assert "stored 6 bytes, expected 7" in message
    assert store.get_json(MANIFEST) is None
    assert ckpts.fetch(tmp_path, ok) == Fetched(path=None, ref=None, skipped=())


def test_wrong_size_after_a_good_publish_keeps_the_good_one_newest(tmp_path: Path) -> None:
    store = MemoryStore()
    ckpts = CheckpointStore(store, "j1")
    first = _publish(ckpts, tmp_path, b"good", epoch=1)
    manifest = store.get_json(MANIFEST)
    lying = ShortStore()
    lying.objects = store.objects  # the same objects; only the next upload lies
    short = CheckpointStore(lying, "j1")
    _publish_fails(short, _local(tmp_path, b"newer"))
    assert store.get_json(MANIFEST) == manifest
    assert store.get_json(MANIFEST)["newest"]["key"] == first.key


# --- fetch ----------------------------------------------------------------------------------------------------------


def _two(tmp_path: Path, store: MemoryStore | None = None) -> tuple[MemoryStore, CheckpointStore, list[CheckpointRef]]:
    store = store or MemoryStore()
    ckpts = CheckpointStore(store, "j1")
    refs = [_publish(ckpts, tmp_path, b"older-weights", epoch=1), _publish(ckpts, tmp_path, b"newer-weights", epoch=2)]
    return store, ckpts, refs


def test_fetch_returns_the_newest_when_it_verifies(tmp_path: Path, dest: Path) -> None:
    _, ckpts, (_, newest) = _two(tmp_path)
    fetched = ckpts.fetch(dest, ok)
    assert fetched.ref == newest
    assert fetched.path == dest / "000002-e2-b0.pt"
    assert fetched.path.read_bytes() == b"newer-weights"
    assert fetched.skipped == ()


def _corrupt(store: MemoryStore, key: str) -> None:
    data = store.objects[key]
    store.objects[key] = bytes([data[0] ^ 0xFF]) + data[1:]  # same size, different bytes


def _truncate(store: MemoryStore, key: str) -> None:
    store.objects[key] = store.objects[key][:-3]


def _remove(store: MemoryStore, key: str) -> None:
    store.delete(key)


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        (_corrupt, "sha256 mismatch"),
        (_truncate, "size 10 != recorded 13"),
        (_remove, "missing from the store"),
    ],
    ids=["corrupt", "truncated", "missing"],
)
def test_fetch_falls_back_to_previous_when_newest_is_bad(tmp_path: Path, dest: Path, damage, reason: str) -> None:
    store, ckpts, (previous, newest) = _two(tmp_path)
    damage(store, newest.key)
    fetched = ckpts.fetch(dest, ok)
    assert fetched.ref == previous
    assert fetched.path is not None
    assert fetched.path.read_bytes() == b"older-weights"
    assert fetched.skipped == (f"{newest.key}: {reason}",)
    assert not (dest / Path(newest.key).name).exists(), "a rejected download is not left behind"


def test_fetch_falls_back_when_verify_rejects_the_newest(tmp_path: Path, dest: Path) -> None:
    _, ckpts, (previous, newest) = _two(tmp_path)

    def only_older(path: Path) -> None:
        if path.read_bytes() != b"older-weights":
            raise CheckpointError("does not load")

    fetched = ckpts.fetch(dest, only_older)
    assert fetched.ref == previous
    assert fetched.skipped == (f"{newest.key}: does not load",)


def test_fetch_reaches_older_kept_entries_past_newest_and_previous(tmp_path: Path, dest: Path) -> None:
    store = MemoryStore()
    ckpts = CheckpointStore(store, "j1", keep=3)
    refs = [_publish(ckpts, tmp_path, f"weights-{n}".encode(), epoch=n) for n in range(1, 4)]
    _remove(store, refs[2].key)
    _corrupt(store, refs[1].key)
    fetched = ckpts.fetch(dest, ok)
    assert fetched.ref == refs[0]
    assert fetched.skipped == (f"{refs[2].key}: missing from the store", f"{refs[1].key}: sha256 mismatch")


def test_fetch_with_every_checkpoint_bad_returns_nothing_and_every_reason(tmp_path: Path, dest: Path) -> None:
    store, ckpts, (previous, newest) = _two(tmp_path)
    _corrupt(store, newest.key)
    _truncate(store, previous.key)
    fetched = ckpts.fetch(dest, ok)
    assert fetched == Fetched(
        path=None,
        ref=None,
        skipped=(f"{newest.key}: sha256 mismatch", f"{previous.key}: size 10 != recorded 13"),
    )
    assert list(dest.iterdir()) == []


def test_fetch_tries_each_candidate_once(tmp_path: Path, dest: Path) -> None:
    store, ckpts, refs = _two(tmp_path, CountingStore())
    for ref in refs:
        _remove(store, ref.key)
    assert isinstance(store, CountingStore)
    fetched = ckpts.fetch(dest, ok)
    assert store.gets == [refs[1].key, refs[0].key], "newest, previous and kept overlap but each is tried once"
    assert fetched.path is None
    assert len(fetched.skipped) == 2


def test_a_job_without_a_manifest_has_nothing_to_fetch(dest: Path) -> None:
    assert CheckpointStore(MemoryStore(), "j1").fetch(dest, ok) == Fetched(None, None, ())


@pytest.mark.parametrize(
    ("raw", "match"),
    [
        (b"{not json", "is not JSON"),
        (b"\xff\xfe garbage", "is not JSON"),
        (b"[1, 2]", "is not an object"),
        (b'"newest"', "is not an object"),
        (b"42", "is not an object"),
    ],
    ids=["broken-json", "not-utf8", "list", "string", "number"],
)
def test_a_manifest_that_is_not_a_json_object_is_a_checkpoint_error(
    tmp_path: Path, dest: Path, raw: bytes, match: str
) -> None:
    store = MemoryStore()
    store.put_bytes(MANIFEST, raw)
    ckpts = CheckpointStore(store, "j1")
    with pytest.raises(CheckpointError, match=match):
        ckpts.fetch(dest, ok)
    with pytest.raises(CheckpointError, match=match):
        ckpts.publish(_local(tmp_path, b"weights"), 1, 0, ok)
    assert store.objects == {MANIFEST: raw}, "nothing uploaded over a broken manifest"


@pytest.mark.parametrize(
    "entry",
    [{"key": "k"}, {"key": "k", "epoch": "x", "batch": 0, "sha256": "s", "size": 1, "at": "t"}],
    ids=["missing-fields", "bad-epoch"],
)
def test_a_malformed_manifest_entry_is_a_checkpoint_error(dest: Path, entry: dict[str, Any]) -> None:
    store = MemoryStore()
    store.put_bytes(MANIFEST, json.dumps({"seq": 1, "newest": entry, "previous": None, "kept": []}).encode())
    with pytest.raises(CheckpointError, match="malformed checkpoint manifest entry"):
        CheckpointStore(store, "j1").fetch(dest, ok)


def test_refs_round_trip_through_the_manifest(tmp_path: Path) -> None:
    store = MemoryStore()
    ref = _publish(CheckpointStore(store, "j1"), tmp_path, b"w", epoch=4, batch=2)
    assert CheckpointRef.from_dict(store.get_json(MANIFEST)["newest"]) == ref


# --- small helpers --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("job", "name", "key"),
    [
        ("j1", "best.pt", "jobs/j1/results/best.pt"),
        ("abc-123", "metrics.json", "jobs/abc-123/results/metrics.json"),
    ],
)
def test_results_key(job: str, name: str, key: str) -> None:
    assert CheckpointStore(MemoryStore(), job).results_key(name) == key


def test_manifest_key_and_prefix_are_per_job() -> None:
    ckpts = CheckpointStore(MemoryStore(), "other")
    assert ckpts.manifest_key == "jobs/other/checkpoints/manifest.json"
    assert ckpts.manifest() == {"seq": 0, "newest": None, "previous": None, "kept": []}


def test_sha256_of_matches_hashlib(tmp_path: Path) -> None:
    import hashlib

    data = bytes(range(256)) * 5000  # more than one 1 MiB read
    path = _local(tmp_path, data, "big.bin")
    assert sha256_of(path) == hashlib.sha256(data).hexdigest()
