"""Keep the fit's resident memory close to what it actually holds (glibc's malloc; no-ops elsewhere).

The IG stage allocates and frees many short-lived tensors of a few MB each, of varying sizes. glibc
serves them from its heap once its *dynamic* mmap threshold has grown past their size, and a heap
fragmented by varying sizes is not given back: measured on a 6-layer fit of 16 images, RSS +571 MB
after the fit without any care, +53 MB with a trim after every IG chunk, and a peak within an IG
stage of +350 to +780 MB (run to run) with the trim alone.

* :func:`release_free_memory` (``malloc_trim(0)``) returns free heap pages; the engine calls it after
  every IG chunk.
* :func:`mmap_large_allocations` fixes the mmap threshold: every allocation above it gets its own
  mapping, returned to the OS the moment it is freed, so the peak stays near the live memory
  (+170 MB in the same measurement at 2 MB) at the cost of page faults on each new mapping (about
  a third more wall time in that IG-bound fit). It is process-wide and stays in force, so the library
  never sets it: the processes that run fits call :func:`malloc_for_fit` before each job, with the
  job's preset (``neurflow run``, the service's workers, the bench's engine runs); the fast preset
  trades a higher peak for fewer page faults.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys
from functools import lru_cache

M_MMAP_THRESHOLD = -3  # mallopt parameter number (malloc.h)


@lru_cache(maxsize=1)
def _libc():
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.malloc_trim  # noqa: B018 - glibc only (musl has neither function)
        libc.mallopt  # noqa: B018
        return libc
    except (OSError, AttributeError):
        return None


def release_free_memory() -> None:
    libc = _libc()
    if libc is not None:
        libc.malloc_trim(0)


#: (mmap threshold, trim threshold) in bytes that a process sets for a fit of each preset. ``exact``
#: keeps the peak near the live memory: every allocation above 2 MB is its own mapping (glibc's trim
#: threshold stays at its 128 kB default). ``fast`` takes glibc's largest mmap threshold, 32 MB, and
#: lets up to 128 MB of free heap stay mapped between frees (the engine still trims after every IG
#: chunk), so that a fit's recurring tensors are reused instead of being page-faulted in afresh on
#: every allocation: at 224 px a ResNet-50's activations and IG rows are such tensors (one thread,
#: docs/speed.md: readout 0.24-0.30 s per patch at 2 MB, 0.17 s with the fast setting; IG 60 against
#: 38-45 ms per (neuron, patch) pair through a ``layer4`` bottleneck), for a higher peak.
FIT_MALLOC: dict[str, tuple[int, int]] = {"exact": (2 * 2**20, 128 * 2**10), "fast": (32 * 2**20, 128 * 2**20)}
M_TRIM_THRESHOLD = -1  # mallopt parameter number (malloc.h)


def malloc_for_fit(preset: str) -> bool:
    """Set this process's mmap and trim thresholds for a fit of ``preset`` (:data:`FIT_MALLOC`); both
    are process-wide, so every job sets its own. Returns whether the setting took effect."""
    mmap_bytes, trim_bytes = FIT_MALLOC[preset]
    libc = _libc()
    return bool(mmap_large_allocations(mmap_bytes) and libc.mallopt(M_TRIM_THRESHOLD, trim_bytes) == 1)


def mmap_large_allocations(threshold_bytes: int = 2 * 1024 * 1024) -> bool:
    """Serve allocations larger than ``threshold_bytes`` with their own mappings from now on.
    Returns whether the setting took effect."""
    libc = _libc()
    return bool(libc is not None and libc.mallopt(M_MMAP_THRESHOLD, int(threshold_bytes)) == 1)
