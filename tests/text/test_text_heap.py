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


def test_stage_milliseconds_carry_their_fractions_from_chunk_to_chunk(monkeypatch):
    """A stage under 1 ms a chunk (the heap trim) still adds up: 0.4 ms x 5 chunks counts 2 ms, not 0."""
    from collections import Counter

    from moshi_data.beam_jobs import text_corpus

    counted: Counter = Counter()

    class Recorder:
        def __init__(self, stage):
            self.stage = stage

        def inc(self, n):
            counted[self.stage] += n

    monkeypatch.setattr(text_corpus, "_timer", Recorder)
    process = text_corpus.ProcessChunks.__new__(text_corpus.ProcessChunks)
    process.unreported_ms = Counter()
    for _ in range(5):
        process.count_milliseconds(Counter({"heap_trim": 0.0004, "language": 0.0125}))
    assert counted == {"heap_trim": 2, "language": 62}
