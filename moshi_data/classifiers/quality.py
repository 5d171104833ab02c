"""Training set and model of the 9-label Helium quality classifier (line level).

``rand`` = random lines of real Common Crawl documents; the 8 other labels = lines of curated sources
(configs/quality_labels.yaml). Lines shorter than ``min_line_chars`` are skipped; a line found under
two labels is dropped from both; each label is capped by a deterministic hash sample; the split is a
stable hash of the line; smaller labels are oversampled in the training split only.
"""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any, Mapping

from moshi_data.classifiers.common import (
    cache_key,
    is_valid_split,
    models_dir,
    stable_hash,
    stable_sample,
    train_fasttext,
    write_labelled,
)
from moshi_data.classifiers.sources import iter_documents, resolve_root, sources_identity
from moshi_data.pipeline.config import load_config
from moshi_data.pipeline.text.fasttext_model import model_text

FORMAT_VERSION = 1


def label_sources(config: Mapping[str, Any]) -> tuple[dict[str, list], Any]:
    """The label -> sources mapping and its data root, checked against the configured labels."""
    mapping = load_config(config["quality"]["labels_config"])
    labels = config["quality"]["labels"]
    missing = [label for label in labels if not mapping["labels"].get(label)]
    if missing:
        raise ValueError(f"quality labels without sources: {missing}")
    return {label: mapping["labels"][label] for label in labels}, resolve_root(mapping.get("root"))


def training_lines(text: str, min_chars: int) -> list[str]:
    """Model texts of the lines of a document that are long enough to train on."""
    lines = (model_text(line) for line in text.split("\n"))
    return [line for line in lines if len(line) >= min_chars]


def build_label_lines(config: Mapping[str, Any]) -> dict[str, list[str]]:
    """Distinct, capped training lines per label (cross-label conflicts removed)."""
    quality = config["quality"]
    sources, root = label_sources(config)
    per_label: dict[str, set[str]] = {}
    for label, label_source_list in sources.items():
        lines: set[str] = set()
        for source in label_source_list:
            for document in iter_documents(source, root):
                lines.update(training_lines(document, quality["min_line_chars"]))
        per_label[label] = lines
    owners: dict[str, int] = {}
    for lines in per_label.values():
        for line in lines:
            owners[line] = owners.get(line, 0) + 1
    return {
        label: stable_sample((l for l in lines if owners[l] == 1), quality["max_lines_per_label"], label)
        for label, lines in per_label.items()
    }


def split_examples(
    label_lines: Mapping[str, list[str]], valid_percent: float, balance: str
) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """(train, valid) lists of (label, text); train oversampled per ``balance`` and stably shuffled."""
    train_by_label: dict[str, list[str]] = {}
    valid: list[tuple[str, str]] = []
    for label, lines in label_lines.items():
        train_by_label[label] = []
        for line in lines:
            if is_valid_split(line, valid_percent):
                valid.append((label, line))
            else:
                train_by_label[label].append(line)
    if balance == "oversample":
        target = max(len(lines) for lines in train_by_label.values())
        train_by_label = {
            label: [lines[i % len(lines)] for i in range(target)] if lines else []
            for label, lines in train_by_label.items()
        }
    elif balance != "none":
        raise ValueError(f"quality.balance must be oversample or none, got {balance!r}")
    train = [(label, line) for label, lines in train_by_label.items() for line in lines]
    return _interleave_repeats(train), sorted(valid, key=lambda item: (stable_hash(item[1]), item))


def _interleave_repeats(train: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """Spread repeated (oversampled) examples through the file instead of leaving them adjacent."""
    seen: dict[tuple[str, str], int] = {}
    keyed = []
    for item in train:
        occurrence = seen.get(item, 0)
        seen[item] = occurrence + 1
        keyed.append((stable_hash(f"{item[0]} {item[1]}", f"shuffle{occurrence}:"), item))
    keyed.sort()
    return [item for _, item in keyed]


def quality_model_spec(config: Mapping[str, Any]) -> dict[str, Any]:
    """Everything that determines the quality model (its cache key)."""
    quality = config["quality"]
    sources, root = label_sources(config)
    return {
        "kind": "quality",
        "version": FORMAT_VERSION,
        "labels": quality["labels"],
        "min_line_chars": quality["min_line_chars"],
        "max_lines_per_label": quality["max_lines_per_label"],
        "balance": quality["balance"],
        "valid_percent": quality["valid_percent"],
        "quantize": quality["quantize"],
        "train": quality["train"],
        "data": {label: sources_identity(items, root) for label, items in sources.items()},
    }


def quality_model_path(config: Mapping[str, Any]) -> Path:
    suffix = ".ftz" if config["quality"]["quantize"] else ".bin"
    return models_dir(config) / f"quality-{cache_key(quality_model_spec(config))}{suffix}"


def train_quality(config: Mapping[str, Any], output: Path) -> dict[str, Any]:
    """Build the dataset, train, save the model and its validation split (``<model>.valid.txt``)."""
    quality = config["quality"]
    label_lines = build_label_lines(config)
    train, valid = split_examples(label_lines, quality["valid_percent"], quality["balance"])
    with tempfile.TemporaryDirectory() as tmp:
        train_path = Path(tmp) / "train.txt"
        write_labelled(train_path, train)
        train_fasttext(train_path, quality["train"], quality["quantize"], output)
    write_labelled(valid_split_path(output), valid)
    return {
        "lines_per_label": {label: len(lines) for label, lines in label_lines.items()},
        "train_examples": len(train),
        "valid_examples": len(valid),
    }


def valid_split_path(model_path: Path) -> Path:
    return model_path.with_name(model_path.name + ".valid.txt")
