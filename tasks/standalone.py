"""A serving replica outside the job system (``yoloq replica``): the loop of a ``kind: serve`` job
(:mod:`tasks.serve_runner`, :mod:`tasks.serve_models`) run in the foreground of a process that something else starts
and stops: a Kubernetes pod that KEDA scales (infra/k8s/serving.yaml), a systemd unit, a shell.

Only the control differs from a job attempt's (:class:`PodControl`):

- **who**: ``job_id`` is ``pod:<hostname>`` (the key of its presence entry; a pod's hostname is its name) and
  ``task_id`` is new in every process, so the exit of a restarted container never removes its successor's entry;
- **stopping**: SIGTERM (or SIGINT) is the only stop request: no lease, no preempt or cancel flag. The replica
  finishes the batch it took, answers it, removes its presence entry and the process exits 0; requests still queued
  stay in the list for the other replicas, or for the next one;
- **records**: there is no job record, so progress, checkpoints and events go to the log;
- **store and trust**: a job's (S3; weights only through the trust ledger, every artefact's sha256 checked).
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import signal
import socket
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import Any, Literal

from infra.trusted_files import TrustedFiles
from tasks.attempt import AttemptControl
from tasks.errors import Preempted
from tasks.runtime import Runtime
from tasks.specs import ServeSpec
from tasks.trust import Trust

log = logging.getLogger("yoloq.replica")
POD_PREFIX = "pod:"
Backend = Literal["auto", "onnx", "torch", "engine"]
STANDALONE_TEAM = "external"  # the spec's team when the alias has no deployment (a replica's spec needs one)


def pod_id(hostname: str | None = None) -> str:
    """The replica's id in its alias's presence hash: ``pod:<hostname>`` (what ``yoloq serve --list`` shows)."""
    return POD_PREFIX + (hostname or socket.gethostname())


class PodControl(AttemptControl):
    """An :class:`~tasks.attempt.AttemptControl` with no job behind it (see the module docstring)."""

    def __init__(
        self, rt: Runtime, *, device: str, hostname: str | None = None, ready_file: Path | None = None
    ) -> None:
        # Not AttemptControl.__init__: that one starts from a job record, and a pod has none.
        self.rt, self.hostname = rt, hostname or socket.gethostname()
        self.job_id, self.task_id = pod_id(self.hostname), uuid.uuid4().hex
        self.store = rt.store
        self.trust = Trust(TrustedFiles(rt.registry.client, rt.settings.redis_url), rt.settings.onnx_max_mib * 2**20)
        self.lease_lost = threading.Event()  # never set: a pod holds no lease
        self.stop_requested = threading.Event()
        self.device, self.ready_file = device, ready_file
        self.stop_reason = "stop requested"

    def stop(self, reason: str) -> None:
        """Ask the replica to drain and stop (a signal handler calls this; so may a test)."""
        self.stop_reason = reason
        self.stop_requested.set()

    def ready(self) -> None:
        """The replica serves: say so in the log and in the ready file (the pod's readiness probe)."""
        log.info("%s serves; ready", self.job_id)
        if self.ready_file is not None:
            self.ready_file.parent.mkdir(parents=True, exist_ok=True)
            self.ready_file.touch()

    def not_ready(self) -> None:
        """Take the ready file away (draining, or gone)."""
        if self.ready_file is not None:
            self.ready_file.unlink(missing_ok=True)

    def placement(self) -> tuple[str | None, str | None]:
        """(host, GPU index or None on the CPU) for the presence entry."""
        return self.hostname, None if self.device == "cpu" else self.device

    def progress(self, **values: int | float) -> None:
        """Progress goes to the log (debug): there is no job record to publish it in."""
        log.debug("%s progress %s", self.job_id, values)

    def checkpoint_saved(self, uri: str) -> None:
        """A replica saves no checkpoint; nothing to record."""
        log.debug("%s checkpoint %s", self.job_id, uri)

    def note(self, kind: str, reason: str, **fields: Any) -> None:
        """Events (version loaded or refused, ready, drained) go to the log."""
        log.info("%s %s: %s", self.job_id, kind, reason)

    def check(self) -> None:
        """Raise Preempted once a stop was asked for (the replica then drains); no flags to read otherwise."""
        if self.stop_requested.is_set():
            self.not_ready()
            raise Preempted(self.stop_reason)


def _warn_about_deployment(rt: Runtime, alias: str) -> str:
    """The team of ``alias``'s deployment; a warning when it has none (the API answers 404) or yoloq scales it too."""
    from infra.deployments import Deployments

    deployment = Deployments(rt.registry.client, rt.settings.redis_url).get(alias)
    if deployment is None:
        log.warning("%s is not deployed: the detect API answers 404 until `yoloq serve %s --external --team T`",
                    alias, alias)  # fmt: skip
        return STANDALONE_TEAM
    if deployment.scaler != "external":
        log.warning("%s is scaled by yoloq's serving scaler too (its replica jobs serve beside this one); "
                    "`yoloq serve %s --external` hands its scaling over", alias, alias)  # fmt: skip
    return deployment.team


@contextlib.contextmanager
def _stop_on_signals(control: PodControl) -> Iterator[None]:
    """SIGTERM and SIGINT ask the replica to drain (restored afterwards; only the main thread may set them)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, _frame: FrameType | None) -> None:
        control.stop(f"{signal.Signals(signum).name}: the replica is stopping")

    before = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for signum, previous in before.items():
            signal.signal(signum, previous)


def run_replica(rt: Runtime, control: PodControl, *, alias: str, max_batch: int, max_wait_ms: float, backend: Backend,
                started_at: float | None = None) -> dict[str, Any]:  # fmt: skip
    """Serve ``alias`` until SIGTERM/SIGINT (or ``control.stop``), then drain; returns what stopped it. Errors that
    stop it from serving at all (no such alias, no version loads, Redis unreachable) are raised as they are."""
    from tasks.serve_runner import run_serve

    started_at = time.time() if started_at is None else started_at
    team = _warn_about_deployment(rt, alias)
    spec = ServeSpec(alias=alias, team=team, name=f"serve {alias}", max_batch=max_batch, max_wait_ms=max_wait_ms,
                     backend=backend)  # fmt: skip
    root = rt.settings.home / "replicas"
    root.mkdir(parents=True, exist_ok=True)
    control.not_ready()  # a ready file left by a killed process (a restarted container keeps /tmp) is stale
    workdir = Path(tempfile.mkdtemp(prefix=f"{control.hostname}-", dir=root))
    log.info("%s serving %s (batch %d / %g ms, backend %s, device %s)", control.job_id, spec.alias, max_batch,
             max_wait_ms, backend, control.device)  # fmt: skip
    try:
        with _stop_on_signals(control):
            run_serve(spec, control, workdir, control.device, handed_at=started_at, ready=control.ready)
        stopped = "the replica loop returned"  # it does not: a replica serves until it is stopped
    except Preempted as why:
        stopped = str(why)
    finally:
        control.not_ready()
        shutil.rmtree(workdir, ignore_errors=True)
    return {"alias": spec.alias, "replica": control.job_id, "stopped": stopped}
