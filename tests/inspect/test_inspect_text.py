"""`moshi-data inspect` on a text output: counts per reason, schema, sample documents, --where and --reason."""
from __future__ import annotations

import json

import pyarrow.dataset as ds
import pytest

from moshi_data.cli import main as cli
from moshi_data.pipeline.config import load_config
from moshi_data.pipeline.text.inspect import InspectError, inspect_text, parse_condition


def test_conditions_parse_with_the_quality_alias():
    assert parse_condition("quality.wiki>0.5").path == ("scores", "wiki")
    condition = parse_condition(" language == 'en' ")
    assert (condition.path, condition.op, condition.value) == (("language",), "==", "en")
    assert condition.matches({"language": "en"}) and not condition.matches({"language": "es"}) and not condition.matches({})
    with pytest.raises(InspectError, match="cannot parse"):
        parse_condition("quality.wiki ~ 3")


def test_counts_schema_and_samples_match_the_run(text_run):
    output, stats = text_run
    result = inspect_text(output, limit=3)
    by_reason = {row["reason"]: row["documents"] for row in result["reasons"]}
    assert by_reason["kept"] == stats["documents"]["kept"] == result["documents"] == result["matching"]
    assert sum(by_reason.values()) == stats["documents"]["in"]
    assert {**stats["documents"]["filtered"], **stats["documents"]["rejected"]}.items() <= by_reason.items()
    assert "scores: struct<rand: float" in " ".join(result["schema"])
    assert len(result["samples"]) == 3
    for row in result["samples"]:
        assert row["language"] == "en" and row["language_score"] >= 0.85
        assert set(row["scores"]) >= {"rand", "wiki"} and row["lines_kept"] <= row["lines_in"]


def test_where_filters_like_pyarrow(text_run):
    output, _ = text_run
    dataset = ds.dataset(str(output / "documents"))
    threshold = 0.1
    expected = dataset.count_rows(filter=ds.field("scores", "hum") > threshold)
    assert 0 < expected < dataset.count_rows()  # the condition splits the kept documents
    result = inspect_text(output, [f"quality.hum>{threshold}"], limit=100)
    assert result["matching"] == expected == len(result["samples"])
    assert all(row["scores"]["hum"] > threshold for row in result["samples"])


def test_reason_samples_dropped_and_rejected_documents(text_run):
    output, stats = text_run
    dropped = inspect_text(output, reason="quality_rand", limit=2)
    assert dropped["samples_from"] == "examples/dropped.jsonl" and 0 < len(dropped["samples"]) <= 2
    rule = load_config("classifiers")["quality"]["filter"]["max_rand_score"]
    assert all(row["scores"]["rand"] > rule for row in dropped["samples"])
    rejected = inspect_text(output, reason="corrupt_record", limit=10)
    assert rejected["matching"] == stats["documents"]["rejected"]["corrupt_record"]


def test_cli_page_json_and_errors(text_run, capsys):
    output, stats = text_run
    shard = sorted((output / "documents").glob("*.parquet"))[0]
    assert cli(["inspect", str(shard), "--where", "language==en", "--limit", "1"]) == 0
    page = capsys.readouterr().out
    assert "documents by outcome" in page and "schema:" in page and "[1]" in page  # stats found beside the shard
    assert cli(["inspect", str(output), "--json", "--limit", "0"]) == 0
    assert json.loads(capsys.readouterr().out)["documents"] == stats["documents"]["kept"]
    assert cli(["inspect", str(output), "--where", "quality.nope>1"]) == 2
    assert "no field 'scores.nope'" in capsys.readouterr().err
    assert cli(["inspect", str(output), "--reason", "typo"]) == 2
    assert "reasons:" in capsys.readouterr().err
    assert cli(["inspect", str(output / "missing")]) == 2
