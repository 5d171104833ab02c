"""End to end on ../shared/data: train tiny models from the shipped label mapping and the default
line samples, cache them, print the quality bars, and score a JSONL file with the CLI."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from moshi_data import cli
from moshi_data.classifiers import evaluate, score, train
from moshi_data.classifiers.evaluation import human_labelled_side
from moshi_data.classifiers.models import ensure_models
from moshi_data.pipeline.command import exit_status
from moshi_data.pipeline.config import REPO_ROOT, load_config

# quality keeps the shipped 8 epochs: with its char n-grams and lr 0.25, 5 epochs of 1,500 lines per label undertrain
TINY = ["quality.max_lines_per_label=1500", "quality.max_valid_documents_per_label=40",
        "quality.train.bucket=20000", "fuzzy_dedup.train.epoch=5", "fuzzy_dedup.train.bucket=20000",
        "evaluation.folds=2"]


@pytest.fixture(scope="module")
def tiny(shared_data, tmp_path_factory):
    models = tmp_path_factory.mktemp("models")
    overrides = [f"models_dir={models}", *TINY]
    result = train.main([*sum((["--set", item] for item in overrides), [])])
    return {"overrides": overrides, "models": models, "train": result}


def test_training_reports_metrics_and_caches_models_keyed_by_config(tiny):
    config = load_config("classifiers.yaml", tiny["overrides"])
    paths = tiny["train"]["paths"]
    assert {p.name.split("-")[0] for p in paths.values()} == {"fuzzy_dedup", "quality"}
    mtimes = {name: path.stat().st_mtime_ns for name, path in paths.items()}
    assert ensure_models(config) == paths  # cache hit: same paths, not retrained
    assert {name: path.stat().st_mtime_ns for name, path in paths.items()} == mtimes
    changed = load_config("classifiers.yaml", [*tiny["overrides"], "quality.train.epoch=4"])
    from moshi_data.classifiers.quality import quality_model_path

    assert quality_model_path(changed) != paths["quality"]
    quality = tiny["train"]["quality"]
    assert set(quality["per_label"]) == {"rand", "wiki", "books", "science", "news", "stem", "life", "hum", "pop"}
    assert quality["macro_f1"] > 0.55  # tiny models, lines of held-out documents (0.73 with the shipped settings)
    assert tiny["train"]["fuzzy"]["macro_f1"] > 0.55  # lines of held-out documents (0.59 with the shipped settings)


def test_evaluate_prints_the_targets_calibration_and_exit_status(tiny, capsys):
    result = evaluate.main([*sum((["--set", item] for item in tiny["overrides"]), []), "--report-only"])
    out = capsys.readouterr().out
    for text in ("wiki_vs_rand_doc_auc", "curated_vs_rand_doc_auc", "human_labels_auc", "macro-F1 over 9 labels",
                 "2-fold cross-validation by document", "quality filter calibration", "dactory rule rand <= 0.9",
                 "unique shared WET pages"):
        assert text in out
    assert set(result["targets"]) == {"wiki_vs_rand_doc_auc", "curated_vs_rand_doc_auc", "human_labels_auc"}
    assert result["targets_passed"] == all(t["value"] >= t["min"] for t in result["targets"].values())
    assert exit_status(result) == 0  # --report-only: exit 0 after printing, passed or not
    assert result["cross_validation"]["wiki_vs_rand_doc_auc"] > 0.9  # tiny models, out-of-fold documents
    config = load_config("classifiers.yaml", tiny["overrides"])
    test, dev = human_labelled_side(config, "test"), human_labelled_side(config, "dev")
    assert len(test) + len(dev) == 281 and not {r["text"] for r in test} & {r["text"] for r in dev}
    assert result["human_labels"]["good"] + result["human_labels"]["bad"] == len(test)  # the target: test half only
    calibration = result["calibration"]
    assert calibration["cc_documents"] == result["cross_validation"]["documents"]["rand"] > 10
    assert 0.0 <= calibration["chosen_max_rand_score"] <= 1.0
    assert calibration["rules"]["calibrated"]["cc_kept_share"] >= 0.5
    kept = result["rand_documents_kept"]  # English rand documents split by the shipped model's document hash
    assert "held-out split (never trained on)" in out and kept["held_out"]["documents"] > 0
    held_out = result["held_out"]  # the targets are read on the held-out test split, not on the folds
    assert result["targets"]["wiki_vs_rand_doc_auc"]["value"] == held_out["wiki_vs_rand_doc_auc"]
    assert 0 < held_out["documents"]["rand"] <= kept["held_out"]["documents"]
    assert calibration["held_out_cc_documents"] == held_out["documents"]["rand"]
    assert kept["held_out"]["documents"] + kept["trained_on"]["documents"] >= calibration["cc_documents"]
    assert all(0 <= side["kept"] <= side["documents"] for side in kept.values())
    pages = result["fuzzy_wet_pages"]
    assert pages["exact_dedup_kept"] < pages["lines"] and pages["boilerplate_after_exact"] > 0


def test_the_job_scores_are_dactory_formula_on_the_lines_fuzzy_dedup_kept(tiny, shared_data):
    """Fixed model files: the stage chain's shared line list gives exactly the scores of a per-line
    reference loop (dactory's get_doc_annotations) over the lines left after fuzzy dedup."""
    from moshi_data.pipeline.text.document import Document
    from moshi_data.pipeline.text.fasttext_model import MODEL_LINES, load_model, model_text
    from moshi_data.pipeline.text.fuzzy_dedup import FuzzyDedupStage
    from moshi_data.pipeline.text.quality import QualityScorer, QualityStage

    config = load_config("classifiers.yaml", tiny["overrides"])
    paths = tiny["train"]["paths"]
    labels = config["quality"]["labels"]
    text = json.loads((shared_data / "wet" / "quality_labeled" / "dclm_agreement_data.jsonl").read_text("utf-8")
                      .split("\n")[3])["text"]
    doc = Document("0:0", 0, "u", "r", "d", "c", "s", 0, "", text.split("\n") + ["", "  "])
    fuzzy = FuzzyDedupStage({"model": str(paths["fuzzy_dedup"]), **config["fuzzy_dedup"]})
    quality = QualityStage({"model": str(paths["quality"]), "labels": labels, "decimals": 2,
                            "filter": config["quality"]["filter"]})
    fuzzy.setup()
    quality.setup()
    assert fuzzy.process(doc) is None
    quality.process(doc)
    assert MODEL_LINES not in doc.fields  # the shared line list is not an output
    model = load_model(str(paths["quality"]))
    sums, total = dict.fromkeys(labels, 0.0), 0.0
    for line in doc.lines:
        if not line.strip():
            continue
        names, probs = model.predict(model_text(line), k=len(labels), threshold=0.0)
        weight = len(line.encode("utf-8")) + 1
        for name, prob in zip(names, probs):
            sums[name[len("__label__"):]] += min(float(prob), 1.0) * weight
        total += weight
    reference = {label: round(sums[label] / total, 2) for label in labels}
    assert doc.fields["scores"] == reference
    assert QualityScorer(str(paths["quality"]), labels, 2).scores(doc.text) == reference


def test_evaluate_exits_1_when_a_bar_is_missed_unless_report_only(tiny, capsys):
    args = [*sum((["--set", item] for item in tiny["overrides"]), []), "--set", "evaluation.targets.human_labels_auc=1.01"]
    assert evaluate.main(args) == 1
    error = capsys.readouterr().err
    [line] = [line for line in error.splitlines() if line.startswith("moshi-data eval-classifiers: error: ")]
    assert "targets missed:" in line and "human_labels_auc" in line
    report = evaluate.main([*args, "--report-only"])
    assert report["targets"]["human_labels_auc"]["passed"] is False
    # python -m moshi_data.classifiers.evaluate and moshi-data eval-classifiers: one exit status
    assert exit_status(report) == 0 == cli.main(["eval-classifiers", *args, "--report-only"])
    assert cli.main(["eval-classifiers", *args]) == 1


def test_score_cli_adds_nine_scores_and_fuzzy_counts_and_rejects_bad_records(tiny, shared_data, tmp_path):
    source = (shared_data / "wet" / "quality_labeled" / "dclm_agreement_data.jsonl").read_text("utf-8").split("\n")
    records = [json.loads(line) for line in source[:5]]
    lines = [json.dumps(record) for record in records] + ["{not json", json.dumps({"no_text": 1})]
    (tmp_path / "in.jsonl").write_text("\n".join(lines) + "\n", "utf-8")
    counts = score.main(["--input", str(tmp_path / "in.jsonl"), "--output", str(tmp_path / "out.jsonl"),
                         *sum((["--set", item] for item in tiny["overrides"]), [])])
    assert counts == {"in": 7, "scored": 5, "rejected": 2}
    out = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text("utf-8").splitlines()]
    assert [r["text"] for r in out] == [r["text"] for r in records]
    for record in out:
        assert list(record["scores"]) == ["rand", "wiki", "books", "science", "news", "stem", "life", "hum", "pop"]
        assert abs(sum(record["scores"].values()) - 1.0) < 0.06  # rounded probabilities of a softmax
        assert isinstance(record["fuzzy_dup_lines"], int)
    rejects = (tmp_path / "out.jsonl.rejects.jsonl").read_text("utf-8").splitlines()
    assert [json.loads(r)["line"] for r in rejects] == [6, 7]


@pytest.mark.parametrize("module", ["moshi_data.classifiers.train", "moshi_data.classifiers.score", "moshi_data.classifiers.evaluate"])
def test_cli_help(module):
    result = subprocess.run([sys.executable, "-m", module, "--help"], cwd=REPO_ROOT, capture_output=True, text=True)
    assert result.returncode == 0 and "usage" in result.stdout
