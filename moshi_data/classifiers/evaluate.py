"""Quality bars of the trained classifiers (``make eval-classifiers``), read on the held-out test split
(``quality.holdout_percent`` of every label's documents, by document hash: outside every
cross-validation fold, never trained on by the shipped model): per-label P/R/F1 and confusion matrices
(lines and documents), macro-F1, wiki-vs-rand and curated-vs-rand document AUCs with the text job's
aggregation, and the AUC of (1 - rand) on human good/bad labels (DCLM agreement set). Cross-validation
on the other documents gives the figures settings are chosen by and calibrates the filtering threshold.
Exits non-zero when a target (``evaluation.targets``) is missed (0 with ``--report-only``)."""
from __future__ import annotations

import json
import sys
from pathlib import Path

from moshi_data.classifiers.calibration import calibrate, format_calibration
from moshi_data.classifiers.common import format_metrics
from moshi_data.classifiers.crossval import english_only, english_rand_ids, left_out_counts, out_of_fold_scores
from moshi_data.classifiers.evaluation import (
    check_targets,
    document_figures,
    ensure_models_with_metrics,
    fuzzy_on_wet_pages,
    human_label_auc,
    human_labelled_side,
    rand_documents_kept,
)
from moshi_data.classifiers.quality import LabelCorpus
from moshi_data.pipeline.command import RunFailed, command_parser, exit_status, run_command


def main(argv=None) -> dict | int:
    """The figures (a dict, exit status 0); 1 when a target is missed, unless ``--report-only`` (then the
    same report and exit status 0, as ``moshi-data eval-classifiers --report-only``)."""
    parser = command_parser(__name__, __doc__, config="classifiers")
    parser.add_argument("--line-samples", help="line samples to train the fuzzy model on if it is missing")
    parser.add_argument("--output", help="write the metrics as JSON here")
    parser.add_argument("--report-only", action="store_true", help="exit 0 even when a target is missed")
    return run_command(parser, argv, _main)


def _main(args) -> dict:
    config = args.cfg
    labels = config["quality"]["labels"]
    folds = int(config["evaluation"]["folds"])
    corpus = LabelCorpus(config)  # read, split and hashed once: the shipped model, the folds and the reports share it
    english = english_rand_ids(config, corpus.documents)  # the quality stage only sees documents the LID keeps as English
    paths, fuzzy, quality = ensure_models_with_metrics(config, args.line_samples, corpus, english)
    held_out = quality["documents"]
    human = human_label_auc(paths["quality"], human_labelled_side(config, "test"), config)
    scored, fold_left_out = out_of_fold_scores(config, corpus)
    oof = english_only(scored, english)
    left_out = {"held_out": left_out_counts({label: item.left_out for label, item in corpus.shipped.items()}, english),
                "cross_validation": left_out_counts(fold_left_out, english)}
    crossval = document_figures([(record["label"], record["scores"]) for record in oof], labels)
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
    print(format_metrics("quality, 9 labels (shipped model: lines of the held-out test documents)", quality))
    print(format_metrics("quality, 9 labels (shipped model, held-out test documents: arg-max of the job's "
                         "document scores; rand = the English CC documents)", held_out))
    every_language = held_out["all_languages"]
    print(f"held-out split with the CC documents of every language as rand ({every_language['documents']['rand']}): "
          f"wiki vs rand AUC {every_language['wiki_vs_rand_doc_auc']:.4f}, curated vs rand "
          f"{every_language['curated_vs_rand_doc_auc']:.4f}")
    print("rand score quantiles (10/25/50/75/90 %) of held-out test documents per true label: "
          + "; ".join(f"{label} {q}" for label, q in held_out["rand_score_quantiles"].items()))
    print(f"{folds}-fold cross-validation by document outside the held-out split (what settings are chosen by; "
          f"rand = {crossval['documents']['rand']} English CC documents): wiki vs rand AUC "
          f"{crossval['wiki_vs_rand_doc_auc']:.4f}, curated vs rand {crossval['curated_vs_rand_doc_auc']:.4f}, "
          f"macro-F1 {crossval['macro_f1']:.4f}; lines of the held-out split: wiki vs rand AUC "
          f"{quality['wiki_vs_rand_line_auc']:.4f}")
    print("left out of the scored documents (every training line in that model's training documents): "
          + "; ".join(f"{name} {counts}" for name, counts in left_out.items()))
    figures = {"wiki_vs_rand_doc_auc": held_out["wiki_vs_rand_doc_auc"],
               "curated_vs_rand_doc_auc": held_out["curated_vs_rand_doc_auc"],
               "human_labels_auc": human["auc_1_minus_rand"]}
    targets = check_targets(figures, config["evaluation"]["targets"])
    print(f"macro-F1 over {len(labels)} labels: held-out lines {quality['macro_f1']:.4f}, held-out documents "
          f"{held_out['macro_f1']:.4f}, out-of-fold documents {crossval['macro_f1']:.4f}")
    cc_rand = [record["scores"]["rand"] for record in oof if record["label"] == "rand"]
    calibration = calibrate(cc_rand, human["rand_scores"]["good"], human["rand_scores"]["bad"],
                            config["evaluation"]["calibration"], list(held_out["english_rand_scores"].values()))
    print(format_calibration(calibration))
    configured = config["quality"]["filter"]["max_rand_score"]
    rand_kept = rand_documents_kept(paths["quality"], config, corpus, english, held_out["english_rand_scores"])
    print(f"shipped model at max_rand_score {configured}, English CC rand documents (the default text-corpus "
          "input's CC pages): " + "; ".join(
              f"{name} {rand_kept[side]['kept']}/{rand_kept[side]['documents']} kept ({rand_kept[side]['kept_share']:.1%})"
              for side, name in (("held_out", "held-out split (never trained on)"),
                                 ("held_out_left_out", "held out but every line trained on (left out)"),
                                 ("trained_on", "trained on (in-sample)"))))
    if configured != calibration["chosen_max_rand_score"]:
        print(f"note: quality.filter.max_rand_score is {configured}, the calibration chooses "
              f"{calibration['chosen_max_rand_score']}")
    print(f"targets (shipped model on the held-out test split, rand = {held_out['documents']['rand']} English CC "
          f"documents, wiki = {held_out['documents']['wiki']} documents; human labels: {human['good']} good / "
          f"{human['bad']} bad DCLM documents):")
    for name, target in targets.items():
        print(f"{name}: {target['value']:.4f} (target >= {target['min']}: {'PASS' if target['passed'] else 'FAIL'})")
    passed = all(target["passed"] for target in targets.values())
    held_out = {key: value for key, value in held_out.items() if key != "english_rand_scores"}
    result = {"fuzzy_dedup": fuzzy, "quality": {**quality, "documents": held_out}, "held_out": held_out,
              "cross_validation": crossval, "human_labels": human, "fuzzy_wet_pages": pages,
              "calibration": calibration, "rand_documents_kept": rand_kept, "left_out_documents": left_out,
              "targets": targets, "targets_passed": passed}
    if args.output:
        Path(args.output).write_text(json.dumps(result, indent=2, sort_keys=True), encoding="utf-8")
    if not passed and not args.report_only:
        missed = [name for name, target in targets.items() if not target["passed"]]
        raise RunFailed(f"{len(missed)} of {len(targets)} targets missed: {', '.join(missed)} (--report-only to exit 0)")
    return result


if __name__ == "__main__":
    sys.exit(exit_status(main()))
