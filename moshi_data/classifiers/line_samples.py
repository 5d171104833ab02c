"""Exact-dedup line samples for the fuzzy-dedup classifier when no text-job samples are given.

Runs the text job's exact line dedup rule (normalize, 64-bit hash, count over the group, duplicate
when count >= threshold) over ``fuzzy_dedup.samples_documents`` and writes every distinct line once
as ``{"text", "count", "duplicate"}``, the record format of ``OUTPUT/line_samples/`` of the text job,
plus ``"split"``: the documents are split train/validation by a stable hash of their id, so the
fuzzy model's precision/recall is measured on lines of documents it was not trained on.
"""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any, Iterable, Mapping

from moshi_data.classifiers.common import cache_key, in_hash_share, models_dir
from moshi_data.classifiers.quality import DOCUMENT_SPLIT_SALT
from moshi_data.classifiers.sources import iter_identified_documents, resolve_root, sources_identity
from moshi_data.pipeline.config import load_config
from moshi_data.pipeline.storage import write_bytes_atomic
from moshi_data.pipeline.text.normalize import line_hashes

FORMAT_VERSION = 3  # bump when the way samples are produced changes (part of the cache key)


def dedup_threshold() -> int:
    """The text job's exact-dedup threshold (configs/text_corpus.yaml)."""
    return int(load_config("text_corpus")["line_dedup"]["threshold"])


def line_sample_records(documents: Iterable[str | tuple[str, bool]], threshold: int) -> list[dict]:
    """One record per distinct raw line: its group-wide normalized-hash count and duplicate flag.

    Documents given as ``(text, held_out)`` also get ``"split"``: ``valid`` when every occurrence of
    the line is in held-out documents, else ``train`` (a line never crosses the document split)."""
    counts: Counter = Counter()
    first_text: dict[int, str] = {}
    in_train: set[int] = set()
    with_split = False
    for document in documents:
        text, held_out = (document, False) if isinstance(document, str) else document
        with_split = with_split or not isinstance(document, str)
        lines = [line for line in text.split("\n") if line.strip()]
        for line, key in zip(lines, line_hashes(lines).tolist()):
            counts[key] += 1
            first_text.setdefault(key, line.strip())
            if not held_out:
                in_train.add(key)
    records = []
    for key, count in sorted(counts.items()):
        record = {"text": first_text[key], "count": count, "duplicate": count >= threshold}
        if with_split:
            record["split"] = "train" if key in in_train else "valid"
        records.append(record)
    return records


def write_default_line_samples(config: Mapping[str, Any]) -> Path:
    """Write (once, cached by input identity) the line samples of the default documents."""
    sources = config["fuzzy_dedup"]["samples_documents"]
    valid_percent = config["fuzzy_dedup"]["valid_percent"]
    root = resolve_root(config["data_root"])
    threshold = dedup_threshold()
    key = cache_key([FORMAT_VERSION, threshold, valid_percent, sources_identity(sources, root)])
    path = models_dir(config) / f"line_samples-{key}.jsonl"
    if path.exists():
        return path
    documents = ((text, in_hash_share(doc_id, valid_percent, DOCUMENT_SPLIT_SALT))
                 for source in sources for doc_id, text in iter_identified_documents(source, root))
    records = line_sample_records(documents, threshold)
    write_bytes_atomic(str(path), "".join(json.dumps(record, ensure_ascii=False) + "\n" for record in records).encode("utf-8"))
    return path
