"""Job registry in Redis: the source of truth for every job (BRIEF §3), surviving restarts of every process.

Keys (prefix ``yoloq:``): ``job:{id}`` hash (record), ``job:{id}:events`` list (append-only history, JSON),
``jobs`` zset (all ids by submit time), ``state:{state}`` sets (index). Every state change goes through one Lua
script that checks the legal source states (tasks.states) and, optionally, the attempt's task id, then writes the
fields, the attempt list, the index and the event in one atomic step: two processes can never both move a job.
A job that becomes ``queued`` is also published on ``infra.wake.CHANNEL`` in that step (the supervisor's wake-up),
and a change webhooks are told of (``routing.notify``) enters the notify stream in it too (``infra.notify_queue``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, cast

import redis

from infra import audit, metrics, notify_queue, wake
from infra.audit import lua_xadd
from infra.redis_client import redis_errors
from infra.registry_view import to_record
from tasks.errors import InvalidTransition, JobNotFound, LeaseHeld
from tasks.records import Event, JobRecord, audited, parse_iso
from tasks.states import JobState, sources_of

P = "yoloq:"

_TRANSITION = (
    """
local cur = redis.call('HGET', KEYS[1], 'state')
if not cur then return {0, 'missing', ''} end
local allowed = false
for s in string.gmatch(ARGV[1], '[^,]+') do if s == cur then allowed = true end end
if not allowed then return {0, 'state', cur} end
if ARGV[3] ~= '' and redis.call('HGET', KEYS[1], 'task_id') ~= ARGV[3] then return {0, 'stale', cur} end
if ARGV[11] ~= '0' and not redis.call('SET', KEYS[3], ARGV[3], 'NX', 'PX', ARGV[11]) then return {0, 'leased', cur} end
local old_tier = redis.call('HGET', KEYS[1], 'tier') or ''
for k, v in pairs(cjson.decode(ARGV[4])) do redis.call('HSET', KEYS[1], k, v) end
for k, v in pairs(cjson.decode(ARGV[5])) do redis.call('HSETNX', KEYS[1], k, v) end
if ARGV[7] ~= '' or ARGV[8] ~= '' then
  local attempts = cjson.decode(redis.call('HGET', KEYS[1], 'attempts') or '[]')
  if ARGV[8] ~= '' and #attempts > 0 then
    for k, v in pairs(cjson.decode(ARGV[8])) do attempts[#attempts][k] = v end
  end
  if ARGV[7] ~= '' then table.insert(attempts, cjson.decode(ARGV[7])) end
  redis.call('HSET', KEYS[1], 'attempts', cjson.encode(attempts))
end
redis.call('HSET', KEYS[1], 'state', ARGV[2])
local ends = (cur == 'running' or cur == 'preempting') and ARGV[2] ~= 'running' and ARGV[2] ~= 'preempting'
if ends and ARGV[3] ~= '' and redis.call('GET', KEYS[3]) == ARGV[3] then redis.call('DEL', KEYS[3]) end
redis.call('SREM', ARGV[9] .. cur, ARGV[10])
redis.call('SADD', ARGV[9] .. ARGV[2], ARGV[10])
redis.call('RPUSH', KEYS[2], ARGV[6])
if ARGV[12] == '1' then XADD end
if ARGV[14] == '1' then NOTIFY end
if cur == 'queued' then redis.call('ZREM', ARGV[13] .. old_tier, ARGV[10]) end
if ARGV[2] == 'queued' then
  local tier = redis.call('HGET', KEYS[1], 'tier') or ''
  redis.call('ZADD', ARGV[13] .. tier, redis.call('ZSCORE', KEYS[5], ARGV[10]) or 0, ARGV[10])
  redis.call('PUBLISH', 'WAKE', ARGV[10])
end
return {1, 'ok', cur}
""".replace("XADD", lua_xadd("KEYS[4]", "ARGV[10]", "ARGV[6]"))
    .replace("WAKE", wake.CHANNEL)
    .replace("NOTIFY", notify_queue.lua_xadd("KEYS[6]", "KEYS[7]", "ARGV[10]", "ARGV[6]"))
)

# Create in one script instead of a MULTI/EXEC pipeline: same atomicity, half the time on the submit path
# (0.16 vs 0.32 ms measured, bench/results/dispatch_profile.md).
_CREATE = (
    """
redis.call('HSET', KEYS[1], unpack(cjson.decode(ARGV[1])))
redis.call('ZADD', KEYS[3], ARGV[3], ARGV[4])
redis.call('SADD', KEYS[4], ARGV[4])
redis.call('RPUSH', KEYS[2], ARGV[2])
if ARGV[5] == '1' then XADD end
if ARGV[7] == '1' then NOTIFY end
if ARGV[6] == 'queued' then
  redis.call('ZADD', KEYS[6], ARGV[3], ARGV[4])
  redis.call('PUBLISH', 'WAKE', ARGV[4])
end
return 1
""".replace("XADD", lua_xadd("KEYS[5]", "ARGV[4]", "ARGV[2]"))
    .replace("WAKE", wake.CHANNEL)
    .replace("NOTIFY", notify_queue.lua_xadd("KEYS[7]", "KEYS[8]", "ARGV[4]", "ARGV[2]"))
)


@dataclass(frozen=True, slots=True)
class Change:
    """One atomic state change: the target state plus everything written with it."""

    to: JobState
    event: Event
    expect_task: str | None = None
    fields: dict[str, str] = field(default_factory=dict)
    set_once: dict[str, str] = field(default_factory=dict)
    new_attempt: dict[str, Any] | None = None
    attempt_patch: dict[str, Any] | None = None
    # > 0: also take the attempt's lease (key yoloq:lease:{id} = expect_task) in the same atomic step. A change that
    # ends the running attempt ``expect_task`` (requeued, held, finished) drops its lease in that step: the next
    # attempt, published by the same change, may be claimed at once (a worker 9 ms later was refused as a duplicate).
    lease_ttl_ms: int = 0


def job_key(job_id: str) -> str:
    """Redis key of a job's record hash."""
    return f"{P}job:{job_id}"


QUEUED_PREFIX = f"{P}queued:"  # + tier: zset of that tier's queued job ids by submit time, kept by the scripts


def queued_key(tier: str) -> str:
    """Redis key of one tier's queued-jobs index (score = submit time): its oldest waiting job in O(log n)."""
    return f"{QUEUED_PREFIX}{tier}"


class RedisRegistry:
    """Create, transition and read job records; every method is one round trip or one atomic script."""

    def __init__(self, client: redis.Redis, url: str = "") -> None:
        self._r = client
        self._url = url
        self._script = client.register_script(_TRANSITION)
        self._create = client.register_script(_CREATE)

    @property
    def url(self) -> str:
        """The Redis URL (credentials masked in errors), for adapters that share this connection."""
        return self._url

    @property
    def client(self) -> redis.Redis:
        """The underlying connection, shared with the lease and flag helpers."""
        return self._r

    def create(self, fields: dict[str, str], event: Event, submitted_ts: float) -> None:
        """Register a new job atomically (record, index, first event); the id must be new."""
        job_id = fields["job_id"]
        flat = [item for pair in fields.items() for item in pair]
        keys = [job_key(job_id), f"{job_key(job_id)}:events", f"{P}jobs", f"{P}state:{fields['state']}",
                audit.AUDIT_KEY, queued_key(fields["tier"]), notify_queue.STREAM, notify_queue.SUBS]  # fmt: skip
        args = [json.dumps(flat), event.model_dump_json(exclude_none=True), repr(submitted_ts), job_id,
                "1" if audited(event) else "0", fields["state"], notify_queue.flag(event)]  # fmt: skip
        with redis_errors(self._url):
            self._create(keys=keys, args=args)

    def transition(self, job_id: str, change: Change) -> JobState:
        """Apply ``change`` if the job's state allows it; returns the state it left, else raises."""
        args = [
            ",".join(sorted(sources_of(change.to))),
            change.to.value,
            change.expect_task or "",
            json.dumps(change.fields or {}) if change.fields else "{}",
            json.dumps(change.set_once) if change.set_once else "{}",
            change.event.model_dump_json(exclude_none=True),
            json.dumps(change.new_attempt) if change.new_attempt else "",
            json.dumps(change.attempt_patch) if change.attempt_patch else "",
            f"{P}state:",
            job_id,
            str(change.lease_ttl_ms),
            "1" if audited(change.event) else "0",
            QUEUED_PREFIX,
            notify_queue.flag(change.event),
        ]
        keys = [job_key(job_id), f"{job_key(job_id)}:events", f"{P}lease:{job_id}", audit.AUDIT_KEY, f"{P}jobs",
                notify_queue.STREAM, notify_queue.SUBS]  # fmt: skip
        with redis_errors(self._url):
            ok, why, cur = self._script(keys=keys, args=args)
        if ok == 1:
            return JobState(cur)
        if why == "missing":
            raise JobNotFound(f"no job {job_id!r}")
        if why == "leased":
            raise LeaseHeld(f"job {job_id} is already running under another live attempt")
        if why == "stale":
            raise InvalidTransition(f"job {job_id} attempt {change.expect_task} is stale (state {cur})")
        raise InvalidTransition(f"job {job_id} is {cur}; cannot become {change.to.value}")

    def update(self, job_id: str, fields: dict[str, str]) -> None:
        """Overwrite plain fields (progress, heartbeat, checkpoint) that carry no state change."""
        with redis_errors(self._url):
            self._r.hset(job_key(job_id), mapping=cast("Any", fields))

    def append_event(self, job_id: str, event: Event) -> None:
        """Add a history entry that changes no state (e.g. a checkpoint was saved); decisions also go to the audit."""
        with redis_errors(self._url):
            notified = notify_queue.flag(event) == "1" and self._r.exists(notify_queue.SUBS)  # any webhook to tell
            if not audited(event) and not notified:
                self._r.rpush(f"{job_key(job_id)}:events", event.model_dump_json(exclude_none=True))
                return
            pipe = self._r.pipeline(transaction=True)
            pipe.rpush(f"{job_key(job_id)}:events", event.model_dump_json(exclude_none=True))
            if audited(event):
                audit.add(pipe, job_id, event)
            if notified:
                notify_queue.add(pipe, job_id, event)
            pipe.execute()

    def get(self, job_id: str) -> JobRecord:
        """The full record of one job, or JobNotFound."""
        with redis_errors(self._url):
            pipe = self._r.pipeline(transaction=False)
            pipe.hgetall(job_key(job_id))
            pipe.lrange(f"{job_key(job_id)}:events", 0, -1)
            raw, events = pipe.execute()
        if not raw:
            raise JobNotFound(f"no job {job_id!r}")
        return to_record(raw, events)

    def ids(self, state: JobState | None = None, limit: int = 200) -> list[str]:
        """Job ids, newest first; restricted to one state (read from its index set, not a scan of all jobs)."""
        with redis_errors(self._url):
            if state is None:
                return [str(j) for j in cast(list[str], self._r.zrevrange(f"{P}jobs", 0, limit - 1))]
            members = [str(m) for m in cast(set[str], self._r.smembers(f"{P}state:{state.value}"))]
            pipe = self._r.pipeline(transaction=False)
            for job_id in members:
                pipe.zscore(f"{P}jobs", job_id)
            scores = pipe.execute()
        ranked = sorted(zip(members, scores, strict=True), key=lambda pair: -(pair[1] or 0.0))
        return [job_id for job_id, _ in ranked[:limit]]

    def submit_times(self, state: JobState) -> list[tuple[str, float]]:
        """(tier, submit time) of every job in ``state``, from its index set, the jobs index's scores and one field
        per job, without reading a record: what the SLA needs of held jobs, however many an over-quota team has
        (5,000 held: 0.1 s; reading their records took 0.8 s)."""
        with redis_errors(self._url):
            members = [str(m) for m in cast(set[str], self._r.smembers(f"{P}state:{state.value}"))]
            if not members:
                return []
            pipe = self._r.pipeline(transaction=False)
            pipe.zmscore(f"{P}jobs", members)
            for job_id in members:
                pipe.hget(job_key(job_id), "tier")
            scores, *tiers = pipe.execute()
        pairs = zip(tiers, scores, strict=True)
        return [(str(tier), float(score)) for tier, score in pairs if tier and score is not None]

    def oldest_queued(self, tiers: list[str]) -> dict[str, float | None] | None:
        """Submit time of each tier's oldest queued job from the per-tier index, in one round trip (None: no job);
        None overall when the index misses queued jobs (queued before it existed): read the records instead."""
        with redis_errors(self._url):
            pipe = self._r.pipeline(transaction=False)
            pipe.scard(f"{P}state:{JobState.QUEUED.value}")
            for tier in tiers:
                pipe.zcard(queued_key(tier))
                pipe.zrange(queued_key(tier), 0, 0, withscores=True)
            total, *rest = pipe.execute()
        if sum(int(n) for n in rest[0::2]) != int(total):
            return None
        return {tier: float(head[0][1]) if head else None for tier, head in zip(tiers, rest[1::2], strict=True)}

    def queued_before(self, tier: str, before_ts: float) -> list[float]:
        """Submit times of the tier's queued jobs submitted before ``before_ts``, from the index (O(log n + found))."""
        with redis_errors(self._url):
            rows = self._r.zrangebyscore(queued_key(tier), "-inf", f"({before_ts!r}", withscores=True)
        return [float(score) for _, score in cast("list[tuple[str, float]]", rows)]

    def many(self, job_ids: list[str], atomic: bool = False) -> list[JobRecord]:
        """Records of several jobs in one pipelined round trip, skipping ids that vanished; ``atomic`` reads them all
        at one instant (MULTI/EXEC: no transition lands between a record and its events), for small sets."""
        with redis_errors(self._url):
            pipe = self._r.pipeline(transaction=atomic)
            for job_id in job_ids:
                pipe.hgetall(job_key(job_id))
                pipe.lrange(f"{job_key(job_id)}:events", 0, -1)
            out = pipe.execute()
        pairs = zip(out[::2], out[1::2], strict=True)
        return [to_record(raw, events) for raw, events in pairs if raw]

    def in_states(self, states: tuple[JobState, ...]) -> list[JobRecord]:
        """The jobs in any of ``states``, each once, by the state its record is in now: the state indexes are read in
        one MULTI, so a job moving between two of them is not read from both (a borrower that resumed while they were
        read one by one counted twice against its lender, which reclaimed the loan with no job of its own running)."""
        with redis_errors(self._url):
            pipe = self._r.pipeline(transaction=True)
            for state in states:
                pipe.smembers(f"{P}state:{state.value}")
            members: list[set[str]] = pipe.execute()
        return [r for r in self.many(sorted(set().union(*members))) if r.state in states]

    def record_time_to_start(self, record: JobRecord) -> None:
        """Add the job's submit→first-start time to its tier's SLA series (idempotent across attempts)."""
        if record.started_at is None:
            return
        started = parse_iso(record.started_at)
        tts = max((started - parse_iso(record.submitted_at)).total_seconds(), 0.0)
        with redis_errors(self._url):
            added = self._r.zadd(f"{P}tts:{record.tier.value}", {f"{record.job_id}|{tts:.3f}": started.timestamp()},
                                 nx=True)  # fmt: skip
            if added:  # the first start only: the histogram counts jobs, like the SLA series
                pipe = self._r.pipeline(transaction=False)
                metrics.observe(pipe, "time_to_start_seconds", record.tier.value, tts)
                pipe.execute()

    def count(self, name: str, label: str, amount: float = 1.0) -> None:
        """Add to a Prometheus counter kept in Redis (infra.metrics)."""
        with redis_errors(self._url):
            metrics.count(self._r, name, label, amount)

    def observe(self, name: str, label: str, value: float) -> None:
        """Add an observation to a Prometheus histogram kept in Redis (infra.metrics)."""
        with redis_errors(self._url):
            pipe = self._r.pipeline(transaction=False)
            metrics.observe(pipe, name, label, value)
            pipe.execute()

    def starts(self, tier: str, since_ts: float) -> list[tuple[float, float]]:
        """(start timestamp, submit→first-start seconds) of the tier's jobs that started after ``since_ts``."""
        with redis_errors(self._url):
            members = cast("list[tuple[str, float]]", self._r.zrangebyscore(f"{P}tts:{tier}", since_ts, "+inf",
                                                                           withscores=True))  # fmt: skip
        return [(float(score), float(str(m).rsplit("|", 1)[1])) for m, score in members]

    def times_to_start(self, tier: str, since_ts: float) -> list[float]:
        """Submit→first-start seconds of the tier's jobs that started after ``since_ts``."""
        with redis_errors(self._url):
            members = cast(list[str], self._r.zrangebyscore(f"{P}tts:{tier}", since_ts, "+inf"))
        return [float(str(m).rsplit("|", 1)[1]) for m in members]
