"""Train (or reuse from the cache) the fuzzy-dedup and quality fastText models and print their
validation metrics. ``make classifiers`` runs this."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

from moshi_data.classifiers.common import format_metrics
from moshi_data.classifiers.evaluation import ensure_models_with_metrics
from moshi_data.pipeline.command import exit_status, command_parser, run_command


def main(argv=None) -> dict | int:
    parser = command_parser(__name__, __doc__, config="classifiers")
    parser.add_argument("--line-samples", help="line_samples*.jsonl of a text-job run (path or glob); "
                        "default: fuzzy_dedup.samples, else exact dedup over the default input")
    parser.add_argument("--output", help="also copy the trained models into this directory")
    return run_command(parser, argv, _main)


def _main(args) -> dict:
    config = args.cfg
    paths, fuzzy, quality = ensure_models_with_metrics(config, args.line_samples)
    print(format_metrics(f"fuzzy dedup {paths['fuzzy_dedup'].name}", fuzzy))
    print(format_metrics(f"quality {paths['quality'].name}", quality))
    info = json.loads(paths["quality"].with_suffix(".json").read_text(encoding="utf-8"))
    print("quality lines per label (train/valid used; documents train/valid): " + "; ".join(
        f"{label} {c['train_lines']}/{c['valid_lines']} ({c['train_documents']}/{c['valid_documents']})"
        for label, c in info["per_label"].items()))
    print(f"wiki vs rand AUC: held-out lines {quality['wiki_vs_rand_line_auc']:.4f}, held-out test documents "
          f"{quality['documents']['wiki_vs_rand_doc_auc']:.4f}; curated vs rand (1 - rand) held-out test documents "
          f"{quality['documents']['curated_vs_rand_doc_auc']:.4f} (rand = {quality['documents']['documents']['rand']} "
          "English CC documents)")
    if args.output:
        out = Path(args.output)
        out.mkdir(parents=True, exist_ok=True)
        for path in paths.values():
            shutil.copy2(path, out / path.name)
    print(json.dumps({name: str(path) for name, path in paths.items()}))
    return {"paths": paths, "fuzzy": fuzzy, "quality": quality}


if __name__ == "__main__":
    raise SystemExit(exit_status(main()))
