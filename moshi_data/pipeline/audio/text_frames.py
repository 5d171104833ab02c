"""Inner Monologue text stream: word tokens placed on 12.5 Hz frames (moshi-finetune's rule).

Rule (``Interleaver.prepare_item`` / ``build_token_stream`` in kyutai-labs/moshi-finetune, see
``../shared/notes/helium-moshi-recipe.md`` section 4.1):

- the stream has one frame per Mimi frame of the segment's audio, ``ceil(samples / 1920)`` at 24 kHz
  (counted on integer samples: float seconds x 12.5 can land just above an integer and add a frame),
  all PAD to begin with;
- a word enters at the first frame ``t`` with ``start * frame_rate < t + 1``; its tokens go on
  consecutive frames from there;
- when a token lands on frame ``t`` and frame ``t - 1`` is PAD, frame ``t - 1`` becomes EPAD;
- when a new word enters while tokens of the previous word are pending, the pending tokens are
  dropped (``keep_and_shift=True`` appends instead);
- words with zero or negative duration are dropped; each word is tokenized alone as moshi-finetune's
  ``tokenize(word.strip(), bos=False)`` does (lines joined by the tokenizer's newline piece); a word
  that encodes to no token is kept: it still replaces the pending tokens of the previous word.
"""
from __future__ import annotations

from collections import deque
from typing import Callable, Iterable, Sequence

import numpy as np

from moshi_data.pipeline.audio.types import FRAME_RATE, OUTPUT_SAMPLE_RATE, Word

Tokenize = Callable[[str], list[int]]


def frames_for_samples(num_samples: int, sample_rate: int = OUTPUT_SAMPLE_RATE, frame_rate: float = FRAME_RATE) -> int:
    """Text (= Mimi) frames of ``num_samples`` samples: ``ceil(samples / (sample_rate / frame_rate))``, exact."""
    samples_per_frame = sample_rate / frame_rate
    if samples_per_frame != int(samples_per_frame):
        raise ValueError(f"{sample_rate} Hz is not a whole number of samples per {frame_rate} Hz frame")
    return -(-int(num_samples) // int(samples_per_frame))


def frame_count(duration_s: float, frame_rate: float = FRAME_RATE) -> int:
    """Text frames of ``duration_s`` seconds of 24 kHz audio (the duration rounded to whole samples first)."""
    return frames_for_samples(round(duration_s * OUTPUT_SAMPLE_RATE), OUTPUT_SAMPLE_RATE, frame_rate)


def tokenize_word(text: str, tokenize: Tokenize) -> list[int]:
    """Tokens of one word as moshi-finetune's ``tokenize(text, bos=False)``: each line alone, joined by "\\n"'s piece."""
    if not text:
        return []
    lines = text.split("\n")
    if len(lines) == 1:
        return [int(t) for t in tokenize(text)]
    newline = tokenize("\n")
    if not newline:
        raise ValueError("the tokenizer encodes '\\n' to no token (moshi-finetune needs its piece): "
                         "retrain it with `make tokenizer` (normalization_rule_name: nfkc)")
    tokens: list[int] = []
    for number, line in enumerate(lines):
        if number:
            tokens.append(int(newline[-1]))
        tokens += [int(t) for t in tokenize(line)]
    return tokens


def tokenize_words(words: Iterable[Word], tokenize: Tokenize) -> list[tuple[list[int], float, float]]:
    """Tokenize each word alone (stripped), sorted by (start, end); drop words with no duration.

    Words that encode to no token (blank, or characters the tokenizer normalizes away) are kept with an
    empty token list: in moshi-finetune's Interleaver they still cancel the previous word's pending tokens.
    """
    tokenized = []
    for word in sorted(words, key=lambda w: (w.start, w.end)):
        if word.end <= word.start:
            continue
        tokenized.append((tokenize_word(word.word.strip(), tokenize), word.start, word.end))
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
    """Text stream for ``words`` (times relative to the segment start) over ``duration_s`` seconds of audio.

    ``duration_s`` is the segment's audio length (samples / 24 kHz); its frame count is :func:`frame_count`.
    """
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
