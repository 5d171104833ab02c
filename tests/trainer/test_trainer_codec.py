"""Mimi through the moshi package (installed --no-deps) on torch 2.13 / numpy 2.4."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from moshi_data.pipeline.audio.codec import code_frames, encode_streams, load_codec


def test_trainer_codec_shapes_and_stand_in(codec):
    assert not codec.pretrained and codec.source == "random-init:seed=1234"  # offline: no hub weights
    audio = np.random.default_rng(0).standard_normal((2, 24_000 + 100)).astype(np.float32) * 0.1
    codes = encode_streams(codec, audio)
    assert codes.dtype == np.int16 and codes.shape == (16, code_frames(24_100)) == (16, 13)
    assert codes.min() >= 0 and codes.max() < 2048
    assert (encode_streams(codec, audio) == codes).all()
    with pytest.raises(ValueError, match="24000 Hz"):
        encode_streams(codec, audio, sample_rate=16_000)
    with pytest.raises(ValueError, match=r"\[2, samples\]"):
        encode_streams(codec, audio[:1])


def test_trainer_codec_missing_local_weights_is_an_error(tiny_config):
    with pytest.raises(FileNotFoundError, match="codec weights not found"):
        load_codec({**tiny_config["codec"], "weights": "/nonexistent/mimi.safetensors"})


def test_trainer_codec_offline_hub_falls_back_loudly(tiny_config, caplog, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with caplog.at_level("WARNING", logger="moshi_data.pipeline.audio.codec"):
        codec = load_codec({**tiny_config["codec"], "calibration_seconds": 1.0})
    assert not codec.pretrained
    assert "RANDOMLY INITIALISED Mimi" in caplog.text and "kyutai/moshiko-pytorch-bf16" in caplog.text


def test_trainer_codec_ignores_the_callers_thread_count(codec, tiny_config):
    """Loaded and run on ``codec.threads`` threads: a caller on 2 threads gets the same Mimi and codes.

    (Calibrating the stand-in on 2 threads instead of 1 changes its codebooks, and so ~0.2 % of the
    codes: the audio job's codes.npy then differed from the trainer's DataLoader workers, on 1 thread.)
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        fresh = load_codec(tiny_config["codec"])
        assert torch.get_num_threads() == 2
        audio = np.random.default_rng(1).standard_normal((2, 24_000)).astype(np.float32) * 0.1
        codes = encode_streams(fresh, audio)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(threads)
    expected, loaded = codec.model.state_dict(), fresh.model.state_dict()
    assert all(torch.equal(expected[name], loaded[name]) for name in expected)
    assert (codes == encode_streams(codec, audio)).all()
