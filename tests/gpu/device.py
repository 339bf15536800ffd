"""Whether this machine has an NVIDIA GPU that NVML answers for: the gpu tests' skip condition, read once.

NVML (never torch.cuda) decides, so the check itself cannot create a CUDA context in the pytest process.
"""

from __future__ import annotations

import functools

import pytest

from bench.gpu.nvml import Nvml


@functools.cache
def missing() -> str | None:
    """Why the gpu tests cannot run here, or None when a device is present."""
    nvml = Nvml()
    try:
        if not nvml.ok:
            return nvml.why
        return None if nvml.count() > 0 else "NVML reports no GPU"
    finally:
        nvml.close()


def marks() -> list[pytest.MarkDecorator]:
    """``pytestmark`` of every gpu test module: the marker, and a clean skip without a device."""
    return [pytest.mark.gpu, pytest.mark.skipif(missing() is not None, reason=f"needs an NVIDIA GPU: {missing()}")]
