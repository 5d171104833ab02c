"""Stage 10: shard samples -> moshi-finetune's layout (stereo WAV + alignments JSON + JSONL index).

moshi-finetune reads ``{"path": "data_stereo/x.wav", "duration": seconds}`` lines; next to each WAV
(left = main speaker / Moshi, right = other / user, 24 kHz) a ``x.json`` holds
``{"alignments": [[word, [start, end], "SPEAKER_MAIN" | other speaker id], ...]}``; its Interleaver
keeps only the ``SPEAKER_MAIN`` words (``../shared/notes/helium-moshi-recipe.md`` section 5).
"""
from __future__ import annotations

import io
import json
from typing import Any

import numpy as np

from moshi_data.pipeline.audio.shards import Sample


def alignments(sample: Sample, main_label: str) -> list[list[Any]]:
    """moshi-finetune alignments of a sample, sorted by start; the main speaker is ``main_label``."""
    main = sample.meta["main_speaker"]
    rows = []
    for word in sorted(sample.words, key=lambda w: (w["start"], w["end"])):
        speaker = main_label if word["speaker"] == main else str(word["speaker"])
        rows.append([word["word"], [word["start"], word["end"]], speaker])
    return rows


def stereo_wav_bytes(audio: np.ndarray, sample_rate: int) -> bytes:
    """16-bit stereo WAV: channel 0 (left) = main, channel 1 (right) = other."""
    import soundfile as sf

    buffer = io.BytesIO()
    sf.write(buffer, np.ascontiguousarray(audio.T), sample_rate, format="WAV", subtype="PCM_16")
    return buffer.getvalue()


def export_sample(sample: Sample, audio_dir: str, main_label: str) -> tuple[dict[str, Any], list[tuple[str, bytes]]]:
    """Index line and (relative path, payload) files of one sample."""
    wav_path = f"{audio_dir}/{sample.key}.wav"
    transcript = {"alignments": alignments(sample, main_label)}
    files = [
        (wav_path, stereo_wav_bytes(sample.audio, sample.sample_rate)),
        (f"{audio_dir}/{sample.key}.json", json.dumps(transcript, ensure_ascii=False).encode("utf-8")),
    ]
    return {"path": wav_path, "duration": sample.audio.shape[1] / sample.sample_rate}, files


def index_jsonl(lines: list[dict[str, Any]]) -> bytes:
    """The moshi-finetune index, sorted by path."""
    ordered = sorted(lines, key=lambda line: line["path"])
    return "".join(json.dumps(line) + "\n" for line in ordered).encode("utf-8")
