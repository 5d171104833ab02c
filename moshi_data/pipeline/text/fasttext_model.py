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
