"""Validation metrics of the trained classifiers (used by ``train`` and ``evaluate``).

Every quality figure comes from the document-split validation side (``quality.py``): line-level
per-label P/R/F1 on validation lines, and document-level AUCs on validation documents scored with
the text job's own scorer (length-weighted mean of line probabilities, rounded like the job).
"""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from moshi_data.classifiers.common import in_hash_share, precision_recall_f1, roc_auc
from moshi_data.classifiers.sources import resolve_root
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


def split_metrics(model_path: Path, valid: list[tuple[str, str]], labels: list[str]) -> tuple[dict, Any]:
    """Per-label P/R/F1 and confusion on (label, text) validation lines, plus the probability matrix."""
    matrix = predict_matrix(load_model(str(model_path)), [text for _, text in valid], labels)
    predicted = [labels[i] for i in matrix.argmax(axis=1)]
    metrics = precision_recall_f1([label for label, _ in valid], predicted, labels)
    return metrics, (valid, matrix)


def quality_metrics(model_path: Path, valid: list[tuple[str, str]], labels: list[str]) -> dict:
    """9-label line metrics and the wiki-vs-rand line AUC (score P(wiki), wiki positive, rand negative)."""
    metrics, (valid, matrix) = split_metrics(model_path, valid, labels)
    wiki = labels.index("wiki")
    positives = [row[wiki] for (label, _), row in zip(valid, matrix) if label == "wiki"]
    negatives = [row[wiki] for (label, _), row in zip(valid, matrix) if label == "rand"]
    metrics["wiki_vs_rand_line_auc"] = roc_auc(positives, negatives)
    return metrics


def held_out_document_metrics(model_path: Path, valid_documents: list[dict], config: Mapping[str, Any],
                              english: set[str]) -> dict:
    """Document-level figures of the held-out test split, scored exactly as the text job scores: rand =
    its English CC documents (what the quality stage sees); under ``all_languages``, rand of every language."""
    quality = config["quality"]
    scorer = QualityScorer(str(model_path), quality["labels"], quality["decimals"])
    scorer.setup()
    scored = [(doc["label"], doc["id"], scorer.scores(doc["text"])) for doc in valid_documents]
    figures = document_figures([(label, scores) for label, doc_id, scores in scored
                                if label != "rand" or doc_id in english], quality["labels"])
    figures["all_languages"] = document_figures([(label, scores) for label, _, scores in scored], quality["labels"])
    figures["english_rand_scores"] = {doc_id: scores["rand"] for label, doc_id, scores in scored
                                      if label == "rand" and doc_id in english}
    return figures


def document_figures(scored: list[tuple[str, Mapping[str, float]]], labels: list[str]) -> dict:
    """From (true label, document scores): wiki-vs-rand AUC (wiki score), curated-vs-rand AUC (1 - rand;
    all 8 curated labels positive), per-label P/R/F1 of the arg-max label, rand-score quantiles per label."""
    truth = [label for label, _ in scored]
    by_label = {label: [s for t, s in scored if t == label] for label in labels}
    rand = by_label["rand"]
    metrics = precision_recall_f1(truth, [max(labels, key=lambda label: s[label]) for _, s in scored], labels)
    metrics["wiki_vs_rand_doc_auc"] = roc_auc([s["wiki"] for s in by_label["wiki"]], [s["wiki"] for s in rand])
    curated = [1.0 - s["rand"] for label in labels if label != "rand" for s in by_label[label]]
    metrics["curated_vs_rand_doc_auc"] = roc_auc(curated, [1.0 - s["rand"] for s in rand])
    metrics["rand_score_quantiles"] = {
        label: [round(float(q), 3) for q in np.quantile([s["rand"] for s in items], [0.1, 0.25, 0.5, 0.75, 0.9])]
        for label, items in by_label.items() if items
    }
    metrics["documents"] = {label: len(items) for label, items in by_label.items()}
    return metrics


def read_human_labelled(labelled_jsonl: Path) -> list[dict]:
    with open(labelled_jsonl, encoding="utf-8") as handle:
        return [json.loads(raw) for raw in handle if raw.strip()]


