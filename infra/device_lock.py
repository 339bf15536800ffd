"""A host-local lock per GPU: at most one live worker per device on this host, whatever Redis says.

The Redis claim (:mod:`infra.presence`) can vanish while its worker lives: it expires while Redis is unreachable
longer than its TTL, and a flush or a failover loses it. This lock cannot. ``yoloq worker --gpu I`` takes
``flock(LOCK_EX | LOCK_NB)`` on ``{dir}/{name}.lock`` before it claims the device and holds it for its whole life;
the kernel drops it when the process exits, however it exits, so ``kill -9`` never leaves a stale lock. The file
holds the owner's pid (written once locked), so a refused worker can name it.

Forked children (Celery's pool) close their copy at fork: the lock belongs to the worker's main process only, so a
pool child left behind by a killed worker never keeps the device locked (exec'd children never inherit it).

Where: ``YOLOQ_DEVICE_LOCK_DIR`` when set; otherwise ``/tmp/yoloq-locks`` for real devices (host-wide, one file per
GPU UUID) and ``$YOLOQ_HOME/locks`` for simulated ones, keyed by index: a simulated GPU exists only in the stack
that declares it, so two stacks on one host each have their own "GPU 0". The directory is created 0700 and must
belong to this user: one made by another user (squatting a shared /tmp) is refused, never trusted.

Errors: :class:`GpuUnavailable` when another live process holds the device; :class:`ConfigError` when the
directory is not absolute or not usable.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import stat
from pathlib import Path

from infra.ports import GpuInfo
from tasks.errors import ConfigError, GpuUnavailable

HOST_LOCK_DIR = Path("/tmp/yoloq-locks")  # noqa: S108 - host-wide on purpose; created 0700, ownership checked


def lock_dir(configured: str, home: Path, gpu: GpuInfo) -> Path:
    """The directory holding ``gpu``'s lock: the configured one, else host-wide for real devices and per stack for
    simulated ones (the same simulated index in two stacks is two devices)."""
    if configured:
        path = Path(configured)
        if not path.is_absolute():
            raise ConfigError(f"YOLOQ_DEVICE_LOCK_DIR must be an absolute path, not {configured!r}")
        return path
    return home / "locks" if gpu.simulated else HOST_LOCK_DIR


def lock_name(gpu: GpuInfo) -> str:
    """File name of ``gpu``'s lock: its UUID (stable across index renumbering), its index when simulated or unknown."""
    raw = gpu.uuid if gpu.uuid and not gpu.simulated else f"gpu{gpu.index}"
    return re.sub(r"[^A-Za-z0-9._-]", "_", raw) + ".lock"  # a MIG UUID may contain '/'


class DeviceLock:
    """A held lock; :meth:`release` (or the process's exit) frees it."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path, self._fd = path, fd
        os.register_at_fork(after_in_child=self._forget)

    def _forget(self) -> None:
        """In a forked child: close the inherited copy (the parent keeps the lock)."""
        if self._fd >= 0:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = -1

    @property
    def held(self) -> bool:
        """True until released."""
        return self._fd >= 0

    def release(self) -> None:
        """Unlock and close (idempotent), so a replacement worker can start at once."""
        if self._fd >= 0:
            with contextlib.suppress(OSError):
                fcntl.flock(self._fd, fcntl.LOCK_UN)
            self._forget()


def _private_dir(path: Path) -> None:
    """Create ``path`` 0700, or accept it if this user owns it (tightening a looser mode); refuse anything else."""
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        info = path.lstat()
        if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.geteuid():
            raise ConfigError(f"device lock directory {path} is not a directory owned by uid {os.geteuid()} "
                              "(set YOLOQ_DEVICE_LOCK_DIR to one that is)")  # fmt: skip
        if stat.S_IMODE(info.st_mode) != 0o700:
            path.chmod(0o700)
    except OSError as err:
        raise ConfigError(f"cannot use device lock directory {path}: {err.strerror or err}") from None


def _holder(path: Path) -> str:
    """The pid the lock file names ('unknown' in the instant between another worker's lock and its write)."""
    try:
        text = path.read_text(encoding="ascii", errors="replace").strip()
    except OSError:
        return "unknown"
    return text if text.isdigit() else "unknown"


def lock_device(directory: Path, name: str, what: str) -> DeviceLock:
    """Take the lock ``directory/name`` for this process's life, or raise GpuUnavailable naming the owner's pid."""
    _private_dir(directory)
    path = directory / name
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except OSError as err:
        raise ConfigError(f"cannot open device lock {path}: {err.strerror or err}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise GpuUnavailable(
            f"{what} already has a live worker on this host: pid {_holder(path)} holds {path}"
        ) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return DeviceLock(path, fd)


def lock_gpu(configured_dir: str, home: Path, gpu: GpuInfo) -> DeviceLock:
    """Take ``gpu``'s host-local lock (see the module docstring for where it lives)."""
    what = f"GPU {gpu.index} ({gpu.uuid or gpu.name})"
    return lock_device(lock_dir(configured_dir, home, gpu), lock_name(gpu), what)
