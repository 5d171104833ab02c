"""Small two-stream shards built from reference diarization (RTTM), for trainer tests and benchmarks.

This is not the audio job (beam_jobs/audio_shards.py): it skips ASR and diarization and uses the
reference RTTM of each recording, so the trainer can be exercised on real audio in seconds.

- audio: the real recording resampled to 24 kHz; main = the most talkative speaker's turns, other =
  the rest (:func:`pipeline.audio.streams.mask_streams`);
- text: *reference-free* stand-in words (no transcript exists for these clips): one word every
  ``word_period`` seconds inside each main-speaker turn, each word mapped to one or two token ids by
  a fixed hash; the words are placed on 12.5 Hz frames with PAD/EPAD by the audio job's own rule
  (:func:`pipeline.audio.text_frames.text_stream`); ``text_all.npy`` holds such words of every speaker;
- codes: :func:`pipeline.audio.codec.encode_streams` of each segment as stored (after the 16-bit FLAC round
  trip; encoding the float audio instead flips ~0.5 % of codes), the function the trainer uses on the fly.
"""
from __future__ import annotations

import io
import zlib
from pathlib import Path
from typing import Iterator, Optional

import numpy as np

from moshi_data.pipeline.audio.shards import Sample, sample_key, write_shards
from moshi_data.pipeline.audio.streams import mask_streams, pick_main_speaker
from moshi_data.pipeline.audio.text_frames import text_stream
from moshi_data.pipeline.audio.types import OUTPUT_SAMPLE_RATE, Turn, Word


def read_rttm(path: Path, uri: Optional[str] = None) -> list[Turn]:
    """Speaker turns of one recording (``uri``, default: all lines) from an RTTM file."""
    turns = []
    for line in Path(path).read_text().splitlines():
        fields = line.split()
        if len(fields) >= 8 and fields[0] == "SPEAKER" and (uri is None or fields[1] == uri):
            start, duration = float(fields[3]), float(fields[4])
            turns.append(Turn(start, start + duration, fields[7]))
    return sorted(turns, key=lambda t: (t.start, t.end, t.speaker))


def stand_in_words(turns: list[Turn], speaker: str, period: float) -> list[Word]:
    """Reference-free words: one every ``period`` seconds inside each turn of ``speaker``."""
    words = []
    for index, turn in enumerate(t for t in turns if t.speaker == speaker):
        start = turn.start
        while start + period * 0.75 <= turn.end:
            words.append(Word(f"w{index}x{len(words)}", round(start, 3), round(start + period * 0.75, 3), 1.0, speaker))
            start += period
    return words


def stand_in_tokenize(word: str, vocab: int = 1000) -> list[int]:
    """Fixed hash tokenizer: one or two ids in ``[4, vocab)`` (0-3 are reserved: EPAD, ..., PAD)."""
    digest = zlib.crc32(word.encode())
    first = 4 + digest % (vocab - 4)
    return [first] if digest % 3 else [first, 4 + (digest // 7) % (vocab - 4)]


def as_stored(audio: np.ndarray, sample_rate: int) -> np.ndarray:
    """``audio`` after the shard's 16-bit FLAC round trip, so stored and on-the-fly codes agree."""
    import soundfile as sf

    buffer = io.BytesIO()
    sf.write(buffer, np.ascontiguousarray(audio.T), sample_rate, format="FLAC", subtype="PCM_16")
    buffer.seek(0)
    decoded, _ = sf.read(buffer, dtype="float32", always_2d=True)
    return decoded.T.copy()


def recording_samples(wav: Path, turns: list[Turn], recording_id: str, segment_seconds: float,
                      max_seconds: float, codec, pad_id: int = 3, epad_id: int = 0,
                      word_period: float = 0.4) -> Iterator[Sample]:
    """Segments of one mono recording as shard Samples (with codes when ``codec`` is given)."""
    import librosa
    import soundfile as sf

    from moshi_data.pipeline.audio.codec import encode_streams

    audio, rate = sf.read(str(wav), dtype="float32", always_2d=True)
    audio = audio.mean(axis=1)[: int(max_seconds * rate)]
    audio = librosa.resample(audio, orig_sr=rate, target_sr=OUTPUT_SAMPLE_RATE).astype(np.float32)
    speakers = sorted({t.speaker for t in turns})
    main = pick_main_speaker(speakers, turns, "most_talkative", recording_id, 0)
    streams = mask_streams(audio, turns, main, OUTPUT_SAMPLE_RATE)
    words = stand_in_words(turns, main, word_period)
    everyone = sorted((w for speaker in speakers for w in stand_in_words(turns, speaker, word_period)),
                      key=lambda w: (w.start, w.end, w.speaker))
    seg = int(segment_seconds * OUTPUT_SAMPLE_RATE)
    for index, offset in enumerate(range(0, streams.shape[1] - seg // 2, seg)):
        piece = as_stored(streams[:, offset : offset + seg], OUTPUT_SAMPLE_RATE)
        start_s, duration = offset / OUTPUT_SAMPLE_RATE, piece.shape[1] / OUTPUT_SAMPLE_RATE
        local, local_all = ([Word(w.word, w.start - start_s, w.end - start_s, w.score, w.speaker)
                             for w in chosen if start_s <= w.start < start_s + duration] for chosen in (words, everyone))
        yield Sample(
            key=sample_key(recording_id, index),
            audio=piece,
            words=[w.to_json() for w in local],
            text=text_stream(local, duration, stand_in_tokenize, pad_id, epad_id),
            text_all=text_stream(local_all, duration, stand_in_tokenize, pad_id, epad_id),
            meta={"source": str(wav.name), "offset_s": start_s, "duration_s": duration, "main_speaker": main,
                  "speakers": speakers, "text": "reference-free stand-in words", "builder": __name__},
            codes=encode_streams(codec, piece) if codec is not None else None,
        )


def build_reference_shards(recordings: list[tuple[Path, Path, str]], directory: Path, codec,
                           segment_seconds: float = 10.0, max_seconds: float = 20.0) -> list[Path]:
    """One shard per recording ``(wav, rttm, uri)``, in the given order (``shard-000000.tar``, ...)."""
    written = []
    for index, (wav, rttm, uri) in enumerate(recordings):
        samples = recording_samples(wav, read_rttm(rttm, uri), uri, segment_seconds, max_seconds, codec)
        written += write_shards(samples, directory, max_bytes=1 << 40, start_index=index)
    return written
