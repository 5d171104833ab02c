"""Give the C heap's free pages back to the operating system between work items of a long bundle.

Why (measured on the text job, docs/text-corpus.md "Scale"): an SDK worker process runs many
chunks one after the other, often in one bundle (on the local runner a worker's whole share). glibc's
malloc keeps the pages of freed blocks inside its heaps; with many blocks freed and a few
longer-lived ones left between them (most likely the per-chunk unpickled documents and numpy
arrays), the heaps' free space grows with the bundle's length although the live memory does not:
at 800k documents a worker's malloc'd live memory after the main stage was the same as at 50k
(130-150 MB) while its heaps held 420-450 MB of free space (160-180 MB at 50k). Production
workers run the same CPython and glibc, so this is the job's to handle, not the local runner's.
``malloc_trim(0)`` hands back every whole free page of every heap (glibc >= 2.8), without moving
anything; where there is no glibc (macOS, musl, Windows) ``release_free_heap`` does nothing. The text job
calls it after each chunk unless ``worker_memory.release_free_heap`` is false.
"""
from __future__ import annotations

import ctypes


def _malloc_trim():
    try:
        trim = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError, TypeError):  # not glibc (TypeError: no CDLL(None) on Windows)
        return None
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    return trim


_MALLOC_TRIM = _malloc_trim()


def release_free_heap() -> bool:
    """Return the free pages of the C heaps to the OS; False where that is not possible (no glibc)."""
    if _MALLOC_TRIM is None:
        return False
    _MALLOC_TRIM(0)
    return True
