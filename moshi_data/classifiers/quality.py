"""Training set and model of the 9-label Helium quality classifier (line level).

``rand`` = random lines of real Common Crawl documents; the 8 other labels = lines of curated sources
(configs/quality_labels.yaml). The train/validation split is by source document (a stable hash of the
document's normalised text, ``document_split_key``: the same page under two ids is always on one side),
never by line, so no document has lines on both sides. A fixed hash share of every label's documents is
the held-out test split (``quality.holdout_percent``): the shipped model is validated on it,
cross-validation folds are cut from the other documents only. A scored document (held-out split, scored
fold) whose training lines are all in that model's training documents is left out of the scored side
(counted: ``valid_documents_left_out``): scoring it would score training data. Lines shorter than
``min_line_chars`` are skipped; a training line found in the training documents of two labels is
dropped from both, owners counted on the training side only (so the held-out documents, and in
cross-validation the scored fold, never shape the training data); a validation line claimed by two
labels' validation documents, or also present in a training document (text repeated across documents),
is left out of the line-level validation; each label is capped by a deterministic hash sample (train
and validation separately); smaller labels are oversampled in the training split only. The validation
documents are kept for document-level evaluation with the text job's aggregation. A run reads and
splits the label documents once (``LabelCorpus``): the shipped model, every fold and the reports share them.
"""
from __future__ import annotations

import hashlib
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Callable, Mapping

from moshi_data.classifiers.common import (
    cache_key,
    in_hash_share,
    models_dir,
    stable_hash,
    stable_sample,
    train_fasttext,
    write_labelled,
)
from moshi_data.classifiers.sources import iter_identified_documents, resolve_root, sources_identity
from moshi_data.pipeline.config import load_config
from moshi_data.pipeline.text.fasttext_model import model_text

FORMAT_VERSION = 6
DOCUMENT_SPLIT_SALT = "document-split:"  # held-out documents (also the fuzzy line samples' split)


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


def document_split_key(text: str) -> str:
    """What the held-out split and the cross-validation folds hash: a digest of the document's
    normalised text (the model text of every non-empty line), not of its id, so identical pages under
    two ids (a page in two files or records) always fall on the same side."""
    normalised = "\n".join(line for line in map(model_text, text.split("\n")) if line)
    return hashlib.blake2b(normalised.encode("utf-8"), digest_size=16).hexdigest()


def document_fold(split_key: str, folds: int) -> int:
    """Cross-validation fold of a whole document (stable hash of its ``document_split_key``)."""
    return stable_hash(split_key, "document-fold:") % folds


def holdout_percent(quality: Mapping[str, Any], label: str) -> float:
    """Share of a label's documents in the held-out test split (``quality.holdout_percent``, per label
    ``quality.holdout_percent_by_label``)."""
    return float((quality.get("holdout_percent_by_label") or {}).get(label, quality["holdout_percent"]))


def max_train_lines(quality: Mapping[str, Any], label: str) -> int:
    """Training-line cap of a label (``quality.max_lines_per_label``, per label ``quality.max_lines_by_label``)."""
    return int((quality.get("max_lines_by_label") or {}).get(label, quality["max_lines_per_label"]))


def is_held_out(quality: Mapping[str, Any], label: str, split_key: str) -> bool:
    """Whether a document (its ``document_split_key``) is in the held-out test split: outside every
    cross-validation fold, never trained on by any model the evaluation compares or calibrates with;
    the targets are read there."""
    return in_hash_share(split_key, holdout_percent(quality, label), DOCUMENT_SPLIT_SALT)


def document_sides(config: Mapping[str, Any], fold: tuple[int, int] | None) -> Callable[[str, str], str | None]:
    """``side(label, split_key)``: "valid", "train" or None (not used). ``fold`` None: the shipped model,
    trained on every document outside the held-out test split, validated on that split; ``(k, folds)``:
    cross-validation fold k of the documents outside the held-out split (the split itself is not used)."""
    quality = config["quality"]
    if fold is None:
        return lambda label, key: "valid" if is_held_out(quality, label, key) else "train"
    index, folds = fold

    def side(label: str, key: str) -> str | None:
        if is_held_out(quality, label, key):
            return None
        return "valid" if document_fold(key, folds) == index else "train"

    return side


