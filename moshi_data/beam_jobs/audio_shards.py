"""Beam job (`make audio-shards`): recordings -> diarized, word-timestamped two-stream WebDataset shards.

Wiring only; the stages live in ``pipeline/audio`` (:class:`pipeline.audio.recording.RecordingProcessor`).

    python -m moshi_data.beam_jobs.audio_shards --input DIR|GLOB|manifest.jsonl --output DIR [--config audio_shards]
        [--set key=value ...] [beam runner args, e.g. --direct_running_mode=multi_processing --direct_num_workers=2]

Writes ``OUTPUT/shards/shard-%06d.tar``, ``OUTPUT/annotations/<id>.rttm`` and ``<id>.words.json``,
``OUTPUT/rejects/part-%06d.jsonl``, ``OUTPUT/stats.json`` and (from the launcher) ``OUTPUT/report.html``.
Same input and config give byte-identical outputs whatever the runner's worker count; every file is
written atomically and files a killed or earlier run left behind are removed before stats.json is
written. Scale: samples are grouped for writing into buckets of about one shard's worth (the bucket
count comes from the run's total sample bytes), reject lines into parts of at most
``shards.rejects_recordings_per_part`` recordings, and the stats and report are sums of fixed-size
per-recording tallies (a CombineFn): no step holds state that grows with the number of recordings.
"""
from __future__ import annotations

import json
import logging
import os
import sys
import threading
import time
from datetime import datetime, timezone
from typing import Any, Iterator, Mapping

import apache_beam as beam
from apache_beam.metrics import Metrics
from apache_beam.options.pipeline_options import PipelineOptions

os.environ.setdefault("PYANNOTE_METRICS_ENABLED", "0")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from moshi_data.beam_jobs.options import check_paths_reach_workers, prepare_workers, runner_name, with_dataflow  # noqa: E402
from moshi_data.beam_jobs.progress import mark, progress_bar  # noqa: E402
from moshi_data.beam_jobs.run_results import first_rejects, stage_seconds  # noqa: E402
from moshi_data.beam_jobs.stage_timer import StageTimer  # noqa: E402
from moshi_data.beam_jobs.stale_files import RemoveStale  # noqa: E402
from moshi_data.beam_jobs.tallies import SumTallies  # noqa: E402
from moshi_data.classifiers.tokenizer import model_path, train_tokenizer  # noqa: E402
from moshi_data.pipeline import storage  # noqa: E402
from moshi_data.pipeline.audio.decode import AudioSource, list_sources  # noqa: E402
from moshi_data.pipeline.audio.outputs import (ANNOTATIONS_DIR, REJECTS_DIR, SHARDS_DIR, STATS_FILE,  # noqa: E402
                                               annotation_files, bucket_of, build_stats, listing_reject_tally,
                                               record_bytes, recording_tally, reject_parts, rejects_jsonl,
                                               rejects_part_name, shard_buckets, write_bucket)
from moshi_data.pipeline.audio.recording import RecordingProcessor, resolve_repo_path  # noqa: E402
from moshi_data.pipeline.audio.report import recording_report, write_run_report  # noqa: E402
from moshi_data.pipeline.command import (RunFailed, UserError, breakdown, command_parser, exit_status,  # noqa: E402
                                         rejects_summary, run_command, run_provenance, table)
from moshi_data.pipeline.config import REPO_ROOT, apply_overrides  # noqa: E402
from moshi_data.pipeline.models import configured_names, localize_models  # noqa: E402

LOG = logging.getLogger("moshi_data.audio_shards")
NAMESPACE = "audio_shards"
DEFAULT_INPUT = REPO_ROOT.parent / "shared" / "data" / "diarization"
LEGACY_REJECTS_FILE = "rejects.jsonl"  # one file before rejects/ had parts: removed from an output folder reused
# Config keys that may name a model file or folder: staged to object storage for remote workers
# (beam_jobs/options.py) and fetched into the worker's model cache in setup().
MODEL_KEYS = ("text.tokenizer", "asr.model", "align.wav2vec2_model", "diarization.pipeline",
              "diarization.segmentation_model", "diarization.embedding_model", "codes.codec.weights")
