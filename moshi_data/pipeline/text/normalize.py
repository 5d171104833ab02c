"""CCNet line normalization for exact deduplication, and 64-bit line hashes.

``normalize_line`` follows cc_net's ``normalize_for_dedup``: strip, lower-case, every digit to 0,
remove unicode punctuation and non-printing characters. ``normalize_lines`` gives the same result
for a whole document with a handful of C-level passes instead of per-line regex calls.
"""
from __future__ import annotations

import hashlib
import re

import numpy as np

# cc_net/text_normalizer.py UNICODE_PUNCT keys (the characters removed for dedup).
UNICODE_PUNCT = (
    "，。、„”“«»１」「《》´∶：？！（）；–—．～’…━〈〉【】％►"
)
NON_PRINTING = "".join(map(chr, list(range(0, 32)) + list(range(127, 160))))
DIGIT_RE = re.compile(r"\d")
_REMOVE_RE = re.compile("[" + re.escape(UNICODE_PUNCT + NON_PRINTING) + "]")
_REMOVE_KEEP_NEWLINE_RE = re.compile("[" + re.escape(UNICODE_PUNCT + NON_PRINTING.replace("\n", "")) + "]")


def normalize_line(line: str) -> str:
    """CCNet ``normalize_for_dedup`` of one line."""
    line = line.strip()
    if not line:
        return line
    line = line.lower()
    line = DIGIT_RE.sub("0", line)
    return _REMOVE_RE.sub("", line)


def normalize_lines(lines: list[str]) -> list[str]:
    """``[normalize_line(l) for l in lines]`` computed on the joined document (lines hold no ``\\n``)."""
    if not lines:
        return []
    joined = "\n".join([line.strip() for line in lines]).lower()
    joined = _REMOVE_KEEP_NEWLINE_RE.sub("", DIGIT_RE.sub("0", joined))
    return joined.split("\n")


def hash_lines(normalized: list[str]) -> np.ndarray:
    """64-bit hashes (first 8 bytes of BLAKE2b, little-endian) of normalized lines, as uint64."""
    digests = b"".join([hashlib.blake2b(line.encode("utf-8"), digest_size=8).digest() for line in normalized])
    return np.frombuffer(digests, dtype="<u8").astype(np.uint64, copy=False)


def line_hashes(lines: list[str]) -> np.ndarray:
    """Normalize and hash every line of a document."""
    return hash_lines(normalize_lines(lines))
