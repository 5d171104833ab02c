"""Two-stream construction (Moshi paper section 4.3): main speaker vs everyone else.

- mono (or a stereo mix): main = input masked to the main speaker's turns, other = input - main,
  so main + other reconstructs the input exactly;
- native stereo with one talker per channel (Fisher-like): the channels are kept as they are and
  the main speaker is one of the two channels.
"""
from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass, field
from typing import Optional, Sequence

import numpy as np

from moshi_data.pipeline.audio.types import Turn, Word

# streams.main_speaker: random = the paper (one speaker drawn, seeded), most_speech = the speaker with the
# most speech, each = every speaker with enough speech is the main speaker of its own sample.
MAIN_SPEAKER_POLICIES = ("random", "most_speech", "each")
MAIN_SPEAKER_MODES = ("random", "most_speech", "most_talkative")  # pick_main_speaker; most_talkative = most_speech


def speaking_time(turns: Sequence[Turn]) -> dict[str, float]:
    """Total turn duration per speaker (overlaps counted for each speaker)."""
    totals: dict[str, float] = {}
    for turn in turns:
        totals[turn.speaker] = totals.get(turn.speaker, 0.0) + max(0.0, turn.end - turn.start)
    return totals


def recording_seed(recording_id: str, seed: int) -> int:
    """Deterministic per-recording seed (independent of worker, order and Python hash salt)."""
    digest = hashlib.sha256(f"{seed}:{recording_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big")


def pick_main_speaker(speakers: Sequence[str], turns: Sequence[Turn], mode: str, recording_id: str, seed: int) -> str:
    """Main speaker: random (seeded from the recording id) or the most talkative one."""
    candidates = sorted(set(speakers))
    if not candidates:
        raise ValueError("no speaker to choose a main speaker from")
    if mode == "random":
        return random.Random(recording_seed(recording_id, seed)).choice(candidates)
    if mode in ("most_speech", "most_talkative"):
        totals = speaking_time(turns)
        return min(candidates, key=lambda s: (-round(totals.get(s, 0.0), 6), s))
    raise ValueError(f"streams.main_speaker must be one of {MAIN_SPEAKER_MODES}, got {mode!r}")


def speech_seconds(turns: Sequence[Turn]) -> dict[str, float]:
    """Seconds during which each speaker speaks (union of the speaker's turns, overlaps of one speaker once)."""
    by_speaker: dict[str, list[tuple[float, float]]] = {}
    for turn in turns:
        if turn.end > turn.start:
            by_speaker.setdefault(turn.speaker, []).append((turn.start, turn.end))
    totals = {}
    for speaker, intervals in by_speaker.items():
        total, reach = 0.0, float("-inf")
        for start, end in sorted(intervals):
            if end > reach:
                total += end - max(start, reach)
                reach = end
        totals[speaker] = total
    return totals


@dataclass(frozen=True)
class MainSpeakers:
    """Main speakers chosen for one segment (one sample each); none = the segment is filtered for ``reason``."""

    speakers: list[str]
    speech_s: dict[str, float] = field(default_factory=dict)
    words: dict[str, int] = field(default_factory=dict)
    reason: Optional[str] = None
    detail: str = ""


def validate_main_speaker_policy(policy: str) -> str:
    if policy not in MAIN_SPEAKER_POLICIES:
        raise ValueError(f"streams.main_speaker must be one of {MAIN_SPEAKER_POLICIES}, got {policy!r}")
    return policy


