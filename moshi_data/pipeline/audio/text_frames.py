"""Inner Monologue text stream: word tokens placed on 12.5 Hz frames (moshi-finetune's rule).

Rule (``Interleaver.build_token_stream`` in kyutai-labs/moshi-finetune, see
``../shared/notes/helium-moshi-recipe.md`` section 4.1):

- the stream has ``ceil(duration * frame_rate)`` frames, all PAD to begin with;
- a word enters at the first frame ``t`` with ``start * frame_rate < t + 1``; its tokens go on
  consecutive frames from there;
- when a token lands on frame ``t`` and frame ``t - 1`` is PAD, frame ``t - 1`` becomes EPAD;
- when a new word enters while tokens of the previous word are pending, the pending tokens are
  dropped (``keep_and_shift=True`` appends instead);
- words with zero or negative duration are dropped; each word is tokenized alone.
"""
from __future__ import annotations

import math
from collections import deque
from typing import Callable, Iterable, Sequence

import numpy as np

from moshi_data.pipeline.audio.types import FRAME_RATE, Word

Tokenize = Callable[[str], list[int]]


def frame_count(duration_s: float, frame_rate: float = FRAME_RATE) -> int:
    """Number of text frames covering ``duration_s`` seconds."""
    return math.ceil(duration_s * frame_rate)


def tokenize_words(words: Iterable[Word], tokenize: Tokenize) -> list[tuple[list[int], float, float]]:
    """Tokenize each word alone (stripped); drop empty words and words with no duration."""
    tokenized = []
    for word in sorted(words, key=lambda w: (w.start, w.end)):
        text = word.word.strip()
        if not text or word.end <= word.start:
            continue
        tokens = [int(t) for t in tokenize(text)]
        if tokens:
            tokenized.append((tokens, word.start, word.end))
    return tokenized


def place_tokens(
    tokenized: Sequence[tuple[list[int], float, float]],
    n_frames: int,
    pad_id: int,
    epad_id: int,
    frame_rate: float = FRAME_RATE,
    keep_and_shift: bool = False,
) -> np.ndarray:
    """Place tokenized words (sorted by start) on ``n_frames`` frames; returns int32 ``[n_frames]``."""
    stream = np.full(n_frames, pad_id, dtype=np.int32)
    pending: deque[int] = deque()
    index = 0
    for t in range(n_frames):
        while index < len(tokenized) and tokenized[index][1] * frame_rate < t + 1:
            tokens = tokenized[index][0]
            if keep_and_shift:
                pending.extend(tokens)
            else:
                pending = deque(tokens)
            index += 1
        if pending:
            if t > 0 and stream[t - 1] == pad_id:
                stream[t - 1] = epad_id
            stream[t] = pending.popleft()
    return stream


def text_stream(
    words: Iterable[Word],
    duration_s: float,
    tokenize: Tokenize,
    pad_id: int,
    epad_id: int,
    frame_rate: float = FRAME_RATE,
    keep_and_shift: bool = False,
) -> np.ndarray:
    """Text stream for ``words`` (times relative to the segment start) over ``duration_s`` seconds."""
    return place_tokens(
        tokenize_words(words, tokenize), frame_count(duration_s, frame_rate), pad_id, epad_id, frame_rate, keep_and_shift
    )


class SentencePieceTokenizer:
    """Picklable wrapper: loads the SentencePiece model lazily in each worker."""

    def __init__(self, model_path: str):
        self.model_path = str(model_path)
        self._processor = None

    def __getstate__(self) -> dict:
        return {"model_path": self.model_path, "_processor": None}

    def __call__(self, text: str) -> list[int]:
        if self._processor is None:
            import sentencepiece

            self._processor = sentencepiece.SentencePieceProcessor(model_file=self.model_path)
        return self._processor.encode(text)
