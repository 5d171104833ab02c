"""`make text-corpus` without INPUT: the shared WET samples plus the CC JSONL shards keep real English
documents (quality rule on), counts add up, and the output does not depend on the worker count."""
from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest

from moshi_data.beam_jobs import text_corpus
from moshi_data.pipeline.config import load_config
from moshi_data.pipeline.text.accounting import check_invariant
from text_helpers import IN_PROCESS, TWO_PROCESSES, tree_digest

OVERRIDES = ["input.docs_per_chunk=100"]  # several chunks per JSONL shard
WET_REJECTS = {"corrupt_record": 3, "content_length_mismatch": 2, "not_a_warc": 1, "truncated_gzip": 1}
MAX_RAND = load_config("classifiers")["quality"]["filter"]["max_rand_score"]
QUALITY_LABELS = {"rand", "wiki", "books", "science", "news", "stem", "life", "hum", "pop"}


@pytest.fixture(scope="module")
def default_run(shared_data, tmp_path_factory):
    spec, limit = text_corpus.default_input(load_config("text_corpus"))
    assert limit is None and spec.count(",") == 1 and "cc_text_jsonl" in spec
    output = tmp_path_factory.mktemp("default")
    result = text_corpus.run(None, str(output), overrides=OVERRIDES, beam_args=IN_PROCESS)
    return output, result["stats"]


def test_default_input_keeps_english_jsonl_documents(default_run):
    output, stats = default_run
    check_invariant(stats)
    docs = stats["documents"]
    assert stats["records"]["read"]["json_line"] == 707  # 697 dolma CC-MAIN-2019-30 + 10 cc_net head
    assert docs["rejected"] == WET_REJECTS  # the JSONL shards are clean
    assert docs["in"] == stats["records"]["read"]["conversion"] - 2 + 707 + sum(WET_REJECTS.values())
    # The default input's CC documents are the quality model's rand documents: the half it trained on
    # scores in-sample (high rand) and the calibrated rule (classifiers.yaml quality.filter) drops them.
    assert docs["kept"] >= 5 and docs["filtered"]["quality_rand"] >= 50
    rows = pq.read_table(output / "documents").to_pylist()
    assert len(rows) == docs["kept"]
    assert all(r["language"] == "en" and r["language_score"] >= 0.85 for r in rows)
    # scores are float32 in Parquet (0.2 reads back as 0.20000000298)
    assert all(set(r["scores"]) == QUALITY_LABELS and r["scores"]["rand"] <= MAX_RAND + 1e-6 for r in rows)
    assert all(r["source"].endswith(".jsonl.gz") and r["record_offset"] >= 1 and r["url"].startswith("http")
               for r in rows)
    # blank lines are paragraph separators, never removed as duplicates: kept text keeps its paragraphs
    assert sum("\n\n" in r["text"] for r in rows) >= docs["kept"] // 2
    assert not any("\n\n\n" in r["text"] or r["text"] != r["text"].strip("\n") for r in rows)
    report = (output / "report.html").read_text()
    assert any(r["url"] in report for r in rows)  # kept examples are shown


def test_default_input_identical_with_two_workers(default_run, tmp_path):
    output, _ = default_run
    text_corpus.run(None, str(tmp_path), overrides=OVERRIDES, beam_args=TWO_PROCESSES)
    assert tree_digest(tmp_path) == tree_digest(output)
    assert json.loads((tmp_path / "stats.json").read_text())["documents"]["kept"] > 0
