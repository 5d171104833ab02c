"""Transcriber: whisperX tiny.en + pocketsphinx alignment on the real pyannote sample."""
import pickle

import numpy as np

from moshi_data.pipeline.audio.evaluate import normalize_word, parse_stm, word_error_rate
from moshi_data.pipeline.audio.transcribe import Transcriber, split_tokens


def test_transcriber_is_picklable_before_setup(models_config):
    restored = pickle.loads(pickle.dumps(Transcriber(models_config)))
    assert restored.config == models_config and restored._asr is None


def test_split_tokens_glues_punctuation_only_tokens():
    assert split_tokens("- Well , it's 23 % ...") == ["-Well,", "it's", "23", "%..."]


def test_sample_transcription_has_sensible_timed_words(transcriber, sample_audio):
    import pyannote.audio.sample as sample_package
    from pathlib import Path

    result = transcriber.transcribe(sample_audio)
    duration = sample_audio.size / 16000
    assert result.language == "en" and result.language_probability == 1.0
    assert len(result.words) > 50
    assert all(0.0 <= w.start < w.end <= duration + 0.5 and w.score is not None for w in result.words)
    starts = [w.start for w in result.words]
    assert starts == sorted(starts)
    assert result.alignment_counts["pocketsphinx"] == len(result.segments) >= 1
    stm = (Path(sample_package.__file__).parent / "sample.stm").read_text()
    reference = [normalize_word(w) for _, _, text in parse_stm(stm) for w in text.split()]
    wer = word_error_rate(reference, [normalize_word(w.word) for w in result.words])["wer"]
    assert wer < 0.25, (wer, result.text)
    # "New Jersey" is said at ~12.9-14.2 s (Diane) per sample.stm: the aligned words land there.
    jersey = [w for w in result.words if normalize_word(w.word) == "jersey"]
    assert jersey and 12.5 < jersey[0].start < 14.3


def test_silence_and_tiny_input_give_no_words(transcriber):
    assert transcriber.transcribe(np.zeros(16000 * 2, np.float32)).words == []
    assert transcriber.transcribe(np.zeros(100, np.float32)).words == []
