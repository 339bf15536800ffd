"""Drill 2, duplicate delivery: every running attempt's message is handed out again while it runs, as a broker with a
visibility timeout shorter than the job does.

yoloq refuses a visibility timeout under an hour (``YOLOQ_VISIBILITY_TIMEOUT_S``), so the drill plays that broker
itself: every second it runs kombu's own restore (``QoS.restore_by_tag``, what every Celery worker's periodic sweep
runs) with a visibility timeout of a few seconds, on yoloq's transport options. Every unacked message older
than that, the running attempts' own included, goes back on its queue and an idle worker receives it (the worker
logs ``Task ...[id] received`` again). Each job's message is also published a second time under the same task id at
submit (``tasks.lifecycle.resend``, the resender's path when a message it thought lost turns up), so two copies race
for idle workers. From the registry and the workers' logs: every copy was delivered, exactly one delivery per job ran
(the others ended ``skipped``), no job has two attempts live at once, each completes exactly once, in one attempt.
Baseline, same Redis, same two faults: a plain Celery ``acks_late`` task on two plain workers, whose runs (logged by
the task itself) overlap and complete more than once.
"""

from __future__ import annotations

import json
import re
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from celery import Celery

import celeryconfig
from bench.drills import crash_kit as kit
from bench.drills.outcome import Outcome, spread
from bench.drills.plain_sleep import QUEUE, TASK, create_app, most_at_once, runs
from infra.settings import Settings
from tasks import lifecycle
from tasks.records import JobRecord
from tasks.specs import JobSpec, ProbeSpec
from tasks.states import TERMINAL

RECEIVED = re.compile(r"Task (\S+)\[([0-9a-f-]{36})\] received")
ENDED = re.compile(r"Task (\S+)\[([0-9a-f-]{36})\] (?:succeeded in [\d.]+s: '(\w+)'|(raised|failed))")


@dataclass(frozen=True)
class Size:
    """GPUs, the jobs (probe seconds, training epochs), the forced visibility timeout and the plain tasks' length."""

    gpus: int
    probes: tuple[int, ...]
    trainings: tuple[int, ...]
    visibility_s: float
    plain_s: float


QUICK = Size(gpus=3, probes=(12, 12), trainings=(), visibility_s=2.0, plain_s=10.0)
FULL = Size(gpus=4, probes=(30, 30, 45), trainings=(3, 3), visibility_s=3.0, plain_s=30.0)


@dataclass
class Sweeper:
    """A broker whose visibility timeout is ``visibility_s``: kombu's restore sweep with that timeout, every second,
    in a thread; ``restored`` counts the messages it put back, by task id."""

    settings: Settings
    visibility_s: float
    restored: Counter[str] = field(default_factory=Counter)
    stop: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        app = Celery("drill-sweeper", set_as_current=False)
        app.config_from_object("celeryconfig")
        app.conf.update(celeryconfig.from_settings(self.settings))
        app.conf.broker_transport_options = {
            **app.conf.broker_transport_options,
            "visibility_timeout": self.visibility_s,
        }
        self._conn = app.connection_for_write()
        self._thread = threading.Thread(target=self._loop, daemon=True, name="drill-sweeper")

    def start(self) -> None:
        """Sweep every second until :meth:`close`."""
        self._thread.start()

    def sweep(self) -> None:
        """Put every unacked message older than the visibility timeout back on its queue, counting each by its task
        id: kombu's ``restore_by_tag`` (what its periodic sweep calls in every worker), which does not say whether it
        found the message."""
        channel: Any = self._conn.default_channel  # kombu's Redis channel (its typing knows only StdChannel)
        client = channel.client
        for tag in client.zrangebyscore(channel.unacked_index_key, 0, time.time() - self.visibility_s):
            found: list[str] = []

            def restore(pipe: Any, tag: Any = tag, found: list[str] = found) -> None:
                found.clear()  # the transaction runs again when the hash changed under it
                raw = pipe.hget(channel.unacked_key, tag)
                pipe.multi()
                pipe.zrem(channel.unacked_index_key, tag).hdel(channel.unacked_key, tag)
                if raw:
                    message, exchange, routing_key = json.loads(raw)
                    channel._do_restore_message(message, exchange, routing_key, pipe)
                    found.append(message["headers"]["id"])

            client.transaction(restore, channel.unacked_key)
            self.restored.update(found)

    def _loop(self) -> None:
        while not self.stop.wait(1.0):
            self.sweep()

    def close(self) -> None:
        """Stop sweeping and close the connection."""
        self.stop.set()
        self._thread.join(10)
        self._conn.release()


def deliveries(logs: list[Path]) -> tuple[Counter[str], Counter[str]]:
    """(deliveries, deliveries that ran: ended other than ``skipped``) by task id, from the workers' logs."""
    received: Counter[str] = Counter()
    ran: Counter[str] = Counter()
    for log in logs:
        text = log.read_text(errors="replace")
        received.update(m.group(2) for m in RECEIVED.finditer(text))
        ran.update(m.group(2) for m in ENDED.finditer(text) if m.group(3) != "skipped")
    return received, ran


