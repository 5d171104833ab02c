"""Validation metrics of the trained classifiers (used by ``train`` and ``evaluate``)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

from moshi_data.classifiers.common import precision_recall_f1, roc_auc
from moshi_data.pipeline.text.fasttext_model import LABEL_PREFIX, load_model, predict_matrix
from moshi_data.pipeline.text.quality import QualityScorer


def read_labelled(path: Path) -> list[tuple[str, str]]:
    """(label, text) pairs of a fastText-format file."""
    pairs = []
    with open(path, encoding="utf-8") as handle:
        for raw in handle:
            label, _, text = raw.rstrip("\n").partition(" ")
            pairs.append((label[len(LABEL_PREFIX):], text))
    return pairs


def split_metrics(model_path: Path, valid_path: Path, labels: list[str]) -> tuple[dict, Any]:
    """Per-label P/R/F1 and confusion on a validation file, plus the probability matrix."""
    valid = read_labelled(valid_path)
    matrix = predict_matrix(load_model(str(model_path)), [text for _, text in valid], labels)
    predicted = [labels[i] for i in matrix.argmax(axis=1)]
    metrics = precision_recall_f1([label for label, _ in valid], predicted, labels)
    return metrics, (valid, matrix)


def quality_metrics(model_path: Path, valid_path: Path, labels: list[str]) -> dict:
    """9-label metrics and the wiki-vs-rand line AUC (score P(wiki), wiki positive, rand negative)."""
    metrics, (valid, matrix) = split_metrics(model_path, valid_path, labels)
    wiki, rand = labels.index("wiki"), labels.index("rand")
    positives = [row[wiki] for (label, _), row in zip(valid, matrix) if label == "wiki"]
    negatives = [row[wiki] for (label, _), row in zip(valid, matrix) if label == "rand"]
    metrics["wiki_vs_rand_auc"] = roc_auc(positives, negatives)
    return metrics


def human_label_auc(model_path: Path, labelled_jsonl: Path, config: Mapping[str, Any]) -> dict:
    """AUC of the document quality score 1 - rand against human good (1) / bad (0) labels."""
    quality = config["quality"]
    scorer = QualityScorer(str(model_path), quality["labels"], quality["decimals"])
    scorer.setup()
    good, bad = [], []
    with open(labelled_jsonl, encoding="utf-8") as handle:
        for raw in handle:
            if raw.strip():
                record = json.loads(raw)
                score = 1.0 - scorer.scores(record["text"])["rand"]
                (good if int(record["label"]) == 1 else bad).append(score)
    return {"auc_1_minus_rand": roc_auc(good, bad), "good": len(good), "bad": len(bad)}


def ensure_models_with_metrics(config: Mapping[str, Any], line_samples: str | None = None) -> tuple[dict, dict, dict]:
    """Train missing models (or reuse cached ones) and compute both validation reports.

    Returns (model paths, fuzzy-dedup metrics, quality metrics).
    """
    from moshi_data.classifiers.models import ensure_models
    from moshi_data.pipeline.text.fuzzy_dedup import DUP_LABEL, KEEP_LABEL

    paths = ensure_models(config, line_samples)
    fuzzy, _ = split_metrics(paths["fuzzy_dedup"], Path(f"{paths['fuzzy_dedup']}.valid.txt"), [DUP_LABEL, KEEP_LABEL])
    quality = quality_metrics(paths["quality"], Path(f"{paths['quality']}.valid.txt"), config["quality"]["labels"])
    return paths, fuzzy, quality
