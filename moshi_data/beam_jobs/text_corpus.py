"""Text corpus job (Helium recipe): Common Crawl WET or JSONL document shards -> exact line dedup ->
stages -> Parquet.

    python -m moshi_data.beam_jobs.text_corpus --input 'wet/*.warc.wet.gz' --output out/text-corpus [--limit N]
        [--config text_corpus] [--set language.threshold=0.8] [any Beam option, e.g. --runner=...]

Steps: read WET files into chunks of documents (+ rejects) -> exact line dedup as a shuffle join:
each chunk's normalized line hashes (uint64 arrays) travel to their (shard group, hash partition)
key, the key counts them and sends each chunk the totals of its repeated lines, joined back to the
chunk by chunk id (CoGroupByKey) -> remove duplicate lines -> per-document stage chain ->
cross-document transforms -> one Parquet shard per chunk, rejects/rejects-<file>.jsonl per input
file with rejects, stale files of an earlier run deleted -> line_samples/, stats.json (written last
by the job; the launcher then adds the run's timing to it and writes report.html). No side input grows with the documents or lines: tallies are summed by a
CombineFn, samples and examples are bounded by config.

WHERE A NEW STAGE PLUGS IN
- Per-document stage (fuzzy dedup, quality): a class with name/columns/setup()/process(doc) in
  pipeline/text/, registered in pipeline/text/stages.py STAGES, named in configs/text_corpus.yaml
  `stages:` at its place in the order. Nothing to change here.
- Cross-document stage (MinHash): a function PCollection[DocChunk] -> (PCollection[DocChunk], a
  PCollection of one summary dict for stats.json under the stage's name) added to
  CROSS_DOCUMENT_STAGES below (with the columns it adds) and named in `cross_document_stages:`;
  drop documents with ``chunk.filter_document(doc, reason)``.
- The fuzzy-dedup and quality stages need models: ``attach_classifiers`` (classifiers/models.py)
  trains them when missing (cached under models/) and fills their config sections before the run.
"""
from __future__ import annotations

import functools
import json
import logging
import os
import sys
import tempfile
import time
from datetime import datetime, timezone
from collections import Counter
from typing import Callable, Iterable, Iterator

import apache_beam as beam
from apache_beam.metrics import Metrics
from apache_beam.metrics.metric import MetricsFilter

from moshi_data.beam_jobs import coders, minhash  # noqa: F401 - coders: registers the DocChunk and LineSamples coders
from moshi_data.beam_jobs.heap import release_free_heap
from moshi_data.beam_jobs.options import build_pipeline_options, check_paths_reach_workers, prepare_workers, runner_name
from moshi_data.beam_jobs.progress import mark, progress_bar
from moshi_data.beam_jobs.run_results import STAGE_COUNTER_PREFIX, first_rejects, stage_seconds
from moshi_data.beam_jobs.stage_timer import StageTimer
from moshi_data.beam_jobs.stale_files import RemoveStale
from moshi_data.beam_jobs.tallies import SumTallies
from moshi_data.classifiers.models import attach_classifiers
from moshi_data.pipeline import storage
from moshi_data.pipeline.command import RunFailed, UserError, breakdown, command_parser, rejects_summary, run_command, run_provenance, table
from moshi_data.pipeline.config import REPO_ROOT, load_config
from moshi_data.pipeline.text import line_dedup
from moshi_data.pipeline.text.accounting import check_invariant, to_stats
from moshi_data.pipeline.text.chunk import (ChunkProcessor, DocChunk, chunk_line_counts, hash_documents,
                                            unpack_chunk)
from moshi_data.pipeline.text.document import Reject
from moshi_data.pipeline.text.jsonl import JsonlFormat, read_jsonl
from moshi_data.pipeline.text.output import documents_schema, documents_table, parquet_bytes, run_metadata
from moshi_data.pipeline.text.report import build_report
from moshi_data.pipeline.text.stages import EXACT_DEDUP, build_stages
from moshi_data.pipeline.text.wet import FileReport, WetLimits, read_wet

LOG = logging.getLogger("moshi_data.text_corpus")
NAMESPACE = "text_corpus"
DOCUMENTS_DIR, REJECTS_DIR, SAMPLES_DIR = "documents", "rejects", "line_samples"
SAMPLES_FILE, STATS_FILE = "line_samples.jsonl", "stats.json"
EXAMPLES_DIR, DROPPED_FILE = "examples", "dropped.jsonl"
# Config keys naming models: staged to object storage for remote workers (beam_jobs/options.py).
MODEL_KEYS = ("fuzzy_dedup.model", "quality.model", "language.model")
REPORT_FILE = "report.html"

