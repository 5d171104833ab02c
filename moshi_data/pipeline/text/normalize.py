"""CCNet line normalization for exact deduplication, and 64-bit line hashes.

``normalize_line`` follows cc_net's ``normalize_for_dedup``: strip, lower-case, every digit to 0,
remove unicode punctuation and non-printing characters; it is the reference rule (the tests check
the fast path against it on every code point). ``line_hashes``, what the job uses, gives the same
normalized lines for a whole document at once, as UTF-8, with a handful of C-level passes instead
of per-line regex calls: the ASCII digits and control characters (most of the matches) are mapped
on the encoded bytes with ``bytes.translate``, only the rare non-ASCII ones by one regex pass on the
text; then 64-bit BLAKE2b hashes of the normalized lines.
"""
from __future__ import annotations

import hashlib
import re
import sys

import numpy as np

# cc_net/text_normalizer.py UNICODE_PUNCT keys (the characters removed for dedup).
UNICODE_PUNCT = (
    "，。、„”“«»１」「《》´∶：？！（）；–—．～’…━〈〉【】％►"
)
NON_PRINTING = "".join(map(chr, list(range(0, 32)) + list(range(127, 160))))
DIGIT_RE = re.compile(r"\d")
_REMOVE_RE = re.compile("[" + re.escape(UNICODE_PUNCT + NON_PRINTING) + "]")
# line_hashes: the same rules split by ASCII / non-ASCII; the non-ASCII ones in one regex pass, each
# match replaced by its rule ("\d" is str.isdecimal; the digit rule wins: "１" is a digit and in
# UNICODE_PUNCT). The class lists the BMP characters (a bitmap in the regex engine: listed characters
# above U+FFFF would make it a slow list) and takes every other plane's character to the rule lookup.
_NON_ASCII_RULES = dict.fromkeys(filter(str.isdecimal, map(chr, range(128, sys.maxunicode + 1))), "0")
_NON_ASCII_RULES.update((c, "") for c in UNICODE_PUNCT + NON_PRINTING if not c.isascii() and c not in _NON_ASCII_RULES)
_NON_ASCII_RE = re.compile("[" + re.escape("".join(c for c in _NON_ASCII_RULES if c <= "\uffff")) + "\U00010000-\U0010ffff]")
_ASCII_DIGITS_TO_ZERO = bytes.maketrans(b"0123456789", b"0" * 10)
_ASCII_REMOVED = "".join(c for c in NON_PRINTING if c.isascii() and c != "\n").encode("ascii")


def normalize_line(line: str) -> str:
    """CCNet ``normalize_for_dedup`` of one line."""
    line = line.strip()
    if not line:
        return line
    line = line.lower()
    line = DIGIT_RE.sub("0", line)
    return _REMOVE_RE.sub("", line)


def _non_ascii_rule(match: re.Match) -> str:
    char = match.group()
    return _NON_ASCII_RULES.get(char, char)


def normalized_utf8(lines: list[str]) -> list[bytes]:
    """``[normalize_line(l).encode("utf-8") for l in lines]`` computed on the joined document (lines
    hold no ``\\n``)."""
    if not lines:
        return []
    joined = "\n".join([line.strip() for line in lines]).lower()
    joined = _NON_ASCII_RE.sub(_non_ascii_rule, joined)
    return joined.encode("utf-8").translate(_ASCII_DIGITS_TO_ZERO, _ASCII_REMOVED).split(b"\n")


def line_hashes(lines: list[str]) -> np.ndarray:
    """Normalize and hash every line of a document: the first 8 bytes (little-endian, as uint64) of the
    BLAKE2b of each ``normalized_utf8`` line."""
    digests = b"".join([hashlib.blake2b(line, digest_size=8).digest() for line in normalized_utf8(lines)])
    return np.frombuffer(digests, dtype="<u8").astype(np.uint64, copy=False)
