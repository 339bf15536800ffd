"""What the hostile-input drill counts with: a tally per door (refused clearly, accepted, 5xx, unclear, crashed), the
CLI run as a process, and Redis's keys with a digest of each value, before and after."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis

from bench.drills import surfaces
from bench.drills.outcome import Outcome
from bench.drills.surfaces import Answer, Surfaces
from workers.stack import Services

MAX_ERROR = 600  # characters of one refusal: a bounded quote of what it refuses, never all of it
# Keys live processes rewrite on their own (claims and heartbeats, leader and fleet records, Celery's bindings and
# event fan-out, rate limits): everything else must be byte for byte what it was.
VOLATILE = ("yoloq:gpu:", "yoloq:worker", "yoloq:fleet:", "yoloq:leader", "yoloq:supervisor", "yoloq:ratelimit",
            "yoloq:rate:", "_kombu", "celeryev", "unacked", "yoloq:clock", "yoloq:heartbeat")  # fmt: skip


def shown(value: Any, limit: int = 160) -> str:
    """A drawn input as a problem line quotes it."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}… ({len(text)} characters)"


def one_line(reason: object) -> bool:
    """A refusal as users see it: a non-empty single line of bounded length."""
    return isinstance(reason, str) and bool(reason.strip()) and "\n" not in reason and len(reason) <= MAX_ERROR


def _usage_error(code: int, err: str) -> bool:
    return code == 2 and "Error:" in err


def _typed_error(code: int, err: str) -> bool:
    return code == 1 and one_line(err) and err.startswith("yoloq: error:")


@dataclass
class Tally:
    """What one door did with what it was given."""

    name: str
    tried: int = 0
    refused: int = 0
    accepted: list[str] = field(default_factory=list)
    server_errors: list[str] = field(default_factory=list)
    unclear: list[str] = field(default_factory=list)
    crashes: list[str] = field(default_factory=list)
    statuses: Counter[int] = field(default_factory=Counter)
    problems: list[str] = field(default_factory=list)

    def refused_with(self, reason: str, value: Any) -> None:
        """An in-process refusal: clear when it is one bounded line."""
        self.tried += 1
        if one_line(reason):
            self.refused += 1
        else:
            self.unclear.append(f"{shown(reason, 200)} for {shown(value)}")

    def answered(self, answer: Answer, value: Any) -> None:
        """An HTTP answer: a 4xx with a one-line JSON error is a clear refusal; 2xx accepted; 5xx a server error."""
        self.tried += 1
        self.statuses[answer.status] += 1
        error = answer.body.get("error") if isinstance(answer.body, dict) else None
        if answer.status >= 500:
            self.server_errors.append(f"{answer.status} {answer.text[:160]} for {shown(value)}")
        elif answer.status < 400:
            self.accepted.append(f"{answer.status} {answer.text[:160]} for {shown(value)}")
        elif one_line(error):
            self.refused += 1
        else:
            self.unclear.append(f"{answer.status} {answer.text[:160]} for {shown(value)}")

    def ran(self, args: list[str], env: dict[str, str]) -> None:
        """``yoloq ARGS`` as a process, judged by :meth:`exited`."""
        done = subprocess.run([sys.executable, "-m", "yoloq", *args], env=env, capture_output=True, text=True,
                              timeout=120, check=False)  # fmt: skip
        self.exited(done.returncode, done.stdout, done.stderr, args)

    def exited(self, code: int, out: str, err: str, args: Any) -> None:
        """A refusal is exit 2 with click's usage error, or exit 1 with one ``yoloq: error:`` line; nothing on
        stdout, never a traceback."""
        self.tried += 1
        self.statuses[code] += 1
        err = err.strip()
        if code == 0:
            self.accepted.append(f"exit 0: {out[:160]} for {shown(args)}")
        elif "Traceback" in err:
            self.crashes.append(f"exit {code} with a traceback: {err[-300:]} for {shown(args)}")
        elif not out and (_usage_error(code, err) or _typed_error(code, err)):
            self.refused += 1
        else:
            self.unclear.append(f"exit {code}: {shown(err, 200)} for {shown(args)}")

    def check(self, ok: bool, problem: str) -> None:
        """An invariant of this door beside the per-input counts."""
        if not ok:
            self.problems.append(problem)

    def report(self, outcome: Outcome) -> None:
        """Into the drill's row: accepted and 5xx count as lost; each kind of failure is one problem line."""
        outcome.lost += len(self.accepted) + len(self.server_errors)
        for what, found in (("accepted", self.accepted), ("answered 5xx", self.server_errors),
                            ("refused unclearly", self.unclear), ("crashed", self.crashes)):  # fmt: skip
            if found:
                outcome.problems.append(f"{self.name}: {len(found)} {what}, e.g. {'; '.join(found[:3])}")
        outcome.problems += [f"{self.name}: {p}" for p in self.problems]

    def figures(self) -> dict[str, Any]:
        """Counts for the results file."""
        out: dict[str, Any] = {"tried": self.tried, "refused_clearly": self.refused, "accepted": len(self.accepted),
                               "5xx": len(self.server_errors), "unclear": len(self.unclear),
                               "crashed": len(self.crashes)}  # fmt: skip
        if self.statuses:
            out["by_status"] = {str(k): v for k, v in sorted(self.statuses.items())}
        return out


def keyspace(client: redis.Redis) -> dict[str, str]:
    """Every key but the volatile ones, with a digest of its serialized value (DUMP)."""
    keys = sorted(str(k) for k in client.scan_iter(count=1000) if not str(k).startswith(VOLATILE))
    pipe = client.pipeline(transaction=False)
    for key in keys:
        pipe.dump(key)
    dumps: list[Any] = pipe.execute()
    return {key: hashlib.sha256(_bytes(raw)).hexdigest()[:16] for key, raw in zip(keys, dumps, strict=True)}


def _bytes(raw: Any) -> bytes:
    if raw is None:
        return b""
    return raw if isinstance(raw, bytes) else str(raw).encode("utf-8", "surrogateescape")


def unchanged(outcome: Outcome, before: dict[str, str], after: dict[str, str]) -> None:
    """Nothing written: the same keys with the same values."""
    added = sorted(after.keys() - before.keys())
    removed = sorted(before.keys() - after.keys())
    changed = sorted(k for k in before.keys() & after.keys() if before[k] != after[k])
    for what, keys in (("added", added), ("removed", removed), ("changed", changed)):
        outcome.check(not keys, f"Redis keys {what} by refused inputs: {', '.join(keys[:10])}")
    outcome.figures["redis_keys_compared"] = len(before)


def data_root(services: Services) -> Path:
    """A data root for this stack (YOLOQ_DATA_ROOTS for the Client and the API)."""
    root = (services.settings.home / "data-root").resolve()
    root.mkdir(parents=True, exist_ok=True)
    services.settings = services.settings.model_copy(update={"data_roots": str(root)})
    return root


def start_api(services: Services) -> Surfaces:
    """The HTTP API alone (no Flower), on the stack's settings."""
    return surfaces.start(services, flower=False)
