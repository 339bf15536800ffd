"""infra/rate_limit.py on the session's real Redis: a tenant's burst, then the wait it is told, then the refill after
that wait; tenants independent; the bucket forgotten once full again; and two `yoloq api` processes spending one
tenant's bucket together (the Lua script and Redis's clock are shared, not each process's own)."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from typing import Any

import pytest

from infra.audit import AuditLog
from infra.rate_limit import RateLimiter, bucket_key
from infra.redis_client import connect
from tasks.errors import RateLimited, SpecRejected
from tests.fleet import poll, yoloq_cli
from tests.integration.test_api import serving_api

pytestmark = pytest.mark.integration


@pytest.fixture
def redis(binary_redis: Any) -> Any:
    """The session's Redis as bytes, wiped before and after the test (tests/conftest.py)."""
    return binary_redis


def test_a_burst_then_the_wait_then_the_refill(redis: Any) -> None:
    limiter = RateLimiter(redis, rate=2.0, burst=3)
    assert [limiter.wait_s("line-1") for _ in range(3)] == [0.0, 0.0, 0.0]
    wait = limiter.wait_s("line-1")
    refused_at = time.monotonic()
    assert 0.3 < wait <= 0.5  # one token at 2/s, less what trickled in since the burst
    with pytest.raises(RateLimited) as caught:
        limiter.take("line-1")
    assert caught.value.retry_after_s == 1  # whole seconds, at least one
    assert str(caught.value) == "tenant line-1 is over its detect rate (2/s, burst 3); retry after 1 s"
    # Another tenant has its own full bucket
    assert [limiter.wait_s("line-2") for _ in range(3)] == [0.0, 0.0, 0.0]
    # The refused tries took nothing: a token is back after the wait named, and not long before it
    poll(lambda: limiter.wait_s("line-1") == 0.0, 5, "line-1's bucket to refill")
    assert time.monotonic() - refused_at > wait - 0.2
    assert limiter.wait_s("line-1") > 0  # one token came back, and it is spent


def test_an_idle_bucket_is_forgotten_once_it_would_be_full(redis: Any) -> None:
    limiter = RateLimiter(redis, rate=10.0, burst=5)
    limiter.take("cam")
    ttl = redis.ttl(bucket_key("cam"))
    assert 1 <= ttl <= 2  # 1 token to refill at 10/s, plus a second
    poll(lambda: not redis.exists(bucket_key("cam")), 5, "the full bucket's key to expire")
    assert [limiter.wait_s("cam") for _ in range(5)] == [0.0] * 5  # and a missing bucket is a full one


def test_a_bucket_needs_a_rate_and_a_token() -> None:
    with pytest.raises(ValueError, match="rate > 0 and burst >= 1"):
        RateLimiter(connect("redis://127.0.0.1:1/0"), rate=0, burst=1)


def _post(base: str, key: str) -> tuple[int, str | None]:
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "image/jpeg"}
    request = urllib.request.Request(base + "/v1/models/parts/detect", data=b"", method="POST", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, None
    except urllib.error.HTTPError as err:
        return err.code, err.headers.get("Retry-After")


def test_two_api_processes_share_a_tenants_bucket(services: Any, redis: Any) -> None:
    done = yoloq_cli(services, "key", "create", "line-3", "--team", "vision", "--scope", "detect")
    assert done.returncode == 0, done.stderr
    key = done.stdout.strip()
    slow = {"YOLOQ_DETECT_RATE": "0.2", "YOLOQ_DETECT_BURST": "2"}
    with serving_api(services, "detect-a", slow) as first, serving_api(services, "detect-b", slow) as second:
        # One token spent on each API (an empty body is a 400, but its token is taken first) ...
        assert _post(first.base, key) == (400, None)
        assert _post(second.base, key) == (400, None)
        # ... and the bucket is empty on both: 5 s at 0.2 tokens/s to the next one
        assert _post(first.base, key) == (429, "5")
        assert _post(second.base, key) == (429, "5")


def test_a_tenant_with_its_own_limit_and_one_on_the_defaults(redis: Any) -> None:
    limiter = RateLimiter(redis, rate=1.0, burst=2)
    # Given the camera line's key may send 5 at once, and a test client keeps the defaults
    limiter.set_rule("line-cams", 100.0, 5, by="cli:ops")
    assert limiter.rules() == {"line-cams": (100.0, 5)}
    assert [limiter.wait_s("line-cams") for _ in range(5)] == [0.0] * 5
    assert [limiter.wait_s("tester") for _ in range(2)] == [0.0, 0.0]
    with pytest.raises(RateLimited, match=r"tenant tester is over its detect rate \(1/s, burst 2\)"):
        limiter.take("tester")
    with pytest.raises(RateLimited, match=r"tenant line-cams is over its detect rate \(100/s, burst 5\)"):
        limiter.take("line-cams")
    # When bad values are given nothing changes, and back to the defaults the tenant gets the default burst
    for rate, burst in ((0.0, 5), (5.0, 0), (5.0, None)):
        with pytest.raises(SpecRejected):
            limiter.set_rule("line-cams", rate, burst, by="cli:ops")
    assert limiter.rules() == {"line-cams": (100.0, 5)}
    limiter.set_rule("line-cams", None, None, by="cli:ops")
    assert limiter.rules() == {}
    redis.delete(bucket_key("line-cams"))
    assert [limiter.wait_s("line-cams") for _ in range(3)][2] > 0  # the default burst of 2
    # And every change is in the audit log, with who made it
    changes = [e for e in AuditLog(redis).entries(10) if e["type"] == "rate-limit-set"]
    assert [(e["tenant"], e["by"]) for e in changes] == [("line-cams", "cli:ops")] * 2
    assert "the defaults (1/s, burst 2)" in changes[0]["reason"] and "100/s, burst 5" in changes[1]["reason"]


def test_yoloq_key_limit_sets_one_keys_limit_for_every_api_process(services: Any, redis: Any) -> None:
    done = yoloq_cli(services, "key", "create", "line-4", "--team", "vision", "--scope", "detect")
    assert done.returncode == 0, done.stderr
    key = done.stdout.strip()
    assert yoloq_cli(services, "key", "limit", "line-4", "--rate", "0.2", "--burst", "1").returncode == 0
    typo = yoloq_cli(services, "key", "limit", "line-44", "--rate", "1", "--burst", "1")
    assert typo.returncode == 2 and "no key named line-44" in typo.stderr
    listed = yoloq_cli(services, "key", "list", "--json")
    mine = next(e for e in json.loads(listed.stdout) if e["name"] == "line-4")
    assert mine["detect_limit"] == {"rate": 0.2, "burst": 1, "own": True}
    with serving_api(services, "detect-c", {"YOLOQ_DETECT_RATE": "50", "YOLOQ_DETECT_BURST": "100"}) as api:
        assert _post(api.base, key) == (400, None)  # its one token (an empty body is a 400, its token taken first)
        assert _post(api.base, key) == (429, "5")  # its own limit, not the API's default of 100
