"""Exact line dedup: hash-array counting, the Beam combiner, removal rules, accounting."""
from __future__ import annotations

import pickle
from dataclasses import InitVar, dataclass, field

import apache_beam as beam
import numpy as np
import pytest
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from moshi_data.beam_jobs import text_corpus
from moshi_data.beam_jobs.minhash import packed_by_id
from moshi_data.pipeline import storage
from moshi_data.beam_jobs.text_corpus import JoinRepeatedLines, ReadInputChunks, chunk_and_table
from moshi_data.pipeline.config import ConfigError, load_config
from moshi_data.pipeline.text import line_dedup
from moshi_data.pipeline.text.accounting import AccountingError, check_invariant, to_stats
from moshi_data.pipeline.text.chunk import (ChunkProcessor, DocChunk, chunk_line_counts, hash_documents, pack_chunk,
                                            unpack_chunk)
from moshi_data.pipeline.text.document import Document, init_field_getter, split_paragraphs
from moshi_data.pipeline.text.normalize import line_hashes
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


def test_incremental_merge_equals_one_merge_whatever_the_batch():
    rng = np.random.default_rng(0)
    parts = [counts_of(list(zip(rng.integers(0, 60, 25).tolist(), rng.integers(0, 9, 25).tolist()))) for _ in range(70)]
    whole = line_dedup.merge_counts(parts)
    for every in (1, 3, 32, 100):
        merged = line_dedup.merge_incrementally(iter(parts), every)
        for column in ("hashes", "counts", "first"):
            assert getattr(merged, column).tolist() == getattr(whole, column).tolist()
    assert len(line_dedup.merge_incrementally(iter([]))) == 0


def test_packed_chunk_round_trips_and_is_smaller():
    docs = [doc(k, [f"line {k} {i} of a page about nothing in particular" for i in range(30)]) for k in range(50)]
    hash_documents(docs)
    chunk = DocChunk(3, 1, "g", "s", docs)
    chunk.tally["documents.in"] = 50
    back = unpack_chunk(pack_chunk(chunk, 3))
    assert (back.chunk_id, back.group, dict(back.tally)) == (chunk.chunk_id, "g", {"documents.in": 50})
    assert [d.lines for d in back.docs] == [d.lines for d in docs]
    assert all((a.line_hashes == b.line_hashes).all() for a, b in zip(back.docs, docs))
    assert len(pack_chunk(chunk, 3)) < len(pickle.dumps(chunk)) / 2


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
    assert all(d.line_hashes is None for d in out.docs)  # used up: not carried into the MinHash join
    assert out.tally["lines.removed.exact_dedup"] == 13 and out.tally["documents.filtered.exact_dedup"] == 1
    assert {(text, count, dup) for _, text, count, dup in samples.rows()} >= {("Home", 5, True), ("About us", 4, True)}
    tally = dict(out.tally, **{"documents.kept": 4, "lines.kept": 4})
    check_invariant(to_stats(tally))


def test_invariant_detects_a_lost_document():
    stats = to_stats({"documents.in": 3, "documents.kept": 1, "documents.filtered.language": 1,
                      "lines.in": 2, "lines.kept": 2})
    with pytest.raises(AccountingError):
        check_invariant(stats)


def check_join(chunks, partitions, expected):
    """Run the dedup join on hashed chunks; each chunk's table must be ``expected[chunk id]``."""
    config = load_config("text_corpus")
    with TestPipeline(argv=IN_PROCESS) as p:
        created = p | beam.Create(chunks)
        counts = created | beam.FlatMap(lambda c: [((c.group, part), (c.chunk_id, counts))
                                                  for part, counts in chunk_line_counts(c, partitions).items()])
        packed = created | beam.Map(packed_by_id, int(config["shuffle"]["compression_level"]))
        joined = (packed, counts) | JoinRepeatedLines()
        out = (joined["chunks"] | beam.Map(chunk_and_table)
               | beam.MapTuple(lambda c, t: (c.chunk_id, (t.hashes.tolist(), t.counts.tolist(), t.first.tolist()))))
        assert_that(out, equal_to(sorted(expected.items())))


def reference_answers(chunks):
    """The old broadcast: one table per group, looked up by every chunk of the group."""
    by_group = {}
    for c in chunks:
        by_group.setdefault(c.group, []).extend(chunk_line_counts(c, 1).values())
    tables = {g: line_dedup.repeated(line_dedup.merge_counts(parts)) for g, parts in by_group.items()}
    answers = {}
    for c in chunks:
        own = line_dedup.merge_counts(list(chunk_line_counts(c, 1).values()))
        t = line_dedup.repeated_in(tables[c.group], own.hashes)
        answers[c.chunk_id] = (t.hashes.tolist(), t.counts.tolist(), t.first.tolist())
    return answers


