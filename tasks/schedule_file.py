"""The ``yoloq beat`` schedule file (YAML or TOML): recurring jobs plus settings of the built-in schedules.

Format (docs/operations.md "Schedules (beat)"; example in infra/examples/schedule.yaml)::

    schedules:                  # named recurring jobs; each has exactly one of cron / every, and a job spec
      nightly-retrain:
        cron: "0 2 * * *"       # UTC
        job: {kind: train, data: s3://datasets/defects/, model: yolov8s.yaml, tier: low, team: vision}
    builtin:                    # optional: the built-in schedules' timing and knobs
      checkpoint_gc: {every: 1h, keep_last: 3, finished_days: 30}
      sla_report: {every: 15m, window_hours: 24}
      gpu_health: {every: 60, max_temperature_c: 90}

Every mistake (syntax, an unknown key, a bad cron expression or duration, a job spec that does not validate, an
unknown tier) is one :class:`ScheduleFileError` whose message names the file, the entry and the field.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, ClassVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, field_validator, model_validator

from routing.cron import parse_cron
from routing.health import HealthLimits
from routing.slots import Every, Slots
from tasks.checkpoints import DEFAULT_KEEP
from tasks.errors import ConfigError, clipped
from tasks.specs import JobSpec

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)\s*([smhd]?)$")
_UNIT_S = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}
_JOBS: TypeAdapter[JobSpec] = TypeAdapter(JobSpec)
MAX_BYTES = 1 << 20
_JOB_MESSAGES = {"extra_forbidden": "unknown key", "union_tag_invalid": "must be one of train, infer, export, probe"}


class ScheduleFileError(ConfigError):
    """The schedule file is unreadable or invalid; ``yoloq beat`` starts nothing."""


def parse_duration(value: object) -> float:
    """Seconds from a number or a string such as ``90s``, ``15m``, ``2h``, ``1d``; between 1 s and 366 days."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError(f"{value!r} is not a duration (seconds, or e.g. 90s, 15m, 2h, 1d)")
    match = _DURATION.match(value.strip().lower()) if isinstance(value, str) else None
    if isinstance(value, str) and match is None:
        raise ValueError(f"{value!r} is not a duration (seconds, or e.g. 90s, 15m, 2h, 1d)")
    seconds = float(value) if match is None else float(match.group(1)) * _UNIT_S[match.group(2)]
    if not 1 <= seconds <= 366 * 86400:
        raise ValueError(f"{value!r} must be between 1 second and 366 days")
    return seconds


class _Timing(BaseModel):
    """When an entry fires: a cron expression (UTC) or an interval aligned to the epoch; never both."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    DEFAULT_EVERY_S: ClassVar[float | None] = None  # built-ins fire on this interval when the file gives no timing

    cron: str | None = None
    every: float | None = None
    enabled: bool = True

    @field_validator("cron")
    @classmethod
    def _cron(cls, value: str | None) -> str | None:
        if value is not None:
            parse_cron(value)
        return value

    @field_validator("every", mode="before")
    @classmethod
    def _every(cls, value: object) -> float | None:
        return None if value is None else parse_duration(value)

    @model_validator(mode="after")
    def _one_timing(self) -> _Timing:
        given = (self.cron is not None) + (self.every is not None)
        if given > 1 or (given == 0 and self.DEFAULT_EVERY_S is None):
            raise ValueError("give exactly one of 'cron' or 'every'")
        return self

    def slots(self) -> Slots:
        """The schedule's slots (the built-in default interval when no timing was given)."""
        if self.cron is not None:
            return parse_cron(self.cron)
        return Every(self.every if self.every is not None else float(self.DEFAULT_EVERY_S or 0))


class Entry(_Timing):
    """A recurring job: timing plus a job spec (``kind`` defaults to ``train``, ``name`` to the entry's name)."""

    job: dict[str, Any]


class GcConfig(_Timing):
    """Checkpoint garbage collection: keep the newest ``keep_last`` per job, drop finished jobs' objects."""

    DEFAULT_EVERY_S = 3600.0
    keep_last: Annotated[int, Field(ge=1, le=1000)] = DEFAULT_KEEP
    finished_days: Annotated[float, Field(gt=0, le=3650)] = 30.0


