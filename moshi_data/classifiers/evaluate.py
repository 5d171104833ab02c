"""Quality bars of the trained classifiers (``make eval-classifiers``): per-label P/R/F1 and confusion
matrices on the validation splits, wiki-vs-rand AUC (bar from config), macro-F1 over the 9 labels, and
the AUC of (1 - rand) as a document quality score on human good/bad labels (DCLM agreement set)."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from moshi_data.classifiers.common import format_metrics
from moshi_data.classifiers.evaluation import ensure_models_with_metrics, human_label_auc
from moshi_data.classifiers.sources import resolve_root
from moshi_data.pipeline.config import load_config


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--config", default="classifiers.yaml")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override")
    parser.add_argument("--line-samples", help="line samples to train the fuzzy model on if it is missing")
    parser.add_argument("--output", help="write the metrics as JSON here")
    return parser.parse_args(argv)


def main(argv=None) -> dict:
    args = parse_args(argv)
    config = load_config(args.config, args.set)
    paths, fuzzy, quality = ensure_models_with_metrics(config, args.line_samples)
    human = human_label_auc(paths["quality"], resolve_root(config["data_root"]) / config["evaluation"]["human_labeled"], config)
    bar = config["evaluation"]["wiki_vs_rand_auc_min"]
    print(format_metrics("fuzzy dedup (validation)", fuzzy))
    print(format_metrics("quality, 9 labels (validation)", quality))
    passed = quality["wiki_vs_rand_auc"] >= bar
    print(f"wiki vs rand AUC: {quality['wiki_vs_rand_auc']:.4f} (bar >= {bar}: {'PASS' if passed else 'FAIL'})")
    print(f"macro-F1 over {len(quality['labels'])} labels: {quality['macro_f1']:.4f}")
    print(f"human labels ({human['good']} good / {human['bad']} bad): AUC of 1 - rand = {human['auc_1_minus_rand']:.4f}")
    result = {"fuzzy_dedup": fuzzy, "quality": quality, "human_labels": human, "wiki_vs_rand_bar_passed": passed}
    if args.output:
        Path(args.output).write_text(json.dumps(result, indent=2, sort_keys=True), encoding="utf-8")
    return result


if __name__ == "__main__":
    main()
