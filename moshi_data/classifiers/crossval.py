"""K-fold cross-validation of the quality model by source document (``evaluation.folds``).

Fold k holds out the documents whose id hashes to k, trains on the others with the shipped settings,
and scores the held-out documents with the text job's scorer. Every document is scored once, by a
model that never saw it, so document-level AUCs and the calibration of the filtering threshold use
all real CC documents instead of one validation share. Fold models are cached like the shipped one.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Mapping

from moshi_data.classifiers.common import cache_key, models_dir
from moshi_data.classifiers.quality import build_label_data, label_documents, quality_model_spec, train_quality
from moshi_data.pipeline.text.quality import QualityScorer


def fold_model_path(config: Mapping[str, Any], fold: int, folds: int) -> Path:
    suffix = ".ftz" if config["quality"]["quantize"] else ".bin"
    key = cache_key([quality_model_spec(config), "fold", fold, folds])
    return models_dir(config) / f"quality-cv{fold}of{folds}-{key}{suffix}"


def out_of_fold_scores(config: Mapping[str, Any], log: Callable[[str], None] = print) -> list[dict]:
    """``{"label", "id", "fold", "scores"}`` of every held-out document of every fold (capped per
    label and fold by ``quality.max_valid_documents_per_label``), in a stable order."""
    folds = int(config["evaluation"]["folds"])
    quality = config["quality"]
    documents = label_documents(config)
    records = []
    for fold in range(folds):
        data = build_label_data(config, documents, fold=(fold, folds))
        path = fold_model_path(config, fold, folds)
        if not path.exists():
            log(f"training quality model, cross-validation fold {fold + 1}/{folds} -> {path}")
            path.parent.mkdir(parents=True, exist_ok=True)
            train_quality(config, path, data)
        scorer = QualityScorer(str(path), quality["labels"], quality["decimals"])
        scorer.setup()
        for label, item in data.items():
            for doc_id, text in item.valid_documents:
                records.append({"label": label, "id": doc_id, "fold": fold, "scores": scorer.scores(text)})
    return records


def english_rand_ids(config: Mapping[str, Any]) -> set[str]:
    """Ids of the rand documents the text job's English LID keeps (the documents the quality stage sees)."""
    from moshi_data.classifiers.quality import label_sources
    from moshi_data.classifiers.sources import iter_identified_documents

    sources, root = label_sources(config)
    return {doc_id for source in sources["rand"]
            for doc_id, _ in iter_identified_documents({**source, "languages": ["en"]}, root)}


def main(argv=None) -> dict:
    """Cross-validated document figures of one setting (``--set`` overrides), rand restricted to the
    English CC documents: the command used to choose between settings without the DCLM labels."""
    import argparse
    import json

    from moshi_data.classifiers.evaluation import document_figures
    from moshi_data.pipeline.config import load_config

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--config", default="classifiers.yaml")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override")
    args = parser.parse_args(argv)
    config = load_config(args.config, args.set)
    english = english_rand_ids(config)
    records = [r for r in out_of_fold_scores(config) if r["label"] != "rand" or r["id"] in english]
    figures = document_figures([(r["label"], r["scores"]) for r in records], config["quality"]["labels"])
    summary = {name: round(figures[name], 4) for name in ("wiki_vs_rand_doc_auc", "curated_vs_rand_doc_auc", "macro_f1")}
    summary["english_rand_documents"] = figures["documents"]["rand"]
    print(json.dumps({"overrides": args.set, **summary}))
    return summary


if __name__ == "__main__":
    main()
