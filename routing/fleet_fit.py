"""Whether any GPU of the fleet can hold a job at all: asked at the door (submit) and by the supervisor each tick.

A job that needs more memory than the fleet's largest GPU would wait forever, hold a place in the queue depth the
autoscaler and KEDA read, and inherit whatever reason the job before it got. The fleet's largest GPU is a fact the
supervisor sees in every snapshot; 0 means "not known" (no live worker yet, a fleet scaled to zero, no supervisor),
and then nothing is refused: the autoscaler may still bring the right GPU.
"""

from __future__ import annotations


def too_big(need_mib: int, largest_mib: int) -> str | None:
    """Why no GPU of a fleet whose largest device has ``largest_mib`` can hold a job, or None when one can."""
    if largest_mib <= 0 or need_mib <= largest_mib:
        return None
    return f"needs {need_mib} MiB of GPU memory; the largest GPU in the fleet has {largest_mib} MiB"
