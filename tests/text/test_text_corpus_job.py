"""End-to-end text corpus job on ../shared/data/wet: outputs, counts, determinism, kill + re-run."""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import apache_beam as beam
import pyarrow.parquet as pq
import pytest
from apache_beam.internal import pickler

from moshi_data.beam_jobs import text_corpus
from moshi_data.beam_jobs.options import build_pipeline_options
from moshi_data.classifiers.models import attach_classifiers
from moshi_data.pipeline.config import REPO_ROOT, load_config
from moshi_data.pipeline.text.accounting import check_invariant
from text_helpers import IN_PROCESS, TWO_PROCESSES, tree_digest

# The shared WET samples hold no English page, so the tests also keep the languages they contain.
OVERRIDES = ["language.languages=[en,ru,zh,es,an]", "input.docs_per_chunk=4", "input.files_per_group=100",
             "line_dedup.bytes_per_partition=10000",  # auto partitions: 16 for the ~120-130 KB of WET samples
             "quality.filter.max_rand_score=1.0"]  # the fixtures are mostly non-English pages
EXPECTED_REJECTS = {"corrupt_record": 3, "content_length_mismatch": 2, "not_a_warc": 1, "truncated_gzip": 1}


def wet_glob(shared_data: Path) -> str:
    return str(shared_data / "wet" / "**" / "*.wet*")


@pytest.fixture(scope="module")
def reference_run(shared_data, tmp_path_factory):
    output = tmp_path_factory.mktemp("reference")
    result = text_corpus.run(wet_glob(shared_data), str(output), overrides=OVERRIDES, beam_args=IN_PROCESS)
    return output, result


def test_outputs_and_counts(reference_run):
    output, result = reference_run
    stats = json.loads((output / "stats.json").read_text())
    assert stats == result["stats"]
    check_invariant(stats)
    docs, lines = stats["documents"], stats["lines"]
    assert docs["rejected"] == EXPECTED_REJECTS
    assert docs["in"] == stats["records"]["read"]["conversion"] - 2 + sum(EXPECTED_REJECTS.values())
    assert docs["kept"] >= 5 and docs["filtered"]["exact_dedup"] > 10  # the fixtures repeat the same pages
    assert lines["removed"]["exact_dedup"] > 1000 and lines["kept"] > 300  # fuzzy dedup removes more boilerplate
    assert stats["line_dedup"]["bytes_per_unique_line"] == 20

    table = pq.read_table(output / "documents")
    assert table.num_rows == docs["kept"]
    assert {"text", "url", "language", "language_score", "line_counts", "record_id", "source"} <= set(table.column_names)
    rows = table.to_pylist()
    assert all(r["language_score"] >= 0.85 and r["language"] in {"en", "ru", "zh", "es", "an"} for r in rows)
    assert sum(r["line_counts"]["min_length"] for r in rows) == lines["kept"]
    assert sum(r["url"] == "https://an.wikipedia.org/wiki/Escopete" for r in rows) <= 1  # its twin file is deduped away
    # blank lines are paragraph separators: at most one blank line between paragraphs, none at either end
    assert not any("\n\n\n" in r["text"] or r["text"] != r["text"].strip("\n") for r in rows)
    assert stats["line_dedup"]["groups"] == 1 and stats["line_dedup"]["partitions"] == 16  # auto (line_dedup.partitions=0)
    assert stats["line_dedup"]["bytes_per_partition"] == 10000 and stats["line_dedup"]["max_group_partitions"] == 16
    assert 0 < stats["line_dedup"]["max_partition_bytes"] < stats["line_dedup"]["table_bytes"]
    meta = pq.ParquetFile(next((output / "documents").glob("*.parquet"))).metadata
    assert meta.row_group(0).column(0).compression == "ZSTD"

    reject_files = sorted((output / "rejects").glob("*.jsonl"))  # one shard per input file with rejects
    assert len(reject_files) >= 2 and all(re.fullmatch(r"rejects-\d{6}\.jsonl", p.name) for p in reject_files)
    rejects = [json.loads(l) for p in reject_files for l in p.read_text().splitlines()]
    assert len(rejects) == sum(EXPECTED_REJECTS.values()) and all(r["reason"] and r["message"] and r["source"] for r in rejects)

    samples = [json.loads(l) for l in (output / "line_samples" / "line_samples.jsonl").read_text().splitlines()]
    assert {tuple(sorted(s)) for s in samples} == {("count", "duplicate", "text")}
    assert any(s["duplicate"] and s["count"] >= 2 for s in samples) and any(not s["duplicate"] for s in samples)
    assert all(s["duplicate"] == (s["count"] >= 2) for s in samples)


def test_per_chunk_stages_report_their_milliseconds(reference_run):
    """The read, hash and write steps time each chunk (of 4 documents here), each call a fraction of the stage:
    their ``ms_<stage>`` counters carry the fractions from chunk to chunk (beam_jobs/stage_timer.py)."""
    _, result = reference_run
    seconds = result["seconds"]
    assert all(seconds.get(stage, 0) > 0 for stage in ("read", "normalize_hash", "write", "language")), seconds