def test_dedup_join_equals_the_group_table_whatever_the_partition_count():
    rng = np.random.default_rng(3)
    chunks = []
    for file_index in range(6):
        group = "g0" if file_index < 4 else "g1"
        docs = []
        for record in range(5):
            lines = [f"common {v}" for v in rng.integers(0, 30, rng.integers(1, 8))]
            lines += [f"unique {file_index} {record} {i}" for i in range(3)] + ["everywhere"]
            docs.append(doc((file_index << 32) | record, lines))
        hash_documents(docs)
        chunks.append(DocChunk(file_index, 0, group, "s", docs))
    all_dup = [doc((9 << 32) | r, ["same", "same again"]) for r in range(3)]  # a group where every line is a duplicate
    hash_documents(all_dup)
    chunks.append(DocChunk(9, 0, "g2", "s", all_dup))
    expected = reference_answers(chunks)
    assert len(expected[(9, 0)][0]) == 2 and expected[(9, 0)][1] == [3, 3]
    everywhere = int(line_hashes(["everywhere"])[0])
    assert all(everywhere in answer[0] for chunk_id, answer in expected.items() if chunk_id[0] < 9)
    for partitions in (1, 16, 64):
        check_join(chunks, partitions, expected)


def test_read_transform_outputs(tmp_path):
    good = write_wet(tmp_path / "a.wet.gz", [warcinfo(), wet_record("http://a/", b"x\ny\n"),
                                             wet_record("http://b/", b"x\nz\n"), wet_record("http://c/", b"q\n")])
    config = load_config("text_corpus", ["input.docs_per_chunk=2"])
    specs = [(0, str(good), "g", 4), (1, str(tmp_path / "missing.wet.gz"), "g", 4)]
    with TestPipeline(argv=IN_PROCESS) as p:
        out = p | beam.Create(specs) | beam.ParDo(ReadInputChunks(config)).with_outputs(
            "rejects", "counts", "files", main="chunks")
        assert_that(out.chunks | "ChunkShape" >> beam.MapTuple(
                        lambda chunk_id, packed: (unpack_chunk(packed).shard_name, [d.url for d in unpack_chunk(packed).docs])),
                    equal_to([("part-000000-00000.parquet", ["http://a/", "http://b/"]),
                              ("part-000000-00001.parquet", ["http://c/"])]), label="chunks")
        assert_that(out.rejects | "Reason" >> beam.Map(lambda r: (r.file_index, r.reason)),
                    equal_to([(1, "missing_file")]), label="rejects")
        assert_that(out.counts | "Lines" >> beam.Map(lambda kv: int(kv[1][1].counts.sum()))
                    | beam.CombineGlobally(sum), equal_to([5]), label="counts")


@pytest.mark.parametrize("trim_slack", [1.0, 1.5, 2.0])
def test_line_sample_selection_is_exact_and_order_independent(trim_slack):
    rng = np.random.default_rng(1)
    samples = [(int(h), f"line {h} v{v}", int(c), bool(c >= 2))
               for h, v, c in zip(rng.integers(0, 300, 1000), rng.integers(0, 3, 1000), rng.integers(1, 4, 1000))]
    whole = line_dedup.smallest_samples(line_dedup.add_samples({}, samples), 20)
    expected = [(cls, sorted(rows.values())) for cls, rows in sorted(whole.items())]
    assert all(len(rows) == 20 for _, rows in expected)

    def batch(rows):
        hashes, texts, counts, duplicate = zip(*rows)
        return line_dedup.LineSamples(np.array(hashes, np.uint64), list(texts), np.array(counts, np.uint32),
                                      np.array(duplicate, bool))

    fn = text_corpus.SampleLines.from_config({"max_per_class": 20, "trim_slack": trim_slack})
    # several batches per accumulator: the cutoffs skip lines, the trims happen at trim_slack x the limit
    parts = []
    for i in range(4):
        accumulator = fn.create_accumulator()
        for j in range(0, 250, 25):
            accumulator = fn.add_input(accumulator, batch(samples[i::4][j:j + 25]))
            assert all(len(rows) <= trim_slack * 20 for rows in accumulator[0].values())  # the bound while adding
        parts.append(accumulator)
    assert all(part[1] for part in parts)  # cutoffs were set
    for order in (parts, parts[::-1], [fn.compact(part) for part in parts]):
        assert fn.extract_output(fn.merge_accumulators(order)) == expected
    single = fn.create_accumulator()
    for j in range(0, 1000, 7):
        single = fn.add_input(single, batch(samples[j:j + 7]))
    assert fn.extract_output(single) == expected
    assert all(len(rows) == 20 for rows in fn.compact(single)[0].values())