class SlaConfig(_Timing):
    """The SLA report: per-tier time-to-start compliance over the last ``window_hours``."""

    DEFAULT_EVERY_S = 900.0
    window_hours: Annotated[float, Field(gt=0, le=24 * 31)] = 24.0


class HealthConfig(_Timing, HealthLimits):
    """The GPU health check: an unhealthy device is cordoned (thresholds as in routing.health)."""

    DEFAULT_EVERY_S = 60.0


class Builtins(BaseModel):
    """Settings of the three built-in schedules; each can be switched off with ``enabled: false``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    checkpoint_gc: GcConfig = GcConfig()
    sla_report: SlaConfig = SlaConfig()
    gpu_health: HealthConfig = HealthConfig()


class _Document(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    schedules: dict[str, Entry] = {}
    builtin: Builtins = Builtins()


@dataclass(frozen=True)
class ScheduledJob:
    """One validated recurring job."""

    name: str
    slots: Slots
    spec: JobSpec


@dataclass(frozen=True)
class SchedulePlan:
    """Everything ``yoloq beat`` schedules: the user's recurring jobs and the built-in settings."""

    source: str
    jobs: tuple[ScheduledJob, ...]
    builtin: Builtins


_SECTIONS: dict[str, type[BaseModel]] = {"checkpoint_gc": GcConfig, "sla_report": SlaConfig, "gpu_health": HealthConfig}


def _known(model: type[BaseModel]) -> str:
    return ", ".join(sorted(model.model_fields))


def _field_problem(rest: tuple[Any, ...], kind: str, msg: str, model: type[BaseModel]) -> str:
    if kind == "extra_forbidden":
        return f"unknown key {rest[-1]!r} (known: {_known(model)})"
    if not rest:
        return f"must be a mapping (keys: {_known(model)})" if kind in ("model_type", "dict_type") else msg
    return f"field {'.'.join(str(p) for p in rest)}: {msg}"


def _describe(err: ValidationError) -> str:
    """One line for the first problem: which entry (or built-in) and which field."""
    first = err.errors()[0]
    loc, kind, msg = first["loc"], first["type"], first["msg"].removeprefix("Value error, ")
    if not loc:
        return "the top level must be a mapping with 'schedules' and/or 'builtin'"
    if len(loc) == 1:
        if kind == "extra_forbidden":
            return f"unknown top-level key {loc[0]!r} (known: builtin, schedules)"
        return f"{loc[0]!r} must be a mapping" + (" of entry names to entries" if loc[0] == "schedules" else "")
    if loc[0] == "schedules":
        return f"entry {loc[1]!r}: {_field_problem(loc[2:], kind, msg, Entry)}"
    if len(loc) == 2 and kind == "extra_forbidden":
        return f"unknown built-in {loc[1]!r} (known: {', '.join(_SECTIONS)})"
    return f"built-in {loc[1]!r}: {_field_problem(loc[2:], kind, msg, _SECTIONS.get(str(loc[1]), Builtins))}"


def _job(source: str, name: str, entry: Entry) -> JobSpec:
    """Validate an entry's job as the submit path will, with the field's path in the message."""
    raw = {"kind": "train", "name": name, **entry.job}
    try:
        return _JOBS.validate_python(raw)
    except ValidationError as err:
        first = err.errors()[0]
        loc = [str(p) for p in first["loc"]]
        loc = loc[1:] if loc and loc[0] == raw.get("kind") else loc  # pydantic puts the union's tag first
        where = "job.kind" if first["type"] == "union_tag_invalid" else clipped(".".join(["job", *loc]), 80)
        msg = clipped(_JOB_MESSAGES.get(first["type"], first["msg"].removeprefix("Value error, ")))
        raise ScheduleFileError(f"schedule file {source}: entry {name!r}: field {where}: {msg}") from None


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key given twice in one mapping (plain YAML keeps the last one silently)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        """The mapping, or a ConstructorError at the second occurrence of a key."""
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _text(path: Path) -> str:
    """The file's text: at most MAX_BYTES of UTF-8 (a schedule is a page, not a payload)."""
    try:
        with path.open("rb") as file:
            raw = file.read(MAX_BYTES + 1)
    except OSError as err:
        raise ScheduleFileError(f"schedule file {path}: cannot read it: {err.strerror or err}") from None
    if len(raw) > MAX_BYTES:
        raise ScheduleFileError(f"schedule file {path}: larger than {MAX_BYTES // 1024} KiB")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ScheduleFileError(f"schedule file {path}: not UTF-8 text (byte {err.start})") from None