DATAFLOW_CONFIG = "dataflow_audio"  # GPU worker settings used with --runner=DataflowRunner
# Config sections the processor never reads: runs that differ only there share its loaded models.
OUTPUT_SECTIONS = ("shards", "stale_files", "report", "export", "runner")


_PROCESSORS: dict[str, tuple[RecordingProcessor, threading.Lock]] = {}
_PROCESSORS_LOCK = threading.Lock()


def shared_processor(config: Mapping[str, Any],
                     model_names: Mapping[str, str] | None = None) -> tuple[RecordingProcessor, threading.Lock]:
    """The set-up processor of ``config`` (and ``model_names``: RecordingProcessor) in this process, and
    the lock its calls hold.

    One per process (not per thread), so an SDK worker process running many harness threads loads the
    models (tens of seconds, GBs) once; a thread that asks while another loads waits for that load.
    Calls are serialized by the lock: the aligner and the timing counters are not thread-safe, and
    each call already runs the models on ``cpu_threads`` threads.
    """
    model_names = dict(model_names or {})
    key = json.dumps([{k: v for k, v in config.items() if k not in OUTPUT_SECTIONS}, model_names], sort_keys=True,
                     default=str)
    with _PROCESSORS_LOCK:
        if key not in _PROCESSORS:
            processor = RecordingProcessor(config, model_names)
            processor.setup()
            _PROCESSORS[key] = (processor, threading.Lock())
        return _PROCESSORS[key]


class ProcessRecording(beam.DoFn):
    """Runs every stage on one recording; models load once per worker process in setup().

    Main output: the recording's fixed-size tally (pipeline/audio/outputs.py); tagged outputs: its
    samples (recording id, (key, record)), annotation files and (reject part, line) reject lines."""

    RECORDS = "records"
    ANNOTATIONS = "annotations"
    REJECTS = "rejects"

    def __init__(self, config: Mapping[str, Any], rejects_parts: int, configured: Mapping[str, Any]):
        self.config = dict(config)  # model keys name staged URLs on a remote runner
        self.configured = configured  # the launcher's config: models named as the user gave them
        self.rejects_parts = rejects_parts
        self.processor: RecordingProcessor | None = None
        self.lock: threading.Lock | None = None
        self.outcomes = {name: Metrics.counter(NAMESPACE, f"recordings_{name}") for name in ("kept", "filtered", "rejected")}
        self.segments_kept = Metrics.counter(NAMESPACE, "segments_kept")
        self.timer = StageTimer(NAMESPACE)

    def setup(self) -> None:
        local = localize_models(self.config, MODEL_KEYS)
        self.processor, self.lock = shared_processor(local, configured_names(self.configured, local, MODEL_KEYS))

    def process(self, source: AudioSource) -> Iterator[Any]:
        with self.lock:
            before = dict(self.processor.timings)
            result = self.processor.process(source)
            seconds = {stage: spent - before.get(stage, 0.0) for stage, spent in self.processor.timings.items()}
        self.timer.add_all(seconds)
        LOG.info("%s: %s%s, %d segments kept", source.recording_id, result.outcome,
                 f" ({result.reason})" if result.reason else "", result.counters["segments_kept"])
        self.outcomes[result.outcome].inc()
        self.segments_kept.inc(result.counters["segments_kept"])
        counters = dict(result.counters)
        counters["sample_bytes"] = 0
        for key, record in result.records:
            counters["sample_bytes"] += record_bytes(record)
            yield beam.pvalue.TaggedOutput(self.RECORDS, (result.recording_id, (key, record)))
        annotations = annotation_files(result.recording_id, result.rttm, result.words_json)
        for path, payload in annotations:
            yield beam.pvalue.TaggedOutput(self.ANNOTATIONS, (path, payload))
        part = bucket_of(result.recording_id, self.rejects_parts)
        for line in result.rejects:
            yield beam.pvalue.TaggedOutput(self.REJECTS, (part, line))
        yield recording_tally(result.recording_id, result.outcome, result.reason, counters, bool(annotations),
                              recording_report(result, self.config))


