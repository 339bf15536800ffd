"""tasks/trust.py and the checkpoint store's use of it, against in-memory adapters: which model names need a record,
what a load-time check refuses (changed, unrecorded, oversized), and that a checkpoint rewritten in the bucket
together with its manifest entry is refused before anything unpickles it."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from infra.fakes import MemoryStore
from tasks.checkpoints import CheckpointStore
from tasks.errors import CheckpointError, JobFailed, SpecRejected
from tasks.specs import ExportSpec, InferSpec, TrainSpec
from tasks.trust import MemoryLedger, Trust, TrustedFile, check_spec, import_weights, needs_trust, trusted_copy

pytestmark = pytest.mark.unit

AT = "2026-01-01T00:00:00.000Z"


def _entry(location: str, data: bytes) -> TrustedFile:
    return TrustedFile(location, hashlib.sha256(data).hexdigest(), len(data), "operator", "cli:ops", AT)


@pytest.mark.parametrize(
    ("model", "needs"),
    [
        ("yolov8n.yaml", False),
        ("s3://b/models/custom.YML", False),
        ("s3://b/exports/model.onnx", False),
        ("/w/best.pt", True),
        ("s3://b/w/best.PTH", True),
        ("yolov8n.pt", True),
        ("/w/weights", True),  # no suffix: Ultralytics may still hand it to torch.load (fail closed)
        ("/w/model.torchscript", True),
    ],
)
def test_everything_but_a_model_yaml_or_an_onnx_graph_needs_a_record(model: str, needs: bool) -> None:
    assert needs_trust(model) is needs


@pytest.mark.parametrize(
    "spec",
    [
        ExportSpec(model="s3://yoloq/planted/evil.pt", team="t"),
        InferSpec(model="/data/evil.pt", source="/data/images", team="t"),
        TrainSpec(model="/data/yolov8n.pt", data="/data/set", team="t"),
    ],
    ids=["export", "infer", "train"],
)
def test_a_spec_naming_unrecorded_weights_is_rejected_and_a_recorded_one_passes(spec: object) -> None:
    ledger = MemoryLedger()
    with pytest.raises(SpecRejected, match="is not a trusted weights file: yoloq did not write it and no operator"):
        check_spec(spec, ledger)
    ledger.record(_entry(spec.model, b"w"))  # type: ignore[attr-defined]
    check_spec(spec, ledger)


def test_a_bare_weights_name_is_told_to_name_a_location() -> None:
    with pytest.raises(SpecRejected, match=r"name weights by their s3:// URI or path, or a model yaml"):
        check_spec(ExportSpec(model="yolov8n.pt", team="t"), MemoryLedger())
    check_spec(ExportSpec(model="yolov8n.yaml", team="t"), MemoryLedger())


def test_a_local_file_is_loaded_from_a_checked_private_copy(tmp_path: Path) -> None:
    source = tmp_path / "root" / "w.pt"
    source.parent.mkdir()
    source.write_bytes(b"weights")
    ledger = MemoryLedger()
    ledger.record(_entry(str(source), b"weights"))
    copy = trusted_copy(str(source), MemoryStore(), Trust(ledger), tmp_path / "work")
    assert copy == tmp_path / "work" / "model" / "w.pt" and copy.read_bytes() == b"weights"
    # When the file changes after it was recorded (same size), the worker refuses it
    source.write_bytes(b"WEIGHTS")
    with pytest.raises(JobFailed, match=r"changed after yoloq recorded it \(sha256 .* operator by cli:ops"):
        trusted_copy(str(source), MemoryStore(), Trust(ledger), tmp_path / "again")


def test_an_object_of_another_size_is_refused_before_it_is_downloaded(tmp_path: Path) -> None:
    store, ledger = MemoryStore(), MemoryLedger()
    store.put_bytes("w/best.pt", b"a much longer malicious body")
    ledger.record(_entry(store.uri("w/best.pt"), b"weights"))
    with pytest.raises(JobFailed, match=r"changed after yoloq recorded it \(28 bytes, recorded 7\)"):
        trusted_copy(store.uri("w/best.pt"), store, Trust(ledger), tmp_path)
    assert not (tmp_path / "model").exists()


def test_an_onnx_graph_needs_no_record_but_stays_under_the_limit(tmp_path: Path) -> None:
    store = MemoryStore()
    store.put_bytes("x/model.onnx", b"o" * 2048)
    assert trusted_copy(store.uri("x/model.onnx"), store, Trust(MemoryLedger(), 4096), tmp_path).stat().st_size == 2048
    with pytest.raises(JobFailed, match=r"over the ONNX limit of 0 MiB \(YOLOQ_ONNX_MAX_MIB\)"):
        trusted_copy(store.uri("x/model.onnx"), store, Trust(MemoryLedger(), 1024), tmp_path / "small")
    assert not (tmp_path / "small").exists(), "an oversized graph is not even downloaded"


def test_an_operator_import_checks_the_expected_sha256_and_records_nothing_on_a_mismatch(tmp_path: Path) -> None:
    store, ledger = MemoryStore(), MemoryLedger()
    store.put_bytes("imported/w.pt", b"weights")
    uri = store.uri("imported/w.pt")
    with pytest.raises(SpecRejected, match="not the expected 00000000"):
        import_weights(uri, store, ledger, "cli:ops", expected="0" * 64)
    with pytest.raises(SpecRejected, match="must be 64 hex digits"):
        import_weights(uri, store, ledger, "cli:ops", expected="abc")
    with pytest.raises(SpecRejected, match="need no trust"):
        import_weights(store.uri("imported/yolov8n.yaml"), store, ledger, "cli:ops")
    assert ledger.entries == {}
    entry = import_weights(uri, store, ledger, "cli:ops", expected=hashlib.sha256(b"weights").hexdigest().upper())
    assert ledger.lookup(uri) == entry and (entry.source, entry.by, entry.size) == ("operator", "cli:ops", 7)


def _unpickles(seen: list[Path]) -> object:
    def verify(path: Path) -> None:
        seen.append(path)  # stands for torch.load: it must never see a refused file

    return verify


def test_a_checkpoint_rewritten_with_its_manifest_entry_is_refused_before_verify(tmp_path: Path) -> None:
    store, ledger = MemoryStore(), MemoryLedger()
    ckpts = CheckpointStore(store, "j1", ledger=ledger)
    local = tmp_path / "last.pt"
    local.write_bytes(b"good checkpoint")
    ref = ckpts.publish(local, 1, 0, lambda path: None)
    assert ledger.lookup(store.uri(ref.key)) is not None
    # The attacker rewrites the object and makes the manifest (in the same bucket) agree with it
    evil = b"evil pickle body"
    store.put_bytes(ref.key, evil)
    manifest = store.get_json(ckpts.manifest_key)
    for entry in (manifest["newest"], manifest["entries"][ref.key]):
        entry.update(sha256=hashlib.sha256(evil).hexdigest(), size=len(evil))
    store.put_bytes(ckpts.manifest_key, json.dumps(manifest).encode())
    seen: list[Path] = []
    (tmp_path / "dest").mkdir()
    fetched = ckpts.fetch(tmp_path / "dest", _unpickles(seen))  # type: ignore[arg-type]
    assert fetched.path is None and seen == []
    assert "changed after yoloq recorded it" in fetched.skipped[0] and "checkpoint by job j1" in fetched.skipped[0]


def test_a_checkpoint_yoloq_never_recorded_is_not_even_downloaded(tmp_path: Path) -> None:
    store = MemoryStore()
    writer = CheckpointStore(store, "j1", ledger=MemoryLedger())
    (tmp_path / "last.pt").write_bytes(b"w")
    writer.publish(tmp_path / "last.pt", 1, 0, lambda path: None)
    reader = CheckpointStore(store, "j1", ledger=MemoryLedger())  # a ledger that never heard of it
    fetched = reader.fetch(tmp_path, lambda path: None)
    assert fetched.path is None and fetched.skipped[0].endswith(
        "yoloq has no record of writing it: refused, not loaded"
    )


def test_rotated_checkpoints_leave_the_ledger_and_results_are_recorded(tmp_path: Path) -> None:
    store, ledger = MemoryStore(), MemoryLedger()
    ckpts = CheckpointStore(store, "j1", keep=2, ledger=ledger)
    local = tmp_path / "last.pt"
    for n in range(1, 5):
        local.write_bytes(f"w{n}".encode())
        ckpts.publish(local, n, 0, lambda path: None)
    assert sorted(ledger.entries) == sorted(store.uri(k) for k in store.objects if k.endswith(".pt"))
    uri = ckpts.publish_result("best.pt", local)
    assert ledger.lookup(uri) is not None and ledger.entries[uri].source == "trained"
    store.put_bytes(ckpts.results_key("best.pt"), b"w5")  # same size, other bytes
    with pytest.raises(CheckpointError, match="changed after yoloq recorded it"):
        ckpts.fetch_result("best.pt", tmp_path / "best.pt")
    assert not (tmp_path / "best.pt").exists()
