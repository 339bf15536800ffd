"""The real Flower, run in-process on yoloq's own Celery app, with basic auth on every page including ``/metrics``.

Why in-process rather than ``celery flower``: the Celery app is yoloq's (the broker URL and transport options are
exactly the workers' and clients', BRIEF §5), the credentials come from typed settings and never travel through argv
or Flower's own ``FLOWER_*`` / ``flowerconfig.py`` parsing, and ``/metrics`` can be put behind the same basic auth:
Flower 2.x serves it without authentication even when basic auth is on (mher/flower#1129, #1342).
Only ``/healthcheck`` (answers "OK") and the static files stay open, for probes and the login page's assets.

Flower is read-only unless asked otherwise: its controls bypass yoloq's invariants (revoke leaves a registry job
``queued`` with no message, pool grow breaks one job per GPU, add-consumer feeds a GPU queues it does not fit).
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import logging
import signal
from pathlib import Path
from types import FrameType
from typing import Any

import tornado.web
from flower.app import Flower
from flower.urls import settings as flower_web_settings
from flower.views import BaseHandler
from flower.views.monitor import Metrics
from tornado.ioloop import IOLoop
from tornado.options import options

from infra.flower_history import JsonEvents
from infra.redis_client import mask
from infra.settings import Settings
from tasks.app import create_app

log = logging.getLogger("yoloq.flower")

# A crash (kill -9, OOM) loses at most this much history; a SIGTERM saves everything on the way out.
STATE_SAVE_INTERVAL_MS = 10_000
# The task list shows the kwargs (job_id, tier, team: infra/celery_control.py) and the attempt's outcome.
TASK_COLUMNS = "name,uuid,state,kwargs,result,received,started,runtime,worker"


class AuthenticatedMetrics(Metrics):  # type: ignore[misc]  # flower ships no type hints
    """Flower's Prometheus page behind the same credentials as every other page (upstream leaves it open)."""

    @tornado.web.authenticated
    async def get(self) -> None:
        """Serve the metrics only to an authenticated client; anyone else gets Flower's own 401."""
        await super().get()


def _basic_auth_user(handler: Any) -> bool:
    """Flower's own check hmac-compares str, which raises (a 500) on a non-ASCII password; this one compares bytes."""
    scheme, _, value = handler.request.headers.get("Authorization", "").partition(" ")
    try:
        given = base64.b64decode(value.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise tornado.web.HTTPError(401) from None
    matches = [hmac.compare_digest(given, stored.encode()) for stored in handler.application.options.basic_auth]
    if scheme.lower() != "basic" or not any(matches):
        raise tornado.web.HTTPError(401)
    return True


def state_db(home: Path) -> Path:
    """Where the history is kept (JSON, infra/flower_history.py): a directory only this user can read."""
    directory = home / "flower"
    directory.mkdir(parents=True, exist_ok=True)
    directory.chmod(0o700)
    return directory / "history.json"


def build(settings: Settings, credentials: str, *, port: int, address: str, allow_control: bool = False) -> Any:
    """A Flower web app over yoloq's Celery app: persistent history, basic auth everywhere, kwargs in the task list."""
    # Every Flower page asks BaseHandler who the user is; basic auth is the only scheme yoloq configures.
    BaseHandler.get_current_user = _basic_auth_user
    options.port = port
    options.address = address
    options.basic_auth = [credentials]
    options.read_only = not allow_control
    options.persistent = False  # Flower's own persistence is a shelve (pickle): JsonEvents keeps the history instead
    options.db = str(state_db(settings.home))
    options.tasks_columns = TASK_COLUMNS
    celery_app = create_app(settings)
    loop = IOLoop.current()
    events = JsonEvents(celery_app, loop, db=options.db, persistent=True, state_save_interval=STATE_SAVE_INTERVAL_MS,
                        enable_events=options.enable_events, max_workers_in_memory=options.max_workers,
                        max_tasks_in_memory=options.max_tasks)  # fmt: skip
    flower_app = Flower(capp=celery_app, options=options, events=events, io_loop=loop, **flower_web_settings)
    # Tornado matches host rules in order and add_handlers inserts before the default one: ours wins for /metrics.
    flower_app.add_handlers(r".*", [(r"/metrics", AuthenticatedMetrics)])
    return flower_app


def _exit_on_sigterm(_signum: int, _frame: FrameType | None) -> None:
    """Leave the event loop like Ctrl-C does, so the ``finally`` below saves the history."""
    raise SystemExit(0)


def serve(flower_app: Any) -> None:
    """Listen, capture events until SIGINT/SIGTERM, then stop (which writes the persistent state)."""
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    port = flower_app.start_http_server()
    conf = flower_app.capp.conf
    mode = "read-only" if options.read_only else "controls enabled"
    log.info("flower on http://%s:%s (basic auth required, %s), history in %s", options.address, port, mode, options.db)
    log.info("broker %s", mask(str(conf.broker_url)))
    log.info("broker transport options %s", json.dumps(conf.broker_transport_options, sort_keys=True))
    try:
        flower_app.start()
    except (KeyboardInterrupt, SystemExit):
        log.info("stopping flower, saving its history to %s", options.db)
    finally:
        flower_app.stop()