def human_labelled_side(config: Mapping[str, Any], side: str) -> list[dict]:
    """The DCLM human-labelled documents of one side: "test" (the human-label target is read there) or
    "dev" (may inform the choice of settings), by a stable hash of the text (the file has no ids) and
    ``evaluation.human_labeled_holdout_percent``."""
    evaluation = config["evaluation"]
    records = read_human_labelled(resolve_root(config["data_root"]) / evaluation["human_labeled"])
    return [record for record in records
            if ("test" if in_hash_share(record["text"], evaluation["human_labeled_holdout_percent"], "human-split:")
                else "dev") == side]


def human_label_auc(model_paths: Path | list[Path], records: list[dict], config: Mapping[str, Any]) -> dict:
    """AUC of the document quality score 1 - rand against human good (1) / bad (0) labels; with several
    models (the cross-validation folds), the rand score is their mean."""
    quality = config["quality"]
    scorers = [QualityScorer(str(path), quality["labels"], quality["decimals"])
               for path in (model_paths if isinstance(model_paths, list) else [model_paths])]
    for scorer in scorers:
        scorer.setup()
    good, bad = [], []  # rand scores
    for record in records:
        score = float(np.mean([scorer.scores(record["text"])["rand"] for scorer in scorers]))
        (good if int(record["label"]) == 1 else bad).append(score)
    return {"auc_1_minus_rand": roc_auc([1 - s for s in good], [1 - s for s in bad]), "good": len(good),
            "bad": len(bad), "rand_scores": {"good": good, "bad": bad}}


def rand_documents_kept(model_path: Path, config: Mapping[str, Any], corpus, english: set[str],
                        scored: Mapping[str, float]) -> dict:
    """What the default ``make text-corpus`` run can show of the quality rule: the English rand
    documents (its default input's CC pages) scored by the shipped model, split by whether the
    document is in the held-out test split (never trained on; ``held_out_left_out``: held out, but
    every training line of it is in a training document, so left out of the figures) or was trained
    on (scored in-sample); ``{side: {documents, kept, kept_share}}`` at the configured
    ``quality.filter.max_rand_score``.
    ``corpus``: the ``quality.LabelCorpus``; ``scored``: rand scores already computed by id (the
    held-out documents, ``held_out_document_metrics``), the others are scored here."""
    from moshi_data.classifiers.quality import is_held_out

    quality = config["quality"]
    scorer = QualityScorer(str(model_path), quality["labels"], quality["decimals"])
    threshold = quality["filter"]["max_rand_score"]
    left_out = set(corpus.shipped["rand"].left_out)
    sides: dict[str, list[bool]] = {"held_out": [], "held_out_left_out": [], "trained_on": []}
    for (doc_id, text), lines, key in zip(corpus.documents["rand"], corpus.lines["rand"], corpus.split_keys["rand"]):
        if doc_id in english and lines:
            side = ("trained_on" if not is_held_out(quality, "rand", key)
                    else "held_out_left_out" if doc_id in left_out else "held_out")
            score = scored[doc_id] if doc_id in scored else scorer.scores(text)["rand"]
            sides[side].append(score <= threshold)
    return {side: {"documents": len(kept), "kept": sum(kept), "kept_share": sum(kept) / len(kept) if kept else 0.0}
            for side, kept in sides.items()}


def check_targets(figures: Mapping[str, float], targets: Mapping[str, float]) -> dict[str, dict]:
    """``{name: {value, min, passed}}`` for every configured target (a missing figure fails)."""
    checked = {}
    for name, minimum in targets.items():
        value = figures.get(name)
        checked[name] = {"value": value, "min": minimum, "passed": value is not None and value >= minimum}
    return checked