# Cross-document stages by name: (transform of the chunks, columns it adds). The ones named in
# config `cross_document_stages` run in that order after the per-document stages.
CROSS_DOCUMENT_STAGES: dict[str, tuple[Callable[[beam.PCollection, dict], beam.PCollection], Callable[[], list]]] = {
    minhash.STAGE: (functools.partial(minhash.minhash_chunks, metrics_namespace=NAMESPACE), minhash.cluster_size_columns),
}


def cross_document_columns(config: dict) -> dict[str, list]:
    return {name: CROSS_DOCUMENT_STAGES[name][1]() for name in config["cross_document_stages"]}


class ReadInputChunks(beam.DoFn):
    """File spec (index, path, group, the group's partitions) -> (chunk id, packed DocChunk) (main),
    'rejects', 'counts', 'files'.

    Files with a ``jsonl.extensions`` ending are read as JSONL document shards, others as WET. Chunks
    leave packed (``pack_chunk``) for the dedup join: as objects, the runner would also pickle each
    one whole to sample its size for its metrics."""

    def __init__(self, config: dict):
        self.limits = WetLimits.from_config(config["wet"])
        self.jsonl = JsonlFormat.from_config(config["jsonl"])
        self.docs_per_chunk = int(config["input"]["docs_per_chunk"])
        self.level = int(config["shuffle"]["compression_level"])
        self.timer = StageTimer(NAMESPACE)

    def process(self, spec: tuple[int, str, str, int]) -> Iterator:
        file_index, path, group, partitions = spec
        report = FileReport(path, file_index)
        try:
            raw = storage.open_read(path)
        except Exception as exc:  # noqa: BLE001 - any failure to open is a reject, not a crash
            reason = "missing_file" if isinstance(exc, FileNotFoundError) or not _exists(path) else "unreadable_file"
            logging.debug("cannot open %s: %s", path, exc)
            report.rejects += 1
            yield beam.pvalue.TaggedOutput("rejects", Reject(path, file_index, 0, reason, f"{type(exc).__name__}: {exc}"[:300]))
            yield beam.pvalue.TaggedOutput("files", report)
            return
        docs, chunk_index = [], 0
        start = time.perf_counter()
        with raw:
            try:
                items = (read_jsonl(raw, path, file_index, self.limits, self.jsonl, report) if self.jsonl.matches(path)
                         else read_wet(raw, path, file_index, self.limits, report))
                for item in items:
                    if isinstance(item, Reject):
                        logging.debug("rejected %s@%d: %s (%s)", path, item.record_offset, item.reason, item.message)
                        yield beam.pvalue.TaggedOutput("rejects", item)
                        continue
                    docs.append(item)
                    if len(docs) == self.docs_per_chunk:
                        yield from self._chunk(docs, file_index, chunk_index, group, partitions, path, start)
                        docs, chunk_index, start = [], chunk_index + 1, time.perf_counter()
            except OSError as exc:  # network / object store failure in the middle of a file
                report.rejects += 1
                yield beam.pvalue.TaggedOutput("rejects", Reject(path, file_index, -1, "unreadable_file", str(exc)[:300]))
        if docs:
            yield from self._chunk(docs, file_index, chunk_index, group, partitions, path, start)
        yield beam.pvalue.TaggedOutput("files", report)

    def _chunk(self, docs, file_index, chunk_index, group, partitions, path, start) -> Iterator:
        self.timer.add("read", time.perf_counter() - start)
        start = time.perf_counter()
        chunk = DocChunk(file_index, chunk_index, group, path, docs)
        chunk.tally["documents.in"] += len(docs)
        hash_documents(docs)
        for partition, counts in chunk_line_counts(chunk, partitions).items():
            Metrics.counter(NAMESPACE, "shuffle_bytes_line_counts").inc(counts.nbytes)
            yield beam.pvalue.TaggedOutput("counts", ((group, partition), (chunk.chunk_id, counts)))
        self.timer.add("normalize_hash", time.perf_counter() - start)
        yield minhash.packed_by_id(chunk, self.level, (NAMESPACE, "shuffle_bytes_chunks"))


