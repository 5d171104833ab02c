"""Text-only batches: the text corpus' ``documents/*.parquet`` -> packed token sequences, resumable.

Moshi trains part of its batches on text only, from Helium's data (``text.ratio``). Order of work:

1. files: a text-corpus output folder (its ``documents/``), a folder, a glob, one file or
   ``s3://bucket/prefix`` of ``*.parquet``, sorted; s3 objects are read by byte range (footer and
   row groups only) with one client per process (``trainer.data.s3_client``: Beam's S3 options),
   local files directly;
2. document *addresses* ``(file, row)`` per epoch: file order shuffled from ``(seed, epoch)``, rows
   counted from each file's footer, a seeded shuffle buffer over the addresses (integers only);
   addresses are numbered over all epochs; with several ranks the addresses after the run's
   :class:`~moshi_data.trainer.data.StreamOrigin` are dealt round-robin;
3. each address's row is read (a small cache of decoded row groups), decoded as UTF-8, held out for
   eval or not (a hash of its ``id_column``, so the split is by document), optionally kept with a
   probability from its quality scores (``text.quality``), tokenized with the SentencePiece model
   of the audio text stream, followed by EOS;
4. the token stream is cut into sequences of ``length`` tokens (the temporal context).

The position after a sequence is ``[documents consumed, tokens of the next document already used]``
(documents of this rank, after the origin). Resuming replays the address stream of step 2 (no file
is read but footers) and drops that many tokens of the next document, so a resumed run sees the same
sequences as an uninterrupted one. A resume with another rank count starts at the origin the ranks'
positions amount to (``StreamOrigin.after``): every document is used once per epoch, none skipped.
Every document comes with an event: ``used``, or why it was skipped (``held_out``, ``sampled_out``,
``invalid_utf8``, ``empty_text``, ``empty_file``), so documents in = used + skipped.
"""
from __future__ import annotations

import hashlib
import io
import logging
import os
from collections import OrderedDict
from dataclasses import dataclass
from itertools import count
from typing import Any, Callable, Iterator, Mapping, Optional

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset

from moshi_data.trainer.data import LoaderBatches, StreamOrigin, buffer_shuffle, list_shards, s3_client, split_s3_url

LOG = logging.getLogger(__name__)

TEXT_TYPES = ("string", "large_string", "binary", "large_binary")


# ------------------------------------------------------------------------------------- files
def list_text_files(source: str, pattern: str, s3: Optional[Mapping[str, Any]] = None) -> list[str]:
    """Sorted Parquet files of ``source``; a text-corpus output folder means its ``documents/``."""
    documents = os.path.join(source, "documents")
    if not source.startswith("s3://") and os.path.isdir(documents):
        source = documents
    return list_shards(source, pattern, s3)


class S3RangeFile(io.RawIOBase):
    """Seekable read-only view of an s3 object; each read is one ranged GET with ``client`` (boto3)."""

    def __init__(self, url: str, client):
        self.bucket, self.key = split_s3_url(url)
        self.client = client
        self.size = self.client.head_object(Bucket=self.bucket, Key=self.key)["ContentLength"]
        self.offset = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.offset

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self.offset, io.SEEK_END: self.size}[whence]
        self.offset = max(0, base + offset)
        return self.offset

    def readinto(self, buffer) -> int:
        if self.offset >= self.size or len(buffer) == 0:
            return 0
        end = min(self.size, self.offset + len(buffer)) - 1
        body = self.client.get_object(Bucket=self.bucket, Key=self.key, Range=f"bytes={self.offset}-{end}")["Body"].read()
        buffer[: len(body)] = body
        self.offset += len(body)
        return len(body)


def open_parquet(url: str, s3: Optional[Mapping[str, Any]] = None):
    """A ``pyarrow.parquet.ParquetFile`` of a local path or an s3 object (``s3``: Beam's S3 options);
    a bad file raises ValueError."""
    import pyarrow.parquet as pq

    try:
        if url.startswith("s3://"):
            return pq.ParquetFile(io.BufferedReader(S3RangeFile(url, s3_client(s3)), buffer_size=1 << 20))
        return pq.ParquetFile(url)
    except Exception as error:  # not Parquet, truncated, empty (0 bytes), unreadable object
        raise ValueError(f"text file {url}: not a readable Parquet file ({type(error).__name__}: {error})") from error


