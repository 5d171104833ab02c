"""Benchmark of the classifier stages of the text job (part of ``make bench``; prints, asserts nothing).

On the text bench's input (real CC sentences recombined, with per-site boilerplate; built by
``bench.text_bench.build_input``), one core, in-process, with the text job's own code: WET read,
normalize/hash + exact dedup, then every per-document stage (fuzzy dedup, LID, quality, min length)
and MinHash signatures/band keys. Prints docs/s per core with all stages and the share of time spent
in fastText predict calls (fuzzy dedup + LID + quality; one batched predict per document and model),
counts the line-classifier predict calls and model-text conversions per document (fuzzy dedup and
quality share one line list), and compares docs/s per core with the anchor floor: a single dolma
``tag`` process with the fastText LID tagger, 57 docs/s (../shared/notes/anchors.md, A3).
"""
from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from unittest import mock

from bench.text_bench import build_input
from moshi_data.classifiers.models import attach_classifiers
from moshi_data.pipeline.config import REPO_ROOT, load_config
from moshi_data.pipeline.text import chunk as chunk_module
from moshi_data.pipeline.text import fasttext_model, line_dedup
from moshi_data.pipeline.text import fuzzy_dedup as fuzzy_module
from moshi_data.pipeline.text import quality as quality_module
from moshi_data.pipeline.text import stages as stages_module
from moshi_data.pipeline.text.chunk import ChunkProcessor, DocChunk, chunk_line_counts, hash_documents
from moshi_data.pipeline.text.document import Document
from moshi_data.pipeline.text.minhash import MinHasher
from moshi_data.pipeline.text.wet import FileReport, WetLimits, read_wet

FASTTEXT_STAGES = ("fuzzy_dedup", "language", "quality")
ANCHOR_FLOOR_DOCS_PER_S = 57  # dolma tag, fastText LID tagger, 1 process, 1k docs (anchors.md A3)


class CallCounter:
    """Wraps a function and counts its calls (the bench's view of predict / model-text work)."""

    def __init__(self, function):
        self.function, self.calls = function, 0

    def __call__(self, *args, **kwargs):
        self.calls += 1
        return self.function(*args, **kwargs)


class CpuClock:
    """Stand-in for the ``time`` module of the stage code: per-stage seconds become CPU seconds of
    this process, so figures hold on a machine shared with other work."""

    perf_counter = staticmethod(time.process_time)


def read_documents(paths: list[str], limits: WetLimits) -> list[Document]:
    docs = []
    for index, path in enumerate(paths):
        with open(path, "rb") as raw:
            docs += [item for item in read_wet(raw, path, index, limits, FileReport(path, index))
                     if isinstance(item, Document)]
    return docs


def count_documents(stages, reached: Counter) -> None:
    """Make each line-classifier stage count the documents that reach it."""
    for stage in stages:
        if stage.name in ("fuzzy_dedup", "quality"):
            def process(document, _process=stage.process, _name=stage.name):
                reached[_name] += 1
                return _process(document)

            stage.process = process


def measure(paths: list[str], config: dict) -> dict:
    """Seconds per step on one core and the resulting throughput figures."""
    seconds: Counter = Counter()
    clock = time.process_time
    wall_start = time.perf_counter()
    start = clock()
    docs = read_documents(paths, WetLimits.from_config(config["wet"]))
    seconds["read"] = clock() - start
    n_docs = len(docs)
    start = clock()
    chunk = DocChunk(0, 0, 0, "bench", docs)
    hash_documents(docs)
    table = line_dedup.repeated(line_dedup.merge_counts(list(chunk_line_counts(chunk, 1).values())))
    seconds["normalize_hash_count"] = clock() - start
    processor = ChunkProcessor(config)
    processor.setup()
    predicts = {name: CallCounter(module.predict_matrix) for name, module in
                (("fuzzy_dedup", fuzzy_module), ("quality", quality_module))}
    conversions = CallCounter(fasttext_model.model_text)
    reached: Counter = Counter()
    count_documents(processor.stages, reached)
    with mock.patch.object(chunk_module, "time", CpuClock), mock.patch.object(stages_module, "time", CpuClock), \
            mock.patch.object(fuzzy_module, "predict_matrix", predicts["fuzzy_dedup"]), \
            mock.patch.object(quality_module, "predict_matrix", predicts["quality"]), \
            mock.patch.object(fasttext_model, "model_text", conversions):
        chunk, _ = processor.process(chunk, table, seconds)
    hasher = MinHasher(config["minhash"])
    start = clock()
    for doc in chunk.docs:
        hasher.band_keys(hasher.signature(doc.text))
    seconds["minhash_signatures"] = clock() - start
    wall = time.perf_counter() - wall_start
    total = sum(seconds.values())
    fasttext_s = sum(seconds.get(stage, 0.0) for stage in FASTTEXT_STAGES)
    calls = {name: counter.calls / reached[name] if reached[name] else 0.0 for name, counter in predicts.items()}
    return {"docs": n_docs, "kept": len(chunk.docs), "total_s": total, "seconds": dict(seconds),
            "predict_calls_per_doc": calls, "model_text_calls": conversions.calls, "stage_docs": dict(reached),
            "docs_per_s_per_core": n_docs / total, "fasttext_share": fasttext_s / total,
            "wall_s": wall,
            "filtered": {k: v for k, v in chunk.tally.items() if k.startswith("documents.filtered")}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--config", default="text_corpus")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="text-job config override")
    parser.add_argument("--output", default="out/bench/text", help="shares the text bench's input cache")
    parser.add_argument("--docs", type=int, default=20_000)
    parser.add_argument("--files", type=int, default=4)
    args = parser.parse_args(argv)
    config = attach_classifiers(load_config(args.config, args.set))
    paths, text_bytes = build_input((REPO_ROOT / args.output).resolve() / f"input-cls-{args.docs}", args.docs, args.files)
    result = measure(paths, config)
    print(f"classifier stages bench: {result['docs']} docs ({text_bytes / 1e6:.1f} MB of text), 1 core, in-process")
    print("  CPU seconds per step: " + ", ".join(f"{k} {v:.2f}" for k, v in result["seconds"].items()))
    print(f"  all stages: {result['docs_per_s_per_core']:.0f} docs/s per core ({result['total_s']:.1f} CPU s; "
          f"wall {result['wall_s']:.1f} s); fastText share of time: {100 * result['fasttext_share']:.1f} % "
          f"({' + '.join(FASTTEXT_STAGES)})")
    print(f"  vs the anchor floor {ANCHOR_FLOOR_DOCS_PER_S} docs/s per core (dolma tag, fastText LID, anchors.md A3): "
          f"{result['docs_per_s_per_core'] / ANCHOR_FLOOR_DOCS_PER_S:.1f}x")
    calls = result["predict_calls_per_doc"]
    print(f"  line-classifier predict calls per document reaching the stage: fuzzy dedup {calls['fuzzy_dedup']:.2f} "
          f"({result['stage_docs'].get('fuzzy_dedup', 0)} docs), quality {calls['quality']:.2f} "
          f"({result['stage_docs'].get('quality', 0)} docs); model-text conversions {result['model_text_calls']} "
          "(once per line: quality reuses fuzzy dedup's line list)")
    print(f"  kept {result['kept']} / {result['docs']}; filtered {result['filtered']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
