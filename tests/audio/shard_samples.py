"""The tests read shards as users do: webdataset's own reader (README, docs/outputs.md), each raw
record checked and decoded with ``pipeline.audio.shards.decode_sample``."""
from __future__ import annotations

from pathlib import Path

import webdataset as wds

from moshi_data.pipeline.audio.shards import Sample, decode_sample


def read_samples(*shards: str | Path) -> list[Sample]:
    """Every sample of ``shards``, in file order."""
    dataset = wds.WebDataset([str(shard) for shard in shards], shardshuffle=False, empty_check=False)
    return [decode_sample(record) for record in dataset]
