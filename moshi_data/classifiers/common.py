"""Shared pieces of classifier training: stable hashing and splits, fastText training, metrics, cache keys."""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from moshi_data.pipeline.config import REPO_ROOT
from moshi_data.pipeline.text.fasttext_model import LABEL_PREFIX, model_text


def stable_hash(text: str, salt: str = "") -> int:
    """64-bit hash that is the same on every machine and run (unlike ``hash``)."""
    return int.from_bytes(hashlib.blake2b((salt + text).encode("utf-8"), digest_size=8).digest(), "little")


def in_hash_share(key: str, percent: float, salt: str) -> bool:
    """Whether ``key`` (a line, a document id or text) falls in a stable ``percent`` share, drawn by its
    salted hash: the one rule behind every train/validation and test/dev split (one salt per split)."""
    return stable_hash(key, salt) % 10000 < percent * 100


def stable_sample(lines: Iterable[str], limit: int, salt: str) -> list[str]:
    """Deterministic pseudo-random subset of at most ``limit`` distinct lines (in hash order)."""
    return sorted(set(lines), key=lambda line: (stable_hash(line, salt), line))[:limit]


def write_labelled(path: Path, examples: Sequence[tuple[str, str]]) -> None:
    """fastText supervised format: ``__label__<label> <text>`` per line."""
    with open(path, "w", encoding="utf-8") as handle:
        for label, text in examples:
            handle.write(f"{LABEL_PREFIX}{label} {text}\n")


NAN_ATTEMPTS = 6


def _train_and_save(train_path: str, params: dict, quantize: bool, output: str) -> None:
    """Train in this process and save to ``output`` (run by ``python -m moshi_data.classifiers.common``)."""
    import fasttext

    model = fasttext.train_supervised(input=train_path, verbose=0, **params)
    if quantize:
        model.quantize(input=train_path, retrain=False, qnorm=True)
    model.save_model(output)


def train_fasttext(train_path: Path, params: Mapping[str, Any], quantize: bool, output: Path) -> Path:
    """Train a supervised fastText model and save it atomically (``.ftz`` when quantized).

    fastText 0.9.2 sometimes stops with "Encountered NaN" depending on the state of the process it
    runs in (seen repeatedly inside long-lived processes, rarely in fresh ones), so each attempt runs
    in a fresh Python process; the learning rate halves every two failed attempts. With one thread
    and a fixed seed (the configs' ``thread: 1, seed: 0``) training is byte-deterministic given the
    data (tested); models are cached by config and data digest to save the training time."""
    output.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(dir=output.parent, suffix=".tmp")
    os.close(handle)
    errors = []
    for attempt in range(NAN_ATTEMPTS):
        attempt_params = {**dict(params), "lr": float(params["lr"]) * 0.5 ** (attempt // 2)}
        job = json.dumps([str(train_path), attempt_params, bool(quantize), tmp])
        result = subprocess.run([sys.executable, "-m", "moshi_data.classifiers.common", job], capture_output=True, text=True,
                                cwd=REPO_ROOT)
        if result.returncode == 0:
            os.chmod(tmp, 0o644)
            os.replace(tmp, output)
            return output
        errors.append(result.stderr.strip().splitlines()[-1] if result.stderr.strip() else f"exit {result.returncode}")
        if "NaN" not in errors[-1]:
            break
        print(f"fastText: {errors[-1]} (attempt {attempt + 1}, lr {attempt_params['lr']}); retrying")
    os.unlink(tmp)
    raise RuntimeError(f"fastText training failed: {errors}")


def precision_recall_f1(truth: Sequence[str], predicted: Sequence[str], labels: Sequence[str]) -> dict:
    """Per-label precision/recall/F1/support, macro-F1, accuracy and the confusion matrix (rows = truth)."""
    index = {label: i for i, label in enumerate(labels)}
    confusion = np.zeros((len(labels), len(labels)), dtype=np.int64)
    for t, p in zip(truth, predicted):
        confusion[index[t], index[p]] += 1
    per_label = {}
    for i, label in enumerate(labels):
        tp = int(confusion[i, i])
        predicted_count, support = int(confusion[:, i].sum()), int(confusion[i, :].sum())
        precision = tp / predicted_count if predicted_count else 0.0
        recall = tp / support if support else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        per_label[label] = {"precision": precision, "recall": recall, "f1": f1, "support": support}
    total = int(confusion.sum())
    return {
        "per_label": per_label,
        "macro_f1": float(np.mean([m["f1"] for m in per_label.values()])) if per_label else 0.0,
        "accuracy": float(np.trace(confusion)) / total if total else 0.0,
        "confusion": confusion.tolist(),
        "labels": list(labels),
    }


def roc_auc(positive_scores: Sequence[float], negative_scores: Sequence[float]) -> float:
    """Area under the ROC curve = P(score of a positive > score of a negative), ties counted half."""
    positives = np.asarray(positive_scores, dtype=np.float64)
    negatives = np.asarray(negative_scores, dtype=np.float64)
    if not len(positives) or not len(negatives):
        raise ValueError("AUC needs at least one positive and one negative example")
    scores = np.concatenate([positives, negatives])
    order = scores.argsort(kind="mergesort")
    ranks = np.empty(len(scores), dtype=np.float64)
    sorted_scores = scores[order]
    start = 0
    while start < len(scores):
        end = start
        while end + 1 < len(scores) and sorted_scores[end + 1] == sorted_scores[start]:
            end += 1
        ranks[order[start : end + 1]] = (start + end) / 2 + 1
        start = end + 1
    positive_rank_sum = ranks[: len(positives)].sum()
    return float((positive_rank_sum - len(positives) * (len(positives) + 1) / 2) / (len(positives) * len(negatives)))


def format_metrics(title: str, metrics: Mapping[str, Any]) -> str:
    """Human-readable per-label table and confusion matrix."""
    labels = metrics["labels"]
    lines = [f"== {title}: accuracy {metrics['accuracy']:.3f}, macro-F1 {metrics['macro_f1']:.3f}",
             f"{'label':>8} {'prec':>6} {'rec':>6} {'f1':>6} {'n':>6}"]
    for label in labels:
        m = metrics["per_label"][label]
        lines.append(f"{label:>8} {m['precision']:6.3f} {m['recall']:6.3f} {m['f1']:6.3f} {m['support']:6d}")
    lines.append("confusion (rows = truth, columns = predicted):")
    lines.append(" " * 9 + " ".join(f"{label[:6]:>6}" for label in labels))
    for label, row in zip(labels, metrics["confusion"]):
        lines.append(f"{label[:8]:>8} " + " ".join(f"{count:6d}" for count in row))
    return "\n".join(lines)


def cache_key(payload: Any) -> str:
    """Short digest of a JSON-serialisable training description."""
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode("utf-8")).hexdigest()[:16]


def models_dir(config: Mapping[str, Any]) -> Path:
    path = Path(config["models_dir"])
    return path if path.is_absolute() else REPO_ROOT / path


def examples_from_lines(label: str, lines: Iterable[str]) -> list[tuple[str, str]]:
    return [(label, model_text(line)) for line in lines]


if __name__ == "__main__":
    _train_and_save(*json.loads(sys.argv[1]))
