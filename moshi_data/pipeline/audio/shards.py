"""WebDataset shard layout shared by the audio job (writer) and the trainer (reader).

One sample = one training segment of at most N seconds:

- ``__key__``: ``<recording-id>_<segment-index:05d>``, no dots (WebDataset splits on them); an id with
  characters other than ``[A-Za-z0-9_-]`` has them replaced by ``-`` and gets ``-<8 hex of sha1(id)>``
- ``audio.flac``: 2 channels (0 = main speaker, 1 = other), 24 kHz, 16-bit FLAC
- ``words.json``: ``[{"word", "start", "end", "speaker", "score"}]`` (seconds from segment start)
- ``text.npy``: int32 ``[frames]`` main-speaker text stream on 12.5 Hz frames (PAD/EPAD placed)
- ``other_text.npy`` (optional): the other stream's text tokens, same layout
- ``text_all.npy`` (optional): every speaker's words on one text stream, same layout (the text of
  Moshi's single-stream pre-training)
- ``codes.npy`` (optional): int16 ``[16, frames]`` Mimi codes, main stream's 8 codebooks first
- ``meta.json``: source, offsets, main speaker, speakers, durations, model versions

Shards are named ``shard-%06d.tar``, bounded in size, written with a fixed tar mtime and in a
deterministic sample order, so the same input gives byte-identical shards.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import re
import tarfile
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Iterable, Iterator, Optional

import numpy as np

from moshi_data.pipeline.storage import TMP_PREFIX

FIXED_TAR_MTIME = 0.0
SHARD_PATTERN = "shard-%06d.tar"
REQUIRED_KEYS = ("audio.flac", "words.json", "text.npy", "meta.json")
_KEY_OK = re.compile(r"^[A-Za-z0-9_\-]+$")


def sample_key(recording_id: str, segment_index: int) -> str:
    """Build a WebDataset key without dots or path separators.

    Ids with other characters are made safe and suffixed with a short hash of the original id, so
    two ids that differ only in replaced characters (``a.b`` and ``a-b``) still get distinct keys.
    """
    safe = re.sub(r"[^A-Za-z0-9_\-]", "-", recording_id)
    if safe != recording_id:
        safe += "-" + hashlib.sha1(recording_id.encode("utf-8")).hexdigest()[:8]
    return f"{safe}_{segment_index:05d}"


@dataclass
class Sample:
    """One training segment, in memory."""

    key: str
    audio: np.ndarray  # float32 [2, samples] at 24 kHz
    words: list[dict[str, Any]]
    text: np.ndarray  # int32 [frames]
    meta: dict[str, Any]
    other_text: Optional[np.ndarray] = None
    codes: Optional[np.ndarray] = None
    text_all: Optional[np.ndarray] = None
    sample_rate: int = 24_000
    extras: dict[str, bytes] = field(default_factory=dict)


def _npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def _flac_bytes(audio: np.ndarray, sample_rate: int) -> bytes:
    import soundfile as sf

    buffer = io.BytesIO()
    sf.write(buffer, np.ascontiguousarray(audio.T), sample_rate, format="FLAC", subtype="PCM_16")
    return buffer.getvalue()


def encode_sample(sample: Sample) -> dict[str, Any]:
    """Serialize a Sample to the WebDataset dict written in a tar."""
    if not _KEY_OK.match(sample.key):
        raise ValueError(f"sample key {sample.key!r} must match {_KEY_OK.pattern}")
    if sample.audio.ndim != 2 or sample.audio.shape[0] != 2:
        raise ValueError(f"audio must be [2, samples], got {sample.audio.shape}")
    record: dict[str, Any] = {
        "__key__": sample.key,
        "audio.flac": _flac_bytes(sample.audio, sample.sample_rate),
        "words.json": json.dumps(sample.words, ensure_ascii=False, sort_keys=True).encode(),
        "text.npy": _npy_bytes(np.asarray(sample.text, dtype=np.int32)),
        "meta.json": json.dumps(sample.meta, ensure_ascii=False, sort_keys=True).encode(),
    }
    if sample.other_text is not None:
        record["other_text.npy"] = _npy_bytes(np.asarray(sample.other_text, dtype=np.int32))
    if sample.codes is not None:
        record["codes.npy"] = _npy_bytes(np.asarray(sample.codes, dtype=np.int16))
    if sample.text_all is not None:
        record["text_all.npy"] = _npy_bytes(np.asarray(sample.text_all, dtype=np.int32))
    record.update(sample.extras)
    return record


def decode_sample(record: dict[str, Any]) -> Sample:
    """Inverse of :func:`encode_sample` for a raw (undecoded) WebDataset record.

    Raises ``ValueError`` naming the key when the record is incomplete or malformed.
    """
    import soundfile as sf

    key = record.get("__key__", "<no key>")
    missing = [name for name in REQUIRED_KEYS if name not in record]
    if missing:
        raise ValueError(f"sample {key}: missing {', '.join(missing)}")
    try:
        audio, rate = sf.read(io.BytesIO(record["audio.flac"]), dtype="float32", always_2d=True)
        text = np.load(io.BytesIO(record["text.npy"]), allow_pickle=False)
        other = record.get("other_text.npy")
        codes = record.get("codes.npy")
        text_all = record.get("text_all.npy")
        sample = Sample(
            key=key,
            audio=audio.T.copy(),
            words=json.loads(record["words.json"]),
            text=text,
            meta=json.loads(record["meta.json"]),
            other_text=np.load(io.BytesIO(other), allow_pickle=False) if other is not None else None,
            codes=np.load(io.BytesIO(codes), allow_pickle=False) if codes is not None else None,
            text_all=np.load(io.BytesIO(text_all), allow_pickle=False) if text_all is not None else None,
            sample_rate=rate,
        )
    except Exception as error:  # malformed payloads: name the sample and the cause
        raise ValueError(f"sample {key}: cannot decode ({error})") from error
    if sample.audio.shape[0] != 2:
        raise ValueError(f"sample {key}: audio has {sample.audio.shape[0]} channels, expected 2")
    if sample.text.ndim != 1:
        raise ValueError(f"sample {key}: text.npy must be 1-D, got shape {sample.text.shape}")
    if sample.text_all is not None and sample.text_all.shape != sample.text.shape:
        raise ValueError(f"sample {key}: text_all.npy shape {sample.text_all.shape} != text.npy {sample.text.shape}")
    if sample.codes is not None and (sample.codes.ndim != 2 or sample.codes.shape[0] != 16):
        raise ValueError(f"sample {key}: codes.npy must be [16, frames], got {sample.codes.shape}")
    return sample


def write_shards(samples: Iterable[Sample], directory: str | Path, max_bytes: int, start_index: int = 0) -> list[Path]:
    """Write samples in order into size-bounded ``shard-%06d.tar`` files, atomically (see :func:`write_records`)."""
    return write_records((encode_sample(sample) for sample in samples), directory, max_bytes, start_index)


def write_records(records: Iterable[dict[str, Any]], directory: str | Path, max_bytes: int, start_index: int = 0) -> list[Path]:
    """Write encoded records in order into size-bounded ``shard-%06d.tar`` files.

    Each shard is written to a temporary name of its own (``.tmp-<name>-<uuid>``, fsync'ed) and
    renamed when closed, so a killed run never leaves a partial shard under its final name. A shard holds at least one record. Returns the
    shard paths written.
    """
    import webdataset as wds

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    index = start_index
    writer = None
    handle = None
    size = 0

    def close() -> None:
        nonlocal writer, handle
        if writer is None:
            return
        writer.close()  # TarWriter does not close a file object it was given
        handle.flush()
        os.fsync(handle.fileno())
        handle.close()
        final = directory / (SHARD_PATTERN % index)
        os.replace(handle.name, final)
        written.append(final)
        writer = handle = None

    for record in records:
        record_bytes = sum(len(v) for k, v in record.items() if k != "__key__")
        if writer is not None and size + record_bytes > max_bytes:
            close()
            index += 1
        if writer is None:
            handle = open(directory / f"{TMP_PREFIX}{SHARD_PATTERN % index}-{uuid.uuid4().hex}", "wb")
            writer = wds.TarWriter(handle, mtime=FIXED_TAR_MTIME)
            size = 0
        writer.write(record)
        size += record_bytes
    close()
    return written


def stream_records(stream: BinaryIO) -> Iterator[dict[str, bytes]]:
    """The raw records of a shard read as a stream (no seeking; one record in memory at a time), so a
    shard in object storage is read straight from its download stream."""
    current: dict[str, Any] = {}
    with tarfile.open(fileobj=stream, mode="r|") as archive:
        for member in archive:
            if not member.isfile():
                continue
            key, _, extension = member.name.rsplit("/", 1)[-1].partition(".")
            if current and current["__key__"] != key:
                yield current
                current = {}
            current["__key__"] = key
            current[extension] = archive.extractfile(member).read()
    if current:
        yield current
