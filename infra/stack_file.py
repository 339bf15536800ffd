"""The stack file ``$YOLOQ_HOME/stack.env``: how a running ``yoloq up`` tells clients in other shells where it is.

It holds an owner line naming the process that wrote it, then ``YOLOQ_KEY=value`` lines (mode 0600: it carries the
S3 secret and the API token)::

    # yoloq up: pid=4242 host=box start=123456 (removed when that process stops)
    YOLOQ_REDIS_URL=redis://:...@127.0.0.1:40211/0
    YOLOQ_GPUS=0:T4:16,1:A100:40

The file is *live* while its owner runs on this host (pid alive and, where ``/proc`` tells, started at the same
tick, so a recycled pid does not count). A stack stopped cleanly removes its file; one killed with ``kill -9`` leaves
it behind, pointing at servers that died with it (their children get a parent-death signal), so a stale file is
ignored rather than trusted. A file written on another host is never live here: its ``127.0.0.1`` addresses are
that host's. A file without an owner line (written by hand) counts as live.
"""

from __future__ import annotations

import os
import re
import socket
from dataclasses import dataclass
from pathlib import Path

from infra.processes import pid_alive

FILE_NAME = "stack.env"
# What `yoloq up` publishes: where its services are and how to authenticate, plus a simulated inventory.
PUBLISHED = (
    "YOLOQ_REDIS_URL",
    "YOLOQ_S3_ENDPOINT",
    "YOLOQ_S3_BUCKET",
    "YOLOQ_S3_ACCESS_KEY",
    "YOLOQ_S3_SECRET_KEY",
    "YOLOQ_API_TOKEN",
    "YOLOQ_FLOWER_BASIC_AUTH",
    "YOLOQ_GPUS",
)
_OWNER = re.compile(r"^#\s*yoloq up:\s*pid=(\d+)\s+host=(\S+)\s+start=(\S*)")


def process_start(pid: int) -> str:
    """The process's start time in clock ticks since boot (``/proc/PID/stat`` field 22), or "" when unknown."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    fields = stat.rpartition(")")[2].split()  # the command name in parentheses may contain spaces
    return fields[19] if len(fields) > 19 else ""


@dataclass(frozen=True)
class Owner:
    """The ``yoloq up`` (or demo) process that wrote a stack file."""

    pid: int
    host: str
    start: str

    def alive(self) -> bool:
        """Whether that very process still runs on this host."""
        if self.pid <= 0 or self.host != socket.gethostname() or not pid_alive(self.pid):
            return False
        return not self.start or process_start(self.pid) in ("", self.start)


@dataclass(frozen=True)
class StackFile:
    """One parsed stack file: its ``YOLOQ_*`` values in file order and the process that wrote it."""

    path: Path
    values: dict[str, str]
    owner: Owner | None

    def live(self) -> bool:
        """Whether the stack it describes is running (a file without an owner line is taken at its word)."""
        return self.owner is None or self.owner.alive()

    def describe(self) -> str:
        """Who wrote it, for messages: ``yoloq up, pid 4242`` (or ``no owner line``)."""
        return f"yoloq up, pid {self.owner.pid}" if self.owner else "no owner line"


def read_stack_file(home: Path) -> StackFile | None:
    """The stack file in ``home``, or None when there is none (a folder of that name does not count)."""
    path = home / FILE_NAME
    try:
        text = path.read_text()
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        return None
    values: dict[str, str] = {}
    owner = None
    for line in text.splitlines():
        found = _OWNER.match(line.strip())
        if found:
            owner = Owner(int(found.group(1)), found.group(2), found.group(3))
            continue
        key, sep, value = line.partition("=")
        if sep and not key.strip().startswith("#"):
            values[key.strip()] = value.strip()
    return StackFile(path, values, owner)


def write_stack_file(home: Path, values: dict[str, str]) -> Path:
    """Publish ``values`` (mode 0600 from the first byte) with an owner line naming this process."""
    path = home / FILE_NAME
    path.parent.mkdir(parents=True, exist_ok=True)
    pid = os.getpid()
    head = f"# yoloq up: pid={pid} host={socket.gethostname()} start={process_start(pid)} (removed when it stops)\n"
    path.touch(mode=0o600)
    path.chmod(0o600)  # touch keeps the mode of an existing file; this one holds the S3 secret
    path.write_text(head + "".join(f"{k}={v}\n" for k, v in values.items()))
    return path
