"""A job process's environment is an allow-list (issue 15 item 7): the basics a process needs and the settings a job
reads; never the API token, Flower's password or whatever else the worker's environment holds. The real processes
are checked in tests/integration/test_hardening.py; these pin the lists."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import SecretStr

from infra.processes import allowed_environ
from infra.settings import Settings
from tasks.job_body import job_environ
from tasks.job_process import JOB_SETTINGS, NOT_FOR_JOBS

pytestmark = [pytest.mark.unit, pytest.mark.usefixtures("clean_env")]

TOKEN = "t" * 43


def test_every_setting_is_either_handed_to_jobs_or_kept_from_them() -> None:
    # A new setting must be classified here: an allow-list that silently drops it would break jobs, and a
    # deny-list that silently passes it could leak the next secret.
    assert set(Settings.model_fields) == JOB_SETTINGS | NOT_FOR_JOBS
    assert not JOB_SETTINGS & NOT_FOR_JOBS
    assert {"api_token", "flower_basic_auth"} <= NOT_FOR_JOBS


def test_allowed_environ_keeps_the_listed_basics_only_and_extra_wins() -> None:
    parent = {"PATH": "/bin", "LC_ALL": "C", "CUDA_VISIBLE_DEVICES": "3", "NVIDIA_VISIBLE_DEVICES": "all",
              "SOME_SECRET": "s", "AWS_SECRET_ACCESS_KEY": "k", "YOLOQ_API_TOKEN": TOKEN}  # fmt: skip
    assert allowed_environ(parent, {"PATH": "/usr/bin", "YOLOQ_HOME": "/h"}) == {
        "PATH": "/usr/bin", "LC_ALL": "C", "CUDA_VISIBLE_DEVICES": "3", "NVIDIA_VISIBLE_DEVICES": "all",
        "YOLOQ_HOME": "/h",
    }  # fmt: skip


def test_job_environ_hands_the_job_settings_and_no_secret(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("SOME_SECRET", "hunter2")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    settings = Settings(home=tmp_path, redis_url="redis://:pw@127.0.0.1:1/0", s3_secret_key=SecretStr("s3key"),
                        api_token=SecretStr(TOKEN), flower_basic_auth=SecretStr("ops:flowerpw"), worker_gpu="1",
                        schedule_file=str(tmp_path / "s.yaml"))  # fmt: skip
    env = job_environ(settings)
    assert env["YOLOQ_REDIS_URL"] == "redis://:pw@127.0.0.1:1/0"
    assert env["YOLOQ_S3_SECRET_KEY"] == "s3key"  # a job uploads checkpoints: S3's keys are what it needs
    assert env["YOLOQ_HOME"] == str(tmp_path)
    assert env["YOLOQ_WORKER_GPU"] == "1"
    assert env["CUDA_VISIBLE_DEVICES"] == "1"
    assert "SOME_SECRET" not in env
    assert not {"YOLOQ_API_TOKEN", "YOLOQ_FLOWER_BASIC_AUTH", "YOLOQ_SCHEDULE_FILE"} & set(env)
    assert not {TOKEN, "ops:flowerpw", "hunter2"} & set(env.values())
