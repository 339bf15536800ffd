"""The one way yoloq opens Redis, and the translation of redis-py errors into the yoloq tree."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import redis
import redis.asyncio

from tasks.errors import BrokerUnavailable, ConfigError


def connect(url: str, timeout_s: float = 3.0, binary: bool = False, read_timeout_s: float | None = None) -> redis.Redis:
    """A client that fails fast (``timeout_s``) instead of hanging a CLI or a worker on a dead broker; a URL redis-py
    cannot read is a ConfigError naming it (password masked), not a traceback. ``binary``: values stay bytes (the
    serving queue carries images). ``read_timeout_s``: a longer wait for an answer, for a client that BLPOPs longer
    than ``timeout_s`` (redis-py applies the socket timeout to blocking commands too)."""
    try:
        return redis.Redis.from_url(
            url,
            decode_responses=not binary,
            socket_connect_timeout=timeout_s,
            socket_timeout=max(timeout_s, read_timeout_s or 0.0),
            health_check_interval=30,
        )
    except ValueError as err:
        raise ConfigError(f"invalid Redis URL {mask(url)!r} (YOLOQ_REDIS_URL): {err}") from None


def connect_async(url: str, timeout_s: float = 3.0, binary: bool = False,
                  read_timeout_s: float | None = None) -> redis.asyncio.Redis:  # fmt: skip
    """:func:`connect` for an event loop (same URL, credentials and timeouts): a wait that holds no thread. Build it
    inside the loop that will use it (its connections belong to that loop) and ``aclose()`` it there."""
    try:
        return redis.asyncio.Redis.from_url(
            url,
            decode_responses=not binary,
            socket_connect_timeout=timeout_s,
            socket_timeout=max(timeout_s, read_timeout_s or 0.0),
            health_check_interval=30,
        )
    except ValueError as err:
        raise ConfigError(f"invalid Redis URL {mask(url)!r} (YOLOQ_REDIS_URL): {err}") from None


@contextmanager
def redis_errors(url: str) -> Iterator[None]:
    """Turn connection-level redis errors into BrokerUnavailable with the URL (password masked)."""
    try:
        yield
    except (redis.ConnectionError, redis.TimeoutError) as err:
        raise BrokerUnavailable(f"cannot reach Redis at {mask(url)}: {err}") from None


def mask(url: str) -> str:
    """The URL with any password replaced, safe for logs and error messages."""
    scheme, sep, rest = url.partition("://")
    creds, at, host = rest.rpartition("@")
    if not at:
        return url
    user = creds.split(":", 1)[0]
    return f"{scheme}{sep}{user}:***@{host}"


def ping(url: str, timeout_s: float = 1.0) -> bool:
    """True when a Redis answers at ``url``; used to decide whether to start an embedded one."""
    client = connect(url, timeout_s)
    try:
        return bool(client.ping())
    except (redis.ConnectionError, redis.TimeoutError, redis.ResponseError, OSError):
        return False
    finally:
        client.close()
