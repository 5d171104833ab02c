"""Training data: audio WebDataset shards -> ``[17, frames]`` token windows (``[9, frames]`` with
``model.streams=single``), deterministic and resumable. Text-only batches: trainer/text_data.py.

Order of work (each step seeded, none depends on the worker count):

1. shard list (a local folder/glob, or ``s3://bucket/prefix``), shuffled per epoch from ``(seed, epoch)``;
2. raw records read with webdataset's tar iterators; a shard that cannot be read (truncated tar,
   missing object) becomes one *error item* in the stream, so nothing is silently lost;
3. a seeded shuffle buffer over raw (undecoded) records; every item gets a global index ``i``;
4. item ``i`` is decoded by DataLoader worker ``(i - start) % num_workers`` only: it is parsed and
   validated with :func:`pipeline.audio.shards.decode_sample`, given Mimi codes (``codes.npy`` or
   :func:`pipeline.audio.codec.encode_audio` on the fly; single-stream: the mixed-down audio, always
   on the fly, with ``text_all.npy``), and cut to a random window drawn from ``(seed, i)``. Bad items come out as *rejected* items carrying their reason.

The DataLoader returns workers' items round-robin, so the item sequence is the same for any worker
count; the trainer counts the items it consumed, which is the data position saved in checkpoints.
Resuming skips that many raw records without decoding them. With several ranks the items after a
:class:`StreamOrigin` are dealt round-robin; a resume with another rank count starts from the
origin the checkpoint's per-rank positions amount to, so no item is repeated or skipped.

s3 objects are read with one boto3 client per process (:func:`s3_client`), built from Beam's S3
options (``--s3_endpoint_url``, ``--s3_region_name``, credentials) as the Beam jobs take them.
"""
from __future__ import annotations

import fnmatch
import glob
import io
import logging
import os
from collections import OrderedDict
from dataclasses import dataclass
from itertools import count
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Optional

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from moshi_data.pipeline.audio.shards import REQUIRED_KEYS, Sample, decode_sample

LOG = logging.getLogger(__name__)


# ----------------------------------------------------------------------------------- object storage
# Beam's S3Options (apache_beam.options.pipeline_options), the flags the Beam jobs take: the trainer
# takes the same ones (tests check the names against Beam's) without importing Beam for local runs.
S3_OPTIONS = ("s3_access_key_id", "s3_secret_access_key", "s3_session_token", "s3_endpoint_url",
              "s3_region_name", "s3_api_version", "s3_verify", "s3_disable_ssl")
_S3_CLIENTS: dict = {}


def s3_client(options: Optional[Mapping[str, Any]] = None):
    """This process's boto3 s3 client for ``options`` (Beam's S3 options by name; unset ones fall
    back to boto3's environment, e.g. ``AWS_ENDPOINT_URL_S3``), built once per process (a forked
    DataLoader worker builds its own) with Beam's S3 client, as Beam's filesystem and pipeline/storage.py do."""
    options = {k: v for k, v in (options or {}).items() if v not in (None, False)}
    unknown = sorted(set(options) - set(S3_OPTIONS))
    if unknown:
        raise ValueError(f"unknown s3 option(s) {', '.join(unknown)}; known: {', '.join(S3_OPTIONS)}")
    key = (os.getpid(), tuple(sorted(options.items())))
    if key not in _S3_CLIENTS:
        from apache_beam.io.aws.clients.s3.boto3_client import Client

        _S3_CLIENTS[key] = Client(options=options).client
    return _S3_CLIENTS[key]


def split_s3_url(url: str) -> tuple[str, str]:
    """``s3://bucket/key`` -> ``(bucket, key)``."""
    bucket, _, key = url[len("s3://") :].partition("/")
    return bucket, key


# ------------------------------------------------------------------------------------------- shards
def _gopen_s3(url: str, mode: str = "rb", bufsize: int = 8192, s3: Optional[Mapping[str, Any]] = None, **kw):
    """webdataset opener for ``s3://bucket/key`` (this process's client for the ``s3`` options)."""
    if mode != "rb":
        raise ValueError(f"{url}: s3 shards are read-only here (mode {mode!r})")
    bucket, key = split_s3_url(url)
    return s3_client(s3).get_object(Bucket=bucket, Key=key)["Body"]


def _register_s3() -> None:
    from webdataset.gopen import gopen_schemes

    gopen_schemes.setdefault("s3", _gopen_s3)


