"""JSONL document reader: provenance mapping, compression, and every bad line as a counted reject."""
from __future__ import annotations

import gzip
import json

import pytest
import zstandard

from moshi_data.pipeline.config import load_config
from moshi_data.pipeline.text.document import Document, Reject
from moshi_data.pipeline.text.jsonl import JsonlFormat, read_jsonl
from moshi_data.pipeline.text.wet import FileReport, WetLimits

LIMITS = WetLimits(max_line_chars=1000, max_invalid_utf8_ratio=0.01)
FORMAT = JsonlFormat.from_config(load_config("text_corpus")["jsonl"])


def read(path, fmt=FORMAT, limits=LIMITS):
    report = FileReport(str(path), 3)
    with open(path, "rb") as handle:
        items = list(read_jsonl(handle, str(path), 3, limits, fmt, report))
    assert report.documents + report.rejects == len(items)
    return ([i for i in items if isinstance(i, Document)], [i for i in items if isinstance(i, Reject)], report)


def good(n: int) -> bytes:
    return json.dumps({"id": f"doc{n}", "text": f"line one of {n}\nline two\n",
                       "metadata": {"warc_url": f"https://example.org/{n}", "warc_date": "2019-07-17T12:15:59Z",
                                    "cc_segment": "crawl-data/CC-MAIN-2020-16/segments/1/wet/x.warc.wet.gz",
                                    "language": "en"}}).encode() + b"\n"


BAD_LINES = [  # (line, reason)
    (b'{"id": "a", "text": "unterminated\n', "invalid_json"),
    (b'["a list", "not an object"]\n', "invalid_json"),
    (b'{"id": "b", "url": "https://example.org/b"}\n', "missing_text"),
    (b'{"id": "c", "text": null}\n', "missing_text"),
    (b'{"id": "d", "text": 42}\n', "text_not_string"),
    (b'{"id": "e", "text": "' + b"\xff" * 20 + b'"}\n', "invalid_utf8"),
    (b'{"id": "f", "text": "' + b"x" * 2000 + b'"}\n', "line_too_long"),
]


@pytest.mark.parametrize("suffix", [".jsonl", ".jsonl.gz", ".jsonl.zst"])
def test_provenance_and_bad_lines_are_rejects(tmp_path, suffix):
    data = good(0) + b"\n" + b"".join(line for line, _ in BAD_LINES) + good(1) + good(2).rstrip(b"\n")
    path = tmp_path / f"shard{suffix}"
    path.write_bytes(gzip.compress(data) if suffix.endswith(".gz") else
                     zstandard.ZstdCompressor().compress(data) if suffix.endswith(".zst") else data)
    docs, rejects, report = read(path)
    assert [r.reason for r in rejects] == [reason for _, reason in BAD_LINES]
    assert [r.record_offset for r in rejects] == list(range(3, 3 + len(BAD_LINES)))  # line numbers (blank line 2)
    assert rejects[2].record_id == "b" and rejects[2].url == "https://example.org/b"
    assert [d.record_offset for d in docs] == [1, 10, 11]  # the last line has no newline and still counts
    assert [d.doc_id for d in docs] == ["3:0", "3:8", "3:9"] and docs[1].doc_key == (3 << 32) | 8
    doc = docs[0]
    assert (doc.record_id, doc.url, doc.date, doc.crawl, doc.content_language) == (
        "doc0", "https://example.org/0", "2019-07-17T12:15:59Z", "CC-MAIN-2020-16", "en")
    assert doc.lines == ["line one of 0", "line two"] and doc.source == str(path)
    assert report.records == {"json_line": 10, "blank_line": 1}
    assert report.compressed_bytes == path.stat().st_size


def test_configurable_text_field_and_keys(tmp_path):
    path = tmp_path / "redpajama.json.gz"
    path.write_bytes(gzip.compress(b'{"raw_content": "hello", "meta": {"uid": 7, "src": "https://x.org"}}\n'))
    fmt = JsonlFormat(FORMAT.extensions, "raw_content", {**FORMAT.fields, "record_id": ("meta.uid",), "url": ("meta.src",)})
    assert fmt.matches(str(path)) and not fmt.matches("a.warc.wet.gz")
    docs, rejects, _ = read(path, fmt)
    assert rejects == [] and (docs[0].text, docs[0].record_id, docs[0].url) == ("hello", "7", "https://x.org")


