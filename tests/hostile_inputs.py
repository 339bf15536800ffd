"""Hostile inputs for yoloq's doors, as Hypothesis strategies. Every value drawn must be refused with a typed one-line
error and must change nothing: each is a valid base spec (or schedule, or command line) with exactly one thing made
wrong, so that the oracle is "refused", always. Used in process by tests/unit/test_fuzz_hostile.py (``make test``)
and on a real stack by bench/drills/hostile_input.py (the Client, the HTTP API, the CLI, ``yoloq beat --check``).

Kinds of harm: a wrong type, a number out of range, an unknown key, an unknown tier or kind, a team that is not a
slug, a label with control characters, a location with another scheme, a bad bucket, a ``..`` segment, a control
character, too long, a path outside the data roots (the roots are a parameter), model names that are no variant,
aliases that are no slug, a pipeline field without its alias, a value of megabytes, a body that is not an object;
for schedule files also bad timings and names, unknown keys, YAML tags, alias bombs, deep nesting, bytes that are not
UTF-8, and files over the size cap.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml
from hypothesis import strategies as st

from routing.names import TEAM_PATTERN
from routing.tiers import TIERS

Spec = dict[str, Any]
Draw = st.DrawFn
BUCKET = "datasets"
BASES: dict[str, Spec] = {
    "probe": {"kind": "probe", "team": "vision", "tier": "low", "seconds": 1},
    "train": {"kind": "train", "team": "vision", "tier": "low", "data": f"s3://{BUCKET}/defects/",
              "model": "yolov8n.yaml", "epochs": 1, "imgsz": 64, "batch": 4},
    "infer": {"kind": "infer", "team": "vision", "tier": "batch", "model": "yolov8n.yaml",
              "source": f"s3://{BUCKET}/images/"},
    "export": {"kind": "export", "team": "vision", "tier": "batch", "model": "yolov8n.yaml"},
}  # fmt: skip
# Ranges as the specs declare them (tasks/specs.py): (low, high) inclusive.
INTS: dict[str, dict[str, tuple[int, int]]] = {
    "probe": {"seconds": (0, 7 * 24 * 3600)},
    "train": {"epochs": (1, 10_000), "batch": (1, 1024), "save_period": (1, 10_000), "workers": (0, 64)},
    "infer": {"batch": (1, 1024)},
    "export": {},
}
FLOATS: dict[str, dict[str, tuple[float, float]]] = {
    "probe": {"memory_gb": (0.125, 192)},
    "train": {"memory_gb": (0.125, 192)},
    "infer": {"memory_gb": (0.125, 192), "conf": (0.0, 1.0)},
    "export": {"memory_gb": (0.125, 192)},
}
BOOLS = {"train": ("amp",), "export": ("half",)}
LOCATIONS = {"train": ("data",), "infer": ("source", "model"), "export": ("model",)}
KNOWN = {kind: set(base) | set(INTS[kind]) | set(FLOATS[kind]) | {"name", "imgsz", "amp", "half", "conf", "backend",
         "format", "deploy", "canary", "min_map50"} for kind, base in BASES.items()}  # fmt: skip
KINDS = ("train", "infer", "export", "probe", "serve")
MAX_LOCATION = 4096
_TEAM = re.compile(TEAM_PATTERN)
_VARIANT = re.compile(r"^yolo", re.IGNORECASE)

# Text without surrogates (no JSON or YAML carries them) and without NUL (argv cannot).
text = st.text(st.characters(exclude_categories=["Cs"], exclude_characters="\x00"), max_size=40)
controls = st.sampled_from(["\n", "\r", "\t", "\x1b[31m", "\u202e", "\u200b", "\x7f", "\x0b"])


def _is_tier(value: str) -> bool:
    return value.strip().lower() in {t.value for t in TIERS}


def _parses_as_int(value: str) -> bool:
    """What click's INT takes (Python's int(): spaces, underscores, any script's digits)."""
    try:
        int(value)
    except ValueError:
        return False
    return True


