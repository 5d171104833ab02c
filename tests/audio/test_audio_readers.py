"""The audio shards load with plain webdataset (no project code): every sample, every key, decodable."""
from __future__ import annotations

import io
import json

import numpy as np
import soundfile as sf


def test_shards_load_with_plain_webdataset(conversation_run):
    import webdataset as wds

    output, stats = conversation_run["output"], conversation_run["stats"]
    urls = sorted(str(path) for path in (output / "shards").glob("shard-*.tar"))
    assert len(urls) == stats["shards"]["count"]
    samples = list(wds.WebDataset(urls, shardshuffle=False))
    assert len(samples) == stats["segments"]["samples"] > 0
    for sample in samples:
        assert {"audio.flac", "words.json", "text.npy", "meta.json"} <= set(sample)
        audio, rate = sf.read(io.BytesIO(sample["audio.flac"]), always_2d=True)
        meta = json.loads(sample["meta.json"])
        text = np.load(io.BytesIO(sample["text.npy"]), allow_pickle=False)
        assert rate == 24000 and audio.shape[1] == 2 and audio.shape[0] > 0
        assert text.ndim == 1 and text.size > 0 and meta["main_speaker"]
        assert isinstance(json.loads(sample["words.json"]), list)
