"""The run's tallies summed by one CombineFn, shared by the text and audio jobs.

Each worker emits small tallies (flat counts in the text job, nested report dicts in the audio job);
their keys are reasons, stages and fixed histogram bins, so the sum is bounded whatever the input.
Floats (numpy's too) are added as exact fractions (``pipeline.sums.add_sums``), so the result does
not depend on how the runner splits the work.
"""
from __future__ import annotations

from typing import Mapping

import apache_beam as beam

from moshi_data.pipeline.sums import add_sums, finish_sums


class SumTallies(beam.CombineFn):
    """Tallies (nested dicts of numbers and lists) -> their sum."""

    def create_accumulator(self) -> dict:
        return {}

    def add_input(self, accumulator: dict, tally: Mapping) -> dict:
        return add_sums(accumulator, tally)

    def merge_accumulators(self, accumulators) -> dict:
        merged: dict = {}
        for accumulator in accumulators:
            add_sums(merged, accumulator)
        return merged

    def extract_output(self, accumulator: dict) -> dict:
        return finish_sums(accumulator)
