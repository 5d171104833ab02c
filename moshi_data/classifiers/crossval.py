"""K-fold cross-validation of the quality model by source document (``evaluation.folds``), on the
documents outside the held-out test split (``quality.holdout_percent``), which no fold uses.

Fold k holds out the documents whose normalised text (``quality.document_split_key``) hashes to k,
trains on the others with the shipped settings, and scores the held-out documents with the text job's
scorer. Every document outside the test split is scored once, by a model that never saw it (a document
whose training lines are all in the fold's training documents is left out, and counted): the figures
settings are chosen by, and the scores the filtering threshold is calibrated on. Fold models are cached
like the shipped one.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Mapping

from moshi_data.classifiers.common import cache_key, models_dir
from moshi_data.classifiers.quality import (
    LabelCorpus,
    build_label_data,
    label_sources,
    quality_model_spec,
    train_quality,
)
from moshi_data.classifiers.sources import language_filter
from moshi_data.pipeline.text.quality import QualityScorer


def fold_model_path(config: Mapping[str, Any], fold: int, folds: int, spec: Mapping[str, Any] | None = None) -> Path:
    """Cache path of fold model ``fold`` of ``folds`` (``spec``: the quality model spec, if computed)."""
    suffix = ".ftz" if config["quality"]["quantize"] else ".bin"
    key = cache_key([quality_model_spec(config) if spec is None else spec, "fold", fold, folds])
    return models_dir(config) / f"quality-cv{fold}of{folds}-{key}{suffix}"


def out_of_fold_scores(config: Mapping[str, Any], corpus: LabelCorpus | None = None,
                       log: Callable[[str], None] = print) -> tuple[list[dict], dict[str, list[str]]]:
    """``{"label", "id", "fold", "scores"}`` of every document outside the held-out test split, each
    scored by the fold model that did not train on it (capped per label and fold by
    ``quality.max_valid_documents_per_label``), in a stable order; and per label the ids left out of
    their scored fold (every training line of theirs in that fold's training documents). ``corpus``:
    the label documents of this run, if already read (sources are read, split and hashed once)."""
    folds = int(config["evaluation"]["folds"])
    quality = config["quality"]
    corpus = LabelCorpus(config) if corpus is None else corpus
    records = []
    left_out: dict[str, list[str]] = {label: [] for label in quality["labels"]}
    for fold in range(folds):
        data = build_label_data(config, corpus, fold=(fold, folds))
        path = fold_model_path(config, fold, folds, corpus.spec)
        if not path.exists():
            log(f"training quality model, cross-validation fold {fold + 1}/{folds} -> {path}")
            path.parent.mkdir(parents=True, exist_ok=True)
            train_quality(config, path, data)
        scorer = QualityScorer(str(path), quality["labels"], quality["decimals"])
        scorer.setup()
        for label, item in data.items():
            left_out[label] += item.left_out
            for doc_id, text in item.valid_documents:
                records.append({"label": label, "id": doc_id, "fold": fold, "scores": scorer.scores(text)})
    return records, left_out


def english_rand_ids(config: Mapping[str, Any], documents: Mapping[str, list[tuple[str, str]]] | None = None) -> set[str]:
    """Ids of the rand documents the text job's English LID keeps (the documents the quality stage sees)."""
    if documents is None:
        from moshi_data.classifiers.sources import iter_identified_documents

        sources, root = label_sources(config)
        rand = [doc for source in sources["rand"] for doc in iter_identified_documents(source, root)]
    else:
        rand = documents["rand"]
    english = language_filter(["en"])
    return {doc_id for doc_id, text in rand if english(text)}


def english_only(records: list[dict], english: set[str]) -> list[dict]:
    """The records of curated labels and of English rand documents."""
    return [record for record in records if record["label"] != "rand" or record["id"] in english]


def left_out_counts(left_out: Mapping[str, list[str]], english: set[str]) -> dict[str, int]:
    """How many documents each label has left out of a scored side, and of them English rand (``rand_en``:
    the rand documents the figures use)."""
    return {**{label: len(ids) for label, ids in left_out.items()},
            "rand_en": sum(doc_id in english for doc_id in left_out.get("rand", []))}


def main(argv=None) -> dict:
    """Cross-validated document figures of one setting (``--set`` overrides) on the documents outside
    the held-out test split, rand restricted to the English CC documents, and the DCLM human-label AUC
    on the dev half of the DCLM documents (mean rand score of the fold models): the command settings
    are chosen by (the held-out test split and the DCLM test half are not used)."""
    import argparse
    import json

    from moshi_data.classifiers.evaluation import document_figures, human_label_auc, human_labelled_side
    from moshi_data.pipeline.config import load_config

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--config", default="classifiers.yaml")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override")
    args = parser.parse_args(argv)
    config = load_config(args.config, args.set)
    corpus = LabelCorpus(config)
    english = english_rand_ids(config, corpus.documents)
    scored, left_out = out_of_fold_scores(config, corpus)
    records = english_only(scored, english)
    figures = document_figures([(r["label"], r["scores"]) for r in records], config["quality"]["labels"])
    summary = {name: round(figures[name], 4) for name in ("wiki_vs_rand_doc_auc", "curated_vs_rand_doc_auc", "macro_f1")}
    folds = int(config["evaluation"]["folds"])
    human = human_label_auc([fold_model_path(config, fold, folds, corpus.spec) for fold in range(folds)],
                            human_labelled_side(config, "dev"), config)
    summary["human_labels_dev_auc"] = round(human["auc_1_minus_rand"], 4)
    summary["english_rand_documents"] = figures["documents"]["rand"]
    summary["left_out_documents"] = left_out_counts(left_out, english)
    print(json.dumps({"overrides": args.set, **summary}))
    return summary


if __name__ == "__main__":
    main()