def dedup_partitions(files: list[str], groups: list[str], settings: dict) -> dict[str, int]:
    """Hash partitions of each dedup group (``line_dedup.partitions``, or 0 = auto from the files' sizes).
    A file of unknown size counts as the mean known size. When no remote file's size can be learned, auto
    would put each group on one key: a one-line error asks for ``line_dedup.partitions`` instead (local
    files of unknown size are missing ones, rejected later, and hold no lines)."""
    line_dedup.check_settings(settings)
    partitions, per_partition = int(settings["partitions"]), int(settings["bytes_per_partition"])
    if partitions:
        return line_dedup.group_partitions(groups, [0] * len(files), partitions, per_partition)
    sizes = storage.sizes(files)
    known = [size for size in sizes if size is not None]
    if not known and not all(storage.is_local(path) for path in files):
        raise UserError(f"line_dedup.partitions=0 (auto) needs the input files' sizes, and none of the {len(files)} "
                        f"could be read (first: {files[0]}); set line_dedup.partitions=N "
                        "(docs/text-corpus.md: ~2048 for a Common Crawl segment)")
    if len(known) < len(sizes):
        LOG.warning("line_dedup.partitions=0 (auto): %d of %d input sizes unknown, counted as the mean known size",
                    len(sizes) - len(known), len(sizes))
    mean = sum(known) // len(known) if known else 0
    return line_dedup.group_partitions(groups, [mean if size is None else size for size in sizes], 0, per_partition)


def _exists(path: str) -> bool:
    try:
        return storage.exists(path)
    except Exception:  # noqa: BLE001
        return False


def count_partition(item) -> Iterator:
    """((group, partition), [(chunk id, chunk counts)]) -> (chunk id, group totals of the chunk's
    repeated lines) for every chunk that has one, and the partition's size as a 'summary'.

    Memory: this key's share of the group's unique lines (``line_dedup.partitions`` sets it): the
    chunks' counts are merged as they stream past, then streamed again (grouped values are
    re-iterable) to answer each chunk."""
    _, parts = item
    merged = line_dedup.merge_incrementally(counts for _, counts in parts)
    table = line_dedup.repeated(merged)
    for chunk_id, counts in parts:
        answer = line_dedup.repeated_in(table, counts.hashes)
        if len(answer):
            Metrics.counter(NAMESPACE, "shuffle_bytes_answers").inc(answer.nbytes)
            yield chunk_id, answer
    yield beam.pvalue.TaggedOutput("summary", {
        "unique_line_hashes": len(merged), "repeated_line_hashes": len(table), "table_bytes": merged.nbytes})


class CombineDedupSummaries(beam.CombineFn):
    """Partition summaries -> totals and the largest partition (``max_partition_bytes``)."""

    SUMMED = ("unique_line_hashes", "repeated_line_hashes", "table_bytes")

    def create_accumulator(self):
        return dict.fromkeys((*self.SUMMED, "max_partition_bytes"), 0)

    def add_input(self, accumulator, summary):
        return self.merge_accumulators([accumulator, {**summary, "max_partition_bytes": summary["table_bytes"]}])

    def merge_accumulators(self, accumulators):
        accumulators = list(accumulators)
        merged = {key: sum(acc[key] for acc in accumulators) for key in self.SUMMED}
        merged["max_partition_bytes"] = max(acc["max_partition_bytes"] for acc in accumulators)
        return merged

    def extract_output(self, accumulator):
        return accumulator


class JoinRepeatedLines(beam.PTransform):
    """Exact line dedup as a shuffle join: (chunk id, packed chunk) + the chunks' per-partition line
    counts -> (chunk id, {"chunk": [packed chunk], "repeated": [parts of its repeated-line table]})
    (``chunk_and_table`` opens one) and a summary of the partitions (``summary``)."""

    def expand(self, inputs):
        chunks, counts = inputs
        counted = (counts
                   | "GroupByPartition" >> beam.GroupByKey()
                   | "CountPartition" >> beam.FlatMap(count_partition).with_outputs("summary", main="answers"))
        joined = {"chunk": chunks, "repeated": counted.answers} | "JoinByChunk" >> beam.CoGroupByKey()
        summary = counted.summary | "SumPartitions" >> beam.CombineGlobally(CombineDedupSummaries())
        return {"chunks": joined, "summary": summary}


def chunk_and_table(item) -> tuple[DocChunk, line_dedup.LineCounts]:
    """A chunk joined with its answers (``JoinRepeatedLines``) -> (the chunk, its repeated-line table)."""
    _, grouped = item
    return unpack_chunk(grouped["chunk"][0]), line_dedup.merge_counts(list(grouped["repeated"]))


