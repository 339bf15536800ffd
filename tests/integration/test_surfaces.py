"""The local stack's back-end surfaces refuse callers without credentials (docs/security.md): Redis wants its
generated password, SeaweedFS's S3 port wants signed requests."""

from __future__ import annotations

import urllib.error
import urllib.request
from typing import Any

import pytest
import redis

pytestmark = pytest.mark.integration


def test_redis_refuses_a_client_without_the_password(services: Any) -> None:
    url = services.settings.redis_url
    assert ":" in url.split("@")[0].removeprefix("redis://"), "the embedded Redis has a password"
    anonymous = redis.Redis.from_url("redis://" + url.split("@", 1)[1], socket_timeout=3)
    with pytest.raises(redis.AuthenticationError):
        anonymous.ping()


def test_s3_refuses_unsigned_requests(services: Any) -> None:
    bucket_url = f"{services.settings.s3_endpoint}/{services.settings.s3_bucket}"
    for request in (urllib.request.Request(bucket_url), urllib.request.Request(f"{bucket_url}/planted.pt",
                                                                                data=b"x", method="PUT")):  # fmt: skip
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=10)
        assert refused.value.code == 403, request.full_url