@pytest.mark.parametrize("suffix,codec", [(".jsonl.gz", "gzip"), (".jsonl.zst", "zstd")])
def test_truncated_compression_keeps_lines_before_the_break(tmp_path, suffix, codec):
    data = b"".join(good(n) for n in range(2000))  # several zstd blocks (128 KiB each)
    compressed = gzip.compress(data) if codec == "gzip" else zstandard.ZstdCompressor().compress(data)
    path = tmp_path / f"cut{suffix}"
    path.write_bytes(compressed[: len(compressed) * 2 // 3])
    docs, rejects, _ = read(path)
    assert 0 < len(docs) < 2000 and [r.reason for r in rejects] == [f"truncated_{codec}"]
    assert [d.record_offset for d in docs] == list(range(1, len(docs) + 1))
    assert rejects[0].record_offset == len(docs) + 1


def test_empty_and_corrupt_files(tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_bytes(b"")
    assert [r.reason for r in read(empty)[1]] == ["empty_file"]
    corrupt = tmp_path / "corrupt.jsonl.gz"
    compressed = bytearray(gzip.compress(b"".join(good(n) for n in range(50))))
    compressed[20:40] = b"\x00" * 20
    corrupt.write_bytes(bytes(compressed))
    docs, rejects, _ = read(corrupt)
    assert docs == [] and [r.reason for r in rejects] == ["corrupt_gzip"]


def test_shared_dolma_and_ccnet_shards(shared_data):
    folder = shared_data / "wet" / "cc_text_jsonl"
    limits = WetLimits.from_config(load_config("text_corpus")["wet"])
    docs, rejects, _ = read(folder / "dolma_CC-MAIN-20190717121559-20190717143559-00140.jsonl.gz", limits=limits)
    assert rejects == [] and len(docs) == 697
    assert docs[0].url == "http://16thfleet.wikidot.com/chatter:anewhome" and docs[0].record_id == "blj5uzvcoa4iybpd5o6kom5nir6ngmoj"
    assert docs[0].date == "2019-07-17T12:15:59.000Z"
    docs, rejects, _ = read(folder / "dolma_cc_en_head-0091.jsonl.gz", limits=limits)
    assert rejects == [] and len(docs) == 10
    assert all(d.crawl == "CC-MAIN-2020-16" and d.content_language == "en" and d.url.startswith("http") for d in docs)


LONE_SURROGATES = [  # valid JSON whose strings hold a UTF-16 surrogate with no partner
    b'{"id": "s1", "text": "fine start \\ud800 then more"}\n',
    b'{"id": "s2", "text": "fine text", "metadata": {"warc_url": "https://example.org/\\uDFFF"}}\n',
    b'{"id": "s3", "text": "low first \\udc00\\ud800"}\n',
]


def test_lone_surrogates_are_invalid_text_rejects(tmp_path):
    pair = b'{"id": "pair", "text": "an emoji \\ud83d\\ude00 and a backslash-u \\\\ud800 as text"}\n'
    path = tmp_path / "surrogates.jsonl"
    path.write_bytes(good(0) + b"".join(LONE_SURROGATES) + pair + good(1))
    docs, rejects, report = read(path)
    assert [(r.reason, r.record_offset) for r in rejects] == [("invalid_text", 2), ("invalid_text", 3), ("invalid_text", 4)]
    assert "'text' holds a lone surrogate \\ud800 at character 11" in rejects[0].message
    assert "'url'" in rejects[1].message and rejects[1].url == "https://example.org/\\udfff"  # escaped: valid UTF-8
    assert all(json.dumps(r.to_json(), ensure_ascii=False).encode("utf-8") for r in rejects)
    assert [d.record_id for d in docs] == ["doc0", "pair", "doc1"]
    assert docs[1].text == "an emoji \U0001F600 and a backslash-u \\ud800 as text"  # a valid pair is one code point


def test_job_rejects_a_lone_surrogate_document_and_goes_on(shared_data, tmp_path):
    from moshi_data.beam_jobs import text_corpus
    from moshi_data.pipeline.text.accounting import check_invariant
    from text_helpers import IN_PROCESS

    source = shared_data / "wet" / "cc_text_jsonl" / "dolma_cc_en_head-0091.jsonl.gz"
    lines = gzip.decompress(source.read_bytes()).splitlines(keepends=True)
    path = tmp_path / "input" / "mixed.jsonl"
    path.parent.mkdir()
    path.write_bytes(b"".join(lines[:5]) + LONE_SURROGATES[0] + b"".join(lines[5:]))
    output = tmp_path / "out"
    stats = text_corpus.run(str(path), str(output), overrides=["stages=[min_length]"], beam_args=IN_PROCESS)["stats"]
    check_invariant(stats)
    docs = stats["documents"]
    assert docs["rejected"] == {"invalid_text": 1} and docs["in"] == len(lines) + 1
    assert docs["in"] == docs["kept"] + sum(docs["filtered"].values()) + sum(docs["rejected"].values())
    rejects = [json.loads(row) for row in (output / "rejects" / "rejects-000000.jsonl").read_text().splitlines()]
    assert [(r["reason"], r["record_offset"]) for r in rejects] == [("invalid_text", 6)]
