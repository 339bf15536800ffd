"""The schedule file of ``yoloq beat`` (tasks/schedule_file.py): every kind of mistake is one clear line that names
the file, the entry and the field; YAML and TOML mean the same; ``yoloq beat`` exits non-zero and starts nothing."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from routing.cron import parse_cron
from routing.slots import Every
from tasks.errors import ConfigError
from tasks.schedule_file import (
    ScheduleFileError,
    check_submittable,
    load,
    parse,
    parse_duration,
)
from tasks.specs import ProbeSpec, TrainSpec

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
PROBE = {"kind": "probe", "team": "ops"}


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def error_of(data: object) -> str:
    with pytest.raises(ScheduleFileError) as err:
        parse(data, "s.yaml")
    return str(err.value)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ([], "schedule file s.yaml: the top level must be a mapping with 'schedules' and/or 'builtin'"),
        ({"schedule": {}}, "schedule file s.yaml: unknown top-level key 'schedule' (known: builtin, schedules)"),
        ({"schedules": []}, "schedule file s.yaml: 'schedules' must be a mapping of entry names to entries"),
        ({"builtin": 3}, "schedule file s.yaml: 'builtin' must be a mapping"),
        ({"schedules": {"n": 5}}, "entry 'n': must be a mapping (keys: cron, enabled, every, job)"),
        ({"schedules": {"n": {"every": 5, "crn": "x", "job": PROBE}}},
         "entry 'n': unknown key 'crn' (known: cron, enabled, every, job)"),
        ({"schedules": {"n": {"job": PROBE}}}, "entry 'n': give exactly one of 'cron' or 'every'"),
        ({"schedules": {"n": {"every": 5, "cron": "* * * * *", "job": PROBE}}},
         "entry 'n': give exactly one of 'cron' or 'every'"),
        ({"schedules": {"n": {"every": 5}}}, "entry 'n': field job: Field required"),
        ({"schedules": {"n": {"cron": "0 25 * * *", "job": PROBE}}},
         "entry 'n': field cron: hour field: 25 is out of range 0-23"),
        ({"schedules": {"n": {"cron": "0 2 * *", "job": PROBE}}}, "entry 'n': field cron: expected 5 fields"),
        ({"schedules": {"n": {"every": "5x", "job": PROBE}}},
         "entry 'n': field every: '5x' is not a duration (seconds, or e.g. 90s, 15m, 2h, 1d)"),
        ({"schedules": {"n": {"every": 0.5, "job": PROBE}}},
         "entry 'n': field every: 0.5 must be between 1 second and 366 days"),
        ({"schedules": {"n": {"every": True, "job": PROBE}}}, "entry 'n': field every: True is not a duration"),
        ({"schedules": {"n": {"every": 5, "job": {**PROBE, "tier": "urgent"}}}},
         "entry 'n': field job.tier: unknown tier 'urgent'; expected one of: critical, high, medium, low, batch"),
        ({"schedules": {"n": {"every": 5, "job": {"team": "ops", "data": "/d", "epochs": 0}}}},
         "entry 'n': field job.epochs: Input should be greater than or equal to 1"),
        ({"schedules": {"n": {"every": 5, "job": {"team": "ops", "data": "/d", "modle": "x"}}}},
         "entry 'n': field job.modle: unknown key"),
        ({"schedules": {"n": {"every": 5, "job": {"team": "ops"}}}}, "entry 'n': field job.data: Field required"),
        ({"schedules": {"n": {"every": 5, "job": {"kind": "retrain", "team": "ops"}}}},
         "entry 'n': field job.kind: must be one of train, infer, export, probe"),
        ({"schedules": {"n": {"every": 5, "job": {"team": "ops", "data": "/d", "model": "resnet50"}}}},
         "entry 'n': field job.model: 'resnet50' is not a YOLO variant"),
        ({"schedules": {"a b": {"every": 5, "job": PROBE}}},
         "entry 'a b': the name must be 1-64 letters, digits, '_', '.' or '-'"),
        ({"builtin": {"gc": {}}}, "unknown built-in 'gc' (known: checkpoint_gc, sla_report, gpu_health)"),
        ({"builtin": {"gpu_health": {"max_temp": 80}}}, "built-in 'gpu_health': unknown key 'max_temp' (known: cron,"),
        ({"builtin": {"gpu_health": {"max_temperature_c": 300}}},
         "built-in 'gpu_health': field max_temperature_c: Input should be less than or equal to 130"),
        ({"builtin": {"checkpoint_gc": {"keep_last": 0}}},
         "built-in 'checkpoint_gc': field keep_last: Input should be greater than or equal to 1"),
        ({"builtin": {"sla_report": {"every": 60, "cron": "* * * * *"}}},
         "built-in 'sla_report': give exactly one of 'cron' or 'every'"),
        ({"builtin": {"sla_report": 5}}, "built-in 'sla_report': must be a mapping (keys: cron, enabled, every,"),
    ],
)  # fmt: skip
def test_every_mistake_is_one_line_naming_entry_and_field(data: object, message: str) -> None:
    text = error_of(data)
    assert message in text
    assert text.startswith("schedule file s.yaml: ")
    assert "\n" not in text


def test_schedule_file_error_is_a_config_error() -> None:
    assert issubclass(ScheduleFileError, ConfigError)


@pytest.mark.parametrize(
    ("value", "seconds"),
    [(60, 60.0), (1.5, 1.5), ("90s", 90.0), ("15m", 900.0), ("2h", 7200.0), ("1d", 86400.0), (" 30 ", 30.0),
     ("1.5h", 5400.0), ("366d", 366 * 86400.0)],
)  # fmt: skip
def test_durations(value: object, seconds: float) -> None:
    assert parse_duration(value) == seconds


@pytest.mark.parametrize("value", [0, -5, "0s", "367d", "1w", "", None, [60], False])
def test_bad_durations(value: object) -> None:
    with pytest.raises(ValueError):
        parse_duration(value)


YAML = """
schedules:
  nightly:
    cron: "0 2 * * *"
    job: {data: s3://datasets/defects/, model: yolov8s.yaml, epochs: 50, tier: low, team: vision}
  smoke:
    every: 15m
    job: {kind: probe, seconds: 60, tier: batch, team: ops, name: fleet-smoke}
  paused:
    every: 60
    enabled: false
    job: {kind: probe, team: ops}
builtin:
  checkpoint_gc: {every: 2h, keep_last: 5, finished_days: 7}
  gpu_health: {enabled: false}
"""

TOML = """
[schedules.nightly]
cron = "0 2 * * *"
job = { data = "s3://datasets/defects/", model = "yolov8s.yaml", epochs = 50, tier = "low", team = "vision" }

[schedules.smoke]
every = "15m"
[schedules.smoke.job]
kind = "probe"
seconds = 60
tier = "batch"
team = "ops"
name = "fleet-smoke"

[schedules.paused]
every = 60
enabled = false
job = { kind = "probe", team = "ops" }

[builtin.checkpoint_gc]
every = "2h"
keep_last = 5
finished_days = 7

[builtin.gpu_health]
enabled = false
"""


def test_yaml_and_toml_mean_the_same(tmp_path: Path) -> None:
    from_yaml = load(write(tmp_path, "s.yaml", YAML))
    from_toml = load(write(tmp_path, "s.toml", TOML))
    assert from_yaml.jobs == from_toml.jobs
    assert from_yaml.builtin == from_toml.builtin
    nightly, smoke = from_yaml.jobs  # the disabled entry is validated but not scheduled
    assert nightly.name == "nightly" and nightly.slots == parse_cron("0 2 * * *")
    assert isinstance(nightly.spec, TrainSpec) and nightly.spec.name == "nightly" and nightly.spec.tier.value == "low"
    assert smoke.slots == Every(900) and isinstance(smoke.spec, ProbeSpec) and smoke.spec.name == "fleet-smoke"
    assert from_yaml.builtin.checkpoint_gc.keep_last == 5 and from_yaml.builtin.checkpoint_gc.slots() == Every(7200)
    assert not from_yaml.builtin.gpu_health.enabled
    assert from_yaml.builtin.sla_report.slots() == Every(900)  # untouched built-in: its default


def test_no_file_and_an_empty_file_mean_built_ins_only(tmp_path: Path) -> None:
    for plan in (load(None), load(""), load(write(tmp_path, "empty.yaml", ""))):
        assert plan.jobs == ()
        assert plan.builtin.gpu_health.slots() == Every(60)


def test_the_example_file_is_valid() -> None:
    plan = load(ROOT / "infra" / "examples" / "schedule.yaml")
    assert {j.name for j in plan.jobs} == {"nightly-retrain", "weekly-edge-nano", "fleet-smoke"}


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("s.yaml", "schedules:\n  a: [\n", "invalid YAML at line 3, column 1:"),
        ("s.yaml", "schedules:\n  a:\n    every: 5\n  a:\n    every: 6\n",
         "invalid YAML at line 4, column 3: duplicate key 'a'"),
        ("s.yaml", "schedules:\n  a:\n    cron: */5 * * * *\n",
         "(quote cron expressions: a YAML value cannot start with '*')"),
        ("s.yml", "- 1\n- 2\n", "the top level must be a mapping"),
        ("s.toml", "[schedules.a]\nevery = \n", "invalid TOML: Invalid value (at line 2, column 9)"),
        ("s.toml", "[schedules.a]\nevery = 5\n[schedules.a]\n", "invalid TOML:"),
        ("s.json", "{}", "unknown format '.json' (use .yaml, .yml or .toml)"),
    ],
)  # fmt: skip
def test_syntax_errors_say_where(tmp_path: Path, name: str, text: str, message: str) -> None:
    path = write(tmp_path, name, text)
    with pytest.raises(ScheduleFileError) as err:
        load(path)
    assert str(err.value).startswith(f"schedule file {path}: ")
    assert message in str(err.value)


def test_a_missing_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ScheduleFileError, match=r"missing.yaml: cannot read it: No such file or directory"):
        load(tmp_path / "missing.yaml")


def test_submit_checks_run_at_load_time(tmp_path: Path) -> None:
    # Given a schedule whose job would be rejected at submit time
    missing = parse({"schedules": {"n": {"every": 5, "job": {"data": str(tmp_path / "nope"), "team": "ops"}}}}, "f")
    huge = parse({"schedules": {"n": {"every": 5, "job": {**PROBE, "memory_gb": 190}}}}, "f")
    # Then loading fails now, naming the entry and field
    with pytest.raises(ScheduleFileError, match=r"^schedule file f: entry 'n': field job.data: path '.*nope' does not"):
        check_submittable(missing)
    with pytest.raises(ScheduleFileError, match=r"^schedule file f: entry 'n': job: needs 194560 MiB, more than"):
        check_submittable(huge)
    # And a valid local path is resolved to an absolute one, as submit would
    (tmp_path / "data").mkdir()
    rel = parse({"schedules": {"n": {"every": 5, "job": {"data": str(tmp_path / "data"), "team": "ops"}}}}, "f")
    assert check_submittable(rel).jobs[0].spec.data == str((tmp_path / "data").resolve())  # type: ignore[union-attr]


def _yoloq(*args: str, home: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("YOLOQ_")}
    env["YOLOQ_HOME"] = str(home)
    env["YOLOQ_REDIS_URL"] = "redis://127.0.0.1:1/0"  # nothing listens: any attempt to start would fail loudly
    return subprocess.run([sys.executable, "-m", "yoloq", *args], capture_output=True, text=True, env=env,
                          timeout=60, check=False, cwd=ROOT)  # fmt: skip


def test_yoloq_beat_refuses_a_bad_file_with_one_line_and_exit_1(tmp_path: Path) -> None:
    bad = write(
        tmp_path,
        "s.yaml",
        "schedules:\n  nightly:\n    cron: '0 2 * * *'\n    job: {data: /d, team: ops, tier: asap}\n",
    )
    done = _yoloq("beat", "--schedule", str(bad), home=tmp_path)
    assert done.returncode == 1
    assert done.stdout == ""
    assert done.stderr.strip() == (
        f"yoloq: error: schedule file {bad}: entry 'nightly': field job.tier: unknown tier 'asap'; "
        "expected one of: critical, high, medium, low, batch"
    )


def test_yoloq_beat_check_lists_entries_without_starting(tmp_path: Path) -> None:
    done = _yoloq("beat", "--schedule", str(ROOT / "infra/examples/schedule.yaml"), "--check", home=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "schedule:nightly-retrain     cron 0 2 * * *" in done.stdout
    assert "builtin:gpu_health" in done.stdout
