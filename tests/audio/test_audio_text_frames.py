"""Inner Monologue frame placement: the recipe's hand-computed worked example and the overflow rules."""
from __future__ import annotations

import numpy as np

from moshi_data.pipeline.audio.text_frames import frame_count, place_tokens, text_stream, tokenize_words
from moshi_data.pipeline.audio.types import Word

PAD, EPAD = 3, 0
VOCAB = {"Hello": 10, "there": 11, "how": 12, "wond": 13, "erful": 14}


def split_long_words(text: str) -> list[int]:
    """Test double for a tokenizer (as in the recipe's example): words over 5 chars split in two."""
    pieces = [text] if len(text) <= 5 else [text[: len(text) // 2], text[len(text) // 2 :]]
    return [VOCAB[p] for p in pieces]


def test_worked_example_from_the_recipe():
    words = [Word("Hello", 0.10, 0.45), Word("there", 0.50, 0.80), Word("how", 1.60, 1.75), Word("wonderful", 1.80, 2.40)]
    stream = text_stream(words, 3.0, split_long_words, PAD, EPAD)
    expected = [PAD] * 38
    expected[0], expected[1] = EPAD, 10
    expected[5], expected[6] = EPAD, 11
    expected[19], expected[20] = EPAD, 12
    expected[21], expected[22], expected[23] = EPAD, 13, 14
    assert stream.dtype == np.int32
    assert stream.tolist() == expected


def test_frame_count_rounds_up():
    assert frame_count(3.0) == 38 and frame_count(0.08) == 1 and frame_count(0.081) == 2


def test_word_at_frame_zero_gets_no_epad_before_it():
    stream = place_tokens([([7, 8], 0.0, 0.3)], 5, PAD, EPAD)
    assert stream.tolist() == [7, 8, PAD, PAD, PAD]


def test_pending_tokens_dropped_when_next_word_starts():
    tokenized = [([1, 2, 4, 5], 0.0, 0.1), ([6, 7], 0.1, 0.3)]  # second word starts at frame 1
    assert place_tokens(tokenized, 6, PAD, EPAD).tolist() == [1, 6, 7, PAD, PAD, PAD]
    assert place_tokens(tokenized, 8, PAD, EPAD, keep_and_shift=True).tolist() == [1, 2, 4, 5, 6, 7, PAD, PAD]


def test_two_words_in_one_frame_keep_the_last():
    tokenized = [([1], 0.40, 0.42), ([2], 0.43, 0.5)]  # both start in frame 5
    assert place_tokens(tokenized, 7, PAD, EPAD).tolist() == [PAD, PAD, PAD, PAD, EPAD, 2, PAD]


def test_words_without_duration_are_dropped_blank_ones_kept_without_tokens_and_sorted():
    words = [Word("late", 1.0, 1.2), Word("zero", 0.5, 0.5), Word("  ", 0.1, 0.2), Word("early", 0.2, 0.3)]
    tokens = tokenize_words(words, lambda text: [len(text)])
    assert tokens == [([], 0.1, 0.2), ([5], 0.2, 0.3), ([4], 1.0, 1.2)]


def test_a_word_without_tokens_cancels_the_pending_tokens():
    tokenized = [([1, 2, 4, 5], 0.0, 0.1), ([], 0.1, 0.2), ([6], 0.4, 0.5)]
    assert place_tokens(tokenized, 7, PAD, EPAD).tolist() == [1, PAD, PAD, PAD, EPAD, 6, PAD]
