"""The document record that flows through the text job, rejects, and the stage protocol.

A *document stage* is an object with ``name``, ``setup()`` (load models; called once per worker)
and ``process(doc) -> str | None``: it may change ``doc`` (drop lines with ``doc.drop_lines``, set
fields) and returns ``None`` to keep the document or a short filter reason to drop it. Columns a
stage adds to the output Parquet are declared in ``columns`` (pyarrow fields) and stored in
``doc.fields``. The job counts every outcome uniformly:
``documents.filtered.<reason>``, ``lines.removed.<stage name>``.
"""
from __future__ import annotations

import inspect
import itertools
import operator
from dataclasses import dataclass, field
from dataclasses import fields as dataclass_fields
from typing import Any, Protocol

import numpy as np


RECORD_BITS = 32  # a document key is file_index << RECORD_BITS | record_index


def document_key(file_index: int, record_index: int) -> int:
    """The key ordering documents by (file, record): the canonical-occurrence order."""
    return (file_index << RECORD_BITS) | record_index


def file_index_of(doc_key: int) -> int:
    return doc_key >> RECORD_BITS


@dataclass(slots=True)
class Document:
    """One WET conversion record and what the stages learned about it."""

    doc_id: str            # "<file index>:<record index>", unique and ordered within a run
    doc_key: int           # document_key(file index, record index): the canonical-occurrence order
    url: str
    record_id: str
    date: str
    crawl: str
    source: str
    record_offset: int     # WET: byte offset in the decompressed stream; JSONL: line number (from 1)
    content_language: str  # WARC-Identified-Content-Language header / JSONL language key ("" when absent)
    lines: list[str]
    line_hashes: np.ndarray | None = None
    invalid_utf8_bytes: int = 0
    language: str = ""
    language_score: float = 0.0
    line_counts: dict[str, int] = field(default_factory=dict)   # stage -> lines left after it
    lines_removed: dict[str, int] = field(default_factory=dict)  # stage -> lines it removed
    fields: dict[str, Any] = field(default_factory=dict)        # extra output columns by name
    breaks: np.ndarray | None = None  # bool per line: a paragraph break (blank line) comes before it

    def __reduce__(self):
        """Pickled as its field values, rebuilt by ``__init__`` (positional, in field order: checked at
        import by ``init_field_getter``): a third faster both ways than the default of a slots
        dataclass (chunks are pickled whole through the job's joins)."""
        return Document, _document_fields(self)

    @property
    def text(self) -> str:
        """The lines, with one blank line between paragraphs (never at the start or the end)."""
        if self.breaks is None or not self.breaks.any():
            return "\n".join(self.lines)
        return "\n".join([f"\n{line}" if brk else line for line, brk in zip(self.lines, self.breaks.tolist())])

    @property
    def text_bytes(self) -> int:
        """``len(self.text.encode("utf-8"))`` without building the text (a break is one more newline)."""
        breaks = 0 if self.breaks is None else int(self.breaks.sum())
        return len("\n".join(self.lines).encode("utf-8")) + breaks

    @property
    def chars(self) -> int:
        """``len(self.text)`` without building it."""
        breaks = 0 if self.breaks is None else int(self.breaks.sum())
        return sum(map(len, self.lines)) + max(len(self.lines) - 1, 0) + breaks

    def drop_lines(self, keep: np.ndarray | list[bool], stage: str) -> int:
        """Keep only ``lines[i]`` where ``keep[i]``; count the removed lines under ``stage``."""
        keep = np.asarray(keep, dtype=bool)
        removed = int(len(self.lines) - keep.sum())
        if removed:
            self.lines = list(itertools.compress(self.lines, keep.tolist()))
            if self.line_hashes is not None:
                self.line_hashes = self.line_hashes[keep]
            if self.breaks is not None:
                self.breaks = kept_breaks(self.breaks, keep)
        self.lines_removed[stage] = self.lines_removed.get(stage, 0) + removed
        return removed


def init_field_getter(cls) -> operator.attrgetter:
    """A getter of a dataclass's field values in the order its ``__init__`` takes them, so that
    ``cls(*getter(obj))`` rebuilds ``obj``. A TypeError (at import) unless ``__init__`` takes exactly the
    fields, in order, positionally: an ``init=False``, keyword-only or ``InitVar`` field would make
    ``__reduce__`` rebuild a wrong object."""
    names = [f.name for f in dataclass_fields(cls)]
    parameters = list(inspect.signature(cls.__init__).parameters.values())[1:]
    if [p.name for p in parameters] != names or any(p.kind is not p.POSITIONAL_OR_KEYWORD for p in parameters):
        raise TypeError(f"{cls.__name__}.__reduce__ needs __init__ to take every field positionally, in order: "
                        f"fields {names}, __init__ takes {[str(p) for p in parameters]}")
    return operator.attrgetter(*names)


_document_fields = init_field_getter(Document)


def split_paragraphs(lines: list[str]) -> tuple[list[str], np.ndarray]:
    """Blank lines are separators, not lines: the non-blank lines and, for each, whether one or more
    blank lines came before it (runs collapse to one break; none before the first line)."""
    kept, breaks, pending = [], [], False
    for line in lines:
        if not line.strip():
            pending = bool(kept)
            continue
        kept.append(line)
        breaks.append(pending)
        pending = False
    return kept, np.array(breaks, dtype=bool)


def kept_breaks(breaks: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """Paragraph breaks after dropping lines: a kept line starts a paragraph when a break came
    anywhere between it and the previous kept line (the first kept line never does)."""
    kept = np.flatnonzero(keep)
    out = np.zeros(len(kept), dtype=bool)
    if len(kept) > 1:
        seen = np.cumsum(breaks)
        out[1:] = seen[kept[1:]] > seen[kept[:-1]]
    return out


@dataclass(slots=True, frozen=True)
class Reject:
    """A unit of input that could not become a document (a record, a file remainder or a file)."""

    source: str
    file_index: int
    record_offset: int
    reason: str
    message: str
    url: str = ""
    record_id: str = ""

    def sort_key(self) -> tuple:
        return (self.file_index, self.record_offset, self.reason)

    def to_json(self) -> dict[str, Any]:
        return {
            "source": self.source, "record_offset": self.record_offset, "outcome": "rejected", "reason": self.reason,
            "message": self.message, "url": self.url or None, "record_id": self.record_id or None,
        }


class DocumentStage(Protocol):
    name: str
    columns: list  # pyarrow fields this stage adds to the Parquet output

    def setup(self) -> None: ...

    def process(self, doc: Document) -> str | None: ...
