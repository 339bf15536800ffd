"""The model registry in Redis (docs/serving.md): numbered versions with their artefacts in S3, and aliases
(``name@label``) that point at a stable version with an optional canary split.

Keys: ``yoloq:model:{name}`` (version → JSON :class:`~tasks.model_records.ModelVersion`), ``yoloq:model:{name}:jobs``
(source job → version: a pipeline stage that runs again gets the version it registered, never a second one),
``yoloq:model:{name}:seq`` (the last version number handed out) and ``yoloq:model-aliases`` (``name@label`` → JSON
:class:`~tasks.model_records.AliasState`). Artefacts live under ``models/{name}/v{n}/`` with their sha256 and size
in the record; a pickled artefact (weights) is also recorded in the trust ledger, so a replica may load it.

Every change is one Lua step with its audit entry (``yoloq audit``: who registered or moved what, when). An alias
change is computed here and written by a compare-and-set on the stored entry (retried when another writer got in
between). Bad input (an unknown version, a share outside 0-100, a bad name) raises before anything is written.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar, cast, get_args

import redis
from pydantic import ValidationError

from infra.audit import AUDIT_KEY, lua_xadd
from infra.ports import ObjectStore
from infra.redis_client import redis_errors
from infra.trusted_files import TrustedFiles
from routing.canary import pick
from tasks.errors import InvalidName, ModelNotFound, SpecRejected, StorageError
from tasks.model_records import AliasState, Artefact, ArtefactKind, Canary, ModelVersion, alias_ref, split_alias
from tasks.records import Event, iso, utc_now
from tasks.trust import TrustedFile, needs_trust, sha256_of

ALIASES = "yoloq:model-aliases"
HISTORY = 20  # stable versions kept for rollback
_CAS_TRIES = 20
Record = TypeVar("Record", AliasState, ModelVersion)
Change = tuple[int, Canary | None, list[int], str, str]  # version, canary, history, event type, what changed

_RESERVE = """
if ARGV[1] ~= '' then
  local v = redis.call('HGET', KEYS[2], ARGV[1])
  if v then return {tonumber(v), redis.call('HEXISTS', KEYS[3], v)} end
end
local n = redis.call('INCR', KEYS[1])
while redis.call('HEXISTS', KEYS[3], tostring(n)) == 1 do n = redis.call('INCR', KEYS[1]) end
if ARGV[1] ~= '' then redis.call('HSET', KEYS[2], ARGV[1], n) end
return {n, 0}
"""

_COMMIT = """
local had = redis.call('HGET', KEYS[1], ARGV[1])
if had then return had end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
if ARGV[3] ~= '' then redis.call('HSET', KEYS[2], ARGV[3], ARGV[1]) end
XADD
return ARGV[2]
""".replace("XADD", lua_xadd("KEYS[3]", "ARGV[3]", "ARGV[4]"))

_SWAP = """
local cur = redis.call('HGET', KEYS[1], ARGV[1]) or ''
if cur ~= ARGV[2] then return 0 end
for i = 5, #ARGV do if redis.call('HEXISTS', KEYS[2], ARGV[i]) == 0 then return -1 end end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
XADD
return 1
""".replace("XADD", lua_xadd("KEYS[3]", "''", "ARGV[4]"))


def model_key(name: str) -> str:
    """The hash of a model's versions."""
    return f"yoloq:model:{name}"


def model_name(name: str) -> str:
    """A model name as typed, checked by the slug rule (``name@label`` is an alias, not a model name)."""
    if "@" in name:
        raise InvalidName(f"model name {name[:80]!r} names an alias; give the model name alone")
    return split_alias(name)[0]


def _problem(files: dict[ArtefactKind, Path], classes: dict[int, str], imgsz: int, metrics: dict[str, float]) -> str:
    """Why this version cannot be registered, or "" (checked before a number is reserved or a byte uploaded)."""
    kinds, names = get_args(ArtefactKind), [path.name for path in files.values()]
    if not files or len(set(names)) < len(names) or not set(files) <= set(kinds):
        return f"a version needs artefacts of the kinds {', '.join(kinds)}, each its own file name; got {files}"
    if missing := [str(path) for path in files.values() if not path.is_file() or path.stat().st_size == 0]:
        return f"{', '.join(missing)}: no such file, or empty"
    if not classes or not all(isinstance(k, int) and k >= 0 and isinstance(v, str) for k, v in classes.items()):
        return "classes must map class ids (0, 1, ...) to names, and a model has at least one"
    if not 1 <= imgsz <= 16384:
        return f"imgsz must be 1-16384 pixels, got {imgsz}"
    if not all(math.isfinite(v) for v in metrics.values()):
        return f"metrics must be finite numbers, got {metrics}"
    return ""


def _no_alias(alias: str) -> str:
    return f"no alias {alias}; point it at a version first (yoloq model alias {alias} VERSION)"


def _parsed(kind: type[Record], raw: str | None) -> Record | None:
    """A stored record, or None when absent or corrupt (a hand edit: shown as missing, overwritten by a change)."""
    try:
        return kind.model_validate_json(raw) if raw else None
    except ValidationError:
        return None


