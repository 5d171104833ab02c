"""Exact line deduplication over a shard group with compact uint64 hash arrays.

Counting: each chunk of documents becomes a ``LineCounts`` (sorted unique hashes, occurrence
counts, smallest document key holding the line), split into hash partitions; the counts of every
chunk of a (group, partition) meet at that key and are merged by concatenation + sort, never by
Python sets of strings. Memory per unique line in a ``LineCounts``: 8 (hash) + 4 (count) + 8 (first
doc key) = 20 bytes, so a key holds ~20 bytes x the partition's share of the group's unique lines.

Answer: each chunk gets back, from every partition, only the group totals of its own hashes that
occur more than once (``repeated_in``): the chunk's drop list, at most the size of the chunk.

Removal: a line is a duplicate when its normalized hash occurs >= ``threshold`` times in the group;
all its occurrences are removed, except, with ``keep_canonical``, the ones in the document with the
smallest key (file index, record index), as C4 does.

Groups: the Helium paper deduplicates "each shard (there is 100 shards per crawl)"; a Common Crawl
crawl has 100 segments (``crawl-data/CC-MAIN-YYYY-WW/segments/<timestamp>.<N>/wet/...``, ~900 WET
files each), so an input file in that layout belongs to the group of its segment, whatever the order
of ``wet.paths.gz``. Other inputs are grouped by ``files_per_group`` consecutive files.

Partitions per group: ``partitions`` for every group, or with ``partitions: 0`` (auto) one per
``bytes_per_partition`` of the group's input bytes (file sizes as stored, from the listing),
rounded up to a power of two: memory per key then stays about the same whatever the group's size.
The output does not depend on the partition count.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterable

import numpy as np

BYTES_PER_UNIQUE_LINE = 8 + 4 + 8
MERGE_EVERY = 32  # partial counts merged at once by ``merge_incrementally`` (a speed/memory trade-off only)
HASH_SPACE = float(2**64)


@dataclass(slots=True)
class LineCounts:
    hashes: np.ndarray  # uint64, sorted, unique
    counts: np.ndarray  # uint32
    first: np.ndarray   # uint64: smallest document key holding the line

    @classmethod
    def empty(cls) -> "LineCounts":
        return cls(np.empty(0, np.uint64), np.empty(0, np.uint32), np.empty(0, np.uint64))

    @property
    def nbytes(self) -> int:
        return self.hashes.nbytes + self.counts.nbytes + self.first.nbytes

    def __len__(self) -> int:
        return len(self.hashes)


CC_SEGMENT_RE = re.compile(r"crawl-data/(CC-MAIN-\d{4}-\d{2})/segments/([^/]+)/")


def dedup_groups(paths: list[str], files_per_group: int) -> list[str]:
    """The dedup group of each input file: ``CC-MAIN-YYYY-WW/<segment>`` for Common Crawl paths,
    ``files-<n>`` (n = position among the other files // files_per_group) otherwise."""
    groups, others = [], 0
    for path in paths:
        segment = CC_SEGMENT_RE.search(path)
        if segment:
            groups.append(f"{segment.group(1)}/{segment.group(2)}")
        else:
            groups.append(f"files-{others // files_per_group:06d}")
            others += 1
    return groups


def check_settings(settings: dict) -> None:
    """``line_dedup`` settings that would make the join wrong or impossible: a one-line error."""
    from moshi_data.pipeline.config import ConfigError

    for key, low in (("threshold", 2), ("partitions", 0), ("bytes_per_partition", 1)):
        if int(settings[key]) < low:
            raise ConfigError(f"line_dedup.{key} must be >= {low}" + (" (0 = auto)" if key == "partitions" else "")
                              + f", got {settings[key]}")


def check_sample_settings(settings: dict) -> None:
    """``line_samples`` settings the sample combiner cannot work with: a one-line error."""
    from moshi_data.pipeline.config import ConfigError

    if int(settings["max_per_class"]) < 1:
        raise ConfigError(f"line_samples.max_per_class must be >= 1, got {settings['max_per_class']}")
    if not float(settings["trim_slack"]) >= 1:
        raise ConfigError(f"line_samples.trim_slack must be >= 1 (trim at trim_slack x max_per_class), "
                          f"got {settings['trim_slack']}")


def group_partitions(groups: list[str], sizes: list[int], partitions: int, bytes_per_partition: int) -> dict[str, int]:
    """Hash partitions of each dedup group (``groups[i]``, ``sizes[i]``: file i's group and bytes):
    ``partitions``, or with 0 one per ``bytes_per_partition`` of the group, rounded up to a power of two."""
    group_bytes: dict[str, int] = {}
    for group, size in zip(groups, sizes):
        group_bytes[group] = group_bytes.get(group, 0) + size
    if partitions:
        return dict.fromkeys(group_bytes, partitions)
    return {group: 1 << max(0, -(-total // bytes_per_partition) - 1).bit_length() for group, total in group_bytes.items()}


def _reduce(hashes: np.ndarray, counts: np.ndarray, first: np.ndarray) -> LineCounts:
    if len(hashes) == 0:
        return LineCounts.empty()
    order = np.lexsort((first, hashes))
    hashes, counts, first = hashes[order], counts[order], first[order]
    starts = np.flatnonzero(np.concatenate(([True], hashes[1:] != hashes[:-1])))
    summed = np.add.reduceat(counts.astype(np.uint64), starts).astype(np.uint32)
    return LineCounts(hashes[starts], summed, first[starts])  # lexsort puts the smallest key first


def count_lines(hashes: np.ndarray, doc_keys: np.ndarray) -> LineCounts:
    """Counts of the line hashes of some documents (``doc_keys[i]`` is the key of line i's doc)."""
    return _reduce(hashes.astype(np.uint64, copy=False), np.ones(len(hashes), np.uint32),
                   doc_keys.astype(np.uint64, copy=False))


def merge_counts(parts: list[LineCounts]) -> LineCounts:
    """Merge partial counts (of the same group) into one."""
    parts = [part for part in parts if len(part)]
    if not parts:
        return LineCounts.empty()
    if len(parts) == 1:
        return parts[0]
    return _reduce(np.concatenate([p.hashes for p in parts]), np.concatenate([p.counts for p in parts]),
                   np.concatenate([p.first for p in parts]))


def merge_incrementally(parts: Iterable[LineCounts], every: int = MERGE_EVERY) -> LineCounts:
    """Merge a stream of partial counts, compacting every ``every`` parts: memory is the merged
    table (unique lines) plus ``every`` parts, not every occurrence of the stream."""
    merged, pending = LineCounts.empty(), []
    for part in parts:
        pending.append(part)
        if len(pending) >= every:
            merged, pending = merge_counts([merged, *pending]), []
    return merge_counts([merged, *pending])


def split_partitions(counts: LineCounts, partitions: int) -> dict[int, LineCounts]:
    """Split counts by ``hash % partitions`` (each part stays sorted)."""
    if partitions == 1:
        return {0: counts}
    part_of = (counts.hashes % np.uint64(partitions)).astype(np.int64)
    return {int(p): LineCounts(counts.hashes[part_of == p], counts.counts[part_of == p], counts.first[part_of == p])
            for p in np.unique(part_of)}


def repeated(counts: LineCounts) -> LineCounts:
    """Only the lines seen at least twice: what the removal step needs to look up."""
    keep = counts.counts >= 2
    return LineCounts(counts.hashes[keep], counts.counts[keep], counts.first[keep])


def repeated_in(table: LineCounts, hashes: np.ndarray) -> LineCounts:
    """The rows of ``table`` (sorted) whose hash is in ``hashes`` (sorted unique): one chunk's answer."""
    if len(table) == 0 or len(hashes) == 0:
        return LineCounts.empty()
    pos = np.minimum(np.searchsorted(table.hashes, hashes), len(table) - 1)
    pos = pos[table.hashes[pos] == hashes]
    return LineCounts(table.hashes[pos], table.counts[pos], table.first[pos])


def lookup(table: LineCounts, hashes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Occurrence count (1 when absent from the table) and first document key of each hash."""
    if len(table) == 0 or len(hashes) == 0:
        return np.ones(len(hashes), np.uint32), np.full(len(hashes), np.iinfo(np.uint64).max, np.uint64)
    pos = np.searchsorted(table.hashes, hashes)
    pos_clipped = np.minimum(pos, len(table) - 1)
    found = table.hashes[pos_clipped] == hashes
    counts = np.where(found, table.counts[pos_clipped], 1).astype(np.uint32)
    first = np.where(found, table.first[pos_clipped], np.iinfo(np.uint64).max).astype(np.uint64)
    return counts, first


def duplicate_mask(counts: np.ndarray, first: np.ndarray, doc_key: int, threshold: int,
                   keep_canonical: bool) -> tuple[np.ndarray, np.ndarray]:
    """(is_duplicate, remove) flags for the lines of one document."""
    is_duplicate = counts >= threshold
    if keep_canonical:
        return is_duplicate, is_duplicate & (first != np.uint64(doc_key))
    return is_duplicate, is_duplicate


def sample_mask(hashes: np.ndarray, rate: float) -> np.ndarray:
    """Deterministic hash-based sample: the same line is picked in every run and worker."""
    if rate >= 1.0:
        return np.ones(len(hashes), bool)
    return hashes < np.uint64(int(rate * HASH_SPACE))


@dataclass(slots=True)
class LineSamples:
    """The sampled lines of one chunk as arrays (line i: ``hashes[i]``, ``texts[i]``, group count
    ``counts[i]``, ``duplicate[i]``): rows are built only for the lines that can still be selected."""

    hashes: np.ndarray     # uint64
    texts: list[str]
    counts: np.ndarray     # uint32
    duplicate: np.ndarray  # bool

    def __len__(self) -> int:
        return len(self.hashes)

    def rows(self, index: np.ndarray | None = None) -> list[tuple]:
        """``(hash, text, count, duplicate)`` tuples of the lines at ``index`` (default: all)."""
        index = np.arange(len(self)) if index is None else index
        return list(zip(self.hashes[index].tolist(), [self.texts[i] for i in index.tolist()],
                        self.counts[index].tolist(), self.duplicate[index].tolist()))


def add_sample_batch(by_class: dict[bool, dict[int, tuple]], samples: LineSamples, cutoffs: dict[bool, int]) -> None:
    """``add_samples`` of a chunk's samples, skipping every line whose hash is above its class's
    cutoff (a hash with ``limit`` distinct smaller-or-equal ones already held: it cannot be selected)."""
    for duplicate in (False, True):
        mask = samples.duplicate == duplicate
        if duplicate in cutoffs:
            mask &= samples.hashes <= np.uint64(cutoffs[duplicate])
        index = np.flatnonzero(mask)
        if len(index):
            add_samples(by_class, samples.rows(index))


def trim_samples(by_class: dict[bool, dict[int, tuple]], limit: int, above: int, cutoffs: dict[bool, int]) -> None:
    """Per class holding more than ``above`` samples: keep the ``limit`` smallest hashes (the same
    rows as ``smallest_samples``, by a partition instead of a sort) and record the largest as the
    class's cutoff."""
    for duplicate, rows in by_class.items():
        if len(rows) > above:
            keys = np.fromiter(rows, np.uint64, len(rows))
            cutoff = int(np.partition(keys, limit - 1)[limit - 1])
            by_class[duplicate] = {key: row for key, row in rows.items() if key <= cutoff}
            cutoffs[duplicate] = cutoff


def smallest_samples(by_class: dict[bool, dict[int, tuple]], limit: int) -> dict[bool, dict[int, tuple]]:
    """Keep, per class (duplicate or not), the ``limit`` samples with the smallest hashes.

    Exact under merging: a hash outside the smallest ``limit`` of a part cannot be in the smallest
    ``limit`` of the whole, so parts can be trimmed before they are merged."""
    return {cls: dict(sorted(rows.items())[:limit]) if len(rows) > limit else rows for cls, rows in by_class.items()}


def add_samples(by_class: dict[bool, dict[int, tuple]], samples) -> dict[bool, dict[int, tuple]]:
    """Add ``(hash, text, count, duplicate)`` samples; one per hash (the smallest tuple wins)."""
    for sample in samples:
        rows = by_class.setdefault(sample[3], {})
        known = rows.get(sample[0])
        if known is None or sample < known:
            rows[sample[0]] = sample
    return by_class
