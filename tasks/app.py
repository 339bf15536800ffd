"""The one Celery application; task modules register on it with ``@app.task`` (never ``shared_task``)."""

from __future__ import annotations

import contextlib

from celery import Celery
from kombu import serialization
from kombu.exceptions import SerializerNotInstalled

from infra.settings import Settings

TASK_MODULES = ["tasks.probe", "tasks.yolo"]
UNSAFE_SERIALIZERS = ("pickle", "yaml", "msgpack")  # kombu registers them at import; yoloq's wire is JSON only


def drop_unsafe_serializers() -> None:
    """Take pickle, YAML and msgpack out of kombu's registry in this process, so no code path (a forced decode, a
    message read without an accept list, a ``pickle`` slipped into ``accept_content``) can turn a body into code:
    such a body stays bytes, and a ``pickle`` in an accept list fails when the list is read."""
    for name in UNSAFE_SERIALIZERS:
        with contextlib.suppress(SerializerNotInstalled):  # already gone (a second app in this process)
            serialization.unregister(name)


def create_app(settings: Settings | None = None) -> Celery:
    """An app configured from celeryconfig; explicit settings override the deployment part (tests, bench)."""
    drop_unsafe_serializers()
    celery_app = Celery("yoloq", set_as_current=False, include=TASK_MODULES)
    celery_app.config_from_object("celeryconfig")
    if settings is not None:
        import celeryconfig

        celery_app.conf.update(celeryconfig.from_settings(settings))
    return celery_app


app = create_app()
