"""Pin numpy's OpenBLAS to one thread, so the streaming step is the single-thread step it claims to be.

OpenBLAS splits even a 1024x512 matrix-vector product across cores; on a small shared box that
buys a few microseconds at the median and costs wake-up jitter in the tail, and it competes
with the audio/MIDI threads. There is no numpy API for this (threadpoolctl is not a
dependency), so this finds the OpenBLAS that numpy loaded and calls its setter via ctypes.
"""

from __future__ import annotations

import ctypes
import logging
from pathlib import Path

import numpy as np  # noqa: F401  (ensures numpy's BLAS is loaded before we look for it)

log = logging.getLogger(__name__)

_SETTERS = ("scipy_openblas_set_num_threads64_", "scipy_openblas_set_num_threads", "openblas_set_num_threads64_", "openblas_set_num_threads")
_GETTERS = ("scipy_openblas_get_num_threads64_", "scipy_openblas_get_num_threads", "openblas_get_num_threads64_", "openblas_get_num_threads")


def _loaded_openblas() -> list[str]:
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:
        return []
    return sorted({line.split()[-1] for line in maps.splitlines() if "openblas" in line.lower() and line.split()[-1].startswith("/")})


def limit_blas_threads(n: int = 1) -> int | None:
    """Set numpy's OpenBLAS thread count; returns the count now in force, or None if not found."""
    for path in _loaded_openblas():
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        setter = next((getattr(lib, s) for s in _SETTERS if hasattr(lib, s)), None)
        getter = next((getattr(lib, s) for s in _GETTERS if hasattr(lib, s)), None)
        if setter is None:
            continue
        setter(int(n))
        return int(getter()) if getter is not None else n
    log.debug("no OpenBLAS found in this process; BLAS thread count left alone")
    return None
