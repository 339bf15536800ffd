"""Background load the broker and failover drills share: low-tier probes kept unfinished, topped up as they end."""

from __future__ import annotations

import contextlib
import threading

from tasks.errors import YoloqError
from tasks.specs import ProbeSpec
from tasks.states import TERMINAL
from yoloq.client import Client, JobHandle


class LowProbes(threading.Thread):
    """``keep`` low probes of ``seconds`` each unfinished, topped up every 0.2 s until ``stop`` (a round that finds
    Redis down is skipped: the next one tops up); ``handles`` is every job it submitted."""

    def __init__(self, client: Client, keep: int, seconds: int, prefix: str) -> None:
        super().__init__(daemon=True, name=f"{prefix}-lows")
        self.client, self.keep, self.seconds, self.prefix = client, keep, seconds, prefix
        self.stop = threading.Event()
        self.handles: list[JobHandle] = []

    def run(self) -> None:
        """Top up until stopped."""
        while not self.stop.wait(0.2):
            with contextlib.suppress(YoloqError):
                records = self.client.registry.many([h.job_id for h in self.handles])
                for _ in range(self.keep - sum(r.state not in TERMINAL for r in records)):
                    if self.stop.is_set():
                        return
                    spec = ProbeSpec(seconds=self.seconds, tier="low", team="drill", memory_gb=8,
                                     name=f"{self.prefix}-low-{len(self.handles)}")  # fmt: skip
                    self.handles.append(self.client.submit(spec))
