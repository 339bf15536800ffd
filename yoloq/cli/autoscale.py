"""``yoloq autoscaler``: start and stop this host's GPU workers on queue depth (routing/autoscale.py)."""

from __future__ import annotations

import signal
import threading
import time

import click


@click.command("autoscaler")
@click.option("--interval", "interval_s", type=click.FloatRange(0.1), default=2.0, show_default=True,
              help="Seconds between polls.")  # fmt: skip
@click.option("--min", "min_workers", type=click.IntRange(0), default=0, show_default=True)
@click.option("--max", "max_workers", type=click.IntRange(0), default=64, show_default=True)
@click.option("--jobs-per-worker", type=click.IntRange(1), default=1, show_default=True,
              help="Waiting jobs that justify one more worker.")  # fmt: skip
@click.option("--up-delay", "up_delay_s", type=click.FloatRange(0), default=0.0, show_default=True,
              help="Seconds a shortage must last before workers start.")  # fmt: skip
@click.option("--down-delay", "down_delay_s", type=click.FloatRange(0), default=300.0, show_default=True,
              help="Seconds idle workers must stay unneeded before they stop.")  # fmt: skip
@click.option("--devices", default="", help="Only these device indexes, e.g. 2,3 (default: every device).")
@click.option("--grace", "grace_s", type=click.FloatRange(0), default=120.0, show_default=True,
              help="At exit: seconds busy workers get to checkpoint their jobs.")  # fmt: skip
def autoscaler_cmd(interval_s: float, grace_s: float, devices: str, **knobs: float) -> None:
    """Run one GPU worker per device only while queued work needs it; scale-in checkpoints, never kills, a job."""
    from infra.celery_control import CeleryDispatch
    from infra.settings import load_settings
    from routing.autoscale import Config
    from tasks.app import create_app
    from tasks.runtime import build_runtime
    from workers.autoscaler import build_autoscaler

    def say(text: str) -> None:
        click.echo(f"[{time.strftime('%H:%M:%S')}] {text}", err=False)

    settings = load_settings()
    config = Config(**knobs)  # type: ignore[arg-type]
    try:
        chosen = frozenset(int(d) for d in devices.split(",") if d.strip()) if devices else None
    except ValueError:
        raise click.BadParameter(f"expected device indexes like 2,3, got {devices!r}", param_hint="--devices") from None
    scaler = build_autoscaler(build_runtime(settings, CeleryDispatch(create_app(settings))), config, say, chosen)
    scaler.backend.grace_s = grace_s
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    gpus = ", ".join(f"{g.index}:{g.name}:{g.memory_mib}MiB" for g in scaler.backend.inventory) or "none"
    say(f"autoscaler on {scaler.backend.host}: devices {gpus}; {config}")
    try:
        scaler.run(stop, interval_s)
    finally:
        say("stopping the workers it started (running jobs are checkpointed and requeued)")
        scaler.backend.shutdown()
