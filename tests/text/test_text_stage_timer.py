"""beam_jobs/stage_timer.py: per-stage milliseconds in Beam counters keep the fractions of each call."""
from __future__ import annotations

import time

import apache_beam as beam
from apache_beam.internal import pickler
from apache_beam.testing.test_pipeline import TestPipeline

from moshi_data.beam_jobs.run_results import stage_seconds
from moshi_data.beam_jobs.stage_timer import StageTimer
from text_helpers import IN_PROCESS

NAMESPACE = "stage_timer_test"


class _Spend(beam.DoFn):
    """Adds each of ``calls`` seconds to ``stage`` for every element, through the DoFn's own timer."""

    def __init__(self, stage: str, calls: list[float]):
        self.stage, self.calls = stage, calls
        self.timer = StageTimer(NAMESPACE)

    def process(self, item):
        for seconds in self.calls:
            self.timer.add(self.stage, seconds)
        yield item


class _Sleep(beam.DoFn):
    def __init__(self):
        self.timer = StageTimer(NAMESPACE)

    def process(self, item):
        with self.timer.time("block"):
            time.sleep(0.003)
        yield item


def test_counters_carry_the_fractions_of_a_millisecond_from_call_to_call():
    pipeline = TestPipeline(argv=IN_PROCESS)
    item = pipeline | beam.Create(["x"])
    cases = {"many": [0.0004] * 10_000,  # rounded down per call this counted 0
             "lone": [0.0006],  # counted in the call's own bundle: nothing waits for a flush
             "halves": [0.0025, 0.0025],  # 2.5 ms counts 3, the next 2.5 ms 2: 5 in all
             "small": [0.0004] * 3,  # 1.2 ms counts 1
             "tail": [0.0004]}  # under 0.5 ms in all: what a DoFn instance may leave uncounted
    for stage, calls in cases.items():
        _ = item | stage >> beam.ParDo(_Spend(stage, calls))
    _ = item | "sleep" >> beam.ParDo(_Sleep())
    result = pipeline.run()
    result.wait_until_finish()
    seconds = stage_seconds(result, NAMESPACE)
    assert abs(seconds.pop("many") - 4.0) <= 0.001
    assert seconds.pop("block") >= 0.003
    assert seconds == {"lone": 0.001, "halves": 0.005, "small": 0.001}


def test_a_timer_pickles_with_its_carries():
    timer = StageTimer(NAMESPACE)
    timer.add_all({"read": 0.0004, "write": 0.0012})
    copy = pickler.loads(pickler.dumps(timer))
    assert copy.namespace == NAMESPACE and copy.carry_ms == timer.carry_ms
    assert abs(copy.carry_ms["read"] - 0.4) < 1e-9 and abs(copy.carry_ms["write"] - 0.2) < 1e-9
    assert sorted(copy.counters) == ["write"]  # the counter handles created before pickling (read counted 0 ms)