def _is_alias(value: str) -> bool:
    """``name[@label]``, both slugs (tasks/model_records.py)."""
    name, _, label = value.partition("@")
    return bool(_TEAM.fullmatch(name) and _TEAM.fullmatch(label or "prod"))


def _with(spec: Spec, **changes: Any) -> Spec:
    return {**spec, **changes}


_CONTAINERS = st.lists(st.integers(), max_size=2) | st.dictionaries(text, text, max_size=2)
_OTHER_TYPES = {  # a value of any JSON type but the field's (None only where the field is required)
    "int": st.one_of(st.floats().filter(lambda f: not f.is_integer()), st.booleans(), st.none(), text, _CONTAINERS),
    "float": st.one_of(st.booleans(), text, _CONTAINERS),
    "bool": st.one_of(st.integers(), st.none(), text, st.floats()),
    "str": st.one_of(st.integers(), st.booleans(), st.none(), _CONTAINERS),
}


@st.composite
def wrong_type(draw: Draw, kind: str) -> Spec:
    """A number, flag or text field given a value of another JSON type."""
    base = BASES[kind]
    fields = [*INTS[kind], "imgsz"] if kind != "probe" else list(INTS[kind])
    choices = [(f, "int") for f in fields] + [(f, "float") for f in FLOATS[kind]]
    choices += [(f, "bool") for f in BOOLS.get(kind, ())] + [(f, "str") for f in ("team", *LOCATIONS.get(kind, ()))]
    field, typ = draw(st.sampled_from(choices))
    return _with(base, **{field: draw(_OTHER_TYPES[typ])})


def _outside_floats(low: float, high: float) -> st.SearchStrategy[float]:
    """Floats below ``low`` or above ``high`` (strictly: -0.0 is not below 0.0), or NaN."""
    below = st.floats(max_value=low).filter(lambda f: f < low)
    return below | st.floats(min_value=high).filter(lambda f: f > high) | st.just(float("nan"))


@st.composite
def out_of_range(draw: Draw, kind: str) -> Spec:
    """A number of the right type outside its declared range (or not a multiple of 32 for an image size)."""
    base = BASES[kind]
    options: list[st.SearchStrategy[tuple[str, Any]]] = []
    for field, (low, high) in INTS[kind].items():
        options.append(st.tuples(st.just(field), st.integers(max_value=low - 1) | st.integers(min_value=high + 1)))
    for field, (lo, hi) in FLOATS[kind].items():
        options.append(st.tuples(st.just(field), _outside_floats(lo, hi)))
    if kind != "probe":
        bad_size = (
            st.integers(max_value=31) | st.integers(min_value=4097) | st.integers(32, 4096).filter(lambda n: n % 32)
        )
        options.append(st.tuples(st.just("imgsz"), bad_size))
    field, value = draw(st.one_of(options))
    return _with(base, **{field: value})


@st.composite
def named_wrong(draw: Draw, kind: str) -> Spec:
    """An unknown key, tier, kind or backend; a team that is no slug; a label with a control character or too long."""
    base = BASES[kind]
    harm = draw(st.sampled_from(["key", "tier", "team", "name", "kind", "no-kind"]))
    if harm == "key":
        return _with(base, **{draw(text.filter(lambda k: k not in KNOWN[kind])): draw(text)})
    if harm == "tier":
        return _with(base, tier=draw(text.filter(lambda t: not _is_tier(t)) | st.integers()))
    if harm == "team":
        return _with(base, team=draw(text.filter(lambda t: not _TEAM.fullmatch(t))))
    if harm == "name":
        ok = draw(st.text(st.characters(exclude_categories=("Cs", "Cc", "Cf", "Zl", "Zp")), max_size=20))
        return _with(base, name=draw(st.sampled_from([ok + draw(controls) + ok, "n" * draw(st.integers(129, 400))])))
    if harm == "kind":
        return _with(base, kind=draw(text.filter(lambda k: k not in KINDS) | st.integers()))
    return {k: v for k, v in base.items() if k != "kind"}


