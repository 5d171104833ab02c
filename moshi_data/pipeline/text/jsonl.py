"""Read JSONL document shards (CCNet, dolma, RedPajama, ...) into ``Document``s and ``Reject``s.

One JSON object per line; the text is under ``jsonl.text_field`` and the provenance columns
(``record_id``, ``url``, ``date``, ``crawl``, ``content_language``) come from the first key of
``jsonl.fields.<column>`` present in the record (``a.b`` = key ``b`` of object ``a``).
``record_offset`` is the 1-based line number. Compression is detected from the magic bytes (gzip,
zstd, or plain text); concatenated members/frames are one stream.

Bad lines never stop the job. Reject reasons: ``empty_file``, ``invalid_json`` (not JSON, or not a
JSON object), ``missing_text`` (no text field or null), ``text_not_string``, ``invalid_text`` (a
lone surrogate escape such as ``"\\ud800"`` in the text or a provenance column: valid JSON, but no
Unicode text that UTF-8, the line hashes or Parquet could hold), ``invalid_utf8`` and
``line_too_long`` (the ``wet`` limits), ``truncated_gzip`` / ``truncated_zstd`` (the lines before
the break are kept, the incomplete line is the reject), ``corrupt_gzip`` / ``corrupt_zstd``.
Blank lines are not documents; they are counted in ``records.read.blank_line``.
"""
from __future__ import annotations

import json
import re
import zlib
from dataclasses import dataclass
from typing import IO, Iterator

import zstandard

from moshi_data.pipeline.config import get_dotted
from moshi_data.pipeline.text.document import Document, Reject, document_key
from moshi_data.pipeline.text.wet import (GZIP_MAGIC, FileReport, GzipStream, TruncatedGzipError, WetLimits, decode_body,
                               emit_counted, empty_file_reject, open_sniffed, split_body_lines)

ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
CRAWL_ID_RE = re.compile(r"CC-MAIN-\d{4}-\d{2}")
PROVENANCE_COLUMNS = ("record_id", "url", "date", "crawl", "content_language")
# A JSON escape of a UTF-16 surrogate: the only way a line decoded from UTF-8 can hold one (a valid
# pair becomes one code point; a lone one stays a surrogate). Checked on the bytes first: rare.
SURROGATE_ESCAPE_RE = re.compile(rb"\\u[dD][89a-fA-F]")
SURROGATE_RE = re.compile(r"[\ud800-\udfff]")


class _ZstdStream(GzipStream):
    """Streaming zstd decompression of concatenated frames (truncation reported like gzip's)."""

    @staticmethod
    def new_decompressor():
        return zstandard.ZstdDecompressor().decompressobj()


@dataclass(frozen=True)
class JsonlFormat:
    """Which files are JSONL and where their text and provenance live."""

    extensions: tuple[str, ...]
    text_field: str
    fields: dict[str, tuple[str, ...]]

    @classmethod
    def from_config(cls, cfg: dict) -> "JsonlFormat":
        fields = {column: tuple(cfg["fields"].get(column) or ()) for column in PROVENANCE_COLUMNS}
        return cls(tuple(cfg["extensions"]), str(cfg["text_field"]), fields)

    def matches(self, path: str) -> bool:
        return path.lower().endswith(self.extensions)


def provenance(record: dict, fmt: JsonlFormat) -> dict[str, str]:
    """The provenance columns of a record ("" where none of the configured keys is present)."""
    out = {}
    for column, keys in fmt.fields.items():
        value = next((v for v in (get_dotted(record, key) for key in keys) if v not in (None, "")), "")
        out[column] = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
    match = CRAWL_ID_RE.search(out["crawl"])
    out["crawl"] = match.group(0) if match else out["crawl"]
    return out


def _lines(stream) -> Iterator[tuple[int, bytes]]:
    """(1-based line number, line bytes without the newline); an unterminated last line counts."""
    pending, number = b"", 0
    while True:
        data = stream.read(GzipStream.CHUNK)
        if not data:
            break
        parts = (pending + data).split(b"\n")
        pending = parts.pop()
        for part in parts:
            number += 1
            yield number, part
    if pending:
        yield number + 1, pending


