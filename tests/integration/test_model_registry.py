"""Issue 16 item 1, the model registry: versions registered once (artefacts in the session's SeaweedFS with their
sha256, weights in the trust ledger), aliases moved with a canary split, promoted and rolled back (each audited), bad
input that changes nothing, serving figures, and the same through the real `yoloq model` command and `yoloq api`."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import onnx
import pytest
from onnx import TensorProto, helper

from infra.audit import AuditLog
from infra.model_registry import ModelRegistry
from infra.redis_client import connect
from infra.s3 import S3Store
from infra.serve_stats import ServeStats
from infra.trusted_files import TrustedFiles
from routing.canary import key_fraction
from tasks.deploy_stage import _move_alias, moved_before, served_share
from tasks.errors import InvalidName, ModelNotFound, SpecRejected, StorageError
from tasks.model_records import ArtefactKind
from tasks.specs import TrainSpec
from tests.fleet import clean_redis, yoloq_cli
from tests.integration.test_api import TOKEN, Api, serving_api

pytestmark = pytest.mark.integration

ADMIN = f"Bearer {TOKEN}"
CLASSES = {0: "square", 1: "circle"}


def make_onnx(path: Path, names: dict[int, str] | None = CLASSES, imgsz: str | None = "[64, 64]") -> Path:
    """A tiny ONNX graph (Identity) carrying Ultralytics' metadata, as `model register` reads it."""
    shape = [1, 3, 64, 64]
    graph = helper.make_graph([helper.make_node("Identity", ["images"], ["output0"])], "g",
                              [helper.make_tensor_value_info("images", TensorProto.FLOAT, shape)],
                              [helper.make_tensor_value_info("output0", TensorProto.FLOAT, shape)])  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    meta = {"names": str(names) if names else None, "imgsz": imgsz, "author": "test"}
    helper.set_model_props(model, {k: v for k, v in meta.items() if v is not None})
    onnx.save(model, str(path))
    return path


@pytest.fixture
def models(services: Any) -> Iterator[ModelRegistry]:
    """The registry on a clean Redis (and clean again after)."""
    clean_redis(services)
    url = services.settings.redis_url
    yield ModelRegistry(connect(url), url)
    clean_redis(services)


@pytest.fixture
def store(services: Any) -> S3Store:
    return S3Store(services.settings)


@pytest.fixture
def files(tmp_path: Path) -> Callable[[str], dict[ArtefactKind, Path]]:
    """An ONNX export and its weights, different bytes per tag."""

    def make(tag: str) -> dict[ArtefactKind, Path]:
        folder = tmp_path / tag
        folder.mkdir()
        weights = folder / "best.pt"
        weights.write_bytes(f"weights {tag} ".encode() * 100)
        return {"onnx": make_onnx(folder / "best.onnx"), "weights": weights}

    return make


def _audit(services: Any) -> list[dict[str, Any]]:
    return list(reversed(AuditLog(connect(services.settings.redis_url)).entries(1000)))


def _snapshot(services: Any) -> dict[str, Any]:
    """Every model, alias and audit key's content: what bad input must leave as it was."""
    r = connect(services.settings.redis_url)
    keys = sorted(str(k) for k in r.scan_iter(match="yoloq:model*"))
    return {"keys": {k: r.dump(k) for k in keys}, "audit": r.xlen("yoloq:audit")}


