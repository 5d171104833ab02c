"""Quality filters for recordings and segments; each drop has one reason, counted by the job.

Thresholds come from the ``filters`` section of ``configs/audio_shards.yaml``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Optional, Sequence

import numpy as np

from moshi_data.pipeline.audio.segment import merge_intervals
from moshi_data.pipeline.audio.types import Word

SEGMENT_REASONS = (
    "too_short",
    "too_long",
    "no_words",
    "low_speech_ratio",
    "low_snr",
    "low_word_confidence",
)
RECORDING_REASONS = ("no_speech", "language")


@dataclass
class Verdict:
    """Outcome of the filters: ``reason`` is None when kept; ``metrics`` go to meta.json."""

    reason: Optional[str]
    metrics: dict[str, Any] = field(default_factory=dict)
    detail: str = ""


def speech_ratio(speech: Sequence[tuple[float, float]], duration: float) -> float:
    """Fraction of ``[0, duration)`` covered by the speech intervals."""
    if duration <= 0:
        return 0.0
    covered = sum(min(e, duration) - max(s, 0.0) for s, e in merge_intervals(speech) if min(e, duration) > max(s, 0.0))
    return covered / duration


def estimate_snr_db(
    audio: np.ndarray,
    sample_rate: int,
    speech: Sequence[tuple[float, float]],
    frame_s: float,
    min_noise_frames: int,
    noise_percentile: float,
    max_snr_db: float,
) -> Optional[float]:
    """Energy SNR: mean power of speech frames over the noise floor.

    The noise floor is the median power of non-speech frames when there are at least
    ``min_noise_frames`` of them, else the ``noise_percentile`` of all frame powers. Returns None
    when the audio has no speech frame; capped at ``max_snr_db`` (digital silence as noise).
    """
    signal = audio if audio.ndim == 1 else audio.sum(axis=0)
    frame = max(1, int(round(frame_s * sample_rate)))
    n_frames = signal.shape[0] // frame
    if n_frames == 0:
        return None
    power = (signal[: n_frames * frame].astype(np.float64) ** 2).reshape(n_frames, frame).mean(axis=1)
    centres = (np.arange(n_frames) + 0.5) * frame / sample_rate
    is_speech = np.zeros(n_frames, dtype=bool)
    for start, end in speech:
        is_speech |= (centres >= start) & (centres < end)
    if not is_speech.any():
        return None
    noise_frames = power[~is_speech]
    noise = float(np.median(noise_frames)) if noise_frames.size >= min_noise_frames else float(np.percentile(power, noise_percentile))
    signal_power = float(power[is_speech].mean())
    if noise <= 0:
        return max_snr_db
    excess = max(signal_power - noise, 1e-12)
    return float(min(max_snr_db, 10 * np.log10(excess / noise)))


def mean_confidence(words: Sequence[Word]) -> Optional[float]:
    """Mean ASR word confidence over words that have a score (None if none has one)."""
    scores = [w.score for w in words if w.score is not None]
    return float(np.mean(scores)) if scores else None


def check_recording(language: Optional[str], language_probability: Optional[float], n_words: int, config: Mapping[str, Any]) -> Verdict:
    """Recording-level filters: no speech at all, language not wanted."""
    if n_words == 0:
        return Verdict("no_speech", detail="no word transcribed")
    languages = config.get("languages") or []
    if languages and language is not None:
        probability = language_probability if language_probability is not None else 1.0
        if language not in languages or probability < config["min_language_probability"]:
            return Verdict("language", detail=f"{language} p={probability:.2f}")
    return Verdict(None)


def check_segment(
    audio: np.ndarray,
    sample_rate: int,
    duration: float,
    words: Sequence[Word],
    speech: Sequence[tuple[float, float]],
    config: Mapping[str, Any],
) -> Verdict:
    """Segment-level filters in a fixed order (first failing reason wins)."""
    ratio = speech_ratio(speech, duration)
    snr = estimate_snr_db(
        audio, sample_rate, speech, config["snr_frame_s"], config["snr_min_noise_frames"],
        config["snr_noise_percentile"], config["snr_max_db"],
    )
    confidence = mean_confidence(words)
    metrics = {
        "speech_ratio": round(ratio, 4),
        "snr_db": None if snr is None else round(snr, 2),
        "mean_word_confidence": None if confidence is None else round(confidence, 4),
        "n_words": len(words),
    }
    checks = (
        ("too_short", duration < config["min_duration_s"], f"{duration:.2f}s"),
        ("too_long", duration > config["max_duration_s"], f"{duration:.2f}s"),
        ("no_words", len(words) < config["min_words"], f"{len(words)} words"),
        ("low_speech_ratio", ratio < config["min_speech_ratio"], f"{ratio:.3f}"),
        ("low_snr", snr is not None and snr < config["min_snr_db"], f"{snr}"),
        ("low_word_confidence", confidence is not None and confidence < config["min_word_confidence"], f"{confidence}"),
    )
    for reason, failed, detail in checks:
        if failed:
            return Verdict(reason, metrics, detail)
    return Verdict(None, metrics)
