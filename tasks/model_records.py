"""The model registry's records (docs/serving.md): versions with their artefacts, aliases with a canary split, and
the deployments that serve an alias. Pure data, shared by the registry adapter, replicas, the API and the CLI."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from routing.names import team_problem
from routing.tiers import Tier
from tasks.errors import InvalidName, ModelNotFound

DEFAULT_LABEL = "prod"
ArtefactKind = Literal["onnx", "weights", "engine"]


class Artefact(BaseModel):
    """One file of a version in S3, with the sha256 a replica checks before it loads it (never trust the store)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    uri: str
    sha256: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
    bytes: int


class ModelVersion(BaseModel):
    """A registered version: what it detects, how it was made and scored, and its artefacts by kind."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    version: int
    classes: dict[int, str]
    imgsz: int
    artefacts: dict[ArtefactKind, Artefact]
    metrics: dict[str, float] = Field(default_factory=dict)  # map50, map50_95 from validation
    source_job: str | None = None
    created_at: str
    created_by: str


class Canary(BaseModel):
    """A share (percent, 0-100) of an alias's requests that go to another version."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    version: int
    share: Annotated[float, Field(ge=0, le=100)]


class AliasState(BaseModel):
    """Where an alias points: its stable version, an optional canary, and the stable versions before (rollback)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    alias: str
    version: int
    canary: Canary | None = None
    history: list[int] = Field(default_factory=list)
    updated_at: str
    updated_by: str

    def versions(self) -> list[int]:
        """The versions a replica of this alias must have loaded."""
        return [self.version] + ([self.canary.version] if self.canary and self.canary.version != self.version else [])


class Deployment(BaseModel):
    """How an alias is served: replica bounds, placement, batching and the autoscaling targets."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    alias: str
    team: str
    tier: Tier = Tier.HIGH
    replicas: Annotated[int, Field(ge=0, le=64)] = 1  # desired now (the autoscaler moves it within min..max)
    min_replicas: Annotated[int, Field(ge=0, le=64)] = 1
    max_replicas: Annotated[int, Field(ge=1, le=64)] = 4
    max_batch: Annotated[int, Field(ge=1, le=256)] = 8
    max_wait_ms: Annotated[float, Field(ge=0, le=1000)] = 5.0
    backend: Literal["auto", "onnx", "torch", "engine"] = "auto"
    memory_gb: Annotated[float, Field(ge=0.125, le=192)] = 2.0
    target_rps_per_replica: Annotated[float, Field(gt=0)] = 50.0
    target_p99_ms: Annotated[float, Field(gt=0)] = 250.0
    # yoloq: the supervisor's serving scaler runs replica jobs; external: something else runs the replicas (KEDA
    # scaling `yoloq replica` pods, infra/k8s/serving.yaml) and yoloq submits none.
    scaler: Literal["yoloq", "external"] = "yoloq"
    created_at: str
    created_by: str


def split_alias(ref: str) -> tuple[str, str]:
    """``name@label`` (a bare ``name`` means ``name@prod``) → (name, label), each a slug, or InvalidName."""
    name, _, label = ref.partition("@")
    label = label or DEFAULT_LABEL
    for part, what in ((name, "model name"), (label, "alias label")):
        if team_problem(part):
            raise InvalidName(f"{what} {part[:80]!r} must be 1-63 of a-z 0-9 - _, starting with a letter or digit")
    return name, label


def alias_ref(ref: str) -> str:
    """The canonical ``name@label`` of what a user typed."""
    name, label = split_alias(ref)
    return f"{name}@{label}"


__all__ = ["AliasState", "Artefact", "Canary", "Deployment", "ModelNotFound", "ModelVersion", "alias_ref",
           "split_alias"]  # fmt: skip
