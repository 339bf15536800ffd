"""The trust rule for pickled files against the real stack (issue 15 item 1b): a ``.pt`` planted in the bucket or in
a data root is refused at submit (Python client and HTTP API); an operator's import is audited and lets it run; a
recorded file overwritten afterwards (imported weights, a checkpoint together with its manifest) is refused on the
worker and never unpickled; a label cache planted in an S3 dataset is rebuilt, not unpickled. The planted pickle's
``__reduce__`` only creates a marker file: if the marker exists, the file was unpickled."""

from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from infra.processes import ManagedProcess, free_port
from infra.s3 import S3Store
from tasks import label_cache
from tasks.checkpoints import CheckpointStore
from tasks.errors import SpecRejected
from tasks.specs import ExportSpec
from tasks.states import JobState
from tests.fleet import poll, small_dataset, small_train, yoloq_cli

pytestmark = pytest.mark.integration

TOKEN = "trust-token-" + os.urandom(16).hex()
REFUSED = "is not a trusted weights file: yoloq did not write it and no operator imported it"


class _Planted:
    """Unpickling this creates ``marker``: a harmless stand-in for the ``os.system`` of the original attack."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self) -> tuple[Any, tuple[str, str]]:
        return open, (self.marker, "w")


def planted(marker: Path, size: int = 0) -> bytes:
    """The malicious pickle, padded to ``size`` bytes (pickle stops reading at its STOP opcode)."""
    body = pickle.dumps(_Planted(marker))
    return body + b"\0" * max(0, size - len(body))


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return small_dataset(tmp_path_factory.mktemp("synth"), seed=5)


_train = small_train


def _export(model: str) -> ExportSpec:
    return ExportSpec(model=model, imgsz=64, team="vision", memory_gb=2)


def _post(base: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
    request = urllib.request.Request(base + "/api/v1/jobs", data=json.dumps(body).encode(), headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


@pytest.fixture
def api(services: Any, fleet: Any, tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A real ``yoloq api`` whose data root is ``tmp_path/root`` (a remote caller may name local paths there)."""
    root = tmp_path / "root"
    root.mkdir()
    port = free_port()
    env = {**services.env(), "YOLOQ_API_TOKEN": TOKEN, "YOLOQ_DATA_ROOTS": str(root)}
    proc = ManagedProcess("api", [sys.executable, "-m", "yoloq", "api", "--port", str(port)],
                          services.settings.home / "logs" / "api-trust.log", env)  # fmt: skip
    base = f"http://127.0.0.1:{port}"

    def healthy() -> bool:
        try:
            with urllib.request.urlopen(base + "/healthz", timeout=5) as response:
                return bool(response.status == 200)
        except OSError:
            return False

    poll(healthy, 30, "the API to answer /healthz")
    yield base, root
    proc.stop(10)


def test_a_planted_pickle_is_refused_at_submit_by_the_client_and_the_api(api, client, services, tmp_path):
    # Given a malicious .pt planted in the real bucket and in a local data root (named like a variant: a train spec
    # takes only such names)
    base, root = api
    marker = tmp_path / "unpickled"
    store = S3Store(services.settings)
    store.put_bytes("planted/yolov8n.pt", planted(marker))
    (root / "yolov8n.pt").write_bytes(planted(marker))
    (root / "images").mkdir()
    before = len(client.jobs(limit=1000))
    for model in (store.uri("planted/yolov8n.pt"), str(root / "yolov8n.pt")):
        specs = [
            {"kind": "export", "model": model, "team": "vision"},
            {"kind": "infer", "model": model, "source": str(root / "images"), "team": "vision"},
            {"kind": "train", "model": model, "data": str(root), "team": "vision"},
        ]
        for spec in specs:
            # When it is named in a job through the Python client and through the HTTP API
            with pytest.raises(SpecRejected, match=REFUSED):
                client.submit(spec)
            code, doc = _post(base, spec)
            # Then both refuse it at the door, say why and what to do, and nothing is registered or run
            assert code == 400 and REFUSED in doc["error"] and "yoloq weights trust" in doc["error"], (spec, doc)
    assert len(client.jobs(limit=1000)) == before
    assert not marker.exists()


