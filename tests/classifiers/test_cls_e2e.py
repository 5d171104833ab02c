"""End to end on ../shared/data: train tiny models from the shipped label mapping and the default
line samples, cache them, print the quality bars, and score a JSONL file with the CLI."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from moshi_data.classifiers import evaluate, score, train
from moshi_data.classifiers.models import ensure_models
from moshi_data.pipeline.config import REPO_ROOT, load_config

TINY = ["quality.max_lines_per_label=1500", "quality.train.epoch=5", "quality.train.bucket=20000",
        "fuzzy_dedup.train.epoch=5", "fuzzy_dedup.train.bucket=20000"]


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
    assert quality["macro_f1"] > 0.6
    assert tiny["train"]["fuzzy"]["macro_f1"] > 0.6


def test_evaluate_prints_the_quality_bars(tiny, capsys):
    result = evaluate.main([*sum((["--set", item] for item in tiny["overrides"]), [])])
    out = capsys.readouterr().out
    assert "wiki vs rand AUC" in out and "macro-F1 over 9 labels" in out and "AUC of 1 - rand" in out
    assert result["quality"]["wiki_vs_rand_auc"] >= 0.95
    assert result["human_labels"]["good"] == 152 and result["human_labels"]["bad"] == 129
    assert result["human_labels"]["auc_1_minus_rand"] > 0.6


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