def test_line_sample_settings_are_checked():
    for override, message in (("line_samples.trim_slack=0.5", "line_samples.trim_slack must be >= 1"),
                              ("line_samples.max_per_class=0", "line_samples.max_per_class must be >= 1")):
        with pytest.raises(ConfigError, match=message):
            text_corpus.SampleLines.from_config(load_config("text_corpus", [override])["line_samples"])


def test_blank_lines_are_paragraph_separators_not_lines():
    lines, breaks = split_paragraphs(["", "Title", "", "", "Para one a", "Para one b", "  ", "Para two", ""])
    assert lines == ["Title", "Para one a", "Para one b", "Para two"] and breaks.tolist() == [False, True, False, True]
    document = doc(0, lines)
    document.breaks = breaks
    assert document.text == "Title\n\nPara one a\nPara one b\n\nPara two" and document.chars == len(document.text)
    document.lines[0] = "Tïtle ½"
    assert document.text_bytes == len(document.text.encode("utf-8"))
    document.drop_lines([False, True, False, True], "x")  # the break before a dropped line moves to the next kept one
    assert document.text == "Para one a\n\nPara two" and document.lines_removed["x"] == 2
    document.drop_lines([False, True], "x")
    assert document.text == "Para two" and document.breaks.tolist() == [False]


def test_text_bytes_and_chars_edge_cases():
    """``text_bytes`` / ``chars`` equal the built text's UTF-8 length / length: an empty document, a
    break before the first line (the text then starts with a newline) with non-ASCII lines, no breaks."""
    cases = [([], None), ([], np.zeros(0, bool)), (["½ élan", "日本語", "x"], np.array([True, False, True])),
             (["Ünïcode ✓", "b"], None), (["only"], np.array([True]))]
    for lines, breaks in cases:
        document = doc(0, lines)
        document.breaks = breaks
        assert document.text_bytes == len(document.text.encode("utf-8")), (lines, breaks)
        assert document.chars == len(document.text), (lines, breaks)
    assert doc(0, []).text_bytes == 0


def test_document_pickles_every_field_and_the_reduce_checks_the_init():
    document = doc(7, ["a", "b"])
    document.line_hashes, document.breaks = np.array([1, 2], np.uint64), np.array([False, True])
    document.invalid_utf8_bytes, document.language, document.language_score = 3, "fr", 0.5
    document.line_counts, document.lines_removed, document.fields = {"x": 2}, {"x": 1}, {"cluster_size": 4}
    copy = pickle.loads(pickle.dumps(document, protocol=pickle.HIGHEST_PROTOCOL))
    for name in Document.__slots__:
        value, expected = getattr(copy, name), getattr(document, name)
        assert (value.tolist() == expected.tolist()) if isinstance(expected, np.ndarray) else value == expected, name

    @dataclass
    class NotInit:
        a: int
        b: int = field(default=0, init=False)

    @dataclass
    class KeywordOnly:
        a: int
        b: int = field(default=0, kw_only=True)

    @dataclass
    class WithInitVar:
        a: int
        scale: InitVar[int] = 1

    for cls in (NotInit, KeywordOnly, WithInitVar):
        with pytest.raises(TypeError, match="every field positionally"):
            init_field_getter(cls)


def test_blank_lines_are_never_duplicates_and_blank_only_documents_are_empty():
    config = load_config("text_corpus", ["stages=[min_length]", "min_length.min_chars=1"])
    bodies = [["Home", "", "Story one.", "", "Footer"], ["Home", "", "", "Story two.", "", "Footer"], ["", "  ", ""]]
    docs = []
    for key, body in enumerate(bodies):
        lines, breaks = split_paragraphs(body)
        docs.append(doc(key, lines))
        docs[-1].breaks = breaks
    chunk = DocChunk(0, 0, 0, "s", docs)
    hash_documents(docs)
    table = line_dedup.repeated(line_dedup.merge_counts(list(chunk_line_counts(chunk, 2).values())))
    processor = ChunkProcessor(config)
    out, _ = processor.process(chunk, table)
    # keep-canonical: doc 0 keeps Home/Footer, doc 1 loses them; no blank line is counted anywhere
    assert [d.text for d in out.docs] == ["Home\n\nStory one.\n\nFooter", "Story two."]
    assert out.tally["lines.in"] == 6 and out.tally["lines.removed.exact_dedup"] == 2
    assert out.tally["line_dedup.duplicate_line_occurrences"] == 4
    assert out.tally["documents.filtered.empty"] == 1


