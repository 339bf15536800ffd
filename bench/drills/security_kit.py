"""The security drill's checks of where secrets go: the source (no literal credential, no credential read from the
environment but through settings), the argv of every process the stack starts (an audit hook on ``subprocess.Popen``
in this process, and /proc for what its children start), the environment of job processes, and every log file; and
the network check's launcher (a namespace with only loopback, tests in bench/drills/offline_child.py)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psutil

from workers.stack import Services

ROOT = Path(__file__).resolve().parents[2]
CODE = ("yoloq", "tasks", "workers", "routing", "infra", "celeryconfig.py", "docker-compose.yml")
SUFFIXES = {".py", ".yml", ".yaml", ".toml", ".json", ".env", ".cfg", ".ini", ".sh"}
LITERALS = {
    "password in a Redis URL": re.compile(r"rediss?://[^:/@\s'\"]*:(?!\.\.\.@|\*+@)[^@\s'\"{$]+@"),
    "credential assigned a literal": re.compile(
        r"(?i)\b\w*(password|passwd|secret|token|access_key|secret_key)\w*\s*[:=]\s*['\"][A-Za-z0-9+/_\-]{8,}['\"]"
    ),
    "AWS access key id": re.compile(r"AKIA[0-9A-Z]{16}"),
    "credential read from the environment": re.compile(
        r"(os\.environ|getenv)\W+['\"](AWS_|REDIS_|S3_|FLOWER_|\w*(PASSWORD|SECRET|TOKEN))"
    ),
}
SETTINGS_MODULE = Path("infra/settings.py")  # the one place that reads configuration from the environment
_LOCK = threading.Lock()
_WATCHING: list[list[tuple[str, list[str], list[str]]]] = []  # active recorders of subprocess.Popen (argv, env)


def secrets_of(services: Services) -> dict[str, str]:
    """The stack's secrets by name: Redis password, S3 secret key, API token, Flower password."""
    settings = services.settings
    found = {
        "redis password": urlsplit(settings.redis_url).password or "",
        "S3 secret key": settings.s3_secret_key.get_secret_value(),
        "API token": settings.api_token.get_secret_value(),
        "Flower password": settings.flower_basic_auth.get_secret_value().partition(":")[2],
    }
    return {name: value for name, value in found.items() if len(value) >= 8}


def scan_code() -> tuple[int, list[str]]:
    """Files scanned and every line that holds a literal credential or reads one from the environment."""
    files = [p for top in CODE for p in ((ROOT / top).rglob("*") if (ROOT / top).is_dir() else [ROOT / top])
             if p.is_file() and (p.suffix in SUFFIXES or p.name.startswith("Dockerfile"))]  # fmt: skip
    findings = []
    for path in files:
        rel = path.relative_to(ROOT)
        for n, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            for what, pattern in LITERALS.items():
                if pattern.search(line) and not (what.endswith("environment") and rel == SETTINGS_MODULE):
                    findings.append(f"{rel}:{n}: {what}: {line.strip()[:120]}")
    return len(files), findings


def _on_audit(event: str, args: tuple[Any, ...]) -> None:
    if event == "subprocess.Popen" and _WATCHING:
        argv = [str(a) for a in (args[1] if isinstance(args[1], list | tuple) else [args[1]])]
        env = [f"{k}={v}" for k, v in (args[3] or {}).items()] if len(args) > 3 and isinstance(args[3], dict) else []
        with _LOCK:
            for recorder in _WATCHING:
                recorder.append((argv[0] if argv else "?", argv, env))


@dataclass
class Started:
    """Every process started from this process while it is open: (program, argv, environment as NAME=value)."""

    seen: list[tuple[str, list[str], list[str]]] = field(default_factory=list)

    def __enter__(self) -> Started:
        if not getattr(sys, "_yoloq_drill_audit", False):  # an audit hook cannot be removed: install it once
            sys.addaudithook(_on_audit)
            sys._yoloq_drill_audit = True  # type: ignore[attr-defined]
        _WATCHING.append(self.seen)
        return self

    def __exit__(self, *_: object) -> None:
        _WATCHING.remove(self.seen)


