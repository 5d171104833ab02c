"""Helpers for the text tests: hand-built WET records and output comparison."""
from __future__ import annotations

import gzip
import hashlib
import json
import re
from pathlib import Path

IN_PROCESS = ["--runner=DirectRunner", "--direct_running_mode=in_memory", "--direct_num_workers=1"]
TWO_PROCESSES = ["--runner=DirectRunner", "--direct_running_mode=multi_processing", "--direct_num_workers=2"]


def wet_record(url: str, body: bytes, record_type: str = "conversion", content_length: int | None = None,
               extra_headers: list[tuple[str, str]] = (), reverse_headers: bool = False) -> bytes:
    """One WARC/1.0 record as Common Crawl writes it (CRLF headers, body, two CRLF)."""
    headers = [("WARC-Type", record_type), ("WARC-Target-URI", url), ("WARC-Date", "2024-05-18T00:00:00Z"),
               ("WARC-Record-ID", f"<urn:uuid:{hashlib.md5(url.encode()).hexdigest()}>"),
               ("Content-Type", "text/plain"), *extra_headers,
               ("Content-Length", str(len(body) if content_length is None else content_length))]
    if reverse_headers:
        headers = headers[::-1]
    head = "WARC/1.0\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers) + "\r\n"
    return head.encode() + body + b"\r\n\r\n"


def warcinfo(crawl: str = "CC-MAIN-2099-01") -> bytes:
    return wet_record("", f"isPartOf: {crawl}\r\noperator: test\r\n".encode(), record_type="warcinfo")


def write_wet(path: Path, records: list[bytes], gzipped: bool = True) -> Path:
    """Write records, one gzip member per record (like CC) when ``gzipped``."""
    data = b"".join(gzip.compress(r, mtime=0) for r in records) if gzipped else b"".join(records)
    path.write_bytes(data)
    return path


def tree_digest(folder: Path) -> dict[str, str]:
    """sha256 of every file under ``folder`` by relative path; stats.json without its run timing
    (``run.started``, ``run.wall_s``: the only bytes of a run that depend on when it ran)."""
    return {str(p.relative_to(folder)): hashlib.sha256(_timeless(p)).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _timeless(path: Path) -> bytes:
    if path.name == "report.html":  # its run table shows the same two values
        return re.sub(rb"<tr><td>(started|wall_s)</td><td>[^<]*</td></tr>", b"", path.read_bytes())
    if path.name != "stats.json":
        return path.read_bytes()
    stats = json.loads(path.read_text())
    for key in ("started", "wall_s"):
        stats.get("run", {}).pop(key, None)
    return json.dumps(stats, sort_keys=True).encode()
