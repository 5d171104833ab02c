"""Main speaker policy (streams.main_speaker: random | most_speech | each) and its minimums per segment."""
from __future__ import annotations

import numpy as np
import pytest

from moshi_data.pipeline.audio.decode import AudioSource, DecodedAudio
from moshi_data.pipeline.audio.recording import RecordingProcessor, RecordingResult, _Analysis
from moshi_data.pipeline.audio.shards import decode_sample
from moshi_data.pipeline.audio.streams import choose_main_speakers, speech_seconds
from moshi_data.pipeline.audio.text_frames import SentencePieceTokenizer
from moshi_data.pipeline.audio.types import Turn, Word
from moshi_data.pipeline.config import load_config

PAD = 3


def _words(speaker: str, start: float, count: int, step: float = 0.4) -> list[Word]:
    return [Word(f"word{i}", start + i * step, start + i * step + 0.3, speaker=speaker) for i in range(count)]


def test_speech_seconds_count_overlapping_turns_of_one_speaker_once():
    turns = [Turn(0.0, 2.0, "A"), Turn(1.0, 3.0, "A"), Turn(2.5, 2.7, "A"), Turn(0.5, 1.0, "B")]
    assert speech_seconds(turns) == pytest.approx({"A": 3.0, "B": 0.5})


def test_the_issues_degenerate_main_speaker_is_never_chosen():
    # 30 s clip: A talks for 20 s with 88 words, B for 0.24 s with no word
    turns = [Turn(0.0, 20.0, "A"), Turn(21.0, 21.24, "B")]
    words = _words("A", 0.0, 88, step=0.22)
    for policy in ("random", "most_speech", "each"):
        for index in range(20):
            chosen = choose_main_speakers(["A", "B"], turns, words, policy, 1.0, 2, f"clip:{index}", 7)
            assert chosen.speakers == ["A"] and chosen.reason is None
    assert chosen.speech_s == {"A": 20.0, "B": 0.24} and chosen.words == {"A": 88, "B": 0}


def test_random_draws_among_eligible_speakers_seeded_by_sample_id():
    turns = [Turn(0.0, 3.0, "A"), Turn(3.0, 6.0, "B"), Turn(6.0, 9.0, "C"), Turn(9.0, 9.5, "D")]
    words = _words("A", 0.0, 5) + _words("B", 3.0, 5) + _words("C", 6.0, 5) + _words("D", 9.0, 1)
    picks = [choose_main_speakers(["A", "B", "C", "D"], turns, words, "random", 1.0, 2, f"r:{i}", 7).speakers[0]
             for i in range(60)]
    assert set(picks) == {"A", "B", "C"}
    again = [choose_main_speakers(["D", "C", "B", "A"], turns, words, "random", 1.0, 2, f"r:{i}", 7).speakers[0]
             for i in range(60)]
    assert again == picks  # the speaker order does not matter, the sample id does
    assert choose_main_speakers(["A", "B", "C", "D"], turns, words, "each", 1.0, 2, "x", 7).speakers == ["A", "B", "C"]
    longer = turns + [Turn(10.0, 11.0, "B")]
    assert choose_main_speakers(["A", "B", "C", "D"], longer, words, "most_speech", 1.0, 2, "x", 7).speakers == ["B"]


def test_below_the_minimums_the_segment_is_filtered_with_a_reason():
    turns = [Turn(0.0, 0.8, "A"), Turn(1.0, 5.0, "B")]
    words = _words("A", 0.0, 2) + _words("B", 1.0, 1)  # A: 0.8 s (too little), B: 1 word (too few)
    chosen = choose_main_speakers(["A", "B"], turns, words, "random", 1.0, 2, "x", 7)
    assert chosen.speakers == [] and chosen.reason == "main_speaker_too_little_speech"
    assert "B 4.00 s, 1 words" in chosen.detail
    with pytest.raises(ValueError, match="streams.main_speaker"):
        choose_main_speakers(["A"], turns, words, "loudest", 1.0, 2, "x", 7)


