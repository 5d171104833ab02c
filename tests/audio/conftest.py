"""Audio fixtures built deterministically under tmp: espeak-ng two-voice conversations, bad inputs, a small tokenizer."""
from __future__ import annotations

import io
import json
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

ESPEAK_RATE = 22_050
VOICES = {"A": "en-us", "B": "en-us+f3"}
SCRIPT = [
    ("A", "hello there my friend how are you"),
    ("B", "good morning I am fine thank you"),
    ("A", "the weather is lovely today"),
]
UTTERANCE_GAP_S = 0.7
WORD_GAP_S = 0.08


@dataclass(frozen=True)
class TrueWord:
    word: str
    start: float
    end: float
    speaker: str


def _espeak_word(word: str, voice: str) -> np.ndarray:
    wav = subprocess.run(["espeak-ng", "-v", voice, "-s", "150", "--stdout", word], capture_output=True, check=True).stdout
    audio, rate = sf.read(io.BytesIO(wav), dtype="float32")
    assert rate == ESPEAK_RATE
    active = np.flatnonzero(np.abs(audio) > 0.01)
    return audio[active[0] : active[-1] + 1]


def build_conversation(lead_in_s: float = 0.5, tail_s: float = 0.8) -> tuple[np.ndarray, list[TrueWord]]:
    """Two espeak-ng voices taking turns, one word at a time: ``[2, n]`` (A left, B right) and the true words."""
    pieces: list[tuple[int, int, np.ndarray, str, str]] = []
    position = int(lead_in_s * ESPEAK_RATE)
    for speaker, text in SCRIPT:
        for word in text.split():
            audio = _espeak_word(word, VOICES[speaker])
            pieces.append((0 if speaker == "A" else 1, position, audio, word, speaker))
            position += audio.size + int(WORD_GAP_S * ESPEAK_RATE)
        position += int(UTTERANCE_GAP_S * ESPEAK_RATE)
    stereo = np.zeros((2, position + int(tail_s * ESPEAK_RATE)), dtype=np.float32)
    truth = []
    for channel, start, audio, word, speaker in pieces:
        stereo[channel, start : start + audio.size] = 0.6 * audio
        truth.append(TrueWord(word, start / ESPEAK_RATE, (start + audio.size) / ESPEAK_RATE, speaker))
    return stereo, truth


@pytest.fixture(scope="session")
def conversation(tmp_path_factory) -> dict:
    """``mono.wav`` (the two voices mixed), ``stereo.wav`` (one voice per channel) and the true words."""
    folder = tmp_path_factory.mktemp("conversation")
    stereo, truth = build_conversation()
    sf.write(folder / "mono.wav", stereo.sum(axis=0), ESPEAK_RATE, subtype="PCM_16")
    sf.write(folder / "stereo.wav", stereo.T, ESPEAK_RATE, subtype="PCM_16")
    return {"folder": folder, "mono": folder / "mono.wav", "stereo": folder / "stereo.wav", "truth": truth}


def _sox(*args: str) -> None:
    subprocess.run(["sox", *args], check=True, capture_output=True)


@pytest.fixture(scope="session")
def bad_inputs(tmp_path_factory) -> dict[str, Path]:
    """Edge-case files generated with sox/ffmpeg/numpy; name -> path."""
    folder = tmp_path_factory.mktemp("bad_inputs")
    files = {}
    _sox("-n", "-r", "22050", "-c", "1", str(folder / "tone.wav"), "synth", "2.5", "sine", "440", "vol", "0.5")
    for extension in ("flac", "mp3", "opus", "m4a"):
        subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(folder / "tone.wav"), str(folder / f"tone_{extension}.{extension}")], check=True)
        files[extension] = folder / f"tone_{extension}.{extension}"
    files["wav"] = folder / "tone.wav"
    _sox("-n", "-r", "8000", "-c", "1", str(folder / "phone8k.wav"), "synth", "2", "sine", "300")
    _sox("-n", "-r", "48000", "-c", "6", str(folder / "surround6.wav"), "synth", "2", "sine", "440")
    _sox("-n", "-r", "16000", "-c", "1", str(folder / "silence.wav"), "trim", "0", "3")
    (folder / "wrong_extension.mp3").write_bytes((folder / "tone.wav").read_bytes())
    (folder / "truncated.wav").write_bytes((folder / "tone.wav").read_bytes()[:20_000])
    (folder / "zero_length.wav").write_bytes(b"")
    (folder / "corrupt.wav").write_bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    (folder / "text_named.flac").write_text("not audio at all\n")
    for name in ("phone8k", "surround6", "silence", "truncated", "zero_length", "corrupt"):
        files[name] = folder / f"{name}.wav"
    files["wrong_extension"] = folder / "wrong_extension.mp3"
    files["text_named"] = folder / "text_named.flac"
    return files


@pytest.fixture(scope="session")
def small_tokenizer(tmp_path_factory) -> list[str]:
    """Config overrides pointing at a small SentencePiece model trained (for real) under tmp."""
    from moshi_data.classifiers.tokenizer import train_tokenizer
    from moshi_data.pipeline.config import load_config

    prefix = tmp_path_factory.mktemp("tokenizer") / "spm"
    overrides = [
        f"tokenizer.output={prefix}", f"text.tokenizer={prefix}.model", "tokenizer.vocab_size=2000",
        "tokenizer.input_sentence_size=60000",
        "tokenizer.exclude=[multilingual, scientific, news, educational, stackexchange, health_medical, forum_conversation, legal_government]",
    ]
    train_tokenizer(load_config("audio_shards", overrides))
    return overrides


def read_json(path: Path):
    return json.loads(Path(path).read_text())


IN_PROCESS = ["--runner=DirectRunner", "--direct_running_mode=in_memory", "--direct_num_workers=1"]


@pytest.fixture(scope="session")
def conversation_run(conversation, bad_inputs, small_tokenizer, tmp_path_factory) -> dict:
    """The Beam job run once in-process on the conversations plus a silent and a corrupt file.

    ``codes.enabled=true``: shards carry ``codes.npy`` (Mimi is the offline random stand-in), so the
    byte-identity test also covers codes; the diarization-clip job test runs with codes off (default).
    """
    from moshi_data.beam_jobs import audio_shards
    from moshi_data.pipeline.config import load_config

    inputs = tmp_path_factory.mktemp("conversation_inputs")
    for name in ("mono", "stereo"):
        (inputs / f"{name}.wav").write_bytes(conversation[name].read_bytes())
    (inputs / "silence.wav").write_bytes(bad_inputs["silence"].read_bytes())
    (inputs / "corrupt.wav").write_bytes(bad_inputs["corrupt"].read_bytes())
    (inputs / "notes.txt").write_text("not listed: no audio extension\n")
    config = load_config("audio_shards", small_tokenizer + ["streams.main_speaker=most_speech", "codes.enabled=true"])
    output = tmp_path_factory.mktemp("conversation_run") / "out"
    stats = audio_shards.run(str(inputs), str(output), config, IN_PROCESS)
    return {"inputs": inputs, "output": output, "config": config, "stats": stats}
