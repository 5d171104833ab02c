"""Per-stage CPU time of a DoFn in whole-millisecond Beam counters (``ms_<stage>``, read back by
``run_results.stage_seconds``), without losing the fractions of a millisecond of each call."""
from __future__ import annotations

import math
import time
from contextlib import contextmanager
from typing import Iterator, Mapping

from apache_beam.metrics import Metrics

from moshi_data.beam_jobs.run_results import STAGE_COUNTER_PREFIX


class StageTimer:
    """The ``ms_<stage>`` counters of ``namespace`` for one DoFn instance (create one per DoFn, in
    ``__init__`` or ``setup``: it pickles as its namespace, its carries and the counters it has created so far:
    Beam counter handles, a metric name each, no counts).

    Each call adds seconds to a stage; the stage's counter then holds its seconds so far rounded to the
    nearest millisecond, the difference carried to the next call (-0.5 to 0.5 ms, kept across bundles
    since a worker reuses a DoFn instance). So 10,000 calls of 0.4 ms count 4000 ms, not 0, and
    nothing waits for the end of a bundle: each bundle commits what its calls added, and what a
    DoFn instance has counted when it is torn down is within 0.5 ms per stage of its time spent (either way)."""

    def __init__(self, namespace: str):
        self.namespace = namespace
        self.carry_ms: dict[str, float] = {}  # stage -> milliseconds spent minus milliseconds counted
        self.counters: dict = {}

    def add(self, stage: str, seconds: float) -> None:
        """Counts ``seconds`` spent in ``stage`` (measured by the caller)."""
        total = self.carry_ms.get(stage, 0.0) + seconds * 1000
        whole = math.floor(total + 0.5)  # >= 0: the carry is >= -0.5 ms and time spent is >= 0
        self.carry_ms[stage] = total - whole
        if whole > 0:
            if stage not in self.counters:
                self.counters[stage] = Metrics.counter(self.namespace, f"{STAGE_COUNTER_PREFIX}{stage}")
            self.counters[stage].inc(whole)

    def add_all(self, seconds: Mapping[str, float]) -> None:
        """Counts a mapping of stage -> seconds (e.g. a chunk's ``ChunkProcessor`` timings)."""
        for stage, spent in seconds.items():
            self.add(stage, spent)

    @contextmanager
    def time(self, stage: str) -> Iterator[None]:
        """``with timer.time("write"): ...`` counts the block's wall time to ``stage`` (also when it raises)."""
        start = time.perf_counter()
        try:
            yield
        finally:
            self.add(stage, time.perf_counter() - start)
