"""Read Common Crawl WET files with warcio into ``Document``s and ``Reject``s.

Headers are read by name. Only ``conversion`` records become documents; ``warcinfo`` gives the
crawl id; other record types are counted and skipped. Gzip input is decompressed as one stream
(CC files are one gzip member per record, some damaged files are a single member: both work), so
``record_offset`` is the offset in the decompressed WET stream.

Bad input never stops the job. Reject reasons:
``missing_file``, ``unreadable_file``, ``empty_file``, ``truncated_gzip``, ``corrupt_gzip``,
``not_a_warc``, ``corrupt_record`` (warcio cannot parse the next record; the rest of the file is
lost), ``content_length_mismatch`` (body shorter than Content-Length, or bytes left over after it),
``invalid_utf8`` (more than ``max_invalid_utf8_ratio`` of the body's bytes are not UTF-8; below that
ratio invalid bytes are replaced by U+FFFD and counted), ``line_too_long`` (a line above
``max_line_chars``, e.g. a 10 MB single-line record).
"""
from __future__ import annotations

import re
import zlib
from collections import Counter
from dataclasses import dataclass, field
from typing import IO, Iterator

import numpy as np
from warcio.archiveiterator import ArchiveIterator
from warcio.exceptions import ArchiveLoadFailed

from moshi_data.pipeline.text.document import Document, Reject, document_key, split_paragraphs

GZIP_MAGIC = b"\x1f\x8b"
CRAWL_RE = re.compile(rb"^isPartOf:\s*(\S+)", re.MULTILINE)


class _QuietArchiveIterator(ArchiveIterator):
    """warcio iterator whose 'record not followed by newline' warning is counted, not printed."""

    INC_RECORD = ""


@dataclass
class FileReport:
    """What reading one file produced besides documents (all counts are deterministic)."""

    source: str
    file_index: int
    records: Counter = field(default_factory=Counter)   # record type -> count
    documents: int = 0
    rejects: int = 0
    compressed_bytes: int = 0
    invalid_utf8_bytes: int = 0
    documents_with_invalid_utf8: int = 0
    warnings: Counter = field(default_factory=Counter)   # damage that lost no document text


@dataclass(frozen=True)
class WetLimits:
    max_line_chars: int
    max_invalid_utf8_ratio: float

    @classmethod
    def from_config(cls, cfg: dict) -> "WetLimits":
        return cls(max_line_chars=int(cfg["max_line_chars"]),
                   max_invalid_utf8_ratio=float(cfg["max_invalid_utf8_ratio"]))


class CountingReader:
    """File wrapper counting the bytes read from the underlying (compressed) stream."""

    def __init__(self, raw: IO[bytes], first: bytes):
        self.raw, self.first, self.count = raw, first, len(first)

    def read(self, size: int = -1) -> bytes:
        if self.first:
            head, self.first = self.first, b""
            if size is None or size < 0:
                rest = self.raw.read()
                self.count += len(rest)
                return head + rest
            if size <= len(head):
                self.first = head[size:]
                return head[:size]
            rest = self.raw.read(size - len(head))
            self.count += len(rest)
            return head + rest
        data = self.raw.read(size)
        self.count += len(data)
        return data


def open_sniffed(raw: IO[bytes], decompressors: dict[str, tuple[bytes, type]]) -> tuple[IO[bytes], CountingReader, str] | None:
    """Count a raw stream's bytes and decompress it by magic number.

    ``decompressors`` maps a codec name to (magic bytes, stream class). Returns (stream, byte counter,
    codec name or "") or None when the stream is empty.
    """
    first = raw.read(4)
    if not first:
        return None
    counted = CountingReader(raw, first)
    for codec, (magic, stream_class) in decompressors.items():
        if first.startswith(magic):
            return stream_class(counted), counted, codec
    return counted, counted, ""


def empty_file_reject(source: str, file_index: int) -> Reject:
    """The reject of a file with no bytes at all."""
    return Reject(source, file_index, 0, "empty_file", "file is empty (0 bytes)")


class TruncatedGzipError(Exception):
    """The compressed input ends inside a gzip member (not an EOFError: warcio swallows those)."""


class GzipStream:
    """Streaming decompression of concatenated gzip members that returns every byte it could
    decompress before reporting a truncated member (``gzip.GzipFile`` raises at once, losing the
    records before the break)."""

    CHUNK = 1 << 16

    def __init__(self, raw):
        self.raw = raw
        self.decompressor = self.new_decompressor()
        self.in_member = False
        self.buffer, self.pos = b"", 0
        self.raw_eof = self.truncated = False

    @staticmethod
    def new_decompressor():
        return zlib.decompressobj(31)

    def _fill(self) -> None:
        data = self.raw.read(self.CHUNK)
        if not data:
            self.raw_eof = True
            self.truncated = self.in_member
            return
        pieces = [self.buffer[self.pos:]]
        while data:
            self.in_member = True
            pieces.append(self.decompressor.decompress(data))
            if not self.decompressor.eof:
                break
            data = self.decompressor.unused_data
            self.decompressor = self.new_decompressor()
            self.in_member = False
        self.buffer, self.pos = b"".join(pieces), 0

    def read(self, size: int = -1) -> bytes:
        while not self.raw_eof and (size is None or size < 0 or len(self.buffer) - self.pos < size):
            self._fill()
        end = len(self.buffer) if size is None or size < 0 else self.pos + size
        out = self.buffer[self.pos:end]
        self.pos += len(out)
        if not out and self.truncated:
            raise TruncatedGzipError("compressed data ends inside a gzip member")
        return out


