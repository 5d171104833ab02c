"""Beam job (`make audio-shards`): recordings -> diarized, word-timestamped two-stream WebDataset shards.

Wiring only; the stages live in ``pipeline/audio`` (:class:`pipeline.audio.recording.RecordingProcessor`).

    python -m moshi_data.beam_jobs.audio_shards --input DIR|GLOB|manifest.jsonl --output DIR [--config audio_shards]
        [--set key=value ...] [beam runner args, e.g. --direct_running_mode=multi_processing --direct_num_workers=2]

Writes ``OUTPUT/shards/shard-%06d.tar``, ``OUTPUT/annotations/<id>.rttm`` and ``<id>.words.json``,
``OUTPUT/stats.json`` and ``OUTPUT/rejects.jsonl``. Same input and config give byte-identical
outputs whatever the runner's worker count; every file is written atomically and files a killed or
earlier run left behind are removed at the end.
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

from moshi_data.beam_jobs.options import prepare_workers, runner_name, with_dataflow  # noqa: E402
from moshi_data.beam_jobs.progress import mark, progress_bar  # noqa: E402
from moshi_data.classifiers.tokenizer import model_path, train_tokenizer  # noqa: E402
from moshi_data.pipeline.audio.decode import AudioSource, list_sources  # noqa: E402
from moshi_data.pipeline.audio.outputs import (REJECTS_FILE, STATS_FILE, annotation_files, bucket_of, build_stats,  # noqa: E402
                                    join, rejects_jsonl, stale_outputs, write_bucket, write_bytes_atomic)
from moshi_data.pipeline.audio.recording import RecordingProcessor, resolve_repo_path  # noqa: E402
from moshi_data.pipeline.audio.report import recording_report, write_run_report  # noqa: E402
from moshi_data.pipeline.command import (RunFailed, UserError, breakdown, command_parser, exit_status,  # noqa: E402
                                         rejects_summary, run_command, run_provenance, table)
from moshi_data.pipeline.config import REPO_ROOT, apply_overrides  # noqa: E402
from moshi_data.pipeline.models import localize_models  # noqa: E402
from moshi_data.pipeline.storage import retire_completion_marker  # noqa: E402

LOG = logging.getLogger("moshi_data.audio_shards")
DEFAULT_INPUT = REPO_ROOT.parent / "shared" / "data" / "diarization"
# Config keys that may name a model file or folder: staged to object storage for remote workers
# (beam_jobs/options.py) and fetched into the worker's model cache in setup().
MODEL_KEYS = ("text.tokenizer", "asr.model", "align.wav2vec2_model", "diarization.pipeline",
              "diarization.segmentation_model", "diarization.embedding_model", "codes.codec.weights")
DATAFLOW_CONFIG = "dataflow_audio"  # GPU worker settings used with --runner=DataflowRunner


_PROCESSORS: dict[tuple[str, int], RecordingProcessor] = {}
_PROCESSORS_LOCK = threading.Lock()


def shared_processor(config: Mapping[str, Any]) -> RecordingProcessor:
    """A set-up processor per (config, thread), reused across bundles and pipeline runs in a process.

    Loading the models costs tens of seconds; threads never share one processor (the aligner and
    the timing counters are not thread-safe).
    """
    key = (json.dumps(config, sort_keys=True, default=str), threading.get_ident())
    with _PROCESSORS_LOCK:
        processor = _PROCESSORS.get(key)
    if processor is None:
        processor = RecordingProcessor(config)
        processor.setup()
        with _PROCESSORS_LOCK:
            _PROCESSORS[key] = processor
    return processor


class ProcessRecording(beam.DoFn):
    """Runs every stage on one recording; models load once per worker in setup()."""

    RECORDS = "records"
    ANNOTATIONS = "annotations"

    def __init__(self, config: Mapping[str, Any]):
        self.config = dict(config)
        self.processor: RecordingProcessor | None = None
        self.outcomes = {name: Metrics.counter("audio_shards", f"recordings_{name}") for name in ("kept", "filtered", "rejected")}
        self.segments_kept = Metrics.counter("audio_shards", "segments_kept")

    def setup(self) -> None:
        self.processor = shared_processor(localize_models(self.config, MODEL_KEYS))

    def process(self, source: AudioSource) -> Iterator[Any]:
        before = dict(self.processor.timings)
        result = self.processor.process(source)
        seconds = {stage: spent - before.get(stage, 0.0) for stage, spent in self.processor.timings.items()}
        LOG.info("%s: %s%s, %d segments kept", source.recording_id, result.outcome,
                 f" ({result.reason})" if result.reason else "", result.counters["segments_kept"])
        self.outcomes[result.outcome].inc()
        self.segments_kept.inc(result.counters["segments_kept"])
        buckets = int(self.config["shards"]["buckets"])
        for key, record in result.records:
            yield beam.pvalue.TaggedOutput(self.RECORDS, (bucket_of(result.recording_id, buckets), (key, record)))
        for path, payload in annotation_files(result.recording_id, result.rttm, result.words_json):
            yield beam.pvalue.TaggedOutput(self.ANNOTATIONS, (path, payload))
        yield {"id": result.recording_id, "outcome": result.outcome, "reason": result.reason,
               "counters": dict(result.counters), "rejects": result.rejects,
               "report": recording_report(result, seconds, self.config)}


def _write_file(item: tuple[str, bytes], output: str) -> str:
    path, payload = item
    write_bytes_atomic(join(output, path), payload)
    return path


def _write_summary(summaries: list[dict], shards: list[list[str]], output: str, listing_rejects: list[dict],
                   config: Mapping[str, Any], _annotations_written: int) -> dict:
    shard_names = sorted(name for names in shards for name in names)
    stats = build_stats(sorted(summaries, key=lambda s: s["id"]), listing_rejects, shard_names)
    stats["recording_ids"] = sorted(s["id"] for s in summaries if s["outcome"] != "rejected")
    lines = list(listing_rejects) + [line for s in summaries for line in s["rejects"]]
    write_bytes_atomic(join(output, REJECTS_FILE), rejects_jsonl(lines))
    write_bytes_atomic(join(output, STATS_FILE), (json.dumps(stats, indent=1, sort_keys=True) + "\n").encode("utf-8"))
    write_run_report(output, stats, [s["report"] for s in summaries], config)
    return stats


def build_pipeline(pipeline: beam.Pipeline, sources: list[AudioSource], listing_rejects: list[dict], config: Mapping[str, Any],
                   output: str, progress: str | None = None) -> None:
    """Attach the job's transforms to ``pipeline`` (``progress``: the local channel, beam_jobs/progress.py)."""
    shards_config = config["shards"]
    results = (
        pipeline
        | "Sources" >> beam.Create(sources)
        | "Spread" >> beam.Reshuffle()
        | "Process" >> beam.ParDo(ProcessRecording(config)).with_outputs(
            ProcessRecording.RECORDS, ProcessRecording.ANNOTATIONS, main="summaries")
    )
    shard_names = (
        results[ProcessRecording.RECORDS]
        | "ByBucket" >> beam.GroupByKey()
        | "WriteShards" >> beam.MapTuple(lambda bucket, records: write_bucket(
            output, bucket, records, int(shards_config["max_bytes"]), int(shards_config["bucket_stride"])))
    )
    annotations_written = (results[ProcessRecording.ANNOTATIONS] | "WriteAnnotations" >> beam.Map(_write_file, output)
                           | "CountAnnotations" >> beam.combiners.Count.Globally())
    if progress:
        _ = results.summaries | "Progress" >> beam.Map(lambda summary: mark(summary, progress, recordings=1))
    _ = (
        results.summaries
        | "AllSummaries" >> beam.combiners.ToList()
        | "WriteStats" >> beam.Map(_write_summary, beam.pvalue.AsList(shard_names), output, listing_rejects, config,
                                   beam.pvalue.AsSingleton(annotations_written))
    )


