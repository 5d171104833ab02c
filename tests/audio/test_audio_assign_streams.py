"""Word-to-speaker assignment, main speaker choice and the mask streams."""
from __future__ import annotations

import numpy as np
import pytest

from moshi_data.pipeline.audio.assign import assign_speakers, overlapped_words
from moshi_data.pipeline.audio.streams import (channel_streams, mask_streams, one_talker_per_channel,
                                    pick_main_speaker, speaking_time)
from moshi_data.pipeline.audio.types import Turn, Word

TURNS = [Turn(0.0, 2.0, "A"), Turn(1.8, 4.0, "B"), Turn(5.0, 6.0, "A")]


def test_words_take_the_speaker_with_most_overlap():
    words = [
        Word("inside", 0.5, 0.9),  # only A
        Word("boundary", 1.7, 2.3),  # A 0.3 s, B 0.5 s -> B
        Word("overlap", 1.85, 1.95),  # A and B overlap equally: B's turn is closest to the middle? both 0 -> id A
        Word("gap", 4.3, 4.5),  # no overlap: nearest turn end is B (4.0) vs A (5.0)
        Word("late", 4.8, 5.2),  # A 0.2 s
    ]
    speakers = [w.speaker for w in assign_speakers(words, TURNS, "SPEAKER_00")]
    assert speakers == ["A", "B", "A", "B", "A"]
    assert overlapped_words(words, TURNS) == [False, True, True, False, False]


def test_never_without_speaker():
    words = [Word("alone", 1.0, 1.5)]
    assert assign_speakers(words, [], "SPEAKER_00")[0].speaker == "SPEAKER_00"
    far = assign_speakers([Word("far", 100.0, 100.2)], TURNS, "SPEAKER_00")
    assert far[0].speaker == "A"


def test_main_speaker_random_is_seeded_by_recording_id_and_most_speech_by_time():
    speakers = ["A", "B", "C"]
    picks = {pick_main_speaker(speakers, TURNS, "random", f"rec{i}", 7) for i in range(40)}
    assert picks == set(speakers)  # different recordings get different main speakers
    assert pick_main_speaker(speakers, TURNS, "random", "rec1", 7) == pick_main_speaker(list(reversed(speakers)), TURNS, "random", "rec1", 7)
    assert speaking_time(TURNS) == pytest.approx({"A": 3.0, "B": 2.2})
    assert pick_main_speaker(["A", "B"], TURNS, "most_speech", "x", 7) == "A"
    with pytest.raises(ValueError):
        pick_main_speaker(["A"], TURNS, "loudest", "x", 7)


def test_mask_streams_reconstruct_the_input_exactly():
    rng = np.random.default_rng(0)
    audio = rng.standard_normal(24_000 * 7).astype(np.float32)
    streams = mask_streams(audio, TURNS, "A", 24_000)
    assert streams.shape == (2, audio.size) and streams.dtype == np.float32
    assert np.array_equal(streams[0] + streams[1], audio)
    # main is silent outside A's turns, other is silent inside them
    assert not streams[0][int(2.5 * 24_000) : int(4.5 * 24_000)].any()
    assert not streams[1][int(0.1 * 24_000) : int(1.9 * 24_000)].any()
    assert np.array_equal(streams[0][int(5.1 * 24_000) : int(5.9 * 24_000)], audio[int(5.1 * 24_000) : int(5.9 * 24_000)])


def test_channel_streams_and_stereo_detection():
    rate = 16_000
    t = np.arange(rate * 4) / rate
    voice = np.sin(2 * np.pi * 220 * t).astype(np.float32)
    left = voice * (t < 2)
    right = 0.8 * np.sin(2 * np.pi * 330 * t).astype(np.float32) * (t >= 2)
    two_talkers = np.stack([left, right]).astype(np.float32)
    assert one_talker_per_channel(two_talkers, rate, 0.9, 6.0)
    mix = np.stack([voice, 0.9 * voice])
    assert not one_talker_per_channel(mix, rate, 0.9, 6.0)
    assert np.array_equal(channel_streams(two_talkers, 1)[0], right.astype(np.float32))
