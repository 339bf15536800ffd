"""The detect path's shared clock (infra/redis_clock.py) on a real Redis: hosts whose clocks disagree by minutes read
the same time, so an API host behind and a replica host ahead agree on a request's deadline; with Redis gone the last
offset stays."""

from __future__ import annotations

import time
from typing import Any

import pytest
import redis

from infra.redis_client import connect
from infra.redis_clock import RedisClock

pytestmark = pytest.mark.integration


def _server_time(client: Any) -> float:
    seconds, micros = client.time()
    return float(seconds + micros / 1e6)


def test_hosts_with_skewed_clocks_read_one_time_and_agree_on_a_deadline(services) -> None:
    client = connect(services.settings.redis_url)
    api = RedisClock(client, local=lambda: time.time() - 45)  # the API host is 45 s behind
    replica = RedisClock(client, local=lambda: time.time() + 30)  # the replica host 30 s ahead
    assert abs(api.offset_s) < 1e-9  # nothing read yet
    deadline = api.now() + 10  # a request the caller waits 10 s for
    assert abs(api.now() - _server_time(client)) < 0.05 and abs(replica.now() - _server_time(client)) < 0.05
    assert 44 < api.offset_s < 46 and -31 < replica.offset_s < -29
    # On the replica host the request has ~10 s left (on its own clock it would have expired 20 s ago)
    assert 9 < deadline - replica.now() < 10.1
    assert deadline - (time.time() + 30) < 0


def test_the_offset_is_read_again_when_due_and_kept_when_redis_cannot_be_read(services) -> None:
    skew = [100.0]
    clock = RedisClock(connect(services.settings.redis_url), refresh_s=0.0, local=lambda: time.time() + skew[0])
    clock.now()
    assert -101 < clock.offset_s < -99
    skew[0] = -20.0  # the host's clock is stepped: the next due read follows it
    clock.now()
    assert 19 < clock.offset_s < 21
    dead = RedisClock(redis.Redis(port=1, socket_connect_timeout=0.2), refresh_s=0.0, local=time.time)
    dead._offset = 7.0  # as last measured
    assert abs(dead.now() - (time.time() + 7.0)) < 0.05 and dead.offset_s == 7.0