def test_register_uploads_each_artefact_with_its_sha256_and_trusts_the_weights(models, store, files, services):
    given = files("a")
    version = models.register("shapes", given, store, classes=CLASSES, imgsz=64, metrics={"map50": 0.5},
                              by="cli:tester")  # fmt: skip
    assert (version.name, version.version, version.classes, version.imgsz) == ("shapes", 1, CLASSES, 64)
    for kind, path in given.items():
        artefact = version.artefacts[kind]
        key = f"models/shapes/v1/{path.name}"
        assert artefact.uri == store.uri(key)
        stored = store.get_bytes(key)
        assert stored == path.read_bytes()
        assert (artefact.sha256, artefact.bytes) == (hashlib.sha256(stored).hexdigest(), len(stored))
    ledger = TrustedFiles(connect(services.settings.redis_url))
    trusted = ledger.lookup(version.artefacts["weights"].uri)
    assert trusted is not None and (trusted.sha256, trusted.by) == (version.artefacts["weights"].sha256, "cli:tester")
    assert ledger.lookup(version.artefacts["onnx"].uri) is None  # a protobuf graph is not a pickle: no record
    assert models.version("shapes", 1) == version and models.names() == ["shapes"]
    registered = [e for e in _audit(services) if e["type"] == "model-registered"]
    assert [(e["by"], e["model"], e["version"]) for e in registered] == [("cli:tester", "shapes", 1)]
    # The next registration is the next number, in its own folder
    second = models.register("shapes", files("b"), store, classes=CLASSES, imgsz=64, by="cli:tester")
    assert second.version == 2 and second.artefacts["onnx"].uri.endswith("models/shapes/v2/best.onnx")
    assert [v.version for v in models.versions("shapes")] == [1, 2]


def test_a_pipeline_rerun_leaves_an_alias_an_operator_moved_after_its_move(models, files, store, services):
    # Given defects@prod at v1, and a pipeline (job j2) that moved it to its v2 and then crashed before its end
    for tag in ("a", "b"):
        models.register("shapes", files(tag), store, classes=CLASSES, imgsz=64, by="cli:tester")
    models.set_alias("shapes@prod", 1, "cli:tester")
    spec = TrainSpec(data="d.yaml", team="ops", deploy="shapes@prod")
    audit = AuditLog(connect(services.settings.redis_url))
    assert _move_alias(models, audit, spec, 2, "job:j2").version == 2
    # When an operator rolls it back, and the pipeline's next attempt runs the stage again
    models.rollback("shapes@prod", "cli:operator")
    again = _move_alias(models, audit, spec, 2, "job:j2")
    # Then the operator's choice stands (the audit log proves the pipeline moved it once already)
    assert (again.version, again.updated_by) == (1, "cli:operator") and served_share(again, 2) == 0.0
    assert moved_before(audit, "shapes@prod", "job:j2") and not moved_before(audit, "shapes@prod", "job:j3")
    # And another pipeline still may move it
    assert _move_alias(models, audit, spec, 2, "job:j3").version == 2


def test_a_source_job_registers_once_even_after_a_failed_attempt(models, files, services, monkeypatch):
    given, store, failing = files("a"), S3Store(services.settings), S3Store(services.settings)

    def reset(key: str, path: Path) -> int:
        raise StorageError(f"S3 upload of {key} failed: connection reset")

    monkeypatch.setattr(failing, "put_file", reset)
    with pytest.raises(StorageError):  # an attempt that dies mid-registration
        models.register("shapes", given, failing, classes=CLASSES, imgsz=64, source_job="j1", by="job:j1")
    with pytest.raises(ModelNotFound):
        models.versions("shapes")  # nothing registered yet
    first = models.register("shapes", given, store, classes=CLASSES, imgsz=64, source_job="j1", by="job:j1")
    again = models.register("shapes", files("b"), store, classes=CLASSES, imgsz=64, source_job="j1", by="job:j1")
    other = models.register("shapes", files("c"), store, classes=CLASSES, imgsz=64, source_job="j2", by="job:j2")
    assert (first.version, again, other.version) == (1, first, 2)  # the re-run got v1 back, not a v2
    assert connect(services.settings.redis_url).hgetall("yoloq:model:shapes:jobs") == {"j1": "1", "j2": "2"}
    registered = [(e["job_id"], e["version"]) for e in _audit(services) if e["type"] == "model-registered"]
    assert registered == [("j1", 1), ("j2", 2)]  # audited once each, under the job