class ModelRegistry:
    """Register versions, read them, and move aliases (see the module docstring)."""

    def __init__(self, client: redis.Redis, url: str = "") -> None:
        self._r, self._url = client, url

    def register(self, name: str, files: dict[ArtefactKind, Path], store: ObjectStore, *, classes: dict[int, str],
                 imgsz: int, metrics: dict[str, float] | None = None, source_job: str | None = None,
                 by: str) -> ModelVersion:  # fmt: skip
        """Upload ``files`` as the model's next version and record it, so aliases can point at it and replicas
        load it checked; once per ``source_job`` (a re-run stage gets the version it registered before)."""
        name, metrics = model_name(name), dict(metrics or {})
        if problem := _problem(files, classes, imgsz, metrics):
            raise SpecRejected(f"cannot register {name}: {problem}")
        with redis_errors(self._url):
            reserved = self._r.eval(_RESERVE, 3, f"{model_key(name)}:seq", f"{model_key(name)}:jobs",
                                    model_key(name), source_job or "")  # fmt: skip
        number, done = (int(x) for x in cast("list[int]", reserved))
        if done:
            return self.version(name, number)
        now = iso(utc_now())
        artefacts = {kind: self._upload(store, f"models/{name}/v{number}/{path.name}", path, by, now)
                     for kind, path in files.items()}  # fmt: skip
        record = ModelVersion(name=name, version=number, classes=classes, imgsz=imgsz, artefacts=artefacts,
                              metrics=metrics, source_job=source_job, created_at=now, created_by=by)  # fmt: skip
        sums = ", ".join(f"{kind} sha256 {a.sha256[:16]}…" for kind, a in artefacts.items())
        event = Event(at=now, type="model-registered", reason=f"{name} v{number}: {sums}", by=by, model=name,
                      version=number)  # fmt: skip
        args = [str(number), record.model_dump_json(), source_job or "", event.model_dump_json(exclude_none=True)]
        with redis_errors(self._url):
            stored = self._r.eval(_COMMIT, 3, model_key(name), f"{model_key(name)}:jobs", AUDIT_KEY, *args)
        return ModelVersion.model_validate_json(cast(str, stored))

    def _upload(self, store: ObjectStore, key: str, path: Path, by: str, at: str) -> Artefact:
        """One artefact into S3, its size checked; a pickled one recorded in the trust ledger before any version
        names it (a replica refuses what the ledger does not know)."""
        digest, size = sha256_of(path), path.stat().st_size
        stored = store.put_file(key, path)
        if stored != size:
            raise StorageError(f"upload of {key} stored {stored} bytes, expected {size}")
        uri = store.uri(key)
        if needs_trust(path.name):
            TrustedFiles(self._r, self._url).record(TrustedFile(uri, digest, size, "registry", by, at), audited=True)
        return Artefact(uri=uri, sha256=digest, bytes=size)

    def names(self) -> list[str]:
        """Every model with at least one version, sorted."""
        with redis_errors(self._url):
            found = {str(k).removeprefix(model_key("")) for k in self._r.scan_iter(match=model_key("*"), count=1000)}
        return sorted(name for name in found if name and ":" not in name)  # not the :jobs and :seq keys

    def versions(self, name: str) -> list[ModelVersion]:
        """Every version of a model, oldest first (ModelNotFound when it has none)."""
        name = model_name(name)
        with redis_errors(self._url):
            raw = cast("dict[str, str]", self._r.hgetall(model_key(name)))
        found = [v for v in (_parsed(ModelVersion, text) for text in raw.values()) if v is not None]
        if not found:
            raise ModelNotFound(f"no model named {name} (yoloq model list shows them)")
        return sorted(found, key=lambda v: v.version)

    def version(self, name: str, version: int) -> ModelVersion:
        """One version (ModelNotFound when the model has no such version, or its record is corrupt)."""
        name = model_name(name)
        with redis_errors(self._url):
            found = _parsed(ModelVersion, cast("str | None", self._r.hget(model_key(name), str(version))))
        if found is None:
            raise ModelNotFound(f"model {name} has no version {version} (yoloq model show {name} lists them)")
        return found

    def alias(self, ref: str) -> AliasState:
        """Where an alias points now (ModelNotFound when it was never set)."""
        alias = alias_ref(ref)
        with redis_errors(self._url):
            found = _parsed(AliasState, cast("str | None", self._r.hget(ALIASES, alias)))
        if found is None:
            raise ModelNotFound(_no_alias(alias))
        return found

    def aliases(self, name: str | None = None) -> list[AliasState]:
        """Every alias (of one model when ``name`` is given), sorted."""
        prefix = f"{model_name(name)}@" if name is not None else ""
        with redis_errors(self._url):
            raw = cast("dict[str, str]", self._r.hgetall(ALIASES))
        found = [_parsed(AliasState, text) for alias, text in sorted(raw.items()) if alias.startswith(prefix)]
        return [a for a in found if a is not None]

    def resolve(self, ref: str, key: str | None) -> tuple[AliasState, int]:
        """The alias and the version that serves this request (``key``: the caller's routing key, if any)."""
        state = self.alias(ref)
        canary = state.canary
        chosen = pick(state.version, canary.version if canary else None, canary.share if canary else 0.0, key,
                      random.random())  # fmt: skip
        return state, chosen

    def set_alias(self, ref: str, version: int, by: str) -> AliasState:
        """Point an alias at ``version`` (its stable version before goes on the history; a canary of that same
        version is cleared)."""
        self.version(split_alias(ref)[0], version)

        def change(cur: AliasState | None) -> Change:
            if cur is None:
                return version, None, [], "model-alias-set", f"v{version}"
            history = cur.history if cur.version == version else [cur.version, *cur.history]
            canary = cur.canary if cur.canary and cur.canary.version != version else None
            return version, canary, history, "model-alias-set", f"v{version} (was v{cur.version})"

        return self._update(ref, by, change)

    def set_canary(self, ref: str, version: int, share_pct: float, by: str) -> AliasState:
        """Send ``share_pct`` % of an alias's requests to ``version`` (0 removes the canary)."""
        if not 0 <= share_pct <= 100:
            raise SpecRejected(f"a canary share is 0-100 %, got {share_pct}")
        if share_pct > 0:
            self.version(split_alias(ref)[0], version)

        def change(cur: AliasState | None) -> Change:
            cur = self._existing(ref, cur)
            if share_pct == 0:
                return cur.version, None, cur.history, "model-canary-removed", "canary removed"
            if version == cur.version:
                raise SpecRejected(f"v{version} is {cur.alias}'s stable version; a canary is another version")
            what = f"canary v{version} at {share_pct:g} % beside v{cur.version}"
            return cur.version, Canary(version=version, share=share_pct), cur.history, "model-canary-set", what

        return self._update(ref, by, change)

    def promote(self, ref: str, by: str) -> AliasState:
        """Make the canary the stable version (the stable version before goes on the history)."""

        def change(cur: AliasState | None) -> Change:
            cur = self._existing(ref, cur)
            if cur.canary is None:
                raise SpecRejected(f"{cur.alias} has no canary to promote (yoloq model canary sets one)")
            new = cur.canary.version
            return new, None, [cur.version, *cur.history], "model-promoted", f"v{new} (was v{cur.version})"

        return self._update(ref, by, change)

    def rollback(self, ref: str, by: str) -> AliasState:
        """Point an alias back at its previous stable version, dropping any canary."""

        def change(cur: AliasState | None) -> Change:
            cur = self._existing(ref, cur)
            if not cur.history:
                raise SpecRejected(f"{cur.alias} has no previous version to roll back to (it serves v{cur.version})")
            back = cur.history[0]
            return back, None, cur.history[1:], "model-rolled-back", f"v{back} (was v{cur.version})"

        return self._update(ref, by, change)

    def catalog(self) -> list[dict[str, Any]]:
        """Every model's newest version, version count and aliases: what ``model list`` and the API list."""
        aliases, rows = self.aliases(), []
        for name in self.names():
            try:
                numbers = [v.version for v in self.versions(name)]
            except ModelNotFound:  # every record of it corrupt: nothing to list
                continue
            mine = [a.model_dump(mode="json") for a in aliases if a.alias.startswith(f"{name}@")]
            rows.append({"name": name, "latest": max(numbers), "versions": len(numbers), "aliases": mine})
        return rows

    @staticmethod
    def _existing(ref: str, cur: AliasState | None) -> AliasState:
        if cur is None:
            raise ModelNotFound(_no_alias(alias_ref(ref)))
        return cur

    def _update(self, ref: str, by: str, change: Callable[[AliasState | None], Change]) -> AliasState:
        """Compute the alias's next state from its stored one and write it with its audit entry if nobody else
        wrote in between (else read again)."""
        alias = alias_ref(ref)
        name = alias.partition("@")[0]
        for _ in range(_CAS_TRIES):
            with redis_errors(self._url):
                raw = cast("str | None", self._r.hget(ALIASES, alias))
            version, canary, history, kind, what = change(_parsed(AliasState, raw))
            now = iso(utc_now())
            state = AliasState(alias=alias, version=version, canary=canary, history=history[:HISTORY],
                               updated_at=now, updated_by=by)  # fmt: skip
            event = Event(at=now, type=kind, reason=f"{alias}: {what}", by=by, alias=alias, version=version,
                          canary=canary.model_dump() if canary else None)  # fmt: skip
            with redis_errors(self._url):
                done = cast(int, self._r.eval(_SWAP, 3, ALIASES, model_key(name), AUDIT_KEY, alias, raw or "",
                                    state.model_dump_json(), event.model_dump_json(exclude_none=True),
                                    *[str(v) for v in state.versions()]))  # fmt: skip
            if done == 1:
                return state
            if done == -1:
                raise ModelNotFound(f"model {name} lost a version {state.versions()} names; nothing changed")
        raise SpecRejected(f"alias {alias} kept changing under this update; try again")