@dataclass
class LabelData:
    """One label's capped training and validation lines, its validation documents (``left_out``: the ids
    of the validation-side documents not scored, every training line of theirs being in a training
    document) and the counts."""

    train: list[str]
    valid: list[str]
    valid_documents: list[tuple[str, str]]
    counts: dict[str, int] = field(default_factory=dict)
    left_out: list[str] = field(default_factory=list)


def label_documents(config: Mapping[str, Any]) -> dict[str, list[tuple[str, str]]]:
    """``(document id, text)`` of every source document, per label."""
    sources, root = label_sources(config)
    return {label: [doc for source in items for doc in iter_identified_documents(source, root)]
            for label, items in sources.items()}


class LabelCorpus:
    """The label documents of one run, read once (``documents``: label -> ``(id, text)``) and split into
    training lines once (``lines``: label -> the lines of each document, same order; ``split_keys``:
    their ``document_split_key``), with the model spec (the sources' content digests: hashed once) and
    the shipped model's label data built once."""

    def __init__(self, config: Mapping[str, Any], documents: Mapping[str, list[tuple[str, str]]] | None = None):
        self.config = config
        self.documents = label_documents(config) if documents is None else documents
        min_chars = config["quality"]["min_line_chars"]
        self.lines = {label: [training_lines(text, min_chars) for _, text in docs]
                      for label, docs in self.documents.items()}
        self.split_keys = {label: [document_split_key(text) for _, text in docs] for label, docs in self.documents.items()}

    @cached_property
    def spec(self) -> dict[str, Any]:
        return quality_model_spec(self.config)

    @cached_property
    def shipped(self) -> dict[str, "LabelData"]:
        """Label data of the shipped model (trained outside the held-out split, validated on it)."""
        return build_label_data(self.config, self)


def build_label_data(config: Mapping[str, Any], corpus: LabelCorpus | None = None,
                     fold: tuple[int, int] | None = None) -> dict[str, LabelData]:
    """Document-split, conflict-free, capped lines per label (see the module docstring); ``fold``
    (k, folds): cross-validation fold k of the documents outside the held-out test split."""
    quality = config["quality"]
    corpus = LabelCorpus(config) if corpus is None else corpus
    side_of = document_sides(config, fold)
    sides: dict[str, dict[str, set[str]]] = {}
    valid_docs: dict[str, list[tuple[str, str, list[str]]]] = {}
    doc_counts: dict[str, dict[str, int]] = {}
    for label, docs in corpus.documents.items():
        sides[label] = {"train": set(), "valid": set()}
        valid_docs[label] = []
        doc_counts[label] = {"train": 0, "valid": 0}
        for (doc_id, text), lines, key in zip(docs, corpus.lines[label], corpus.split_keys[label]):
            side = side_of(label, key)
            if not side or not lines:
                continue
            doc_counts[label][side] += 1
            sides[label][side].update(lines)
            if side == "valid":
                valid_docs[label].append((doc_id, text, lines))
    train_owners = Counter(line for by_side in sides.values() for line in by_side["train"])
    valid_owners = Counter(line for by_side in sides.values() for line in by_side["valid"])
    result = {}
    for label, by_side in sides.items():
        train = [line for line in by_side["train"] if train_owners[line] == 1]
        valid = [line for line in by_side["valid"] if valid_owners[line] == 1 and line not in train_owners]
        unseen = [(doc_id, text) for doc_id, text, lines in valid_docs[label] if any(line not in train_owners for line in lines)]
        left_out = sorted(doc_id for doc_id, _, lines in valid_docs[label] if all(line in train_owners for line in lines))
        kept_docs = sorted(unseen, key=lambda doc: (stable_hash(doc[0], "valid-docs:"), doc[0]))
        result[label] = LabelData(
            train=stable_sample(train, max_train_lines(quality, label), label),
            valid=stable_sample(valid, quality["max_valid_lines_per_label"], label),
            valid_documents=kept_docs[: quality["max_valid_documents_per_label"]],
            counts={"train_documents": doc_counts[label]["train"], "valid_documents": doc_counts[label]["valid"],
                    "valid_documents_left_out": len(left_out),
                    "train_lines_available": len(train), "valid_lines_available": len(valid)},
            left_out=left_out,
        )
        result[label].counts.update(train_lines=len(result[label].train), valid_lines=len(result[label].valid),
                                    valid_documents_evaluated=len(result[label].valid_documents))
    return result