def test_identical_output_with_two_workers_and_on_rerun(reference_run, shared_data, tmp_path):
    output, _ = reference_run
    expected = tree_digest(output)
    text_corpus.run(wet_glob(shared_data), str(tmp_path), overrides=OVERRIDES, beam_args=TWO_PROCESSES)
    assert tree_digest(tmp_path) == expected
    # a stale shard and a temporary of an earlier run must not survive a re-run into the same folder
    (tmp_path / "documents" / "part-999999-00000.parquet").write_bytes(b"old")
    (tmp_path / "documents" / ".tmp-part-000001-00000.parquet-dead").write_bytes(b"partial")
    text_corpus.run(wet_glob(shared_data), str(tmp_path), overrides=OVERRIDES, beam_args=IN_PROCESS)
    assert tree_digest(tmp_path) == expected


def test_output_does_not_depend_on_the_partition_count(reference_run, shared_data, tmp_path):
    output, result = reference_run
    stats = text_corpus.run(wet_glob(shared_data), str(tmp_path), overrides=[*OVERRIDES, "line_dedup.partitions=64"],
                            beam_args=IN_PROCESS)["stats"]
    assert tree_digest(tmp_path / "documents") == tree_digest(output / "documents")
    assert {k: stats[k] for k in ("documents", "lines", "funnel")} == {k: result["stats"][k] for k in ("documents", "lines", "funnel")}
    assert stats["line_dedup"]["partitions"] == 64 and stats["line_dedup"]["table_bytes"] == result["stats"]["line_dedup"]["table_bytes"]


def test_killed_run_then_rerun_matches_uninterrupted(reference_run, shared_data, tmp_path):
    output, _ = reference_run
    command = [sys.executable, "-m", "moshi_data.beam_jobs.text_corpus", "--input", wet_glob(shared_data), "--output",
               str(tmp_path), *[f"--set={o}" for o in OVERRIDES], "--set=input.docs_per_chunk=1", *IN_PROCESS]
    process = subprocess.Popen(command, cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               start_new_session=True)
    deadline = time.time() + 120
    while len(list((tmp_path / "documents").glob("part-*"))) < 3 and time.time() < deadline:
        time.sleep(0.01)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL
    assert not (tmp_path / "stats.json").exists(), "the run finished before it could be killed"
    subprocess.run(command[:-len(IN_PROCESS)] + IN_PROCESS, cwd=REPO_ROOT, check=True, capture_output=True, timeout=300)
    # same documents and stats as an uninterrupted run with the same chunking
    reference = tmp_path.parent / f"{tmp_path.name}-clean"
    text_corpus.run(wet_glob(shared_data), str(reference), overrides=[*OVERRIDES, "input.docs_per_chunk=1"],
                    beam_args=IN_PROCESS)
    assert tree_digest(tmp_path) == tree_digest(reference)
    documents = json.loads((tmp_path / "stats.json").read_text())["documents"]
    assert documents == json.loads((output / "stats.json").read_text())["documents"]


def test_pipeline_translates_to_portable_proto_and_dofns_pickle(shared_data, tmp_path):
    config = attach_classifiers(load_config("text_corpus", OVERRIDES))  # model paths for the classifier stages
    pipeline = beam.Pipeline(options=build_pipeline_options(IN_PROCESS, config["runner"])[0])
    text_corpus.build_pipeline(pipeline, [str(shared_data / "wet" / "whirlwind.warc.wet.gz")], config, str(tmp_path))
    proto = pipeline.to_runner_api()
    names = {t.unique_name for t in proto.components.transforms.values()}
    assert {"ReadInput", "CountLines", "Dedup+Stages", "WriteParquet", "Finalize"} <= names
    beam.Pipeline.from_runner_api(proto, pipeline.runner, pipeline._options)
    for fn in (text_corpus.ReadInputChunks(config), text_corpus.ProcessChunks(config),
               text_corpus.WriteShards(config, str(tmp_path)), text_corpus.Finalize(config, str(tmp_path), 1, {"files-000000": 1})):
        copy = pickler.loads(pickler.dumps(fn))
        if isinstance(copy, text_corpus.ProcessChunks):
            copy.setup()  # models load in setup(), after unpickling on the worker
            assert copy.processor.stages[0].model is not None
            assert pickler.loads(pickler.dumps(copy)).processor.stages[0].model is None


def test_dataflow_options_packaging():
    runner_cfg = load_config("text_corpus")["runner"]
    options, overrides = build_pipeline_options(["--runner=DataflowRunner", "--project=my-proj"], runner_cfg)
    flags = options.get_all_options()
    assert flags["project"] == "my-proj" and flags["region"] == "us-central1"
    assert flags["setup_file"].endswith("setup.py") and Path(flags["requirements_file"]).read_text().count("apache-beam")
    assert flags["temp_location"].startswith("gs://") and "use_runner_v2" in flags["experiments"]
    assert any(o.startswith("language.model=gs://") for o in overrides)
    options, _ = build_pipeline_options(["--runner=DataflowRunner", "--sdk_container_image=img:1"], runner_cfg)
    assert options.get_all_options()["setup_file"] is None
    local, _ = build_pipeline_options([], runner_cfg)
    assert local.get_all_options()["direct_running_mode"] == "multi_processing"
    assert local.get_all_options()["direct_num_workers"] == (os.cpu_count() or 1)


def test_help():
    result = subprocess.run([sys.executable, "-m", "moshi_data.beam_jobs.text_corpus", "--help"], cwd=REPO_ROOT,
                            capture_output=True, text=True, check=True)
    assert "--input" in result.stdout and "--limit" in result.stdout
