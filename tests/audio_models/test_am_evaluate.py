"""Scoring helpers of make eval-audio: TextGrid parsing (both text formats), WER, onset matching, uris."""
from moshi_data.pipeline.audio.devset import ascii_uri
from moshi_data.pipeline.audio.evaluate import match_onsets, parse_textgrid, reference_words, word_error_rate
from moshi_data.pipeline.audio.types import Word

TIERS = ["Text", "word", "words", "ORT", "Word"]


def test_textgrid_long_and_short_formats(shared_data):
    root = shared_data / "word_alignment"
    long_format = reference_words(parse_textgrid((root / "emuR_ae/msajc003.TextGrid").read_text()), TIERS)
    assert [w for _, _, w in long_format] == "amongst her friends she was considered beautiful".split()
    assert long_format[0][:2] == (0.187498, 0.674237)
    short_format = reference_words(parse_textgrid((root / "praatio/mary.TextGrid").read_text()), TIERS)
    assert [w for _, _, w in short_format] == ["mary", "rolled", "the", "barrel"]
    assert short_format[0][0] == 0.3154201182247563


def test_word_error_rate_counts():
    scores = word_error_rate("a b c d".split(), "a x c d e".split())
    assert (scores["wer"], scores["substitutions"], scores["insertions"], scores["deletions"]) == (0.5, 1, 1, 0)


def test_onset_matching_by_text():
    reference = [(0.1, 0.3, "Mary"), (0.3, 0.6, "rolled"), (0.6, 0.7, "the"), (0.7, 1.0, "barrel")]
    words = [Word("Mary", 0.12, 0.3), Word("rode", 0.3, 0.6), Word("the", 0.55, 0.7), Word("barrel.", 0.7, 1.0)]
    errors, total = match_onsets(reference, words)
    assert total == 4 and [round(e, 3) for e in errors] == [0.02, 0.05, 0.0]


def test_ascii_uri_drops_accents():
    assert ascii_uri("trñ00") == "trn00"
