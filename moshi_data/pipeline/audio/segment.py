"""Cut a recording into training samples of at most N seconds, preferably in silences.

Cut points sit on 12.5 Hz frame boundaries (80 ms), so text frames and codec frames line up with
the sample audio. Preference order for a cut inside the allowed window: the latest silence of at
least ``min_silence_s`` (no turn, no word), else the widest gap between two words, else a hard cut.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

from moshi_data.pipeline.audio.types import FRAME_RATE, Turn, Word


@dataclass(frozen=True)
class Segment:
    """One sample window ``[start, end)`` in seconds; ``cut`` says how its end was chosen."""

    index: int
    start: float
    end: float
    cut: str  # "end" (end of recording), "silence", "word_gap" or "hard"

    @property
    def duration(self) -> float:
        return self.end - self.start


def merge_intervals(intervals: Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
    """Union of intervals, sorted, empty ones removed."""
    merged: list[list[float]] = []
    for start, end in sorted((s, e) for s, e in intervals if e > s):
        if merged and start <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    return [(s, e) for s, e in merged]


def speech_intervals(turns: Sequence[Turn], words: Sequence[Word]) -> list[tuple[float, float]]:
    """Speech activity: the union of every turn and every word."""
    return merge_intervals([(t.start, t.end) for t in turns] + [(w.start, w.end) for w in words])


def _snap(time_s: float) -> float:
    return round(time_s * FRAME_RATE) / FRAME_RATE


def silence_cut_points(speech: Sequence[tuple[float, float]], duration: float, min_silence_s: float) -> list[float]:
    """Frame-aligned middles of the silences of at least ``min_silence_s`` inside the recording."""
    points = []
    previous_end = 0.0
    for start, end in list(speech) + [(duration, duration)]:
        if start - previous_end >= min_silence_s and previous_end > 0.0 and start < duration:
            points.append(_snap((previous_end + start) / 2))
        previous_end = max(previous_end, end)
    return points


def word_gap_cut_points(words: Sequence[Word]) -> list[tuple[float, float]]:
    """(frame-aligned gap middle, gap width) between consecutive words."""
    ordered = sorted(words, key=lambda w: (w.start, w.end))
    gaps = []
    for before, after in zip(ordered, ordered[1:]):
        if after.start > before.end:
            gaps.append((_snap((before.end + after.start) / 2), after.start - before.end))
    return gaps


def plan_segments(
    duration: float,
    turns: Sequence[Turn],
    words: Sequence[Word],
    max_duration_s: float,
    min_silence_s: float,
    min_cut_s: float,
) -> list[Segment]:
    """Cover ``[0, duration)`` with consecutive segments of at most ``max_duration_s`` seconds.

    A cut is looked for in ``(start + min_cut_s, start + max_duration_s]`` (and not later than
    ``duration - min_cut_s`` when possible) so that neither a segment nor the tail is needlessly short.
    """
    if duration <= 0:
        return []
    max_duration_s = math.floor(max_duration_s * FRAME_RATE) / FRAME_RATE
    silences = silence_cut_points(speech_intervals(turns, words), duration, min_silence_s)
    gaps = word_gap_cut_points(words)
    segments: list[Segment] = []
    start = 0.0
    while duration - start > max_duration_s + 1e-9:
        low, high = start + min_cut_s, start + max_duration_s + 1e-9
        if duration - min_cut_s > low:  # leave a tail of at least min_cut_s when that is possible
            high = min(high, duration - min_cut_s + 1e-9)
        in_window = [p for p in silences if low < p <= high]
        if in_window:
            cut, kind = in_window[-1], "silence"
        else:
            candidates = [(width, point) for point, width in gaps if low < point <= high]
            if candidates:
                cut, kind = max(candidates, key=lambda c: (c[0], c[1]))[1], "word_gap"
            else:
                cut, kind = start + max_duration_s, "hard"
        segments.append(Segment(len(segments), start, cut, kind))
        start = cut
    segments.append(Segment(len(segments), start, duration, "end"))
    return segments


def words_in_segment(words: Sequence[Word], segment: Segment) -> list[Word]:
    """Words that start inside the segment, shifted to segment time, ends clipped to the segment."""
    inside = []
    for word in sorted(words, key=lambda w: (w.start, w.end, w.word)):
        if segment.start <= word.start < segment.end:
            inside.append(
                Word(
                    word=word.word,
                    start=round(word.start - segment.start, 3),
                    end=round(min(word.end, segment.end) - segment.start, 3),
                    score=word.score,
                    speaker=word.speaker,
                )
            )
    return inside


def turns_in_segment(turns: Sequence[Turn], segment: Segment) -> list[Turn]:
    """Turns clipped to the segment, in segment time."""
    clipped = []
    for turn in turns:
        start, end = max(turn.start, segment.start), min(turn.end, segment.end)
        if end > start:
            clipped.append(Turn(round(start - segment.start, 3), round(end - segment.start, 3), turn.speaker))
    return clipped