class ProcessChunks(beam.DoFn):
    """A chunk joined with its answers -> exact line dedup with its repeated-line table, then the
    stage chain (models load in setup). The chunk is opened here, not in a step before: an object
    passed between steps is pickled whole to sample its size for the runner's metrics."""

    def __init__(self, config: dict):
        self.processor = ChunkProcessor(config)
        self.release_heap = config["worker_memory"]["release_free_heap"]
        self.timer = StageTimer(NAMESPACE)

    def setup(self):
        self.processor.setup()

    def process(self, item) -> Iterator:
        chunk, table = chunk_and_table(item)
        seconds: Counter = Counter()
        chunk, samples = self.processor.process(chunk, table, seconds)
        if self.release_heap:
            start = time.perf_counter()
            release_free_heap()  # a bundle can last a worker's whole share: freed pages must not pile up (beam_jobs/heap.py)
            seconds["heap_trim"] += time.perf_counter() - start
        self.timer.add_all(seconds)  # a stage under 1 ms a chunk (the heap trim) still adds up
        Metrics.counter(NAMESPACE, "documents_processed").inc(chunk.tally["documents.in"])
        if samples:
            yield beam.pvalue.TaggedOutput("samples", samples)
        yield chunk


class SampleLines(beam.CombineFn):
    """Per-chunk ``LineSamples`` -> [(duplicate, rows with the smallest hashes)].

    Accumulator: (rows by class, cutoff by class). A chunk's lines above their class's cutoff are
    skipped before any row is built, and a class is trimmed back to ``max_per_class`` only once it
    holds ``trim_slack`` x that many (``line_samples.trim_slack``), so a chunk costs a few array
    comparisons once the classes are full: exact (``line_dedup.add_sample_batch``); while adding, a
    class holds at most ``trim_slack`` x ``max_per_class`` rows, ``max_per_class`` once compacted."""

    def __init__(self, max_per_class: int, trim_slack: float):
        self.max_per_class = max_per_class
        self.trim_above = int(trim_slack * max_per_class)

    @classmethod
    def from_config(cls, settings: dict) -> "SampleLines":
        line_dedup.check_sample_settings(settings)
        return cls(int(settings["max_per_class"]), float(settings["trim_slack"]))

    def create_accumulator(self):
        return {}, {}

    def add_input(self, accumulator, samples: line_dedup.LineSamples):
        rows, cutoffs = accumulator
        line_dedup.add_sample_batch(rows, samples, cutoffs)
        line_dedup.trim_samples(rows, self.max_per_class, self.trim_above, cutoffs)
        return accumulator

    def compact(self, accumulator):
        """Before an accumulator is sent on: ``max_per_class`` rows per class, not the slack."""
        rows, cutoffs = accumulator
        line_dedup.trim_samples(rows, self.max_per_class, self.max_per_class, cutoffs)
        return accumulator

    def merge_accumulators(self, accumulators):
        """Trimmed to ``max_per_class`` after each accumulator, however many bundles fed them: memory is
        the merged rows (``max_per_class`` per class) plus one accumulator being added (up to
        ``trim_slack`` x ``max_per_class`` per class when it was not compacted)."""
        merged: dict = {}
        for rows, _ in accumulators:
            for class_rows in rows.values():
                line_dedup.add_samples(merged, class_rows.values())
            merged = line_dedup.smallest_samples(merged, self.max_per_class)
        return merged, {}

    def extract_output(self, accumulator):
        rows = line_dedup.smallest_samples(accumulator[0], self.max_per_class)
        return [(cls, sorted(class_rows.values())) for cls, class_rows in sorted(rows.items())]


