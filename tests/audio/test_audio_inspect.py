"""`moshi-data inspect` and `show-sample` on the audio job's test run: rows per sample, the PNG, the WAV."""
from __future__ import annotations

import io
import json

import numpy as np
import soundfile as sf
from PIL import Image

from moshi_data.cli import main as cli
from moshi_data.pipeline.audio.inspect import inspect_audio, png_marks
from shard_samples import read_samples


def _samples(output):
    return read_samples(*sorted((output / "shards").glob("shard-*.tar")))


def test_one_row_per_sample_with_its_figures(conversation_run):
    output = conversation_run["output"]
    samples = _samples(output)
    result = inspect_audio(output)
    segments = conversation_run["stats"]["segments"]
    assert result["samples"] == len(samples) == segments.get("samples", segments["kept"]) > 0
    assert result["stats"]["recordings"] == conversation_run["stats"]["recordings"]
    for row, sample in zip(result["rows"], samples):
        pad = sample.meta["text"]["pad_id"]
        assert row["key"] == sample.key and row["words"] == len(sample.words)
        assert abs(row["duration_s"] - sample.audio.shape[1] / sample.sample_rate) < 1e-3
        assert row["text_frames_non_pad"] == int((sample.text != pad).sum()) > 0
        assert row["speakers"] == len({w["speaker"] for w in sample.words})
        main_time = sum(w["end"] - w["start"] for w in sample.words if w["speaker"] == sample.meta["main_speaker"])
        assert abs(row["main_share"] - main_time / sum(w["end"] - w["start"] for w in sample.words)) < 1e-3
    # a single shard gives the same rows
    shard = sorted((output / "shards").glob("shard-*.tar"))[0]
    assert [r["key"] for r in inspect_audio(shard)["rows"]] == [s.key for s in read_samples(shard)]


def test_show_sample_draws_every_word_and_token_and_exports_stereo(conversation_run, tmp_path, capsys):
    output = conversation_run["output"]
    shard = sorted((output / "shards").glob("shard-*.tar"))[0]
    sample = max(read_samples(shard), key=lambda s: len(s.words))
    picture, wav = tmp_path / "sample.png", tmp_path / "sample.wav"
    assert cli(["show-sample", str(shard), "--key", sample.key, "--output", str(picture), "--wav", str(wav)]) == 0
    assert f"{len(sample.words)} words" in capsys.readouterr().out
    png = picture.read_bytes()
    image = Image.open(io.BytesIO(png))
    assert image.format == "PNG" and image.size[0] > 800 and image.size[1] > 300
    assert len(np.unique(np.asarray(image.convert("L")))) > 10  # not a blank canvas
    marks = png_marks(png)
    pad = sample.meta["text"]["pad_id"]
    non_pad = int((sample.text != pad).sum()) + (int((sample.other_text != pad).sum()) if sample.other_text is not None else 0)
    assert marks["words"] == len(sample.words) > 0 and marks["tokens"] == non_pad and marks["turns"] > 0
    audio, rate = sf.read(wav, dtype="float32", always_2d=True)
    assert rate == sample.sample_rate and audio.shape == (sample.audio.shape[1], 2)
    assert np.allclose(audio.T, sample.audio, atol=1 / 32768)


def test_errors_are_one_line(conversation_run, tmp_path, capsys):
    shard = sorted((conversation_run["output"] / "shards").glob("shard-*.tar"))[0]
    assert cli(["show-sample", str(shard), "--key", "nope", "--output", str(tmp_path / "x.png")]) == 2
    assert "no sample 'nope'" in capsys.readouterr().err
    assert cli(["inspect", str(shard), "--where", "a>1"]) == 2
    assert cli(["inspect", str(conversation_run["output"]), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["kind"] == "audio"