@pytest.mark.parametrize(
    ("name", "change", "error", "reason"),
    [
        ("Bad Name", {}, InvalidName, "model name 'Bad Name' must be 1-63"),
        ("shapes@prod", {}, InvalidName, "names an alias"),
        ("shapes", {"files": {}}, SpecRejected, "needs artefacts of the kinds onnx, weights, engine"),
        ("shapes", {"files": {"model": Path(__file__)}}, SpecRejected, "needs artefacts of the kinds"),
        ("shapes", {"files": {"onnx": Path("/nonexistent/m.onnx")}}, SpecRejected, "m.onnx: no such file, or empty"),
        ("shapes", {"imgsz": 0}, SpecRejected, "imgsz must be 1-16384"),
        ("shapes", {"classes": {}}, SpecRejected, "at least one"),
        ("shapes", {"metrics": {"map50": float("nan")}}, SpecRejected, "metrics must be finite numbers"),
    ],
)
def test_bad_registration_stores_nothing(models, store, files, services, name, change, error, reason):
    before, objects = _snapshot(services), store.list_objects("models/")
    fields = {"files": files("a"), "classes": CLASSES, "imgsz": 64, "metrics": None} | change
    with pytest.raises(error, match=reason):
        models.register(name, fields["files"], store, classes=fields["classes"], imgsz=fields["imgsz"],
                        metrics=fields["metrics"], by="cli:tester")  # fmt: skip
    assert _snapshot(services) == before
    assert store.list_objects("models/") == objects  # (the session's store keeps other tests' uploads)


def _three_versions(models: ModelRegistry, store: S3Store, files: Callable[[str], dict[ArtefactKind, Path]]) -> None:
    for tag in "abc":
        models.register("shapes", files(tag), store, classes=CLASSES, imgsz=64, by="cli:tester")


def test_alias_canary_promote_and_rollback_each_audited(models, store, files, services):
    _three_versions(models, store, files)
    state = models.set_alias("shapes", 1, by="cli:ops")  # a bare name is name@prod
    assert (state.alias, state.version, state.canary, state.history) == ("shapes@prod", 1, None, [])
    state = models.set_canary("shapes@prod", 2, 10, by="cli:ops")
    assert (state.version, state.canary.version, state.canary.share) == (1, 2, 10)
    keys = [f"client-{i}" for i in range(2000)]
    served = {key: models.resolve("shapes@prod", key)[1] for key in keys}
    assert served == {key: 2 if key_fraction(key) < 0.10 else 1 for key in keys}  # each key by its sha256
    assert 150 <= sum(v == 2 for v in served.values()) <= 250
    state = models.promote("shapes@prod", by="cli:ops")
    assert (state.version, state.canary, state.history) == (2, None, [1])
    assert models.resolve("shapes", None) == (state, 2)
    models.set_canary("shapes@prod", 3, 50, by="cli:ops")
    state = models.rollback("shapes@prod", by="key:oncall")  # back to v1, the canary dropped with it
    assert (state.version, state.canary, state.history, state.updated_by) == (1, None, [], "key:oncall")
    assert models.alias("shapes@prod") == state
    with pytest.raises(SpecRejected, match="no previous version to roll back to"):
        models.rollback("shapes@prod", by="cli:ops")
    moves = [(e["type"], e["alias"], e["version"], e["by"]) for e in _audit(services) if "alias" in e]
    assert moves == [
        ("model-alias-set", "shapes@prod", 1, "cli:ops"),
        ("model-canary-set", "shapes@prod", 1, "cli:ops"),
        ("model-promoted", "shapes@prod", 2, "cli:ops"),
        ("model-canary-set", "shapes@prod", 2, "cli:ops"),
        ("model-rolled-back", "shapes@prod", 1, "key:oncall"),
    ]


def test_moving_the_alias_onto_its_canary_clears_the_canary_and_keeps_history(models, store, files):
    _three_versions(models, store, files)
    models.set_alias("shapes@prod", 1, by="cli:ops")
    models.set_canary("shapes@prod", 3, 20, by="cli:ops")
    state = models.set_alias("shapes@prod", 3, by="cli:ops")
    assert (state.version, state.canary, state.history) == (3, None, [1])
    models.set_canary("shapes@prod", 2, 20, by="cli:ops")
    state = models.set_canary("shapes@prod", 2, 0, by="cli:ops")  # share 0 removes it
    assert (state.version, state.canary, state.history) == (3, None, [1])
    models.set_alias("shapes@staging", 2, by="cli:ops")
    assert [a.alias for a in models.aliases("shapes")] == ["shapes@prod", "shapes@staging"]