def locations(roots: tuple[Path, ...] = ()) -> st.SearchStrategy[str]:
    """Locations a job may not name: other schemes, bad buckets, ``..``, control characters, too long; with
    ``roots``, local paths that resolve outside them (traversal, absolute, home) or do not exist inside them."""
    segment = st.text(st.sampled_from("abcxyz019._-"), min_size=1, max_size=8)
    key = st.lists(segment, min_size=1, max_size=4).map("/".join)
    bad_bucket = st.text(st.characters(exclude_categories=["Cs"], exclude_characters="\x00/"), max_size=70).filter(
        lambda b: re.fullmatch(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]", b) is None and b.isprintable()
    )
    schemes = st.sampled_from(["file", "http", "https", "ftp", "gs", "S3", "s3a", "redis", "javascript"])
    options = [
        st.builds(lambda scheme, rest: f"{scheme}://{rest}", schemes, key),
        st.builds(lambda b, k: f"s3://{b}/{k}", bad_bucket, key),
        st.builds(lambda a, b: f"s3://{BUCKET}/{a}/../{b}", key, key),
        st.builds(lambda a, c: f"s3://{BUCKET}/{a}{c}", key, controls),
        st.integers(1025, 4000).map(lambda n: f"s3://{BUCKET}/" + "k" * n),
        st.integers(MAX_LOCATION + 1, 20_000).map(lambda n: f"s3://{BUCKET}/" + "k" * n),
    ]
    for root in roots:
        options += _outside(str(root), key)
    return st.one_of(options)


def _outside(root: str, key: st.SearchStrategy[str]) -> list[st.SearchStrategy[str]]:
    """Local paths a caller confined to ``root`` may not name (or that do not exist there: no dots in those, or
    ``missing/../..`` would be the root itself)."""
    plain = st.lists(st.text(st.sampled_from("abcxyz019_-"), min_size=1, max_size=8), min_size=1, max_size=3)
    return [
        st.builds(lambda n, k: f"{root}/" + "../" * n + k, st.integers(1, 8), key),
        st.sampled_from(["/etc/passwd", "/proc/self/environ", "~/.ssh/id_rsa", "~root/x", "../../../../etc"]),
        plain.map(lambda parts: f"{root}/missing-" + "/".join(parts)),
        st.builds(lambda k, c: f"{root}/{k}{c}", key, controls),
        st.integers(300, 4000).map(lambda n: f"{root}/" + "a" * n),
    ]


@st.composite
def bad_location(draw: Draw, kind: str, roots: tuple[Path, ...] = ()) -> Spec:
    """A dataset, image source or weights location a job may not name."""
    field = draw(st.sampled_from(LOCATIONS[kind]))
    return _with(BASES[kind], **{field: draw(locations(roots))})


@st.composite
def bad_model(draw: Draw, kind: str) -> Spec:
    """A train model that is no YOLO variant, or weights nobody vouched for; a pipeline field without its alias."""
    if kind == "train":
        harm = draw(st.sampled_from(["variant", "alias", "orphan"]))
        if harm == "variant":
            return _with(BASES[kind], model=draw(text.filter(lambda m: not _VARIANT.match(m.strip()) and "/" not in m)))
        if harm == "alias":
            return _with(BASES[kind], deploy=draw(text.filter(lambda a: not _is_alias(a))))
        return _with(BASES[kind], **{draw(st.sampled_from(["canary", "min_map50"])): 0.5})
    weights = st.builds(lambda k, ext: f"s3://{BUCKET}/{k}.{ext}", st.text("abc", min_size=1, max_size=5),
                        st.sampled_from(["pt", "pth", "pkl", "engine"]))  # fmt: skip
    return _with(BASES[kind], model=draw(weights))


