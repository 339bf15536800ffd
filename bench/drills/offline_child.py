"""The security drill's network check, run inside a network namespace that holds only a loopback interface
(``unshare -rn`` then ``ip link set lo up``): nothing off this host can be reached, and every Python process started
here (this one, the stack's worker, its job processes) records each network call through an audit hook.

``python -m bench.drills.offline_child OUT yoloq``: a local stack (Redis, S3, one simulated GPU worker) runs a tiny
real training job (yolov8n, 24 images at 64 px, one epoch) to success. ``... OUT plain``: Ultralytics' own
``YOLO(...).train`` with none of yoloq's offline settings, for comparison. Writes a JSON report to OUT: the job's
state and every call that named anything but this host."""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
import urllib.parse
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
EVENTS = ("socket.connect", "socket.getaddrinfo", "socket.gethostbyname", "socket.gethostbyaddr", "urllib.Request",
          "http.client.connect", "socket.sendto")  # fmt: skip
# Written as the sitecustomize of every Python process here (PYTHONPATH, which job processes keep): one line per call,
# [pid, event, target], the target being the host name, address or URL the call names.
HOOK = """import json, os, sys
_LOG, _EVENTS = {log!r}, {events!r}
def _target(event, args):
    value = args[1] if event in ("socket.connect", "socket.sendto", "http.client.connect") else args[0]
    value = value[0] if isinstance(value, tuple) else value
    return value.decode("latin-1") if isinstance(value, bytes) else str(value)
def _audit(event, args):
    if event in _EVENTS:
        try:
            with open(_LOG, "a") as out:
                out.write(json.dumps([os.getpid(), event, _target(event, args)[:300]]) + "\\n")
        except Exception:
            pass
sys.addaudithook(_audit)
with open(_LOG, "a") as out:
    out.write(json.dumps([os.getpid(), "start", open("/proc/self/cmdline").read().replace("\\0", " ")[:300]]) + "\\n")
"""
LOOPBACK = ("127.", "localhost", "::1", "/", "\x00")


def install_hook(folder: Path) -> Path:
    """Write the hook as ``sitecustomize.py`` in ``folder``, put it first on PYTHONPATH for children, and load it
    here too; returns the audit log's path."""
    log = folder / "audit.jsonl"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "sitecustomize.py").write_text(HOOK.format(log=str(log), events=EVENTS))
    os.environ["PYTHONPATH"] = os.pathsep.join([str(folder), str(ROOT), os.environ.get("PYTHONPATH", "")])
    namespace: dict[str, Any] = {}
    exec(compile((folder / "sitecustomize.py").read_text(), "sitecustomize", "exec"), namespace)
    return log


def audited(log: Path) -> dict[str, Any]:
    """What the hook saw: the processes it ran in (job processes among them), the calls, and those that named
    something other than this host (loopback, a socket file)."""
    rows = [json.loads(line) for line in (log.read_text().splitlines() if log.exists() else [])]
    starts = [target for _, event, target in rows if event == "start"]
    calls = [(event, target) for _, event, target in rows if event != "start"]
    return {
        "processes": len(starts),
        "programs": sorted({" ".join(argv.split(" ")[1:3]) for argv in starts}),
        "job_processes": sum("job_process" in argv for argv in starts),
        "audited_calls": len(calls),
        "off_host": sorted({f"{e} {t}" for e, t in calls if not local(e, t)}),
    }


def local(event: str, target: str) -> bool:
    """Whether a call's target is this host."""
    host = urllib.parse.urlsplit(target).hostname or "" if event == "urllib.Request" else target
    return host in ("", "None") or host.startswith(LOOPBACK)


def dataset(work: Path) -> Path:
    """24 drawn images at 64 px, two classes (tasks.synth): one CPU epoch in seconds."""
    from tasks.synth import SynthConfig, synthesize

    return synthesize(work / "data", SynthConfig(images=24, imgsz=64, classes=2, seed=17)).parent


def run_yoloq(work: Path) -> dict[str, Any]:
    """A real training job through a local stack, all on loopback."""
    from bench.harness.stack import yoloq_fleet
    from tasks.specs import TrainSpec
    from yoloq.client import Client

    data = dataset(work)
    spec = TrainSpec(data=str(data), model="yolov8n.yaml", epochs=1, imgsz=64, batch=4, workers=0, save_period=1,
                     tier="low", team="vision", memory_gb=4)  # fmt: skip
    with yoloq_fleet("0:A100:40", prefix="yoloq-drill-offline-") as stack:
        client = Client(stack.services.settings)
        started = time.monotonic()
        record = client.submit(spec).wait(timeout_s=400)
        return {"state": record.state.value, "error": record.error, "seconds": round(time.monotonic() - started, 1),
                "epochs": (record.result or {}).get("epochs")}  # fmt: skip


def run_plain(work: Path) -> dict[str, Any]:
    """Ultralytics as a script would call it, without yoloq's offline preparation (no YOLO_OFFLINE, no font)."""
    os.environ.update(YOLO_CONFIG_DIR=str(work / "config"), MPLCONFIGDIR=str(work / "mpl"))
    data = dataset(work)
    started = time.monotonic()
    try:
        from ultralytics import YOLO

        YOLO("yolov8n.yaml").train(data=str(data / "data.yaml"), epochs=1, imgsz=64, batch=4, workers=0,
                                   project=str(work / "runs"), plots=False, verbose=False)  # fmt: skip
        state, error = "succeeded", None
    except Exception as err:  # without the network it may fail: that is part of the comparison
        state, error = "failed", f"{type(err).__name__}: {str(err)[:300]}"
    return {"state": state, "error": error, "seconds": round(time.monotonic() - started, 1)}


def main(out: Path, mode: str) -> None:
    """Run one mode with the hook in place; write the report."""
    with tempfile.TemporaryDirectory(prefix=f"yoloq-offline-{mode}-") as tmp:
        work = Path(tmp)
        log = install_hook(work / "hook")
        result = run_yoloq(work) if mode == "yoloq" else run_plain(work)
        seen = audited(log)
    out.write_text(json.dumps({**result, "mode": mode, **seen}))


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2])