def test_groups_are_common_crawl_segments_else_blocks_of_files():
    seg = "s3://commoncrawl/crawl-data/CC-MAIN-2024-22/segments/1715971057216.{}/wet/CC-MAIN-x-{}.warc.wet.gz"
    paths = [seg.format(7, 0), "a.wet.gz", seg.format(3, 1), seg.format(7, 2), "b.jsonl.gz", "c.wet.gz"]
    assert line_dedup.dedup_groups(paths, 2) == [
        "CC-MAIN-2024-22/1715971057216.7", "files-000000", "CC-MAIN-2024-22/1715971057216.3",
        "CC-MAIN-2024-22/1715971057216.7", "files-000000", "files-000001"]


def test_job_dedups_within_a_cc_segment_not_across(tmp_path):
    page = b"Shared navigation line\nA unique story about the segment number %d and its %s page.\n"
    for segment, names in ((0, "ab"), (1, "c")):
        folder = tmp_path / f"crawl-data/CC-MAIN-2099-01/segments/1700000000000.{segment}/wet"
        folder.mkdir(parents=True)
        for name in names:
            write_wet(folder / f"{name}.warc.wet.gz", [warcinfo(), wet_record(f"http://{name}/", page % (segment, name.encode()))])
    output = tmp_path / "out"
    stats = text_corpus.run(str(tmp_path / "crawl-data/**/*.warc.wet.gz"), str(output), beam_args=IN_PROCESS,
                            overrides=["stages=[min_length]", "min_length.min_chars=1", "cross_document_stages=[]"])["stats"]
    assert stats["line_dedup"]["groups"] == 2
    assert stats["line_dedup"]["partitions"] == 2 and stats["line_dedup"]["max_group_partitions"] == 1  # auto: tiny groups
    # the navigation line is a duplicate inside segment 0 (kept once, in the first file) and unique in segment 1
    assert stats["lines"]["removed"]["exact_dedup"] == 1 and stats["lines"]["kept"] == 5


def test_partitions_follow_the_group_size():
    groups, sizes = ["a", "a", "b", "c", "d"], [3, 4, 0, 8, 9]
    assert line_dedup.group_partitions(groups, sizes, 0, 4) == {"a": 2, "b": 1, "c": 2, "d": 4}  # ceil, next power of 2
    assert line_dedup.group_partitions(groups, sizes, 16, 4) == dict.fromkeys("abcd", 16)  # fixed for every group
    # 16x the bytes -> 16x the partitions: the memory per key of the join stays the same
    assert line_dedup.group_partitions(["g"], [61_535_520], 0, 32_000_000) == {"g": 2}
    assert line_dedup.group_partitions(["g"], [16 * 61_535_520], 0, 32_000_000) == {"g": 32}


def test_partition_settings_are_checked(tmp_path):
    for override, message in (("line_dedup.partitions=-1", "line_dedup.partitions must be >= 0"),
                              ("line_dedup.bytes_per_partition=0", "line_dedup.bytes_per_partition must be >= 1")):
        with pytest.raises(ConfigError, match=message):
            text_corpus.dedup_partitions(["a.wet.gz"], ["g"], load_config("text_corpus", [override])["line_dedup"])


def test_auto_partitions_read_the_file_sizes(tmp_path):
    files = []
    for name, size in (("a", 3000), ("b", 5000), ("c", 100)):
        files.append(str(tmp_path / f"{name}.wet.gz"))
        (tmp_path / f"{name}.wet.gz").write_bytes(b"x" * size)
    settings = load_config("text_corpus", ["line_dedup.bytes_per_partition=1000"])["line_dedup"]
    assert storage.sizes([*files, str(tmp_path / "missing.wet.gz")]) == [3000, 5000, 100, None]
    assert text_corpus.dedup_partitions(files, ["g", "g", "h"], settings) == {"g": 8, "h": 1}
    # a file of unknown size counts as the mean known size: (3000 + 5000 + 100) // 3 = 2700
    assert text_corpus.dedup_partitions([*files, str(tmp_path / "missing.wet.gz")], ["g", "g", "h", "h"], settings) == {"g": 8, "h": 4}


def test_auto_partitions_without_any_remote_size_is_a_one_line_error():
    """Auto partitions with no size known would put each group on one key: refused with the key to set."""
    from moshi_data.pipeline.command import UserError

    settings = load_config("text_corpus")["line_dedup"]
    unreachable = ["http://127.0.0.1:9/a.warc.wet.gz", "http://127.0.0.1:9/b.warc.wet.gz"]  # nothing listens on port 9
    with pytest.raises(UserError, match="set line_dedup.partitions=N"):
        text_corpus.dedup_partitions(unreachable, ["g", "g"], settings)
    assert text_corpus.dedup_partitions(unreachable, ["g", "g"], {**settings, "partitions": 16}) == {"g": 16}