def read_jsonl(raw: IO[bytes], source: str, file_index: int, limits: WetLimits, fmt: JsonlFormat,
               report: FileReport) -> Iterator[Document | Reject]:
    """Yield the documents and rejects of one opened JSONL stream, in line order."""
    opened = open_sniffed(raw, {"gzip": (GZIP_MAGIC, GzipStream), "zstd": (ZSTD_MAGIC, _ZstdStream)})
    if opened is None:
        yield from emit_counted(empty_file_reject(source, file_index), report)
        return
    stream, counted, codec = opened
    record_index, number = 0, 0
    lines = _lines(stream)
    while True:
        try:
            number, line = next(lines)
        except StopIteration:
            break
        except TruncatedGzipError as exc:
            yield from emit_counted(Reject(source, file_index, number + 1, f"truncated_{codec}",
                                    f"{codec} stream ends early, inside line {number + 1}: {exc}"), report)
            break
        except (zlib.error, zstandard.ZstdError) as exc:
            yield from emit_counted(Reject(source, file_index, number + 1, f"corrupt_{codec}",
                                    f"{codec} data is corrupt after line {number}: {exc}"[:300]), report)
            break
        if not line.strip():
            report.records["blank_line"] += 1
            continue
        report.records["json_line"] += 1
        item = _to_document(line, source, file_index, record_index, number, limits, fmt, report)
        record_index += 1
        yield from emit_counted(item, report)
    report.compressed_bytes = counted.count


def _to_document(line: bytes, source: str, file_index: int, record_index: int, number: int,
                 limits: WetLimits, fmt: JsonlFormat, report: FileReport) -> Document | Reject:
    decoded, invalid = decode_body(line)
    if invalid and invalid > limits.max_invalid_utf8_ratio * len(line):
        return Reject(source, file_index, number, "invalid_utf8", f"{invalid} of {len(line)} bytes are not UTF-8")
    try:
        record = json.loads(decoded)
    except ValueError as exc:
        return Reject(source, file_index, number, "invalid_json", f"line {number} is not JSON: {exc}"[:300])
    if not isinstance(record, dict):
        return Reject(source, file_index, number, "invalid_json",
                      f"line {number} is a JSON {type(record).__name__}, not an object")
    meta = provenance(record, fmt)
    text = get_dotted(record, fmt.text_field)
    if SURROGATE_ESCAPE_RE.search(line):  # before any other reject: a reject's url must be valid UTF-8 too
        columns = [("text", text)] if isinstance(text, str) else []
        for column, value in (*columns, *meta.items()):
            found = SURROGATE_RE.search(value)
            if found:
                return Reject(source, file_index, number, "invalid_text",
                              f"{column!r} holds a lone surrogate {_escaped(found.group())} at character "
                              f"{found.start()}: not encodable as UTF-8", _escaped(meta["url"]), _escaped(meta["record_id"]))
    if text is None:
        return Reject(source, file_index, number, "missing_text", f"no {fmt.text_field!r} field",
                      meta["url"], meta["record_id"])
    if not isinstance(text, str):
        return Reject(source, file_index, number, "text_not_string",
                      f"{fmt.text_field!r} is a JSON {type(text).__name__}", meta["url"], meta["record_id"])
    doc_lines, breaks, too_long = split_body_lines(text, limits)
    if too_long:
        return Reject(source, file_index, number, "line_too_long", too_long, meta["url"], meta["record_id"])
    if invalid:
        report.invalid_utf8_bytes += invalid
        report.documents_with_invalid_utf8 += 1
    return Document(
        doc_id=f"{file_index}:{record_index}", doc_key=document_key(file_index, record_index), url=meta["url"],
        record_id=meta["record_id"], date=meta["date"], crawl=meta["crawl"], source=source, record_offset=number,
        content_language=meta["content_language"], lines=doc_lines, invalid_utf8_bytes=invalid, breaks=breaks,
    )


def _escaped(value: str) -> str:
    """``value`` with any surrogate written as its escape (a reject's fields must be valid UTF-8)."""
    return value.encode("utf-8", "backslashreplace").decode("utf-8")