def choose_main_speakers(speakers: Sequence[str], turns: Sequence[Turn], words: Sequence[Word], policy: str,
                         min_speech_s: float, min_words: int, sample_id: str, seed: int) -> MainSpeakers:
    """Main speaker(s) of one segment (``turns`` and ``words`` of that segment) under ``policy``.

    Only speakers with at least ``min_speech_s`` seconds of speech and ``min_words`` words in the segment
    may be main: a sample whose main stream holds (almost) nothing is never written. ``random`` draws one
    of them, seeded by ``sample_id`` (recording id + segment index) and ``seed``; ``most_speech`` takes
    the one with most speech (then most words, then the smallest id); ``each`` takes all of them.
    """
    validate_main_speaker_policy(policy)
    speech = speech_seconds(turns)
    counts: dict[str, int] = {}
    for word in words:
        counts[str(word.speaker)] = counts.get(str(word.speaker), 0) + 1
    candidates = sorted(set(speakers))
    speech = {s: round(speech.get(s, 0.0), 3) for s in candidates}
    counts = {s: counts.get(s, 0) for s in candidates}
    eligible = [s for s in candidates if speech[s] >= min_speech_s and counts[s] >= min_words]
    if not eligible:
        best = min(candidates, key=lambda s: (-speech[s], -counts[s], s)) if candidates else None
        detail = (f"no speaker reaches {min_speech_s:g} s and {min_words} words" +
                  (f" (most: {best} {speech[best]:.2f} s, {counts[best]} words)" if best else " (no speaker)"))
        return MainSpeakers([], speech, counts, "main_speaker_too_little_speech", detail)
    if policy == "random":
        chosen = [random.Random(recording_seed(sample_id, seed)).choice(eligible)]
    elif policy == "most_speech":
        chosen = [min(eligible, key=lambda s: (-speech[s], -counts[s], s))]
    else:
        chosen = eligible
    return MainSpeakers(chosen, speech, counts)


def activity_mask(turns: Sequence[Turn], speaker: str, n_samples: int, sample_rate: int) -> np.ndarray:
    """Boolean sample mask, True where ``speaker`` has a turn."""
    mask = np.zeros(n_samples, dtype=bool)
    for turn in turns:
        if turn.speaker != speaker:
            continue
        start = max(0, int(round(turn.start * sample_rate)))
        end = min(n_samples, int(round(turn.end * sample_rate)))
        if end > start:
            mask[start:end] = True
    return mask


def mask_streams(audio: np.ndarray, turns: Sequence[Turn], main_speaker: str, sample_rate: int) -> np.ndarray:
    """Split a mono signal into ``[2, samples]``: main speaker's turns, and the rest (input - main)."""
    if audio.ndim != 1:
        raise ValueError(f"mask_streams expects mono audio, got shape {audio.shape}")
    mask = activity_mask(turns, main_speaker, audio.shape[0], sample_rate)
    streams = np.empty((2, audio.shape[0]), dtype=audio.dtype)
    np.multiply(audio, mask, out=streams[0])
    np.subtract(audio, streams[0], out=streams[1])
    return streams


def channel_streams(audio: np.ndarray, main_channel: int) -> np.ndarray:
    """Native two-talker stereo: ``[2, samples]`` with the main channel first."""
    if audio.ndim != 2 or audio.shape[0] != 2:
        raise ValueError(f"channel_streams expects [2, samples], got shape {audio.shape}")
    return audio[[main_channel, 1 - main_channel]]


def one_talker_per_channel(audio: np.ndarray, sample_rate: int, max_correlation: float, min_dominance_db: float) -> bool:
    """Whether a stereo signal looks like one talker per channel rather than a stereo mix.

    Channels that are nearly the same signal (correlation above ``max_correlation``) are a mix. Otherwise
    the median level difference between channels over active 100 ms frames must reach ``min_dominance_db``
    (each talker is much louder on their own channel).
    """
    if audio.ndim != 2 or audio.shape[0] != 2:
        return False
    left, right = audio[0].astype(np.float64), audio[1].astype(np.float64)
    denominator = np.sqrt(np.dot(left, left) * np.dot(right, right))
    if denominator == 0:
        return False
    if abs(np.dot(left, right)) / denominator > max_correlation:
        return False
    frame = max(1, sample_rate // 10)
    n = (audio.shape[1] // frame) * frame
    if n == 0:
        return False
    energy = (audio[:, :n].astype(np.float64) ** 2).reshape(2, -1, frame).mean(axis=2) + 1e-12
    level = 10 * np.log10(energy)
    active = level.max(axis=0) > level.max() - 40
    if not active.any():
        return False
    return float(np.median(np.abs(level[0, active] - level[1, active]))) >= min_dominance_db
