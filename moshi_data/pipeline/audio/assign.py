"""Assign every word to a speaker from diarization turns (overlap-aware, never unassigned)."""
from __future__ import annotations

from dataclasses import replace
from typing import Sequence

from moshi_data.pipeline.audio.types import Turn, Word


def _overlap(a_start: float, a_end: float, b_start: float, b_end: float) -> float:
    return max(0.0, min(a_end, b_end) - max(a_start, b_start))


def _distance(word: Word, turn: Turn) -> float:
    middle = (word.start + word.end) / 2
    if turn.start <= middle <= turn.end:
        return 0.0
    return min(abs(middle - turn.start), abs(middle - turn.end))


def speaker_for_word(word: Word, turns: Sequence[Turn], default_speaker: str) -> str:
    """Speaker with the largest total overlap with the word.

    Ties (e.g. a word inside overlapped speech covered by both turns) go to the speaker whose turn
    is closest to the word's middle, then to the smaller speaker id. A word outside every turn goes
    to the nearest turn's speaker; with no turns at all, to ``default_speaker``.
    """
    if not turns:
        return default_speaker
    overlap: dict[str, float] = {}
    distance: dict[str, float] = {}
    for turn in turns:
        overlap[turn.speaker] = overlap.get(turn.speaker, 0.0) + _overlap(word.start, word.end, turn.start, turn.end)
        distance[turn.speaker] = min(distance.get(turn.speaker, float("inf")), _distance(word, turn))
    return min(overlap, key=lambda s: (-round(overlap[s], 6), distance[s], s))


def assign_speakers(words: Sequence[Word], turns: Sequence[Turn], default_speaker: str) -> list[Word]:
    """Return the words with ``speaker`` set from ``turns`` (see :func:`speaker_for_word`)."""
    ordered = sorted(turns, key=lambda t: (t.start, t.end, t.speaker))
    return [replace(word, speaker=speaker_for_word(word, ordered, default_speaker)) for word in words]


def overlapped_words(words: Sequence[Word], turns: Sequence[Turn]) -> list[bool]:
    """For each word, whether two or more speakers' turns overlap it (overlapped speech)."""
    flags = []
    for word in words:
        speakers = {t.speaker for t in turns if _overlap(word.start, word.end, t.start, t.end) > 0}
        flags.append(len(speakers) > 1)
    return flags
