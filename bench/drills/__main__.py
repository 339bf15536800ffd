"""``python -m bench.drills [--quick] [NAME ...]``: run drills (all by default, in order), write each result, rebuild
docs/reliability.md's table from the full-size results; exit 1 when any drill lost, duplicated or broke something."""

from __future__ import annotations

import argparse
import importlib
import sys
import time
import traceback

from bench.drills import report
from bench.drills.outcome import Outcome, write

# name -> the drill's module under bench/drills (each has ``run(quick: bool) -> Outcome``), in the order they run.
DRILLS = {
    "crash": "worker_crash",
    "redeliver": "redelivery",
    "broker": "broker_restart",
    "s3": "s3_outage",
    "failover": "supervisor_failover",
    "hostloss": "host_loss",
    "load": "load",
    "hostile": "hostile_input",
    "security": "security",
}


def run_one(name: str, quick: bool) -> Outcome:
    """One drill, timed; a drill that raises is a failed row (its traceback is the problem), never a crash of all."""
    started = time.monotonic()
    try:
        module = importlib.import_module(f"bench.drills.{DRILLS[name]}")
        outcome: Outcome = module.run(quick=quick)
    except Exception as err:  # a broken drill is a finding, not the end of the run
        outcome = Outcome(name=name, faults="(the drill itself failed)", jobs=0, quick=quick)
        outcome.problems.append(f"{type(err).__name__}: {err}")
        traceback.print_exc()
    outcome.quick, outcome.seconds = quick, round(time.monotonic() - started, 1)
    outcome.command = outcome.command or f"make drill DRILLS={name}"
    write(outcome)
    return outcome


def main(argv: list[str] | None = None) -> int:
    """Run the drills asked for and report; 1 when any failed."""
    parser = argparse.ArgumentParser(prog="python -m bench.drills", description=__doc__)
    parser.add_argument("names", nargs="*", metavar="NAME", help=f"some of: {', '.join(DRILLS)} (default: all)")
    parser.add_argument("--quick", action="store_true", help="the small size make test runs")
    args = parser.parse_args(argv)
    unknown = [n for n in args.names if n not in DRILLS]
    if unknown:
        parser.error(f"unknown drill {', '.join(unknown)}; known: {', '.join(DRILLS)}")
    names = args.names or list(DRILLS)
    failed = []
    for name in names:
        outcome = run_one(name, args.quick)
        verdict = "passed" if outcome.passed else "FAILED: " + "; ".join(outcome.problems)[:500]
        print(f"drill {name}: {outcome.jobs} jobs, lost {outcome.lost}, duplicated {outcome.duplicated}, "
              f"recovered {outcome.recovered}, {outcome.seconds:.0f} s: {verdict}", flush=True)  # fmt: skip
        if not outcome.passed:
            failed.append(name)
    if not args.quick:
        print(f"docs/reliability.md table: {report.rebuild()}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
