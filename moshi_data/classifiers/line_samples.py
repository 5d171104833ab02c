"""Exact-dedup line samples for the fuzzy-dedup classifier when no text-job samples are given.

Runs the text job's exact line dedup rule (normalize, 64-bit hash, count over the group, duplicate
when count >= threshold) over ``fuzzy_dedup.samples_documents`` and writes every distinct line once
as ``{"text", "count", "duplicate"}``, the record format of ``OUTPUT/line_samples/`` of the text job.
"""
from __future__ import annotations

import json
import os
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any, Iterable, Mapping

from moshi_data.classifiers.common import cache_key, models_dir
from moshi_data.classifiers.sources import iter_documents, resolve_root, sources_identity
from moshi_data.pipeline.config import load_config
from moshi_data.pipeline.text.normalize import line_hashes

FORMAT_VERSION = 2  # bump when the way samples are produced changes (part of the cache key)


def dedup_threshold() -> int:
    """The text job's exact-dedup threshold (configs/text_corpus.yaml)."""
    return int(load_config("text_corpus")["line_dedup"]["threshold"])


def line_sample_records(documents: Iterable[str], threshold: int) -> list[dict]:
    """One record per distinct raw line: its group-wide normalized-hash count and duplicate flag."""
    counts: Counter = Counter()
    first_text: dict[int, str] = {}
    for document in documents:
        lines = [line for line in document.split("\n") if line.strip()]
        for line, key in zip(lines, line_hashes(lines).tolist()):
            counts[key] += 1
            first_text.setdefault(key, line.strip())
    return [
        {"text": first_text[key], "count": count, "duplicate": count >= threshold}
        for key, count in sorted(counts.items())
    ]


def write_default_line_samples(config: Mapping[str, Any]) -> Path:
    """Write (once, cached by input identity) the line samples of the default documents."""
    sources = config["fuzzy_dedup"]["samples_documents"]
    root = resolve_root(config["data_root"])
    threshold = dedup_threshold()
    path = models_dir(config) / f"line_samples-{cache_key([FORMAT_VERSION, threshold, sources_identity(sources, root)])}.jsonl"
    if path.exists():
        return path
    documents = (doc for source in sources for doc in iter_documents(source, root))
    records = line_sample_records(documents, threshold)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    with os.fdopen(handle, "w", encoding="utf-8") as out:
        for record in records:
            out.write(json.dumps(record, ensure_ascii=False) + "\n")
    os.replace(tmp, path)
    return path
