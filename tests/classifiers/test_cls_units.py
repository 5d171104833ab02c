"""Unit tests: run-of-3 rule, aggregation formula, filter rule, label building, fuzzy examples, metrics."""
from __future__ import annotations

import json

import numpy as np
import pytest

from moshi_data.classifiers.common import is_valid_split, precision_recall_f1, roc_auc
from moshi_data.classifiers.fuzzy_dedup import build_examples
from moshi_data.classifiers.quality import build_label_lines, split_examples
from moshi_data.pipeline.config import load_config
from moshi_data.pipeline.text.fasttext_model import model_text
from moshi_data.pipeline.text.fuzzy_dedup import runs_to_remove
from moshi_data.pipeline.text.quality import aggregate_scores, line_weights, quality_filter_reason, scored_lines


def test_runs_of_three_or_more_flagged_lines_are_removed_and_shorter_runs_kept():
    flags = [True, True, False, True, True, True, False, True, True, True, True, False, True]
    assert runs_to_remove(flags, 3) == [
        False, False, False, True, True, True, False, True, True, True, True, False, False,
    ]
    assert runs_to_remove([True, True, True], 3) == [True, True, True]  # a run at the very end
    assert runs_to_remove([True, True], 3) == [False, False]
    assert runs_to_remove([], 3) == []


def test_document_score_is_the_byte_length_weighted_mean_of_line_probabilities():
    # Hand-computed: lines "abc" (3 bytes + newline = 4) and "é" * 5 (10 bytes + newline = 11);
    # P(rand) = 0.2 and 0.8 -> (0.2 * 4 + 0.8 * 11) / 15 = 9.6 / 15 = 0.64.
    lines = scored_lines("abc\n\n" + "é" * 5 + "\n")
    assert lines == ["abc", "é" * 5]
    weights = line_weights(lines)
    assert weights.tolist() == [4.0, 11.0]
    probabilities = np.array([[0.2, 0.8], [0.8, 0.2]])
    assert aggregate_scores(probabilities, weights, ["rand", "wiki"], 2) == {"rand": 0.64, "wiki": 0.36}
    assert aggregate_scores(np.zeros((0, 2)), np.zeros(0), ["rand", "wiki"], 2) == {"rand": 0.0, "wiki": 0.0}


def test_quality_rule_drops_rand_above_max_and_applies_label_minimums():
    rule = {"max_rand_score": 0.9, "min_scores": {"wiki": 0.1}}
    assert quality_filter_reason({"rand": 0.91, "wiki": 0.5}, rule) == "quality_rand"
    assert quality_filter_reason({"rand": 0.9, "wiki": 0.05}, rule) == "quality_min_wiki"
    assert quality_filter_reason({"rand": 0.9, "wiki": 0.1}, rule) is None
    assert quality_filter_reason({"rand": 0.95}, {"max_rand_score": None, "min_scores": {}}) is None


@pytest.fixture()
def tiny_label_sources(tmp_path):
    (tmp_path / "cc.jsonl").write_text(
        json.dumps({"text": "Click here to subscribe to our newsletter today\nok\nShared line present in two labels"}) + "\n"
        + json.dumps({"text": "Buy cheap shoes online with free shipping now"}) + "\n",
        encoding="utf-8",
    )
    (tmp_path / "wiki.txt").write_text(
        "The river rises in the northern hills and flows south.\nShared line present in two labels\n"
        "The town was founded in the twelfth century by monks.\n",
        encoding="utf-8",
    )
    mapping = {
        "root": str(tmp_path),
        "labels": {
            "rand": [{"path": "cc.jsonl", "format": "jsonl", "fields": ["text"]}],
            "wiki": [{"path": "*.txt", "format": "text"}],
        },
    }
    labels_path = tmp_path / "labels.yaml"
    labels_path.write_text(json.dumps(mapping), encoding="utf-8")
    return load_config("classifiers.yaml", [
        f"quality.labels_config={labels_path}", "quality.labels=[rand, wiki]",
        "quality.min_line_chars=10", "quality.max_lines_per_label=100",
    ])


def test_label_building_skips_short_lines_and_drops_lines_claimed_by_two_labels(tiny_label_sources):
    lines = build_label_lines(tiny_label_sources)
    assert sorted(lines["rand"]) == sorted(model_text(t) for t in [
        "Click here to subscribe to our newsletter today", "Buy cheap shoes online with free shipping now"])
    assert sorted(lines["wiki"]) == sorted(model_text(t) for t in [
        "The river rises in the northern hills and flows south.",
        "The town was founded in the twelfth century by monks."])
    assert build_label_lines(tiny_label_sources) == lines  # deterministic


def test_label_building_fails_loudly_on_a_source_that_matches_nothing(tiny_label_sources):
    config = load_config("classifiers.yaml", [f"quality.labels_config={tiny_label_sources['quality']['labels_config']}",
                                              "quality.labels=[rand, wiki, news]"])
    with pytest.raises(ValueError, match="without sources"):
        build_label_lines(config)


def test_split_is_stable_and_training_is_balanced_by_oversampling():
    label_lines = {"a": [f"line a {i}" for i in range(40)], "b": [f"line b {i}" for i in range(10)]}
    train, valid = split_examples(label_lines, 20, "oversample")
    assert split_examples(label_lines, 20, "oversample") == (train, valid)
    valid_texts = {text for _, text in valid}
    assert valid_texts == {t for lines in label_lines.values() for t in lines if is_valid_split(t, 20)}
    assert not valid_texts & {text for _, text in train}
    counts = {label: sum(1 for l, _ in train if l == label) for label in label_lines}
    assert counts["a"] == counts["b"]


def test_fuzzy_examples_are_balanced_distinct_and_conflict_free():
    records = [{"text": f"Menu item {i}", "count": 5, "duplicate": True} for i in range(5)]
    records += [{"text": f"Unique sentence number {i} of the article", "count": 1, "duplicate": False} for i in range(9)]
    records += [{"text": "MENU   item 0", "count": 1, "duplicate": False}]  # same model text as a duplicate
    records += [{"text": "Menu item 1", "count": 5, "duplicate": True}]      # repeated record
    examples = build_examples(records, min_chars=1, max_per_label=100)
    assert len(examples["dup"]) == len(examples["keep"]) == 4
    assert "menu item 0" not in examples["dup"] + examples["keep"]
    with pytest.raises(ValueError):
        build_examples([r for r in records if not r["duplicate"]], 1, 100)


def test_metrics_precision_recall_f1_confusion_and_auc():
    metrics = precision_recall_f1(["a", "a", "b", "b"], ["a", "b", "b", "b"], ["a", "b"])
    assert metrics["confusion"] == [[1, 1], [0, 2]]
    assert metrics["per_label"]["a"] == {"precision": 1.0, "recall": 0.5, "f1": pytest.approx(2 / 3), "support": 2}
    assert metrics["per_label"]["b"]["precision"] == pytest.approx(2 / 3)
    assert roc_auc([0.9, 0.8], [0.1, 0.2]) == 1.0
    assert roc_auc([0.5], [0.5]) == 0.5
    assert roc_auc([0.1, 0.8], [0.5, 0.9]) == 0.25
