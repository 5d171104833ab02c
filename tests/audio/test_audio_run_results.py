"""beam_jobs/run_results.py, what both jobs' launchers read back: stage seconds and the first rejects."""
from __future__ import annotations

import json

import apache_beam as beam
from apache_beam.metrics import Metrics

from moshi_data.beam_jobs.run_results import first_rejects, stage_seconds


class _Spend(beam.DoFn):
    def __init__(self, stage: str, ms: int):
        self.stage, self.ms = stage, ms

    def process(self, item):
        Metrics.counter("run_results_test", f"ms_{self.stage}").inc(self.ms)
        Metrics.counter("run_results_test", "documents").inc()  # not a stage
        yield item


def test_stage_seconds_sum_every_step_that_spends_in_a_stage():
    pipeline = beam.Pipeline(runner="DirectRunner")
    items = pipeline | beam.Create([1, 2, 3])
    _ = items | "A" >> beam.ParDo(_Spend("decode", 250)) | "B" >> beam.ParDo(_Spend("decode", 500))
    _ = items | "C" >> beam.ParDo(_Spend("diarize", 1001))
    result = pipeline.run()
    result.wait_until_finish()
    assert stage_seconds(result, "run_results_test") == {"decode": 2.25, "diarize": 3.003}
    assert stage_seconds(result, "another_job") == {}


def test_first_rejects_read_parts_in_name_order_and_stop_at_the_limit(tmp_path):
    lines = [{"id": f"r{i}", "reason": "decode_error"} for i in range(5)]
    (tmp_path / "part-000001.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines[2:]))
    (tmp_path / "part-000000.jsonl").write_text(json.dumps(lines[0]) + "\n\n" + json.dumps(lines[1]) + "\n")
    (tmp_path / "notes.txt").write_text("not a reject part\n")
    assert first_rejects(str(tmp_path), 3) == lines[:3]
    assert first_rejects(str(tmp_path), 10) == lines
    assert first_rejects(str(tmp_path / "missing"), 5) == []
