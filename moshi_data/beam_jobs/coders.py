"""Coders of the text job's PCollections of Python objects: a pickle, with a cheap size estimate.

The runner estimates the size of the elements passed between fused steps, for its metrics, by
default by encoding them (``Coder.estimate_size``): a whole chunk of documents pickled for a number.
These coders answer from what the object already knows instead. The estimate is an approximation
(characters of text, plus array bytes where there are arrays), not the encoded bytes: counting UTF-8
bytes would encode every line. Importing this module registers them for their types; the steps that
output them declare ``with_output_types``. Chunks that go through a join are packed explicitly
(``minhash.packed_by_id``), not by a coder.
"""
from __future__ import annotations

import pickle
from typing import Any

import apache_beam as beam

from moshi_data.pipeline.text.chunk import DocChunk
from moshi_data.pipeline.text.line_dedup import LineSamples


class SizedPickleCoder(beam.coders.Coder):
    """A pickle of ``VALUE_TYPE`` whose ``estimate_size`` (set by each subclass) does not encode it."""

    VALUE_TYPE: type

    def encode(self, value: Any) -> bytes:
        return pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)

    def decode(self, data: bytes) -> Any:
        return pickle.loads(data)

    def estimate_size(self, value: Any) -> int:
        raise NotImplementedError

    def is_deterministic(self) -> bool:
        return False

    def to_type_hint(self):
        return self.VALUE_TYPE


class DocChunkCoder(SizedPickleCoder):
    """PCollections of ``DocChunk`` (after the dedup join, between the stages and MinHash)."""

    VALUE_TYPE = DocChunk

    def estimate_size(self, chunk: DocChunk) -> int:
        return sum(doc.chars for doc in chunk.docs)  # characters of the documents' text


class LineSamplesCoder(SizedPickleCoder):
    """The per-chunk line samples on their way to the sample combiner."""

    VALUE_TYPE = LineSamples

    def estimate_size(self, samples: LineSamples) -> int:
        return samples.hashes.nbytes + samples.counts.nbytes + samples.duplicate.nbytes + sum(map(len, samples.texts))


for _coder in (DocChunkCoder, LineSamplesCoder):
    beam.coders.registry.register_coder(_coder.VALUE_TYPE, _coder)
