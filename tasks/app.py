"""The one Celery application; task modules register on it with ``@app.task`` (never ``shared_task``)."""

from __future__ import annotations

from celery import Celery

from infra.settings import Settings

TASK_MODULES = ["tasks.probe", "tasks.yolo"]


def create_app(settings: Settings | None = None) -> Celery:
    """An app configured from celeryconfig; explicit settings override the deployment part (tests, bench)."""
    celery_app = Celery("yoloq", set_as_current=False, include=TASK_MODULES)
    celery_app.config_from_object("celeryconfig")
    if settings is not None:
        import celeryconfig

        celery_app.conf.update(celeryconfig.from_settings(settings))
    return celery_app


app = create_app()
