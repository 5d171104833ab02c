"""Beam job (`make moshi-finetune-export`): audio shards -> moshi-finetune training layout.

    python -m moshi_data.beam_jobs.moshi_finetune_export --input OUT_OF_AUDIO_SHARDS --output DIR [--config audio_shards]

Reads ``INPUT/shards/shard-*.tar`` and writes ``DIR/data_stereo/<key>.wav`` (left main, right other,
24 kHz), ``DIR/data_stereo/<key>.json`` (``{"alignments": [[word, [start, end], speaker], ...]}``) and
``DIR/index.jsonl`` (``{"path", "duration"}``), every file atomically; deterministic output.
"""
from __future__ import annotations

import logging
import sys
from typing import Any, Iterator, Mapping

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions

from moshi_data.pipeline.audio.export import export_sample, index_jsonl
from moshi_data.pipeline.audio.outputs import SHARDS_DIR, join, write_bytes_atomic
from moshi_data.pipeline.command import RunFailed, UserError, command_parser, exit_status, run_command

LOG = logging.getLogger("moshi_data.moshi_finetune_export")


def _export_shard(path: str, output: str, audio_dir: str, main_label: str) -> Iterator[dict[str, Any]]:
    from apache_beam.io.filesystems import FileSystems

    from moshi_data.pipeline.audio.shards import iter_shard

    if "://" in path:
        import tempfile

        with tempfile.NamedTemporaryFile(suffix=".tar") as local, FileSystems.open(path) as remote:
            local.write(remote.read())
            local.flush()
            yield from _export_shard(local.name, output, audio_dir, main_label)
        return
    for sample in iter_shard(path):
        line, files = export_sample(sample, audio_dir, main_label)
        for relative, payload in files:
            write_bytes_atomic(join(output, relative), payload)
        yield line


def run(input_dir: str, output: str, config: Mapping[str, Any], runner_args: list[str]) -> int:
    """Export every shard under ``input_dir``; returns the number of samples written."""
    from apache_beam.io.filesystems import FileSystems

    export = config["export"]
    options = PipelineOptions(list(config["runner"]["args"]) + list(runner_args))
    FileSystems.set_options(options)
    shards = sorted(m.path for m in FileSystems.match([join(input_dir, SHARDS_DIR, "shard-*.tar")])[0].metadata_list)
    if not shards:
        raise UserError(f"no shards under {join(input_dir, SHARDS_DIR)} (give the output folder of audio-shards)")
    with beam.Pipeline(options=options) as pipeline:
        _ = (
            pipeline
            | "Shards" >> beam.Create(shards)
            | "Spread" >> beam.Reshuffle()
            | "Export" >> beam.FlatMap(_export_shard, output, export["audio_dir"], export["main_label"])
            | "Index" >> beam.combiners.ToList()
            | "WriteIndex" >> beam.Map(lambda lines: write_bytes_atomic(join(output, export["index"]), index_jsonl(lines)))
        )
    with FileSystems.open(join(output, export["index"])) as handle:
        return sum(1 for line in handle.read().splitlines() if line.strip())


def main(argv: list[str] | None = None) -> int:
    parser = command_parser(__name__, __doc__, config="audio_shards", beam=True)
    parser.add_argument("--input", required=True, help="output folder of `make audio-shards` (holds shards/)")
    parser.add_argument("--output", required=True, help="moshi-finetune data folder to write")
    return run_command(parser, argv, _main)


def _main(args) -> int:
    count = run(args.input.rstrip("/"), args.output.rstrip("/"), args.cfg, args.beam_args)
    print(f"exported {count} samples to {args.output} (index: {join(args.output, args.cfg['export']['index'])})")
    if not count:
        raise RunFailed(f"the shards under {args.input} hold no sample")
    return 0


if __name__ == "__main__":
    sys.exit(exit_status(main(sys.argv[1:])))