def plain_runs(stack: kit.Stack, size: Size, tokens: list[str]) -> dict[str, Any]:
    """The plain ``acks_late`` sleeps (one per token, two plain workers): how often they ran, the most runs of one task
    live at once, how often they completed."""
    found = {token: runs(stack.redis, token) for token in tokens}
    now = time.time()
    return {
        "tasks": len(tokens),
        "runs": sum(len(r) for r in found.values()),
        "completions": sum(1 for r in found.values() for one in r if one["end"] is not None),
        "most_at_once": max((most_at_once(r, now) for r in found.values()), default=0),
        "task_s": size.plain_s,
    }


def _submit(stack: kit.Stack, size: Size) -> list[str]:
    """The yoloq jobs (probes and small trainings, all low tier), each message published twice."""
    data = kit.dataset(stack.services.settings.home / "data", seed=2) if size.trainings else ""
    specs: list[JobSpec] = [ProbeSpec(seconds=s, tier="low", team="drill", name=f"redeliver-probe-{n}")
                            for n, s in enumerate(size.probes)]  # fmt: skip
    specs += [kit.train_spec(data, epochs, f"redeliver-train-{n}") for n, epochs in enumerate(size.trainings)]
    ids = [stack.client.submit(spec).job_id for spec in specs]
    for record in stack.client.registry.many(ids):  # the resender's path: the same task id published once more
        lifecycle.resend(stack.client.registry, stack.client.dispatch, record, "drill: a second copy of the message")
    return ids


def _score(outcome: Outcome, records: list[JobRecord], sweeper: Sweeper, logs: list[Path]) -> None:
    """Judge the registry and the workers' logs: one live run per job, one completion, in one attempt."""
    lost, duplicated, problems = kit.judge(records)
    outcome.jobs, outcome.lost, outcome.duplicated = len(records), lost, duplicated
    outcome.problems += problems
    received, ran = deliveries(logs)
    extra = []
    for record in records:
        task = record.attempts[0].task_id
        outcome.check(len(record.attempts) == 1, f"{record.job_id}: {len(record.attempts)} attempts for one job")
        outcome.check(sweeper.restored[task] > 0, f"{record.job_id}: its message was never handed out again")
        copies = 2 + sweeper.restored[task]
        outcome.check(received[task] == copies, f"{record.job_id}: {received[task]} deliveries of {copies} copies")
        if not outcome.check(
            ran[task] == 1, f"{record.job_id}: {ran[task]} deliveries of its message ran (not skipped)"
        ):
            outcome.duplicated += ran[task] > 1 and not kit.overlaps(record)  # one the attempt log never saw
        extra.append(received[task] - 1)
    outcome.recovered = sum(1 for n in extra if n > 0)
    outcome.recover_s = spread([])
    outcome.figures |= {
        "restored": sum(sweeper.restored[r.attempts[0].task_id] for r in records), "redelivered": sum(extra),
        "refused_as_skipped": sum(received[r.attempts[0].task_id] - ran[r.attempts[0].task_id] for r in records),
        "visibility_s": sweeper.visibility_s,
    }  # fmt: skip


def run(quick: bool) -> Outcome:
    """The drill at its quick or full size."""
    size = QUICK if quick else FULL
    jobs = len(size.probes) + len(size.trainings)
    faults = (f"each message published twice (the resender's path), then every unacked one put back on its queue "
              f"once {size.visibility_s:.0f} s old (kombu's sweep), {size.gpus} GPUs")  # fmt: skip
    outcome = Outcome(name="redeliver", jobs=jobs, recovery="n/a: nothing to recover", faults=faults)
    with kit.drill_stack("yoloq-drill-redeliver-") as stack:
        host = stack.host(",".join(f"{i}:A100:40" for i in range(size.gpus)))
        host.start_all()
        for name in ("plain-a", "plain-b"):
            stack.plain_worker(name)
        sweeper = Sweeper(stack.services.settings, size.visibility_s)
        sweeper.start()
        try:
            plain_app, tokens = create_app(stack.services.settings), [uuid.uuid4().hex]  # one task, two workers
            for token in tokens + tokens:  # each twice under one task id, like the resend
                plain_app.send_task(TASK, args=[token, size.plain_s], queue=QUEUE, task_id=token)
            ids = _submit(stack, size)
            budget = 120 if quick else 600
            kit.poll(lambda: all(r.state in TERMINAL for r in stack.client.registry.many(ids)), budget, "every job")
            kit.poll(lambda: all(any(r["end"] for r in runs(stack.redis, t)) for t in tokens), budget, "plain tasks")
        finally:
            sweeper.close()
        records = stack.client.registry.many(ids)
        logs = [p.log_path for p in host.services.workers.values()]
        copies = {r.attempts[0].task_id: 2 + sweeper.restored[r.attempts[0].task_id] for r in records}
        kit.poll(lambda: all(deliveries(logs)[0][t] >= n for t, n in copies.items()), 60, "every copy delivered")
        _score(outcome, records, sweeper, logs)
        plain = plain_runs(stack, size, tokens)
    outcome.baseline = {
        "plain Celery, same sweeps": f"{plain['tasks']} task ran {plain['runs']} times, up to {plain['most_at_once']} "
                                     f"at once, completed {plain['completions']} times",
        "duplicated": plain["completions"] - plain["tasks"],
    }  # fmt: skip
    outcome.figures["plain"] = plain
    outcome.check(not stack.leaked, f"processes outlived the drill: {stack.leaked}")
    outcome.command = ".venv/bin/python -m bench.drills redeliver" + (" --quick" if quick else "")
    return outcome
