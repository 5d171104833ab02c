"""Beam job (`make moshi-finetune-export`): audio shards -> moshi-finetune training layout.

    python -m moshi_data.beam_jobs.moshi_finetune_export --input OUT_OF_AUDIO_SHARDS --output DIR [--config audio_shards]

Reads ``INPUT/shards/shard-*.tar`` and writes ``DIR/data_stereo/<key>.wav`` (left main, right other,
24 kHz), ``DIR/data_stereo/<key>.json`` (``{"alignments": [[word, [start, end], speaker], ...]}``) and
``DIR/index.jsonl`` (``{"path", "duration"}``), every file atomically; deterministic output. Over an
earlier export, its index.jsonl is removed first (a killed re-export never leaves an index that looks
complete) and files of ``data_stereo/`` this export did not write are deleted by the jobs' stale-file
join (beam_jobs/stale_files.py) before the new index is written.

Each worker streams one shard (one sample in memory at a time, local or object storage) and writes
that shard's index lines to ``DIR/.index-parts/<shard>.jsonl``; the launcher then streams the parts,
in shard order, into ``index.jsonl`` and deletes them: no step holds the whole index.
"""
from __future__ import annotations

import logging
import os
import sys
import tempfile
from typing import Any, Iterator, Mapping

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions

from moshi_data.beam_jobs.options import check_paths_reach_workers
from moshi_data.beam_jobs.stale_files import RemoveStale
from moshi_data.pipeline import storage
from moshi_data.pipeline.audio.export import export_sample, index_jsonl
from moshi_data.pipeline.audio.outputs import SHARDS_DIR
from moshi_data.pipeline.command import RunFailed, UserError, command_parser, exit_status, run_command

LOG = logging.getLogger("moshi_data.moshi_finetune_export")
INDEX_PARTS_DIR = ".index-parts"


def index_part(output: str, shard_path: str) -> str:
    return storage.join(output, INDEX_PARTS_DIR, os.path.basename(shard_path.rstrip("/")) + ".jsonl")


def export_shard(path: str, output: str, audio_dir: str, main_label: str) -> Iterator[tuple[str, str]]:
    """Export every sample of one shard, read as a stream, then write its index part; yields the
    (folder, name) of each sample file written."""
    from moshi_data.pipeline.audio.shards import decode_sample, stream_records

    lines = []
    with storage.open_read(path) as handle:
        for record in stream_records(handle):
            line, files = export_sample(decode_sample(record), audio_dir, main_label)
            for relative, payload in files:
                storage.write_bytes_atomic(storage.join(output, relative), payload)
                yield tuple(relative.rsplit("/", 1))
            lines.append(line)  # one shard's lines: bounded by the shard size
    storage.write_bytes_atomic(index_part(output, path), index_jsonl(lines))


def concatenate_index(output: str, shards: list[str], index: str) -> int:
    """Stream the index parts of ``shards``, in that order, into ``index`` (atomic), then delete the
    parts; returns the number of index lines (one per sample; lines are never blank)."""
    lines = 0
    with tempfile.NamedTemporaryFile(suffix=".jsonl") as local:
        for shard in shards:
            with storage.open_read(index_part(output, shard)) as part:
                while chunk := part.read(storage.COPY_CHUNK_BYTES):
                    local.write(chunk)
                    lines += chunk.count(b"\n")
        local.flush()
        storage.upload_file(local.name, storage.join(output, index))
    parts = storage.join(output, INDEX_PARTS_DIR)
    storage.delete([parts] if storage.is_local(parts) else storage.list_tree(parts))  # a local folder goes whole
    return lines


def run(input_dir: str, output: str, config: Mapping[str, Any], runner_args: list[str]) -> int:
    """Export every shard under ``input_dir``; returns the number of samples written."""
    from apache_beam.io.filesystems import FileSystems

    export = config["export"]
    options = PipelineOptions(list(config["runner"]["args"]) + list(runner_args))
    storage.configure(options)
    shards = sorted(m.path for m in FileSystems.match([storage.join(input_dir, SHARDS_DIR, "shard-*.tar")])[0].metadata_list)
    if not shards:
        raise UserError(f"no shards under {storage.join(input_dir, SHARDS_DIR)} (give the output folder of audio-shards)")
    check_paths_reach_workers(options, shards, output)
    storage.retire_completion_marker(storage.join(output, export["index"]), log=LOG.info)
    pipeline = beam.Pipeline(options=options)
    _ = (pipeline
         | "Shards" >> beam.Create(shards)
         | "Spread" >> beam.Reshuffle()
         | "Export" >> beam.FlatMap(export_shard, output, export["audio_dir"], export["main_label"])
         | "RemoveStale" >> RemoveStale(output, [export["audio_dir"]], config["stale_files"]["listing_ranges"]))
    pipeline.run().wait_until_finish()
    return concatenate_index(output, shards, export["index"])


def main(argv: list[str] | None = None) -> int:
    parser = command_parser(__name__, __doc__, config="audio_shards", beam=True)
    parser.add_argument("--input", required=True, help="output folder of `make audio-shards` (holds shards/)")
    parser.add_argument("--output", required=True, help="moshi-finetune data folder to write")
    return run_command(parser, argv, _main)


def _main(args) -> int:
    count = run(args.input.rstrip("/"), args.output.rstrip("/"), args.cfg, args.beam_args)
    print(f"exported {count} samples to {args.output} (index: {storage.join(args.output, args.cfg['export']['index'])})")
    if not count:
        raise RunFailed(f"the shards under {args.input} hold no sample")
    return 0


if __name__ == "__main__":
    sys.exit(exit_status(main(sys.argv[1:])))