def list_shards(source: str, pattern: str, s3: Optional[Mapping[str, Any]] = None) -> list[str]:
    """Sorted shard URLs under ``source``: a folder, a glob, a single file, or ``s3://bucket/prefix``."""
    if source.startswith("s3://"):
        bucket, prefix = split_s3_url(source)
        prefix = prefix.rstrip("/") + "/" if prefix and not fnmatch.fnmatch(Path(prefix).name, pattern) else prefix
        paginator = s3_client(s3).get_paginator("list_objects_v2")
        keys = [
            obj["Key"]
            for page in paginator.paginate(Bucket=bucket, Prefix=prefix)
            for obj in page.get("Contents", [])
            if fnmatch.fnmatch(obj["Key"].rsplit("/", 1)[-1], pattern)
        ]
        urls = [f"s3://{bucket}/{key}" for key in sorted(keys)]
    elif os.path.isdir(source):
        urls = sorted(glob.glob(os.path.join(source, pattern)))
    elif os.path.isfile(source):
        urls = [source]
    else:
        urls = sorted(glob.glob(source))
    if not urls:
        raise FileNotFoundError(f"no shards matching {pattern!r} under {source}")
    return urls


def split_eval(shards: list[str], eval_shards: int) -> tuple[list[str], list[str]]:
    """Hold out the last ``eval_shards`` shards for evaluation (none if that would leave no training shard)."""
    if eval_shards <= 0:
        return shards, []
    if len(shards) <= eval_shards:
        LOG.warning("only %d shard(s): no held-out eval shards (data.eval_shards=%d)", len(shards), eval_shards)
        return shards, []
    return shards[:-eval_shards], shards[-eval_shards:]


# ----------------------------------------------------------------------------------- raw records
def shard_records(url: str, s3: Optional[Mapping[str, Any]] = None) -> Iterator[tuple[str, Optional[dict], Optional[str]]]:
    """Yield ``(url, record, None)`` per raw record, then ``(url, None, error)`` if the shard was damaged."""
    from webdataset.tariterators import group_by_keys, tar_file_expander, url_opener

    _register_s3()
    errors: list[str] = []

    def keep_going(error: Exception) -> bool:
        errors.append(f"{type(error).__name__}: {error.args[0] if error.args else error}")
        return True

    # webdataset's tarfile_samples, with the s3 options handed to the opener
    streams = url_opener([{"url": url}], handler=keep_going, **({"s3": s3} if url.startswith("s3://") else {}))
    for record in group_by_keys(tar_file_expander(streams, handler=keep_going), handler=keep_going):
        yield url, record, None
    if errors:
        yield url, None, "shard read error: " + " | ".join(dict.fromkeys(errors))


def buffer_shuffle(items: Iterator[Any], size: int, rng: np.random.Generator) -> Iterator[Any]:
    """Seeded shuffle buffer: fill to ``size``, then emit a random slot and refill it."""
    if size <= 1:
        yield from items
        return
    buffer: list[Any] = []
    for item in items:
        if len(buffer) < size:
            buffer.append(item)
            continue
        slot = int(rng.integers(size))
        yield buffer[slot]
        buffer[slot] = item
    order = rng.permutation(len(buffer))
    for slot in order:
        yield buffer[slot]


def raw_items(shards: list[str], seed: int, shuffle_shards: bool, buffer_size: int, epochs: Optional[int],
              s3: Optional[Mapping[str, Any]] = None):
    """Raw record stream over ``epochs`` passes (``None`` = forever), each pass seeded by ``(seed, epoch)``."""
    for epoch in count() if epochs is None else range(epochs):
        rng = np.random.default_rng([seed, epoch])
        order = list(rng.permutation(len(shards))) if shuffle_shards else list(range(len(shards)))
        records = (item for index in order for item in shard_records(shards[index], s3))
        seen = 0
        for item in buffer_shuffle(records, buffer_size, rng):
            seen += item[1] is not None
            yield item
        if seen == 0:
            raise RuntimeError(f"no readable record in {len(shards)} shard(s) (epoch {epoch})")


# -------------------------------------------------------------------------------------- tokens
def mix_down(audio: np.ndarray) -> np.ndarray:
    """``[1, samples]``: the streams summed (main + other = the recording) and clipped to [-1, 1]."""
    return np.clip(audio.sum(axis=0, keepdims=True), -1.0, 1.0).astype(np.float32)