@pytest.mark.parametrize(
    ("act", "error", "reason"),
    [
        (lambda m: m.set_alias("shapes@prod", 9, by="x"), ModelNotFound, "model shapes has no version 9"),
        (lambda m: m.set_alias("nothing@prod", 1, by="x"), ModelNotFound, "model nothing has no version 1"),
        (lambda m: m.set_alias("shapes@Prod!", 1, by="x"), InvalidName, "alias label 'Prod!'"),
        (lambda m: m.set_canary("shapes@prod", 2, 150, by="x"), SpecRejected, "0-100 %, got 150"),
        (lambda m: m.set_canary("shapes@prod", 2, -1, by="x"), SpecRejected, "0-100 %, got -1"),
        (lambda m: m.set_canary("shapes@prod", 1, 10, by="x"), SpecRejected, "v1 is shapes@prod's stable version"),
        (lambda m: m.set_canary("shapes@prod", 7, 10, by="x"), ModelNotFound, "no version 7"),
        (lambda m: m.set_canary("shapes@staging", 2, 10, by="x"), ModelNotFound, "no alias shapes@staging"),
        (lambda m: m.promote("shapes@prod", by="x"), SpecRejected, "no canary to promote"),
        (lambda m: m.rollback("shapes@staging", by="x"), ModelNotFound, "no alias shapes@staging"),
        (lambda m: m.version("shapes", 4), ModelNotFound, "no version 4"),
        (lambda m: m.versions("nothing"), ModelNotFound, "no model named nothing"),
    ],
)
def test_bad_alias_changes_change_nothing(models, store, files, services, act, error, reason):
    _three_versions(models, store, files)
    models.set_alias("shapes@prod", 1, by="cli:ops")
    before = _snapshot(services)
    with pytest.raises(error, match=reason):
        act(models)
    assert _snapshot(services) == before


def test_serving_figures_per_version_and_alias(services, models):
    stats = ServeStats(connect(services.settings.redis_url), services.settings.redis_url)
    stats.record("shapes@prod", "shapes", 1, latencies_ms=[10.0, 20.0, 30.0, 40.0], detections=[2, 4, 0, 0],
                 confidences=[0.9, 0.7, 0.8, 0.6, 0.4, 0.2], errors=1, batch_size=6)  # fmt: skip
    stats.record("shapes@prod", "shapes", 2, latencies_ms=[100.0, 200.0], detections=[1, 1], confidences=[0.2, 0.4],
                 errors=0, batch_size=0)  # the same batch's canary requests: the histogram counts it once  # fmt: skip
    stats.record("shapes@prod", "shapes", 1, latencies_ms=[50.0], detections=[0], confidences=[], errors=0,
                 batch_size=1)  # fmt: skip
    assert stats.version("shapes", 1) == {"requests": 5, "errors": 1, "p50_ms": 30.0, "p99_ms": 50.0,
                                          "mean_detections": 1.5, "mean_confidence": 0.6}  # fmt: skip
    assert stats.version("shapes", 2) == {"requests": 2, "errors": 0, "p50_ms": 100.0, "p99_ms": 200.0,
                                          "mean_detections": 1.0, "mean_confidence": 0.3}  # fmt: skip
    assert stats.version("shapes", 3) == {"requests": 0, "errors": 0, "p50_ms": None, "p99_ms": None,
                                          "mean_detections": None, "mean_confidence": None}  # fmt: skip
    assert stats.batch_sizes("shapes@prod") == {1: 1, 6: 1}
    stats.record("shapes@prod", "shapes", 3, latencies_ms=[1.0] * 2000 + [900.0] * 100, detections=[0] * 2100,
                 confidences=[], errors=0, batch_size=0)  # fmt: skip
    r = connect(services.settings.redis_url)
    assert r.llen("yoloq:serve:lat:shapes:3") == 2048  # a window of the newest, not all time
    assert stats.version("shapes", 3)["requests"] == 2100
    for seconds in range(105):
        stats.record_cold_start("shapes@prod", seconds / 10)
    assert stats.cold_starts("shapes@prod")[:2] == [10.4, 10.3] and len(stats.cold_starts("shapes@prod")) == 100