class WriteShards(beam.DoFn):
    """Writes each chunk's kept documents to documents/<shard>.parquet (atomic), yields its tally."""

    def __init__(self, config: dict, output: str, run: dict | None = None):
        self.output = output
        self.out_cfg = config["output"]
        self.schema = documents_schema(build_stages(config), cross_document_columns(config)).with_metadata(run_metadata(run))
        self.timer = StageTimer(NAMESPACE)

    def process(self, chunk: DocChunk) -> Iterator:
        """A chunk with no kept document writes no shard (readers choke on zero-row files): which
        shards exist depends on the input and config only."""
        with self.timer.time("write"):
            data = b""
            if chunk.docs:
                table = documents_table(chunk.docs, self.schema)
                data = parquet_bytes(table, self.out_cfg["compression"], int(self.out_cfg["compression_level"]),
                                     int(self.out_cfg["row_group_rows"]))
                storage.write_bytes_atomic(storage.join(self.output, DOCUMENTS_DIR, chunk.shard_name), data)
            tally = Counter(chunk.tally)
            tally["documents.kept"] += len(chunk.docs)
            tally["lines.kept"] += sum(len(doc.lines) for doc in chunk.docs)
            tally["output.bytes"] += len(data)
            tally["output.shards"] += 1 if chunk.docs else 0
        for example in chunk.dropped:  # kept examples: the report reads the first rows of the shards
            key = tuple(int(part) for part in example["doc_id"].split(":"))
            yield beam.pvalue.TaggedOutput("examples", (example["reason"], (key, example)))
        yield (chunk.shard_name if chunk.docs else None), dict(tally)


def file_tally(report: FileReport) -> dict:
    """What reading one file adds to stats.json."""
    tally: Counter = Counter()
    for record_type, n in report.records.items():
        tally[f"records.read.{record_type}"] += n
    for warning, n in report.warnings.items():
        tally[f"records.warnings.{warning}"] += n
    tally["input.compressed_bytes"] += report.compressed_bytes
    tally["invalid_utf8.replaced_bytes"] += report.invalid_utf8_bytes
    tally["invalid_utf8.documents"] += report.documents_with_invalid_utf8
    return dict(tally)


def reject_tally(reject: Reject) -> dict:
    return {"documents.in": 1, f"documents.rejected.{reject.reason}": 1}


def rejects_shard_name(file_index: int) -> str:
    return f"rejects-{file_index:06d}.jsonl"


class WriteRejects(beam.DoFn):
    """(file index, its rejects) -> rejects/rejects-<file index>.jsonl (atomic), yields (folder, name)."""

    def __init__(self, output: str):
        self.output = output

    def process(self, item) -> Iterator:
        file_index, rejects = item
        rows = [reject.to_json() for reject in sorted(rejects, key=Reject.sort_key)]
        name = rejects_shard_name(file_index)
        data = "".join(json.dumps(row, ensure_ascii=False, sort_keys=True) + "\n" for row in rows)
        storage.write_bytes_atomic(storage.join(self.output, REJECTS_DIR, name), data.encode("utf-8"))
        yield REJECTS_DIR, name


class Finalize(beam.DoFn):
    """Runs once after all shards, rejects and stale-file deletions: line_samples/, examples/,
    report, stats.json (written last). Every input is bounded (sums, samples, a few examples)."""

    def __init__(self, config: dict, output: str, n_files: int, partitions: dict[str, int], run: dict | None = None):
        self.config, self.output, self.n_files, self.partitions, self.run = config, output, n_files, partitions, run

    def process(self, _, tally, dedup_summary, stage_summaries, samples, examples, stale_removed) -> Iterator:
        tally = Counter(tally)
        tally["files.in"] = self.n_files
        tally.setdefault("output.shards", 0)
        for key in CombineDedupSummaries.SUMMED:
            tally[f"line_dedup.{key}"] += dedup_summary[key]
        stats = to_stats(tally)
        unique = stats.get("line_dedup", {}).get("unique_line_hashes", 0)
        stats.setdefault("line_dedup", {}).update({
            "groups": len(self.partitions),
            "partitions": sum(self.partitions.values()),  # (group, partition) keys of the join
            "max_group_partitions": max(self.partitions.values(), default=0),
            "bytes_per_partition": None if self.config["line_dedup"]["partitions"] else self.config["line_dedup"]["bytes_per_partition"],
            "max_partition_bytes": dedup_summary["max_partition_bytes"],
            "threshold": self.config["line_dedup"]["threshold"],
            "keep_canonical": self.config["line_dedup"]["keep_canonical"],
            "bytes_per_unique_line": line_dedup.BYTES_PER_UNIQUE_LINE,
            "bytes_per_unique_line_measured": round(stats["line_dedup"].get("table_bytes", 0) / unique, 3) if unique else None,
        })
        stats.update(stage_summaries)
        stats["stages"] = ["in", EXACT_DEDUP, *self.config["stages"], *self.config["cross_document_stages"]]
        check_invariant(stats)
        if self.run is not None:
            stats["run"] = self.run

        sample_rows = ({"text": text, "count": count, "duplicate": duplicate}
                       for duplicate, rows in sorted(samples, key=lambda item: not item[0])
                       for _, text, count, _ in sorted(rows))
        self._write_jsonl(SAMPLES_DIR, SAMPLES_FILE, sample_rows)
        dropped = (example for _, rows in sorted(examples, key=lambda item: item[0])  # by reason, then document
                   for _, example in sorted(rows, key=lambda row: row[0]))
        self._write_jsonl(EXAMPLES_DIR, DROPPED_FILE, dropped)
        storage.write_bytes_atomic(storage.join(self.output, STATS_FILE),
                                   (json.dumps(stats, indent=2, sort_keys=True) + "\n").encode())
        storage.remove_temporaries(self.output)
        yield stats

    def _write_jsonl(self, folder: str, name: str, rows: Iterable[dict]) -> None:
        """Rows streamed to a local temporary file, then put in place atomically (no copy of them all in memory)."""
        with tempfile.NamedTemporaryFile("w", encoding="utf-8", suffix=".jsonl") as handle:
            for row in rows:
                handle.write(json.dumps(row, ensure_ascii=False, sort_keys=True) + "\n")
            handle.flush()
            storage.upload_file(handle.name, storage.join(self.output, folder, name))
        storage.remove_stale(storage.join(self.output, folder), [name])