def _write_file(item: tuple[str, bytes], output: str) -> tuple[str, str]:
    path, payload = item
    storage.write_bytes_atomic(storage.join(output, path), payload)
    folder, name = path.split("/", 1)
    return folder, name


def _write_rejects(part: int, lines, output: str) -> dict:
    """One part's reject lines (its recordings' and listing rejects) -> rejects/part-%06d.jsonl."""
    payload = rejects_jsonl(lines)
    storage.write_bytes_atomic(storage.join(output, REJECTS_DIR, rejects_part_name(part)), payload)
    return {"name": rejects_part_name(part), "lines": payload.count(b"\n")}


class Finalize(beam.DoFn):
    """Runs once, after every write and stale-file deletion: stats.json from bounded sums."""

    def __init__(self, output: str):
        self.output = output

    def process(self, _, total, outputs, first_shard, buckets, stale_removed) -> Iterator[dict]:
        stats = build_stats(total, outputs, first_shard[0] if first_shard else None, buckets)
        storage.write_bytes_atomic(storage.join(self.output, STATS_FILE),
                                   (json.dumps(stats, indent=1, sort_keys=True) + "\n").encode("utf-8"))
        yield stats


def build_pipeline(pipeline: beam.Pipeline, sources: list[AudioSource], listing_rejects: list[dict], config: Mapping[str, Any],
                   output: str, progress: str | None = None,
                   configured: Mapping[str, Any] | None = None) -> dict[str, beam.PCollection]:
    """Attach the job's transforms to ``pipeline`` (``progress``: the local channel, beam_jobs/progress.py;
    ``configured``: the config as the user gave it, when ``config`` names models staged for remote workers).

    Returns the PCollections tests look at: ``stats`` (one dict), ``shards`` ((name, bytes) per shard),
    ``rejects`` ({name, lines} per reject part) and ``buckets`` (the shard bucket count)."""
    shards_config = config["shards"]
    max_bytes, stride = int(shards_config["max_bytes"]), int(shards_config["bucket_stride"])
    parts = reject_parts(len(sources) + len(listing_rejects), int(shards_config["rejects_recordings_per_part"]))
    results = (
        pipeline
        | "Sources" >> beam.Create(sources)
        | "Spread" >> beam.Reshuffle()
        | "Process" >> beam.ParDo(ProcessRecording(config, parts, configured or config)).with_outputs(
            ProcessRecording.RECORDS, ProcessRecording.ANNOTATIONS, ProcessRecording.REJECTS, main="tallies")
    )
    if progress:
        _ = results.tallies | "Progress" >> beam.Map(lambda tally: mark(tally, progress, recordings=1))
    listing = pipeline | "ListingRejects" >> beam.Create(listing_rejects)
    tallies = ((results.tallies, listing | "ListingTallies" >> beam.Map(listing_reject_tally))
               | "AllTallies" >> beam.Flatten())
    total = tallies | "SumTallies" >> beam.CombineGlobally(SumTallies())

    # shards: buckets of about one shard's worth of samples, each written in key order
    buckets = (results.tallies
               | "SampleBytes" >> beam.Map(lambda tally: tally["counters"].get("sample_bytes", 0))
               | "SumSampleBytes" >> beam.CombineGlobally(sum)
               | "Buckets" >> beam.Map(shard_buckets, max_bytes))
    shards = (results[ProcessRecording.RECORDS]
              | "ToBucket" >> beam.Map(lambda item, n: (bucket_of(item[0], n), item[1]), beam.pvalue.AsSingleton(buckets))
              | "ByBucket" >> beam.GroupByKey()
              | "WriteShards" >> beam.FlatMapTuple(
                  lambda bucket, records: write_bucket(output, bucket, records, max_bytes, stride)))
    annotations = results[ProcessRecording.ANNOTATIONS] | "WriteAnnotations" >> beam.Map(_write_file, output)
    rejects = (
        (results[ProcessRecording.REJECTS],
         listing | "KeyListingRejects" >> beam.Map(lambda r: (bucket_of(str(r.get("id") or r.get("path")), parts), r)))
        | "AllRejects" >> beam.Flatten()
        | "ByRejectPart" >> beam.GroupByKey()
        | "WriteRejects" >> beam.MapTuple(lambda part, lines: _write_rejects(part, lines, output))
    )
    written = ((shards | "ShardFiles" >> beam.MapTuple(lambda name, _: (SHARDS_DIR, name)),
                annotations,
                rejects | "RejectFiles" >> beam.Map(lambda part: (REJECTS_DIR, part["name"])))
               | "WrittenFiles" >> beam.Flatten())
    stale_removed = written | "RemoveStale" >> RemoveStale(output, [SHARDS_DIR, ANNOTATIONS_DIR, REJECTS_DIR],
                                                         config["stale_files"]["listing_ranges"])
    outputs = ((shards | "ShardTallies" >> beam.MapTuple(lambda _, size: {"shards": {"count": 1, "bytes": size}}),
                rejects | "RejectTallies" >> beam.Map(lambda part: {"rejects": {"parts": 1, "lines": part["lines"]}}))
               | "OutputTallies" >> beam.Flatten()
               | "SumOutputs" >> beam.CombineGlobally(SumTallies()))
    first_shard = shards | "ShardNames" >> beam.Keys() | "FirstShard" >> beam.combiners.Top.Smallest(1)
    stats = (pipeline
             | "Once" >> beam.Create([None])
             | "Finalize" >> beam.ParDo(Finalize(output), total=beam.pvalue.AsSingleton(total),
                                        outputs=beam.pvalue.AsSingleton(outputs),
                                        first_shard=beam.pvalue.AsSingleton(first_shard),
                                        buckets=beam.pvalue.AsSingleton(buckets),
                                        stale_removed=beam.pvalue.AsSingleton(stale_removed)))
    return {"stats": stats, "shards": shards, "rejects": rejects, "buckets": buckets}


