"""Issue #8 on a real GPU, in one command: every step measured in the same run, each recorded even if it fails.

``python -m bench.gpu.validate --out DIR [--work DIR] [--steps inventory,train,...] [--cpu-dry-run]``
(scripts/gpu-validate.sh stages the wheels and calls this). Steps, in order:

1. ``inventory``  — ``yoloq status --json`` on the real NVML inventory; the worker parent holds no CUDA context;
2. ``train``      — images/s of yolov8n/s @640 b32 workers 8 through yoloq vs plain Ultralytics;
3. ``preempt``    — ``yoloq preempt`` of v8n/s/m mid-epoch: request → GPU memory back; the resume;
4. ``warm_start`` — dequeue → first batch on a fresh and a warm worker, vs cold import + CUDA;
5. ``memory``     — routing/memory.py's estimate vs measured peaks (n/s/m, b16/32 @640) and the shipped table;
6. ``infer``      — a yoloq infer job over 512 images vs ``predict()`` at batch 1 and 32, FP16;
7. ``pytest``     — ``pytest -m gpu tests/gpu``.

Each step writes ``DIR/<step>.json`` as soon as it ends and ``DIR/summary.json`` is rewritten after every step, so
a run cut short by the device's 10-minute limit still returns what it measured. ``--cpu-dry-run`` runs the same
code with tiny sizes on a simulated inventory (bench/gpu/sizes.py), to prove the driver, not any GPU figure.
Exit code 1 when a step failed (an error, not a missed target), else 0.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.gpu import env, infer, inventory, memory, preempt, train, warm
from bench.gpu.nvml import Nvml
from bench.gpu.results import run_step, summary
from bench.gpu.sizes import CPU_DRY_RUN, GPU, STEPS, Profile
from bench.gpu.stack import Harness, open_harness

BODIES: dict[str, Callable[[Harness], dict[str, Any]]] = {
    "inventory": inventory.run,
    "train": train.run,
    "preempt": preempt.run,
    "warm_start": warm.run,
    "memory": memory.run,
    "infer": infer.run,
}


def _write(path: Path, doc: Any) -> None:
    path.write_text(json.dumps(doc, indent=2, default=str) + "\n")


def _stack_steps(h: Harness | None, start_error: str, steps: list[str], out: Path) -> list[dict[str, Any]]:
    """Run every stack step in order, fail-soft; each document written as soon as the step ends."""
    docs = []
    for name in steps:
        if h is None:
            doc = {"step": name, "status": "failed", "seconds": 0.0, "error": f"stack did not start: {start_error}"}
        else:
            doc = run_step(name, lambda body=BODIES[name]: _prepared(h, body))  # type: ignore[misc]
            if doc["status"] == "failed":
                doc["worker_log_tail"] = h.worker_tail().splitlines()
        _write(out / f"{name}.json", doc)
        docs.append(doc)
        print(f"[gpu-validate] {name}: {doc['status']} in {doc['seconds']} s {doc.get('verdicts', '')}", flush=True)
    return docs


def _prepared(h: Harness, body: Callable[[Harness], dict[str, Any]]) -> dict[str, Any]:
    """A live worker and no leftovers of an earlier failed step, then the step itself."""
    h.ensure_worker()
    h.drain()
    return body(h)


def validate(profile: Profile, steps: list[str], out: Path, work: Path) -> dict[str, Any]:
    """Run the chosen steps; the summary document (also written to ``out/summary.json``)."""
    out.mkdir(parents=True, exist_ok=True)
    work.mkdir(parents=True, exist_ok=True)
    nvml = Nvml()
    head = {"profile": profile.name, "steps_asked": steps, "environment": env.environment(work, nvml)}
    _write(out / "summary.json", head)
    docs: list[dict[str, Any]] = []
    stack_steps = [s for s in steps if s in BODIES]
    leaked: list[int] = []
    if stack_steps:
        with contextlib.ExitStack() as stack:
            harness, error = None, ""
            try:
                harness = stack.enter_context(open_harness(profile, work, nvml))
            except Exception as err:  # recorded per step below, the run goes on to pytest
                error = f"{type(err).__name__}: {err}"[:2000]
            docs += _stack_steps(harness, error, stack_steps, out)
        leaked = harness.leaked if harness is not None else []
    if "pytest" in steps:  # its document goes into summary.json: the device returns at most 8 files
        docs.append(run_step("pytest", lambda: env.run_pytest(out)))
    nvml.close()
    doc = {**head, **summary(docs), "pytest": docs[-1] if "pytest" in steps else None, "leaked_pids": leaked}
    _write(out / "summary.json", doc)
    return doc


def parse_steps(text: str) -> list[str]:
    """Comma-separated step names (``all`` = every step), in the canonical order; unknown names are an error."""
    asked = [s.strip() for s in text.split(",") if s.strip()]
    if asked == ["all"]:
        return list(STEPS)
    unknown = sorted(set(asked) - set(STEPS))
    if unknown:
        raise ValueError(f"unknown step(s) {', '.join(unknown)}; known: {', '.join(STEPS)}")
    return [s for s in STEPS if s in asked]


def main(argv: list[str] | None = None) -> int:
    """Command line entry point; see the module docstring."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--out", type=Path, required=True, help="where the JSON documents go ($OUT on the device)")
    parser.add_argument("--work", type=Path, default=Path("/tmp/yoloq-gpu-validate"), help="datasets, stack homes")
    parser.add_argument("--steps", default="all", help=f"comma-separated subset of: {', '.join(STEPS)}")
    parser.add_argument("--cpu-dry-run", action="store_true", help="tiny sizes, simulated GPU: proves the driver")
    args = parser.parse_args(argv)
    try:
        steps = parse_steps(args.steps)
    except ValueError as err:
        parser.error(str(err))
    doc = validate(CPU_DRY_RUN if args.cpu_dry_run else GPU, steps, args.out, args.work)
    print(json.dumps({k: doc[k] for k in ("steps", "failed_steps", "verdicts_failed", "verdicts_passed",
                                          "verdicts_not_measured", "leaked_pids")}, indent=2))  # fmt: skip
    return 1 if doc["failed_steps"] else 0


if __name__ == "__main__":
    sys.exit(main())
