"""infra/settings.py: typed YOLOQ_* settings, unknown keys refused; a live stack file beats the environment."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from pydantic import SecretStr, ValidationError

from infra.settings import PREFIX, Settings, environ_for, load_settings
from tasks.errors import ConfigError, YoloqError

pytestmark = [pytest.mark.unit, pytest.mark.usefixtures("clean_env")]

DEFAULT_REDIS = "redis://127.0.0.1:6379/0"


def _stack(home: Path, text: str) -> None:
    (home / "stack.env").write_text(text)


# --- defaults and typed values --------------------------------------------------------------------------------------


def test_defaults(tmp_path: Path) -> None:
    settings = load_settings()
    assert settings.home == tmp_path
    assert settings.redis_url == DEFAULT_REDIS
    assert settings.s3_bucket == "yoloq"
    assert settings.gpus == ""
    assert settings.lease_ttl_s == 15.0
    assert settings.visibility_timeout_s == 7 * 24 * 3600
    assert settings.s3_secret_key.get_secret_value() == ""


@pytest.mark.parametrize(
    ("key", "value", "field", "expected"),
    [
        ("YOLOQ_LEASE_TTL_S", "4.5", "lease_ttl_s", 4.5),
        ("YOLOQ_WORKER_TTL_S", "600", "worker_ttl_s", 600.0),
        ("YOLOQ_VISIBILITY_TIMEOUT_S", "3600", "visibility_timeout_s", 3600),
        ("YOLOQ_BROKER_TIMEOUT_S", "0.5", "broker_timeout_s", 0.5),
        ("YOLOQ_REDIS_URL", "redis://10.0.0.1:6380/2", "redis_url", "redis://10.0.0.1:6380/2"),
        ("YOLOQ_GPUS", "0:T4:16,1:A100:40", "gpus", "0:T4:16,1:A100:40"),
        ("YOLOQ_LOG_LEVEL", "DEBUG", "log_level", "DEBUG"),
    ],
)
def test_typed_values_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, key: str, value: str, field: str, expected: object
) -> None:
    monkeypatch.setenv(key, value)
    got = getattr(load_settings(), field)
    assert got == expected
    assert type(got) is type(expected)


def test_secret_values_are_not_printed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("YOLOQ_S3_SECRET_KEY", "s3cr3t")
    settings = load_settings()
    assert isinstance(settings.s3_secret_key, SecretStr)
    assert settings.s3_secret_key.get_secret_value() == "s3cr3t"
    assert "s3cr3t" not in repr(settings)
    assert "s3cr3t" not in str(settings)


def test_settings_are_frozen() -> None:
    settings = load_settings()
    with pytest.raises(ValidationError):
        settings.redis_url = "redis://elsewhere"  # type: ignore[misc]


# --- unknown keys ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("key", ["YOLOQ_REDIS_ULR", "YOLOQ_REDIS_UR", "YOLOQ_GPU", "YOLOQ_", "YOLOQ_S3_BUCKETS"])
def test_unknown_key_is_refused_by_name(monkeypatch: pytest.MonkeyPatch, key: str) -> None:
    monkeypatch.setenv(key, "x")
    with pytest.raises(ConfigError) as info:
        load_settings()
    message = str(info.value)
    assert message.startswith(f"unknown setting(s) {key};")
    assert "YOLOQ_REDIS_URL" in message  # lists what is known
    assert "\n" not in message


def test_every_unknown_key_is_named_sorted(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("YOLOQ_ZZZ", "1")
    monkeypatch.setenv("YOLOQ_AAA", "1")
    with pytest.raises(ConfigError, match=r"unknown setting\(s\) YOLOQ_AAA, YOLOQ_ZZZ;"):
        load_settings()


def test_unknown_key_is_refused_even_without_stack_file(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("YOLOQ_REDIS_ULR", "redis://elsewhere")
    with pytest.raises(ConfigError, match="YOLOQ_REDIS_ULR"):
        load_settings(use_stack_file=False)


def test_other_prefixes_are_not_our_business(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("YOLOQX_FOO", "1")
    monkeypatch.setenv("NOT_YOLOQ_FOO", "1")
    assert load_settings().redis_url == DEFAULT_REDIS


# --- invalid values -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("YOLOQ_LEASE_TTL_S", "abc"),
        ("YOLOQ_LEASE_TTL_S", "0.1"),
        ("YOLOQ_LEASE_TTL_S", "601"),
        ("YOLOQ_WORKER_TTL_S", "0"),
        ("YOLOQ_VISIBILITY_TIMEOUT_S", "60"),
        ("YOLOQ_VISIBILITY_TIMEOUT_S", "soon"),
        ("YOLOQ_VISIBILITY_TIMEOUT_S", "3600.5"),
        ("YOLOQ_BROKER_TIMEOUT_S", "0"),
        ("YOLOQ_BROKER_TIMEOUT_S", "61"),
        ("YOLOQ_HOSTNAME", "a:b"),  # a claim key is gpu:{host}:{index}
        ("YOLOQ_HOSTNAME", "gpu0@x"),
    ],
)
def test_invalid_value_is_refused_naming_the_key(monkeypatch: pytest.MonkeyPatch, key: str, value: str) -> None:
    monkeypatch.setenv(key, value)
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert str(info.value).startswith(f"invalid setting {key} (from the environment): ")
    assert "\n" not in str(info.value)
    assert isinstance(info.value, YoloqError)
    assert info.value.__cause__ is None


def test_host_is_the_hostname_setting_else_the_os_name(monkeypatch: pytest.MonkeyPatch) -> None:
    assert load_settings().host() == socket.gethostname()
    monkeypatch.setenv("YOLOQ_HOSTNAME", "rack7-node2")
    assert load_settings().host() == "rack7-node2"


# --- stack file -----------------------------------------------------------------------------------------------------


def test_stack_file_is_read_and_beats_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    _stack(tmp_path, "YOLOQ_REDIS_URL=redis://stack:1/0\nYOLOQ_S3_BUCKET=from-stack\nJUNK\n")
    settings = load_settings()
    assert (settings.redis_url, settings.s3_bucket) == ("redis://stack:1/0", "from-stack")
    assert load_settings(use_stack_file=False).redis_url == DEFAULT_REDIS
    monkeypatch.setenv("YOLOQ_REDIS_URL", "redis://env:2/0")
    monkeypatch.setenv("YOLOQ_LOG_LEVEL", "DEBUG")
    settings = load_settings()
    assert (settings.redis_url, settings.s3_bucket) == ("redis://stack:1/0", "from-stack")
    assert settings.log_level == "DEBUG"  # what the stack file does not hold still comes from the environment
    assert load_settings(use_stack_file=False).redis_url == "redis://env:2/0"


def test_stack_file_in_the_configured_home_only(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    other = tmp_path / "other"
    other.mkdir()
    _stack(other, "YOLOQ_REDIS_URL=redis://other:1/0\n")
    assert load_settings().redis_url == DEFAULT_REDIS
    monkeypatch.setenv("YOLOQ_HOME", str(other))
    settings = load_settings()
    assert settings.home == other
    assert settings.redis_url == "redis://other:1/0"


def test_stack_file_values_are_typed_and_secret(tmp_path: Path) -> None:
    _stack(tmp_path, "YOLOQ_S3_SECRET_KEY=abc\nYOLOQ_LEASE_TTL_S=3\n")
    settings = load_settings()
    assert settings.s3_secret_key.get_secret_value() == "abc"
    assert settings.lease_ttl_s == 3.0


def test_stack_file_whitespace_blank_lines_and_comments(tmp_path: Path) -> None:
    _stack(tmp_path, "\n# written by yoloq up\n  YOLOQ_S3_BUCKET =  spaced  \n\nYOLOQ_S3_ENDPOINT=http://h:1/?a=b\n")
    settings = load_settings()
    assert settings.s3_bucket == "spaced"
    assert settings.s3_endpoint == "http://h:1/?a=b"  # only the first '=' splits


def test_invalid_stack_file_value_is_a_config_error(tmp_path: Path) -> None:
    _stack(tmp_path, "YOLOQ_LEASE_TTL_S=0\n")
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert str(info.value).startswith(f"invalid setting YOLOQ_LEASE_TTL_S (from {tmp_path / 'stack.env'}): ")
    assert load_settings(use_stack_file=False).lease_ttl_s == 15.0


def test_a_folder_named_stack_env_is_ignored(tmp_path: Path) -> None:
    (tmp_path / "stack.env").mkdir()
    assert load_settings().redis_url == DEFAULT_REDIS


# --- environ_for ----------------------------------------------------------------------------------------------------


def test_environ_for_round_trips_including_secrets(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    settings = Settings(
        home=tmp_path / "h",
        redis_url="redis://r:7/1",
        s3_endpoint="http://s3:9000",
        s3_bucket="b",
        s3_access_key="AK",  # type: ignore[arg-type]
        s3_secret_key="s3cr3t",  # type: ignore[arg-type]
        gpus="0:T4:16",
        lease_ttl_s=3.0,
        worker_ttl_s=5.5,
        visibility_timeout_s=7200,
        log_level="DEBUG",
    )
    env = environ_for(settings)
    assert env["YOLOQ_S3_SECRET_KEY"] == "s3cr3t"
    assert env["YOLOQ_S3_ACCESS_KEY"] == "AK"
    assert env["YOLOQ_HOME"] == str(tmp_path / "h")
    assert env["YOLOQ_VISIBILITY_TIMEOUT_S"] == "7200"
    assert "YOLOQ_WORKER_GPU" not in env  # empty values are left out
    assert all(k.startswith(PREFIX) and k == k.upper() for k in env)
    assert all(isinstance(v, str) for v in env.values())
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    loaded = load_settings(use_stack_file=False)
    assert loaded == settings
    assert environ_for(loaded) == env


def test_environ_for_defaults_leaves_out_empty_values(tmp_path: Path) -> None:
    env = environ_for(load_settings())
    assert "YOLOQ_S3_ACCESS_KEY" not in env
    assert "YOLOQ_S3_SECRET_KEY" not in env
    assert "YOLOQ_GPUS" not in env
    assert env["YOLOQ_REDIS_URL"] == DEFAULT_REDIS
    assert env["YOLOQ_HOME"] == str(tmp_path)
    assert set(env) <= {PREFIX + name.upper() for name in Settings.model_fields}