def _read(path: Path) -> Any:
    try:
        return _decode(path, _text(path))
    except RecursionError:  # [[[[...: the parsers recurse per level
        raise ScheduleFileError(f"schedule file {path}: nested too deeply") from None


def _decode(path: Path, text: str) -> Any:
    if path.suffix in (".yaml", ".yml"):
        try:
            return yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
        except yaml.MarkedYAMLError as err:
            mark = err.problem_mark
            where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
            line = text.splitlines()[mark.line] if mark is not None and mark.line < len(text.splitlines()) else ""
            hint = " (quote cron expressions: a YAML value cannot start with '*')" if "cron" in line else ""
            raise ScheduleFileError(f"schedule file {path}: invalid YAML{where}: {err.problem}{hint}") from None
        except yaml.YAMLError as err:
            raise ScheduleFileError(f"schedule file {path}: invalid YAML: {err}") from None
    if path.suffix == ".toml":
        try:
            return tomllib.loads(text)
        except tomllib.TOMLDecodeError as err:
            raise ScheduleFileError(f"schedule file {path}: invalid TOML: {err}") from None
    raise ScheduleFileError(f"schedule file {path}: unknown format {path.suffix!r} (use .yaml, .yml or .toml)")


def parse(data: Any, source: str = "<schedule>") -> SchedulePlan:
    """Validate a decoded schedule document; every error names ``source``, the entry and the field."""
    try:
        doc = _Document.model_validate({} if data is None else data)
    except ValidationError as err:
        raise ScheduleFileError(f"schedule file {source}: {clipped(_describe(err), 400)}") from None
    except RecursionError:
        raise ScheduleFileError(f"schedule file {source}: nested too deeply") from None
    jobs = []
    for name, entry in doc.schedules.items():
        if not NAME.match(name):
            raise ScheduleFileError(
                f"schedule file {source}: entry {clipped(repr(name), 80)}: the name must be 1-64 letters, digits, "
                "'_', '.' or '-'"
            )
        spec = _job(source, name, entry)
        if entry.enabled:
            jobs.append(ScheduledJob(name, entry.slots(), spec))
    return SchedulePlan(source, tuple(jobs), doc.builtin)


def check_submittable(plan: SchedulePlan) -> SchedulePlan:
    """Run each job through the submit path's checks now (local paths exist, a GPU class fits), not at 2 a.m."""
    from routing.tiers import NoSizeClass, route
    from tasks.errors import SpecRejected
    from tasks.submit import prepare

    jobs = []
    for job in plan.jobs:
        try:
            spec = prepare(job.spec)
            route(spec.tier, spec.memory_mib())
        except (SpecRejected, NoSizeClass) as err:
            problem = str(err).removeprefix("invalid job spec: ")
            field, sep, rest = problem.partition(": ")
            where = f"field job.{field}: {rest}" if sep and field.isidentifier() else f"job: {problem}"
            raise ScheduleFileError(f"schedule file {plan.source}: entry {job.name!r}: {where}") from None
        jobs.append(ScheduledJob(job.name, job.slots, spec))
    return SchedulePlan(plan.source, tuple(jobs), plan.builtin)


def load(path: str | Path | None) -> SchedulePlan:
    """The plan from a schedule file, or only the built-ins when no file is configured."""
    if path is None or str(path) == "":
        return SchedulePlan("<built-in>", (), Builtins())
    return parse(_read(Path(path)), str(path))
