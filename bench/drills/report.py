"""docs/reliability.md's drill table, rebuilt from bench/results/drill_*.json between two marker lines."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.drills.outcome import read_all

DOC = Path(__file__).resolve().parents[2] / "docs" / "reliability.md"
BEGIN, END = "<!-- drills:begin (bench/drills/report.py) -->", "<!-- drills:end -->"


def _recover(row: dict[str, Any]) -> str:
    spread = row.get("recover_s") or {}
    if not spread:
        return "—"
    return f"{spread['p50']:.1f} s p50, {spread['max']:.1f} s max ({row.get('recovery', '')})"


def _baseline(row: dict[str, Any]) -> str:
    base = row.get("baseline") or {}
    if "note" in base:
        return str(base["note"])
    return "; ".join(f"{k}: {v}" for k, v in base.items()) or "—"


def table(rows: list[dict[str, Any]]) -> list[str]:
    """The Markdown table: one row per drill."""
    lines = ["| drill | faults injected | jobs | lost | duplicated | recovered | time to recover | plain Celery, "
             "same fault | result | reproduce |", "|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for row in rows:
        verdict = "passed" if row.get("passed") else "**FAILED**: " + "; ".join(row.get("problems", []))[:300]
        lines.append(f"| {row['name']} | {row['faults']} | {row['jobs']} | {row['lost']} | {row['duplicated']} | "
                     f"{row['recovered']} | {_recover(row)} | {_baseline(row)} | {verdict} ({row['at']}, "
                     f"{row['seconds']:.0f} s) | `{row['command']}` |")  # fmt: skip
    return lines


def rebuild(doc: Path = DOC) -> Path:
    """Replace the table between the markers (appended with them when missing)."""
    text = doc.read_text() if doc.exists() else "# Reliability drills\n"
    block = "\n".join([BEGIN, *table(read_all()), END])
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        text = head + block + rest.split(END, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    doc.write_text(text)
    return doc