def decode_body(body: bytes) -> tuple[str, int]:
    """UTF-8 text of a record body and the number of invalid bytes replaced by U+FFFD."""
    try:
        return body.decode("utf-8"), 0
    except UnicodeDecodeError:
        valid = body.decode("utf-8", errors="ignore")
        return body.decode("utf-8", errors="replace"), len(body) - len(valid.encode("utf-8"))


def split_body_lines(text: str, limits: WetLimits) -> tuple[list[str], np.ndarray, str | None]:
    """Non-blank lines of a record body, paragraph breaks before each (``split_paragraphs``), and
    why it is rejected if a line is too long."""
    lines = text.split("\n")
    longest = max(map(len, lines), default=0)
    if longest > limits.max_line_chars:
        return [], np.zeros(0, bool), f"a line has {longest} characters (limit {limits.max_line_chars})"
    return (*split_paragraphs(lines), None)


def read_wet(raw: IO[bytes], source: str, file_index: int, limits: WetLimits,
             report: FileReport) -> Iterator[Document | Reject]:
    """Yield the documents and rejects of one opened WET stream, in file order."""
    opened = open_sniffed(raw, {"gzip": (GZIP_MAGIC, GzipStream)})
    if opened is None:
        yield from emit_counted(empty_file_reject(source, file_index), report)
        return
    stream, counted, _ = opened
    iterator = _QuietArchiveIterator(stream, check_digests=False)
    crawl = ""
    record_index = 0
    offset = 0
    while True:
        errors_before = iterator.err_count
        try:
            record = next(iterator)
            body = record.content_stream().read()
            offset = iterator.get_record_offset()  # reads to the record's end: length errors show here
        except StopIteration:
            break
        except (TruncatedGzipError, EOFError) as exc:
            yield from emit_counted(Reject(source, file_index, offset, "truncated_gzip", f"gzip stream ends early: {exc}"), report)
            break
        except zlib.error as exc:
            yield from emit_counted(Reject(source, file_index, offset, "corrupt_gzip", f"gzip data is corrupt: {exc}"), report)
            break
        except ArchiveLoadFailed as exc:
            message = " ".join(str(exc).split())[:300]
            reason = "not_a_warc" if "Unknown archive format" in message else "corrupt_record"
            yield from emit_counted(Reject(source, file_index, offset, reason, message), report)
            break
        damaged = iterator.err_count > errors_before  # bytes left after the declared Content-Length
        record_type = record.rec_type or "unknown"
        report.records[record_type] += 1
        if record_type == "warcinfo":
            declared = record.rec_headers.get_header("Content-Length")
            if damaged or (declared is not None and declared.isdigit() and int(declared) != len(body)):
                report.warnings["warcinfo_content_length_mismatch"] += 1
            match = CRAWL_RE.search(body)
            crawl = match.group(1).decode("utf-8", "replace") if match else crawl
            continue
        if record_type != "conversion":
            continue
        if damaged:
            header = record.rec_headers.get_header
            item = Reject(source, file_index, offset, "content_length_mismatch",
                          "bytes left after the declared Content-Length",
                          header("WARC-Target-URI") or "", header("WARC-Record-ID") or "")
        else:
            item = _to_document(record, body, source, file_index, record_index, offset, crawl, limits, report)
        record_index += 1
        yield from emit_counted(item, report)
    report.compressed_bytes = counted.count


def emit_counted(item: Document | Reject, report: FileReport) -> Iterator[Document | Reject]:
    """Yield one reader result, counting it in the file report (rejects) on the way."""
    if isinstance(item, Reject):
        report.rejects += 1
    else:
        report.documents += 1
    yield item


def _to_document(record, body: bytes, source: str, file_index: int, record_index: int, offset: int,
                 crawl: str, limits: WetLimits, report: FileReport) -> Document | Reject:
    header = record.rec_headers.get_header
    url = header("WARC-Target-URI") or ""
    record_id = header("WARC-Record-ID") or ""
    declared = header("Content-Length")
    if declared is not None and declared.isdigit() and int(declared) != len(body):
        return Reject(source, file_index, offset, "content_length_mismatch",
                      f"Content-Length {declared} but body has {len(body)} bytes", url, record_id)
    text, invalid = decode_body(body)
    if invalid and invalid > limits.max_invalid_utf8_ratio * len(body):
        return Reject(source, file_index, offset, "invalid_utf8",
                      f"{invalid} of {len(body)} bytes are not UTF-8", url, record_id)
    lines, breaks, too_long = split_body_lines(text, limits)
    if too_long:
        return Reject(source, file_index, offset, "line_too_long", too_long, url, record_id)
    if invalid:
        report.invalid_utf8_bytes += invalid
        report.documents_with_invalid_utf8 += 1
    return Document(
        doc_id=f"{file_index}:{record_index}", doc_key=document_key(file_index, record_index), url=url,
        record_id=record_id, date=header("WARC-Date") or "", crawl=crawl, source=source,
        record_offset=offset, content_language=header("WARC-Identified-Content-Language") or "",
        lines=lines, invalid_utf8_bytes=invalid, breaks=breaks,
    )
