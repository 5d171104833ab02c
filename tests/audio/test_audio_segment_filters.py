"""Segmentation in silences and the quality filters."""
from __future__ import annotations

import numpy as np

from moshi_data.pipeline.audio.filters import check_recording, check_segment, estimate_snr_db, speech_ratio
from moshi_data.pipeline.audio.segment import plan_segments, turns_in_segment, words_in_segment
from moshi_data.pipeline.audio.types import FRAME_RATE, Turn, Word
from moshi_data.pipeline.config import load_config


def _words(start: float, end: float, step: float = 0.5) -> list[Word]:
    return [Word(f"w{i}", t, t + 0.4, 0.9, "A") for i, t in enumerate(np.arange(start, end, step))]


def test_segments_cut_in_the_latest_silence_and_on_frame_boundaries():
    turns = [Turn(0.0, 50.0, "A"), Turn(51.0, 95.0, "B"), Turn(96.0, 150.0, "A")]
    segments = plan_segments(150.0, turns, [], max_duration_s=100.0, min_silence_s=0.3, min_cut_s=30.0)
    assert [s.cut for s in segments] == ["silence", "end"]
    assert segments[0].end == 95.52  # middle of the 95-96 silence, snapped to an 80 ms frame
    assert abs(segments[0].end * FRAME_RATE - round(segments[0].end * FRAME_RATE)) < 1e-9
    assert segments[0].start == 0.0 and segments[1].start == segments[0].end and segments[1].end == 150.0
    assert all(s.duration <= 100.0 for s in segments)


def test_no_short_tail_when_an_earlier_silence_exists():
    turns = [Turn(0.0, 59.5, "A"), Turn(60.0, 118.5, "B"), Turn(119.5, 130.0, "A")]
    segments = plan_segments(130.0, turns, [], max_duration_s=120.0, min_silence_s=0.3, min_cut_s=30.0)
    assert [(s.start, s.cut) for s in segments] == [(0.0, "silence"), (59.76, "end")]


def test_no_silence_falls_back_to_word_gaps_then_hard_cuts():
    words = _words(0.0, 60.0)  # 0.1 s gaps between words, a 0.3 s gap after 40.4
    words = [w for w in words if not 40.4 < w.start < 40.6] + [Word("x", 40.7, 40.9, 0.9, "A")]
    segments = plan_segments(60.0, [Turn(0.0, 60.0, "A")], words, 50.0, 0.3, 10.0)
    assert segments[0].cut == "word_gap" and 40.3 < segments[0].end < 40.8
    hard = plan_segments(60.0, [Turn(0.0, 60.0, "A")], [], 25.0, 0.3, 10.0)
    assert [s.cut for s in hard] == ["hard", "hard", "end"] and hard[0].end == 24.96  # 25 s floored to whole 80 ms frames


def test_words_and_turns_move_to_segment_time():
    from moshi_data.pipeline.audio.segment import Segment

    segment = Segment(1, 10.0, 20.0, "end")
    words = [Word("a", 9.0, 10.5), Word("b", 12.0, 12.5), Word("c", 19.8, 20.6)]
    inside = words_in_segment(words, segment)
    assert [(w.word, w.start, w.end) for w in inside] == [("b", 2.0, 2.5), ("c", 9.8, 10.0)]
    assert turns_in_segment([Turn(5.0, 12.0, "A")], segment) == [Turn(0.0, 2.0, "A")]


def test_filters_give_one_reason_each():
    config = load_config("audio_shards")["filters"]
    rate = 24_000
    rng = np.random.default_rng(1)
    noise = 0.001 * rng.standard_normal(rate * 10).astype(np.float32)
    speech_audio = noise.copy()
    speech_audio[rate * 2 : rate * 8] += 0.3 * np.sin(np.arange(rate * 6) * 0.05).astype(np.float32)
    speech = [(2.0, 8.0)]
    words = _words(2.0, 8.0)
    kept = check_segment(speech_audio, rate, 10.0, words, speech, config)
    assert kept.reason is None and kept.metrics["snr_db"] > 30 and kept.metrics["speech_ratio"] == 0.6
    assert check_segment(speech_audio[: rate // 2], rate, 0.5, words, speech, config).reason == "too_short"
    assert check_segment(speech_audio, rate, 10.0, [], speech, config).reason == "no_words"
    assert check_segment(speech_audio, rate, 10.0, words, [(2.0, 2.5)], config).reason == "low_speech_ratio"
    noisy = speech_audio + 0.3 * rng.standard_normal(rate * 10).astype(np.float32)
    assert check_segment(noisy, rate, 10.0, words, speech, config).reason == "low_snr"
    unsure = [Word(w.word, w.start, w.end, 0.1, "A") for w in words]
    assert check_segment(speech_audio, rate, 10.0, unsure, speech, config).reason == "low_word_confidence"
    assert check_recording("en", 0.99, 0, config).reason == "no_speech"
    assert check_recording("fr", 0.99, 5, config).reason == "language"
    assert check_recording("en", 0.2, 5, config).reason == "language"
    assert check_recording("en", 0.99, 5, config).reason is None


def test_speech_ratio_and_snr_edge_cases():
    assert speech_ratio([(0.0, 1.0), (0.5, 2.0), (9.0, 12.0)], 10.0) == 0.3
    silent = np.zeros(24_000, dtype=np.float32)
    assert estimate_snr_db(silent, 24_000, [], 0.025, 20, 10, 60.0) is None
    tone = np.zeros(48_000, dtype=np.float32)
    tone[:24_000] = 0.5
    assert estimate_snr_db(tone, 24_000, [(0.0, 1.0)], 0.025, 20, 10, 60.0) == 60.0
