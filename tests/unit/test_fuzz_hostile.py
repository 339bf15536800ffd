"""Issue 17 drill 8 in process: Hypothesis draws hostile job specs, schedule files and ``yoloq submit`` command lines
(tests/hostile_inputs.py) and every one is refused with a typed one-line error, before anything would be written.
The drill (bench/drills/hostile_input.py) sends the same inputs through a real stack."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st

from routing.tiers import NoSizeClass, parse_tier, route
from tasks import trust
from tasks.errors import SpecRejected
from tasks.locations import Locations
from tasks.schedule_file import ScheduleFileError, check_submittable, load
from tasks.submit import prepare
from tests import hostile_inputs as hostile
from yoloq.cli.main import cli

pytestmark = pytest.mark.unit

EXAMPLES = int(os.environ.get("YOLOQ_FUZZ_EXAMPLES", "150"))
ROOT = Path(tempfile.gettempdir()).resolve() / "yoloq-fuzz-root"  # never created: nothing inside it exists
MAX_ERROR = 600  # characters: an error quotes a bounded start of what it refuses, never megabytes of it
FUZZ = settings(max_examples=EXAMPLES, deadline=None, database=None, phases=[Phase.explicit, Phase.generate],
                suppress_health_check=list(HealthCheck))  # fmt: skip


def refusal(spec: Any, doors: Locations) -> str:
    """The submit path's checks that need no Redis (validate, locations, trusted weights, a size class); the
    reason it refuses ``spec``, or "" when every check passes."""
    try:
        checked = prepare(spec, doors)
        trust.check_spec(checked, trust.MemoryLedger())
        route(checked.tier, checked.memory_mib())
    except (SpecRejected, NoSizeClass) as err:
        return str(err)
    return ""


def one_line(reason: str) -> bool:
    """A refusal as the CLI and the API print it: one short line."""
    return bool(reason) and "\n" not in reason and len(reason) <= MAX_ERROR


@pytest.mark.parametrize("kind", sorted(hostile.BASES))
def test_every_base_is_accepted_so_each_refusal_is_the_one_thing_made_wrong(kind: str) -> None:
    assert refusal(hostile.BASES[kind], Locations((ROOT,))) == ""


@seed(17)
@FUZZ
@given(spec=hostile.hostile_specs(roots=(ROOT,)))
def test_hostile_specs_are_refused_with_one_line(spec: Any) -> None:
    reason = refusal(spec, Locations((ROOT,)))
    assert one_line(reason), (reason[:800], repr(spec)[:800])


@seed(17)
@FUZZ
@given(spec=hostile.hostile_specs(roots=(ROOT,), big=False))
def test_a_remote_caller_is_refused_the_same_specs(spec: Any) -> None:
    assert one_line(refusal(spec, Locations((ROOT,), remote=True)))


@seed(17)
@FUZZ
@given(document=hostile.hostile_schedules())
def test_hostile_schedule_files_are_refused_with_one_line(document: tuple[str, bytes]) -> None:
    suffix, content = document
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"schedule{suffix}"
        path.write_bytes(content)
        with pytest.raises(ScheduleFileError) as refused:
            check_submittable(load(path))
    assert one_line(str(refused.value).replace(str(path), "F")), str(refused.value)[:800]
    assert not Path("/tmp/yoloq-hostile-yaml").exists()  # a YAML tag never ran


@seed(17)
@FUZZ
@given(args=hostile.cli_args(roots=(ROOT,)))
def test_hostile_submit_command_lines_are_refused_by_click_or_the_spec(clean_env: None, args: list[str]) -> None:
    env = {"YOLOQ_REDIS_URL": "redis://127.0.0.1:9/0", "YOLOQ_DATA_ROOTS": str(ROOT), "YOLOQ_HOME": str(ROOT)}
    result = CliRunner().invoke(cli, args, env=env, standalone_mode=False)
    error = result.exception
    assert isinstance(error, click.UsageError | SpecRejected), (args, repr(error)[:500])
    assert isinstance(error, click.UsageError) or one_line(str(error))


def test_the_generators_reach_every_kind_of_harm() -> None:
    """A guard on the generators: each strategy family draws something (an empty filter would silently test less)."""
    for kind in hostile.BASES:
        for family in (hostile.wrong_type, hostile.out_of_range, hostile.named_wrong, hostile.bad_model):
            _draws(family(kind))
    _draws(hostile.locations((ROOT,)))
    _draws(hostile.schedule_jobs())


def _draws(strategy: st.SearchStrategy[Any]) -> None:
    @settings(max_examples=5, database=None, suppress_health_check=list(HealthCheck))
    @given(value=strategy)
    def draw(value: Any) -> None:
        assert value is not None or strategy is not None

    draw()


def test_a_refusal_quotes_a_bounded_start_of_what_it_refuses() -> None:
    """Regressions the fuzzing found: megabytes of kind or tier were quoted whole; a key's newline split the line."""
    for field in ("kind", "tier"):
        reason = refusal({**hostile.BASES["probe"], field: "x" * (1 << 20)}, Locations())
        assert one_line(reason) and "characters)" in reason, reason[:300]
    assert one_line(refusal({**hostile.BASES["probe"], "a\nb": 1}, Locations()))
    with pytest.raises(ValueError, match=r"unknown tier 'nope'; expected"):
        parse_tier("nope")


def test_a_schedule_entry_key_with_a_newline_stays_on_one_line(tmp_path: Path) -> None:
    """Drill hostile (full size): a job key holding a newline split the schedule file's error line in two."""
    path = tmp_path / "schedule.yaml"
    path.write_text('schedules:\n  nightly:\n    every: 60\n    job: {kind: probe, team: vision, "a\\nb": 1}\n')
    with pytest.raises(ScheduleFileError) as refused:
        load(path)
    assert one_line(str(refused.value)) and "unknown key" in str(refused.value)
