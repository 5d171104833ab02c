"""Exact line dedup: hash-array counting, the Beam combiner, removal rules, accounting."""
from __future__ import annotations

import apache_beam as beam
import numpy as np
import pytest
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from moshi_data.beam_jobs import text_corpus
from moshi_data.beam_jobs.text_corpus import MergeLineCounts, ReadInputChunks
from moshi_data.pipeline.config import load_config
from moshi_data.pipeline.text import line_dedup
from moshi_data.pipeline.text.accounting import AccountingError, check_invariant, to_stats
from moshi_data.pipeline.text.chunk import ChunkProcessor, DocChunk, chunk_line_counts, hash_documents
from moshi_data.pipeline.text.document import Document
from text_helpers import IN_PROCESS, warcinfo, wet_record, write_wet


def doc(key: int, lines: list[str]) -> Document:
    return Document(f"0:{key}", key, f"http://x/{key}", "", "", "", "s", 0, "", list(lines))


def counts_of(pairs):
    hashes = np.array([h for h, _ in pairs], np.uint64)
    keys = np.array([k for _, k in pairs], np.uint64)
    return line_dedup.count_lines(hashes, keys)


def test_count_and_merge_are_order_independent():
    rng = np.random.default_rng(0)
    pairs = [(int(h), int(k)) for h, k in zip(rng.integers(0, 50, 400), rng.integers(0, 1000, 400))]
    whole = counts_of(pairs)
    parts = [counts_of(pairs[i::3]) for i in range(3)]
    for merged in (line_dedup.merge_counts(parts), line_dedup.merge_counts(parts[::-1])):
        np.testing.assert_array_equal(merged.hashes, whole.hashes)
        np.testing.assert_array_equal(merged.counts, whole.counts)
        np.testing.assert_array_equal(merged.first, whole.first)
    assert int(whole.counts.sum()) == 400
    for h in (3, 17):
        keys = [k for hh, k in pairs if hh == h]
        i = int(np.searchsorted(whole.hashes, h))
        assert whole.counts[i] == len(keys) and whole.first[i] == min(keys)
    assert whole.nbytes == len(whole) * line_dedup.BYTES_PER_UNIQUE_LINE


def test_lookup_and_removal_rules():
    table = counts_of([(5, 10), (5, 11), (5, 12), (9, 11), (9, 12), (7, 12)])
    table = line_dedup.repeated(table)  # hash 7 seen once: not in the lookup table
    counts, first = line_dedup.lookup(table, np.array([5, 9, 7, 8], np.uint64))
    assert counts.tolist() == [3, 2, 1, 1]
    dup, remove = line_dedup.duplicate_mask(counts, first, 11, threshold=2, keep_canonical=True)
    assert dup.tolist() == [True, True, False, False] and remove.tolist() == [True, False, False, False]
    _, remove_all = line_dedup.duplicate_mask(counts, first, 11, threshold=3, keep_canonical=False)
    assert remove_all.tolist() == [True, False, False, False]


def test_chunk_processor_removes_repeated_boilerplate_and_counts(tmp_path):
    config = load_config("text_corpus", ["stages=[min_length]", "min_length.min_chars=10",
                                         "line_dedup.keep_canonical=false"])
    nav = ["Home", "About us", "Contact"]
    articles = [f"Unique article about {topic} with enough words." for topic in ("cats", "dogs", "owls", "bees")]
    docs = [doc(i, nav + [article]) for i, article in enumerate(articles)]
    docs.append(doc(4, ["Home"]))
    chunk = DocChunk(0, 0, 0, "s", docs)
    chunk.tally["documents.in"] = len(docs)
    hash_documents(docs)
    table = line_dedup.repeated(line_dedup.merge_counts(list(chunk_line_counts(chunk, 4).values())))
    processor = ChunkProcessor(config)
    processor.setup()
    out, samples = processor.process(chunk, table)
    assert [d.lines for d in out.docs] == [[article] for article in articles]
    assert out.tally["lines.removed.exact_dedup"] == 13 and out.tally["documents.filtered.exact_dedup"] == 1
    assert {(text, count, dup) for _, text, count, dup in samples} >= {("Home", 5, True), ("About us", 4, True)}
    tally = dict(out.tally, **{"documents.kept": 4, "lines.kept": 4})
    check_invariant(to_stats(tally))


def test_invariant_detects_a_lost_document():
    stats = to_stats({"documents.in": 3, "documents.kept": 1, "documents.filtered.language": 1,
                      "lines.in": 2, "lines.kept": 2})
    with pytest.raises(AccountingError):
        check_invariant(stats)


def test_combiner_in_beam():
    parts = [(("g", 0), counts_of([(1, 5), (2, 5)])), (("g", 0), counts_of([(1, 3)])),
             (("g", 1), counts_of([(4, 9)]))]
    with TestPipeline(argv=IN_PROCESS) as p:
        merged = (p | beam.Create(parts) | beam.CombinePerKey(MergeLineCounts())
                  | beam.MapTuple(lambda key, c: (key, c.hashes.tolist(), c.counts.tolist(), c.first.tolist())))
        assert_that(merged, equal_to([(("g", 0), [1, 2], [2, 1], [3, 5]), (("g", 1), [4], [1], [9])]))


def test_read_transform_outputs(tmp_path):
    good = write_wet(tmp_path / "a.wet.gz", [warcinfo(), wet_record("http://a/", b"x\ny\n"),
                                             wet_record("http://b/", b"x\nz\n"), wet_record("http://c/", b"q\n")])
    config = load_config("text_corpus", ["input.docs_per_chunk=2"])
    specs = [(0, str(good), 0), (1, str(tmp_path / "missing.wet.gz"), 0)]
    with TestPipeline(argv=IN_PROCESS) as p:
        out = p | beam.Create(specs) | beam.ParDo(ReadInputChunks(config)).with_outputs(
            "rejects", "counts", "files", main="chunks")
        assert_that(out.chunks | "ChunkShape" >> beam.Map(lambda c: (c.shard_name, [d.url for d in c.docs])),
                    equal_to([("part-000000-00000.parquet", ["http://a/", "http://b/"]),
                              ("part-000000-00001.parquet", ["http://c/"])]), label="chunks")
        assert_that(out.rejects | "Reason" >> beam.Map(lambda r: (r.file_index, r.reason)),
                    equal_to([(1, "missing_file")]), label="rejects")
        assert_that(out.counts | "Lines" >> beam.Map(lambda kv: int(kv[1].counts.sum()))
                    | beam.CombineGlobally(sum), equal_to([5]), label="counts")


def test_line_sample_selection_is_exact_and_order_independent():
    rng = np.random.default_rng(1)
    samples = [(int(h), f"line {h} v{v}", int(c), bool(c >= 2))
               for h, v, c in zip(rng.integers(0, 300, 1000), rng.integers(0, 3, 1000), rng.integers(1, 4, 1000))]
    whole = line_dedup.smallest_samples(line_dedup.add_samples({}, samples), 20)
    fn = text_corpus.SampleLines(20)
    parts = [fn.add_input(fn.create_accumulator(), samples[i::4]) for i in range(4)]
    for order in (parts, parts[::-1]):
        assert fn.extract_output(fn.merge_accumulators(order)) == fn.extract_output(whole)
    assert all(len(rows) == 20 for _, rows in fn.extract_output(whole))