def build_pipeline(pipeline: beam.Pipeline, files: list[str], config: dict, output: str, run: dict | None = None,
                   progress: str | None = None) -> beam.PCollection:
    """Add the job's transforms to ``pipeline``; returns the PCollection holding the stats dict.

    ``run``: provenance written to stats.json and the Parquet metadata; ``progress``: the local
    progress channel (beam_jobs/progress.py)."""
    config = attach_classifiers(config, log=logging.info)
    groups = line_dedup.dedup_groups(files, int(config["input"]["files_per_group"]))
    partitions = dedup_partitions(files, groups, config["line_dedup"])
    specs = [(index, path, group, partitions[group]) for index, (path, group) in enumerate(zip(files, groups))]
    read = (pipeline
            | "FileList" >> beam.Create(specs)
            | "SpreadFiles" >> beam.Reshuffle()
            | "ReadInput" >> beam.ParDo(ReadInputChunks(config)).with_outputs("rejects", "counts", "files", main="chunks"))
    dedup = (read.chunks, read.counts) | "CountLines" >> JoinRepeatedLines()
    processed = dedup["chunks"] | "Dedup+Stages" >> beam.ParDo(ProcessChunks(config)).with_output_types(
        DocChunk, samples=line_dedup.LineSamples).with_outputs("samples", main="chunks")
    chunks, stage_summaries = processed.chunks, []
    for name in config["cross_document_stages"]:
        chunks, summary = CROSS_DOCUMENT_STAGES[name][0](chunks, config)
        stage_summaries.append(summary | f"{name}Summary" >> beam.Map(lambda value, name=name: (name, value)))
    stage_summaries = tuple(stage_summaries) | "StageSummaries" >> beam.Flatten(pipeline=pipeline)
    written = chunks | "WriteParquet" >> beam.ParDo(WriteShards(config, output, run)).with_outputs("examples", main="shards")
    if progress:
        _ = read.files | "ProgressFiles" >> beam.Map(lambda r: mark(r, progress, files=1, documents_read=r.documents))
        _ = written.shards | "ProgressDocuments" >> beam.Map(lambda s: mark(s, progress, documents=s[1].get("documents.in", 0)))
    examples = written.examples | "FirstExamples" >> beam.combiners.Top.SmallestPerKey(
        int(config["report"]["examples_per_reason"]), key=lambda item: item[0])
    samples = processed.samples | "LineSamples" >> beam.CombineGlobally(
        SampleLines.from_config(config["line_samples"]))
    reject_files = (read.rejects
                    | "KeyRejectsByFile" >> beam.Map(lambda reject: (reject.file_index, reject))
                    | "GroupRejects" >> beam.GroupByKey()
                    | "WriteRejects" >> beam.ParDo(WriteRejects(output)))
    shard_files = written.shards | "ShardNames" >> beam.FlatMapTuple(lambda name, _: [(DOCUMENTS_DIR, name)] if name else [])
    stale_removed = (shard_files, reject_files) | "WrittenFiles" >> beam.Flatten() | "RemoveStale" >> RemoveStale(
        output, [DOCUMENTS_DIR, REJECTS_DIR], config["stale_files"]["listing_ranges"])
    tallies = (written.shards | "ShardTallies" >> beam.Values(),
               read.files | "FileTallies" >> beam.Map(file_tally),
               read.rejects | "RejectTallies" >> beam.Map(reject_tally))
    tally = tallies | "AllTallies" >> beam.Flatten() | "SumTallies" >> beam.CombineGlobally(SumTallies())
    return (pipeline
            | "Once" >> beam.Create([None])
            | "Finalize" >> beam.ParDo(
                Finalize(config, output, len(files), partitions, run),
                tally=beam.pvalue.AsSingleton(tally), dedup_summary=beam.pvalue.AsSingleton(dedup["summary"]),
                stage_summaries=beam.pvalue.AsDict(stage_summaries), samples=beam.pvalue.AsSingleton(samples),
                examples=beam.pvalue.AsList(examples), stale_removed=beam.pvalue.AsSingleton(stale_removed)))


