"""The coders of the job's PCollections of objects (beam_jobs/coders.py): registered, lossless, and
their size estimate does not encode the value."""
from __future__ import annotations

import apache_beam as beam
import numpy as np

from moshi_data.beam_jobs.coders import DocChunkCoder, LineSamplesCoder
from moshi_data.pipeline.text.chunk import DocChunk
from moshi_data.pipeline.text.document import Document
from moshi_data.pipeline.text.line_dedup import LineSamples


def test_coders_are_registered_lossless_and_estimate_from_the_object(monkeypatch):
    docs = [Document(f"0:{key}", key, "http://x/", "", "", "", "s", 0, "", lines)
            for key, lines in enumerate([["Héllo", "world"], [], ["½ line"]])]
    chunk = DocChunk(0, 0, "g", "s", docs)
    samples = LineSamples(np.array([3, 1], np.uint64), ["a line", "b"], np.array([2, 1], np.uint32), np.array([True, False]))
    assert isinstance(beam.coders.registry.get_coder(DocChunk), DocChunkCoder)
    assert isinstance(beam.coders.registry.get_coder(LineSamples), LineSamplesCoder)
    decoded = DocChunkCoder().decode(DocChunkCoder().encode(chunk))
    assert [(d.doc_key, d.lines) for d in decoded.docs] == [(d.doc_key, d.lines) for d in docs]
    again = LineSamplesCoder().decode(LineSamplesCoder().encode(samples))
    assert again.texts == samples.texts and again.hashes.tolist() == [3, 1]

    monkeypatch.setattr(DocChunkCoder, "encode", lambda *_: (_ for _ in ()).throw(AssertionError("encoded")))
    monkeypatch.setattr(LineSamplesCoder, "encode", lambda *_: (_ for _ in ()).throw(AssertionError("encoded")))
    assert DocChunkCoder().estimate_size(chunk) == sum(len(doc.text) for doc in docs)  # characters, not bytes
    assert LineSamplesCoder().estimate_size(samples) == 16 + 8 + 2 + len("a line") + len("b")
