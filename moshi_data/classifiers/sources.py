"""Read training documents from the sources named in config (local files, globs, s3://, gs://, https://).

A source is a mapping ``{path, format, ...options}``; every reader yields plain-text documents.
Remote paths and globs go through Beam FileSystems, local ones through ``glob``.
"""
from __future__ import annotations

import fnmatch
import glob
import gzip
import hashlib
import html
import io
import json
import re
import xml.etree.ElementTree as ElementTree
import zipfile
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

from moshi_data.pipeline.config import REPO_ROOT

_TAG = re.compile(r"<[^>]+>")
_BLOCK_END = re.compile(r"</(p|li|h[1-6]|pre|blockquote|div)>|<br\s*/?>", re.IGNORECASE)
_LATEX_COMMAND = re.compile(r"\\[a-zA-Z@]+\*?(\[[^\]]*\])?")
_WIKITEXT_JOINERS = {" @-@ ": "-", " @,@ ": ",", " @.@ ": "."}


def resolve_root(root: str | None) -> Path:
    """A data root given relative to the repo (``../shared/data``) or absolute."""
    path = Path(root or ".")
    return path if path.is_absolute() else (REPO_ROOT / path).resolve()


def expand_paths(pattern: str, root: Path) -> list[str]:
    """Sorted files matching a path or glob; raises when nothing matches (a typo must not train silently)."""
    if "://" in pattern:
        from apache_beam.io.filesystems import FileSystems

        matched = sorted(m.path for m in FileSystems.match([pattern])[0].metadata_list)
    else:
        full = pattern if Path(pattern).is_absolute() else str(root / pattern)
        matched = sorted(p for p in glob.glob(full, recursive=True) if Path(p).is_file())
    if not matched:
        raise FileNotFoundError(f"no file matches source path {pattern!r} (root {root})")
    return matched


def read_bytes(path: str, decompress: bool = True) -> bytes:
    """Whole file content (decompressing .gz unless ``decompress`` is False)."""
    if "://" in path:
        from apache_beam.io.filesystems import CompressionTypes, FileSystems

        with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as handle:
            data = handle.read()
    else:
        data = Path(path).read_bytes()
    if decompress and path.endswith(".gz") and data[:2] == b"\x1f\x8b":
        return gzip.decompress(data)
    return data


def decode(data: bytes) -> str:
    return data.decode("utf-8-sig", errors="replace")


def html_to_text(markup: str) -> str:
    """Block-level HTML to lines of plain text."""
    return html.unescape(_TAG.sub("", _BLOCK_END.sub("\n", markup)))


def _text(data: bytes, source: Mapping[str, Any]) -> Iterator[str]:
    yield decode(data)


def _wikitext(data: bytes, source: Mapping[str, Any]) -> Iterator[str]:
    text = decode(data)
    for token, joined in _WIKITEXT_JOINERS.items():
        text = text.replace(token, joined)
    yield text


def _latex(data: bytes, source: Mapping[str, Any]) -> Iterator[str]:
    lines = []
    for line in decode(data).split("\n"):
        line = line.split("%", 1)[0] if not line.lstrip().startswith("\\%") else line
        line = _LATEX_COMMAND.sub("", line).replace("{", "").replace("}", "").replace("~", " ")
        lines.append(line)
    yield "\n".join(lines)


def _jsonl(data: bytes, source: Mapping[str, Any]) -> Iterator[str]:
    fields = source.get("fields") or ["text"]
    for raw in decode(data).split("\n"):
        if not raw.strip():
            continue
        record = json.loads(raw)
        parts = [record.get(field) for field in fields]
        text = "\n".join(part for part in parts if isinstance(part, str) and part.strip())
        if text:
            yield text


def _zip(data: bytes, source: Mapping[str, Any]) -> Iterator[str]:
    patterns = source.get("members") or ["*"]
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        for name in sorted(archive.namelist()):
            if not name.endswith("/") and any(fnmatch.fnmatch(name, p) for p in patterns):
                yield decode(archive.read(name))


def _stackexchange_posts(data: bytes, source: Mapping[str, Any]) -> Iterator[str]:
    root = ElementTree.fromstring(data)
    for row in root.iter("row"):
        parts = [row.get("Title") or "", html_to_text(row.get("Body") or "")]
        text = "\n".join(part for part in parts if part.strip())
        if text:
            yield text


def _medquad(data: bytes, source: Mapping[str, Any]) -> Iterator[str]:
    root = ElementTree.fromstring(data)
    for pair in root.iter("QAPair"):
        parts = [(pair.findtext("Question") or ""), (pair.findtext("Answer") or "")]
        text = "\n".join(part.strip() for part in parts if part.strip())
        if text:
            yield text


def _wet(data: bytes, source: Mapping[str, Any]) -> Iterator[str]:
    """Documents of a WET file (plain or gzipped), parsed by the text job's reader; its rejects
    (corrupt or truncated records) are skipped here, the text job counts them."""
    from moshi_data.pipeline.config import load_config
    from moshi_data.pipeline.text.document import Document
    from moshi_data.pipeline.text.wet import FileReport, WetLimits, read_wet

    limits = WetLimits.from_config(load_config("text_corpus")["wet"])
    name = str(source["path"])
    for item in read_wet(io.BytesIO(data), name, 0, limits, FileReport(name, 0)):
        if isinstance(item, Document):
            yield item.text


READERS: dict[str, Callable[[bytes, Mapping[str, Any]], Iterator[str]]] = {
    "text": _text,
    "wikitext": _wikitext,
    "latex": _latex,
    "jsonl": _jsonl,
    "zip": _zip,
    "stackexchange_posts": _stackexchange_posts,
    "medquad": _medquad,
    "wet": _wet,
}


def iter_documents(source: Mapping[str, Any], root: Path) -> Iterator[str]:
    """Every document of one source, in a stable order."""
    reader = READERS.get(source.get("format", "text"))
    if reader is None:
        raise ValueError(f"unknown source format {source.get('format')!r}; known: {sorted(READERS)}")
    for path in expand_paths(source["path"], root):
        yield from reader(read_bytes(path, decompress=reader is not _wet), source)


def sources_identity(sources: list[Mapping[str, Any]], root: Path) -> list[list[str]]:
    """Content digests of every file of the sources (part of a model's cache key)."""
    identity = []
    for source in sources:
        for path in expand_paths(source["path"], root):
            digest = hashlib.sha256(read_bytes(path, decompress=False)).hexdigest()[:16]
            identity.append([json.dumps(dict(source), sort_keys=True), Path(path).name, digest])
    return identity
