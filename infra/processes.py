"""Child processes that never outlive yoloq: own process group, parent-death signal, stop by pid; what they write
is their owner's alone (umask 077: Redis's AOF, SeaweedFS's volumes, logs and job files hold keys and job data), and
what they inherit is chosen (:func:`allowed_environ`).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

_PR_SET_PDEATHSIG = 1
PRIVATE_UMASK = 0o077  # files 0600, folders 0700

# What a child that runs a job needs from its parent's environment; nothing here is a credential. Everything else
# (API token, Flower password, cloud keys, whatever an operator's shell exported) stays with the parent.
INHERITED_NAMES = frozenset({
    "PATH", "HOME", "USER", "LOGNAME", "LANG", "LANGUAGE", "TZ", "TMPDIR", "PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV",
    "LD_LIBRARY_PATH", "SSL_CERT_FILE", "SSL_CERT_DIR", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "AWS_CA_BUNDLE",
    "OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS", "PYTORCH_CUDA_ALLOC_CONF",
})  # fmt: skip
INHERITED_PREFIXES = ("LC_", "CUDA_", "NVIDIA_", "NCCL_")  # locale; device selection (CUDA_VISIBLE_DEVICES) and tuning


def die_with_parent() -> None:
    """Runs in the child before exec: the kernel sends SIGTERM to it when its parent dies, even by kill -9."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def _start_child() -> None:
    """Runs in every managed child before exec: die with the parent, write nothing others may read."""
    die_with_parent()
    os.umask(PRIVATE_UMASK)


@contextlib.contextmanager
def private_umask() -> Iterator[None]:
    """Files and folders created meanwhile by this process are its owner's alone (umask 077), then the old umask."""
    previous = os.umask(PRIVATE_UMASK)
    try:
        yield
    finally:
        os.umask(previous)


def private_dir(path: Path) -> Path:
    """Create ``path`` and its missing parents as 0700 (existing folders are left as they are): yoloq's state
    folders hold keys, the registry's AOF and job data."""
    with private_umask():
        path.mkdir(parents=True, exist_ok=True)
    return path


def allowed_environ(parent: Mapping[str, str], extra: Mapping[str, str]) -> dict[str, str]:
    """A child's whole environment: the allow-listed part of ``parent`` plus ``extra``; an allow-list, so a secret
    added to the parent's environment later is not handed on by default."""
    kept = {k: v for k, v in parent.items() if k in INHERITED_NAMES or k.startswith(INHERITED_PREFIXES)}
    return {**kept, **extra}


def pid_alive(pid: int) -> bool:
    """True when a process with this pid exists on this host."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(check: Callable[[], bool], timeout_s: float, what: str, interval_s: float = 0.05) -> None:
    """Poll ``check`` until it is true or raise TimeoutError naming ``what``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(interval_s)
    raise TimeoutError(f"timed out after {timeout_s:.0f}s waiting for {what}")


class ManagedProcess:
    """A started child process with its log file; ``stop()`` ends it and everything it forked."""

    def __init__(self, name: str, argv: list[str], log_path: Path, env: dict[str, str] | None = None) -> None:
        self.name = name
        self.log_path = log_path
        private_dir(log_path.parent)
        fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        with contextlib.suppress(OSError):
            os.fchmod(fd, 0o600)  # a log an earlier version left 0644
        self._log = os.fdopen(fd, "ab")
        self.proc = subprocess.Popen(
            argv,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=True,
            preexec_fn=_start_child,  # noqa: PLW1509 - only prctl and umask, no locks taken
        )

    @property
    def pid(self) -> int:
        """The child's pid."""
        return self.proc.pid

    def alive(self) -> bool:
        """True while the child runs."""
        return self.proc.poll() is None

    def signal(self, signum: int) -> None:
        """Send a signal to the child's whole process group."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signum)

    def warm_stop(self, grace_s: float) -> int | None:
        """SIGTERM to the main process only (a Celery worker's warm shutdown: it preempts its running job, which
        checkpoints and is requeued), wait up to ``grace_s``, then :meth:`stop` whatever is left."""
        if self.alive():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(self.proc.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(grace_s)
        return self.stop(5)

    def stop(self, grace_s: float = 10.0) -> int | None:
        """SIGTERM, wait ``grace_s``, then SIGKILL the group; returns the exit code."""
        if self.alive():
            self.signal(signal.SIGTERM)
            try:
                self.proc.wait(grace_s)
            except subprocess.TimeoutExpired:
                self.signal(signal.SIGKILL)
                self.proc.wait(5)
        self.signal(signal.SIGKILL)  # stragglers in the group (e.g. pool children)
        self._log.close()
        return self.proc.returncode

    def tail(self, lines: int = 20) -> str:
        """The end of the child's log, for error messages."""
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""
