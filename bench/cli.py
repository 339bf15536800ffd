"""CLI start-up as users feel it: whole ``yoloq`` processes, timed from fork to exit, beside ``python -c pass`` and
``celery --help`` from the same run, against a real embedded Redis (no S3: none of these commands touches it, and an
idle SeaweedFS would only add noise on two cores).

Commands are run round-robin (one of each per round), so machine noise falls on all of them alike; the figure is
the median of ``--runs`` rounds (10 or more). ``--before DIR`` also times ``python -m yoloq --help`` and
``python -m yoloq status --json`` in another checkout (e.g. ``git worktree add /tmp/before 0a9bc70``) in the same
rounds, with this venv (install what that checkout needs and this one lacks: pydantic-settings before 051cd6b).
Targets (issue 14): ``--help`` and ``status --json`` ≤ 0.35 s, ``submit probe --json`` ≤ 0.5 s.

Run: ``.venv/bin/python -m bench.cli [--runs 15] [--before DIR]``; writes bench/results/cli.{json,md}.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.harness.report import machine, write_results
from infra.local_redis import start_redis
from infra.redis_client import connect
from infra.settings import Settings, environ_for, process_environ

BIN = Path(sys.executable).parent
TARGETS_S = {"yoloq --help": 0.35, "yoloq status --json": 0.35, "yoloq submit probe --json": 0.5}
BURST = 8  # issue 14: 8 scripted submits in parallel on 2 cores, one took over 10 s
FLOOR = "import click, redis\nfrom pydantic import BaseModel"
SUBMIT = ["submit", "probe", "--seconds", "1", "--tier", "low", "--team", "bench", "--json"]


def commands(before: Path | None) -> dict[str, tuple[list[str], Path | None]]:
    """Label → (argv, working directory); the baselines first."""
    yoloq = str(BIN / "yoloq")
    out: dict[str, tuple[list[str], Path | None]] = {
        "python -c pass": ([sys.executable, "-c", "pass"], None),
        "celery --help": ([str(BIN / "celery"), "--help"], None),
        # The floor of any command that reads Redis into typed records: the libraries alone, no yoloq code.
        "python -c 'import click, pydantic, redis'": ([sys.executable, "-c", FLOOR], None),
        "yoloq --help": ([yoloq, "--help"], None),
        "yoloq status --json": ([yoloq, "status", "--json"], None),
        "yoloq submit probe --json": ([yoloq, *SUBMIT], None),
    }
    if before is not None:
        out["before: yoloq --help"] = ([sys.executable, "-m", "yoloq", "--help"], before)
        out["before: yoloq status --json"] = ([sys.executable, "-m", "yoloq", "status", "--json"], before)
    return out


def timed(argv: list[str], cwd: Path | None, env: dict[str, str]) -> float:
    """Seconds from start to exit of one process; a failing command fails the bench (a fast error is no figure)."""
    started = time.perf_counter()
    done = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, check=False)
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} exited {done.returncode}: {done.stderr.decode()[-400:]}")
    return elapsed


def measure(runs: int, before: Path | None, env: dict[str, str]) -> dict[str, list[float]]:
    """Every command once per round, ``runs`` rounds, after one unmeasured warm-up round (page cache)."""
    table = commands(before)
    samples: dict[str, list[float]] = {label: [] for label in table}
    for round_ in range(runs + 1):
        for label, (argv, cwd) in table.items():
            seconds = timed(argv, cwd, env)
            if round_:
                samples[label].append(seconds)
    return samples


def burst(env: dict[str, str], width: int, argv: list[str], cwd: Path | None = None) -> list[float]:
    """``width`` submits started at once (a scripted burst on 2 cores); each process's seconds to exit, sorted."""
    started = time.perf_counter()
    procs = [subprocess.Popen(argv, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
             for _ in range(width)]  # fmt: skip
    ended: dict[int, float] = {}
    while len(ended) < width:  # poll them all, so each exit is seen when it happens, not in start order
        for i, proc in enumerate(procs):
            if i not in ended and proc.poll() is not None:
                ended[i] = time.perf_counter() - started
        time.sleep(0.005)
    for proc in procs:
        _, err = proc.communicate()
        if proc.returncode != 0:
            raise RuntimeError(f"burst submit exited {proc.returncode}: {err.decode()[-400:]}")
    return sorted(ended.values())


def import_profile(argv: list[str], cwd: Path | None, env: dict[str, str]) -> dict[str, float]:
    """Milliseconds of import (``-X importtime`` self times) per top-level package, for one command."""
    done = subprocess.run([sys.executable, "-X", "importtime", *argv], cwd=cwd, env=env, capture_output=True,
                          text=True, check=True)  # fmt: skip
    per_package: dict[str, float] = {}
    for line in done.stderr.splitlines():
        parts = line.removeprefix("import time:").split("|")
        if len(parts) == 3 and parts[0].strip().isdigit():
            package = parts[2].strip().split(".")[0]
            per_package[package] = per_package.get(package, 0.0) + int(parts[0]) / 1000
    return dict(sorted(per_package.items(), key=lambda kv: -kv[1]))


def profiles(before: Path | None, env: dict[str, str]) -> dict[str, dict[str, float]]:
    """Import profiles of ``--help`` and ``status --json``, ours and (with ``--before``) the older checkout's."""
    out = {}
    for args in (["--help"], ["status", "--json"]):
        out[f"yoloq {' '.join(args)}"] = import_profile(["-m", "yoloq", *args], None, env)
        if before is not None:
            out[f"before: yoloq {' '.join(args)}"] = import_profile(["-m", "yoloq", *args], before, env)
    return out


def document(samples: dict[str, list[float]], facts: dict[str, Any]) -> dict[str, Any]:
    """Medians, spread, ratios to ``python -c pass`` and ``celery --help``, and each target's verdict."""
    median = {k: statistics.median(v) for k, v in samples.items()}
    rows = {
        label: {
            "median_s": round(median[label], 4),
            "min_s": round(min(values), 4),
            "max_s": round(max(values), 4),
            "vs_python": round(median[label] / median["python -c pass"], 2),
            "vs_celery_help": round(median[label] / median["celery --help"], 2),
            "target_s": TARGETS_S.get(label),
            "meets_target": None if label not in TARGETS_S else median[label] <= TARGETS_S[label],
        }
        for label, values in samples.items()
    }
    runs = len(next(iter(samples.values())))
    return {"runs": runs, "machine": facts, "load_avg": os.getloadavg(), "commands": rows}


def markdown(doc: dict[str, Any]) -> list[str]:
    """The table for bench/results/cli.md."""
    m = doc["machine"]
    lines = [
        f"Whole-process CLI timings, median of {doc['runs']} round-robin rounds, {m['at']}, {m['nproc']} cores, "
        f"Python {m['python']}, load average {doc['load_avg'][0]:.2f} at the end.",
        "",
        "| command | median s | min s | max s | × python -c pass | × celery --help | target s | met |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for label, r in doc["commands"].items():
        met = "" if r["meets_target"] is None else ("yes" if r["meets_target"] else "NO")
        target = "" if r["target_s"] is None else f"{r['target_s']:.2f}"
        lines.append(f"| `{label}` | {r['median_s']:.3f} | {r['min_s']:.3f} | {r['max_s']:.3f} | {r['vs_python']:.1f} "
                     f"| {r['vs_celery_help']:.2f} | {target} | {met} |")  # fmt: skip
    lines += ["", f"Burst: {doc['burst']['width']} submits started at once; seconds until each process exited:", ""]
    for label, ends in doc["burst"]["seconds"].items():
        lines.append(f"- `{label}`: slowest {ends[-1]:.2f} s, median {statistics.median(ends):.2f} s")
    lines += [
        "",
        "Import time per top-level package (`-X importtime` self times, ms, one run each; the 8 largest):",
        "",
    ]
    for label, packages in doc["imports_ms"].items():
        top = ", ".join(f"{name} {ms:.0f}" for name, ms in list(packages.items())[:8])
        lines.append(f"- `{label}`: total {sum(packages.values()):.0f} ms: {top}")
    return lines


def main() -> None:
    """Start a stack, time the commands, write the results."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--before", type=Path, default=None, help="another checkout to time in the same rounds")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="yoloq-bench-cli-") as home:
        redis = start_redis("", Path(home), prefer_configured=False)
        try:
            settings = Settings(home=Path(home), redis_url=redis.url)
            env = {k: v for k, v in process_environ().items() if not k.startswith("YOLOQ_")} | environ_for(settings)
            samples = measure(max(10, args.runs), args.before, env)
            imports = profiles(args.before, env)
            bursts = {"yoloq submit probe --json": burst(env, BURST, [str(BIN / "yoloq"), *SUBMIT])}
            if args.before is not None:
                argv = [sys.executable, "-m", "yoloq", *SUBMIT]
                bursts["before: yoloq submit probe --json"] = burst(env, BURST, argv, args.before)
            facts = machine(connect(redis.url, 3.0))
        finally:
            redis.stop()
    doc = document(samples, facts) | {"burst": {"width": BURST, "seconds": bursts}, "imports_ms": imports}
    write_results("cli", doc, markdown(doc))


if __name__ == "__main__":
    main()
