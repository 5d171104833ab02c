"""Data types passed between audio stages (kept tiny and JSON-friendly)."""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Optional

OUTPUT_SAMPLE_RATE = 24_000
MODEL_SAMPLE_RATE = 16_000
FRAME_RATE = 12.5


@dataclass(frozen=True)
class Word:
    """One transcribed word with times in seconds from the start of its recording."""

    word: str
    start: float
    end: float
    score: Optional[float] = None
    speaker: Optional[str] = None

    def to_json(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Turn:
    """One diarization segment: ``speaker`` talks from ``start`` to ``end`` seconds."""

    start: float
    end: float
    speaker: str

    def to_json(self) -> dict:
        return asdict(self)
