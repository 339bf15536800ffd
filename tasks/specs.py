"""Job specs: what a user asks yoloq to run (pydantic, frozen, unknown fields rejected).

Specs are pure data and never import Celery, so the CLI, the HTTP API and tests validate them cheaply. The ``kind``
field discriminates ``train | infer | export | probe | serve``; :func:`parse_spec` turns any validation failure into one
:class:`~tasks.errors.SpecRejected` with a one-line reason.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)

from routing import memory
from routing.names import TEAM_PATTERN, label_problem
from routing.tiers import Tier, parse_tier
from tasks.errors import SpecRejected, clipped
from tasks.model_records import alias_ref

# A tier as users write it ("HIGH", " low"): the specs, the HTTP API's queries and bodies all read it this way.
TierName = Annotated[Tier, BeforeValidator(lambda value: parse_tier(value) if isinstance(value, str) else value)]


# A location (dataset, image source, weights) is a path or an s3:// URI: at most PATH_MAX, more than any S3 URI
# (bucket 63 + key 1024 bytes). Longer is refused before anything reads it (an oversized spec was registered).
MAX_LOCATION = 4096
Location = Annotated[str, Field(min_length=1, max_length=MAX_LOCATION)]


MAX_GANG = 8  # GPUs of one host a job may ask for (docs/placement.md)


def gpus_of(spec: dict[str, Any]) -> int:
    """How many GPUs a stored spec asks for (1 unless it is a gang): what placement and the worker's check read."""
    value = spec.get("gpus", 1)
    return value if isinstance(value, int) and value > 1 else 1


def _label(value: str) -> str:
    if problem := label_problem(value):
        raise ValueError(problem)
    return value


class _Spec(BaseModel):
    """Fields every job has: who it is for, how urgent, and an optional memory override.

    Numbers and flags are strict: ``"5"`` is not a number and ``true`` is not 1, so a caller's type mistake is an
    error, not a guess (an int is still a float).
    """

    model_config = ConfigDict(frozen=True, extra="forbid", use_enum_values=False)

    tier: TierName = Tier.MEDIUM
    team: Annotated[str, Field(pattern=TEAM_PATTERN)]
    name: Annotated[str, AfterValidator(_label)] | None = None
    memory_gb: Annotated[StrictFloat, Field(ge=0.125, le=192)] | None = None
    # How long the submitter expects it to run: the ETA's runtime when no history of the same shape exists
    # (routing/runtime_estimate.py); positive, at most 30 days.
    expected_minutes: Annotated[StrictFloat, Field(gt=0, le=30 * 24 * 60)] | None = None

    def _override_mib(self) -> int | None:
        return None if self.memory_gb is None else int(self.memory_gb * 1024)


def _alias(value: str) -> str:
    try:
        return alias_ref(value)
    except SpecRejected as err:
        raise ValueError(str(err)) from None


def _yolo_variant(value: str) -> str:
    if memory.parse_variant(value) is None:
        raise ValueError(f"{value!r} is not a YOLO variant (expected e.g. yolov8n.yaml, yolo11s.yaml)")
    return value


class TrainSpec(_Spec):
    """Train a YOLO model from its yaml on a dataset (local path or ``s3://`` prefix with a data.yaml)."""

    kind: Literal["train"] = "train"
    data: Location
    model: Location = "yolov8n.yaml"
    epochs: Annotated[StrictInt, Field(ge=1, le=10_000)] = 10
    imgsz: Annotated[StrictInt, Field(ge=32, le=4096, multiple_of=32)] = 640
    batch: Annotated[StrictInt, Field(ge=1, le=1024)] = 16
    amp: StrictBool = True
    save_period: Annotated[StrictInt, Field(ge=1, le=10_000)] = 5
    workers: Annotated[StrictInt, Field(ge=0, le=64)] = 8
    gpus: Annotated[StrictInt, Field(ge=1, le=MAX_GANG)] = 1  # > 1: a gang of whole GPUs of one host (DDP)
    # The pipeline (tasks/deploy_stage.py): on success register the model under this alias's name and move the alias.
    deploy: Annotated[str, AfterValidator(_alias)] | None = None
    canary: Annotated[StrictFloat, Field(gt=0, le=100)] | None = None  # percent; None: the version becomes stable
    min_map50: Annotated[StrictFloat, Field(ge=0, le=1)] | None = None  # the gate: validation mAP50 at least this

    @field_validator("model")
    @classmethod
    def _variant(cls, value: str) -> str:
        return _yolo_variant(value)

    @model_validator(mode="after")
    def _pipeline(self) -> TrainSpec:
        if self.deploy is None and (self.canary is not None or self.min_map50 is not None):
            raise ValueError("canary and min_map50 need deploy (the alias the trained model goes to)")
        return self

    def memory_mib(self) -> int:
        """Peak GPU memory this job needs, for placement on a GPU that fits it."""
        override = self._override_mib()
        return (
            override
            if override is not None
            else memory.placement_mib(memory.train_mib(self.model, self.imgsz, self.batch, self.amp))
        )


