"""What one drill found, in the shape of docs/reliability.md's table, and where it is written."""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parents[1] / "results"


@dataclass
class Outcome:
    """One drill's row: faults injected, jobs, and what happened to them, with its same-run baseline.

    ``lost``: submitted jobs (or requests) that never finished and never will; ``duplicated``: work done twice to
    completion (or two live runs of one job at once); ``recovered``: jobs that met a fault and still finished right.
    ``recover_s``: seconds from each fault to the recovery the drill names (``recovery``), as p50/max.
    ``baseline``: the same figures for plain Celery on the same Redis, or ``{"note": why none}``.
    ``problems``: every invariant that broke, one line each; empty means the drill passed.
    """

    name: str
    faults: str
    jobs: int
    lost: int = 0
    duplicated: int = 0
    recovered: int = 0
    recovery: str = ""
    recover_s: dict[str, float] = field(default_factory=dict)
    baseline: dict[str, Any] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    figures: dict[str, Any] = field(default_factory=dict)
    command: str = ""
    quick: bool = False
    seconds: float = 0.0
    at: str = ""

    @property
    def passed(self) -> bool:
        """Nothing lost, nothing duplicated, no invariant broken."""
        return not self.problems and self.lost == 0 and self.duplicated == 0

    def check(self, ok: bool, problem: str) -> bool:
        """Record ``problem`` unless ``ok``; returns ``ok`` (a drill goes on after a broken invariant)."""
        if not ok:
            self.problems.append(problem)
        return ok


def spread(samples: list[float]) -> dict[str, float]:
    """p50 and max of recovery times in seconds (empty for none)."""
    if not samples:
        return {}
    ordered = sorted(samples)
    return {"p50": round(ordered[(len(ordered) - 1) // 2], 3), "max": round(ordered[-1], 3), "n": len(ordered)}


def write(outcome: Outcome) -> Path:
    """bench/results/drill_NAME.json (``_quick`` for the quick size, so the test run never overwrites a drill's)."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    outcome.at = outcome.at or time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    path = RESULTS / f"drill_{outcome.name}{'_quick' if outcome.quick else ''}.json"
    path.write_text(json.dumps({**asdict(outcome), "passed": outcome.passed}, indent=2, sort_keys=True))
    return path


def read_all() -> list[dict[str, Any]]:
    """Every full-size drill's last result, by name."""
    return [json.loads(p.read_text()) for p in sorted(RESULTS.glob("drill_*.json")) if not p.stem.endswith("_quick")]