def balance_train(train_by_label: Mapping[str, list[str]], balance: str) -> list[tuple[str, str]]:
    """(label, text) training examples, oversampled per ``balance`` and stably shuffled."""
    if balance == "oversample":
        target = max(len(lines) for lines in train_by_label.values())
        train_by_label = {
            label: [lines[i % len(lines)] for i in range(target)] if lines else []
            for label, lines in train_by_label.items()
        }
    elif balance != "none":
        raise ValueError(f"quality.balance must be oversample or none, got {balance!r}")
    return _interleave_repeats([(label, line) for label, lines in train_by_label.items() for line in lines])


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


def training_examples(data: Mapping[str, LabelData], balance: str) -> list[tuple[str, str]]:
    """The (label, text) lines of the fastText training file, in file order."""
    return balance_train({label: item.train for label, item in data.items()}, balance)


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
        "max_lines_by_label": quality.get("max_lines_by_label") or {},
        "max_valid_lines_per_label": quality["max_valid_lines_per_label"],
        "max_valid_documents_per_label": quality["max_valid_documents_per_label"],
        "balance": quality["balance"],
        "holdout_percent": quality["holdout_percent"],
        "holdout_percent_by_label": quality.get("holdout_percent_by_label") or {},
        "quantize": quality["quantize"],
        "train": quality["train"],
        "data": {label: sources_identity(items, root) for label, items in sources.items()},
    }


def quality_model_path(config: Mapping[str, Any], spec: Mapping[str, Any] | None = None) -> Path:
    """Cache path of the shipped model (``spec``: the quality model spec, if computed)."""
    suffix = ".ftz" if config["quality"]["quantize"] else ".bin"
    return models_dir(config) / f"quality-{cache_key(quality_model_spec(config) if spec is None else spec)}{suffix}"


def validation_examples(data: Mapping[str, LabelData]) -> list[tuple[str, str]]:
    """(label, text) validation lines in a stable order (the line-level figures)."""
    return sorted(((label, line) for label, item in data.items() for line in item.valid),
                  key=lambda pair: (stable_hash(pair[1]), pair))


def validation_documents(data: Mapping[str, LabelData]) -> list[dict]:
    """``{"label", "id", "text"}`` of the validation documents (the document-level figures)."""
    return [{"label": label, "id": doc_id, "text": text}
            for label, item in data.items() for doc_id, text in item.valid_documents]


def train_quality(config: Mapping[str, Any], output: Path, data: Mapping[str, LabelData] | None = None
                  ) -> dict[str, Any]:
    """Build the dataset (unless given), train and save the model; returns the counts. Its validation
    lines and documents are derived from the same data (``validation_examples``, ``validation_documents``)."""
    quality = config["quality"]
    data = build_label_data(config) if data is None else data
    train = training_examples(data, quality["balance"])
    with tempfile.TemporaryDirectory() as tmp:
        train_path = Path(tmp) / "train.txt"
        write_labelled(train_path, train)
        train_fasttext(train_path, quality["train"], quality["quantize"], output)
    return {
        "per_label": {label: item.counts for label, item in data.items()},
        "train_examples": len(train),
        "valid_examples": len(validation_examples(data)),
    }

