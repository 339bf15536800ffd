"""``yoloq replica ALIAS``: one serving replica in the foreground, outside the job system (tasks/standalone.py).

The same loop as a ``kind: serve`` job: it loads the alias's versions (sha256 checked, weights through the trust
ledger), warms them up, batches the alias's detect requests from Redis and answers them, follows alias changes, and
on SIGTERM or Ctrl-C answers the batch it took, removes its presence entry and exits 0 (what is still queued waits
for the other replicas). It needs Redis and S3 (the usual YOLOQ_* settings) and ONNX Runtime on the CPU: a pod of
the slim image, scaled by KEDA (infra/k8s/serving.yaml), with the deployment marked ``yoloq serve ALIAS --external``.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import click


@click.command("replica")
@click.argument("alias", metavar="NAME[@LABEL]")
@click.option("--max-batch", type=click.IntRange(1, 256), default=8, show_default=True, help="Requests per batch.")
@click.option("--max-wait-ms", type=click.FloatRange(0, 1000), default=5.0, show_default=True,
              help="How long a batch waits for more requests after its first.")  # fmt: skip
@click.option("--backend", type=click.Choice(["auto", "onnx", "torch", "engine"]), default="auto", show_default=True,
              help="auto: ONNX Runtime on the CPU, PyTorch FP16 from the weights on a GPU.")  # fmt: skip
@click.option("--device", default="cpu", show_default=True, help="cpu, or a GPU index (torch and engine backends).")
@click.option("--ready-file", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Created once the replica serves, removed when it drains (a pod's readiness probe).")  # fmt: skip
def replica_cmd(alias: str, device: str, ready_file: Path | None, **serving: Any) -> None:
    """Serve NAME[@LABEL] in the foreground until SIGTERM (then drain and exit 0)."""
    started_at = time.time()
    import logging

    from infra.celery_control import CeleryDispatch
    from infra.settings import load_client_settings
    from tasks.app import create_app
    from tasks.errors import ConfigError
    from tasks.model_records import alias_ref
    from tasks.runtime import build_runtime
    from tasks.standalone import PodControl, run_replica

    if device != "cpu" and not device.isdigit():
        raise click.BadParameter(f"expected cpu or a GPU index, got {device!r}", param_hint="--device")
    ref = alias_ref(alias)  # InvalidName before anything connects
    settings = load_client_settings()
    level = logging.getLevelName(settings.log_level.upper())
    if not isinstance(level, int):
        raise ConfigError(f"YOLOQ_LOG_LEVEL={settings.log_level!r} is not a logging level (e.g. INFO, WARNING)")
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    rt = build_runtime(settings, CeleryDispatch(create_app(settings)))  # the dispatcher is never used: no job here
    control = PodControl(rt, device=device, ready_file=ready_file)
    done = run_replica(rt, control, alias=ref, started_at=started_at, **serving)  # max_batch, max_wait_ms, backend
    click.echo(f"{done['replica']} stopped serving {done['alias']}: {done['stopped']}; drained")
