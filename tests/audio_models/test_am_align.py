"""Spoken forms of numbers/symbols, OOV pronunciations, pocketsphinx forced alignment on espeak-ng speech."""
import numpy as np
import pytest

from moshi_data.pipeline.audio.align import (PocketsphinxAligner, TokenTiming, interpolate_missing, letters_to_phones,
                                  number_to_words, spoken_words, tokens_to_spoken)
from tests.audio_models.conftest import synthesize


@pytest.mark.parametrize("token, words", [
    ("23", ["twenty", "three"]), ("1990", ["nineteen", "ninety"]), ("2005", ["two", "thousand", "five"]),
    ("$5", ["five", "dollars"]), ("5%", ["five", "percent"]), ("3.5", ["three", "point", "five"]),
    ("21st", ["twenty", "first"]), ("1990s", ["nineteen", "nineties"]), ("1,200", ["one", "thousand", "two", "hundred"]),
    ("10:30", ["ten", "thirty"]), ("well-known", ["well", "known"]), ("Hello,", ["hello"]),
    ("didn't", ["didn't"]), ("AT&T", ["at", "and", "t"]), ("...", []), ("-", []),
])
def test_spoken_words(token, words):
    assert spoken_words(token) == words


def test_number_to_words_large_values():
    assert number_to_words(0) == ["zero"]
    assert number_to_words(1_000_017) == ["one", "million", "seventeen"]
    assert number_to_words(999) == ["nine", "hundred", "ninety", "nine"]


def test_letters_to_phones_gives_phones_the_model_accepts(models_config):
    aligner = PocketsphinxAligner(models_config["align"])
    aligner.setup()
    for word in ("pyannote", "whisperx", "zyxxq", "a"):
        phones = letters_to_phones(word)
        assert phones and all(p.isupper() for p in phones.split())
    aligner._ensure_in_dictionary(["pyannote", "zyxxq"])
    assert aligner._decoder.lookup_word("pyannote") is not None


def test_interpolation_fills_every_token_with_positive_durations():
    timings = [TokenTiming(1.0, 1.5), None, None, TokenTiming(2.5, 3.0), None]
    filled = interpolate_missing(timings, ["a", "bb", "b", "c", "dd"], 0.0, 4.0, 0.02)
    assert all(t.end > t.start for t in filled)
    assert filled[1].start == 1.5 and filled[2].end == pytest.approx(2.5) and filled[4].end == 4.0


def test_pocketsphinx_onsets_on_espeak_speech(models_config):
    phrases = ["the", "quick", "brown", "fox", "jumps", "over", "the", "lazy", "dog"]
    gaps = [0.05, 0.2, 0.1, 0.3, 0.05, 0.15, 0.1, 0.25, 0.1]
    audio, onsets = synthesize(phrases, gaps)
    aligner = PocketsphinxAligner(models_config["align"])
    aligner.setup()
    timings = aligner.align_words(audio, 0.0, phrases)
    assert timings is not None
    errors = np.abs([t.start - onset for t, onset in zip(timings, onsets)])
    assert np.median(errors) < 0.05 and errors.max() < 0.15, errors


def test_numbers_get_the_times_of_their_spoken_words(transcriber):
    """'23' and '1990' are aligned through 'twenty three' / 'nineteen ninety' and keep their text."""
    audio, onsets = synthesize(["I counted", "twenty three", "apples in", "nineteen ninety"], [0.3, 0.3, 0.3, 0.1])
    tokens = ["I", "counted", "23", "apples", "in", "1990."]
    segment = {"start": 0.3, "end": audio.size / 16000 - 0.3, "text": " ".join(tokens)}
    timings, method, _ = transcriber._segment_timings(audio, segment, tokens, None)
    assert method == "pocketsphinx"
    assert all(t.end > t.start for t in timings)
    assert abs(timings[2].start - onsets[1]) < 0.08 and abs(timings[5].start - onsets[3]) < 0.08
    spoken, owner = tokens_to_spoken(tokens)
    assert spoken[2:4] == ["twenty", "three"] and owner[2:4] == [2, 2]


def test_failed_alignment_falls_back_to_whisper_word_times(transcriber, models_config, monkeypatch):
    """Default (narrow) pocketsphinx beams really fail on this clip; faster-whisper's DTW times take over."""
    audio, onsets = synthesize(["hello", "world", "seventeen"], [0.4, 0.4, 0.1])
    narrow = {**models_config["align"], "pocketsphinx": {**models_config["align"]["pocketsphinx"],
                                                           "beam": 1e-3, "wbeam": 1e-3, "pbeam": 1e-3}}
    failing = PocketsphinxAligner(narrow)
    failing.setup()
    tokens = ["Hello", "world,", "17."]
    assert failing.align_words(audio, 0.0, tokens_to_spoken(tokens)[0]) is None
    monkeypatch.setattr(transcriber, "_aligner", failing)
    segment = {"start": 0.4, "end": audio.size / 16000 - 0.4, "text": " ".join(tokens)}
    timings, method, probabilities = transcriber._segment_timings(audio, segment, tokens, None)
    assert method == "whisper" and len(probabilities) == 3
    assert all(0 <= t.start < t.end <= audio.size / 16000 + 0.3 for t in timings)
    # tiny.en cross-attention times are coarse (~0.2-0.35 s off here): a fallback, not the aligner
    assert np.median(np.abs([t.start - o for t, o in zip(timings, onsets)])) < 0.5