@st.composite
def oversized(draw: Draw, kind: str) -> Spec:
    """One field (or an unknown key) holding megabytes."""
    size = draw(st.integers(1 << 20, 3 << 20))
    field = draw(st.sampled_from(["name", "team", "tier", "kind", "x" * 8, *LOCATIONS.get(kind, ())]))
    return _with(BASES[kind], **{field: draw(st.sampled_from("a/é.")) * size})


def hostile_specs(roots: tuple[Path, ...] = (), big: bool = True) -> st.SearchStrategy[Any]:
    """Any of the above for any kind, or a body that is no JSON object (``big``: megabyte values too)."""
    per_kind = [f(kind) for kind in BASES for f in (wrong_type, out_of_range, named_wrong, bad_model)]
    per_kind += [bad_location(kind, roots) for kind in LOCATIONS]
    per_kind += [oversized(kind) for kind in BASES] if big else []
    not_object = st.one_of(st.lists(st.integers(), max_size=3), st.integers(), text, st.none(), st.booleans())
    return st.one_of(*per_kind, not_object)


def schedule_jobs() -> st.SearchStrategy[Spec]:
    """Hostile specs as a schedule entry's job: a missing kind means train there, and weights are checked against
    the trust ledger only when beat submits (not at load), so neither is drawn."""
    per_kind = [f(kind) for kind in BASES for f in (wrong_type, out_of_range, named_wrong)]
    per_kind += [bad_location(kind) for kind in LOCATIONS] + [bad_model("train")]
    return st.one_of(per_kind).filter(lambda s: "kind" in s)


def cli_args(roots: tuple[Path, ...] = ()) -> st.SearchStrategy[list[str]]:
    """``yoloq submit probe|train ...`` argument lists with one thing wrong as text (numbers that do not parse or are
    out of range, bad tier, team or label, unknown option, bad location), at most 100 KB (argv's limit is 128 KiB)."""
    probe = ["submit", "probe", "--team", "vision", "--tier", "low", "--seconds", "1"]
    train = ["submit", "train", "--team", "vision", "--tier", "low", "--data", f"s3://{BUCKET}/d/", "--epochs", "1"]

    def swap(args: list[str], option: str, value: str) -> list[str]:
        out = list(args)
        if option in out:
            out[out.index(option) + 1] = value
        else:
            out += [option, value]
        return out

    numbers = st.one_of(text.filter(lambda t: not _parses_as_int(t)), st.integers(max_value=-1).map(str),
                        st.integers(min_value=7 * 24 * 3600 + 1).map(str))  # fmt: skip
    return st.one_of(
        numbers.map(lambda v: swap(probe, "--seconds", v)),
        text.filter(lambda t: not _is_tier(t)).map(lambda v: swap(probe, "--tier", v)),
        text.filter(lambda t: not _TEAM.fullmatch(t)).map(lambda v: swap(probe, "--team", v)),
        st.builds(lambda a, c: swap(probe, "--name", a + c), text, controls),
        st.builds(
            lambda o, v: [*probe, f"--{o}", v],
            st.text("abcdefghij-", min_size=1, max_size=12).filter(
                lambda o: o not in ("team", "tier", "name", "memory-gb", "json", "seconds", "help")
            ),
            text,
        ),
        locations(roots).filter(lambda loc: len(loc) < 100_000).map(lambda v: swap(train, "--data", v)),
        st.sampled_from(["-1", "0", "193", "nan", "inf", "1e400"]).map(lambda v: swap(probe, "--memory-gb", v)),
    )


SCHEDULE_KEYS = {"schedules", "builtin", "cron", "every", "enabled", "job", "keep_last", "finished_days",
                 "window_hours", "max_temperature_c", "gpu_health", "checkpoint_gc", "sla_report"}  # fmt: skip
