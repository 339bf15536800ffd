"""Step 1: the real inventory through ``yoloq status --json``, and proof that the worker's parent never touches CUDA.

No ``YOLOQ_GPUS``: the worker describes its device from NVML. The status document's GPU entry is checked field by
field against NVML read directly in this process. Then every process of the worker (the Celery parent and its pool
child) is looked up in NVML's list of processes holding a CUDA context: a context in the parent before the fork
breaks every child ("Cannot re-initialize CUDA in forked subprocess", BRIEF §5).
"""

from __future__ import annotations

import json
import re
from typing import Any

from bench.gpu.nvml import libcuda_mapped
from bench.gpu.results import verdict
from bench.gpu.stack import Harness
from bench.harness import procs

FIELDS = ("index", "name", "memory_mib", "uuid", "compute_capability", "healthy", "simulated")


def entry_problems(gpu: dict[str, Any], real: bool) -> list[str]:
    """What is missing or wrong in one ``status --json`` GPU entry (empty when it is complete)."""
    problems = [f"missing {name}" for name in FIELDS if name not in gpu]
    if not str(gpu.get("name") or "").strip():
        problems.append("empty name")
    if not isinstance(gpu.get("memory_mib"), int) or gpu["memory_mib"] <= 0:
        problems.append(f"memory_mib {gpu.get('memory_mib')!r} is not a positive integer")
    if real:
        if gpu.get("simulated") is not False:
            problems.append("inventory is simulated")
        if not str(gpu.get("uuid") or "").startswith(("GPU-", "MIG-")):
            problems.append(f"uuid {gpu.get('uuid')!r} is not an NVML UUID")
        if not re.fullmatch(r"\d+\.\d+", str(gpu.get("compute_capability") or "")):
            problems.append(f"compute_capability {gpu.get('compute_capability')!r} is not major.minor")
    if not isinstance(gpu.get("healthy"), bool):
        problems.append("healthy is not a boolean")
    return problems


def against_nvml(gpu: dict[str, Any], nvml: dict[str, Any] | None) -> dict[str, bool] | None:
    """Field-by-field agreement of the status entry with NVML read directly (None without NVML)."""
    if nvml is None:
        return None
    return {
        "name": gpu.get("name") == nvml["name"],
        "uuid": gpu.get("uuid") == nvml["uuid"],
        "memory_mib": gpu.get("memory_mib") == nvml["memory_total_mib"],
        "compute_capability": gpu.get("compute_capability") == nvml["compute_capability"],
    }


def worker_cuda(h: Harness) -> dict[str, Any]:
    """Which of the worker's processes hold a CUDA context (NVML) or have libcuda loaded (/proc maps)."""
    parent = h.worker_pid()
    children = sorted(procs.descendants(parent))
    holders = h.nvml.processes(0)
    rows = [
        {"pid": pid, "role": "parent" if pid == parent else "child", "libcuda_mapped": libcuda_mapped(pid),
         "cuda_context": None if holders is None else pid in holders}
        for pid in [parent, *children]
    ]  # fmt: skip
    parent_ctx = rows[0]["cuda_context"]
    return {
        "processes": rows,
        "parent_has_cuda_context": parent_ctx,
        "parent_libcuda_mapped": rows[0]["libcuda_mapped"],
    }


def run(h: Harness) -> dict[str, Any]:
    """``yoloq status --json`` with the real inventory, checked, plus the worker's CUDA state at idle."""
    done = h.cli("status", "--json", timeout_s=60)
    if done.returncode != 0:
        raise RuntimeError(f"yoloq status --json exited {done.returncode}: {done.stderr.strip()[-500:]}")
    status = json.loads(done.stdout)
    gpus = status.get("gpus", [])
    if not gpus:
        raise RuntimeError(f"status --json lists no GPU: {status}")
    real = h.profile.simulated_gpus == ""
    direct = h.nvml.device(0)
    problems = entry_problems(gpus[0], real)
    agree = against_nvml(gpus[0], direct)
    cuda = worker_cuda(h)
    parent_clean = None if cuda["parent_has_cuda_context"] is None else not cuda["parent_has_cuda_context"]
    return {
        "status_gpus": gpus,
        "status_workers": status.get("workers"),
        "nvml_direct": direct,
        "nvml_note": h.nvml.why or None,
        "entry_problems": problems,
        "agrees_with_nvml": agree,
        "worker_cuda_idle": cuda,
        "verdicts": {
            "status_entry_complete": verdict(not problems),
            "matches_nvml": verdict(None if agree is None else all(agree.values())),
            "worker_parent_no_cuda_context": verdict(parent_clean),
            "worker_parent_no_libcuda": verdict(cuda["parent_libcuda_mapped"] is False),
        },
    }
