"""Diarization development set: every real recording with a reference, plus simulated conversations.

* Real: every recording of ``../shared/data/diarization`` that has a reference segmentation (pyannote
  sample, the 12 AMI-like debug clips, NeMo's AN4 pair, Picovoice's 3-speaker test, the stereo
  michael/sickmichael recording mixed to mono with its TextGrid utterances as turns). ``empty.wav``
  (1 s of silence) has no speech to score; the evaluation checks separately that it gives no turn.
* Folds: real recordings ordered by a hash of their uri are dealt round robin into ``folds`` groups.
* Simulated: for each fold, conversations built only from single-speaker regions (reference: one
  speaker and nobody else) of that fold's real recordings, so no audio crosses folds. Each has 2 to 5
  speakers taking turns with controlled pauses and overlaps, one level per speaker, a given length,
  all drawn from a seeded generator: the same settings give the same audio and reference.

Speaker identities are global: AMI ids name the same person in every clip, other sets are prefixed
with their folder.
"""
from __future__ import annotations

import hashlib
import random
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from moshi_data.pipeline.audio.types import MODEL_SAMPLE_RATE, Turn


@dataclass
class DevRecording:
    """One scored recording: 16 kHz mono audio, reference turns, its fold and kind (real | simulated)."""

    uri: str
    audio: np.ndarray
    reference: list[Turn]
    fold: int
    kind: str
    sources: tuple[str, ...] = ()

    @property
    def duration(self) -> float:
        return self.audio.size / MODEL_SAMPLE_RATE