BAD_TIMINGS: list[Spec] = [
    {"cron": "61 * * * *"}, {"cron": "* * *"}, {"cron": "@reboot"}, {"every": "5 fortnights"}, {"every": 0},
    {"every": -5}, {"every": "1y"}, {"every": True}, {"cron": "0 2 * * *", "every": 60}, {"every": None},
    {"cron": 5}, {"every": 10**12},
]  # fmt: skip
_ENTRY_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


@st.composite
def bad_schedule_doc(draw: Draw) -> Any:
    """A schedule document (before YAML) with one thing wrong: its job, timing, entry name, a key or its shape."""
    entry: Spec = {"every": 3600, "job": BASES["probe"]}
    harm = draw(st.sampled_from(["job", "timing", "name", "key", "shape"]))
    if harm == "job":
        return {"schedules": {"nightly": {"every": 3600, "job": draw(schedule_jobs())}}}
    if harm == "timing":
        return {"schedules": {"nightly": {**entry, **draw(st.sampled_from(BAD_TIMINGS))}}}
    if harm == "name":
        return {"schedules": {draw(text.filter(lambda n: _ENTRY_NAME.fullmatch(n) is None)): entry}}
    if harm == "key":
        key = draw(text.filter(lambda k: k not in SCHEDULE_KEYS))
        where = draw(st.sampled_from(["top", "entry", "builtin", "builtin-section"]))
        return {
            "top": {"schedules": {"nightly": entry}, key: 1},
            "entry": {"schedules": {"nightly": {**entry, key: 1}}},
            "builtin": {"builtin": {"checkpoint_gc": {key: 1}}},
            "builtin-section": {"builtin": {key: {}}},
        }[where]
    return draw(st.sampled_from([[1, 2], "text", 5, {"schedules": [entry]}, {"schedules": "nightly"},
                                 {"schedules": {"nightly": [1]}}, {"builtin": [1]}]))  # fmt: skip


def hostile_schedules() -> st.SearchStrategy[tuple[str, bytes]]:
    """A schedule file (suffix, bytes) that ``yoloq beat`` must refuse."""
    as_yaml = st.tuples(st.sampled_from([".yaml", ".yml"]), bad_schedule_doc().map(_yaml))
    return st.one_of(as_yaml, syntax_junk())


def _yaml(doc: Any) -> bytes:
    return yaml.safe_dump(doc, allow_unicode=True).encode()


def syntax_junk() -> st.SearchStrategy[tuple[str, bytes]]:
    """Files no parser may accept or that blow up a naive one."""
    laughs = "".join(f"{c}: &{c} [{', '.join(['*' + p] * 9 if p else ['lol'] * 9)}]\n"
                     for p, c in zip(["", *"abcdefgh"], "abcdefghi", strict=True))  # fmt: skip
    return st.one_of(
        st.binary(max_size=200).map(lambda b: (".yaml", b"\xff" + b)),
        st.sampled_from(
            [
                (".yaml", b"schedules: !!python/object/apply:os.system ['touch /tmp/yoloq-hostile-yaml']\n"),
                (".yaml", b"schedules: !!python/name:os.system\n"),
                (".yaml", laughs.encode() + b"schedules: *i\n"),
                (".yaml", b"schedules: " + b"[" * 50_000 + b"]" * 50_000 + b"\n"),
                (".yaml", b"schedules:\n  a: {every: 60, job: {kind: probe, team: x}}\n  a: {every: 60}\n"),
                (".yaml", b"schedules: {a: {every: 60, job: {kind: probe, team: vision}}}\n" + b"#" * (1 << 20)),
                (".toml", b"a = " + b"[" * 50_000 + b"]" * 50_000 + b"\n"),
                (".toml", b"[schedules.x]\nevery = 60\nevery = 61\n"),
                (".json", json.dumps({"schedules": {}}).encode()),
            ]
        ),
        text.map(lambda t: (".toml", (t + "\n[[[\n").encode())),
    )
