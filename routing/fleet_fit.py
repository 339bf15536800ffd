"""Whether any GPU of the fleet can hold a job at all: asked at the door (submit) and by the supervisor each tick.

A job that needs more memory than the fleet's largest GPU would wait forever, hold a place in the queue depth the
autoscaler and KEDA read, and inherit whatever reason the job before it got. "The fleet" is every GPU size seen in
the last :data:`SEEN_WINDOW_S`: under a live worker (the supervisor records those) or in an autoscaler's inventory
(it may start that worker at any time), so a pool scaled to zero for the night still counts in the morning. Nothing
seen in the window means "not known", and then nothing is refused.
"""

from __future__ import annotations

from collections.abc import Mapping

SEEN_WINDOW_S = 24 * 3600.0


def largest_seen(seen: Mapping[int, float], now: float, window_s: float = SEEN_WINDOW_S) -> int:
    """The biggest GPU size (MiB) seen within ``window_s`` of ``now`` (``seen``: size → last seen), or 0."""
    return max((mib for mib, at in seen.items() if now - at <= window_s), default=0)


def too_big(need_mib: int, largest_mib: int, where: str = "in the fleet") -> str | None:
    """Why no GPU whose biggest is ``largest_mib`` can hold a job, or None when one can (or nothing is known)."""
    if largest_mib <= 0 or need_mib <= largest_mib:
        return None
    return f"needs {need_mib} MiB of GPU memory; the largest GPU {where} has {largest_mib} MiB"
