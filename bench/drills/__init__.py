"""Reliability drills (issue 17, docs/reliability.md): faults injected into the real local stack, each bounded in
time, each with what plain Celery on the same Redis does under the same fault. ``make drill`` runs them all
(``python -m bench.drills``); ``python -m bench.drills NAME ...`` runs some; ``--quick`` is the size ``make test``
runs (tests/integration/test_drills.py). Each writes ``bench/results/drill_NAME.json``; the table in
docs/reliability.md is rebuilt from those files (``bench.drills.report``)."""
