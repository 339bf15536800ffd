"""Run a training job body with every socket call audited; printed as JSON for tests/integration/test_offline.py.

Started under ``unshare -n`` (no network at all) by the test; the audit hook proves that nothing even tries.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

ATTEMPTS: list[str] = []
WATCHED = ("socket.connect", "socket.getaddrinfo", "socket.gethostbyname", "urllib.Request", "http.client.connect")


def _audit(event: str, args: tuple[Any, ...]) -> None:
    if event in WATCHED:
        ATTEMPTS.append(f"{event} {args!r}"[:200])


class _Control:
    job_id = "offline"

    def __init__(self) -> None:
        from infra.fakes import MemoryStore
        from tasks.trust import MemoryLedger, Trust

        self.store = MemoryStore()
        self.trust = Trust(MemoryLedger())  # what this body writes it records, and loads only that

    def progress(self, **values: float) -> None: ...
    def checkpoint_saved(self, uri: str) -> None: ...
    def note(self, kind: str, reason: str, **fields: Any) -> None: ...
    def check(self) -> None: ...


def main(workdir: Path) -> None:
    sys.addaudithook(_audit)
    from tasks.offline import prepare_environment

    prepare_environment(workdir / "config", threads=2)
    from tasks.specs import TrainSpec
    from tasks.synth import SynthConfig, synthesize
    from tasks.train_runner import JobEnv, run_train

    data = synthesize(workdir / "data", SynthConfig(images=16, imgsz=64))
    spec = TrainSpec(data=str(data), epochs=1, imgsz=64, batch=4, workers=0, team="offline")
    result = run_train(spec, _Control(), JobEnv(workdir=workdir / "job", cache=workdir / "cache"))
    print(json.dumps({"attempts": ATTEMPTS, "epochs": result["epochs"], "onnx": result["onnx"]}))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