def _run_segments(small_tokenizer, policy: str, extra=()):
    """RecordingProcessor's segment stage on a synthetic 3-speaker analysis (no model is loaded)."""
    config = load_config("audio_shards", small_tokenizer + [f"streams.main_speaker={policy}", "segment.max_duration_s=10",
                                                            "segment.min_cut_s=5", *extra])
    job = RecordingProcessor(config)
    job.tokenizer = SentencePieceTokenizer(config["text"]["tokenizer"])
    rng = np.random.default_rng(0)
    samples = 24_000 * 16
    # segment 0 (0-9 s): A and B talk, C says one short word; segment 1 (9-16 s): only C's 0.5 s
    turns = [Turn(0.0, 3.5, "A"), Turn(4.0, 7.5, "B"), Turn(7.6, 7.9, "C"), Turn(10.0, 10.5, "C")]
    signal = 0.003 * rng.standard_normal(samples)
    for turn in turns:  # loud "speech" in the turns over a quiet floor
        signal[int(turn.start * 24_000): int(turn.end * 24_000)] *= 30
    audio = DecodedAudio(signal[None].astype(np.float32), np.zeros((1, samples * 2 // 3), np.float32),
                         {"sample_rate": 24_000})
    words = _words("A", 0.2, 6) + _words("B", 4.2, 6) + [Word("hm", 7.6, 7.85, speaker="C"), Word("ok", 10.0, 10.4, speaker="C")]
    analysis = _Analysis("mask", words, turns, ["A", "B", "C"], "en", 0.99, {})
    result = RecordingResult("synthetic", "kept")
    job._segments(AudioSource("synthetic", "synthetic.wav"), audio, analysis, result)
    return result, audio


def test_each_policy_writes_one_sample_per_speaker_with_enough_speech(small_tokenizer):
    result, audio = _run_segments(small_tokenizer, "each", ["filters.min_speech_ratio=0.0"])
    samples = [decode_sample(record) for _, record in result.records]
    assert [s.key for s in samples] == ["synthetic_00000_00", "synthetic_00000_01"]
    assert [s.meta["main_speaker"] for s in samples] == ["A", "B"]
    for sample in samples:
        assert (sample.text != PAD).sum() >= 6 and sample.meta["main_words"] == 6
        first, last = sample.meta["offset_samples"], sample.meta["offset_samples"] + sample.audio.shape[1]
        mixed = sample.audio.sum(axis=0)
        assert np.abs(mixed - audio.audio24[0, first:last]).max() < 2e-4  # main + other = input (16-bit)
    # A's turn is in A's main stream only, B's in B's
    assert np.abs(samples[0].audio[0, 24_000:48_000]).mean() > 0.05 and np.abs(samples[1].audio[0, 24_000:48_000]).max() == 0
    assert result.counters["segments_in"] == 2 and result.counters["segments_kept"] == 1
    assert result.counters["samples_kept"] == 2
    assert result.counters["segments_filtered_main_speaker_too_little_speech"] == 1
    (reject,) = result.rejects
    assert reject["reason"] == "main_speaker_too_little_speech" and reject["segment"] == 1


def test_random_and_most_speech_write_one_sample_per_segment_never_all_pad(small_tokenizer):
    for policy in ("random", "most_speech"):
        result, _ = _run_segments(small_tokenizer, policy, ["filters.min_speech_ratio=0.0"])
        samples = [decode_sample(record) for _, record in result.records]
        assert [s.key for s in samples] == ["synthetic_00000"]
        assert samples[0].meta["main_speaker"] in ("A", "B") and (samples[0].text != PAD).any()
        assert samples[0].meta["main_speaker_policy"] == policy


def test_unknown_policy_fails_at_construction(small_tokenizer):
    with pytest.raises(ValueError, match="streams.main_speaker"):
        RecordingProcessor(load_config("audio_shards", small_tokenizer + ["streams.main_speaker=most_talkative"]))