def test_an_operator_import_is_audited_and_a_file_changed_after_it_is_never_loaded(fleet, client, services, dataset,
                                                                                   tmp_path):  # fmt: skip
    # Given weights trained by a yoloq job (recorded when written): they export end to end
    fleet.start("0:A100:40")
    trained = client.submit(_train(str(dataset))).wait(timeout_s=300)
    assert trained.state is JobState.SUCCEEDED, trained.events[-1]
    exported = client.submit(_export(trained.result["best"])).wait(timeout_s=180)
    assert exported.state is JobState.SUCCEEDED, exported.events[-1]
    # When the same bytes are put under another key by someone other than yoloq, they are refused at submit
    store = S3Store(services.settings)
    good = tmp_path / "good.pt"
    assert store.get_file(trained.result["best"].split("/", 3)[3], good)
    store.put_file("imported/good.pt", good)
    uri, sha = store.uri("imported/good.pt"), hashlib.sha256(good.read_bytes()).hexdigest()
    with pytest.raises(SpecRejected, match=REFUSED):
        client.submit(_export(uri))
    # Then an operator's import (with the expected checksum) is audited with actor and sha256, and the job runs
    done = yoloq_cli(services, "weights", "trust", uri, "--sha256", sha, "--json")
    assert done.returncode == 0 and json.loads(done.stdout)["sha256"] == sha, done.stderr
    entry = next(e for e in client.audit(limit=20) if e["type"] == "weights-trusted")
    assert (entry["location"], entry["sha256"]) == (uri, sha) and entry["by"].startswith("cli:")
    assert client.submit(_export(uri)).wait(timeout_s=180).state is JobState.SUCCEEDED
    # When an attacker overwrites the imported key with a pickle of the same size, the worker refuses to load it
    marker = tmp_path / "unpickled"
    store.put_bytes("imported/good.pt", planted(marker, size=good.stat().st_size))
    record = client.submit(_export(uri)).wait(timeout_s=180)
    assert record.state is JobState.FAILED and "changed after yoloq recorded it" in (record.error or ""), record.error
    assert "refused, not loaded" in (record.error or "") and not marker.exists()
    # And a revoked import is refused at submit again (audited too)
    assert yoloq_cli(services, "weights", "revoke", uri).returncode == 0
    assert next(e for e in client.audit(limit=20) if e["type"].startswith("weights-"))["type"] == "weights-revoked"
    with pytest.raises(SpecRejected, match=REFUSED):
        client.submit(_export(uri))


def test_a_checkpoint_rewritten_in_the_bucket_is_refused_on_resume(fleet, client, services, dataset, tmp_path):
    # Given a training job that has published a checkpoint, whose worker is lost (kill -9)
    fleet.start("0:A100:40")
    handle = client.submit(_train(str(dataset), epochs=2))
    poll(lambda: client.job(handle.job_id).checkpoint, 180, "a published checkpoint")
    fleet.kill9(0)
    # When an attacker who can write the bucket replaces every checkpoint and makes the manifest agree with them
    store, marker = S3Store(services.settings), tmp_path / "unpickled"
    ckpts = CheckpointStore(store, handle.job_id)
    manifest = ckpts.manifest()
    evil = planted(marker)
    refs = [ref for ref in (manifest.get("newest"), manifest.get("previous"), *manifest["entries"].values()) if ref]
    for ref in refs:
        store.put_bytes(ref["key"], evil)
        ref.update(sha256=hashlib.sha256(evil).hexdigest(), size=len(evil))
    store.put_json(ckpts.manifest_key, manifest)
    fleet.restart(0)
    record = handle.wait(timeout_s=300)
    # Then the resumed attempt refuses them before anything unpickles them, says why, and trains from scratch
    assert record.state is JobState.SUCCEEDED, record.events[-1]
    skipped = [e.reason or "" for e in record.events if e.type == "checkpoint-fallback"]
    assert skipped and all("changed after yoloq recorded it" in reason for reason in skipped), skipped
    assert any(e.type == "restart" for e in record.events)
    assert not marker.exists()


def test_a_label_cache_planted_in_an_s3_dataset_is_rebuilt_not_unpickled(fleet, client, services, dataset, tmp_path):
    # Given an S3 dataset whose label caches were replaced by pickles that name a callable (valid .npy files)
    store, marker = S3Store(services.settings), tmp_path / "unpickled"
    for path in dataset.rglob("*"):
        if path.is_file() and not path.name.endswith(".cache"):
            store.put_file(f"datasets/planted/{path.relative_to(dataset)}", path)
    evil = io.BytesIO()
    np.save(evil, np.array({"labels": [_Planted(marker)]}, dtype=object), allow_pickle=True)
    for split in ("train", "val"):
        store.put_bytes(f"datasets/planted/labels/{split}.cache", evil.getvalue())
    # When a job trains on it
    fleet.start("0:A100:40")
    record = client.submit(_train(f"s3://{store.bucket}/datasets/planted/")).wait(timeout_s=300)
    # Then it trains (Ultralytics rebuilds caches it may not read), nothing was unpickled, and the caches it wrote
    # are ones the safe reader reads: a normal dataset keeps its cache
    assert record.state is JobState.SUCCEEDED, record.events[-1]
    assert not marker.exists()
    copies = [p.parent for p in (services.settings.home / "cache" / "datasets").glob("*/.complete")
              if "datasets/planted" in p.read_text()]  # fmt: skip
    assert len(copies) == 1 and label_cache.read(copies[0] / "labels" / "train.cache")["labels"]
