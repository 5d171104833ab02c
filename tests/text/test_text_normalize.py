"""CCNet normalization and 64-bit line hashes."""
from __future__ import annotations

import gzip
import hashlib
import json
import sys

import numpy as np

from moshi_data.pipeline.text.normalize import line_hashes, normalize_line, normalized_utf8


def blake2b_64(text: str) -> int:
    """The reference line hash: the first 8 bytes of BLAKE2b of the UTF-8 text, little-endian."""
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest(), "little")


def test_ccnet_rules():
    assert normalize_line("  Hello World!  ") == "hello world!"
    assert normalize_line("Call 555-1234 in 2024") == "call 000-0000 in 0000"
    assert normalize_line("«Bonjour» — dit-il…") == "bonjour  dit-il"  # unicode punctuation removed
    assert normalize_line("tab\there\x00\x7f") == "tabhere"             # control characters removed
    assert normalize_line("   ") == ""
    assert normalize_line("ÀÉÎ") == "àéî"                                 # accents kept (cc_net dedup)


def test_document_fast_path_equals_reference_rule(shared_data):
    """``line_hashes`` (the job's one pass per document) against ``normalize_line`` line by line."""
    path = shared_data / "wet" / "cc_text_jsonl" / "dolma_CC-MAIN-20190717121559-20190717143559-00140.jsonl.gz"
    with gzip.open(path, "rt", encoding="utf-8") as handle:
        docs = [json.loads(line)["text"].split("\n") for _, line in zip(range(150), handle)]
    docs.append(["  İstanbul 1923 ", "\x0bvertical\x0ctab", "", "ＡＢＣ１２３"])
    for lines in docs:
        assert normalized_utf8(lines) == [normalize_line(line).encode("utf-8") for line in lines]
        assert line_hashes(lines).tolist() == [blake2b_64(normalize_line(line)) for line in lines]


def test_utf8_fast_path_equals_per_line_for_every_code_point():
    """``normalized_utf8`` splits the rules by ASCII / non-ASCII: checked on every character, alone
    and between others (digits of every script, punctuation, controls, other planes)."""
    chars = [chr(c) for c in range(sys.maxunicode + 1) if not 0xD800 <= c < 0xE000 and c != 10]
    for start in range(0, len(chars), 4096):
        lines = chars[start:start + 4096] + [f" x{c}Y 7{c} " for c in chars[start:start + 4096]]
        assert normalized_utf8(lines) == [normalize_line(line).encode("utf-8") for line in lines], start


def test_hashes_are_stable_uint64():
    hashes = line_hashes(["Home", "home", "HOME ", "About us"])
    assert hashes.dtype == np.uint64 and len(hashes) == 4
    assert hashes[0] == hashes[1] == hashes[2] != hashes[3]
    # BLAKE2b-64 of the normalized text: fixed across runs, machines and workers
    assert int(hashes[0]) == blake2b_64("home") == int.from_bytes(hashlib.blake2b(b"home", digest_size=8).digest(), "little")
    assert len(line_hashes([])) == 0
