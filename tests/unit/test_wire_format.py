"""JSON only on the wire: every Celery app yoloq builds, and its control mailbox and event receiver, refuse a pickled
(or YAML, msgpack) message before decoding it. A pickle in ``accept_content`` would run an attacker's code on
receipt, before any task code (bench/drills/security.py publishes such messages to real workers)."""

from __future__ import annotations

import builtins
import pickle
from pathlib import Path
from typing import Any

import pytest
from celery import Celery
from kombu.exceptions import ContentDisallowed, SerializerNotInstalled
from kombu.serialization import loads, prepare_accept_content, registry

from infra.settings import Settings
from tasks.app import app, create_app

pytestmark = pytest.mark.unit

JSON = {"application/json"}
REFUSED = ["application/x-python-serialize", "application/x-yaml", "application/x-msgpack"]


class Planted:
    """Unpickling this sets ``builtins._yoloq_unpickled``: the code an attacker's message would run."""

    def __reduce__(self) -> tuple[Any, ...]:
        return exec, ("import builtins; builtins._yoloq_unpickled = True",)


def _apps(tmp_path: Path) -> list[Celery]:
    return [app, create_app(Settings(home=tmp_path))]


def test_every_app_sends_and_accepts_json_only(tmp_path: Path) -> None:
    for celery in _apps(tmp_path):
        conf = celery.conf
        assert (conf.task_serializer, conf.result_serializer, conf.event_serializer) == ("json", "json", "json")
        assert prepare_accept_content(conf.accept_content) == JSON
        assert prepare_accept_content(conf.result_accept_content) == JSON
        control: Any = celery.control  # its mailbox carries ping, revoke, shutdown, pool_grow
        assert set(control.mailbox.accept) == {"json"} and control.mailbox.serializer == "json"
        assert prepare_accept_content(celery.events.Receiver(None, handlers={}).accept) == JSON


@pytest.mark.parametrize("content_type", REFUSED)
def test_a_pickled_message_is_refused_unread(tmp_path: Path, content_type: str) -> None:
    body = pickle.dumps(Planted())
    assert pickle.loads(body) is None and builtins.__dict__.pop("_yoloq_unpickled")  # the payload does run if read
    for celery in _apps(tmp_path):
        with pytest.raises(ContentDisallowed):
            loads(body, content_type, "binary", accept=prepare_accept_content(celery.conf.accept_content))
    assert "_yoloq_unpickled" not in builtins.__dict__


def test_kombu_can_decode_no_pickle_in_a_process_that_built_an_app(tmp_path: Path) -> None:
    # Given every app built (tasks.app at import, create_app): kombu registered pickle, YAML and msgpack at its import
    _apps(tmp_path)
    # Then none is left to decode with: even a forced decode without an accept list leaves a pickle as bytes
    body = pickle.dumps(Planted())
    assert "application/x-python-serialize" not in registry._decoders and "pickle" not in registry.name_to_type
    assert loads(body, "application/x-python-serialize", "binary", accept=None, force=True) == body
    assert "_yoloq_unpickled" not in builtins.__dict__
    # And an accept list naming pickle fails when it is read instead of letting pickles in
    with pytest.raises(SerializerNotInstalled):
        prepare_accept_content(["json", "pickle"])
