"""Fixtures of the audio model stages: models load once per session; espeak-ng speech with known onsets."""
from __future__ import annotations

import io
import subprocess

import numpy as np
import pytest
import soundfile as sf
from scipy.signal import resample_poly

from moshi_data.pipeline.config import load_config

SAMPLE_RATE = 16_000


@pytest.fixture(scope="session")
def models_config() -> dict:
    return load_config("audio_models")


@pytest.fixture(scope="session")
def transcriber(models_config):
    from moshi_data.pipeline.audio.transcribe import Transcriber

    model = Transcriber(models_config)
    model.setup()
    return model


@pytest.fixture(scope="session")
def diarizer(models_config):
    from moshi_data.pipeline.audio.diarize import Diarizer

    model = Diarizer(models_config)
    model.setup()
    return model


@pytest.fixture(scope="session")
def sample_audio(shared_data) -> np.ndarray:
    from moshi_data.pipeline.audio.devset import load_audio_16k

    return load_audio_16k(shared_data / "diarization/pyannote_sample/sample.wav")


@pytest.fixture(scope="session")
def sample_turns(diarizer, sample_audio) -> list:
    """The offline default diarizer's turns of the pyannote sample (computed once: a full run takes ~30 s here)."""
    return diarizer.diarize(sample_audio)


def espeak_word(text: str, voice: str = "en-us") -> np.ndarray:
    """16 kHz espeak-ng rendering of ``text`` with the leading/trailing silence cut off."""
    wav = subprocess.run(["espeak-ng", "-v", voice, "-s", "150", "--stdout", text],
                         capture_output=True, check=True).stdout
    audio, rate = sf.read(io.BytesIO(wav), dtype="float32")
    audio = resample_poly(audio, 160, rate // 100).astype(np.float32) if rate != SAMPLE_RATE else audio
    active = np.flatnonzero(np.abs(audio) > 0.02 * np.abs(audio).max())
    return audio[active[0]: active[-1] + 1]


def synthesize(phrases: list[str], gaps: list[float], lead_in: float = 0.4, tail: float = 0.4
               ) -> tuple[np.ndarray, list[float]]:
    """Phrases rendered separately and joined with known silences; returns audio and true onsets (s)."""
    pieces, onsets, position = [np.zeros(int(lead_in * SAMPLE_RATE), np.float32)], [], int(lead_in * SAMPLE_RATE)
    for phrase, gap in zip(phrases, gaps):
        audio = 0.5 * espeak_word(phrase)
        onsets.append(position / SAMPLE_RATE)
        silence = np.zeros(int(gap * SAMPLE_RATE), np.float32)
        pieces += [audio, silence]
        position += audio.size + silence.size
    pieces.append(np.zeros(int(tail * SAMPLE_RATE), np.float32))
    return np.concatenate(pieces), onsets