def sample_tokens(sample: Sample, num_codebooks: int, text_vocab: int, card: int, encode: Callable,
                  streams: str = "dual") -> np.ndarray:
    """``[1 + audio_streams * num_codebooks, frames]`` int64 tokens of one sample.

    ``streams="dual"``: main's text, main's codes, other's codes (``codes.npy`` or
    ``encode(audio [2, samples], rate)``). ``streams="single"``: every speaker's text
    (``text_all.npy``) and the codes of the mixed-down audio (``encode(audio [1, samples], rate)``).
    ``frames`` is the text stream's length; codes are cropped or padded with -1 (no token) to it.
    Out-of-range ids raise ``ValueError``.
    """
    if streams == "single":
        if sample.text_all is None:
            raise ValueError(f"sample {sample.key}: no text_all.npy (model.streams=single needs every speaker's "
                             "text: re-run the audio job with text.all_stream=true)")
        text, audio_streams = sample.text_all.astype(np.int64), 1
        if sample.audio.shape[1] == 0:
            raise ValueError(f"sample {sample.key}: model.streams=single encodes the mix: needs the audio")
        codes = encode(mix_down(sample.audio), sample.sample_rate)
    else:
        text, audio_streams = sample.text.astype(np.int64), 2
        codes = sample.codes if sample.codes is not None else encode(sample.audio, sample.sample_rate)
    if text.size == 0:
        raise ValueError(f"sample {sample.key}: empty text stream")
    if text.min() < -1 or text.max() >= text_vocab:
        raise ValueError(
            f"sample {sample.key}: text ids in [{text.min()}, {text.max()}], model.text_vocab_size={text_vocab}"
        )
    rows = audio_streams * num_codebooks
    if codes.ndim != 2 or codes.shape[0] != rows:
        raise ValueError(f"sample {sample.key}: codes shape {codes.shape}, need [{rows}, frames]")
    codes = codes.astype(np.int64)
    if codes.size and (codes.min() < -1 or codes.max() >= card):
        raise ValueError(f"sample {sample.key}: codes in [{codes.min()}, {codes.max()}], codebook size {card}")
    frames = text.shape[0]
    aligned = np.full((rows, frames), -1, dtype=np.int64)
    usable = min(frames, codes.shape[1])
    aligned[:, :usable] = codes[:, :usable]
    return np.concatenate([text[None], aligned], axis=0)


def cut_window(tokens: np.ndarray, frames: int, rng: Optional[np.random.Generator]) -> np.ndarray:
    """A ``frames``-long window (random start with ``rng``, else the start), padded with -1."""
    length = tokens.shape[1]
    start = int(rng.integers(length - frames + 1)) if rng is not None and length > frames else 0
    window = np.full((tokens.shape[0], frames), -1, dtype=np.int64)
    piece = tokens[:, start : start + frames]
    window[:, : piece.shape[1]] = piece
    return window


def encoder_for(codec_config: Mapping[str, Any]) -> Callable[[np.ndarray, int], np.ndarray]:
    """``encode(audio [streams, samples], sample_rate)`` with a Mimi loaded once per process (lazily)."""
    from moshi_data.pipeline.audio.codec import encode_audio, shared_codec

    def encode(audio: np.ndarray, sample_rate: int) -> np.ndarray:
        return encode_audio(shared_codec(codec_config), audio, sample_rate)

    return encode


def decode_without_audio(record: dict[str, Any]) -> Sample:
    """Parse a record that has ``codes.npy`` without decoding its FLAC (``data.decode_audio: false``).

    Same key and shape checks as :func:`pipeline.audio.shards.decode_sample` for what the trainer
    reads; the audio is only checked for presence (``Sample.audio`` is empty).
    """
    key = record.get("__key__", "<no key>")
    missing = [name for name in (*REQUIRED_KEYS, "codes.npy") if name not in record]
    if missing:
        raise ValueError(f"sample {key}: missing {', '.join(missing)}")
    try:
        text = np.load(io.BytesIO(record["text.npy"]), allow_pickle=False)
        codes = np.load(io.BytesIO(record["codes.npy"]), allow_pickle=False)
    except Exception as error:
        raise ValueError(f"sample {key}: cannot decode ({error})") from error
    if text.ndim != 1:
        raise ValueError(f"sample {key}: text.npy must be 1-D, got shape {text.shape}")
    if codes.ndim != 2 or codes.shape[0] != 16:
        raise ValueError(f"sample {key}: codes.npy must be [16, frames], got {codes.shape}")
    return Sample(key=key, audio=np.zeros((2, 0), np.float32), words=[], text=text, meta={}, codes=codes)


