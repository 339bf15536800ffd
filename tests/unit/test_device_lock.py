"""The host-local GPU lock (issue 15 item 2b): one live worker per device whatever Redis says, never a stale lock.

The holders are real processes: the lock is the kernel's (flock), so only another process can show it refusing,
and only a process that dies shows it gone.
"""

from __future__ import annotations

import contextlib
import os
import signal
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from infra import device_lock
from infra.device_lock import HOST_LOCK_DIR, lock_device, lock_dir, lock_gpu, lock_name
from infra.ports import GpuInfo
from tasks.errors import ConfigError, GpuUnavailable

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
# Takes the lock, optionally forks a child (once that child runs), then says so on stdout and waits to be killed.
HOLDER = """
import os, sys, time
from pathlib import Path
from infra.device_lock import lock_device
lock = lock_device(Path(sys.argv[1]), "gpu0.lock", "GPU 0")
forked, started = os.pipe()
child = os.fork() if sys.argv[2] == "fork" else -1
if child == 0:
    os.write(started, b"!")  # fork hooks have run in this child by now
    time.sleep(60)
    os._exit(0)
if child > 0:
    os.read(forked, 1)
print(child, flush=True)
time.sleep(60)
"""
REAL = GpuInfo(0, "H100", 81_559, uuid="GPU-5f3c9a1e-0000-1111-2222-333344445555")
SIMULATED = GpuInfo(1, "T4", 16_384, uuid="SIM-1-T4", simulated=True)


@contextlib.contextmanager
def holder(directory: Path, fork: bool = False) -> Iterator[tuple[subprocess.Popen[str], int]]:
    """A process holding ``directory/gpu0.lock`` (and the pid of a forked child of it, or -1); killed at the end."""
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(directory), "fork" if fork else "-"], cwd=ROOT,
                            stdout=subprocess.PIPE, text=True, start_new_session=True)  # fmt: skip
    try:
        assert proc.stdout is not None
        child = int(proc.stdout.readline() or "0")  # the line comes once the lock is held: no sleep needed
        assert child != 0, "the holder process failed to take the lock"
        yield proc, child
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)


def test_a_second_process_is_refused_naming_the_owner_and_a_kill_9_frees_the_device(tmp_path: Path) -> None:
    # Given a live process holding GPU 0's lock
    with holder(tmp_path) as (proc, _):
        # When another one asks for it, Then it is refused with the owner's pid and the lock file named
        with pytest.raises(GpuUnavailable) as refused:
            lock_device(tmp_path, "gpu0.lock", "GPU 0")
        assert str(refused.value) == (
            f"GPU 0 already has a live worker on this host: pid {proc.pid} holds {tmp_path / 'gpu0.lock'}"
        )
        # When the owner is killed with -9
        proc.kill()
        proc.wait(10)
        # Then the kernel has dropped its lock: no stale lock, the next worker gets the device at once
        lock = lock_device(tmp_path, "gpu0.lock", "GPU 0")
    assert (tmp_path / "gpu0.lock").read_text() == f"{os.getpid()}\n"
    lock.release()


def test_a_forked_child_does_not_keep_the_lock_of_its_dead_parent(tmp_path: Path) -> None:
    # Given a holder that forked a child (as Celery's prefork pool does), and the holder killed, the child alive
    with holder(tmp_path, fork=True) as (proc, child):
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        assert _alive(child)
        # Then the lock is free: it belonged to the worker's main process only
        lock_device(tmp_path, "gpu0.lock", "GPU 0").release()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_release_frees_the_device_at_once_and_twice_is_harmless(tmp_path: Path) -> None:
    lock = lock_device(tmp_path, "gpu0.lock", "GPU 0")
    with pytest.raises(GpuUnavailable):  # a second open file is a second holder, even in one process
        lock_device(tmp_path, "gpu0.lock", "GPU 0")
    lock.release()
    lock.release()
    assert not lock.held
    lock_device(tmp_path, "gpu0.lock", "GPU 0").release()


def test_the_lock_directory_is_private_and_a_looser_one_is_tightened(tmp_path: Path) -> None:
    # Given no directory yet: it is created 0700 and the lock file 0600
    lock = lock_device(tmp_path / "locks", "gpu0.lock", "GPU 0")
    assert stat.S_IMODE((tmp_path / "locks").stat().st_mode) == 0o700
    assert stat.S_IMODE((tmp_path / "locks" / "gpu0.lock").stat().st_mode) == 0o600
    lock.release()
    # Given one of ours that is world-readable: it is tightened
    (tmp_path / "loose").mkdir(mode=0o755)
    (tmp_path / "loose").chmod(0o777)
    lock_device(tmp_path / "loose", "gpu0.lock", "GPU 0").release()
    assert stat.S_IMODE((tmp_path / "loose").stat().st_mode) == 0o700


def test_a_directory_of_another_user_or_a_symlink_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A symlink (someone pointing the lock directory elsewhere) is not followed
    (tmp_path / "real").mkdir(mode=0o700)
    (tmp_path / "link").symlink_to(tmp_path / "real")
    with pytest.raises(ConfigError, match="not a directory owned by uid"):
        lock_device(tmp_path / "link", "gpu0.lock", "GPU 0")
    # A directory another user made (squatting a shared /tmp) is not trusted
    monkeypatch.setattr(device_lock.os, "geteuid", lambda: os.getuid() + 4242)
    with pytest.raises(ConfigError, match="set YOLOQ_DEVICE_LOCK_DIR"):
        lock_device(tmp_path / "real", "gpu0.lock", "GPU 0")
    assert not (tmp_path / "real" / "gpu0.lock").exists()  # refused before anything was written


def test_where_the_lock_lives(tmp_path: Path) -> None:
    # Real devices lock host-wide by UUID; simulated ones per stack by index (each stack has its own "GPU 1")
    assert lock_dir("", tmp_path, REAL) == HOST_LOCK_DIR
    assert lock_dir("", tmp_path, SIMULATED) == tmp_path / "locks"
    assert lock_dir("/srv/locks", tmp_path, SIMULATED) == Path("/srv/locks")
    with pytest.raises(ConfigError, match="YOLOQ_DEVICE_LOCK_DIR must be an absolute path"):
        lock_dir("locks", tmp_path, REAL)
    assert lock_name(REAL) == "GPU-5f3c9a1e-0000-1111-2222-333344445555.lock"
    assert lock_name(SIMULATED) == "gpu1.lock"
    assert lock_name(GpuInfo(2, "A100", 40_960, uuid="MIG-GPU-abc/1/0")) == "MIG-GPU-abc_1_0.lock"
    assert lock_name(GpuInfo(3, "A100", 40_960)) == "gpu3.lock"


def test_lock_gpu_names_the_device_in_its_refusal(tmp_path: Path) -> None:
    lock = lock_gpu(str(tmp_path), tmp_path, REAL)
    with pytest.raises(GpuUnavailable, match=rf"^GPU 0 \({REAL.uuid}\) already has a live worker on this host: pid "):
        lock_gpu(str(tmp_path), tmp_path, REAL)
    lock.release()
