"""A corrupt API-key entry in Redis (a hand edit, a partial restore) is no key: the HTTP API answers 401, not 500,
the entry is logged by id, and ``yoloq key list`` shows it marked corrupt under its name so it can be revoked.

Redis is a two-hash stand-in here (the key store does one HGET per request and HGETALL to list; create and revoke,
its Lua steps, are tested against the real Redis in tests/integration/test_api_keys.py)."""

from __future__ import annotations

import hashlib
import json
import logging
from types import SimpleNamespace
from typing import Any

import pytest
from fastapi.testclient import TestClient

from infra.api_keys import KEYS, NAMES, ApiKeys
from yoloq.http.app import make_app

pytestmark = pytest.mark.unit

KEY_ID, SECRET = "0123456789ab", "s" * 43
PRESENTED = f"yq_{KEY_ID}_{SECRET}"
SHA = hashlib.sha256(SECRET.encode()).hexdigest()
GOOD = {"name": "ci", "team": "vision", "scopes": ["submit"], "sha256": SHA, "created_at": "2026-01-01T00:00:00Z",
        "created_by": "cli:ops"}  # fmt: skip
CORRUPT = {
    "not json": "{not json",
    "truncated": json.dumps(GOOD)[:40],
    "a list": "[]",
    "null": "null",
    "a string": '"yq"',
    "no scopes": json.dumps({k: v for k, v in GOOD.items() if k != "scopes"}),
    "scopes not a list": json.dumps({**GOOD, "scopes": "submit"}),
    "sha256 a number": json.dumps({**GOOD, "sha256": 5}),
    "sha256 not ascii": json.dumps({**GOOD, "sha256": "é" * 64}),
}


class TwoHashes:
    """The part of redis.Redis the key store reads: HGET and HGETALL over ``yoloq:api-keys`` and its name index."""

    def __init__(self, entry: str) -> None:
        self.hashes = {KEYS: {KEY_ID: entry}, NAMES: {"ci": KEY_ID}}

    def register_script(self, script: str) -> Any:
        return lambda **_: pytest.fail("no Lua step runs in these tests")

    def hget(self, name: str, field: str) -> str | None:
        return self.hashes.get(name, {}).get(field)

    def hgetall(self, name: str) -> dict[str, str]:
        return dict(self.hashes.get(name, {}))


def _api(entry: str) -> TestClient:
    fake = SimpleNamespace(registry=SimpleNamespace(client=None), queues=lambda: {"tiers": {}, "total": 0})
    fake.prepare = lambda: fake
    keys = ApiKeys(TwoHashes(entry), "redis://x").lookup  # type: ignore[arg-type]
    return TestClient(make_app(fake, "t" * 32, keys), raise_server_exceptions=False)  # type: ignore[arg-type]


def test_a_sound_entry_is_the_key_it_describes() -> None:
    assert _api(json.dumps(GOOD)).get("/api/v1/queues", headers={"Authorization": f"Bearer {PRESENTED}"}).json() == {
        "tiers": {},
        "total": 0,
    }


@pytest.mark.parametrize("text", CORRUPT.values(), ids=CORRUPT.keys())
def test_a_corrupt_entry_is_a_401_and_one_logged_line_not_a_500(text: str, caplog: pytest.LogCaptureFixture) -> None:
    # Given a key whose entry in Redis no longer parses, When a request presents it
    with caplog.at_level(logging.ERROR, logger="yoloq.api_keys"):
        answer = _api(text).get("/api/v1/queues", headers={"Authorization": f"Bearer {PRESENTED}"})
    # Then it is refused as no key at all, and the log names the entry by id (never the secret or its hash)
    assert answer.status_code == 401, answer.text
    assert answer.json()["error"].startswith("authentication required")
    logged = [r.getMessage() for r in caplog.records if r.name == "yoloq.api_keys"]
    assert len(logged) == 1 and f"API key {KEY_ID}: its entry in Redis is corrupt" in logged[0], logged
    assert SECRET not in logged[0] and SHA not in logged[0]


@pytest.mark.parametrize("text", CORRUPT.values(), ids=CORRUPT.keys())
def test_key_list_shows_a_corrupt_entry_by_name_so_it_can_be_revoked(text: str) -> None:
    listed = ApiKeys(TwoHashes(text)).entries()  # type: ignore[arg-type]
    assert listed == [{"id": KEY_ID, "name": "ci", "team": "", "scopes": [], "created_at": "", "created_by": "",
                       "corrupt": True}]  # fmt: skip
    sound = ApiKeys(TwoHashes(json.dumps(GOOD))).entries()  # type: ignore[arg-type]
    assert sound == [{"id": KEY_ID, **{k: v for k, v in GOOD.items() if k != "sha256"}}]
