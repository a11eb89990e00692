"""The C allocator's one setting a gateway process changes: glibc's mmap threshold.

Contract:

- :func:`fix_mmap_threshold` sets glibc's ``M_MMAP_THRESHOLD`` (``mallopt``) to ``threshold``
  bytes for the whole process, and says whether it did: ``False`` for ``0`` (leave glibc's
  default) and where the C library has no ``mallopt`` or refuses (not glibc). Calling it again
  is harmless. The app's lifespan calls it with ``[server] malloc_mmap_threshold_bytes``.

Why: a block of at least the threshold (initially 128 KiB) is its own ``mmap``, returned to the
system when freed — vendor pages, their bodies and decoded rows are such blocks. But glibc
raises the threshold to the size of each mapped block freed (up to 32 MiB): after the first big
page is freed, later ones come from the heap, whose holes stay in the process's RSS once they
are freed. Setting the threshold fixes it (and turns that adjustment off). In-process, the
bench's 10,000-id search: RSS per cached annotation 993-1,029 → 928-938 B (the live data, ~800
B, is unchanged; ``bench/results/analysis.md``).
"""

from __future__ import annotations

import ctypes

__all__ = ["M_MMAP_THRESHOLD", "fix_mmap_threshold"]

M_MMAP_THRESHOLD = -3
"""glibc's ``mallopt`` parameter number (``malloc.h``)."""


def fix_mmap_threshold(threshold: int) -> bool:
    """Set glibc's mmap threshold to ``threshold`` bytes; whether it was set (see the contract)."""
    if threshold <= 0:
        return False
    try:
        libc = ctypes.CDLL(None)  # the process's own C library
    except OSError:
        return False
    mallopt = getattr(libc, "mallopt", None)
    if mallopt is None:
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, threshold))
