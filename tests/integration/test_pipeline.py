"""``submit train --deploy``: train → register → gate → alias (stable or canary) → deployment, exactly once, through
preemption; real training jobs on worker processes, the registry in Redis, artefacts in SeaweedFS."""

from __future__ import annotations

from pathlib import Path

import pytest

from infra.deployments import Deployments
from infra.model_registry import ModelRegistry
from infra.redis_client import connect
from infra.s3 import S3Store
from tasks.states import JobState
from tasks.synth import SynthConfig, synthesize
from tasks.trust import sha256_of
from tests.fleet import poll, small_train, yoloq_cli

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def long_epochs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """~30 batches an epoch: a preempt request lands mid-epoch."""
    return synthesize(tmp_path_factory.mktemp("pipeline"), SynthConfig(images=120, imgsz=64, classes=2)).parent


def _registry(services) -> ModelRegistry:
    return ModelRegistry(connect(services.settings.redis_url), services.settings.redis_url)


def test_a_preempted_pipeline_deploys_exactly_once(fleet, client, services, long_epochs, tmp_path):
    # Given a training pipeline deploying to defects@prod, preempted mid-epoch by an operator
    fleet.start("0:A100:40,1:A100:40")
    handle = client.submit(small_train(str(long_epochs), epochs=2, deploy="defects"))
    poll(lambda: int(client.job(handle.job_id).progress.get("batch", 0)) >= 3, 240, "training a few batches in")
    assert yoloq_cli(services, "preempt", handle.job_id).returncode == 0
    record = handle.wait(timeout_s=400)
    # Then it resumed, finished, and registered one version that the alias points at
    assert record.state is JobState.SUCCEEDED, record.events[-1]
    assert [a.outcome for a in record.attempts] == ["preempted", "succeeded"]
    models = _registry(services)
    [version] = models.versions("defects")
    assert (version.version, version.source_job) == (1, record.job_id)
    assert models.alias("defects@prod").version == 1
    assert [e.type for e in record.events].count("model-registered") == 1
    assert record.result["deployed"] == {"alias": "defects@prod", "version": 1, "metrics": version.metrics,
                                         "share": 100.0, "deployment_created": True}  # fmt: skip
    assert {"map50", "map50_95"} <= set(version.metrics)
    # and the artefacts in S3 are what the registry vouches for
    store = S3Store(services.settings)
    for kind in ("onnx", "weights"):
        artefact = version.artefacts[kind]
        local = tmp_path / f"{kind}.bin"
        assert store.get_file(artefact.uri.split("/", 3)[3], local)
        assert sha256_of(local) == artefact.sha256
    # and a scale-to-zero deployment serves the alias
    deployment = Deployments(connect(services.settings.redis_url)).get("defects@prod")
    assert deployment is not None and (deployment.min_replicas, deployment.team) == (0, "vision")


def test_the_next_pipeline_is_a_canary_and_a_failed_gate_moves_nothing(fleet, client, services, tmp_path):
    data = synthesize(tmp_path / "d", SynthConfig(images=24, imgsz=64, classes=2, seed=3)).parent
    fleet.start("0:A100:40")
    first = client.submit(small_train(str(data), deploy="parts@edge")).wait(timeout_s=300)
    assert first.state is JobState.SUCCEEDED, first.events[-1]
    # When a second pipeline deploys as a 10 % canary
    second = client.submit(small_train(str(data), deploy="parts@edge", canary=10.0)).wait(timeout_s=300)
    assert second.state is JobState.SUCCEEDED, second.events[-1]
    state = _registry(services).alias("parts@edge")
    assert state.version == 1 and state.canary is not None and (state.canary.version, state.canary.share) == (2, 10)
    # And a third whose gate cannot pass registers but leaves the alias alone
    third = client.submit(small_train(str(data), deploy="parts@edge", min_map50=1.0)).wait(timeout_s=300)
    assert third.state is JobState.SUCCEEDED, third.events[-1]
    assert "below the gate" in third.result["deployed"]["gated"]
    assert [v.version for v in _registry(services).versions("parts")] == [1, 2, 3]
    assert _registry(services).alias("parts@edge") == state
    assert any(e.type == "deploy-gated" for e in third.events)


def test_pipeline_options_are_checked_at_the_door(services) -> None:
    result = yoloq_cli(services, "submit", "train", "--data", "/x", "--team", "vision", "--canary", "10")
    assert result.returncode != 0
    assert "canary and min_map50 need deploy" in result.stderr
    bad = yoloq_cli(services, "submit", "train", "--data", "/x", "--team", "vision", "--deploy", "Bad Name")
    assert bad.returncode != 0 and "model name" in bad.stderr
