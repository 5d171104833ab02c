"""Chunks of documents (the unit the job moves between steps) and the per-chunk processing.

A WET file is read into chunks of ``docs_per_chunk`` documents in file order; each chunk becomes
one output shard named after its file index and chunk index, so the output layout depends only on
the input list, never on workers or timing.
"""
from __future__ import annotations

import itertools
import pickle
import time
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import zstandard

from moshi_data.pipeline.text import line_dedup
from moshi_data.pipeline.text.accounting import add_to_funnel
from moshi_data.pipeline.text.document import Document
from moshi_data.pipeline.text.fasttext_model import release_model_lines
from moshi_data.pipeline.text.langid import score_bucket
from moshi_data.pipeline.text.normalize import line_hashes
from moshi_data.pipeline.text.stages import EXACT_DEDUP, build_stages, run_stages


@dataclass(slots=True)
class DocChunk:
    file_index: int
    chunk_index: int
    group: str  # line_dedup.dedup_groups
    source: str
    docs: list[Document]
    tally: Counter = field(default_factory=Counter)
    dropped: list[dict] = field(default_factory=list)  # a few filtered documents per reason (report)

    EXAMPLES_PER_REASON = 3
    EXAMPLE_CHARS = 2000

    @property
    def chunk_id(self) -> tuple[int, int]:
        """The key that joins a chunk with its line-dedup answer and its MinHash tags."""
        return self.file_index, self.chunk_index

    @property
    def shard_name(self) -> str:
        return f"part-{self.file_index:06d}-{self.chunk_index:05d}.parquet"

    def filter_document(self, doc: Document, reason: str) -> None:
        """Count ``doc`` as filtered for ``reason`` (its remaining lines as removed with it).

        The caller removes it from ``docs``; cross-document stages (MinHash) use this too."""
        self.tally[f"documents.filtered.{reason}"] += 1
        self.tally[f"lines.removed.filtered_document:{reason}"] += len(doc.lines)
        if self.tally[f"documents.filtered.{reason}"] <= self.EXAMPLES_PER_REASON:
            self.dropped.append(document_example(doc, reason, self.EXAMPLE_CHARS))


def document_example(doc: Document, reason: str, max_chars: int) -> dict:
    """A filtered document as the run report shows it (``outcome`` and ``reason`` as in the rejects)."""
    return {"outcome": "filtered", "reason": reason, "doc_id": doc.doc_id, "url": doc.url or None, "text": doc.text[:max_chars],
            "language": doc.language or None, "language_score": doc.language_score if doc.language else None,
            "scores": doc.fields.get("scores")}


def pack_chunk(chunk: DocChunk, level: int) -> bytes:
    """A chunk as it travels through a join: zstd-compressed pickle (~1/4 of the pickle). A runner
    that holds a join's input in memory (the DirectRunner) then holds bytes, not object graphs."""
    return zstandard.ZstdCompressor(level=level).compress(pickle.dumps(chunk, protocol=pickle.HIGHEST_PROTOCOL))


def unpack_chunk(data: bytes) -> DocChunk:
    return pickle.loads(zstandard.ZstdDecompressor().decompress(data))


def hash_documents(docs: list[Document]) -> None:
    """Normalize and hash the lines of each document (CCNet rules), in place."""
    for doc in docs:
        doc.line_hashes = line_hashes(doc.lines)


def chunk_line_counts(chunk: DocChunk, partitions: int) -> dict[int, line_dedup.LineCounts]:
    """The chunk's line counts, split by hash partition."""
    if not chunk.docs:
        return {}
    hashes = np.concatenate([doc.line_hashes for doc in chunk.docs])
    keys = np.repeat(np.array([doc.doc_key for doc in chunk.docs], np.uint64),
                     [len(doc.line_hashes) for doc in chunk.docs])
    return line_dedup.split_partitions(line_dedup.count_lines(hashes, keys), partitions)


class ChunkProcessor:
    """Exact line dedup against the group's table, then the configured stage chain."""

    def __init__(self, config: dict):
        dedup = config["line_dedup"]
        self.threshold = int(dedup["threshold"])
        self.keep_canonical = bool(dedup["keep_canonical"])
        self.sample_rate = float(config["line_samples"]["rate"])
        self.histogram_width = float(config["stats"]["score_histogram_width"])
        self.stages = build_stages(config)

    def setup(self) -> None:
        for stage in self.stages:
            stage.setup()

    def process(self, chunk: DocChunk, table: line_dedup.LineCounts,
                seconds: Counter | None = None) -> tuple[DocChunk, line_dedup.LineSamples]:
        """Returns the chunk with only kept documents (tally updated) and its sampled lines."""
        seconds = Counter() if seconds is None else seconds
        tally = chunk.tally
        kept: list[Document] = []
        start = time.perf_counter()
        # one table lookup for the whole chunk; each document takes its slice
        all_hashes = np.concatenate([doc.line_hashes for doc in chunk.docs] or [np.empty(0, np.uint64)])
        all_counts, all_first = line_dedup.lookup(table, all_hashes)
        ends = np.cumsum([len(doc.line_hashes) for doc in chunk.docs]).tolist()
        sampled = line_dedup.sample_mask(all_hashes, self.sample_rate)
        lines = itertools.chain.from_iterable(doc.lines for doc in chunk.docs)  # the lines before any removal
        samples = line_dedup.LineSamples(
            all_hashes[sampled], list(lines) if sampled.all() else list(itertools.compress(lines, sampled.tolist())),
            all_counts[sampled], all_counts[sampled] >= self.threshold)
        seconds[EXACT_DEDUP] += time.perf_counter() - start
        for doc, end in zip(chunk.docs, ends):
            start = time.perf_counter()
            begin = end - len(doc.line_hashes)
            counts, first = all_counts[begin:end], all_first[begin:end]
            tally["lines.in"] += len(doc.lines)
            doc.line_counts["in"] = len(doc.lines)
            add_to_funnel(tally, "in", doc)
            duplicate, remove = line_dedup.duplicate_mask(counts, first, doc.doc_key, self.threshold,
                                                          self.keep_canonical)
            tally["line_dedup.duplicate_line_occurrences"] += int(duplicate.sum())
            doc.drop_lines(~remove, EXACT_DEDUP)
            doc.line_counts[EXACT_DEDUP] = len(doc.lines)
            seconds[EXACT_DEDUP] += time.perf_counter() - start
            if not doc.lines:  # nothing left to identify or measure
                reason = EXACT_DEDUP if doc.line_counts["in"] else "empty"
            else:
                add_to_funnel(tally, EXACT_DEDUP, doc)
                reason = run_stages(doc, self.stages, seconds, tally)
            if doc.language:
                tally[f"language.score_histogram.{score_bucket(doc.language_score, self.histogram_width)}"] += 1
                tally[f"language.detected.{doc.language}"] += 1
            for label, score in (doc.fields.get("scores") or {}).items():
                tally[f"quality_histogram.{label}.{score_bucket(score, self.histogram_width)}"] += 1
            for stage, removed in doc.lines_removed.items():
                tally[f"lines.removed.{stage}"] += removed
            if reason is None:
                doc.line_hashes = None  # per-line state used up here: it does not travel further
                release_model_lines(doc)
                kept.append(doc)
            else:
                chunk.filter_document(doc, reason)
        chunk.docs = kept
        return chunk, samples
