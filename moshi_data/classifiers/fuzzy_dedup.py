"""Training set and model of the Helium fuzzy-dedup line classifier (``__label__dup`` / ``__label__keep``).

Training data are the exact-dedup line samples of the text job (records ``{"text", "count",
"duplicate"}``): positives are lines whose normalized hash was seen >= the dedup threshold, negatives
unique lines. Lines are deduplicated (a text seen with both labels is dropped), balanced to the smaller
class (capped), and split by document where the samples carry it (else by a stable hash of the line).
"""
from __future__ import annotations

import glob
import hashlib
import json
import tempfile
from pathlib import Path
from typing import Any, Iterable, Mapping

from moshi_data.classifiers.common import (
    cache_key,
    in_hash_share,
    models_dir,
    stable_sample,
    train_fasttext,
    write_labelled,
)
from moshi_data.classifiers.sources import expand_paths, read_bytes, resolve_root
from moshi_data.pipeline.text.fasttext_model import model_text
from moshi_data.pipeline.text.fuzzy_dedup import DUP_LABEL, KEEP_LABEL

FORMAT_VERSION = 2


def read_line_samples(paths: Iterable[str]) -> list[dict]:
    """Records of the line-sample JSONL files written by the text job."""
    records = []
    for path in paths:
        for raw in read_bytes(path).decode("utf-8").split("\n"):
            if raw.strip():
                records.append(json.loads(raw))
    return records


def build_examples(records: Iterable[Mapping[str, Any]], min_chars: int, max_per_label: int) -> dict[str, list[str]]:
    """Balanced, distinct model texts per label from line-sample records."""
    by_label: dict[str, set[str]] = {DUP_LABEL: set(), KEEP_LABEL: set()}
    for record in records:
        text = model_text(record["text"])
        if len(text) >= min_chars:
            by_label[DUP_LABEL if record["duplicate"] else KEEP_LABEL].add(text)
    conflicts = by_label[DUP_LABEL] & by_label[KEEP_LABEL]
    size = min(max_per_label, *(len(lines - conflicts) for lines in by_label.values()))
    if size == 0:
        raise ValueError("fuzzy-dedup training needs both duplicate and unique line samples; got none of one kind")
    return {label: stable_sample(lines - conflicts, size, label) for label, lines in by_label.items()}


def record_sides(records: Iterable[Mapping[str, Any]]) -> dict[str, str]:
    """Model text -> ``train``/``valid`` from records that carry a document split (train wins a tie)."""
    sides: dict[str, str] = {}
    for record in records:
        if "split" in record:
            text = model_text(record["text"])
            sides[text] = "train" if sides.get(text) == "train" else record["split"]
    return sides


def split(examples: Mapping[str, list[str]], valid_percent: float, sides: Mapping[str, str] | None = None
          ) -> tuple[list, list]:
    """(train, valid): by the records' document split where known, else by a stable hash of the line
    (line samples of a text-job run carry no document ids)."""
    sides = sides or {}
    train, valid = [], []
    for label in sorted(examples):
        for text in examples[label]:
            held_out = sides[text] == "valid" if text in sides else in_hash_share(text, valid_percent, "split:")
            (valid if held_out else train).append((label, text))
    return sorted(train, key=lambda item: hashlib.blake2b(item[1].encode(), digest_size=8).digest()), valid


def samples_paths(pattern: str, data_root: str) -> list[str]:
    """Line-sample files matching a path or glob (relative to the working directory, else the data root)."""
    root = Path.cwd() if "://" in pattern or glob.glob(pattern) else resolve_root(data_root)
    return expand_paths(pattern, root)


def fuzzy_model_spec(config: Mapping[str, Any], samples: list[str]) -> dict[str, Any]:
    fuzzy = config["fuzzy_dedup"]
    return {
        "kind": "fuzzy_dedup",
        "version": FORMAT_VERSION,
        "min_chars": fuzzy["min_chars"],
        "max_per_label": fuzzy["max_per_label"],
        "valid_percent": fuzzy["valid_percent"],
        "quantize": fuzzy["quantize"],
        "train": fuzzy["train"],
        "samples": [hashlib.sha256(read_bytes(path, decompress=False)).hexdigest()[:16] for path in samples],
    }


def fuzzy_model_path(config: Mapping[str, Any], samples: list[str]) -> Path:
    suffix = ".ftz" if config["fuzzy_dedup"]["quantize"] else ".bin"
    return models_dir(config) / f"fuzzy_dedup-{cache_key(fuzzy_model_spec(config, samples))}{suffix}"


def train_fuzzy(config: Mapping[str, Any], samples: list[str], output: Path) -> dict[str, Any]:
    """Train the dup/keep model from line-sample files; saves ``<model>.valid.txt`` beside it."""
    fuzzy = config["fuzzy_dedup"]
    records = read_line_samples(samples)
    examples = build_examples(records, fuzzy["min_chars"], fuzzy["max_per_label"])
    train, valid = split(examples, fuzzy["valid_percent"], record_sides(records))
    with tempfile.TemporaryDirectory() as tmp:
        train_path = Path(tmp) / "train.txt"
        write_labelled(train_path, train)
        train_fasttext(train_path, fuzzy["train"], fuzzy["quantize"], output)
    write_labelled(output.with_name(output.name + ".valid.txt"), valid)
    return {"per_label": {k: len(v) for k, v in examples.items()}, "train": len(train), "valid": len(valid)}