def load_audio_16k(path: Path) -> np.ndarray:
    """Mono float32 16 kHz samples of an audio file (channels averaged, polyphase resampling)."""
    import soundfile as sf
    from scipy.signal import resample_poly

    samples, rate = sf.read(str(path), dtype="float32", always_2d=True)
    mono = samples.mean(axis=1)
    if rate != MODEL_SAMPLE_RATE:
        divisor = np.gcd(int(rate), MODEL_SAMPLE_RATE)
        mono = resample_poly(mono, MODEL_SAMPLE_RATE // divisor, int(rate) // divisor).astype(np.float32)
    return np.ascontiguousarray(mono, dtype=np.float32)


def ascii_uri(name: str) -> str:
    """RTTM uri of a file stem: accents dropped (the debug protocol's trñ00.wav is uri trn00)."""
    return "".join(c for c in unicodedata.normalize("NFKD", name) if not unicodedata.combining(c))


def speaker_groups(speakers_by_uri: Mapping[str, Iterable[str]]) -> list[list[str]]:
    """Recordings joined when they share a reference speaker (transitively): the AMI debug clips reuse
    meeting participants (trn00-trn03 share MEE068 / MÉO069, trn07 and trn08 have the same four), so a
    fold must hold all recordings of a voice or the held-out folds hear voices the settings were chosen on."""
    parent = {uri: uri for uri in speakers_by_uri}

    def root(uri: str) -> str:
        while parent[uri] != uri:
            parent[uri] = parent[parent[uri]]
            uri = parent[uri]
        return uri

    first_seen: dict[str, str] = {}
    for uri in sorted(speakers_by_uri):
        for speaker in speakers_by_uri[uri]:
            other = first_seen.setdefault(speaker, uri)
            parent[root(uri)] = root(other)
    groups: dict[str, list[str]] = {}
    for uri in sorted(speakers_by_uri):
        groups.setdefault(root(uri), []).append(uri)
    return list(groups.values())


def assign_folds(speakers_by_uri: Mapping[str, Iterable[str]], folds: int) -> dict[str, int]:
    """Deterministic folds in which no reference speaker crosses folds: groups of recordings that share a
    speaker (``speaker_groups``), largest first (ties: sha256 of their uris), each dealt to the fold that
    holds the fewest recordings so far (ties: the lowest fold)."""
    def order(group: list[str]) -> tuple:
        return -len(group), hashlib.sha256("\n".join(group).encode()).hexdigest()

    sizes = [0] * folds
    fold_by_uri: dict[str, int] = {}
    for group in sorted(speaker_groups(speakers_by_uri), key=order):
        fold = min(range(folds), key=lambda f: (sizes[f], f))
        sizes[fold] += len(group)
        fold_by_uri.update({uri: fold for uri in group})
    return fold_by_uri


def _textgrid_turns(path: Path) -> list[Turn]:
    from moshi_data.pipeline.audio.evaluate import parse_textgrid

    tiers = parse_textgrid(path.read_text(encoding="utf-8", errors="replace"))
    return sorted((Turn(round(s, 3), round(e, 3), f"stereo_conversation:{name}")
                   for name, intervals in tiers.items() for s, e, label in intervals if label.strip() and e > s),
                  key=lambda t: (t.start, t.end, t.speaker))


def real_cases(data: Path) -> list[tuple[str, Path, Any]]:
    """(uri, wav, reference turns) of every real recording with a reference in ``data/diarization``."""
    from moshi_data.pipeline.audio.rttm import read_rttm

    root = data / "diarization"

    def rttm(path: Path, uri: str, prefix: str = "") -> list[Turn]:
        turns = read_rttm(path.read_text(encoding="utf-8"))[uri]
        return [Turn(t.start, t.end, prefix + t.speaker) for t in turns]

    cases = [("sample", root / "pyannote_sample/sample.wav", rttm(root / "pyannote_sample/sample.rttm", "sample", "pyannote_sample:"))]
    ami = root / "pyannote_ami_debug"
    wav_by_uri = {ascii_uri(p.stem): p for p in sorted(ami.glob("*.wav"))}
    for subset in ("train", "development"):
        for listed in (ami / f"debug.{subset}.lst").read_text(encoding="utf-8").split():
            uri = ascii_uri(listed)
            if uri not in wav_by_uri:
                raise FileNotFoundError(f"no wav for uri {uri} in {ami}")
            cases.append((uri, wav_by_uri[uri], rttm(ami / f"debug.{subset}.rttm", uri)))
    cases.append(("an4", root / "nemo_an4_diarize_test/an4_diarize_test.wav",
                  rttm(root / "nemo_an4_diarize_test/an4_diarize_test.rttm", "an4", "an4:")))
    cases.append(("falcon", root / "picovoice_falcon_test/test.wav",
                  rttm(root / "picovoice_falcon_test/test.rttm", "test", "falcon:")))
    stereo = root / "stereo_conversation"
    cases.append(("michael", stereo / "michaelandsickmichael.wav", _textgrid_turns(stereo / "michaelandsickmichael.TextGrid")))
    return cases


def single_speaker_regions(reference: Sequence[Turn], min_s: float) -> list[tuple[float, float, str]]:
    """(start, end, speaker) stretches where exactly one reference speaker talks, at least ``min_s`` long."""
    edges = sorted({t.start for t in reference} | {t.end for t in reference})
    regions: list[list] = []
    for start, end in zip(edges, edges[1:]):
        active = {t.speaker for t in reference if t.start < end and t.end > start}
        if len(active) != 1:
            continue
        (speaker,) = active
        if regions and regions[-1][2] == speaker and abs(regions[-1][1] - start) < 1e-9:
            regions[-1][1] = end
        else:
            regions.append([start, end, speaker])
    return [(s, e, spk) for s, e, spk in regions if e - s >= min_s]


def simulate_conversation(pool: Mapping[str, list[np.ndarray]], uri: str, fold: int, seed: int,
                          settings: Mapping[str, Any]) -> DevRecording:
    """A conversation of 2-5 speakers from ``pool`` (speaker -> single-speaker clips), seeded by ``seed``."""
    rng = random.Random(seed)
    eligible = sorted(s for s, clips in pool.items() if clips)
    count = rng.randint(int(settings["min_speakers"]), min(int(settings["max_speakers"]), len(eligible)))
    speakers = rng.sample(eligible, count)
    gains = {s: 10 ** (rng.uniform(-settings["level_range_db"], settings["level_range_db"]) / 20) for s in speakers}
    next_clip = {s: rng.randrange(len(pool[s])) for s in speakers}
    target = int(settings["duration_s"] * MODEL_SAMPLE_RATE)
    pieces, reference, position, previous, speech_end = [], [], int(0.5 * MODEL_SAMPLE_RATE), None, 0
    while speech_end < target:  # on the last turn's end, not the next start: a pause must not end it short
        speaker = rng.choice([s for s in speakers if s != previous])
        clip = pool[speaker][next_clip[speaker]]
        next_clip[speaker] = (next_clip[speaker] + 1) % len(pool[speaker])
        clip = clip[: int(settings["max_turn_s"] * MODEL_SAMPLE_RATE)]
        rms = float(np.sqrt(np.mean(clip.astype(np.float64) ** 2))) or 1.0
        clip = (clip * (settings["rms"] / rms) * gains[speaker]).astype(np.float32)
        pieces.append((position, clip))
        reference.append(Turn(round(position / MODEL_SAMPLE_RATE, 3), round((position + clip.size) / MODEL_SAMPLE_RATE, 3), speaker))
        end = position + clip.size
        speech_end = max(speech_end, end)
        if rng.random() < settings["overlap_probability"]:
            gap = -rng.uniform(settings["overlap_min_s"], settings["overlap_max_s"])
        else:
            gap = rng.uniform(settings["pause_min_s"], settings["pause_max_s"])
        position = max(position + int(0.3 * clip.size), end + int(gap * MODEL_SAMPLE_RATE))
        previous = speaker
    audio = np.zeros(max(p + c.size for p, c in pieces) + int(0.5 * MODEL_SAMPLE_RATE), dtype=np.float32)
    for start, clip in pieces:
        audio[start: start + clip.size] += clip
    peak = float(np.abs(audio).max())
    if peak > 0.99:
        audio *= 0.99 / peak
    return DevRecording(uri, audio, sorted(reference, key=lambda t: (t.start, t.end, t.speaker)), fold, "simulated",
                        tuple(speakers))


def build_devset(data: Path, settings: Mapping[str, Any]) -> list[DevRecording]:
    """Real recordings (with folds) and the simulated conversations of each fold."""
    folds = int(settings["folds"])
    cases = real_cases(data)
    fold_by_uri = assign_folds({uri: {t.speaker for t in reference} for uri, _, reference in cases}, folds)
    recordings = [DevRecording(uri, load_audio_16k(path), sorted(reference, key=lambda t: (t.start, t.end, t.speaker)),
                               fold_by_uri[uri], "real", (uri,))
                  for uri, path, reference in cases]
    simulation = settings["simulation"]
    for fold in range(folds):
        pool: dict[str, list[np.ndarray]] = {}
        for recording in (r for r in recordings if r.fold == fold):
            for start, end, speaker in single_speaker_regions(recording.reference, float(simulation["min_region_s"])):
                pool.setdefault(speaker, []).append(
                    recording.audio[int(start * MODEL_SAMPLE_RATE): int(end * MODEL_SAMPLE_RATE)])
        if len([s for s in pool if pool[s]]) < int(simulation["min_speakers"]):
            continue
        for index in range(int(simulation["per_fold"])):
            seed = int.from_bytes(hashlib.sha256(f"{simulation['seed']}:{fold}:{index}".encode()).digest()[:8], "big")
            recordings.append(simulate_conversation(pool, f"sim{fold}_{index}", fold, seed, simulation))
    return recordings