# ------------------------------------------------------------------------------ rank positions
@dataclass(frozen=True)
class StreamOrigin:
    """Where a run's item stream starts, whatever the number of ranks that consumed it before.

    Items are numbered over the whole stream, epoch after epoch. Every item before ``next`` and
    every item in ``done`` was consumed; ``partial`` holds ``(item, tokens already used)`` for text
    documents a checkpoint cut. The other items, in order, are dealt round-robin: the ``j``-th
    remaining one goes to rank ``j % world_size``, and a rank's position is how many of its items
    it consumed (plus, for text, the tokens used of the next one). ``done`` and ``partial`` hold
    only the items between the slowest and the fastest rank, so the origin does not grow with the
    amount of data consumed.
    """

    next: int = 0
    done: tuple[int, ...] = ()
    partial: tuple[tuple[int, int], ...] = ()

    def to_state(self) -> dict[str, Any]:
        return {"next": self.next, "done": list(self.done), "partial": [list(p) for p in self.partial]}

    @classmethod
    def from_state(cls, state: Optional[Mapping[str, Any]]) -> "StreamOrigin":
        if not state:
            return cls()
        return cls(int(state["next"]), tuple(int(i) for i in state["done"]),
                   tuple((int(i), int(o)) for i, o in state["partial"]))

    def dealer(self, rank: int, world_size: int) -> Callable[[int], bool]:
        """``mine(item)``, to be called with item numbers 0, 1, 2, ... in order: whether this rank takes it."""
        done, dealt = set(self.done), count()

        def mine(item: int) -> bool:
            if item < self.next or item in done:
                return False
            return next(dealt) % world_size == rank

        return mine

    def _remaining(self, j: int) -> Iterator[int]:
        """Item numbers of the remaining items ``j``, ``j + 1``, ... (after the origin, not done)."""
        item = self.next + j
        for done in self.done:  # sorted: item = the j-th number >= next that is not done
            if done > item:
                break
            item += 1
        done = set(self.done)
        while True:
            if item not in done:
                yield item
            item += 1

    def after(self, positions: list[tuple[int, int]]) -> "StreamOrigin":
        """The origin of a run that follows one started here whose ranks ended at ``positions``
        (``[(items consumed, tokens used of the next one)]``, one per rank: the world size)."""
        world_size = len(positions)
        current = [rank + consumed * world_size for rank, (consumed, _) in enumerate(positions)]
        low, high = min(current), max(current)
        items = dict(zip(range(low, high + 1), self._remaining(low)))
        start = items[low]
        done = {item for item in self.done if item >= start}
        partial = {item: used for item, used in self.partial if item >= start}
        for j in range(low, high):
            if j < current[j % world_size]:  # dealt to a rank that is past it
                done.add(items[j])
                partial.pop(items[j], None)
        for j, (_, used) in zip(current, positions):
            if used:
                partial[items[j]] = used
        return StreamOrigin(start, tuple(sorted(done)), tuple(sorted(partial.items())))