def argv_leaks(started: Started, secrets: dict[str, str]) -> list[str]:
    """Secrets in the argv of a started process (readable by every local user through ps and /proc), or in its
    environment under a name that is not a yoloq setting (settings travel as YOLOQ_* variables, readable by the
    process's owner only)."""
    out = []
    for program, argv, env in started.seen:
        line = " ".join(argv)
        out += [f"{name} in the argv of {Path(program).name}" for name, s in secrets.items() if s in line]
        for item in env:
            key, _, value = item.partition("=")
            out += [f"{name} in {Path(program).name}'s ${key}" for name, s in secrets.items()
                    if s in value and not key.startswith("YOLOQ_")]  # fmt: skip
    return sorted(set(out))


def live_leaks(secrets: dict[str, str], job_secrets: tuple[str, ...]) -> tuple[int, int, list[str]]:
    """Every live descendant of this process: a secret in its command line, or (a job process) a secret a job must
    not hold in its environment. Returns (processes, job processes, leaks)."""
    found, jobs, leaks = 0, 0, []
    for proc in psutil.Process().children(recursive=True):
        try:
            cmdline, environ = " ".join(proc.cmdline()), proc.environ()
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        found += 1
        leaks += [f"{name} in the command line of {cmdline[:80]}" for name, s in secrets.items() if s in cmdline]
        if "job_process" in cmdline:
            jobs += 1
            leaks += [f"{name} in the environment of job process {proc.pid}" for name in job_secrets
                      if name in secrets and any(secrets[name] in v for v in environ.values())]  # fmt: skip
    return found, jobs, sorted(set(leaks))


def log_leaks(home: Path, secrets: dict[str, str]) -> tuple[int, list[str]]:
    """Log files under the stack's home scanned, and each secret found in one."""
    files = [p for p in home.rglob("*") if p.is_file() and (p.suffix == ".log" or "logs" in p.parts)]
    leaks = []
    for path in files:
        data = path.read_bytes()[: 64 << 20]
        leaks += [f"{name} in {path.relative_to(home)}" for name, s in secrets.items() if s.encode() in data]
    return len(files), leaks


def no_network_prefix() -> tuple[list[str], str]:
    """How to take the network away here: a user and network namespace with only loopback up (``unshare -rn``),
    or, where namespaces are not allowed, nothing (the audit hook still records every attempt)."""
    unshare, ip = shutil.which("unshare"), shutil.which("ip")
    for flags in ("-rn", "-n"):
        if unshare and ip and subprocess.run([unshare, flags, ip, "link", "set", "lo", "up"], capture_output=True,
                                             check=False).returncode == 0:  # fmt: skip
            return [unshare, flags, "sh", "-c", f'"{ip}" link set lo up && exec "$0" "$@"'], f"unshare {flags}"
    return [], "audit hook only (no network namespace here)"


def offline_run(mode: str, timeout_s: float) -> tuple[dict[str, Any], str]:
    """``bench.drills.offline_child MODE`` with the network removed; its report and how the network was removed."""
    prefix, how = no_network_prefix()
    with tempfile.TemporaryDirectory(prefix="yoloq-drill-offline-") as tmp:
        out = Path(tmp) / "report.json"
        argv = [*prefix, sys.executable, "-m", "bench.drills.offline_child", str(out), mode]
        env = {k: v for k, v in os.environ.items() if not k.startswith("YOLOQ_")}
        done = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout_s, check=False)
        if not out.exists():
            return {"state": "no report", "error": f"exit {done.returncode}: {done.stderr[-600:]}"}, how
        report: dict[str, Any] = json.loads(out.read_text())
    return report, how
