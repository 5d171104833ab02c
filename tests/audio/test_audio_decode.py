"""Ingest: listing (folder, glob, manifest) and decoding of good and bad inputs."""
from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf

from moshi_data.pipeline.audio.decode import AudioRejected, decode, list_sources, read_pcm, recording_id_for
from moshi_data.pipeline.config import load_config

INGEST = load_config("audio_shards")["ingest"]


@pytest.mark.parametrize("name", ["wav", "flac", "mp3", "opus", "m4a", "wrong_extension"])
def test_common_formats_decode_to_24k_and_16k(bad_inputs, name):
    audio = decode(str(bad_inputs[name]), INGEST)
    assert audio.audio24.dtype == np.float32 and audio.audio24.shape[0] == 1
    assert abs(audio.duration - 2.5) < 0.03, audio.info
    assert abs(audio.audio16.shape[1] / 16_000 - audio.duration) < 0.01
    peak_hz = np.argmax(np.abs(np.fft.rfft(audio.audio24[0]))) * 24_000 / audio.audio24.shape[1]
    assert abs(peak_hz - 440) < 5  # the tone survives decoding and resampling
    if name == "wrong_extension":
        assert audio.info["format"] == "wav"  # decoded by content, not by name


def test_phone_audio_is_upsampled_and_six_channels_downmixed(bad_inputs):
    phone = decode(str(bad_inputs["phone8k"]), INGEST)
    assert phone.info["sample_rate"] == 8000 and phone.audio24.shape == (1, 48_000)
    surround = decode(str(bad_inputs["surround6"]), INGEST)
    assert surround.info["downmixed_from_channels"] == 6 and surround.audio24.shape[0] == 1
    with pytest.raises(AudioRejected) as error:
        decode(str(bad_inputs["surround6"]), dict(INGEST, multichannel="reject"))
    assert error.value.reason == "too_many_channels"
    with pytest.raises(AudioRejected) as error:
        decode(str(bad_inputs["phone8k"]), dict(INGEST, min_sample_rate=16000))
    assert error.value.reason == "sample_rate_too_low"


def test_pure_silence_decodes_and_is_left_to_the_filters(bad_inputs):
    silence = decode(str(bad_inputs["silence"]), INGEST)
    assert silence.audio24.shape == (1, 72_000) and not silence.audio24.any()


@pytest.mark.parametrize(
    "name, reason",
    [("zero_length", "empty_file"), ("corrupt", "decode_error"), ("truncated", "truncated"), ("text_named", "decode_error")],
)
def test_bad_files_are_rejected_with_a_reason(bad_inputs, name, reason):
    with pytest.raises(AudioRejected) as error:
        decode(str(bad_inputs[name]), INGEST)
    assert error.value.reason == reason and error.value.detail


def test_missing_file_is_rejected(tmp_path):
    with pytest.raises(AudioRejected) as error:
        decode(str(tmp_path / "absent.wav"), INGEST)
    assert error.value.reason == "missing_file"


def test_too_long_is_rejected(bad_inputs):
    with pytest.raises(AudioRejected) as error:
        decode(str(bad_inputs["wav"]), dict(INGEST, max_duration_s=1.0))
    assert error.value.reason == "too_long"


def test_stereo_is_kept_and_chunked_reads_deinterleave_exactly(tmp_path):
    rng = np.random.default_rng(3)
    stereo = (0.2 * rng.standard_normal((24_000, 2))).astype(np.float32)
    path = tmp_path / "stereo.wav"
    sf.write(path, stereo, 24_000, subtype="FLOAT")
    # an odd chunk size forces partial frames to be carried between reads
    audio = read_pcm(str(path), 24_000, 2, expected_seconds=0.2, chunk_bytes=4100, timeout_s=60)
    assert audio.shape == (2, 24_000)
    assert np.array_equal(audio, stereo.T)


def test_listing_folder_glob_and_manifest(bad_inputs, tmp_path):
    folder = bad_inputs["wav"].parent
    sources, rejects = list_sources(str(folder), INGEST["extensions"])
    ids = [s.recording_id for s in sources]
    assert ids == sorted(ids) and "tone" in ids and "text_named" in ids and "wrong_extension" in ids
    assert rejects == []  # tone_flac, tone_mp3... have distinct ids
    globbed, _ = list_sources(str(folder / "tone*"), INGEST["extensions"])
    assert [s.recording_id for s in globbed] == ["tone", "tone_flac", "tone_m4a", "tone_mp3", "tone_opus"]
    manifest = tmp_path / "list.jsonl"
    lines = [
        {"path": str(bad_inputs["wav"]), "id": "custom"},
        {"path": "relative.wav", "speakers": ["alice", "bob"]},
        {"path": str(bad_inputs["flac"]), "id": "custom"},
        {"no_path": 1},
    ]
    manifest.write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    sources, rejects = list_sources(str(manifest), INGEST["extensions"])
    assert [(s.recording_id, s.speakers) for s in sources] == [("custom", None), ("relative", ("alice", "bob"))]
    assert sources[1].path == str(tmp_path / "relative.wav")
    assert sorted(r["reason"] for r in rejects) == ["bad_manifest_line", "duplicate_recording_id"]
    assert recording_id_for("s3://bucket/a/b.c.flac") == "b.c" and recording_id_for("/x/trñ00.wav") == "trñ00"


def test_folder_lists_audio_extensions_only_and_single_files_whatever_their_name(tmp_path, bad_inputs):
    (tmp_path / "notes.txt").write_text("hi")
    assert list_sources(str(tmp_path), INGEST["extensions"]) == ([], [])
    sources, _ = list_sources(str(bad_inputs["text_named"]), INGEST["extensions"])
    assert [s.recording_id for s in sources] == ["text_named"]
    with pytest.raises(FileNotFoundError):
        list_sources(str(tmp_path / "absent"), INGEST["extensions"])