def test_the_model_command(services, models, store, files, tmp_path):
    given = files("a")
    done = yoloq_cli(services, "model", "register", "shapes", "--onnx", str(given["onnx"]), "--weights",
                     str(given["weights"]), "--map50", "0.61", "--json")  # fmt: skip
    assert done.returncode == 0, done.stderr
    first = json.loads(done.stdout)
    assert (first["version"], first["classes"], first["imgsz"], first["metrics"]) == (1, {"0": "square",
            "1": "circle"}, 64, {"map50": 0.61})  # fmt: skip
    assert first["created_by"].startswith("cli")
    # From S3, with no imgsz in the metadata: the input's static shape says it
    store.put_file("incoming/plain.onnx", make_onnx(tmp_path / "plain.onnx", imgsz=None))
    done = yoloq_cli(services, "model", "register", "shapes", "--onnx", store.uri("incoming/plain.onnx"), "--json")
    assert done.returncode == 0, done.stderr
    assert (json.loads(done.stdout)["version"], json.loads(done.stdout)["imgsz"]) == (2, 64)
    for step in (("alias", "shapes@prod", "1"), ("canary", "shapes@prod", "2", "--share", "25")):
        assert yoloq_cli(services, "model", *step).returncode == 0
    done = yoloq_cli(services, "model", "list", "--json")
    assert [(m["name"], m["latest"], m["versions"]) for m in json.loads(done.stdout)] == [("shapes", 2, 2)]
    ServeStats(connect(services.settings.redis_url)).record("shapes@prod", "shapes", 2, latencies_ms=[12.0],
                                                             detections=[3], confidences=[0.5, 0.6, 0.7],
                                                             errors=0, batch_size=1)  # fmt: skip
    ServeStats(connect(services.settings.redis_url)).record_cold_start("shapes@prod", 4.5)
    shown = json.loads(yoloq_cli(services, "model", "show", "shapes@prod", "--json").stdout)
    assert [(v["version"], v["serving"]["requests"]) for v in shown["versions"]] == [(1, 0), (2, 1)]
    assert shown["aliases"][0]["canary"] == {"version": 2, "share": 25.0}
    assert shown["aliases"][0]["serving"] == {"batch_sizes": {"1": 1}, "cold_starts_s": [4.5]}
    text = yoloq_cli(services, "model", "show", "shapes").stdout
    assert "v2  " in text and "requests=1" in text and "shapes@prod → v1, canary v2 at 25 %" in text
    done = yoloq_cli(services, "model", "promote", "shapes@prod", "--json")
    assert (json.loads(done.stdout)["version"], json.loads(done.stdout)["history"]) == (2, [1])
    done = yoloq_cli(services, "model", "rollback", "shapes@prod")
    assert done.returncode == 0 and "shapes@prod → v1" in done.stdout
    # Errors: one line, exit 1, nothing changed
    before = _snapshot(services)
    failures: list[tuple[tuple[str, ...], str]] = [
        (("alias", "shapes@prod", "9"), "model shapes has no version 9"),
        (("canary", "shapes@prod", "2", "--share", "101"), "a canary share is 0-100 %, got 101"),
        (("rollback", "shapes@prod"), "no previous version to roll back to"),
        (("show", "nothing"), "no model named nothing"),
        (("register", "shapes", "--onnx", str(make_onnx(tmp_path / "bare.onnx", names=None))), "no class names"),
        (("register", "shapes", "--onnx", str(tmp_path / "missing.onnx")), "missing.onnx is not a file"),
        (("register", "shapes", "--onnx", str(given["weights"])), "is not an ONNX model"),
    ]
    for args, reason in failures:
        done = yoloq_cli(services, "model", *args)
        assert done.returncode == 1 and done.stderr.startswith("yoloq: error: ") and reason in done.stderr, done
        assert len(done.stderr.strip().splitlines()) == 1
    assert _snapshot(services) == before


