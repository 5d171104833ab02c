"""RTTM (NIST Rich Transcription Time Marked) reading and writing for speaker turns."""
from __future__ import annotations

from typing import Iterable

from moshi_data.pipeline.audio.types import Turn


def write_rttm(turns: Iterable[Turn], uri: str) -> str:
    """RTTM text of ``turns`` for recording ``uri`` (one SPEAKER line per turn, sorted by time)."""
    if not uri or any(ch.isspace() for ch in uri):
        raise ValueError(f"RTTM uri must be non-empty and without whitespace: {uri!r}")
    lines = []
    for turn in sorted(turns, key=lambda t: (t.start, t.end, t.speaker)):
        if turn.end <= turn.start:
            raise ValueError(f"turn with end <= start: {turn}")
        lines.append(f"SPEAKER {uri} 1 {turn.start:.3f} {turn.end - turn.start:.3f} <NA> <NA> {turn.speaker} <NA> <NA>")
    return "".join(line + "\n" for line in lines)


def read_rttm(text: str) -> dict[str, list[Turn]]:
    """Turns per recording uri from RTTM text (only SPEAKER lines; comments and blanks skipped)."""
    recordings: dict[str, list[Turn]] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        fields = line.split()
        if not fields or fields[0].startswith(("#", ";")) or fields[0] != "SPEAKER":
            continue
        if len(fields) < 8:
            raise ValueError(f"RTTM line {number}: expected at least 8 fields, got {len(fields)}: {line!r}")
        start, duration = float(fields[3]), float(fields[4])
        recordings.setdefault(fields[1], []).append(Turn(round(start, 3), round(start + duration, 3), fields[7]))
    for turns in recordings.values():
        turns.sort(key=lambda t: (t.start, t.end, t.speaker))
    return recordings