def ensure_tokenizer(config: Mapping[str, Any]) -> None:
    """Train the offline tokenizer first when the configured one is the project's own and missing."""
    wanted = resolve_repo_path(config["text"]["tokenizer"])
    if wanted.exists():
        return
    if wanted.resolve() != model_path(config).resolve():
        raise FileNotFoundError(f"text.tokenizer {wanted} does not exist")
    LOG.info("training the tokenizer first (%s)", wanted)
    train_tokenizer(config)


def remove_stale(output: str, stats: Mapping[str, Any]) -> list[str]:
    """Delete outputs this run did not produce (partial files of a killed run, shards of an earlier run)."""
    stale = stale_outputs(output, stats["shards"], stats["recording_ids"])
    if stale:
        from apache_beam.io.filesystems import FileSystems

        FileSystems.delete(stale)
    return stale


def run(input_spec: str, output: str, config: Mapping[str, Any], runner_args: list[str]) -> dict:
    """Run the job; returns the stats written to ``OUTPUT/stats.json``."""
    from apache_beam.io.filesystems import FileSystems

    args, dataflow_overrides = with_dataflow([*config["runner"]["args"], *runner_args], DATAFLOW_CONFIG)
    config = apply_overrides(config, dataflow_overrides)  # e.g. device=cuda on GPU workers
    options = PipelineOptions(args)
    FileSystems.set_options(options)  # s3 endpoint/credentials for listing and the final reads in the driver
    sources, listing_rejects = list_sources(input_spec, list(config["ingest"]["extensions"]))
    if not sources:  # before any model loads
        raise UserError(f"no recording in {input_spec}" + (f" ({breakdown(_reasons(listing_rejects))})" if listing_rejects else
                        f" (audio extensions: {', '.join(config['ingest']['extensions'])})"))
    LOG.info("%d recordings, %d rejected while listing", len(sources), len(listing_rejects))
    ensure_tokenizer(config)  # on the launcher, before its file is staged for remote workers
    configured = config  # provenance names the models as configured, not where this runner staged them
    config = prepare_workers(options, config, MODEL_KEYS, output, log=LOG.info)
    retire_completion_marker(join(output, STATS_FILE), log=LOG.info)
    runner = runner_name(args, {"runner": "DirectRunner"})
    started, start = datetime.now(timezone.utc), time.perf_counter()
    with progress_bar(runner, len(sources), "recordings") as channel:
        with beam.Pipeline(options=options) as pipeline:
            build_pipeline(pipeline, sources, listing_rejects, config, output, channel)
    with FileSystems.open(join(output, STATS_FILE)) as handle:
        stats = json.loads(handle.read())
    stats["run"] = {**run_provenance(configured, [source.path for source in sources], runner),
                    "started": started.isoformat(timespec="seconds"), "wall_s": round(time.perf_counter() - start, 3)}
    write_bytes_atomic(join(output, STATS_FILE), (json.dumps(stats, indent=1, sort_keys=True) + "\n").encode("utf-8"))
    for path in remove_stale(output, stats):
        LOG.info("removed stale output %s", path)
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
    return "\n".join([table(rows), "", f"  output: {join(output, 'shards')}/ ({len(stats['shards'])} shards), "
                      f"{STATS_FILE}, {REJECTS_FILE}, annotations/"])


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
    if rejected:
        rows = [json.loads(line) for line in _read_text(join(output, REJECTS_FILE)).splitlines() if line.strip()]
        shown = [f"rejected {r.get('id') or r.get('path')}: {r['reason']} ({str(r.get('detail', ''))[:120]})"
                 for r in rows[:5]]
        for line in rejects_summary(shown, rejected, join(output, REJECTS_FILE)):
            LOG.warning(line)
    if recordings["in"] == rejected:
        raise RunFailed(f"no recording could be read ({breakdown(recordings['rejected'])}; see {join(output, REJECTS_FILE)})")
    return 0


def _read_text(path: str) -> str:
    from apache_beam.io.filesystems import FileSystems

    with FileSystems.open(path) as handle:
        return handle.read().decode("utf-8")


if __name__ == "__main__":
    sys.exit(exit_status(main(sys.argv[1:])))