# ---------------------------------------------------------------------------------- settings
@dataclass(frozen=True)
class TextSettings:
    """The ``text`` section of configs/trainer.yaml, checked."""

    column: str
    id_column: Optional[str]
    eos_id: int
    shuffle_files: bool
    shuffle_buffer: int
    eval_fraction: float
    cache_row_groups: int
    quality_column: Optional[str]
    quality_weights: dict[str, float]
    quality_floor: float

    @classmethod
    def from_config(cls, text: Mapping[str, Any]) -> "TextSettings":
        quality = text.get("quality") or {}
        settings = cls(
            column=str(text["column"]), id_column=text.get("id_column") or None, eos_id=int(text["eos_id"]),
            shuffle_files=bool(text["shuffle_files"]), shuffle_buffer=int(text["shuffle_buffer"]),
            eval_fraction=float(text["eval_fraction"]), cache_row_groups=int(text["cache_row_groups"]),
            quality_column=quality.get("column") if quality.get("enabled") else None,
            quality_weights={str(k): float(v) for k, v in (quality.get("weights") or {}).items()},
            quality_floor=float(quality.get("floor") or 0.0),
        )
        if not 0.0 <= settings.eval_fraction < 1.0:
            raise ValueError(f"text.eval_fraction must be in [0, 1), got {settings.eval_fraction}")
        if settings.quality_column and not settings.quality_weights:
            raise ValueError("text.quality.enabled needs text.quality.weights (score label -> weight)")
        return settings


def unit_hash(*parts: Any) -> float:
    """A uniform number in [0, 1) from ``parts`` (stable across processes and machines)."""
    digest = hashlib.blake2b("\x1f".join(map(str, parts)).encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "little") / 2**64


def keep_probability(scores: Optional[Mapping[str, float]], weights: Mapping[str, float], floor: float) -> float:
    """``clip(sum(weight[label] * score[label]), floor, 1)``: documents sampled by quality score."""
    if not scores:
        return floor
    value = sum(weight * float(scores.get(label) or 0.0) for label, weight in weights.items())
    return min(1.0, max(floor, value))


# ------------------------------------------------------------------------------------ reading
class ParquetDocuments:
    """Rows of Parquet files by address, through a small LRU cache of decoded row groups."""

    def __init__(self, urls: list[str], settings: TextSettings, s3: Optional[Mapping[str, Any]] = None):
        self.urls = urls
        self.settings = settings
        self.s3 = s3
        self._files: OrderedDict = OrderedDict()
        self._groups: OrderedDict = OrderedDict()
        self._row_starts: dict[int, np.ndarray] = {}

    def _file(self, index: int):
        if index in self._files:
            self._files.move_to_end(index)
            return self._files[index]
        parquet = open_parquet(self.urls[index], self.s3)
        self._check_schema(index, parquet.schema_arrow)
        self._files[index] = parquet
        if len(self._files) > max(2, self.settings.cache_row_groups):
            self._files.popitem(last=False)
        return parquet

    def _check_schema(self, index: int, schema) -> None:
        url, settings = self.urls[index], self.settings
        names = schema.names
        if settings.column not in names:
            raise ValueError(f"text file {url}: no column {settings.column!r} (text.column); columns: {', '.join(names)}")
        kind = str(schema.field(settings.column).type)
        if kind not in TEXT_TYPES:
            raise ValueError(f"text file {url}: column {settings.column!r} is {kind}, expected a string column")
        if settings.id_column and settings.id_column not in names:
            raise ValueError(f"text file {url}: no column {settings.id_column!r} (text.id_column)")
        if settings.quality_column and settings.quality_column not in names:
            raise ValueError(f"text file {url}: no column {settings.quality_column!r} (text.quality.column)")

    def rows(self, index: int) -> int:
        """Row count of file ``index`` (from its footer; the schema is checked too)."""
        return self._file(index).metadata.num_rows

    def row(self, index: int, row: int) -> tuple[Optional[bytes], Optional[str], Optional[dict]]:
        """``(text bytes, id, scores)`` of one row."""
        parquet = self._file(index)
        if index not in self._row_starts:
            sizes = [parquet.metadata.row_group(g).num_rows for g in range(parquet.num_row_groups)]
            self._row_starts[index] = np.cumsum([0] + sizes)
        starts = self._row_starts[index]
        group = int(np.searchsorted(starts, row, side="right")) - 1
        key = (index, group)
        if key in self._groups:
            self._groups.move_to_end(key)
        else:
            self._groups[key] = self._read_group(parquet, group)
            if len(self._groups) > self.settings.cache_row_groups:
                self._groups.popitem(last=False)
        texts, ids, scores = self._groups[key]
        offset = row - int(starts[group])
        return texts[offset], ids[offset] if ids else None, scores[offset] if scores else None

    def _read_group(self, parquet, group: int):
        import pyarrow as pa

        settings = self.settings
        columns = [c for c in (settings.column, settings.id_column, settings.quality_column) if c]
        table = parquet.read_row_group(group, columns=list(dict.fromkeys(columns)))
        text = table.column(settings.column)
        binary = pa.large_binary() if "large" in str(text.type) else pa.binary()
        texts = text.cast(binary).to_pylist()  # bytes: UTF-8 is checked per document
        ids = [None if v is None else str(v) for v in table.column(settings.id_column).to_pylist()] if settings.id_column else None
        scores = table.column(settings.quality_column).to_pylist() if settings.quality_column else None
        return texts, ids, scores


