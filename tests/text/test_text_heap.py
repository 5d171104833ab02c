"""beam_jobs/heap.py: free heap pages between live blocks go back to the OS (glibc)."""
import ctypes

import pytest

from moshi_data.beam_jobs import heap
from moshi_data.beam_jobs.heap import release_free_heap


def _rss_mb() -> float:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * 4096 / 2**20


@pytest.mark.skipif(heap._MALLOC_TRIM is None, reason="no glibc malloc_trim here")
def test_release_free_heap_returns_the_pages_between_live_blocks():
    release_free_heap()  # start from a trimmed heap
    blocks = [ctypes.create_string_buffer(16 * 1024) for _ in range(4096)]  # 64 MB of malloc'd 16 KB blocks
    kept = blocks[15::16]  # one live block in 16 pins the heap: glibc cannot shrink it from the top
    del blocks
    before = _rss_mb()
    assert release_free_heap() is True
    after = _rss_mb()
    assert before - after > 40, (before, after)  # ~60 MB of free pages were resident
    assert all(len(block) == 16 * 1024 for block in kept)

