"""Constants and argument helpers shared by the trainer tests and their fixtures."""
from __future__ import annotations

from pathlib import Path

TINY_STEPS = 50  # steps of the tiny_run and mixed_run fixtures


def text_args(text_corpus: Path, tokenizer: Path, ratio: float = 0.5) -> list[str]:
    """Trainer arguments for text-only batches from ``text_corpus`` with the test tokenizer."""
    return ["--text", str(text_corpus), "--text-ratio", str(ratio), "--set", f"text.tokenizer={tokenizer}"]
