"""Minimum document length after line removal."""
from __future__ import annotations

from moshi_data.pipeline.text.document import Document


class MinLengthStage:
    """Drop documents shorter than ``min_chars`` characters after line removal (reason ``too_short``)."""

    name = "min_length"
    columns: list = []

    def __init__(self, cfg: dict):
        self.min_chars = int(cfg["min_chars"])

    def setup(self) -> None:
        pass

    def process(self, doc: Document) -> str | None:
        return "too_short" if doc.chars < self.min_chars else None