def ensure_models_with_metrics(config: Mapping[str, Any], line_samples: str | None = None,
                               corpus=None, english: set[str] | None = None) -> tuple[dict, dict, dict]:
    """Train missing models (or reuse cached ones) and compute both validation reports.

    Returns (model paths, fuzzy-dedup metrics, quality metrics); the quality metrics hold the
    line-level figures and, under ``documents``, those of the held-out test documents (both derived
    from the label data, not stored). ``corpus`` (``quality.LabelCorpus``) and ``english``: the label
    documents and the English rand ids, if already computed."""
    from moshi_data.classifiers.crossval import english_rand_ids
    from moshi_data.classifiers.models import ensure_models
    from moshi_data.classifiers.quality import LabelCorpus, validation_documents, validation_examples
    from moshi_data.pipeline.text.fuzzy_dedup import DUP_LABEL, KEEP_LABEL

    corpus = LabelCorpus(config) if corpus is None else corpus
    english = english_rand_ids(config, corpus.documents) if english is None else english
    paths = ensure_models(config, line_samples, quality_corpus=corpus)
    fuzzy, (valid, matrix) = split_metrics(paths["fuzzy_dedup"], read_labelled(Path(f"{paths['fuzzy_dedup']}.valid.txt")),
                                           [DUP_LABEL, KEEP_LABEL])
    threshold = config["fuzzy_dedup"]["threshold"]
    flagged = [DUP_LABEL if row[0] >= threshold else KEEP_LABEL for row in matrix]
    at_threshold = precision_recall_f1([label for label, _ in valid], flagged, [DUP_LABEL, KEEP_LABEL])
    fuzzy["at_threshold"] = {"threshold": threshold, **at_threshold["per_label"][DUP_LABEL]}
    quality = quality_metrics(paths["quality"], validation_examples(corpus.shipped), config["quality"]["labels"])
    quality["documents"] = held_out_document_metrics(
        paths["quality"], validation_documents(corpus.shipped), config, english)
    return paths, fuzzy, quality


def exact_dedup_survivors(pages: list[list[str]], dedup: Mapping[str, Any]) -> list[list[str]]:
    """The lines of each page that the text job's exact line dedup keeps, the pages forming one group."""
    from moshi_data.pipeline.text import line_dedup
    from moshi_data.pipeline.text.normalize import line_hashes

    hashes = [line_hashes(page) for page in pages]
    keys = np.repeat(np.arange(len(pages), dtype=np.uint64), [len(h) for h in hashes])
    table = line_dedup.repeated(line_dedup.count_lines(np.concatenate(hashes), keys))
    kept = []
    for key, (page, page_hashes) in enumerate(zip(pages, hashes)):
        counts, first = line_dedup.lookup(table, page_hashes)
        _, remove = line_dedup.duplicate_mask(counts, first, key, int(dedup["threshold"]), bool(dedup["keep_canonical"]))
        kept.append([line for line, drop in zip(page, remove) if not drop])
    return kept


def fuzzy_on_wet_pages(fuzzy_model: Path, config: Mapping[str, Any]) -> dict:
    """On the unique pages of the shared WET files (the same page in several fixture files counted
    once): lines exact dedup keeps, the share of those the fuzzy stage removes, and how many of the
    hand-identified boilerplate lines (``evaluation.fuzzy_pages.boilerplate``) it removes."""
    from moshi_data.classifiers.sources import iter_identified_documents, resolve_root
    from moshi_data.pipeline.config import load_config
    from moshi_data.pipeline.text.fuzzy_dedup import FuzzyDedupStage

    settings = config["evaluation"]["fuzzy_pages"]
    root = resolve_root(config["data_root"])
    texts = {text for source in settings["sources"] for _, text in iter_identified_documents(source, root)}
    pages = [[line for line in text.split("\n") if line.strip()] for text in sorted(texts)]
    survivors = exact_dedup_survivors(pages, load_config("text_corpus")["line_dedup"])
    stage = FuzzyDedupStage({"model": str(fuzzy_model), **config["fuzzy_dedup"]})
    removed: list[str] = []
    for page in survivors:
        removed += [line for line, drop in zip(page, stage.removed_line_mask(page)) if drop]
    kept_lines = sum(len(page) for page in survivors)
    boilerplate = set(settings["boilerplate"])
    survived_boilerplate = {line for page in survivors for line in page if line in boilerplate}
    return {"pages": len(pages), "lines": sum(len(page) for page in pages), "exact_dedup_kept": kept_lines,
            "fuzzy_removed": len(removed), "fuzzy_removed_share": len(removed) / kept_lines if kept_lines else 0.0,
            "boilerplate_after_exact": len(survived_boilerplate),
            "boilerplate_removed": len(survived_boilerplate & set(removed)),
            "most_removed": [line for line, _ in Counter(removed).most_common(10)]}