# ------------------------------------------------------------------------------------- dataset
class ShardStream(IterableDataset):
    """Items ``{"index", "tokens" | None, "key", "url", "reason" | None}`` in a worker-independent order.

    ``train=True``: endless, shuffled, random windows, starting after ``start`` items of this rank
    (of the items after ``origin``). ``train=False``: one ordered pass, windows from the start of
    each sample (evaluation). ``s3``: Beam's S3 options (see :func:`s3_client`).
    """

    def __init__(
        self,
        shards: list[str],
        config: Mapping[str, Any],
        train: bool = True,
        start: int = 0,
        rank: int = 0,
        world_size: int = 1,
        origin: StreamOrigin = StreamOrigin(),
        s3: Optional[Mapping[str, Any]] = None,
    ):
        self.shards = list(shards)
        self.data = config["data"]
        self.model = config["model"]
        self.codec = config["codec"]
        self.seed = int(config["seed"])
        self.train = train
        self.start = start
        self.rank = rank
        self.world_size = world_size
        self.origin = origin
        self.s3 = dict(s3 or {})
        self.frames = int(round(float(self.data["window_seconds"]) * float(self.data["frame_rate"])))
        self.streams = str(self.model["streams"])
        if self.streams == "single" and not self.data["decode_audio"]:
            raise ValueError("model.streams=single encodes the mixed-down audio with Mimi: set data.decode_audio=true")

    def _rank_items(self):
        items = raw_items(
            self.shards,
            self.seed,
            bool(self.data["shuffle_shards"]) and self.train,
            int(self.data["shuffle_buffer"]) if self.train else 0,
            None if self.train else 1,
            self.s3,
        )
        mine = self.origin.dealer(self.rank, self.world_size)
        for global_index, item in enumerate(items):
            if mine(global_index):
                yield global_index, item

    def __iter__(self):
        worker = get_worker_info()
        workers, worker_id = (worker.num_workers, worker.id) if worker else (1, 0)
        encode = encoder_for(self.codec)
        cache: OrderedDict = OrderedDict()  # on-the-fly codes of recent samples (later epochs reuse them)

        def codes_of(url: str, key: str, audio: np.ndarray, rate: int) -> np.ndarray:
            key = (url, key, audio.shape[0])
            if key in cache:
                cache.move_to_end(key)
                return cache[key]
            codes = encode(audio, rate)
            cache[key] = codes
            if len(cache) > int(self.data["codes_cache_items"]):
                cache.popitem(last=False)
            return codes

        for position, (global_index, (url, record, error)) in enumerate(self._rank_items()):
            if position < self.start or (position - self.start) % workers != worker_id:
                continue
            yield self._item(position, global_index, url, record, error, codes_of)

    def _item(self, position, global_index, url, record, error, codes_of) -> dict[str, Any]:
        key = record.get("__key__", "<no key>") if record is not None else None
        if error is not None:
            return {"index": position, "tokens": None, "key": key, "url": url, "reason": error}
        try:
            if not self.data["decode_audio"] and "codes.npy" in record:
                sample = decode_without_audio(record)
            else:
                sample = decode_sample(record)
            tokens = sample_tokens(
                sample,
                int(self.model["num_codebooks"]),
                int(self.model["text_vocab_size"]),
                int(self.model["audio_codebook_size"]),
                lambda audio, rate: codes_of(url, sample.key, audio, rate),
                self.streams,
            )
        except Exception as failure:  # named, counted and skipped by the trainer
            reason = str(failure) if isinstance(failure, ValueError) else f"{type(failure).__name__}: {failure}"
            return {"index": position, "tokens": None, "key": key, "url": url, "reason": reason}
        rng = np.random.default_rng([self.seed, global_index]) if self.train else None
        return {"index": position, "tokens": cut_window(tokens, self.frames, rng), "key": key, "url": url, "reason": None}


class LoaderBatches:
    """Base of the batch iterators: owns a DataLoader's iterator and stops its workers on ``close``."""

    _items: Iterator

    def __iter__(self):
        return self

    def close(self) -> None:
        """Stop the DataLoader workers now (rather than when garbage-collected)."""
        shutdown = getattr(self._items, "_shutdown_workers", None)
        if shutdown is not None:
            shutdown()


class Batches(LoaderBatches):
    """Pulls items from a :class:`ShardStream` DataLoader into ``[B, 17, T]`` batches.

    ``position`` counts the items consumed (kept and rejected); ``on_reject(item)`` is called for
    each rejected item. A finite stream's last partial batch is kept unless ``drop_last``. Raises ``RuntimeError`` after ``max_consecutive_rejects`` bad items in a row.
    """

    def __init__(self, dataset: ShardStream, batch_size: int, num_workers: int, prefetch_factor: int,
                 max_consecutive_rejects: int, on_reject: Callable[[dict], None], drop_last: bool = True):
        self.position = dataset.start
        self.drop_last = drop_last
        self.batch_size = batch_size
        self.max_consecutive_rejects = max_consecutive_rejects
        self.on_reject = on_reject
        self.rejected = 0
        self.kept = 0
        loader = DataLoader(
            dataset,
            batch_size=None,
            num_workers=num_workers,
            prefetch_factor=prefetch_factor if num_workers > 0 else None,
            persistent_workers=False,
        )
        self._items = iter(loader)

    def __next__(self) -> torch.Tensor:
        windows = []
        in_a_row = 0
        while len(windows) < self.batch_size:
            item = next(self._items, None)
            if item is None:  # end of a finite (eval) stream
                if windows and not self.drop_last:
                    break
                raise StopIteration
            if item["index"] != self.position:
                raise RuntimeError(f"data order broken: got item {item['index']}, expected {self.position}")
            self.position += 1
            if item["tokens"] is None:
                self.rejected += 1
                in_a_row += 1
                self.on_reject(item)
                if in_a_row >= self.max_consecutive_rejects:
                    raise RuntimeError(f"{in_a_row} bad records in a row; last: {item['reason']}")
                continue
            in_a_row = 0
            self.kept += 1
            windows.append(torch.as_tensor(item["tokens"]))
        return torch.stack(windows)