@pytest.fixture
def api(services: Any, models: ModelRegistry) -> Iterator[Api]:
    with serving_api(services, "api-models") as client:
        yield client


def _key(services: Any, name: str, scope: str) -> str:
    done = yoloq_cli(services, "key", "create", name, "--team", "vision", "--scope", scope)
    assert done.returncode == 0, done.stderr
    return f"Bearer {done.stdout.strip()}"


def test_the_models_api(api, services, models, store, files):
    _three_versions(models, store, files)
    ops, ci = _key(services, "ops-vision", "operate"), _key(services, "ci-vision", "submit")
    base = "/api/v1/models/shapes/aliases/prod"
    # A submit key reads but may not move an alias: 403 before the body is read, nothing changed
    before = _snapshot(services)
    for method, path, body in [("PUT", base, {"version": 1}), ("PUT", f"{base}/canary", {"version": 2, "share": 5}),
                               ("POST", f"{base}/promote", None), ("POST", f"{base}/rollback", None)]:  # fmt: skip
        code, doc = api.call(method, path, body, auth=ci)
        assert (code, doc) == (403, {"error": "key 'ci-vision' may not model: that needs the admin or operate scope"})
    assert _snapshot(services) == before
    assert api.call("GET", "/api/v1/models", auth=ci) == (200, [{"name": "shapes", "latest": 3, "versions": 3,
                                                                 "aliases": []}])  # fmt: skip
    # An operate key moves it; each change is audited under the key
    code, state = api.call("PUT", base, {"version": 1}, auth=ops)
    assert (code, state["alias"], state["version"], state["updated_by"]) == (200, "shapes@prod", 1, "key:ops-vision")
    code, state = api.call("PUT", f"{base}/canary", {"version": 2, "share": 30}, auth=ops)
    assert (code, state["canary"]) == (200, {"version": 2, "share": 30.0})
    code, state = api.call("POST", f"{base}/promote", auth=ops)
    assert (code, state["version"], state["history"]) == (200, 2, [1])
    code, state = api.call("POST", f"{base}/rollback", auth=ADMIN)
    assert (code, state["version"], state["updated_by"]) == (200, 1, "key:admin")
    code, shown = api.call("GET", "/api/v1/models/shapes", auth=ci)
    assert code == 200 and [v["version"] for v in shown["versions"]] == [1, 2, 3]
    assert shown["versions"][0]["serving"]["requests"] == 0 and shown["aliases"][0]["version"] == 1
    moves = [(e["type"], e["by"]) for e in _audit(services) if e.get("alias") == "shapes@prod"]
    assert moves == [("model-alias-set", "key:ops-vision"), ("model-canary-set", "key:ops-vision"),
                     ("model-promoted", "key:ops-vision"), ("model-rolled-back", "key:admin")]  # fmt: skip
    # Bad input: 400 / 404 / 400, one line, nothing changed
    before = _snapshot(services)
    missing = "model shapes has no version 9 (yoloq model show shapes lists them)"
    assert api.call("PUT", base, {"version": 9}, auth=ops) == (404, {"error": missing})
    code, doc = api.call("PUT", f"{base}/canary", {"version": 2, "share": 150}, auth=ops)
    assert code == 400 and "share" in doc["error"]
    assert api.call("POST", f"{base}/promote", auth=ops)[0] == 400  # no canary
    assert api.call("GET", "/api/v1/models/nothing", auth=ops)[0] == 404
    assert api.call("PUT", "/api/v1/models/Bad!/aliases/prod", {"version": 1}, auth=ops)[0] == 400
    assert _snapshot(services) == before
