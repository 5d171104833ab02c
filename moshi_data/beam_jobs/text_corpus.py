"""Text corpus job (Helium recipe): Common Crawl WET or JSONL document shards -> exact line dedup ->
stages -> Parquet.

    python -m moshi_data.beam_jobs.text_corpus --input 'wet/*.warc.wet.gz' --output out/text-corpus [--limit N]
        [--config text_corpus] [--set language.threshold=0.8] [any Beam option, e.g. --runner=...]

Steps: read WET files into chunks of documents (+ rejects) -> exact line dedup as a shuffle join:
each chunk's normalized line hashes (uint64 arrays) travel to their (shard group, hash partition)
key, the key counts them and sends each chunk the totals of its repeated lines, joined back to the
chunk by chunk id (CoGroupByKey) -> remove duplicate lines -> per-document stage chain ->
cross-document transforms -> one Parquet shard per chunk, rejects/rejects-<file>.jsonl per input
file with rejects, stale files of an earlier run deleted -> line_samples/, report, stats.json
(written last). No side input grows with the documents or lines: tallies are summed by a
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

import argparse
import functools
import json
import logging
import os
import sys
import time
from collections import Counter
from typing import Callable, Iterator

import apache_beam as beam
from apache_beam.metrics import Metrics
from apache_beam.metrics.metric import MetricsFilter

from moshi_data.beam_jobs import minhash
from moshi_data.beam_jobs.options import build_pipeline_options, prepare_workers
from moshi_data.classifiers.models import attach_classifiers
from moshi_data.pipeline import storage
from moshi_data.pipeline.config import REPO_ROOT, load_config
from moshi_data.pipeline.text import line_dedup
from moshi_data.pipeline.text.accounting import check_invariant, to_stats
from moshi_data.pipeline.text.chunk import ChunkProcessor, DocChunk, chunk_line_counts, hash_documents
from moshi_data.pipeline.text.document import Reject
from moshi_data.pipeline.text.jsonl import JsonlFormat, read_jsonl
from moshi_data.pipeline.text.output import documents_schema, documents_table, parquet_bytes
from moshi_data.pipeline.text.report import build_report
from moshi_data.pipeline.text.stages import EXACT_DEDUP, build_stages
from moshi_data.pipeline.text.wet import FileReport, WetLimits, read_wet

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


def _timer(stage: str):
    return Metrics.counter(NAMESPACE, f"ms_{stage}")


class ReadInputChunks(beam.DoFn):
    """File spec (index, path, group) -> DocChunks (main), 'rejects', 'counts', 'files'.

    Files with a ``jsonl.extensions`` ending are read as JSONL document shards, others as WET."""

    def __init__(self, config: dict):
        self.limits = WetLimits.from_config(config["wet"])
        self.jsonl = JsonlFormat.from_config(config["jsonl"])
        self.docs_per_chunk = int(config["input"]["docs_per_chunk"])
        self.partitions = int(config["line_dedup"]["partitions"])

    def process(self, spec: tuple[int, str, str]) -> Iterator:
        file_index, path, group = spec
        report = FileReport(path, file_index)
        try:
            raw = storage.open_read(path)
        except Exception as exc:  # noqa: BLE001 - any failure to open is a reject, not a crash
            reason = "missing_file" if isinstance(exc, FileNotFoundError) or not _exists(path) else "unreadable_file"
            logging.warning("cannot open %s: %s", path, exc)
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
                        logging.warning("rejected %s@%d: %s (%s)", path, item.record_offset, item.reason, item.message)
                        yield beam.pvalue.TaggedOutput("rejects", item)
                        continue
                    docs.append(item)
                    if len(docs) == self.docs_per_chunk:
                        yield from self._chunk(docs, file_index, chunk_index, group, path, start)
                        docs, chunk_index, start = [], chunk_index + 1, time.perf_counter()
            except OSError as exc:  # network / object store failure in the middle of a file
                report.rejects += 1
                yield beam.pvalue.TaggedOutput("rejects", Reject(path, file_index, -1, "unreadable_file", str(exc)[:300]))
        if docs:
            yield from self._chunk(docs, file_index, chunk_index, group, path, start)
        yield beam.pvalue.TaggedOutput("files", report)

    def _chunk(self, docs, file_index, chunk_index, group, path, start) -> Iterator:
        _timer("read").inc(int((time.perf_counter() - start) * 1000))
        start = time.perf_counter()
        chunk = DocChunk(file_index, chunk_index, group, path, docs)
        chunk.tally["documents.in"] += len(docs)
        hash_documents(docs)
        for partition, counts in chunk_line_counts(chunk, self.partitions).items():
            Metrics.counter(NAMESPACE, "shuffle_bytes_line_counts").inc(counts.nbytes)
            yield beam.pvalue.TaggedOutput("counts", ((group, partition), (chunk.chunk_id, counts)))
        _timer("normalize_hash").inc(int((time.perf_counter() - start) * 1000))
        yield chunk


def _exists(path: str) -> bool:
    try:
        return storage.exists(path)
    except Exception:  # noqa: BLE001
        return False


def count_partition(item) -> Iterator:
    """((group, partition), [(chunk id, chunk counts)]) -> (chunk id, group totals of the chunk's
    repeated lines) for every chunk that has one, and the partition's size as a 'summary'.

    Memory: this key's share of the group's unique lines (``line_dedup.partitions`` sets it)."""
    _, parts = item
    parts = list(parts)
    merged = line_dedup.merge_counts([counts for _, counts in parts])
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
    """Exact line dedup as a shuffle join: chunks + their per-partition line counts ->
    (chunk, that chunk's repeated-line table) and a summary of the partitions (``summary``)."""

    def expand(self, inputs):
        chunks, counts = inputs
        counted = (counts
                   | "GroupByPartition" >> beam.GroupByKey()
                   | "CountPartition" >> beam.FlatMap(count_partition).with_outputs("summary", main="answers"))
        keyed = chunks | "KeyByChunk" >> beam.Map(lambda chunk: (chunk.chunk_id, chunk))
        joined = ({"chunk": keyed, "repeated": counted.answers}
                  | "JoinByChunk" >> beam.CoGroupByKey()
                  | "ChunkTable" >> beam.MapTuple(
                      lambda _, grouped: (grouped["chunk"][0], line_dedup.merge_counts(list(grouped["repeated"])))))
        summary = counted.summary | "SumPartitions" >> beam.CombineGlobally(CombineDedupSummaries())
        return {"chunks": joined, "summary": summary}


class ProcessChunks(beam.DoFn):
    """Exact line dedup with the chunk's repeated-line table, then the stage chain (models load in setup)."""

    def __init__(self, config: dict):
        self.processor = ChunkProcessor(config)

    def setup(self):
        self.processor.setup()

    def process(self, item: tuple[DocChunk, line_dedup.LineCounts]) -> Iterator:
        chunk, table = item
        seconds: Counter = Counter()
        chunk, samples = self.processor.process(chunk, table, seconds)
        for stage, spent in seconds.items():
            _timer(stage).inc(int(spent * 1000))
        Metrics.counter(NAMESPACE, "documents_processed").inc(chunk.tally["documents.in"])
        if samples:
            yield beam.pvalue.TaggedOutput("samples", samples)
        yield chunk


class SampleLines(beam.CombineFn):
    """Per-chunk lists of sampled lines -> [(duplicate, rows with the smallest hashes)]."""

    def __init__(self, max_per_class: int):
        self.max_per_class = max_per_class

    def create_accumulator(self):
        return {}

    def add_input(self, accumulator, samples):
        return line_dedup.smallest_samples(line_dedup.add_samples(accumulator, samples), self.max_per_class)

    def merge_accumulators(self, accumulators):
        merged: dict = {}
        for accumulator in accumulators:
            for rows in accumulator.values():
                line_dedup.add_samples(merged, rows.values())
        return line_dedup.smallest_samples(merged, self.max_per_class)

    def extract_output(self, accumulator):
        return [(cls, sorted(rows.values())) for cls, rows in sorted(accumulator.items())]


class WriteShards(beam.DoFn):
    """Writes each chunk's kept documents to documents/<shard>.parquet (atomic), yields its tally."""

    def __init__(self, config: dict, output: str):
        self.output = output
        self.out_cfg = config["output"]
        self.schema = documents_schema(build_stages(config), cross_document_columns(config))

    def process(self, chunk: DocChunk) -> Iterator:
        start = time.perf_counter()
        table = documents_table(chunk.docs, self.schema)
        data = parquet_bytes(table, self.out_cfg["compression"], int(self.out_cfg["compression_level"]),
                             int(self.out_cfg["row_group_rows"]))
        storage.write_bytes_atomic(storage.join(self.output, DOCUMENTS_DIR, chunk.shard_name), data)
        tally = Counter(chunk.tally)
        tally["documents.kept"] += len(chunk.docs)
        tally["lines.kept"] += sum(len(doc.lines) for doc in chunk.docs)
        tally["output.bytes"] += len(data)
        tally["output.shards"] += 1
        _timer("write").inc(int((time.perf_counter() - start) * 1000))
        for example in chunk.dropped:  # kept examples: the report reads the first rows of the shards
            yield beam.pvalue.TaggedOutput("examples", (example["kind"], (example["doc_key"], example)))
        yield chunk.shard_name, dict(tally)


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


class SumTallies(beam.CombineFn):
    """Flat tallies -> their sum (keys are reasons, stages and histogram buckets: bounded)."""

    def create_accumulator(self):
        return Counter()

    def add_input(self, accumulator, tally):
        accumulator.update(tally)
        return accumulator

    def merge_accumulators(self, accumulators):
        merged: Counter = Counter()
        for accumulator in accumulators:
            merged.update(accumulator)
        return merged

    def extract_output(self, accumulator):
        return dict(accumulator)


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


class ListFolder(beam.DoFn):
    """Folder -> ((folder, name), None) for the files in it (temporaries of a killed run included);
    runs after ``written_count`` is known, i.e. after every write of this run."""

    def __init__(self, output: str):
        self.output = output

    def process(self, folder: str, written_count: int) -> Iterator:
        for path in storage.list_folder(storage.join(self.output, folder)):
            yield (folder, path.rstrip("/").rsplit("/", 1)[-1]), None


class RemoveStale(beam.PTransform):
    """Deletes the files of an earlier run in documents/ and rejects/ that this run did not write
    (a join of the listing with the written names by name: no list of names on one worker)."""

    def __init__(self, output: str):
        super().__init__()
        self.output = output

    def expand(self, written):
        count = written | "CountWritten" >> beam.combiners.Count.Globally()
        listed = (written.pipeline
                  | "Folders" >> beam.Create([DOCUMENTS_DIR, REJECTS_DIR])
                  | "List" >> beam.ParDo(ListFolder(self.output), beam.pvalue.AsSingleton(count)))
        keyed = written | "KeyWritten" >> beam.Map(lambda folder_name: (folder_name, None))
        return ({"written": keyed, "listed": listed}
                | "JoinNames" >> beam.CoGroupByKey()
                | "Delete" >> beam.FlatMap(self._delete_stale)
                | "CountDeleted" >> beam.combiners.Count.Globally())

    def _delete_stale(self, item) -> Iterator:
        (folder, name), grouped = item
        if grouped["listed"] and not grouped["written"]:
            storage.delete([storage.join(self.output, folder, name)])
            yield name


class Finalize(beam.DoFn):
    """Runs once after all shards, rejects and stale-file deletions: line_samples/, examples/,
    report, stats.json (written last). Every input is bounded (sums, samples, a few examples)."""

    def __init__(self, config: dict, output: str, n_files: int, n_groups: int):
        self.config, self.output, self.n_files, self.n_groups = config, output, n_files, n_groups

    def process(self, _, tally, dedup_summary, stage_summaries, samples, examples, stale_removed) -> Iterator:
        tally = Counter(tally)
        tally["files.in"] = self.n_files
        tally.setdefault("output.shards", 0)
        for key in CombineDedupSummaries.SUMMED:
            tally[f"line_dedup.{key}"] += dedup_summary[key]
        stats = to_stats(tally)
        unique = stats.get("line_dedup", {}).get("unique_line_hashes", 0)
        stats.setdefault("line_dedup", {}).update({
            "groups": self.n_groups,
            "partitions": int(self.config["line_dedup"]["partitions"]),
            "max_partition_bytes": dedup_summary["max_partition_bytes"],
            "threshold": self.config["line_dedup"]["threshold"],
            "keep_canonical": self.config["line_dedup"]["keep_canonical"],
            "bytes_per_unique_line": line_dedup.BYTES_PER_UNIQUE_LINE,
            "bytes_per_unique_line_measured": round(stats["line_dedup"].get("table_bytes", 0) / unique, 3) if unique else None,
        })
        stats.update(stage_summaries)
        stats["stages"] = ["in", EXACT_DEDUP, *self.config["stages"], *self.config["cross_document_stages"]]
        check_invariant(stats)

        sample_rows = []
        for duplicate, rows in sorted(samples, key=lambda item: not item[0]):
            sample_rows += [{"text": text, "count": count, "duplicate": duplicate} for _, text, count, _ in sorted(rows)]
        self._write_jsonl(SAMPLES_DIR, SAMPLES_FILE, sample_rows)
        examples = {kind: [example for _, example in sorted(rows)] for kind, rows in sorted(examples)}
        dropped = [example for kind, rows in examples.items() if kind != "kept" for example in rows]
        self._write_jsonl(EXAMPLES_DIR, DROPPED_FILE, dropped)
        storage.write_bytes_atomic(storage.join(self.output, REPORT_FILE), build_report(self.output, stats, self.config))
        storage.write_bytes_atomic(storage.join(self.output, STATS_FILE),
                                   (json.dumps(stats, indent=2, sort_keys=True) + "\n").encode())
        storage.remove_temporaries(self.output)
        yield stats

    def _write_jsonl(self, folder: str, name: str, rows: list[dict]) -> None:
        data = "".join(json.dumps(row, ensure_ascii=False, sort_keys=True) + "\n" for row in rows)
        storage.write_bytes_atomic(storage.join(self.output, folder, name), data.encode("utf-8"))
        storage.remove_stale(storage.join(self.output, folder), [name])


def build_pipeline(pipeline: beam.Pipeline, files: list[str], config: dict, output: str) -> beam.PCollection:
    """Add the job's transforms to ``pipeline``; returns the PCollection holding the stats dict."""
    config = attach_classifiers(config, log=logging.info)
    groups = line_dedup.dedup_groups(files, int(config["input"]["files_per_group"]))
    specs = list(zip(range(len(files)), files, groups))
    read = (pipeline
            | "FileList" >> beam.Create(specs)
            | "SpreadFiles" >> beam.Reshuffle()
            | "ReadInput" >> beam.ParDo(ReadInputChunks(config)).with_outputs("rejects", "counts", "files", main="chunks"))
    dedup = (read.chunks, read.counts) | "CountLines" >> JoinRepeatedLines()
    processed = dedup["chunks"] | "Dedup+Stages" >> beam.ParDo(ProcessChunks(config)).with_outputs("samples", main="chunks")
    chunks, stage_summaries = processed.chunks, []
    for name in config["cross_document_stages"]:
        chunks, summary = CROSS_DOCUMENT_STAGES[name][0](chunks, config)
        stage_summaries.append(summary | f"{name}Summary" >> beam.Map(lambda value, name=name: (name, value)))
    stage_summaries = tuple(stage_summaries) | "StageSummaries" >> beam.Flatten(pipeline=pipeline)
    written = chunks | "WriteParquet" >> beam.ParDo(WriteShards(config, output)).with_outputs("examples", main="shards")
    examples = written.examples | "FirstExamples" >> beam.combiners.Top.SmallestPerKey(
        int(config["report"]["examples_per_reason"]), key=lambda item: item[0])
    samples = processed.samples | "LineSamples" >> beam.CombineGlobally(
        SampleLines(int(config["line_samples"]["max_per_class"])))
    reject_files = (read.rejects
                    | "KeyRejectsByFile" >> beam.Map(lambda reject: (reject.file_index, reject))
                    | "GroupRejects" >> beam.GroupByKey()
                    | "WriteRejects" >> beam.ParDo(WriteRejects(output)))
    shard_files = written.shards | "ShardNames" >> beam.MapTuple(lambda name, _: (DOCUMENTS_DIR, name))
    stale_removed = (shard_files, reject_files) | "WrittenFiles" >> beam.Flatten() | "RemoveStale" >> RemoveStale(output)
    tallies = (written.shards | "ShardTallies" >> beam.Values(),
               read.files | "FileTallies" >> beam.Map(file_tally),
               read.rejects | "RejectTallies" >> beam.Map(reject_tally))
    tally = tallies | "AllTallies" >> beam.Flatten() | "SumTallies" >> beam.CombineGlobally(SumTallies())
    return (pipeline
            | "Once" >> beam.Create([None])
            | "Finalize" >> beam.ParDo(
                Finalize(config, output, len(files), len(set(groups))),
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


def stage_seconds(result) -> dict[str, float]:
    """Seconds per stage from the job's Beam counters (summed over workers)."""
    counters = result.metrics().query(MetricsFilter().with_namespace(NAMESPACE))["counters"]
    return {c.key.metric.name[3:]: round(c.committed / 1000, 3)
            for c in counters if c.key.metric.name.startswith("ms_") and c.committed is not None}


def run_metrics(result) -> dict:
    """Counters (not timers) and distribution maxima of the job and of the MinHash components."""
    metrics = result.metrics().query(MetricsFilter())
    counters: Counter = Counter()
    for counter in metrics["counters"]:  # one per step: summed
        name = counter.key.metric.name
        if counter.key.metric.namespace in (NAMESPACE, "minhash") and not name.startswith("ms_") and counter.committed:
            counters[name] += counter.committed
    maxima: dict = {}
    for distribution in metrics["distributions"]:
        if distribution.committed is not None and distribution.committed.count:
            name = distribution.key.metric.name
            maxima[name] = max(maxima.get(name, 0), distribution.committed.max)
    return {"counters": dict(counters), "key_sizes": maxima}


def run(input_spec: str | None, output: str, config_name: str = "text_corpus", limit: int | None = None,
        overrides: list[str] = (), beam_args: list[str] = (), dataflow_config: str = "dataflow") -> dict:
    """Run the job; returns {"stats": stats.json content, "seconds": per stage, "wall_s": ...}."""
    config = load_config(config_name, overrides)
    options, extra_overrides = build_pipeline_options(list(beam_args), config["runner"], dataflow_config)
    if extra_overrides:
        config = load_config(config_name, [*extra_overrides, *overrides])
    config = attach_classifiers(config, log=logging.info)
    storage.configure(options)
    config = prepare_workers(options, config, MODEL_KEYS, output, log=logging.info)
    if input_spec is None:
        input_spec, default_limit = default_input(config)
        limit = limit if limit is not None else default_limit
    files = storage.expand_inputs(input_spec, limit)
    if not files:
        raise SystemExit(f"no input files in {input_spec!r}")
    build_stages(config)  # fail fast on a bad stage list, before starting workers
    logging.info("text corpus: %d input files -> %s", len(files), output)
    start = time.perf_counter()
    storage.retire_completion_marker(storage.join(output, STATS_FILE), log=logging.info)
    pipeline = beam.Pipeline(options=options)
    build_pipeline(pipeline, files, config, output)
    result = pipeline.run()
    result.wait_until_finish()
    wall = time.perf_counter() - start
    stats = json.loads(storage.read_bytes(storage.join(output, STATS_FILE)))
    return {"stats": stats, "seconds": stage_seconds(result), "wall_s": round(wall, 3), "files": len(files),
            **run_metrics(result)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Helium text job: WET -> exact line dedup -> fuzzy dedup -> LID -> quality -> min length -> "
                    "MinHash -> Parquet (+ stats.json, report.html). "
                    "Unknown options are passed to Beam (e.g. --runner=DataflowRunner, --s3_endpoint_url=...).")
    parser.add_argument("--input", help="WET or JSONL (.jsonl[.gz|.zst], .json.gz) glob, comma list, list file, "
                                        "or CC wet.paths.gz; local/s3/gs/https (default: ../shared/data/wet WET + "
                                        "JSONL samples, else the first WET of a recent crawl)")
    parser.add_argument("--output", required=True, help="output folder (local, s3://, gs://)")
    parser.add_argument("--config", default="text_corpus", help="config name under configs/ or a YAML path")
    parser.add_argument("--limit", type=int, help="use only the first N input files")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override")
    parser.add_argument("--dataflow_config", default="dataflow", help="Dataflow settings (with --runner=DataflowRunner)")
    args, beam_args = parser.parse_known_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    result = run(args.input, args.output, args.config, args.limit, args.set, beam_args, args.dataflow_config)
    stats = result["stats"]
    docs, lines = stats["documents"], stats["lines"]
    print(f"documents: in {docs['in']}  kept {docs['kept']}  filtered {docs['filtered']}  rejected {docs['rejected']}")
    print(f"lines: in {lines['in']}  kept {lines['kept']}  removed {lines['removed']}")
    print(f"seconds per stage (summed over workers): {result['seconds']}  wall {result['wall_s']} s")
    print(f"output: {os.path.join(args.output, DOCUMENTS_DIR)}/ ({stats['output']['shards']} shards), "
          f"{args.output}/{STATS_FILE}, {args.output}/{REJECTS_DIR}/, {args.output}/report.html")
    return 0


if __name__ == "__main__":
    sys.exit(main())