class InferSpec(_Spec):
    """Batch inference over a folder or ``s3://`` prefix of images; detections go to S3 as JSON."""

    kind: Literal["infer"] = "infer"
    model: Location
    source: Location
    imgsz: Annotated[StrictInt, Field(ge=32, le=4096, multiple_of=32)] = 640
    batch: Annotated[StrictInt, Field(ge=1, le=1024)] = 32
    conf: Annotated[StrictFloat, Field(ge=0, le=1)] = 0.25
    # auto: PyTorch FP16 on a GPU for .pt weights, else ONNX Runtime on the CPU (tasks/detectors.py).
    backend: Literal["auto", "onnx", "torch"] = "auto"

    def memory_mib(self) -> int:
        """GPU memory for batched inference; a named variant is estimated, weights files default to 4 GiB."""
        if (override := self._override_mib()) is not None:
            return override
        if memory.parse_variant(self.model) is None:
            return 4 * 1024
        return memory.placement_mib(memory.infer_mib(self.model, self.imgsz, self.batch))


class ExportSpec(_Spec):
    """Export weights to ONNX (always) or a TensorRT engine (GPU workers whose image has TensorRT)."""

    kind: Literal["export"] = "export"
    model: Location
    format: Literal["onnx", "engine"] = "onnx"
    imgsz: Annotated[StrictInt, Field(ge=32, le=4096, multiple_of=32)] = 640
    half: StrictBool = False

    def memory_mib(self) -> int:
        """GPU memory of an export; weights files of unknown scale default to 4 GiB."""
        if (override := self._override_mib()) is not None:
            return override
        if memory.parse_variant(self.model) is None:
            return 4 * 1024
        return memory.placement_mib(memory.export_mib(self.model))


class ProbeSpec(_Spec):
    """Hold a GPU slot for ``seconds`` in 1 s steps, checkpointing the step count: drills, tests, benchmarks."""

    kind: Literal["probe"] = "probe"
    seconds: Annotated[StrictInt, Field(ge=0, le=7 * 24 * 3600)] = 10
    gpus: Annotated[StrictInt, Field(ge=1, le=MAX_GANG)] = 1  # > 1: held as a gang, as a training job would be

    def memory_mib(self) -> int:
        """The declared memory (default 1 GiB): a probe stands in for a job of that size."""
        override = self._override_mib()
        return override if override is not None else 1024


class ServeSpec(_Spec):
    """A serving replica of an alias (``name@label``): loads its versions, answers detect requests in dynamic batches
    until it is preempted or cancelled (tasks/serve_runner.py); ``yoloq serve`` submits these."""

    kind: Literal["serve"] = "serve"
    alias: Annotated[str, AfterValidator(_alias)]
    max_batch: Annotated[StrictInt, Field(ge=1, le=256)] = 8
    max_wait_ms: Annotated[StrictFloat, Field(ge=0, le=1000)] = 5.0
    # auto: PyTorch FP16 from the weights on a GPU, else ONNX Runtime on the CPU; engine needs TensorRT on the worker.
    backend: Literal["auto", "onnx", "torch", "engine"] = "auto"

    def memory_mib(self) -> int:
        """The declared memory (default 2 GiB: a small detector, its batches and the CUDA context)."""
        override = self._override_mib()
        return override if override is not None else 2 * 1024


JobSpec = Annotated[TrainSpec | InferSpec | ExportSpec | ProbeSpec | ServeSpec, Field(discriminator="kind")]
_ADAPTER: TypeAdapter[JobSpec] = TypeAdapter(JobSpec)


def _one_line(err: ValidationError) -> str:
    parts = []
    for item in err.errors():
        where = ".".join(str(p) for p in item["loc"]) or "spec"
        msg = item["msg"].removeprefix("Value error, ")
        parts.append(f"{clipped(where, 80)}: {clipped(msg)}")
    return "; ".join(parts)


def parse_spec(data: dict[str, Any] | str) -> JobSpec:
    """Validate user input (a dict or a JSON document) into a spec, or raise SpecRejected with one line."""
    try:
        if isinstance(data, str):
            return _ADAPTER.validate_json(data)
        return _ADAPTER.validate_python(data)
    except ValidationError as err:
        raise SpecRejected(f"invalid job spec: {_one_line(err)}") from None
