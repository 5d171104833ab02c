"""Quality bars of the trained classifiers (``make eval-classifiers``), all on the document-split
validation side: per-label P/R/F1 and confusion matrices (lines and documents), macro-F1, wiki-vs-rand
and curated-vs-rand document AUCs with the text job's aggregation, and the AUC of (1 - rand) on human
good/bad labels (DCLM agreement set). Exits non-zero when a target (``evaluation.targets``) is missed."""
from __future__ import annotations

import json
import sys
from pathlib import Path

from moshi_data.classifiers.calibration import calibrate, format_calibration
from moshi_data.classifiers.common import format_metrics
from moshi_data.classifiers.crossval import english_rand_ids, out_of_fold_scores
from moshi_data.classifiers.evaluation import (
    check_targets,
    document_figures,
    ensure_models_with_metrics,
    fuzzy_on_wet_pages,
    human_label_auc,
    rand_documents_kept,
)
from moshi_data.classifiers.sources import resolve_root
from moshi_data.pipeline.command import RunFailed, command_parser, run_command


def main(argv=None) -> dict | int:
    """The figures (a dict); exit status 1 when a target is missed, unless ``--report-only``."""
    parser = command_parser(__name__, __doc__, config="classifiers")
    parser.add_argument("--line-samples", help="line samples to train the fuzzy model on if it is missing")
    parser.add_argument("--output", help="write the metrics as JSON here")
    parser.add_argument("--report-only", action="store_true", help="exit 0 even when a target is missed")
    return run_command(parser, argv, _main)


def _main(args) -> dict:
    config = args.cfg
    paths, fuzzy, quality = ensure_models_with_metrics(config, args.line_samples)
    human = human_label_auc(paths["quality"], resolve_root(config["data_root"]) / config["evaluation"]["human_labeled"], config)
    labels = config["quality"]["labels"]
    folds = int(config["evaluation"]["folds"])
    every_language = out_of_fold_scores(config)
    english = english_rand_ids(config)  # the quality stage only sees documents the LID keeps as English
    oof = [record for record in every_language if record["label"] != "rand" or record["id"] in english]
    documents = document_figures([(record["label"], record["scores"]) for record in oof], labels)
    all_rand = document_figures([(record["label"], record["scores"]) for record in every_language], labels)
    held_out = quality["documents"]
    pages = fuzzy_on_wet_pages(paths["fuzzy_dedup"], config)
    print(format_metrics("fuzzy dedup (lines of held-out documents)", fuzzy))
    dup = fuzzy["at_threshold"]
    print(f"fuzzy dedup, duplicate lines of held-out documents at P(dup) >= {dup['threshold']}: precision "
          f"{dup['precision']:.3f}, recall {dup['recall']:.3f} ({dup['support']} duplicate lines)")
    print(f"fuzzy dedup on {pages['pages']} unique shared WET pages ({pages['lines']} lines): exact dedup keeps "
          f"{pages['exact_dedup_kept']}, fuzzy dedup removes {pages['fuzzy_removed']} of those "
          f"({pages['fuzzy_removed_share']:.1%}); hand-identified navigation lines left by exact dedup: "
          f"{pages['boilerplate_after_exact']}, removed by fuzzy dedup: {pages['boilerplate_removed']}; "
          f"most removed: {pages['most_removed'][:5]}")
    print(format_metrics("quality, 9 labels (shipped model: validation lines of its held-out documents)", quality))
    print(format_metrics(f"quality, 9 labels ({folds}-fold cross-validation by document: arg-max of the job's "
                         "document scores; rand = the English CC documents)", documents))
    print(f"with the CC documents of every language as rand ({all_rand['documents']['rand']}): wiki vs rand AUC "
          f"{all_rand['wiki_vs_rand_doc_auc']:.4f}, curated vs rand {all_rand['curated_vs_rand_doc_auc']:.4f}")
    print("rand score quantiles (10/25/50/75/90 %) of out-of-fold documents per true label: "
          + "; ".join(f"{label} {q}" for label, q in documents["rand_score_quantiles"].items()))
    print(f"shipped model, its held-out documents: wiki vs rand AUC {held_out['wiki_vs_rand_doc_auc']:.4f}, curated vs "
          f"rand {held_out['curated_vs_rand_doc_auc']:.4f} ({held_out['documents']['rand']} rand documents); "
          f"lines: wiki vs rand AUC {quality['wiki_vs_rand_line_auc']:.4f}")
    figures = {"wiki_vs_rand_doc_auc": documents["wiki_vs_rand_doc_auc"],
               "curated_vs_rand_doc_auc": documents["curated_vs_rand_doc_auc"],
               "human_labels_auc": human["auc_1_minus_rand"]}
    targets = check_targets(figures, config["evaluation"]["targets"])
    print(f"macro-F1 over {len(labels)} labels: validation lines {quality['macro_f1']:.4f}, "
          f"out-of-fold documents {documents['macro_f1']:.4f}")
    cc_rand = [record["scores"]["rand"] for record in oof if record["label"] == "rand"]
    calibration = calibrate(cc_rand, human["rand_scores"]["good"], human["rand_scores"]["bad"],
                            config["evaluation"]["calibration"])
    print(format_calibration(calibration))
    configured = config["quality"]["filter"]["max_rand_score"]
    rand_kept = rand_documents_kept(paths["quality"], config, english)
    print(f"shipped model at max_rand_score {configured}, English CC rand documents (the default text-corpus "
          "input's CC pages): " + "; ".join(
              f"{name} {rand_kept[side]['kept']}/{rand_kept[side]['documents']} kept ({rand_kept[side]['kept_share']:.1%})"
              for side, name in (("held_out", "held out of its training"), ("trained_on", "trained on (in-sample)"))))
    if configured != calibration["chosen_max_rand_score"]:
        print(f"note: quality.filter.max_rand_score is {configured}, the calibration chooses "
              f"{calibration['chosen_max_rand_score']}")
    print(f"targets ({folds}-fold out-of-fold documents, rand = {documents['documents']['rand']} English CC documents; human labels: {human['good']} good / {human['bad']} bad "
          "DCLM documents, shipped model):")
    for name, target in targets.items():
        print(f"{name}: {target['value']:.4f} (target >= {target['min']}: {'PASS' if target['passed'] else 'FAIL'})")
    passed = all(target["passed"] for target in targets.values())
    result = {"fuzzy_dedup": fuzzy, "quality": quality, "cross_validation": documents,
              "cross_validation_all_languages": all_rand, "human_labels": human,
              "fuzzy_wet_pages": pages, "calibration": calibration, "rand_documents_kept": rand_kept,
              "targets": targets, "targets_passed": passed}
    if args.output:
        Path(args.output).write_text(json.dumps(result, indent=2, sort_keys=True), encoding="utf-8")
    if not passed and not args.report_only:
        missed = [name for name, target in targets.items() if not target["passed"]]
        raise RunFailed(f"{len(missed)} of {len(targets)} targets missed: {', '.join(missed)} (--report-only to exit 0)")
    return result


def exit_status(result: dict | int) -> int:
    """The exit status of :func:`main`'s result: 1 when a target is missed (an int result is one)."""
    if isinstance(result, dict):
        return 0 if result["targets_passed"] else 1
    return result


if __name__ == "__main__":
    sys.exit(exit_status(main()))
