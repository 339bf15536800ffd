"""The stack file and the one precedence (issue 14): a live ``stack.env`` beats the environment and says so, a stale
one is ignored, every value's source is recorded, client commands refuse to guess a broker, and ``yoloq up``
publishes its simulated inventory so a worker started from another shell sees the same GPUs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from infra import stack_file
from infra.settings import DEFAULT, ENVIRONMENT, PREFIX, Settings, load_client_settings, load_settings
from tasks.errors import ConfigError, GpuUnavailable
from workers.launch import plan
from workers.stack import _refuse_second_stack, write_stack_file

pytestmark = [pytest.mark.unit, pytest.mark.usefixtures("clean_env")]

NO_STACK = "no yoloq stack found: {path} {why} and YOLOQ_REDIS_URL is not set"
HINT = ' (start one with "yoloq up", or point YOLOQ_REDIS_URL at your broker)'


def _published(home: Path, **values: str) -> Path:
    """A stack file as ``yoloq up`` writes it, owned by this (live) test process."""
    return stack_file.write_stack_file(home, {PREFIX + k.upper(): v for k, v in values.items()})


def _dead_pid() -> int:
    done = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=True
    )
    return int(done.stdout)


def _owned_by(path: Path, pid: int, host: str, start: str) -> None:
    lines = path.read_text().splitlines()
    path.write_text("\n".join([f"# yoloq up: pid={pid} host={host} start={start}", *lines[1:]]) + "\n")


# --- liveness -------------------------------------------------------------------------------------------------------


def test_a_file_written_by_this_process_is_live_and_names_it(tmp_path: Path) -> None:
    path = _published(tmp_path, redis_url="redis://stack:1/0")
    found = stack_file.read_stack_file(tmp_path)
    assert found is not None and found.path == path
    assert found.owner is not None and found.owner.pid == os.getpid()
    assert found.live()
    assert found.describe() == f"yoloq up, pid {os.getpid()}"
    assert found.values == {"YOLOQ_REDIS_URL": "redis://stack:1/0"}


@pytest.mark.parametrize("who", ["dead pid", "other host", "recycled pid"])
def test_a_stale_stack_file_is_ignored(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, who: str) -> None:
    # Given the file of a `yoloq up` that was killed with -9 (or one from another machine, or a pid reused since)
    path = _published(tmp_path, redis_url="redis://dead:1/0")
    owner = stack_file.read_stack_file(tmp_path).owner  # type: ignore[union-attr]
    assert owner is not None
    pid, host, start = {
        "dead pid": (_dead_pid(), owner.host, ""),
        "other host": (os.getpid(), "elsewhere.example", owner.start),
        "recycled pid": (os.getpid(), owner.host, str(int(owner.start or "0") + 1)),
    }[who]
    _owned_by(path, pid, host, start)
    # Then its values are not used: the environment (or the default) is
    monkeypatch.setenv("YOLOQ_REDIS_URL", "redis://env:2/0")
    settings = load_settings()
    assert settings.redis_url == "redis://env:2/0"
    assert settings.sources["redis_url"] == ENVIRONMENT


# --- precedence, warning and sources --------------------------------------------------------------------------------


def test_the_running_stack_beats_the_environment_and_names_the_overridden_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given the user exported a Redis URL to keep `yoloq up` off the machine's Redis, and that stack runs
    path = _published(tmp_path, redis_url="redis://:pw@127.0.0.1:40001/0", s3_endpoint="http://127.0.0.1:40002")
    monkeypatch.setenv("YOLOQ_REDIS_URL", "redis://127.0.0.1:1/0")
    monkeypatch.setenv("YOLOQ_S3_ENDPOINT", "http://127.0.0.1:40002")  # agrees with the stack: nothing to say
    monkeypatch.setenv("YOLOQ_LEASE_TTL_S", "4")
    # When a later command in that shell loads its settings (twice: the Celery config loads them too)
    settings = load_settings()
    load_settings()
    # Then it talks to the stack, says once which variable it overrode (without its value), records every source
    assert settings.redis_url == "redis://:pw@127.0.0.1:40001/0"
    err = capsys.readouterr().err
    assert err.splitlines() == [
        f"yoloq: warning: YOLOQ_REDIS_URL from the environment is overridden by the running stack's {path} "
        f"(yoloq up, pid {os.getpid()}); unset it, or set YOLOQ_HOME to another folder to use another stack"
    ]
    assert "pw" not in err and "127.0.0.1:1/" not in err
    sources = settings.sources
    assert sources["redis_url"] == sources["s3_endpoint"] == str(path)
    assert sources["lease_ttl_s"] == sources["home"] == ENVIRONMENT
    assert sources["s3_region"] == DEFAULT
    assert set(sources) == set(Settings.model_fields)


def test_another_home_escapes_a_running_stack(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _published(tmp_path, redis_url="redis://stack:1/0")
    other = tmp_path / "other"
    monkeypatch.setenv("YOLOQ_HOME", str(other))
    monkeypatch.setenv("YOLOQ_REDIS_URL", "redis://prod:6379/0")
    assert load_settings().redis_url == "redis://prod:6379/0"


def test_settings_built_in_code_have_no_sources(tmp_path: Path) -> None:
    assert Settings(home=tmp_path).sources == {}


def test_an_invalid_value_names_the_environment_or_the_stack_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("YOLOQ_WORKER_TTL_S", "0")
    with pytest.raises(ConfigError, match=r"^invalid setting YOLOQ_WORKER_TTL_S \(from the environment\): "):
        load_settings()
    monkeypatch.delenv("YOLOQ_WORKER_TTL_S")
    path = _published(tmp_path, worker_ttl_s="-1")
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert str(info.value).startswith(f"invalid setting YOLOQ_WORKER_TTL_S (from {path}): ")


# --- client commands without a stack (item 2) -----------------------------------------------------------------------


def test_a_client_without_stack_or_url_refuses_to_guess(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_client_settings()
    why = NO_STACK.format(path=tmp_path / "stack.env", why="does not exist")
    assert str(info.value) == why + HINT
    assert load_settings().redis_url == "redis://127.0.0.1:6379/0"  # workers and tools keep the plain default


def test_a_client_with_a_stale_stack_file_says_it_is_stale(tmp_path: Path) -> None:
    path = _published(tmp_path, redis_url="redis://dead:1/0")
    dead = _dead_pid()
    _owned_by(path, dead, "elsewhere.example", "")
    with pytest.raises(ConfigError) as info:
        load_client_settings()
    assert (
        str(info.value)
        == NO_STACK.format(path=path, why=f"is stale (its yoloq up, pid {dead} is no longer running)") + HINT
    )


def test_a_client_finds_a_running_stack_or_an_explicit_url(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("YOLOQ_REDIS_URL", "redis://127.0.0.1:6379/0")  # explicit, even if equal to the default
    assert load_client_settings().sources["redis_url"] == ENVIRONMENT
    monkeypatch.delenv("YOLOQ_REDIS_URL")
    _published(tmp_path, redis_url="redis://stack:1/0")
    assert load_client_settings().redis_url == "redis://stack:1/0"


# --- what `yoloq up` publishes (item 3) -----------------------------------------------------------------------------


def test_up_publishes_its_simulated_inventory_for_workers_in_other_shells(tmp_path: Path) -> None:
    # Given `yoloq up --gpus 0:T4:16,1:A100:40` published its settings
    stack = Settings(home=tmp_path, redis_url="redis://stack:1/0", gpus="0:T4:16,1:A100:40",
                     api_token="tok")  # type: ignore[arg-type]  # fmt: skip
    text = write_stack_file(stack).read_text()
    assert "YOLOQ_GPUS=0:T4:16,1:A100:40\n" in text
    assert "YOLOQ_HOME" not in text and "YOLOQ_LEASE_TTL_S" not in text  # only what describes the stack
    # When `yoloq worker --gpu 1` loads its settings in another shell (no YOLOQ_GPUS there)
    settings = load_settings()
    # Then it sees the same inventory: device 1 is the simulated A100
    gpu, _ = plan(settings, 1)
    assert (gpu.name, gpu.memory_mib, gpu.simulated) == ("A100", 40 * 1024, True)
    with pytest.raises(GpuUnavailable):
        plan(settings, 2)


def test_a_real_inventory_is_not_published(tmp_path: Path) -> None:
    text = write_stack_file(Settings(home=tmp_path, redis_url="redis://stack:1/0")).read_text()
    assert "YOLOQ_GPUS" not in text


def test_a_second_up_in_the_same_home_is_refused_while_the_first_runs(tmp_path: Path) -> None:
    path = _published(tmp_path, redis_url="redis://stack:1/0")
    with pytest.raises(ConfigError, match=f"a yoloq stack already runs from {tmp_path} \\(yoloq up, pid"):
        _refuse_second_stack(tmp_path)
    _owned_by(path, _dead_pid(), "h", "")
    _refuse_second_stack(tmp_path)  # a stale file is no obstacle: up overwrites it