def ensure_tokenizer(config: Mapping[str, Any]) -> None:
    """Train the offline tokenizer first when the configured one is the project's own and missing."""
    wanted = resolve_repo_path(config["text"]["tokenizer"])
    if wanted.exists():
        return
    if wanted.resolve() != model_path(config).resolve():
        raise FileNotFoundError(f"text.tokenizer {wanted} does not exist")
    LOG.info("training the tokenizer first (%s)", wanted)
    train_tokenizer(config)


def run(input_spec: str, output: str, config: Mapping[str, Any], runner_args: list[str]) -> dict:
    """Run the job; returns the stats written to ``OUTPUT/stats.json``."""
    args, dataflow_overrides = with_dataflow([*config["runner"]["args"], *runner_args], DATAFLOW_CONFIG)
    config = apply_overrides(config, dataflow_overrides)  # e.g. device=cuda on GPU workers
    options = PipelineOptions(args)
    storage.configure(options)  # s3 endpoint/credentials for listing and the final reads in the driver
    sources, listing_rejects = list_sources(input_spec, list(config["ingest"]["extensions"]))
    if not sources:  # before any model loads
        raise UserError(f"no recording in {input_spec}" + (f" ({breakdown(_reasons(listing_rejects))})" if listing_rejects else
                        f" (audio extensions: {', '.join(config['ingest']['extensions'])})"))
    check_paths_reach_workers(options, [source.path for source in sources], output,
                              {"report.references": config["report"]["references"]})
    LOG.info("%d recordings, %d rejected while listing", len(sources), len(listing_rejects))
    ensure_tokenizer(config)  # on the launcher, before its file is staged for remote workers
    configured = config  # provenance and the report name the models as configured, not where this runner staged them
    config = prepare_workers(options, config, MODEL_KEYS, output, log=LOG.info)
    storage.retire_completion_marker(storage.join(output, STATS_FILE), log=LOG.info)
    runner = runner_name(args, {"runner": "DirectRunner"})
    started, start = datetime.now(timezone.utc), time.perf_counter()
    with progress_bar(runner, len(sources), "recordings") as channel:
        pipeline = beam.Pipeline(options=options)
        build_pipeline(pipeline, sources, listing_rejects, config, output, channel, configured)
        result = pipeline.run()
        result.wait_until_finish()
    stats = json.loads(storage.read_bytes(storage.join(output, STATS_FILE)))
    stats["run"] = {**run_provenance(configured, [source.path for source in sources], runner),
                    "started": started.isoformat(timespec="seconds"), "wall_s": round(time.perf_counter() - start, 3)}
    write_run_report(output, stats, configured, stage_seconds(result, NAMESPACE))
    storage.write_bytes_atomic(storage.join(output, STATS_FILE), (json.dumps(stats, indent=1, sort_keys=True) + "\n").encode("utf-8"))
    legacy = storage.join(output, LEGACY_REJECTS_FILE)
    if storage.exists(legacy):
        storage.delete([legacy])
    storage.remove_temporaries(output)
    return stats


