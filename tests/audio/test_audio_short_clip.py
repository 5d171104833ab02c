"""A clip of a few seconds (the remote tests' clip): diarized without numpy warnings and with defined figures."""
from __future__ import annotations

import subprocess
import warnings

import numpy as np

from moshi_data.pipeline.audio.decode import decode
from moshi_data.pipeline.audio.diarize import Diarizer, annotation_turns
from moshi_data.pipeline.config import load_config


def test_a_clip_with_no_clean_window_embedding_diarizes_without_mean_of_empty_slice(tmp_path):
    clip = tmp_path / "clip.wav"
    subprocess.run(["espeak-ng", "-v", "en-us", "-s", "150", "-w", str(clip),
                    "hello there my friend. the weather is lovely today, thank you."], check=True, capture_output=True)
    config = load_config("audio_shards", ["cpu_threads=1"])
    audio = decode(str(clip), config["ingest"]).audio16[0]
    diarizer = Diarizer(config)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # numpy's "Mean of empty slice" on no clustered embedding
        output = diarizer.pipeline(diarizer.file(audio), **diarizer.speaker_bounds())
    assert np.isfinite(output.speaker_embeddings).all()
    turns = annotation_turns(output.speaker_diarization, len(audio) / 16_000)
    assert turns and all(0 <= t.start < t.end <= len(audio) / 16_000 for t in turns)