def default_input(config: dict) -> tuple[str, int | None]:
    """The shared WET samples and JSONL shards when ../shared/data/wet exists, else the first WET of
    a recent crawl."""
    local = config["input"]["default_local"]
    patterns = [local] if isinstance(local, str) else list(local)
    folder = (REPO_ROOT / patterns[0].split("*")[0]).resolve()
    if folder.is_dir():
        return ",".join(str(REPO_ROOT / pattern) for pattern in patterns), None
    return config["input"]["default_crawl_paths"], int(config["input"]["default_crawl_limit"])


def run_metrics(result) -> dict:
    """Counters (not timers) and distribution maxima of the job and of the MinHash components."""
    metrics = result.metrics().query(MetricsFilter())
    counters: Counter = Counter()
    for counter in metrics["counters"]:  # one per step: summed
        name = counter.key.metric.name
        if counter.key.metric.namespace in (NAMESPACE, "minhash") and not name.startswith(STAGE_COUNTER_PREFIX) and counter.committed:
            counters[name] += counter.committed
    maxima: dict = {}
    for distribution in metrics["distributions"]:
        if distribution.committed is not None and distribution.committed.count:
            name = distribution.key.metric.name
            maxima[name] = max(maxima.get(name, 0), distribution.committed.max)
    return {"counters": dict(counters), "key_sizes": maxima}


def normalise_source(path: str) -> str:
    """A URL as given, a local path made absolute and normal (no ``..``): the ``source`` of documents."""
    return path if "://" in path else os.path.normpath(os.path.abspath(path))


def check_inputs(files: list[str], input_spec: str) -> None:
    """Mistakes in the command, reported before any worker starts: no input, folders, no file exists."""
    if not files:
        raise UserError(f"no input files in {input_spec!r}")
    local = [path for path in files if "://" not in path]
    for path in local:
        if os.path.isdir(path):
            raise UserError(f"input {path} is a folder: give a glob such as '{path.rstrip('/')}/*.jsonl.gz'")
    if local and len(local) == len(files) and not any(os.path.exists(path) for path in local):
        raise UserError(f"input not found: {local[0]}" + (f" (and {len(local) - 1} more)" if len(local) > 1 else ""))


def run(input_spec: str | None, output: str, config_name: str = "text_corpus", limit: int | None = None,
        overrides: list[str] = (), beam_args: list[str] = (), dataflow_config: str = "dataflow") -> dict:
    """Run the job; returns {"stats": stats.json content, "seconds": per stage, "wall_s": ...}."""
    started = datetime.now(timezone.utc)
    config = load_config(config_name, overrides, defaults="text_corpus")
    options, extra_overrides = build_pipeline_options(list(beam_args), config["runner"], dataflow_config)
    if extra_overrides:
        config = load_config(config_name, [*extra_overrides, *overrides], defaults="text_corpus")
    config = attach_classifiers(config, log=LOG.info)
    storage.configure(options)
    configured = config  # provenance names the models as configured, not where this runner staged them
    config = prepare_workers(options, config, MODEL_KEYS, output, log=LOG.info)
    if input_spec is None:
        input_spec, default_limit = default_input(config)
        limit = limit if limit is not None else default_limit
    files = [normalise_source(path) for path in storage.expand_inputs(input_spec, limit)]
    check_inputs(files, input_spec)
    check_paths_reach_workers(options, files, output)
    build_stages(config)  # fail fast on a bad stage list, before starting workers
    runner = runner_name(list(beam_args), config["runner"])
    LOG.info("text corpus: %d input files -> %s (%s)", len(files), output, runner)
    start = time.perf_counter()
    storage.retire_completion_marker(storage.join(output, STATS_FILE), log=LOG.info)
    run_info = run_provenance(configured, files, runner)
    with progress_bar(runner, len(files), "files", then=("documents", "documents_read")) as channel:
        pipeline = beam.Pipeline(options=options)
        build_pipeline(pipeline, files, config, output, run_info, channel)
        result = pipeline.run()
        result.wait_until_finish()
    wall = time.perf_counter() - start
    stats = json.loads(storage.read_bytes(storage.join(output, STATS_FILE)))
    stats["run"].update({"started": started.isoformat(timespec="seconds"), "wall_s": round(wall, 3)})
    storage.write_bytes_atomic(storage.join(output, STATS_FILE), (json.dumps(stats, indent=2, sort_keys=True) + "\n").encode())
    # the page again with the run's date and wall time: what ``text-report`` rebuilds from stats.json
    storage.write_bytes_atomic(storage.join(output, REPORT_FILE), build_report(output, stats, config))
    return {"stats": stats, "seconds": stage_seconds(result, NAMESPACE), "wall_s": round(wall, 3), "files": len(files),
            **run_metrics(result)}


