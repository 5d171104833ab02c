"""moshi-finetune's text stream, re-written here from its published algorithm, to check ours against.

Written from the description of ``finetune/data/interleaver.py`` in kyutai-labs/moshi-finetune
(``tokenize``, ``Interleaver.prepare_item`` with ``keep_main_only=True``, ``build_token_stream``),
step by step as that file does them, and independent of ``pipeline.audio.text_frames``:

1. ``tokenize(word.strip(), bos=False)``: split on "\\n", encode the lines, join them with
   ``encode("\\n")[-1]`` (the newline piece);
2. sort the alignments by start time (stable), keep those whose speaker is the main label, drop
   those with ``start >= end``;
3. ``T = ceil(duration * frame_rate)`` frames of PAD; at frame t, every alignment with
   ``start * frame_rate < t + 1`` not yet used replaces the pending tokens (``last_word_end`` is
   tracked for the in-word padding, which equals PAD by default); when tokens are pending, frame
   t - 1 becomes EPAD if it is PAD and frame t takes the next pending token.

The training loader pads/cuts this stream to the Mimi frames of the audio, so the test passes
``num_frames`` (``ceil(samples / 1920)``) directly.
"""
from __future__ import annotations

from collections import deque
from functools import reduce


def tokenize(processor, text: str) -> list[int]:
    newline_piece = processor.encode("\n")[-1]
    lines = processor.encode(text.split("\n"))
    return list(reduce(lambda a, b: [*a, newline_piece, *b], lines))


def interleave_main_only(processor, alignments, num_frames: int, pad: int, epad: int,
                         main_label: str = "SPEAKER_MAIN", frame_rate: float = 12.5) -> list[int]:
    tokenized = [(tokenize(processor, word.strip()), (start, end), speaker)
                 for word, (start, end), speaker in sorted(alignments, key=lambda a: a[1][0])]
    tokenized = [a for a in tokenized if a[2] == main_label]
    tokenized = [a for a in tokenized if a[1][0] < a[1][1]]
    in_word_pad = pad
    stream = [pad] * num_frames
    pending: deque = deque()
    index, last_word_end = 0, -1
    for t in range(num_frames):
        while index < len(tokenized) and tokenized[index][1][0] * frame_rate < t + 1:
            last_word_end = int(tokenized[index][1][1] * frame_rate)
            pending = deque(tokenized[index][0])
            index += 1
        if pending:
            if t > 0 and stream[t - 1] in (pad, in_word_pad):
                stream[t - 1] = epad
            stream[t] = pending.popleft()
        elif t <= last_word_end:
            stream[t] = in_word_pad
    return stream