def _reasons(rejects: list[dict]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for reject in rejects:
        counts[reject["reason"]] = counts.get(reject["reason"], 0) + 1
    return counts


def summary(stats: Mapping[str, Any], output: str) -> str:
    recordings, segments, hours = stats["recordings"], stats["segments"], stats["audio_hours"]
    rows = [("recordings in", recordings["in"], ""), ("  kept", recordings["kept"], ""),
            ("  filtered", sum(recordings["filtered"].values()), breakdown(recordings["filtered"])),
            ("  rejected", sum(recordings["rejected"].values()), breakdown(recordings["rejected"])),
            ("segments in", segments["in"], ""), ("  kept", segments["kept"], ""),
            ("  filtered", sum(segments["filtered"].values()), breakdown(segments["filtered"])),
            ("audio hours decoded", hours["decoded"], ""), ("  kept", hours["kept"], "")]
    return "\n".join([table(rows), "", f"  output: {storage.join(output, SHARDS_DIR)}/ ({stats['shards']['count']} shards), "
                      f"{STATS_FILE}, {REJECTS_DIR}/, annotations/, report.html"])


def main(argv: list[str] | None = None) -> int:
    parser = command_parser(__name__, __doc__, config="audio_shards", beam=True)
    parser.add_argument("--input", default=str(DEFAULT_INPUT),
                        help="folder, glob (quoted) or JSONL manifest {path, id?, speakers?} (local or s3://); "
                             "default: %(default)s")
    parser.add_argument("--output", required=True, help="output folder (local or s3://)")
    return run_command(parser, argv, _main)


def _main(args) -> int:
    output = args.output.rstrip("/")
    stats = run(args.input, output, args.cfg, args.beam_args)
    print(summary(stats, output))
    recordings = stats["recordings"]
    rejected = sum(recordings["rejected"].values())
    folder = storage.join(output, REJECTS_DIR)
    if rejected:
        shown = [f"rejected {r.get('id') or r.get('path')}: {r['reason']} ({str(r.get('detail', ''))[:120]})"
                 for r in first_rejects(folder, 5)]
        for line in rejects_summary(shown, rejected, f"{folder}/"):
            LOG.warning(line)
    if recordings["in"] == rejected:
        raise RunFailed(f"no recording could be read ({breakdown(recordings['rejected'])}; see {folder}/)")
    return 0


if __name__ == "__main__":
    sys.exit(exit_status(main(sys.argv[1:])))
