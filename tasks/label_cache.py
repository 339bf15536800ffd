"""Ultralytics' label caches, read without pickle's code execution (the flaw of issue 15 item 1b, in datasets).

Ultralytics keeps the parsed labels of each split in ``labels/<split>.cache``. That file is a dict written with
``np.save`` and read back with ``np.load(allow_pickle=True)``, which unpickles whatever the file holds: even a plain
pickle with no ``.npy`` header at all. The file sits beside the dataset, in a data root or in the worker's copy of an
``s3://`` dataset prefix, so whoever can write to the bucket or to the root could plant one, and a train job on
that dataset would run its code. :func:`install` swaps Ultralytics' reader in the job process for :func:`read`. It
accepts only the ``.npy`` format of a dict, and its unpickler builds nothing but NumPy arrays, dtypes and scalars
(plus the plain containers pickle builds without naming a class). Ultralytics treats any other file as a stale
cache and rebuilds it from the labels.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np

# What np.save's pickle of a dict of lists, strings, numbers and arrays names (numpy 1.x and 2.x module paths).
ALLOWED = frozenset({
    ("numpy", "ndarray"), ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
})  # fmt: skip


class _ArraysOnly(pickle.Unpickler):
    """An unpickler that resolves only :data:`ALLOWED`: ``os.system``, ``open``, ``eval`` are unreachable."""

    def find_class(self, module: str, name: str) -> Any:
        """The class or function a pickle names, if it is one a label cache may hold."""
        if (module, name) not in ALLOWED:
            raise pickle.UnpicklingError(f"{module}.{name} is not allowed in a label cache")
        return super().find_class(module, name)


def read(path: str | Path) -> dict[str, Any]:
    """A label cache's dict; any other content (no ``.npy`` header, a foreign class, not a dict) raises."""
    with Path(path).open("rb") as handle:
        version = np.lib.format.read_magic(handle)  # ValueError without the .npy magic: a bare pickle never loads
        if version == (1, 0):
            shape, _, dtype = np.lib.format.read_array_header_1_0(handle)
        elif version == (2, 0):
            shape, _, dtype = np.lib.format.read_array_header_2_0(handle)
        else:
            raise ValueError(f"label cache {path}: unsupported .npy version {version}")
        if shape != () or not dtype.hasobject:
            raise ValueError(f"label cache {path}: not one pickled object")
        array = _ArraysOnly(handle).load()
    value = array.item() if isinstance(array, np.ndarray) and array.shape == () else None
    if not isinstance(value, dict):
        raise ValueError(f"label cache {path}: not a dict")
    return value


def install() -> None:
    """Make this process's Ultralytics read label caches with :func:`read` (its datasets import the reader by name)."""
    from ultralytics.data import dataset, utils

    dataset.load_dataset_cache_file = utils.load_dataset_cache_file = read
