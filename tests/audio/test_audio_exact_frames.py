"""Text frames exactly as moshi-finetune builds them: frame counts from samples, zero-token words, "\\n".

The end-to-end test cuts long recordings into short segments (``segment.max_duration_s`` forced
small), exports each sample to moshi-finetune's layout and rebuilds its text stream from the exported
alignments with ``interleaver_reference`` (moshi-finetune's published algorithm, re-written in the
tests): every stored ``text.npy`` must equal it frame for frame.
"""
from __future__ import annotations

import json

import numpy as np
import pytest

from moshi_data.pipeline.audio.decode import AudioSource
from moshi_data.pipeline.audio.export import export_sample
from moshi_data.pipeline.audio.shards import decode_sample
from moshi_data.pipeline.audio.text_frames import SentencePieceTokenizer, frame_count, frames_for_samples, text_stream
from moshi_data.pipeline.audio.types import Word
from moshi_data.pipeline.config import load_config

from interleaver_reference import interleave_main_only

PAD, EPAD = 3, 0


@pytest.fixture(scope="module")
def processor(small_tokenizer):
    import sentencepiece

    config = load_config("audio_shards", small_tokenizer)
    return sentencepiece.SentencePieceProcessor(model_file=config["text"]["tokenizer"])


def test_frame_count_comes_from_samples_not_float_seconds():
    # the segment: 46.48 s .. 60.0 s = 324,480 samples = 169 Mimi frames; 13.52 x 12.5 in floats is 169.00000000000003
    assert (60.0 - 46.48) * 12.5 > 169
    assert frames_for_samples(324_480) == 169 and frame_count(60.0 - 46.48) == 169
    assert frames_for_samples(1) == 1 and frames_for_samples(1920) == 1 and frames_for_samples(1921) == 2
    assert frames_for_samples(0) == 0


def test_newline_encodes_to_its_byte_piece(processor):
    assert processor.id_to_piece(processor.encode("\n")[-1]) == "<0x0A>"


@pytest.mark.parametrize("blank", ["\u3000", " ", "\t", "\u200b", "\ufeff"])
def test_words_with_no_token_cancel_pending_tokens_as_moshi_finetune(processor, blank, small_tokenizer):
    tokenize = SentencePieceTokenizer(load_config("audio_shards", small_tokenizer)["text"]["tokenizer"])
    words = [Word("extraordinarily", 0.10, 0.90, speaker="A"), Word(blank, 0.20, 0.30, speaker="A"),
             Word("two\nlines", 1.00, 1.40, speaker="A"), Word("zero", 1.5, 1.5, speaker="A"),
             Word("other", 1.6, 1.9, speaker="B"), Word("end", 2.0, 2.3, speaker="A")]
    main = [w for w in words if w.speaker == "A"]
    ours = text_stream(main, 2.5, tokenize, PAD, EPAD).tolist()
    alignments = [[w.word, [w.start, w.end], "SPEAKER_MAIN" if w.speaker == "A" else w.speaker] for w in words]
    assert ours == interleave_main_only(processor, alignments, 32, PAD, EPAD)
    assert len(processor.encode("extraordinarily")) > 2  # so the blank word has pending tokens to cancel


def test_cut_segments_text_streams_equal_moshi_finetune_frame_for_frame(shared_data, small_tokenizer, processor):
    from moshi_data.pipeline.audio.recording import RecordingProcessor

    overrides = small_tokenizer + ["segment.max_duration_s=4.3", "segment.min_cut_s=1.5", "filters.min_words=1",
                                   "filters.min_speech_ratio=0.0", "filters.min_snr_db=-100"]
    config = load_config("audio_shards", overrides)
    job = RecordingProcessor(config)
    clips = shared_data / "diarization"
    checked = off_by_float = 0
    for path in (clips / "stereo_conversation" / "michaelandsickmichael.wav", clips / "pyannote_sample" / "sample.wav"):
        result = job.process(AudioSource(path.stem, str(path)))
        assert result.outcome == "kept", result.rejects
        assert len(result.records) >= 5
        for _, record in result.records:
            sample = decode_sample(record)
            samples = sample.audio.shape[1]
            _, files = export_sample(sample, "data_stereo", "SPEAKER_MAIN")
            alignments = json.loads(dict(files)[f"data_stereo/{sample.key}.json"])["alignments"]
            expected = interleave_main_only(processor, alignments, -(-samples // 1920), PAD, EPAD)
            assert sample.text.tolist() == expected, sample.key
            assert sample.other_text.shape == sample.text.shape
            checked += 1
            off_by_float += int(np.ceil((sample.meta["end_s"] - sample.meta["offset_s"]) * 12.5)) != len(expected)
    assert checked >= 10
    assert off_by_float > 0  # some of these segments got one frame too many when counted from float seconds