# ------------------------------------------------------------------------------------- stream
EMPTY_FILE_ROW = -1  # the address of a file without rows (one skipped "document": counted once)


def document_addresses(documents: ParquetDocuments, seed: int, shuffle_files: bool, buffer: int,
                       epochs: Optional[int], rank: int, world_size: int,
                       origin: StreamOrigin = StreamOrigin()) -> Iterator[tuple[int, int, int, int]]:
    """``(epoch, file, row, number)`` addresses of this rank, per epoch shuffled from ``(seed, epoch)``;
    ``number`` counts the addresses of every epoch (the item number of :class:`StreamOrigin`).

    A file without rows gives one address with row :data:`EMPTY_FILE_ROW`, so it is reported in
    stream order like a skipped document.
    """
    files = len(documents.urls)
    mine = origin.dealer(rank, world_size)
    numbers = count()
    for epoch in count() if epochs is None else range(epochs):
        rng = np.random.default_rng([seed, epoch, 0x7E47])
        order = [int(i) for i in rng.permutation(files)] if shuffle_files else list(range(files))

        def addresses():
            for index in order:
                rows = documents.rows(index)
                yield from ((index, row) for row in range(rows)) if rows else [(index, EMPTY_FILE_ROW)]

        emitted, first = 0, None
        for index, row in buffer_shuffle(addresses(), buffer, rng):
            number = next(numbers)
            first = number if first is None else first
            if mine(number):
                emitted += row != EMPTY_FILE_ROW
                yield epoch, index, row, number
        if emitted == 0 and first >= origin.next:  # an epoch the origin did not cut short
            raise RuntimeError(f"no document in {files} text file(s) for rank {rank} (epoch {epoch})")


