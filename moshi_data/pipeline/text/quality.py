"""Helium quality scores: a 9-label line classifier aggregated into document scores.

Document score for every label (dactory ``get_doc_annotations``)::

    score(label) = sum_lines P(label | line) * len(line + "\\n") / sum_lines len(line + "\\n")

over the non-empty lines, with lengths in UTF-8 bytes, rounded to ``decimals``. The filtering rule
drops a document whose ``rand`` score is above ``max_rand_score`` (dactory default 0.9) or whose score
for a label is below an optional per-label minimum.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from moshi_data.pipeline.text.fasttext_model import (
    document_model_lines,
    load_model,
    model_labels,
    model_text,
    predict_matrix,
    release_model_lines,
)


def scored_lines(text: str) -> list[str]:
    """The lines that carry a weight in the document score (empty lines are skipped)."""
    return [line for line in text.split("\n") if line.strip()]


def line_weights(lines: Sequence[str]) -> np.ndarray:
    """UTF-8 byte length of each line with its newline, as dactory counts it."""
    return np.array([len(line.encode("utf-8")) + 1 for line in lines], dtype=np.float64)


def aggregate_scores(
    probabilities: np.ndarray, weights: np.ndarray, labels: Sequence[str], decimals: int
) -> dict[str, float]:
    """Length-weighted mean of line probabilities per label, rounded; all zeros for no lines."""
    total = float(weights.sum())
    if total <= 0:
        return {label: 0.0 for label in labels}
    means = (probabilities * weights[:, None]).sum(axis=0) / total
    return {label: round(float(value), decimals) for label, value in zip(labels, means)}


def quality_filter_reason(scores: Mapping[str, float], rule: Mapping[str, Any]) -> str | None:
    """Reason a document fails the quality rule, or None when it is kept."""
    max_rand = rule.get("max_rand_score")
    if max_rand is not None and scores.get("rand", 0.0) > max_rand:
        return "quality_rand"
    for label, minimum in sorted((rule.get("min_scores") or {}).items()):
        if scores.get(label, 0.0) < minimum:
            return f"quality_min_{label}"
    return None


class QualityScorer:
    """Scores documents with the 9-label line model; one batched predict call per document."""

    def __init__(self, model_path: str, labels: Sequence[str], decimals: int):
        self.model_path = str(model_path)
        self.labels = list(labels)
        self.decimals = decimals
        self.model = None

    def setup(self) -> None:
        self.model = load_model(self.model_path)
        missing = set(self.labels) - set(model_labels(self.model))
        if missing:
            raise ValueError(f"quality model {self.model_path} lacks labels {sorted(missing)}")

    def scores(self, text: str) -> dict[str, float]:
        """The document's score for every label."""
        if self.model is None:
            self.setup()
        lines = scored_lines(text)
        return self.scores_from_texts(lines, [model_text(line) for line in lines])

    def scores_from_texts(self, lines: Sequence[str], texts: Sequence[str]) -> dict[str, float]:
        """Scores of a document given its non-empty lines and their model texts (one predict call)."""
        if self.model is None:
            self.setup()
        probabilities = predict_matrix(self.model, list(texts), self.labels)
        return aggregate_scores(probabilities, line_weights(lines), self.labels, self.decimals)

    def __getstate__(self):
        return {**self.__dict__, "model": None}


class QualityStage:
    """Document stage: stores the 9 label scores in ``doc.fields["scores"]`` and applies the rule.

    ``cfg``: ``model`` (path), ``labels``, ``decimals``, ``filter`` (``max_rand_score``,
    ``min_scores``); filter reasons ``quality_rand`` and ``quality_min_<label>``.
    """

    name = "quality"

    def __init__(self, cfg: Mapping[str, Any]):
        import pyarrow as pa

        self.scorer = QualityScorer(cfg["model"], cfg["labels"], cfg["decimals"])
        self.rule = cfg["filter"]
        self.columns = [pa.field("scores", pa.struct([pa.field(label, pa.float32()) for label in cfg["labels"]]))]

    def setup(self) -> None:
        self.scorer.setup()

    def process(self, doc) -> str | None:
        positions, texts = document_model_lines(doc)  # the line list fuzzy dedup already prepared
        doc.fields["scores"] = scores = self.scorer.scores_from_texts([doc.lines[i] for i in positions], texts)
        release_model_lines(doc)
        return quality_filter_reason(scores, self.rule)
