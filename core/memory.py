"""Give freed heap memory back to the operating system.

The IG stage allocates many short-lived tensors of varying sizes; with glibc's malloc they fragment
the heap and the process's resident memory only grows (measured: +571 MB after a 6-layer fit on 16
images, +53 MB with a trim after every IG chunk). ``malloc_trim(0)`` returns the free pages.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys
from functools import lru_cache


@lru_cache(maxsize=1)
def _trim():
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return libc.malloc_trim
    except (OSError, AttributeError):  # not glibc (e.g. musl): nothing to do
        return None


def release_free_memory() -> None:
    trim = _trim()
    if trim is not None:
        trim(0)