class TextStream(IterableDataset):
    """Items ``{"tokens": int64 [length], "position": [docs, offset], "events": [...]}`` in a fixed order.

    ``train=True``: endless, shuffled, training documents only, starting at ``position`` (of this
    rank's documents after ``origin``). ``train=False``: one ordered pass over the held-out
    documents (evaluation); the last partial sequence is padded with -1. ``s3``: Beam's S3 options.
    """

    def __init__(self, urls: list[str], config: Mapping[str, Any], length: int, train: bool = True,
                 position: tuple[int, int] = (0, 0), rank: int = 0, world_size: int = 1,
                 origin: StreamOrigin = StreamOrigin(), s3: Optional[Mapping[str, Any]] = None):
        self.urls = list(urls)
        self.settings = TextSettings.from_config(config["text"])
        self.tokenizer_path = str(config["text"]["tokenizer"])
        self.vocab = int(config["model"]["text_vocab_size"])
        self.seed = int(config["seed"])
        self.length = length
        self.train = train
        self.position = (int(position[0]), int(position[1])) if train else (0, 0)
        self.rank, self.world_size = (rank, world_size) if train else (0, 1)
        self.origin = origin if train else StreamOrigin()
        self.s3 = dict(s3 or {})

    def __iter__(self) -> Iterator[dict[str, Any]]:
        import sentencepiece

        settings = self.settings
        tokenizer = sentencepiece.SentencePieceProcessor(model_file=self.tokenizer_path)
        documents = ParquetDocuments(self.urls, settings, self.s3)
        events: list[dict[str, Any]] = []
        addresses = document_addresses(
            documents, self.seed, settings.shuffle_files and self.train, settings.shuffle_buffer if self.train else 0,
            None if self.train else 1, self.rank, self.world_size, self.origin,
        )
        used_before = dict(self.origin.partial)  # documents a checkpoint cut: tokens already used
        number, drop = self.position  # documents already used, tokens of the next one already used
        for _ in range(number):  # resume: replay the addresses (footers only, no row is read)
            next(addresses)
        pending: list[int] = []
        for epoch, index, row, address in addresses:
            base, drop = drop or used_before.get(address, 0), 0
            # a document already partly used before a resume was counted then: its event is not repeated
            tokens = self._document_tokens(documents, tokenizer, epoch, index, row, address, [] if base else events)
            tokens = tokens[base:]
            start = 0
            while len(pending) + len(tokens) - start >= self.length:
                take = self.length - len(pending)
                sequence, pending = pending + tokens[start : start + take], []
                start += take
                position = [number + 1, 0] if start == len(tokens) else [number, base + start]
                yield {"tokens": np.asarray(sequence, dtype=np.int64), "position": position, "events": events}
                events = []
            pending += tokens[start:]
            number += 1
        if pending or events:  # evaluation only (training is endless): the padded last sequence
            sequence = pending + [-1] * (self.length - len(pending))
            yield {"tokens": np.asarray(sequence, dtype=np.int64), "position": [number, 0], "events": events}

    def _document_tokens(self, documents: ParquetDocuments, tokenizer, epoch: int, index: int, row: int,
                         address: int, events: list[dict[str, Any]]) -> list[int]:
        """Token ids of one document followed by EOS, or ``[]`` (with an event) when it is skipped.

        Bad input (empty file or text, invalid UTF-8) is reported in the first epoch only.
        """
        settings, url = self.settings, documents.urls[index]
        if row == EMPTY_FILE_ROW:
            if epoch == 0:
                events.append({"reason": "empty_file", "url": url})
            return []
        raw, doc_id, scores = documents.row(index, row)
        if raw is None or not raw.strip():
            if epoch == 0:
                events.append({"reason": "empty_text", "url": url, "row": row})
            return []
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as error:
            if epoch == 0:
                events.append({"reason": "invalid_utf8", "url": url, "row": row, "detail": str(error)})
            return []
        held_out = settings.eval_fraction > 0 and unit_hash("eval", doc_id or text) < settings.eval_fraction
        if held_out == self.train:
            if self.train:
                events.append({"reason": "held_out"})
            return []
        if settings.quality_column:
            keep = keep_probability(scores, settings.quality_weights, settings.quality_floor)
            if unit_hash("quality", self.seed, epoch, url, row) >= keep:
                events.append({"reason": "sampled_out"})
                return []
        tokens = tokenizer.encode(text) + [settings.eos_id]
        if max(tokens) >= self.vocab:
            raise ValueError(f"text tokenizer {self.tokenizer_path}: id {max(tokens)} >= model.text_vocab_size {self.vocab}")
        events.append({"reason": "used", "address": address})
        return tokens


class TextBatches(LoaderBatches):
    """Pulls :class:`TextStream` items into ``[B, length]`` batches; ``position`` = the last one consumed.

    ``on_event(event)`` is called for each skipped document or empty file, in stream order.
    """

    def __init__(self, dataset: TextStream, batch_size: int, num_workers: int, prefetch_factor: int,
                 on_event: Callable[[dict], None], drop_last: bool = True):
        if num_workers not in (0, 1):
            raise ValueError(f"text.num_workers must be 0 or 1 (one reader keeps the order), got {num_workers}")
        self.position = list(dataset.position)
        self.batch_size = batch_size
        self.on_event = on_event
        self.drop_last = drop_last
        self.documents = 0
        loader = DataLoader(dataset, batch_size=None, num_workers=num_workers,
                            prefetch_factor=prefetch_factor if num_workers else None)
        self._items = iter(loader)

    def __next__(self) -> torch.Tensor:
        rows = []
        while len(rows) < self.batch_size:
            item = next(self._items, None)
            if item is None:
                if rows and not self.drop_last:
                    break
                raise StopIteration
            for event in item["events"]:
                self.on_event(event)
            self.position = [int(v) for v in item["position"]]
            rows.append(torch.as_tensor(item["tokens"]))
        return torch.stack(rows)