def summary(result: dict, output: str) -> str:
    """The console summary of a finished run: counts, time per stage, outputs."""
    stats = result["stats"]
    docs, lines = stats["documents"], stats["lines"]
    rows = [("documents in", docs["in"], ""), ("  kept", docs["kept"], ""),
            ("  filtered", sum(docs["filtered"].values()), breakdown(docs["filtered"])),
            ("  rejected", sum(docs["rejected"].values()), breakdown(docs["rejected"])),
            ("lines in", lines["in"], ""), ("  kept", lines["kept"], ""),
            ("  removed", sum(lines["removed"].values()),
             breakdown({k: v for k, v in lines["removed"].items() if not k.startswith("filtered_document:")})
             + " + lines of filtered documents")]
    seconds = sorted(result["seconds"].items(), key=lambda kv: -kv[1])
    parts = [table(rows), "",
             f"  {result['files']:,} files in {result['wall_s']:.1f} s wall; stage seconds (all workers): "
             + ", ".join(f"{k} {v:.2f}" for k, v in seconds if v),
             f"  output: {storage.join(output, DOCUMENTS_DIR)}/ ({stats['output']['shards']} shards), "
             f"{STATS_FILE}, {REJECTS_DIR}/, report.html"]
    return "\n".join(parts)


def log_rejects(output: str, total: int) -> None:
    """Each reject once: the first few, then the count and the file that lists them all."""
    if not total:
        return
    folder = storage.join(output, REJECTS_DIR)
    shown = [f"rejected {r['source']}@{r['record_offset']}: {r['reason']} ({r['message'][:120]})"
             for r in first_rejects(folder, 5)]
    for line in rejects_summary(shown, total, f"{folder}/"):
        LOG.warning(line)


def main(argv: list[str] | None = None) -> int:
    parser = command_parser(
        __name__, "Helium text job: WET/JSONL -> exact line dedup -> fuzzy dedup -> LID -> quality -> min length -> "
                  "MinHash -> Parquet (+ stats.json, rejects/, report.html).",
        config="text_corpus", beam=True)
    parser.add_argument("--input", help="WET or JSONL (.jsonl[.gz|.zst], .json.gz) glob (quoted), comma list, list "
                                        "file, or CC wet.paths.gz; local/s3/gs/https (default: ../shared/data/wet WET + "
                                        "JSONL samples, else the first WET of a recent crawl)")
    parser.add_argument("--output", required=True, help="output folder (local, s3://, gs://)")
    parser.add_argument("--limit", type=int, help="use only the first N input files")
    parser.add_argument("--dataflow-config", "--dataflow_config", dest="dataflow_config", default="dataflow",
                        help="Dataflow settings (with --runner=DataflowRunner)")
    return run_command(parser, argv, _main)


def _main(args) -> int:
    result = run(args.input, args.output, args.config, args.limit, args.set, args.beam_args, args.dataflow_config)
    stats = result["stats"]
    docs = stats["documents"]
    print(summary(result, args.output))
    rejected = sum(docs["rejected"].values())
    log_rejects(args.output, rejected)
    if docs["in"] == rejected:
        raise RunFailed(f"no document could be read from {result['files']} input file(s): "
                        f"{breakdown(docs['rejected']) or 'they hold none'} (see {args.output}/{REJECTS_DIR}/)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
