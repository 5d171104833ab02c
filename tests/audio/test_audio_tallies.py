"""pipeline/sums.py and beam_jobs/tallies.SumTallies, the run totals of the text and audio jobs:
exact, whatever the order, for Python and numpy numbers alike."""
from __future__ import annotations

import itertools
import json

import apache_beam as beam
import numpy as np
from apache_beam.testing.util import assert_that, equal_to

from moshi_data.beam_jobs.tallies import SumTallies
from moshi_data.pipeline.sums import add_sums, finish_sums

# float32 sums of these depend on the order: (1e8 + 1) - 1e8 == 0, (1e8 - 1e8) + 1 == 1
TALLIES = [{"audio_s": np.float32(1e8), "der": {"errors_s": np.float64(0.1)}, "bins": [np.float32(0.5), 1]},
           {"audio_s": np.float32(1.0), "der": {"errors_s": 0.2}, "bins": [np.float32(0.25), 2]},
           {"audio_s": np.float32(-1e8), "der": {"errors_s": np.float64(0.3)}, "bins": [0.125, np.int64(3)]}]


def _sum(tallies) -> dict:
    total: dict = {}
    for tally in tallies:
        add_sums(total, tally)
    return finish_sums(total)


def test_numpy_floats_sum_exactly_in_any_order_into_json_ready_floats():
    totals = [json.dumps(_sum(order), sort_keys=True) for order in itertools.permutations(TALLIES)]
    assert set(totals) == {json.dumps({"audio_s": 1.0, "bins": [0.875, 6], "der": {"errors_s": 0.6}}, sort_keys=True)}
    assert type(_sum(TALLIES)["audio_s"]) is float


def test_sum_tallies_combine_is_the_exact_sum():
    from apache_beam.testing.test_pipeline import TestPipeline

    with TestPipeline(runner="DirectRunner") as pipeline:
        total = pipeline | beam.Create(TALLIES, reshuffle=False) | beam.CombineGlobally(SumTallies())
        assert_that(total, equal_to([{"audio_s": 1.0, "der": {"errors_s": 0.6}, "bins": [0.875, 6]}]))
