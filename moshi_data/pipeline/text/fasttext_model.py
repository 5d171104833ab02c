"""Shared helpers for the line-level fastText classifiers (fuzzy dedup and quality).

fastText models cannot be pickled: stage objects keep only the model path and load the model in
``setup()`` (once per worker process, cached here by path).
"""
from __future__ import annotations

import re
import threading
from typing import Sequence

import numpy as np

LABEL_PREFIX = "__label__"
_WHITESPACE = re.compile(r"\s+")
_MODELS: dict[str, object] = {}
_LOCK = threading.Lock()


def model_text(line: str) -> str:
    """The text a classifier sees for a line (train and predict): lower case, one space between words."""
    return _WHITESPACE.sub(" ", line).strip().lower()


def model_lines(lines: Sequence[str]) -> tuple[list[int], list[str]]:
    """Positions of the non-empty lines and their model texts."""
    positions = [index for index, line in enumerate(lines) if line.strip()]
    return positions, [model_text(lines[index]) for index in positions]


MODEL_LINES = "_model_lines"  # doc.fields key of the shared line list (not an output column)


def document_model_lines(doc) -> tuple[list[int], list[str]]:
    """Positions of the non-empty lines of ``doc`` and their model texts, computed once per line list and
    shared by every line classifier of the document (fuzzy dedup, then quality on the lines it kept).
    The cache is tied to the ``doc.lines`` list object: a stage that drops lines builds a new list, so a
    stale cache is never used (``keep_model_lines`` carries it over to the kept lines)."""
    cached = doc.fields.get(MODEL_LINES)
    if cached is not None and cached[0] is doc.lines:
        return cached[1], cached[2]
    positions, texts = model_lines(doc.lines)
    doc.fields[MODEL_LINES] = (doc.lines, positions, texts)
    return positions, texts


def keep_model_lines(doc, positions: list[int], texts: list[str], keep: Sequence[bool]) -> None:
    """After ``doc.drop_lines(keep)``: the cached model texts of the kept lines, re-tied to the new list."""
    new_index = {}
    count = 0
    for index, flag in enumerate(keep):
        if flag:
            new_index[index] = count
            count += 1
    kept = [(new_index[p], t) for p, t in zip(positions, texts) if keep[p]]
    doc.fields[MODEL_LINES] = (doc.lines, [p for p, _ in kept], [t for _, t in kept])


def release_model_lines(doc) -> None:
    """Drop the shared line list once the last line classifier has run (it is not an output)."""
    doc.fields.pop(MODEL_LINES, None)


def load_model(path: str):
    """Load a fastText model once per process (thread-safe); remote paths are read through Beam FileSystems."""
    with _LOCK:
        model = _MODELS.get(path)
        if model is None:
            import fasttext

            model = fasttext.load_model(_local_copy(path))
            _MODELS[path] = model
        return model


def _local_copy(path: str) -> str:
    if "://" not in path:
        return path
    import os
    import tempfile

    from apache_beam.io.filesystems import FileSystems

    handle, local = tempfile.mkstemp(suffix=os.path.basename(path))
    with os.fdopen(handle, "wb") as out, FileSystems.open(path) as src:
        while chunk := src.read(1 << 20):
            out.write(chunk)
    return local


def predict_matrix(model, texts: Sequence[str], labels: Sequence[str]) -> np.ndarray:
    """One batched ``predict`` call: a (len(texts), len(labels)) matrix of P(label | text)."""
    if not texts:
        return np.zeros((0, len(labels)), dtype=np.float64)
    index = {LABEL_PREFIX + label: column for column, label in enumerate(labels)}
    predicted_labels, predicted_probs = model.predict(list(texts), k=len(labels), threshold=0.0)
    matrix = np.zeros((len(texts), len(labels)), dtype=np.float64)
    for row, (names, probs) in enumerate(zip(predicted_labels, predicted_probs)):
        for name, prob in zip(names, probs):
            column = index.get(name)
            if column is not None:
                matrix[row, column] = min(float(prob), 1.0)
    return matrix


def model_labels(model) -> list[str]:
    """Label names of a supervised model without the ``__label__`` prefix, in model order."""
    return [name[len(LABEL_PREFIX):] for name in model.get_labels()]
