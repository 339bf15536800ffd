"""The public surface is explicit: `yoloq.__all__` is pinned and every name resolves."""

from __future__ import annotations

import pytest

import yoloq

pytestmark = pytest.mark.unit

EXPECTED = [
    "Attempt",
    "BrokerUnavailable",
    "Cancelled",
    "CheckpointError",
    "Client",
    "ConfigError",
    "Event",
    "ExportSpec",
    "GpuUnavailable",
    "InferSpec",
    "InvalidTransition",
    "JobHandle",
    "JobNotFound",
    "JobRecord",
    "JobSpec",
    "JobState",
    "ModelNotFound",
    "Preempted",
    "ProbeSpec",
    "RateLimited",
    "ServeSpec",
    "ServiceError",
    "ServingUnavailable",
    "Settings",
    "SpecRejected",
    "StorageError",
    "Tier",
    "TrainSpec",
    "UploadRejected",
    "YoloqError",
    "__version__",
    "load_settings",
    "parse_spec",
]


def test_exported_names_are_pinned() -> None:
    assert list(yoloq.__all__) == EXPECTED
    assert len(set(yoloq.__all__)) == len(yoloq.__all__)


@pytest.mark.parametrize("name", EXPECTED)
def test_every_name_resolves(name: str) -> None:
    assert hasattr(yoloq, name)
    assert getattr(yoloq, name) is not None


def test_star_import_gives_exactly_the_public_names() -> None:
    namespace: dict[str, object] = {}
    exec("from yoloq import *", namespace)
    assert set(namespace) - {"__builtins__"} == set(EXPECTED)


def test_version_is_a_string() -> None:
    assert isinstance(yoloq.__version__, str)
    assert yoloq.__version__.count(".") == 2


def test_every_exported_error_derives_from_the_one_root() -> None:
    exported = [getattr(yoloq, n) for n in yoloq.__all__]
    exceptions = [e for e in exported if isinstance(e, type) and issubclass(e, BaseException)]
    assert yoloq.YoloqError in exceptions
    assert yoloq.SpecRejected in exceptions
    assert all(issubclass(e, yoloq.YoloqError) for e in exceptions)


def test_public_names_are_the_implementations() -> None:
    from routing.tiers import Tier
    from tasks.specs import TrainSpec, parse_spec

    assert yoloq.Tier is Tier
    assert yoloq.TrainSpec is TrainSpec
    assert yoloq.parse_spec is parse_spec
